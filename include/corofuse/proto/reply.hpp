// Writing a reply's arguments into the buffer the transport provides.
//
// A reply is an out_header (written by the transport: in the ring entry's in_out area, or as the
// first iovec on /dev/fuse) followed by the reply's arguments. reply_buffer fills the arguments in
// place in the buffer it is given (the ring entry's payload, or a /dev/fuse reply buffer) and never
// writes past it; what does not fit is refused, not truncated.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <type_traits>

#include "corofuse/abi/structs.hpp"

namespace corofuse::proto {

class reply_buffer {
 public:
  reply_buffer() noexcept = default;
  explicit reply_buffer(std::span<std::byte> space) noexcept : space_(space) {}

  std::size_t size() const noexcept { return used_; }
  std::size_t capacity() const noexcept { return space_.size(); }
  std::size_t room() const noexcept { return space_.size() - used_; }
  std::span<const std::byte> written() const noexcept { return space_.first(used_); }
  // Where the next bytes go, for data produced directly into the buffer (a read into it).
  std::span<std::byte> tail() noexcept { return space_.subspan(used_); }
  void clear() noexcept { used_ = 0; }

  // Appends a struct as its bytes; false (and nothing written) when it does not fit.
  template <typename T>
  bool put(const T& v) noexcept {
    static_assert(std::is_trivially_copyable_v<T>);
    return append(&v, sizeof(T));
  }
  bool append(const void* p, std::size_t n) noexcept {
    if (n > room()) return false;
    if (n) std::memcpy(space_.data() + used_, p, n);
    used_ += n;
    return true;
  }
  bool append(std::span<const std::byte> b) noexcept { return append(b.data(), b.size()); }
  // Counts `n` bytes that were written into tail() directly.
  bool commit(std::size_t n) noexcept {
    if (n > room()) return false;
    used_ += n;
    return true;
  }
  bool zero(std::size_t n) noexcept {
    if (n > room()) return false;
    std::memset(space_.data() + used_, 0, n);
    used_ += n;
    return true;
  }

 private:
  std::span<std::byte> space_;
  std::size_t used_ = 0;
};

// Packs READDIR / READDIRPLUS records into a reply of at most `limit` bytes (the size the kernel
// asked for, and never more than the buffer). Each record carries the offset that resumes the
// listing after it.
class dirent_packer {
 public:
  dirent_packer(reply_buffer& out, std::size_t limit) noexcept : out_(out), limit_(std::min(limit, out.room())) {}

  // READDIR: false when the record does not fit (the listing resumes there next time).
  bool add(std::string_view name, std::uint64_t ino, std::uint32_t type, std::uint64_t next_off) noexcept {
    const std::size_t size = abi::dirent_size(name.size());
    if (used_ + size > limit_) return false;
    abi::dirent d{ino, next_off, static_cast<std::uint32_t>(name.size()), type};
    write_record(&d, sizeof d, name, size);
    return true;
  }

  // READDIRPLUS: whether a record with a name of `namelen` bytes still fits.
  bool fits_plus(std::size_t namelen) const noexcept { return used_ + abi::direntplus_size(namelen) <= limit_; }

  // READDIRPLUS: the entry's lookup reply comes with it (entry.nodeid 0 = no lookup counted).
  // `ino` is the dirent's (what readdir(3) shows as d_ino).
  bool add_plus(std::string_view name, const abi::entry_out& entry, std::uint64_t ino, std::uint32_t type,
                std::uint64_t next_off) noexcept {
    const std::size_t size = abi::direntplus_size(name.size());
    if (used_ + size > limit_) return false;
    abi::direntplus d{};
    d.entry = entry;
    d.dirent = abi::dirent{ino, next_off, static_cast<std::uint32_t>(name.size()), type};
    write_record(&d, sizeof d, name, size);
    return true;
  }

  std::size_t size() const noexcept { return used_; }
  std::size_t count() const noexcept { return count_; }

 private:
  void write_record(const void* head, std::size_t head_size, std::string_view name, std::size_t total) noexcept {
    out_.append(head, head_size);
    out_.append(name.data(), name.size());
    out_.zero(total - head_size - name.size());  // padding to 8 bytes
    used_ += total;
    ++count_;
  }

  reply_buffer& out_;
  std::size_t limit_;
  std::size_t used_ = 0;
  std::size_t count_ = 0;
};

}  // namespace corofuse::proto
