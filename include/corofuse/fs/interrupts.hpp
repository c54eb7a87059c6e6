// INTERRUPT as cancellation.
//
// The kernel sends INTERRUPT (naming a request's unique) when a client waiting on that request gets
// a signal. It arrives on /dev/fuse, on whichever reader, while the request may be in service on
// any thread (a ring queue, another reader). The router finds the context serving that unique,
// marks it (context::interrupted(), the handler's stop token) and wakes the serving thread's
// mailbox, a coroutine on that thread's ring that cancels the operations the handler has in flight
// (those it issued through the context: read_fixed, write_fixed, track). The handler then sees
// -ECANCELED and the request ends with EINTR. An INTERRUPT for a request not (yet) in service is
// kept briefly: the request is marked when it starts.
//
// The same mailbox ends a thread's operations at shutdown (stop_all), so that a handler that would
// never complete does not keep the process from exiting.
#pragma once

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "corofuse/fs/context.hpp"
#include "corofuse/fs/handoff_gate.hpp"
#include "corofuse/io/operations.hpp"
#include "corofuse/io/ring.hpp"
#include "corofuse/io/task.hpp"

namespace corofuse {

// One serving thread's mailbox: an eventfd its ring reads, and the contexts it serves requests in.
class mailbox {
 public:
  mailbox() : fd_(::eventfd(0, EFD_CLOEXEC)) {  // blocking: io_uring waits on it (O_NONBLOCK would make its READ answer -EAGAIN)
    if (fd_ < 0) throw std::runtime_error(std::string("eventfd: ") + std::strerror(errno));
  }
  ~mailbox() { ::close(fd_); }
  mailbox(const mailbox&) = delete;
  mailbox& operator=(const mailbox&) = delete;

  void wake() noexcept {
    std::uint64_t one = 1;
    (void)!::write(fd_, &one, sizeof one);
  }
  int fd() const noexcept { return fd_; }
  // Set before a final wake: cancel everything in flight on the ring and end.
  std::atomic<bool> stopping{false};
  // Set when the connection is gone: cancel the data operations in flight (a zero-copy READ_FIXED
  // would otherwise still write into pages the client owns again: Linux 7.3 leaves them registered).
  std::atomic<bool> lost{false};
  // Set for a handoff to a successor process: the thread's /dev/fuse readers stop reading (their
  // polls on `reading_fd`, set by the thread before it serves, are cancelled).
  std::atomic<bool> stop_reading{false};
  int reading_fd = -1;
  handoff_gate* gate = nullptr;  // where stopped readers wait for the handoff's outcome
  std::vector<context*> contexts;  // changed and read under the router's lock only

 private:
  int fd_;
};

class interrupt_router {
 public:
  void add(mailbox& m) {
    std::lock_guard lock(mutex_);
    boxes_.push_back(&m);
  }
  void remove(mailbox& m) {
    std::lock_guard lock(mutex_);
    boxes_.erase(std::remove(boxes_.begin(), boxes_.end(), &m), boxes_.end());
  }
  // A context serves requests on the mailbox's thread (until detached).
  void attach(mailbox& m, context& c) {
    std::lock_guard lock(mutex_);
    m.contexts.push_back(&c);
  }
  void detach(mailbox& m, context& c) {
    std::lock_guard lock(mutex_);
    m.contexts.erase(std::remove(m.contexts.begin(), m.contexts.end(), &c), m.contexts.end());
  }

  // A transport's start of a request: the context serves `unique` from now on, interrupted at once
  // if its INTERRUPT came first.
  void start(context& c, std::uint64_t unique) {
    c.start(unique);
    if (take_pending(unique)) c.mark_interrupted();
  }

  // INTERRUPT of `unique`: marks the request in service and wakes its thread; or keeps the unique
  // for a request that has not started yet (the kernel interrupts only requests it has handed
  // out, so one not found either starts soon or has been answered already).
  void interrupt(std::uint64_t unique) {
    std::lock_guard lock(mutex_);
    for (mailbox* m : boxes_) {
      for (context* c : m->contexts) {
        if (c->serving() == unique) {
          c->mark_interrupted();
          m->wake();
          return;
        }
      }
    }
    pending_[next_pending_++ % pending_.size()] = unique;
    pending_count_.store(static_cast<int>(std::min<std::size_t>(next_pending_, pending_.size())), std::memory_order_release);
  }

  // For a request just started: was it interrupted before? (Cheap when nothing is pending.)
  bool take_pending(std::uint64_t unique) {
    if (pending_count_.load(std::memory_order_acquire) == 0) return false;
    std::lock_guard lock(mutex_);
    for (auto& u : pending_) {
      if (u == unique) {
        u = 0;
        return true;
      }
    }
    return false;
  }

  // The connection ended (seen by any thread): every thread cancels its data operations in flight.
  void connection_lost() {
    std::lock_guard lock(mutex_);
    for (mailbox* m : boxes_) {
      if (m->lost.exchange(true, std::memory_order_acq_rel)) continue;
      m->wake();
    }
  }

  // Handoff: every thread's /dev/fuse readers stop once their request in service is answered.
  void stop_reading_all() {
    std::lock_guard lock(mutex_);
    for (mailbox* m : boxes_) {
      m->stop_reading.store(true, std::memory_order_release);
      m->wake();
    }
  }

  // The handoff failed: readers go on (called before the gate's verdict).
  void resume_reading_all() {
    std::lock_guard lock(mutex_);
    for (mailbox* m : boxes_) {
      m->stop_reading.store(false, std::memory_order_release);
      m->wake();  // its watcher re-arms for the next handoff
    }
  }

  // Shutdown: every thread cancels what it has in flight.
  void stop_all() {
    std::lock_guard lock(mutex_);
    for (mailbox* m : boxes_) {
      m->stopping.store(true, std::memory_order_release);
      m->wake();
    }
  }

 private:
  std::mutex mutex_;
  std::vector<mailbox*> boxes_;
  std::array<std::uint64_t, 64> pending_{};
  std::size_t next_pending_ = 0;
  std::atomic<int> pending_count_{0};
};

// Attaches a transport's context to its thread's mailbox for as long as it lives, so that an
// INTERRUPT (and shutdown) reaches the requests it serves. Without a router or mailbox (a bare
// transport in a test) it does nothing but mark the request started.
struct mailbox_attachment {
  interrupt_router* router;
  mailbox* box;
  context* ctx;
  mailbox_attachment(interrupt_router* r, mailbox* m, context& c) : router(r && m ? r : nullptr), box(m), ctx(&c) {
    if (router) router->attach(*box, *ctx);
  }
  ~mailbox_attachment() {
    if (router) router->detach(*box, *ctx);
  }
  mailbox_attachment(const mailbox_attachment&) = delete;
  mailbox_attachment& operator=(const mailbox_attachment&) = delete;
  // The context serves `unique` from now on (interrupted at once if its INTERRUPT came first).
  void start(std::uint64_t unique) {
    if (router) router->start(*ctx, unique);
    else ctx->start(unique);
  }
};

// A handler cancelled by an INTERRUPT of its request answers EINTR, what the client's system call
// then returns.
inline int interrupted_error(const context& ctx, int error) noexcept {
  return ctx.interrupted() && error == ECANCELED ? EINTR : error;
}

// The mailbox's coroutine, on its thread's ring: on each wake, cancels the tracked operations of
// the interrupted contexts; when stopping, cancels every operation on the ring. Ends when
// `finished` returns true after a wake (the thread's serving coroutines have all ended: the
// thread wakes the mailbox then).
template <typename Finished>
io::task<void> watch_mailbox(io::ring& r, mailbox& m, Finished finished) {
  bool lost_handled = false;
  bool reading_stopped = false;
  for (;;) {
    std::uint64_t v = 0;
    int n = co_await io::read(r, m.fd(), std::span(reinterpret_cast<std::byte*>(&v), sizeof v), static_cast<std::uint64_t>(-1));
    if (finished()) co_return;
    if (n < 0 && n != -EAGAIN && n != -EINTR) co_return;
    if (m.stopping.load(std::memory_order_acquire)) {
      (void)co_await io::cancel_any(r);
      continue;
    }
    if (!m.stop_reading.load(std::memory_order_acquire)) {
      reading_stopped = false;  // a failed handoff: the readers went on
    } else if (!reading_stopped && m.reading_fd >= 0) {
      reading_stopped = true;  // the readers see the flag when their poll ends
      (void)co_await io::cancel_fd(r, io::file_ref{m.reading_fd});
    }
    if (m.lost.load(std::memory_order_acquire) && !lost_handled) {
      lost_handled = true;
      (void)co_await io::cancel_opcode(r, IORING_OP_READ_FIXED);
      (void)co_await io::cancel_opcode(r, IORING_OP_WRITE_FIXED);
    }
    // Only this thread adds or removes its own contexts, so reading the list here needs no lock.
    for (std::size_t i = 0; i < m.contexts.size(); ++i) {
      context* c = m.contexts[i];
      if (!c->cancel_due()) continue;
      for (io::op_id& op : c->tracked_operations())
        if (op.pending()) (void)co_await io::cancel(r, op);
    }
  }
}

}  // namespace corofuse
