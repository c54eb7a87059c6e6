// Where the serving coroutines wait while the session pauses the transports (a handoff to a
// successor process: session/handoff_server.hpp).
//
// While paused every /dev/fuse reader stops between requests and every ring entry stops with
// what it holds (a request not yet served, or a reply not yet committed), and each arrives here.
// The session then decides: the connection was handed off (the waiters end; another process
// owns it now) or not (they go on as if nothing happened). The decision is one eventfd that every
// waiter polls, on any thread's ring: an eventfd stays readable for all of them until it is
// drained for the next pause.
#pragma once

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "corofuse/io/operations.hpp"
#include "corofuse/io/ring.hpp"
#include "corofuse/io/task.hpp"

namespace corofuse::transport {

class pause_gate {
 public:
  pause_gate() : fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    if (fd_ < 0) throw std::runtime_error(std::string("eventfd: ") + std::strerror(errno));
  }
  ~pause_gate() { ::close(fd_); }
  pause_gate(const pause_gate&) = delete;
  pause_gate& operator=(const pause_gate&) = delete;

  // A new pause begins: nothing decided, nobody arrived.
  void close_gate() noexcept {
    std::uint64_t v;
    while (::read(fd_, &v, sizeof v) > 0) {
    }
    handed_off_.store(false, std::memory_order_release);
    arrived_.store(0, std::memory_order_release);
  }
  // The verdict, for every waiter at once.
  void decide(bool handed_off) noexcept {
    handed_off_.store(handed_off, std::memory_order_release);
    std::uint64_t one = 1;
    (void)!::write(fd_, &one, sizeof one);
  }
  int arrived() const noexcept { return arrived_.load(std::memory_order_acquire); }

  // Waits on `r` for the verdict: true when the successor took over (the caller ends).
  io::task<bool> wait(io::ring& r) {
    arrived_.fetch_add(1, std::memory_order_acq_rel);
    for (;;) {
      int ev = co_await io::poll(r, fd_, POLLIN);
      if (ev >= 0 || (ev != -EINTR && ev != -ECANCELED)) break;  // ECANCELED: a stray cancel; ask again
    }
    arrived_.fetch_sub(1, std::memory_order_acq_rel);
    co_return handed_off_.load(std::memory_order_acquire);
  }

 private:
  int fd_;
  std::atomic<bool> handed_off_{false};
  std::atomic<int> arrived_{0};
};

}  // namespace corofuse::transport
