// Restart without unmount, the predecessor's side: listens on --handoff-socket and, for a
// successor that connects, freezes the serving loop, hands over the connection and its state, and
// tells the loop whether to end (the successor took over) or go on (anything failed).
//
// Freezing, in order:
//  1. The ring entries stop (transport::ring_pause::freezing): a handler that finishes leaves its
//     reply in place uncommitted; an entry that gets a request leaves it unserved. The /dev/fuse
//     readers stop between requests. Everything that stops waits at the transport's pause_gate.
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
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "corofuse/abi/protocol.hpp"
#include "corofuse/abi/structs.hpp"
#include "corofuse/base/log.hpp"
#include "corofuse/transport/pause_gate.hpp"
#include "corofuse/transport/serving_threads.hpp"
#include "corofuse/session/fault_points.hpp"
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
// Written by one version of a server and read by the next: a layout change of anything sent as
// bytes needs a new handoff_version.
static_assert(sizeof(handoff_geometry) == 32 && offsetof(handoff_geometry, arena_size) == 24);
static_assert(sizeof(transport::queue_mode) == 8 && offsetof(transport::queue_mode, pool_index) == 4);
static_assert(sizeof(transport::entry_state) == 1);

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
  dev_t device = 0;  // the mount's device: the plugs must be opened on it
  bool unprivileged = false;
  int fuse_fd = -1;
  init_terms terms;
  handoff_geometry geometry;
  transport::shared_arena* arena = nullptr;
  transport::ring_setup* rs = nullptr;  // null without queues
  transport::serving_threads* threads = nullptr;
  transport::pause_gate* gate = nullptr;
  int readers = 0;  // /dev/fuse readers that stop at the gate
  std::function<void(handoff_writer&)> save_state;
  // From the freeze to the verdict: a stop signal waits for the verdict (it must not unmount a
  // mount that may be the successor's by then).
  std::atomic<bool> in_progress{false};
  std::atomic<bool> handed_off{false};  // the successor took over: the loop ends without unmounting
};

namespace handoff_detail {

// True once the connection is gone (an abort, or the end of the superblock): /dev/fuse polls
// POLLERR then. Nothing else would tell a frozen server: it issues no I/O.
inline bool connection_gone(int fuse_fd) {
  pollfd p{fuse_fd, POLLIN, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLERR | POLLHUP | POLLNVAL));
}

// Waits until `done` holds, up to `seconds`; false at the deadline or when the connection ends.
template <typename Done>
bool wait_for(Done done, double seconds, int fuse_fd) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (!done()) {
    if (std::chrono::steady_clock::now() > until || connection_gone(fuse_fd)) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

// Runs `fn` on a thread pinned to `cpu`; false when it could not be pinned (offline, or outside
// this process's cpuset), and `fn` then does not run.
template <typename Fn>
bool on_cpu(unsigned cpu, Fn fn) {
  bool pinned = false;
  std::thread t([&] {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pinned = pthread_setaffinity_np(pthread_self(), sizeof set, &set) == 0;
    if (pinned) fn();
  });
  t.join();
  return pinned;
}

// The state a successor needs, taken while nothing is served: the terms, the mount, /dev/fuse,
// every ring entry as it is held, how each queue was set up, and the filesystem's own state.
inline handoff_writer state_of(handoff_site& site) {
  const unsigned queues = site.rs ? site.geometry.queues : 0;
  const unsigned depth = site.geometry.depth;
  handoff_writer w;
  w.put(handoff_magic);
  put_terms(w, site.terms);
  w.put_string(site.mountpoint);
  w.put<std::uint8_t>(site.unprivileged);
  w.put_fd(site.fuse_fd);
  w.put<std::uint32_t>(queues * depth);
  for (unsigned i = 0; i < queues * depth; ++i) {
    w.put(static_cast<std::uint8_t>(site.rs->slots[i].state.load()));
    w.put(site.rs->slots[i].commit_id);
  }
  for (unsigned q = 0; q < queues; ++q) w.put(site.rs->modes[q]);
  site.save_state(w);
  return w;
}

// Gives every idle ring entry a request of our own: per queue, as many of the directories in
// `plugs` as it has idle entries are closed from a thread on that queue's CPU (their RELEASEDIRs
// land there). Returns -1, or the CPU that could not be run on (its plugs stay in `plugs`).
inline int quiet_idle_entries(handoff_site& site, std::vector<int>& plugs) {
  const unsigned queues = site.rs ? site.geometry.queues : 0;
  const unsigned depth = site.geometry.depth;
  for (unsigned q = 0; q < queues; ++q) {
    unsigned idle = 0;
    for (unsigned i = 0; i < depth; ++i) idle += site.rs->slots[q * depth + i].state.load() == transport::entry_state::waiting ? 1 : 0;
    if (!idle) continue;
    std::vector<int> mine(plugs.end() - idle, plugs.end());
    plugs.resize(plugs.size() - idle);
    if (!on_cpu(q, [&] {
          for (int fd : mine) ::close(fd);
        })) {
      plugs.insert(plugs.end(), mine.begin(), mine.end());  // closed later, from anywhere
      return static_cast<int>(q);
    }
  }
  return -1;
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
  auto slot = [&](unsigned q, unsigned i) -> transport::entry_slot& { return site.rs->slots[q * depth + i]; };
  auto count = [&](auto pred) {
    int n = 0;
    for (unsigned q = 0; q < queues; ++q)
      for (unsigned i = 0; i < depth; ++i) n += pred(slot(q, i).state.load(std::memory_order_seq_cst)) ? 1 : 0;
    return n;
  };

  // Everything that would make the freeze fail is checked before it (a failed freeze stalls every
  // client for seconds).
  if (site.threads->connection_is_over() || handoff_detail::connection_gone(site.fuse_fd)) refuse("the connection is ending");
  if (count([](auto s) { return s == transport::entry_state::ended; }) > 0)
    refuse("a ring entry of this server has ended: its queue cannot be handed over whole");
  // Waiters of an earlier, failed handoff have all gone back to serving.
  if (!handoff_detail::wait_for([&] { return site.gate->arrived() == 0; }, 5.0, site.fuse_fd)) refuse("an earlier handoff has not settled");
  for (unsigned q = 0; q < queues; ++q)
    if (!handoff_detail::on_cpu(q, [] {})) refuse("cannot run on CPU " + std::to_string(q) + " to quiesce its ring queue");

  if (fault_at("predecessor.offer")) refuse("injected fault (predecessor.offer)");
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

  // Idle entries get a RELEASEDIR each (see above): directories opened now, while all serves, on
  // the mount itself (not something mounted over it since).
  std::vector<int> plugs;
  struct close_rest {
    std::vector<int>& fds;
    ~close_rest() {
      for (int fd : fds) ::close(fd);
    }
  } close_plugs{plugs};
  for (unsigned i = 0; i < queues * depth; ++i) {
    int fd = ::open(site.mountpoint.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) refuse(std::string("cannot open the mount's root to quiesce the ring: ") + std::strerror(errno));
    plugs.push_back(fd);
    struct stat st {};
    if (::fstat(fd, &st) != 0 || st.st_dev != site.device) refuse("the mount point " + site.mountpoint + " shows another filesystem now");
  }

  // Freeze. From here every way out is a verdict: the successor's, or resume().
  site.in_progress.store(true, std::memory_order_seq_cst);
  bool state_sent = false;
  auto resume = [&](const std::string& why) {
    log_message("handoff to pid %d failed (%s): serving on", successor_pid, why.c_str());
    if (state_sent) {
      // "No" first, before anything is served again: a successor that hears nothing and finds
      // this process gone takes the mount (successor.hpp), which is right only while nothing was.
      try {
        handoff_writer no;
        no.put<std::uint64_t>(0);
        no.put_string(why);
        send_blob(sock, no);
      } catch (...) {  // the successor is gone: nobody to tell
      }
      // The successor may have read requests from /dev/fuse and died with them: the kernel sends
      // them again (FUSE_NOTIFY_RESEND, 7.40).
      abi::out_header h{};
      h.len = sizeof h;
      h.error = static_cast<std::int32_t>(abi::notify_code::resend);
      (void)!::write(site.fuse_fd, &h, sizeof h);
    }
    if (site.rs) site.rs->pause.freezing.store(false, std::memory_order_seq_cst);
    site.threads->resume_reading_all();
    site.gate->decide(false);
    site.in_progress.store(false, std::memory_order_seq_cst);
  };
  try {
    site.gate->close_gate();
    if (site.rs) site.rs->pause.freezing.store(true, std::memory_order_seq_cst);
    site.threads->pause_reading_all();
    if (fault_at("predecessor.freeze")) {
      resume("injected fault (predecessor.freeze)");
      return;
    }
    // Handlers finish: every reader at the gate, no entry serving. (An entry counts as held a
    // moment before it arrives at the gate: arrivals are read first, so readers are never
    // over-counted.)
    if (!handoff_detail::wait_for(
            [&] {
              const int arrived = site.gate->arrived();
              const int held = count([](auto s) { return transport::is_held(s); });
              return count([](auto s) { return s == transport::entry_state::serving; }) == 0 && arrived - held >= site.readers;
            },
            10.0, site.fuse_fd)) {
      resume("requests in service did not finish within 10 s, or the connection ended");
      return;
    }
    // Idle entries get their RELEASEDIR, queue by queue.
    const int quiet = count([](auto s) { return s == transport::entry_state::waiting; });
    if (const int cpu = handoff_detail::quiet_idle_entries(site, plugs); cpu >= 0) {
      resume("cannot run on CPU " + std::to_string(cpu) + " to quiesce its ring queue");
      return;
    }
    const int everyone = site.readers + static_cast<int>(queues * depth);
    if (!handoff_detail::wait_for([&] { return site.gate->arrived() >= everyone; }, 10.0, site.fuse_fd)) {
      resume("the ring did not come to rest within 10 s, or the connection ended");
      return;
    }
    const int held_replies = count([](auto s) { return s == transport::entry_state::held_reply; });
    const int held_requests = count([](auto s) { return s == transport::entry_state::held_request; });

    if (fault_at("predecessor.state")) throw handoff_error("injected fault (predecessor.state)");
    send_blob(sock, handoff_detail::state_of(site));  // taken while nothing is served
    state_sent = true;
    if (fault_at("predecessor.ready")) throw handoff_error("injected fault (predecessor.ready)");
    // The successor has set everything up but touched nothing of the connection: until it is
    // told to go, this server can still take everything back.
    handoff_reader ready = receive_blob(sock);
    if (!ready.get<std::uint8_t>()) {
      resume("the successor could not start: " + ready.get_string());
      return;
    }
    if (fault_at("predecessor.go")) throw handoff_error("injected fault (predecessor.go)");
    handoff_writer go;
    go.put(handoff_magic);
    send_blob(sock, go);  // past this point there is no way back
    log_message(
        "handed the mount over to pid %d (ring entries: %d held a reply, %d a request, of which %d were quiet and given "
        "a RELEASEDIR)",
        successor_pid, held_replies, held_requests, quiet);
  } catch (const std::exception& e) {
    // Only a GO that was never sent leaves the successor untouched: every failure up to the send
    // above lands here, and the successor gives up without GO.
    resume(e.what());
    return;
  }
  site.handed_off.store(true, std::memory_order_release);
  site.gate->decide(true);
  site.in_progress.store(false, std::memory_order_seq_cst);
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
    set_handoff_timeouts(sock, 30);  // a successor that stops answering does not freeze this server for long
    try {
      hand_over(sock, site);
    } catch (const std::exception& e) {
      log_message("%s", e.what());
    }
    ::close(sock);
    if (site.handed_off.load()) return;
  }
}

}  // namespace corofuse::session
