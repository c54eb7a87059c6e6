// Awaitable io_uring operations.
//
//   int n = co_await io::read(ring, fd, buf, offset);   // the CQE's res: >= 0, or -errno
//
// An operation object lives in the awaiting coroutine's frame for the whole operation, and the
// SQE's user_data points at the completion record inside it: no allocation. The SQE is queued when
// the coroutine suspends and goes to the kernel with the loop's next io_uring_enter. Buffers, paths
// and iovec arrays passed in must stay valid until the co_await returns.
#pragma once

#include <fcntl.h>
#include <liburing.h>
#include <linux/stat.h>
#include <sys/uio.h>

#include <chrono>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <stdexcept>
#include <utility>

#include "corofuse/io/cancellation.hpp"
#include "corofuse/io/ring.hpp"
#include "corofuse/io/task.hpp"

namespace corofuse::io {

// A file as an operation names it: a plain descriptor, or an index into the ring's registered
// file table (IOSQE_FIXED_FILE).
struct file_ref {
  int fd;
  bool fixed = false;
  file_ref(int plain_fd) noexcept : fd(plain_fd) {}  // NOLINT: a plain fd converts implicitly
  file_ref(int index, bool is_fixed) noexcept : fd(index), fixed(is_fixed) {}
};
inline file_ref fixed_file(int index) noexcept { return {index, true}; }

// Names a pending operation so that another coroutine can cancel it (io::cancel). Set while the
// operation is in flight, cleared when it completes.
struct op_id {
  std::uint64_t user_data = 0;
  bool pending() const noexcept { return user_data != 0; }
};

// One SQE, prepared by `Prep`, awaited for its CQE.
template <typename Prep>
class [[nodiscard]] operation {
 public:
  operation(ring& r, Prep prep) noexcept(std::is_nothrow_move_constructible_v<Prep>) : r_(&r), prep_(std::move(prep)) {}
  // An operation that completes at once with `res` (a request that needs no kernel round trip).
  static operation ready(ring& r, Prep prep, int res) {
    operation op(r, std::move(prep));
    op.immediate_ = res;
    return op;
  }

  // Records the operation in `id` while it is in flight, for io::cancel.
  operation& track(op_id& id) & noexcept {
    id_ = &id;
    return *this;
  }
  operation&& track(op_id& id) && noexcept {
    id_ = &id;
    return std::move(*this);
  }
  // Cancelled by `stop` (any number of operations may share it): see cancellation.hpp.
  operation& track(cancellation& stop) & noexcept {
    stop_ = &stop;
    return *this;
  }
  operation&& track(cancellation& stop) && noexcept {
    stop_ = &stop;
    return std::move(*this);
  }
  // Extra IOSQE_* flags (e.g. IOSQE_ASYNC).
  operation&& with_sqe_flags(std::uint8_t flags) && noexcept {
    sqe_flags_ |= flags;
    return std::move(*this);
  }

  bool await_ready() noexcept {
    if (stop_ && !immediate_ && stop_->requested()) immediate_ = -ECANCELED;  // cancelled before it started
    return immediate_.has_value();
  }
  void await_suspend(std::coroutine_handle<> h) {
    io_uring_sqe* s = r_->get_sqe();
    prepare(s);
    c_.waiter = h;
    c_.counted = true;
    std::uint64_t user_data = r_->track(s, c_);
    if (id_) id_->user_data = user_data;
    if (stop_) stop_->link(stop_node_, user_data);
  }
  int await_resume() noexcept {
    if (id_) id_->user_data = 0;
    cancellation::unlink(stop_node_);
    return immediate_ ? *immediate_ : c_.res;
  }

  // For links: fills an SQE without tracking it.
  void prepare(io_uring_sqe* s) {
    prep_(s);
    s->flags |= sqe_flags_;
  }
  ring& owner() const noexcept { return *r_; }
  bool is_immediate() const noexcept { return immediate_.has_value(); }

 private:
  ring* r_;
  Prep prep_;
  completion c_;
  op_id* id_ = nullptr;
  cancellation* stop_ = nullptr;
  cancellation::node stop_node_;
  std::optional<int> immediate_;
  std::uint8_t sqe_flags_ = 0;
};

namespace detail {
inline void set_file(io_uring_sqe* s, file_ref f) noexcept {
  s->fd = f.fd;
  if (f.fixed) s->flags |= IOSQE_FIXED_FILE;
}
template <typename Prep>
operation<Prep> make(ring& r, Prep p) {
  return operation<Prep>(r, std::move(p));
}
}  // namespace detail

// ---- the operations ---------------------------------------------------------------------------

inline auto nop(ring& r) {
  return detail::make(r, [](io_uring_sqe* s) { io_uring_prep_nop(s); });
}

// Completes with -ETIME when `d` has passed (the normal outcome), or -ECANCELED.
inline auto timeout(ring& r, std::chrono::nanoseconds d) {
  auto secs = std::chrono::duration_cast<std::chrono::seconds>(d);
  __kernel_timespec ts{secs.count(), (d - secs).count()};
  // The timespec lives in the operation (the frame): the kernel reads it at submission.
  return detail::make(r, [ts](io_uring_sqe* s) mutable { io_uring_prep_timeout(s, &ts, 0, 0); });
}

inline auto read(ring& r, file_ref f, std::span<std::byte> buf, std::uint64_t offset) {
  return detail::make(r, [=](io_uring_sqe* s) {
    io_uring_prep_read(s, 0, buf.data(), static_cast<unsigned>(buf.size()), offset);
    detail::set_file(s, f);
  });
}

inline auto write(ring& r, file_ref f, std::span<const std::byte> buf, std::uint64_t offset) {
  return detail::make(r, [=](io_uring_sqe* s) {
    io_uring_prep_write(s, 0, buf.data(), static_cast<unsigned>(buf.size()), offset);
    detail::set_file(s, f);
  });
}

inline auto readv(ring& r, file_ref f, std::span<const iovec> iov, std::uint64_t offset) {
  return detail::make(r, [=](io_uring_sqe* s) {
    io_uring_prep_readv(s, 0, iov.data(), static_cast<unsigned>(iov.size()), offset);
    detail::set_file(s, f);
  });
}

inline auto writev(ring& r, file_ref f, std::span<const iovec> iov, std::uint64_t offset) {
  return detail::make(r, [=](io_uring_sqe* s) {
    io_uring_prep_writev(s, 0, iov.data(), static_cast<unsigned>(iov.size()), offset);
    detail::set_file(s, f);
  });
}

// Reads into registered buffer `buf_index`; `addr` is an address inside it (for a FUSE zero-copy
// slot, an offset from 0 into the client's pages).
inline auto read_fixed(ring& r, file_ref f, void* addr, std::uint32_t len, std::uint64_t offset, int buf_index) {
  return detail::make(r, [=](io_uring_sqe* s) {
    io_uring_prep_read_fixed(s, 0, addr, len, offset, buf_index);
    detail::set_file(s, f);
  });
}

inline auto write_fixed(ring& r, file_ref f, const void* addr, std::uint32_t len, std::uint64_t offset, int buf_index) {
  return detail::make(r, [=](io_uring_sqe* s) {
    io_uring_prep_write_fixed(s, 0, addr, len, offset, buf_index);
    detail::set_file(s, f);
  });
}

inline auto fsync(ring& r, file_ref f, bool datasync = false) {
  return detail::make(r, [=](io_uring_sqe* s) {
    io_uring_prep_fsync(s, 0, datasync ? IORING_FSYNC_DATASYNC : 0);
    detail::set_file(s, f);
  });
}

inline auto fallocate(ring& r, file_ref f, int mode, std::uint64_t offset, std::uint64_t len) {
  return detail::make(r, [=](io_uring_sqe* s) {
    io_uring_prep_fallocate(s, 0, mode, offset, len);
    detail::set_file(s, f);
  });
}

// Completes with the new descriptor. `path` must stay valid until completion.
inline auto openat(ring& r, int dirfd, const char* path, int flags, mode_t mode = 0) {
  return detail::make(r, [=](io_uring_sqe* s) { io_uring_prep_openat(s, dirfd, path, flags, mode); });
}

inline auto close(ring& r, file_ref f) {
  return detail::make(r, [=](io_uring_sqe* s) {
    if (f.fixed) {
      io_uring_prep_close_direct(s, static_cast<unsigned>(f.fd));
    } else {
      io_uring_prep_close(s, f.fd);
    }
  });
}

// Fills `out`; with AT_EMPTY_PATH and path "" it stats `dirfd` itself.
inline auto statx(ring& r, int dirfd, const char* path, int flags, unsigned mask, struct ::statx* out) {
  return detail::make(r, [=](io_uring_sqe* s) { io_uring_prep_statx(s, dirfd, path, flags, mask, out); });
}

// IORING_OP_URING_CMD on `f` (a FUSE REGISTER or COMMIT_AND_FETCH, say). `cmd` (up to 80 bytes,
// copied into the SQE's command area when the SQE is queued) needs an SQE128 ring beyond 16 bytes;
// `addr`/`len` go in the SQE's addr and len; `buf_index` >= 0 sets IORING_URING_CMD_FIXED.
inline auto uring_cmd(ring& r, file_ref f, std::uint32_t cmd_op, const void* cmd, std::size_t cmd_len, std::uint64_t addr = 0,
                      std::uint32_t len = 0, int buf_index = -1) {
  const std::size_t room = r.has_sqe128() ? 80 : 16;
  if (cmd_len > room)
    throw std::invalid_argument("corofuse::io::uring_cmd: command larger than the SQE's command area (ring without SQE128?)");
  struct payload {
    unsigned char bytes[80];
    std::size_t n;
  } p{};
  std::memcpy(p.bytes, cmd, cmd_len);
  p.n = cmd_len;
  return detail::make(r, [=](io_uring_sqe* s) {
    s->opcode = IORING_OP_URING_CMD;
    detail::set_file(s, f);
    s->cmd_op = cmd_op;
    s->addr = addr;
    s->len = len;
    if (buf_index >= 0) {
      s->uring_cmd_flags = IORING_URING_CMD_FIXED;
      s->buf_index = static_cast<std::uint16_t>(buf_index);
    }
    std::memcpy(s->cmd, p.bytes, p.n);
  });
}

// Completes when `f` is ready for `events` (POLLIN, ...): the revents, or -errno. A poll wakes
// every poller (no exclusive wait), so several coroutines may poll one descriptor.
inline auto poll(ring& r, file_ref f, unsigned events) {
  return detail::make(r, [=](io_uring_sqe* s) {
    io_uring_prep_poll_add(s, 0, events);
    detail::set_file(s, f);
  });
}

// Cancels the operation `id` names: 0 when it was cancelled (it then completes -ECANCELED),
// -ENOENT when it is not (or no longer) in flight, -EALREADY when it is already running.
// The id is read when the cancellation is queued, not when it is created; the tag in user_data
// (ring::track) keeps a finished operation's reused address from matching.
inline auto cancel(ring& r, const op_id& id) {
  const op_id* target = &id;
  auto prep = [target](io_uring_sqe* s) {
    // Not pending any more: a user_data no operation carries, so the kernel answers -ENOENT.
    io_uring_prep_cancel64(s, target->pending() ? target->user_data : ~std::uint64_t{0}, 0);
  };
  if (!id.pending()) return decltype(detail::make(r, prep))::ready(r, prep, -ENOENT);
  return detail::make(r, prep);
}

// Cancels every operation tracked on `stop` that is in flight now (each completes -ECANCELED, or
// on its own if it was already running); operations tracked later are cancelled before they
// start once stop.request() was called. Run on the ring's own thread.
inline task<void> cancel_tracked(ring& r, cancellation& stop) {
  while (const std::uint64_t user_data = stop.next_to_cancel()) {
    (void)co_await detail::make(r, [user_data](io_uring_sqe* s) { io_uring_prep_cancel64(s, user_data, 0); });
  }
}

// Cancels every operation in flight on `f`: completes with the number cancelled (0 if none).
inline auto cancel_fd(ring& r, file_ref f) {
  return detail::make(r, [=](io_uring_sqe* s) {
    io_uring_prep_cancel_fd(s, f.fd, IORING_ASYNC_CANCEL_ALL | (f.fixed ? IORING_ASYNC_CANCEL_FD_FIXED : 0));
  });
}

// Cancels every operation in flight on the ring (shutdown): completes with the number cancelled.
inline auto cancel_any(ring& r) {
  return detail::make(r, [](io_uring_sqe* s) {
    io_uring_prep_cancel64(s, 0, 0);
    s->cancel_flags = IORING_ASYNC_CANCEL_ALL | IORING_ASYNC_CANCEL_ANY;
  });
}

// Cancels every operation of `opcode` (an IORING_OP_*) in flight on the ring: completes with the
// number cancelled (0 if none), or -EINVAL before Linux 6.6. An operation already running in a
// worker cannot be stopped and completes on its own.
inline auto cancel_opcode(ring& r, std::uint8_t opcode) {
  return detail::make(r, [=](io_uring_sqe* s) {
    io_uring_prep_cancel64(s, 0, 0);
    constexpr unsigned cancel_op = 1u << 5;  // IORING_ASYNC_CANCEL_OP (6.6): match sqe->len as the opcode
    s->cancel_flags = IORING_ASYNC_CANCEL_ALL | cancel_op;
    s->len = opcode;
  });
}

// ---- links ------------------------------------------------------------------------------------

// The outcome of `first` linked to `second`.
struct link_result {
  int first = 0;                // first's res, when it was reported
  bool first_reported = false;  // false: first succeeded in full and its CQE was skipped
  int second = 0;               // -ECANCELED when first failed (or was short: a short read breaks a link)
};

// Runs `second` only if `first` succeeds in full (IOSQE_IO_LINK); both go out in the same submit.
// A short read or write counts as a failure and breaks the link.
//
// With `skip_first_success` (IOSQE_CQE_SKIP_SUCCESS on the first) the pair posts exactly ONE CQE:
// the second's when the first succeeded, or the first's when it failed. The kernel then also
// suppresses the cancelled second's CQE (REQ_F_SKIP_LINK_CQES), so the pair resumes on whichever
// record completes and reports the second as -ECANCELED. Without it, both CQEs arrive, the first's
// before the second's (the second is not even started, or is cancelled, after the first
// completes), and the pair resumes on the second's.
template <typename A, typename B>
class [[nodiscard]] linked {
 public:
  linked(A first, B second, bool skip_first_success) : a_(std::move(first)), b_(std::move(second)), skip_(skip_first_success) {}

  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) {
    ring& r = a_.owner();
    skipping_ = skip_ && (r.features() & IORING_FEAT_CQE_SKIP);
    io_uring_sqe* s1 = r.get_sqes(2);
    io_uring_sqe* s2 = r.next_sqe(s1, 1);
    a_.prepare(s1);
    s1->flags |= IOSQE_IO_LINK | (skipping_ ? IOSQE_CQE_SKIP_SUCCESS : 0);
    b_.prepare(s2);
    // Skipping: one CQE for the pair, from either record, so one in-flight count and one waiter
    // on each. Not skipping: two CQEs, the second's resumes.
    head_.waiter = skipping_ ? h : std::coroutine_handle<>{};
    tail_.waiter = h;
    head_.counted = tail_.counted = true;
    r.track(s1, head_, /*count=*/!skipping_);
    r.track(s2, tail_);
  }
  link_result await_resume() const noexcept {
    if (skipping_ && head_.done) return {head_.res, true, -ECANCELED};
    return {head_.res, head_.done, tail_.res};
  }

 private:
  A a_;
  B b_;
  bool skip_;
  bool skipping_ = false;
  completion head_;
  completion tail_;
};

template <typename A, typename B>
linked<A, B> link(A first, B second, bool skip_first_success = true) {
  if (&first.owner() != &second.owner()) throw std::invalid_argument("corofuse::io::link: operations on different rings");
  if (first.is_immediate() || second.is_immediate())
    throw std::invalid_argument("corofuse::io::link: an immediate operation cannot be linked");
  return linked<A, B>(std::move(first), std::move(second), skip_first_success);
}

}  // namespace corofuse::io
