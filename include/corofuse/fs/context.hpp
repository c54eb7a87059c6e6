// What a handler knows about the request it serves: who asked, and the queue's ring for I/O.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <span>

#include "corofuse/abi/protocol.hpp"
#include "corofuse/fs/types.hpp"
#include "corofuse/io/operations.hpp"
#include "corofuse/io/ring.hpp"
#include "corofuse/io/task.hpp"

namespace corofuse {

// A handler that co_awaits I/O returns a task: `task<result<T>>`.
using io::task;

class context {
 public:
  context(io::ring* ring, const cache_defaults& defaults) noexcept : ring_(ring), defaults_(&defaults) {}

  uid_t uid() const noexcept { return uid_; }
  gid_t gid() const noexcept { return gid_; }
  pid_t pid() const noexcept { return pid_; }
  std::uint64_t unique() const noexcept { return unique_; }
  abi::opcode opcode() const noexcept { return op_; }

  // The ring of the queue this request arrived on: handlers co_await I/O on it.
  io::ring& ring() const noexcept { return *ring_; }
  const cache_defaults& defaults() const noexcept { return *defaults_; }

  // Reads from `fd` at `offset` into `dst` on the queue's ring: an io_uring READ_FIXED when `dst`
  // lies in one of the request's registered buffers (the ring entry's payload, a reader's reply
  // buffer), a plain READ otherwise. co_await gives the bytes read, or -errno. Pass the buffer a
  // READ handler was given to move the backing file's data straight into the reply.
  auto read_fixed(int fd, std::span<std::byte> dst, off_t offset) {
    const int index = registered_index(dst.data(), dst.size());
    return io::detail::make(*ring_, [=](io_uring_sqe* s) {
      if (index >= 0) {
        io_uring_prep_read_fixed(s, fd, dst.data(), static_cast<unsigned>(dst.size()), static_cast<std::uint64_t>(offset), index);
      } else {
        io_uring_prep_read(s, fd, dst.data(), static_cast<unsigned>(dst.size()), static_cast<std::uint64_t>(offset));
      }
    });
  }

  // Writes `src` (for a WRITE handler, the data it was given: on the ring it sits in the entry's
  // registered payload) to `fd` at `offset`: WRITE_FIXED when registered, a plain WRITE otherwise.
  auto write_fixed(int fd, std::span<const std::byte> src, off_t offset) {
    const int index = registered_index(src.data(), src.size());
    return io::detail::make(*ring_, [=](io_uring_sqe* s) {
      if (index >= 0) {
        io_uring_prep_write_fixed(s, fd, src.data(), static_cast<unsigned>(src.size()), static_cast<std::uint64_t>(offset), index);
      } else {
        io_uring_prep_write(s, fd, src.data(), static_cast<unsigned>(src.size()), static_cast<std::uint64_t>(offset));
      }
    });
  }

  // The transport names the registered buffers this context's requests live in (up to two: a
  // ring entry's payload; a /dev/fuse reader's request and reply buffers).
  void set_registered_buffer(unsigned slot, std::span<std::byte> region, int buf_index) noexcept {
    if (slot < max_regions) regions_[slot] = {region, buf_index};
  }

  // Set by the transport for each request.
  void begin(const abi::in_header& h) noexcept {
    uid_ = h.uid;
    gid_ = h.gid;
    pid_ = static_cast<pid_t>(h.pid);
    unique_ = h.unique;
    op_ = static_cast<abi::opcode>(h.opcode);
    kill_suidgid_ = false;
  }

  // With init_flag::handle_killpriv_v2 the kernel leaves clearing setuid/setgid to the filesystem
  // and says when: a WRITE, an OPEN/CREATE with O_TRUNC, or a SETATTR by a caller without
  // CAP_FSETID. True for this request when the kernel asked for it.
  bool kill_suidgid() const noexcept { return kill_suidgid_; }
  void set_kill_suidgid(bool v) noexcept { kill_suidgid_ = v; }

 private:
  int registered_index(const void* p, std::size_t n) const noexcept {
    auto* b = static_cast<const std::byte*>(p);
    for (const auto& r : regions_) {
      if (r.index >= 0 && b >= r.bytes.data() && n <= r.bytes.size() &&
          static_cast<std::size_t>(b - r.bytes.data()) <= r.bytes.size() - n)
        return r.index;
    }
    return -1;
  }

  struct region {
    std::span<std::byte> bytes;
    int index = -1;
  };
  static constexpr unsigned max_regions = 2;
  region regions_[max_regions];
  io::ring* ring_;
  const cache_defaults* defaults_;
  uid_t uid_ = 0;
  gid_t gid_ = 0;
  pid_t pid_ = 0;
  std::uint64_t unique_ = 0;
  abi::opcode op_ = abi::opcode::lookup;
  bool kill_suidgid_ = false;
};

}  // namespace corofuse
