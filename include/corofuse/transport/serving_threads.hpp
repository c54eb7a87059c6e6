// The serving threads of one connection, and what reaches them from outside: INTERRUPT, the end
// of the connection, shutdown, and a pause of the /dev/fuse readers.
//
// Every thread that serves requests (a ring queue's, a /dev/fuse thread's, the main thread) has a
// mailbox: an eventfd its own ring reads, and the contexts it serves requests in. INTERRUPT
// arrives on /dev/fuse, on whichever reader, while the request it names may be in service on any
// thread: serving_threads finds the context serving that unique, requests its stop token
// (context::interrupted()) and wakes the serving thread, whose mailbox coroutine cancels every
// operation the handler has in flight through the context. The handler sees -ECANCELED and the
// request ends with EINTR. An INTERRUPT for a request not (yet) in service is kept briefly: the
// request is marked when it starts.
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
#include "corofuse/io/operations.hpp"
#include "corofuse/io/ring.hpp"
#include "corofuse/io/scope.hpp"
#include "corofuse/io/task.hpp"
#include "corofuse/transport/pause_gate.hpp"

namespace corofuse::transport {

using corofuse::detail::context_access;

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
  // Set while the session pauses the readers: the thread's /dev/fuse readers stop reading (their
  // polls on `reading_fd`, set by the thread before it serves, are cancelled) and wait at `gate`.
  std::atomic<bool> pause_reading{false};
  int reading_fd = -1;
  pause_gate* gate = nullptr;
  std::vector<context*> contexts;  // changed and read under the registry's lock only

 private:
  int fd_;
};

class serving_threads {
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
    context_access::start(c, unique);
    if (take_pending(unique)) context_access::interrupt(c);
  }

  // INTERRUPT of `unique`: marks the request in service and wakes its thread; or keeps the unique
  // for a request that has not started yet (the kernel interrupts only requests it has handed
  // out, so one not found either starts soon or has been answered already).
  void interrupt(std::uint64_t unique) {
    std::lock_guard lock(mutex_);
    for (mailbox* m : boxes_) {
      for (context* c : m->contexts) {
        if (context_access::serving(*c) == unique) {
          context_access::interrupt(*c);
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

  // The connection is over, as any part of the server saw it (a ring entry's -ENOTCONN, a
  // reader's ENODEV, an abort): from now on no operation touches a zero-copy slot, and every
  // thread cancels its data operations in flight. With `stop_handlers`, every thread also cancels
  // whatever its handlers wait for: no reply can reach anyone, and none may keep the process alive.
  void connection_over(bool stop_handlers) {
    if (!lost_.exchange(true, std::memory_order_acq_rel)) {
      std::lock_guard lock(mutex_);
      for (mailbox* m : boxes_) {
        m->lost.store(true, std::memory_order_release);
        m->wake();
      }
    }
    if (stop_handlers) stop_all();
  }
  bool connection_is_over() const noexcept { return lost_.load(std::memory_order_acquire); }
  // What zero-copy contexts check before touching the client's pages.
  const std::atomic<bool>* connection_lost_flag() const noexcept { return &lost_; }

  // Shutdown: every thread cancels what it has in flight.
  void stop_all() {
    std::lock_guard lock(mutex_);
    for (mailbox* m : boxes_) {
      m->stopping.store(true, std::memory_order_release);
      m->wake();
    }
  }

  // A pause (a handoff): every thread's /dev/fuse readers stop once their request in service is
  // answered, and wait at their gate; resume_reading_all lets them go on.
  void pause_reading_all() { set_pause_reading(true); }
  void resume_reading_all() { set_pause_reading(false); }

 private:
  void set_pause_reading(bool v) {
    std::lock_guard lock(mutex_);
    for (mailbox* m : boxes_) {
      m->pause_reading.store(v, std::memory_order_release);
      m->wake();  // pausing: its watcher cancels the readers' polls; resuming: it re-arms
    }
  }

  std::mutex mutex_;
  std::vector<mailbox*> boxes_;
  std::array<std::uint64_t, 64> pending_{};
  std::size_t next_pending_ = 0;
  std::atomic<int> pending_count_{0};
  std::atomic<bool> lost_{false};
};

// Attaches a transport's context to its thread's mailbox for as long as it lives, so that an
// INTERRUPT (and shutdown) reaches the requests it serves.
class mailbox_attachment {
 public:
  mailbox_attachment(serving_threads& threads, mailbox& box, context& c) : threads_(threads), box_(box), ctx_(c) {
    threads_.attach(box_, ctx_);
    context_access::set_connection_lost_flag(ctx_, threads_.connection_lost_flag());
  }
  ~mailbox_attachment() { threads_.detach(box_, ctx_); }
  mailbox_attachment(const mailbox_attachment&) = delete;
  mailbox_attachment& operator=(const mailbox_attachment&) = delete;

  // The context serves `unique` from now on (interrupted at once if its INTERRUPT came first).
  void start(std::uint64_t unique) { threads_.start(ctx_, unique); }
  void end() noexcept { context_access::end(ctx_); }

 private:
  serving_threads& threads_;
  mailbox& box_;
  context& ctx_;
};

// The mailbox's coroutine, on its thread's ring: on each wake, cancels the tracked operations of
// the interrupted contexts; when stopping, cancels every operation on the ring. Ends when
// `finished` returns true after a wake (the thread's serving coroutines have all ended: the
// thread wakes the mailbox then).
template <typename Finished>
io::task<void> watch_mailbox(io::ring& r, mailbox& m, Finished finished) {
  bool lost_handled = false;
  bool reading_paused = false;
  for (;;) {
    std::uint64_t v = 0;
    int n = co_await io::read(r, m.fd(), std::span(reinterpret_cast<std::byte*>(&v), sizeof v), static_cast<std::uint64_t>(-1));
    if (finished()) co_return;
    if (n < 0 && n != -EAGAIN && n != -EINTR) co_return;
    if (m.stopping.load(std::memory_order_acquire)) {
      (void)co_await io::cancel_any(r);
      continue;
    }
    if (!m.pause_reading.load(std::memory_order_acquire)) {
      reading_paused = false;  // resumed: the readers went on
    } else if (!reading_paused && m.reading_fd >= 0) {
      reading_paused = true;  // the readers see the flag when their poll ends
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
      if (context_access::take_cancel_due(*c)) co_await io::cancel_tracked(r, context_access::stop_token(*c));
    }
  }
}

// What every serving thread has around its serving coroutines: its mailbox, a place among the
// connection's serving threads for as long as it serves, the scope of its coroutines and the
// mailbox's watcher.
class serving_thread {
 public:
  serving_thread(io::ring& r, serving_threads& threads) : ring_(r), threads_(threads) {
    threads_.add(box_);
    watcher_.spawn(watch_mailbox(ring_, box_, [this] { return serving_.active() == 0; }));
  }
  ~serving_thread() {
    if (watcher_.active()) {  // run() was not reached (a failure while spawning): end the watcher
      box_.wake();
      ring_.run_until([&] { return watcher_.active() == 0; });
    }
    threads_.remove(box_);
  }
  serving_thread(const serving_thread&) = delete;
  serving_thread& operator=(const serving_thread&) = delete;

  mailbox& box() noexcept { return box_; }
  serving_threads& threads() noexcept { return threads_; }
  void spawn(io::task<void> t) { serving_.spawn(std::move(t)); }
  std::size_t active() const noexcept { return serving_.active(); }

  // Runs the ring until every serving coroutine has ended, then ends the watcher. Returns the
  // scope, whose first failure (an exception out of a serving coroutine) the caller may report.
  io::scope& run() {
    ring_.run_until([&] { return serving_.active() == 0; });
    box_.wake();  // the watcher sees the serving coroutines gone and ends
    ring_.run_until([&] { return watcher_.active() == 0; });
    return serving_;
  }

 private:
  io::ring& ring_;
  serving_threads& threads_;
  mailbox box_;
  io::scope serving_;
  io::scope watcher_;
};

}  // namespace corofuse::transport
