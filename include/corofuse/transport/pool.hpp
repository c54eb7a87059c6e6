// Buffer pools and zero-copy: the ring transport's protocol 7.46 mode (Linux 7.3+).
//
// Per queue, in this order (docs/kernel.md, "Buffer pools and zero-copy (7.46)"; the kernel's
// fs/fuse/dev_uring.c of 7.3):
//   ADD_QUEUE(qid, FUSE_URING_ZERO_COPY or 0) -> ADD_BUFPOOL(qid, pool) -> REGISTER each entry with
//   a header and an EMPTY payload iovec (and, on a zero-copy queue, its own fixed-buffer slot).
// The kernel hands each request a pool buffer only when it has bytes to copy (it names it by
// ent_in_out.offset), and on a zero-copy queue registers the client's pages of a READ or WRITE of
// a file opened with FOPEN_IO_URING_ZERO_COPY at the entry's slot: the server moves them with
// READ_FIXED / WRITE_FIXED (address = offset from 0) and never maps them.
//
// The fixed-buffer table of a queue's ring: slots 0..depth-1 are the entries' zero-copy slots
// (empty until the kernel fills one), slot `depth` is the pool, so every handler's read_fixed into
// a pool buffer is a READ_FIXED too. Without zero-copy the table is just the pool (slot 0).
//
// Fallbacks, each logged by the caller: zero-copy refused (EPERM: no CAP_SYS_ADMIN) -> pool
// without zero-copy; pool refused -> the 7.42 per-entry payloads, cut from the same memory.
#pragma once

#include <sys/mman.h>
#include <sys/uio.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>

#include "corofuse/abi/uring.hpp"
#include "corofuse/io/operations.hpp"
#include "corofuse/io/ring.hpp"
#include "corofuse/io/sync_wait.hpp"
#include "corofuse/io/task.hpp"

namespace corofuse::transport {

// An address range that stands for a zero-copy slot: reserved, never accessible, so a handler that
// touches a zero-copy request's "buffer" with the CPU faults at once instead of reading or writing
// some other memory. context::read_fixed/write_fixed turn addresses in it into slot offsets.
class reserved_window {
 public:
  reserved_window() = default;
  explicit reserved_window(std::size_t size) : size_(size) {
    void* p = ::mmap(nullptr, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error(std::string("reserving a zero-copy window: ") + std::strerror(errno));
    base_ = static_cast<std::byte*>(p);
  }
  ~reserved_window() {
    if (base_) ::munmap(base_, size_);
  }
  reserved_window(reserved_window&& o) noexcept : base_(std::exchange(o.base_, nullptr)), size_(o.size_) {}
  reserved_window& operator=(reserved_window&& o) noexcept {
    std::swap(base_, o.base_);
    std::swap(size_, o.size_);
    return *this;
  }
  std::span<std::byte> bytes() const noexcept { return {base_, size_}; }

 private:
  std::byte* base_ = nullptr;
  std::size_t size_ = 0;
};

// What a queue ended up with, for its entries and the log.
struct pool_outcome {
  bool pool = false;          // ADD_BUFPOOL accepted: entries register empty payloads
  bool zero_copy = false;     // ADD_QUEUE with FUSE_URING_ZERO_COPY accepted
  int pool_index = -1;        // the pool's fixed-buffer slot (-1: not registered)
  bool sparse_table = false;  // the table has depth zero-copy slots before the pool (see above)
  std::string note;           // why something fell back (empty: nothing did)
};

namespace detail {
inline io::task<int> queue_command(io::ring& r, int fuse_fd, abi::uring_cmd op, const abi::uring_cmd_req& cmd, int buf_index) {
  co_return co_await io::uring_cmd(r, fuse_fd, static_cast<std::uint32_t>(op), &cmd, sizeof cmd, 0, 0, buf_index);
}
}  // namespace detail

// Sets queue `qid` up for a buffer pool of `pool` (depth buffers of `buf_size`), with zero-copy
// if `want_zero_copy`. Registers the ring's fixed buffers as described above. Throws when the
// queue is left unusable (a zero-copy queue without its pool cannot take entries).
inline pool_outcome set_up_pool_queue(io::ring& r, int fuse_fd, std::uint16_t qid, std::span<std::byte> pool, unsigned depth,
                                      bool want_zero_copy) {
  pool_outcome out;
  const iovec pool_iov{pool.data(), pool.size()};
  // The fixed-buffer table first: zero-copy needs its slots (a sparse table pins nothing), and a
  // failure here means no zero-copy. The pool goes in the last slot if the locked-memory limit
  // allows; a pool that cannot be registered still serves (the kernel then copies through the
  // user address, and handlers read with plain READs), and does not cost zero-copy.
  bool table = false;
  if (want_zero_copy) {
    try {
      r.register_buffers_sparse(depth + 1);
      table = true;
      out.sparse_table = true;
    } catch (const std::exception& e) {
      out.note = std::string("no zero-copy (") + e.what() + ")";
      want_zero_copy = false;
    }
    if (table) {
      try {
        r.update_buffers(depth, std::span<const iovec>(&pool_iov, 1));
        out.pool_index = static_cast<int>(depth);
      } catch (const std::exception& e) {
        out.note = std::string("pool not registered (") + e.what() + "): handlers use plain reads";
      }
    }
  }
  if (!table) {
    try {
      r.register_buffers(std::span<const iovec>(&pool_iov, 1));
      out.pool_index = 0;
    } catch (const std::exception& e) {
      out.note += (out.note.empty() ? "" : "; ") + std::string("pool not registered (") + e.what() + "): handlers use plain reads";
    }
  }

  abi::uring_cmd_req cmd{};
  cmd.qid = qid;
  cmd.flags = want_zero_copy ? abi::uring_zero_copy : 0;
  int res = io::sync_wait(r, detail::queue_command(r, fuse_fd, abi::uring_cmd::add_queue, cmd, -1));
  if (res == -EPERM && want_zero_copy) {
    out.note += (out.note.empty() ? "" : "; ") + std::string("zero-copy refused (EPERM: needs CAP_SYS_ADMIN): pool without zero-copy");
    cmd.flags = 0;
    res = io::sync_wait(r, detail::queue_command(r, fuse_fd, abi::uring_cmd::add_queue, cmd, -1));
  }
  if (res < 0) {
    out.note += (out.note.empty() ? "" : "; ") + std::string("ADD_QUEUE failed (") + std::strerror(-res) + "): 7.42 payloads";
    return out;
  }
  out.zero_copy = cmd.flags != 0;

  cmd = abi::uring_cmd_req{};
  cmd.qid = qid;
  cmd.bufpool.uaddr = reinterpret_cast<std::uintptr_t>(pool.data());
  cmd.bufpool.len = static_cast<std::uint32_t>(pool.size());
  res = io::sync_wait(r, detail::queue_command(r, fuse_fd, abi::uring_cmd::add_bufpool, cmd, out.pool_index));
  if (res < 0) {
    if (out.zero_copy) throw std::runtime_error(std::string("ADD_BUFPOOL failed on a zero-copy queue (") + std::strerror(-res) + ")");
    out.note += (out.note.empty() ? "" : "; ") + std::string("ADD_BUFPOOL failed (") + std::strerror(-res) + "): 7.42 payloads";
    return out;
  }
  out.pool = true;
  return out;
}

}  // namespace corofuse::transport
