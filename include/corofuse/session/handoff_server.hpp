// Restart without unmount, the predecessor's side: listens on --handoff-socket and, for a
// successor that connects, freezes the serving loop, hands over the connection and its state, and
// tells the loop whether to end (the successor took over) or go on (anything failed).
//
// Freezing, in order:
//  1. The ring entries stop (transport::ring_setup::freezing): a handler that finishes leaves its
//     reply in place uncommitted; an entry that gets a request leaves it unserved. The /dev/fuse
//     readers stop between requests. Everything that stops waits at the handoff_gate.
//  2. Entries still waiting in the kernel (idle: the kernel would hand them the next request) must
//     not stay so: when this process's queue threads end, the kernel would cancel them, and a
//     request handed to one in that instant is lost. So each is given a request of our own: a
//     directory opened on the mount beforehand is closed from a thread pinned to the queue's CPU,
//     and its RELEASEDIR (sent in the background: no thread waits for it) lands in the idle entry.
//  3. Now every entry holds a request or a reply, in memory the successor maps at the same address
//     (transport::shared_arena). The filesystem's state is taken (save_state) while nothing is
//     served, and sent with /dev/fuse, the held entries and how each queue was set up (its
//     fixed-buffer table: the kernel checks a pool's index on every command). The successor
//     repeats the tables, commits the held replies and serves the held requests from its own
//     rings: each entry is then its own. A zero-copy request is never held unserved (its pages
//     are registered in this process's ring): it is served during the freeze and its reply held.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "corofuse/abi/protocol.hpp"
#include "corofuse/abi/structs.hpp"
#include "corofuse/fs/handoff_gate.hpp"
#include "corofuse/fs/interrupts.hpp"
#include "corofuse/session/handoff.hpp"
#include "corofuse/session/init.hpp"
#include "corofuse/transport/uring.hpp"

namespace corofuse::session {

// The negotiated terms and ring geometry, as both sides write and read them.
struct handoff_geometry {
  std::uint32_t queues = 0;
  std::uint32_t depth = 0;
  std::uint64_t payload_size = 0;
  std::uint64_t arena_address = 0;
  std::uint64_t arena_size = 0;
};

inline void put_terms(handoff_writer& w, const init_terms& t) {
  w.put(t.kernel_major);
  w.put(t.kernel_minor);
  w.put(t.minor);
  w.put(t.offered);
  w.put(t.flags);
  w.put(t.max_write);
  w.put(t.max_pages);
  w.put(t.max_readahead);
}
inline init_terms get_terms(handoff_reader& r) {
  init_terms t;
  t.kernel_major = r.get<std::uint32_t>();
  t.kernel_minor = r.get<std::uint32_t>();
  t.minor = r.get<std::uint32_t>();
  t.offered = r.get<std::uint64_t>();
  t.flags = r.get<std::uint64_t>();
  t.max_write = r.get<std::uint32_t>();
  t.max_pages = r.get<std::uint32_t>();
  t.max_readahead = r.get<std::uint32_t>();
  return t;
}

// What the serving loop lends the handoff thread.
struct handoff_site {
  std::string mountpoint;
  bool unprivileged = false;
  int fuse_fd = -1;
  init_terms terms;
  handoff_geometry geometry;
  transport::shared_arena* arena = nullptr;
  transport::ring_setup* rs = nullptr;  // null without queues
  interrupt_router* router = nullptr;
  handoff_gate* gate = nullptr;
  int readers = 0;                      // /dev/fuse readers that stop at the gate
  std::function<void(handoff_writer&)> save_state;
  std::atomic<bool>* connection_lost = nullptr;
  std::atomic<bool> handed_off{false};  // the successor took over: the loop ends without unmounting
};

namespace handoff_detail {

// Waits until `done` holds, up to `seconds`.
template <typename Done>
bool wait_for(Done done, double seconds) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (!done()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

// Closes `fds` from a thread pinned to `cpu`: their RELEASEDIRs go to that CPU's ring queue.
inline bool close_on_cpu(unsigned cpu, std::vector<int> fds) {
  bool pinned = false;
  std::thread t([&] {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pinned = pthread_setaffinity_np(pthread_self(), sizeof set, &set) == 0;
    for (int fd : fds) ::close(fd);
  });
  t.join();
  return pinned;
}

}  // namespace handoff_detail

// One handoff, on the accepted connection `sock`. Returns when the loop has its verdict.
inline void hand_over(int sock, handoff_site& site) {
  const unsigned queues = site.rs ? site.geometry.queues : 0;
  const unsigned depth = site.geometry.depth;
  // The successor says who it is.
  handoff_reader hello = receive_blob(sock);
  if (hello.get<std::uint64_t>() != handoff_magic || hello.get<std::uint32_t>() != handoff_version)
    throw handoff_error("handoff: the successor speaks another protocol version");
  const auto successor_pid = hello.get<std::int32_t>();

  auto refuse = [&](const std::string& why) {
    handoff_writer w;
    w.put(handoff_magic);
    w.put<std::uint8_t>(0);
    w.put_string(why);
    send_blob(sock, w);
    throw handoff_error("handoff to pid " + std::to_string(successor_pid) + " refused: " + why);
  };
  if (site.connection_lost && site.connection_lost->load()) refuse("the connection is ending");

  // The ring memory first: if the successor cannot map it where it is, nothing has changed here.
  {
    handoff_writer w;
    w.put(handoff_magic);
    w.put<std::uint8_t>(1);
    w.put_string("");
    w.put<std::uint8_t>(queues ? 1 : 0);
    w.put(site.geometry);
    if (queues) w.put_fd(site.arena->fd());
    send_blob(sock, w);
  }
  handoff_reader mapped = receive_blob(sock);
  if (!mapped.get<std::uint8_t>()) throw handoff_error("handoff: the successor could not take the ring memory: " + mapped.get_string());

  // Idle entries get a RELEASEDIR each (see above): directories opened now, while all serves.
  std::vector<int> plugs;
  if (queues) {
    for (unsigned i = 0; i < queues * depth; ++i) {
      int fd = ::open(site.mountpoint.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (fd < 0) {
        for (int p : plugs) ::close(p);
        refuse(std::string("cannot open the mount's root to quiesce the ring: ") + std::strerror(errno));
      }
      plugs.push_back(fd);
    }
  }
  struct close_rest {
    std::vector<int>& fds;
    ~close_rest() {
      for (int fd : fds) ::close(fd);
    }
  } close_plugs{plugs};

  bool state_sent = false;
  auto resume = [&](const std::string& why) {
    std::fprintf(stderr, "corofuse: handoff to pid %d failed (%s): serving on\n", successor_pid, why.c_str());
    if (state_sent) {
      // The successor may have read requests from /dev/fuse and died with them: the kernel sends
      // them again (FUSE_NOTIFY_RESEND, 7.40).
      abi::out_header h{};
      h.len = sizeof h;
      h.error = static_cast<std::int32_t>(abi::notify_code::resend);
      (void)!::write(site.fuse_fd, &h, sizeof h);
    }
    if (site.rs) site.rs->freezing.store(false, std::memory_order_seq_cst);
    site.router->resume_reading_all();
    site.gate->decide(false);
  };

  // Freeze.
  site.gate->close_gate();
  if (site.rs) site.rs->freezing.store(true, std::memory_order_seq_cst);
  site.router->stop_reading_all();
  auto slot = [&](unsigned q, unsigned i) -> transport::entry_slot& { return site.rs->slots[q * depth + i]; };
  auto count = [&](auto pred) {
    int n = 0;
    for (unsigned q = 0; q < queues; ++q)
      for (unsigned i = 0; i < depth; ++i) n += pred(slot(q, i).state.load(std::memory_order_seq_cst)) ? 1 : 0;
    return n;
  };
  // Handlers finish (every reader at the gate, no entry serving).
  // (An entry counts as held a moment before it arrives at the gate: readers are never over-counted.)
  if (!handoff_detail::wait_for(
          [&] {
            const int held = count([](auto s) { return transport::is_held(s); });
            return count([](auto s) { return s == transport::entry_state::serving; }) == 0 && site.gate->arrived() - held >= site.readers;
          },
          10.0)) {
    resume("requests in service did not finish within 10 s");
    return;
  }
  // Idle entries get their RELEASEDIR, queue by queue.
  const int quiet = count([](auto s) { return s == transport::entry_state::waiting; });
  for (unsigned q = 0; q < queues; ++q) {
    unsigned idle = 0;
    for (unsigned i = 0; i < depth; ++i) idle += slot(q, i).state.load() == transport::entry_state::waiting ? 1 : 0;
    if (!idle) continue;
    std::vector<int> mine(plugs.end() - idle, plugs.end());
    plugs.resize(plugs.size() - idle);
    if (!handoff_detail::close_on_cpu(q, std::move(mine))) {
      resume("cannot run on CPU " + std::to_string(q) + " to quiesce its ring queue");
      return;
    }
  }
  const int everyone = site.readers + static_cast<int>(queues * depth);
  if (!handoff_detail::wait_for([&] { return site.gate->arrived() >= everyone; }, 10.0)) {
    resume("the ring did not come to rest within 10 s");
    return;
  }
  if (site.connection_lost && site.connection_lost->load()) {
    resume("the connection ended");
    return;
  }

  const int held_replies = count([](auto s) { return s == transport::entry_state::held_reply; });
  const int held_requests = count([](auto s) { return s == transport::entry_state::held_request; });

  // The state, taken while nothing is served.
  try {
    handoff_writer w;
    w.put(handoff_magic);
    put_terms(w, site.terms);
    w.put_string(site.mountpoint);
    w.put<std::uint8_t>(site.unprivileged);
    w.put_fd(site.fuse_fd);
    w.put<std::uint32_t>(queues * depth);
    for (unsigned q = 0; q < queues; ++q) {
      for (unsigned i = 0; i < depth; ++i) {
        w.put(static_cast<std::uint8_t>(slot(q, i).state.load()));
        w.put(slot(q, i).commit_id);
      }
    }
    for (unsigned q = 0; q < queues; ++q) w.put(site.rs->modes[q]);
    site.save_state(w);
    send_blob(sock, w);
    state_sent = true;
    handoff_reader adopted = receive_blob(sock);
    if (!adopted.get<std::uint8_t>()) {
      resume("the successor could not start: " + adopted.get_string());
      return;
    }
  } catch (const std::exception& e) {
    resume(e.what());
    return;
  }
  std::fprintf(stderr,
               "corofuse: handed the mount over to pid %d (ring entries: %d held a reply, %d a request, of which %d were quiet "
               "and given a RELEASEDIR)\n",
               successor_pid, held_replies, held_requests, quiet);
  site.handed_off.store(true, std::memory_order_release);
  site.gate->decide(true);
}

// Accepts successors on `listen_fd` until `stop_fd` (an eventfd) is written, or a handoff succeeded.
inline void run_handoff_listener(int listen_fd, int stop_fd, handoff_site& site) {
  for (;;) {
    pollfd p[2] = {{listen_fd, POLLIN, 0}, {stop_fd, POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (p[1].revents) return;
    int sock = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (sock < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EAGAIN) continue;
      return;
    }
    timeval tv{30, 0};  // a successor that stops answering does not freeze this server for long
    ::setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    try {
      hand_over(sock, site);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "corofuse: %s\n", e.what());
    }
    ::close(sock);
    if (site.handed_off.load()) return;
  }
}

}  // namespace corofuse::session
