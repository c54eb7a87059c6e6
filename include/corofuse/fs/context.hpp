// What a handler knows about the request it serves: who asked, and the queue's ring for I/O.
#pragma once

#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstddef>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <span>
#include <string_view>
#include <utility>

#include "corofuse/abi/protocol.hpp"
#include "corofuse/fs/backing.hpp"
#include "corofuse/fs/types.hpp"
#include "corofuse/io/cancellation.hpp"
#include "corofuse/io/operations.hpp"
#include "corofuse/io/ring.hpp"
#include "corofuse/io/task.hpp"
#include "corofuse/proto/extensions.hpp"

namespace corofuse {

// A handler that co_awaits I/O returns a task: `task<result<T>>`.
using io::task;

namespace detail {
struct context_access;
}

class context {
 public:
  context(io::ring* ring, const cache_defaults& defaults) noexcept : ring_(ring), defaults_(&defaults) {}

  // The caller's fsuid and fsgid. On a mount that allows idmapped mounts (FUSE_ALLOW_IDMAP, see
  // session::options::allow_idmap) the kernel names the caller only in requests that create an
  // object (CREATE, MKNOD, MKDIR, SYMLINK, TMPFILE; the ids are then the new object's owner,
  // mapped through the idmapped mount); every other request carries unknown_id in both.
  static constexpr uid_t unknown_id = static_cast<uid_t>(-1);
  uid_t uid() const noexcept { return uid_; }
  gid_t gid() const noexcept { return gid_; }
  bool caller_known() const noexcept { return uid_ != unknown_id && gid_ != static_cast<gid_t>(unknown_id); }
  // True when the caller is in group `g`: its fsgid, or a supplementary group the kernel named.
  // Only creating requests name supplementary groups (FUSE_CREATE_SUPP_GROUP, negotiated by
  // corofuse whenever the kernel offers it), and only the parent directory's group when the caller
  // belongs to it that way: enough to decide whether a new object keeps setgid.
  bool caller_in_group(gid_t g) const noexcept { return g != static_cast<gid_t>(unknown_id) && (g == gid_ || ext_.has_group(g)); }
  // The security context the new object must carry, for creating requests on a mount whose
  // filesystem asked for them (init_flag::security_ctx in its init_flags()): an xattr name such
  // as "security.selinux" and its value. Empty when the kernel's LSMs label nothing.
  std::string_view security_context_name() const noexcept { return ext_.security_context_name(); }
  std::span<const std::byte> security_context_value() const noexcept { return ext_.security_context_value(); }
  const proto::extensions& extensions() const noexcept { return ext_; }
  pid_t pid() const noexcept { return pid_; }
  std::uint64_t unique() const noexcept { return unique_; }
  abi::opcode opcode() const noexcept { return op_; }

  // The ring of the queue this request arrived on: handlers co_await I/O on it.
  io::ring& ring() const noexcept { return *ring_; }
  const cache_defaults& defaults() const noexcept { return *defaults_; }

  // The index of the queue (or /dev/fuse thread) serving this request: 0 .. queue_count()-1.
  // Requests of one client CPU arrive on one queue, served by one thread at a time, so
  // per-queue state indexed by it (a cache, a free list, a counter) needs no lock.
  unsigned queue_index() const noexcept { return queue_index_; }
  unsigned queue_count() const noexcept { return queue_count_; }

  // ---- INTERRUPT ----------------------------------------------------------------------------
  // True once the kernel has interrupted this request (its client got a signal). The request's
  // stop token then cancels every operation issued through the context (read_fixed,
  // write_fixed, track; however many are in flight): they complete with -ECANCELED, and a
  // request that ends with ECANCELED after an interrupt is answered EINTR.
  bool interrupted() const noexcept { return stop_.requested(); }

  // Makes `op` (any io:: operation on ring()) cancellable by an INTERRUPT of this request;
  // co_await the result as usual.
  template <typename Op>
  Op&& track(Op&& op) noexcept {
    return std::forward<Op>(op).track(stop_);
  }

  // Reads from `fd` at `offset` into `dst` on the queue's ring: an io_uring READ_FIXED when `dst`
  // lies in one of the request's registered buffers (the ring entry's payload, a pool buffer, a
  // reader's reply buffer, or, on a zero-copy request, the client's own pages), a plain READ
  // otherwise. co_await gives the bytes read, or -errno. Pass the buffer a READ handler was given
  // to move the backing file's data straight into the reply.
  //
  // `speed` says where the file's data lives (backing.hpp): a file in memory is read with pread(2)
  // right here (the operation is then complete when awaited), a local one with preadv2(RWF_NOWAIT)
  // when its data is cached; the rest, and any read into the client's pages, goes to the ring.
  auto read_fixed(int fd, std::span<std::byte> dst, off_t offset, backing_speed speed = backing_speed::remote) {
    const target t = registered_target(dst.data(), dst.size());
    auto prep = [=](io_uring_sqe* s) {
      if (t.index >= 0) {
        io_uring_prep_read_fixed(s, fd, reinterpret_cast<void*>(t.addr), static_cast<unsigned>(dst.size()),
                                 static_cast<std::uint64_t>(offset), t.index);
      } else {
        io_uring_prep_read(s, fd, dst.data(), static_cast<unsigned>(dst.size()), static_cast<std::uint64_t>(offset));
      }
    };
    if (t.refused) return io::operation<decltype(prep)>::ready(*ring_, prep, -ECONNABORTED);
    if (t.mapped && speed != backing_speed::remote) {
      if (int res = read_inline(fd, dst, offset, speed); res != not_done) return io::operation<decltype(prep)>::ready(*ring_, prep, res);
    }
    return std::move(io::detail::make(*ring_, prep).track(stop_));
  }

  // Writes `src` (for a WRITE handler, the data it was given: on the ring it sits in the entry's
  // registered payload or pool buffer, or in the client's pages on a zero-copy request) to `fd` at
  // `offset`: WRITE_FIXED when registered, a plain WRITE otherwise.
  // A file in memory (`speed`, backing.hpp) is written with pwrite(2) right here, unless the data is
  // in the client's pages.
  auto write_fixed(int fd, std::span<const std::byte> src, off_t offset, backing_speed speed = backing_speed::remote) {
    const target t = registered_target(src.data(), src.size());
    auto prep = [=](io_uring_sqe* s) {
      if (t.index >= 0) {
        io_uring_prep_write_fixed(s, fd, reinterpret_cast<const void*>(t.addr), static_cast<unsigned>(src.size()),
                                  static_cast<std::uint64_t>(offset), t.index);
      } else {
        io_uring_prep_write(s, fd, src.data(), static_cast<unsigned>(src.size()), static_cast<std::uint64_t>(offset));
      }
    };
    if (t.refused) return io::operation<decltype(prep)>::ready(*ring_, prep, -ECONNABORTED);
    if (t.mapped && speed == backing_speed::memory)
      return io::operation<decltype(prep)>::ready(*ring_, prep, write_inline(fd, src, offset));
    return std::move(io::detail::make(*ring_, prep).track(stop_));
  }

  // With init_flag::handle_killpriv_v2 the kernel leaves clearing setuid/setgid to the filesystem
  // and says when: a WRITE, an OPEN/CREATE with O_TRUNC, or a SETATTR by a caller without
  // CAP_FSETID. True for this request when the kernel asked for it.
  bool kill_suidgid() const noexcept { return kill_suidgid_; }

 private:
  friend struct detail::context_access;

  // The transport names the registered buffers this context's requests live in (up to three: a
  // ring entry's payload or pool; a zero-copy request's window; a /dev/fuse reader's request and
  // reply buffers). An offset-addressed region stands for buffers the kernel registered at
  // `buf_index` (the client's pages of a zero-copy request): the address given to io_uring is the
  // offset into the region, and the region itself is never mapped (touching it faults).
  void set_registered_buffer(unsigned slot, std::span<std::byte> region, int buf_index, bool offset_addressed) noexcept {
    if (slot < max_regions) regions_[slot] = {region, buf_index, offset_addressed};
  }

  // Set by the dispatcher for each request.
  void begin(const abi::in_header& h, const proto::extensions& ext) noexcept {
    ext_ = ext;
    uid_ = h.uid;
    gid_ = h.gid;
    pid_ = static_cast<pid_t>(h.pid);
    unique_ = h.unique;
    op_ = static_cast<abi::opcode>(h.opcode);
    kill_suidgid_ = false;
  }

  struct target {
    int index = -1;           // the fixed buffer, or -1: a plain read/write
    std::uintptr_t addr = 0;  // the address io_uring is given
    bool refused = false;     // a zero-copy window after the connection was lost
    bool mapped = true;       // false: the client's pages (a zero-copy window), reachable only by io_uring
  };
  // What read_inline gives when the read is the ring's to do after all.
  static constexpr int not_done = -0x10000;
  static int read_inline(int fd, std::span<std::byte> dst, off_t offset, backing_speed speed) noexcept {
    iovec iov{dst.data(), dst.size()};
    ssize_t n;
    do {
      n = ::preadv2(fd, &iov, 1, offset, speed == backing_speed::local ? RWF_NOWAIT : 0);
    } while (n < 0 && errno == EINTR);
    if (speed == backing_speed::memory) return n < 0 ? -errno : static_cast<int>(n);
    // RWF_NOWAIT: all of it was cached. A short read may be the end of the file or pages not
    // cached, an error may be EAGAIN or a file that cannot say (EOPNOTSUPP): the ring decides.
    return n == static_cast<ssize_t>(dst.size()) ? static_cast<int>(n) : not_done;
  }
  static int write_inline(int fd, std::span<const std::byte> src, off_t offset) noexcept {
    ssize_t n;
    do {
      n = ::pwrite(fd, src.data(), src.size(), offset);
    } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : static_cast<int>(n);
  }
  target registered_target(const void* p, std::size_t n) const noexcept {
    auto* b = static_cast<const std::byte*>(p);
    for (const auto& r : regions_) {
      if (r.index >= 0 && b >= r.bytes.data() && n <= r.bytes.size() &&
          static_cast<std::size_t>(b - r.bytes.data()) <= r.bytes.size() - n) {
        const auto offset = static_cast<std::uintptr_t>(b - r.bytes.data());
        if (!r.offset_addressed) return {r.index, reinterpret_cast<std::uintptr_t>(p), false, true};
        return {r.index, offset, lost_ && lost_->load(std::memory_order_acquire), false};
      }
    }
    return {};
  }

  struct region {
    std::span<std::byte> bytes;
    int index = -1;
    bool offset_addressed = false;
  };
  static constexpr unsigned max_regions = 3;
  region regions_[max_regions];

  io::cancellation stop_;                  // this request's stop token
  std::atomic<bool> cancel_due_{false};    // interrupted, and the tracked operations not yet cancelled
  std::atomic<std::uint64_t> serving_{0};  // the unique in service (0: none), for INTERRUPT
  const std::atomic<bool>* lost_ = nullptr;
  unsigned queue_index_ = 0;
  unsigned queue_count_ = 1;
  io::ring* ring_;
  const cache_defaults* defaults_;
  uid_t uid_ = 0;
  gid_t gid_ = 0;
  proto::extensions ext_;  // views into the request, valid while it is served
  pid_t pid_ = 0;
  std::uint64_t unique_ = 0;
  abi::opcode op_ = abi::opcode::lookup;
  bool kill_suidgid_ = false;
};

namespace detail {

// What the transports and the dispatcher (not handlers) do with a context.
struct context_access {
  static void set_queue(context& c, unsigned index, unsigned count) noexcept {
    c.queue_index_ = index;
    c.queue_count_ = count;
  }
  static void set_registered_buffer(context& c, unsigned slot, std::span<std::byte> region, int buf_index,
                                    bool offset_addressed = false) noexcept {
    c.set_registered_buffer(slot, region, buf_index, offset_addressed);
  }
  // Zero-copy requests: once the connection is gone (`lost` set), no new operation may touch the
  // client's pages (Linux 7.3 leaves an aborted request's pages registered); such operations
  // complete at once with -ECONNABORTED.
  static void set_connection_lost_flag(context& c, const std::atomic<bool>* lost) noexcept { c.lost_ = lost; }
  static void begin(context& c, const abi::in_header& h, const proto::extensions& ext = {}) noexcept { c.begin(h, ext); }
  static void set_kill_suidgid(context& c, bool v) noexcept { c.kill_suidgid_ = v; }

  // From start to end an INTERRUPT of `unique` reaches the request in service in `c`.
  static void start(context& c, std::uint64_t unique) noexcept {
    c.stop_.reset();
    c.cancel_due_.store(false, std::memory_order_relaxed);
    c.serving_.store(unique, std::memory_order_release);
  }
  // The handler is done: what the transport does next for the request (its file read) is not
  // the handler's, and no INTERRUPT cancels it.
  static void end(context& c) noexcept {
    c.serving_.store(0, std::memory_order_release);
    c.stop_.reset();
    c.cancel_due_.store(false, std::memory_order_relaxed);
  }
  static std::uint64_t serving(const context& c) noexcept { return c.serving_.load(std::memory_order_acquire); }
  // Any thread: the request is interrupted; its thread's mailbox cancels what it has in flight.
  static void interrupt(context& c) noexcept {
    c.stop_.request();
    c.cancel_due_.store(true, std::memory_order_release);
  }
  // True once per interruption: the mailbox then cancels the tracked operations.
  static bool take_cancel_due(context& c) noexcept { return c.cancel_due_.exchange(false, std::memory_order_acq_rel); }
  static io::cancellation& stop_token(context& c) noexcept { return c.stop_; }
};

}  // namespace detail
}  // namespace corofuse
