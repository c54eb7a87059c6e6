// The ring entries' memory, shareable with a successor process (restart without unmount).
//
// The kernel keeps, for each ring entry, the user addresses of its header and payload, and copies
// a reply from them in the context of whichever process commits the entry. So a successor can take
// over an entry that holds a request (commit it from its own ring) only if it sees the same bytes
// at the same addresses. The arena is one memfd mapped MAP_SHARED: the successor receives the memfd
// and maps it at the same address (MAP_FIXED_NOREPLACE: it fails rather than clobber anything).
#pragma once

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <stdexcept>
#include <string>

namespace corofuse::transport {

class shared_arena {
 public:
  shared_arena() = default;
  // A fresh arena of `size` bytes (rounded up to pages), zero-filled.
  static shared_arena create(std::size_t size) {
    size = round_up(size);
    shared_arena a;
    a.fd_ = ::memfd_create("corofuse-ring", MFD_CLOEXEC);
    if (a.fd_ < 0) throw std::runtime_error(std::string("memfd_create: ") + std::strerror(errno));
    if (::ftruncate(a.fd_, static_cast<off_t>(size)) != 0) throw std::runtime_error(std::string("ftruncate: ") + std::strerror(errno));
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, a.fd_, 0);
    if (p == MAP_FAILED) throw std::runtime_error(std::string("mmap of the ring arena: ") + std::strerror(errno));
    a.base_ = static_cast<std::byte*>(p);
    a.size_ = size;
    return a;
  }
  // A predecessor's arena (its memfd, taken over), mapped where the predecessor has it. Throws
  // when that address range is taken in this process.
  static shared_arena map_at(int fd, std::uintptr_t address, std::size_t size) {
    shared_arena a;
    a.fd_ = fd;
    if (size == 0 || size != round_up(size) || address % page != 0) throw std::runtime_error("bad arena geometry");
    struct stat st {};
    if (::fstat(fd, &st) != 0 || static_cast<std::uint64_t>(st.st_size) < size)  // a shorter file would fault (SIGBUS)
      throw std::runtime_error("the predecessor's ring memory is smaller than it says");
    void* want = reinterpret_cast<void*>(address);
    void* p = ::mmap(want, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED_NOREPLACE, fd, 0);
    if (p == MAP_FAILED)
      throw std::runtime_error(std::string("cannot map the predecessor's ring memory at its address: ") + std::strerror(errno));
    if (p != want) {  // a kernel before 4.17 takes the flag as a hint
      ::munmap(p, size);
      throw std::runtime_error("cannot map the predecessor's ring memory at its address: range in use");
    }
    a.base_ = static_cast<std::byte*>(p);
    a.size_ = size;
    return a;
  }

  shared_arena(shared_arena&& o) noexcept { *this = std::move(o); }
  shared_arena& operator=(shared_arena&& o) noexcept {
    if (this != &o) {
      release();
      fd_ = o.fd_;
      base_ = o.base_;
      size_ = o.size_;
      o.fd_ = -1;
      o.base_ = nullptr;
      o.size_ = 0;
    }
    return *this;
  }
  ~shared_arena() { release(); }

  int fd() const noexcept { return fd_; }
  std::uintptr_t address() const noexcept { return reinterpret_cast<std::uintptr_t>(base_); }
  std::size_t size() const noexcept { return size_; }
  std::span<std::byte> bytes() const noexcept { return {base_, size_}; }
  explicit operator bool() const noexcept { return base_ != nullptr; }

  static constexpr std::size_t page = 4096;
  static constexpr std::size_t round_up(std::size_t n) noexcept { return (n + page - 1) / page * page; }

 private:
  void release() noexcept {
    if (base_) ::munmap(base_, size_);
    if (fd_ >= 0) ::close(fd_);
    base_ = nullptr;
    fd_ = -1;
  }
  int fd_ = -1;
  std::byte* base_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace corofuse::transport
