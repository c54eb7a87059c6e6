// A mounted filesystem, served until it is unmounted or the process is told to stop.
//
//   mount -> INIT negotiated on /dev/fuse -> readers serve -> SIGINT/SIGTERM or an outside umount
//   -> lazy unmount (never a stat) -> readers see ENODEV and end -> after a grace period a
//   connection the kernel still keeps (open files, a cwd inside) is aborted through fusectl.
#pragma once

#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>
#include <latch>
#include <atomic>
#include <optional>

#include "corofuse/abi/flags.hpp"
#include "corofuse/fs/dispatch.hpp"
#include "corofuse/fs/interrupts.hpp"
#include "corofuse/fs/handlers.hpp"
#include "corofuse/io/operations.hpp"
#include "corofuse/io/ring.hpp"
#include "corofuse/io/scope.hpp"
#include "corofuse/io/sync_wait.hpp"
#include "corofuse/proto/request.hpp"
#include "corofuse/session/counters.hpp"
#include "corofuse/session/handoff.hpp"
#include "corofuse/session/handoff_server.hpp"
#include "corofuse/session/init.hpp"
#include "corofuse/session/mount.hpp"
#include "corofuse/session/options.hpp"
#include "corofuse/transport/dev_fuse.hpp"
#include "corofuse/transport/uring.hpp"

namespace corofuse::session {

// What the filesystem class asks of INIT, from its optional `init_flags()` member.
template <typename Fs>
std::uint64_t wanted_flags(const Fs& fs, const options& o) {
  std::uint64_t f = abi::init_flag::big_writes | abi::init_flag::max_pages | abi::init_flag::parallel_dirops;
  // With ATOMIC_O_TRUNC the kernel leaves O_TRUNC to OPEN: only a filesystem that handles OPEN
  // can honour it (the default OPEN would silently keep the old contents).
  if constexpr (handlers::open<Fs>) f |= abi::init_flag::atomic_o_trunc;
  // READDIRPLUS (listings with attributes, saving a LOOKUP per entry) when the filesystem has it.
  if constexpr (handlers::readdirplus<Fs>) {
    if (o.readdirplus != readdirplus_mode::off) f |= abi::init_flag::do_readdirplus;
    if (o.readdirplus == readdirplus_mode::automatic) f |= abi::init_flag::readdirplus_auto;
  }
  if constexpr (handlers::ioctl<Fs>) f |= abi::init_flag::has_ioctl_dir;  // ioctls on directories too
  if (o.async_read) f |= abi::init_flag::async_read;
  if (o.writeback_cache) f |= abi::init_flag::writeback_cache;
  // The parent's group, when a creating caller is in it through a supplementary group only: costs
  // nothing elsewhere, and lets context::caller_in_group decide setgid as the kernel would.
  f |= abi::init_flag::create_supp_group;
  if (o.allow_idmap) f |= abi::init_flag::allow_idmap;
  if constexpr (requires { fs.init_flags(); }) f |= fs.init_flags();
  return f;
}

class server_log {
 public:
  explicit server_log(bool debug) : debug_(debug) {}
  template <typename... A>
  void info(const char* fmt, A... a) const {
    std::fprintf(stderr, "corofuse: ");
    std::fprintf(stderr, fmt, a...);
    std::fputc('\n', stderr);
  }
  bool debug() const noexcept { return debug_; }

 private:
  bool debug_;
};

// State shared by the readers and the shutdown watcher of one serving loop.
struct serve_state {
  fuse_mount* mount = nullptr;
  int live_readers = 0;
  bool read_failed = false;
  io::op_id watcher_op;  // the watcher's pending signal read or grace timeout
  std::atomic<bool>* connection_lost = nullptr;  // told when a reader sees the connection end
  interrupt_router* router = nullptr;
  mailbox* box = nullptr;  // the main thread's
  notify_replies* replies = nullptr;
  const handoff_site* handoff = nullptr;  // a stop signal waits for a handoff's verdict
};

template <typename Fs>
io::task<void> run_reader(Fs& fs, io::ring& r, serve_state& st, const cache_defaults& cache, transport::dev_buffers& buf,
                          counters& stats, proto::layout_options layout, int first_fixed_index) {
  transport::reader_end end =
      co_await transport::serve_dev_fuse(fs, r, st.mount->fd(), cache, buf, stats, layout, first_fixed_index, st.router, st.box,
                                         st.replies);
  if (end == transport::reader_end::read_failed) st.read_failed = true;
  if (end != transport::reader_end::stopped) {  // stopped: handed over to a successor, the connection lives on
    // ENODEV: the connection is over (the superblock is gone, or it was aborted). The ring's
    // zero-copy entries must stop touching client pages, and no reply can reach anyone any more:
    // every thread cancels what its handlers wait for, so that none keeps the process alive.
    if (st.connection_lost) st.connection_lost->store(true, std::memory_order_release);
    if (st.router) {
      st.router->connection_lost();
      if (end == transport::reader_end::connection_gone) st.router->stop_all();
    }
  }
  if (--st.live_readers == 0 && st.watcher_op.pending()) co_await io::cancel(r, st.watcher_op);  // nothing left to watch
}

// Waits for SIGINT/SIGTERM; then unmounts lazily and, if the connection outlives the grace
// period, aborts it. Ends early when every reader has ended (an outside umount). When the abort is
// not possible (no fusectl), the server keeps serving the files still open and keeps listening:
// a further signal tries the abort again.
inline io::task<void> watch_for_stop(io::ring& r, serve_state& st, int sigfd, double grace, const server_log& log) {
  bool unmounted = false;
  for (;;) {
    signalfd_siginfo si{};
    int n = co_await io::read(r, sigfd, std::span(reinterpret_cast<std::byte*>(&si), sizeof si), static_cast<std::uint64_t>(-1))
                .track(st.watcher_op);
    if (n != static_cast<int>(sizeof si)) co_return;  // cancelled: the readers ended first
    if (st.handoff) {
      // A handoff under way decides first: the mount may be the successor's, not to unmount.
      while (st.handoff->in_progress.load(std::memory_order_acquire))
        (void)co_await io::timeout(r, std::chrono::milliseconds(20));
      if (st.handoff->handed_off.load(std::memory_order_acquire)) co_return;
    }
    if (!unmounted) {
      log.info("%s: unmounting %s", strsignal(static_cast<int>(si.ssi_signo)), st.mount->mountpoint().c_str());
      st.mount->detach();
      unmounted = true;
      if (st.live_readers == 0) co_return;
      int t = co_await io::timeout(r, std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::duration<double>(grace)))
                  .track(st.watcher_op);
      if (t != -ETIME || st.live_readers == 0) co_return;  // cancelled: the connection ended in time
      log.info("the kernel still holds the connection after %.1f s (open files or a cwd inside): aborting it", grace);
    } else {
      log.info("%s again: aborting the connection", strsignal(static_cast<int>(si.ssi_signo)));
    }
    // Aborted now, or gone already (the kernel's request timeout, say: then there is nothing
    // left to abort). Either way handlers that would never complete must not keep the process
    // alive: every serving thread cancels what it has in flight.
    if (st.mount->abort() || (st.connection_lost && st.connection_lost->load(std::memory_order_acquire))) {
      if (st.router) st.router->stop_all();
      co_return;
    }
    log.info("cannot abort the connection (is fusectl mounted on /sys/fs/fuse/connections?): serving the open files "
             "until they are closed; signal again to retry");
  }
}

// Reads and answers INIT. Returns the agreed terms, or nothing (logged) when the kernel was refused.
inline bool negotiate(io::ring& r, fuse_mount& m, transport::dev_buffers& buf, const init_wishes& w, init_terms& terms,
                      const server_log& log) {
  for (;;) {
    int n = transport::read_request(m.fd(), buf.request());
    if (n == -EAGAIN) {  // INIT is queued by mount(2); wait for it on the ring all the same
      auto wait_readable = [&]() -> io::task<int> { co_return co_await io::poll(r, m.fd(), POLLIN); };
      io::sync_wait(r, wait_readable());
      continue;
    }
    if (n == -EINTR) continue;
    if (n < 0) {
      log.info("reading INIT from /dev/fuse failed: %s", std::strerror(-n));
      return false;
    }
    proto::request req;
    auto e = proto::parse_message(buf.request().first(static_cast<std::size_t>(n)), req);
    if (e != proto::parse_error::none || req.opcode() != abi::opcode::init) {
      log.info("expected INIT as the first request, got opcode %u (%s)", req.header().opcode, proto::describe(e).data());
      return false;
    }
    init_outcome out = negotiate_init(req.op<abi::init_in>(), w);
    auto reply = [&](int error, const void* p, std::size_t len) {
      return transport::send_dev_reply(m.fd(), req.unique(), error, std::span(static_cast<const std::byte*>(p), len));
    };
    if (out.what == init_outcome::kind::refused) {
      log.info("%s", out.why.c_str());
      reply(EPROTO, nullptr, 0);
      return false;
    }
    if (out.what == init_outcome::kind::retry_major) {
      // The kernel speaks a newer major: tell it ours (the short, old-style reply) and it asks again.
      reply(0, &out.reply, abi::compat_init_out_size);
      continue;
    }
    if (reply(0, &out.reply, sizeof out.reply) < 0) {
      log.info("the kernel refused our INIT reply");
      return false;
    }
    terms = out.terms;
    return true;
  }
}

// Mounts `fs` on o.mountpoint and serves it; returns the process exit status.
// A filesystem that can hand its state to a successor process (restart without unmount): what
// save_state() writes (values, descriptors), restore_state() reads back in the successor.
template <typename Fs>
concept hands_over_state = requires(Fs& fs, handoff_writer& w, handoff_reader& r) {
  fs.save_state(w);
  fs.restore_state(r);
};

// The successor's side of a handoff, up to the state: the predecessor's ring memory mapped at its
// address, then everything it sent.
struct taken_over_mount {
  transport::shared_arena arena;
  handoff_geometry geometry;
  std::optional<handoff_reader> state;  // positioned at the held entries
  int sock = -1;
  ~taken_over_mount() {
    if (sock >= 0) ::close(sock);
  }
};

inline void take_over_from(const std::string& path, taken_over_mount& t) {
  t.sock = connect_to_predecessor(path, 30);
  handoff_writer hello;
  hello.put(handoff_magic);
  hello.put(handoff_version);
  hello.put(static_cast<std::int32_t>(::getpid()));
  send_blob(t.sock, hello);
  handoff_reader offer = receive_blob(t.sock);
  if (offer.get<std::uint64_t>() != handoff_magic) throw handoff_error("--take-over " + path + ": not a corofuse handoff socket");
  const bool ok = offer.get<std::uint8_t>() != 0;
  const std::string why = offer.get_string();
  if (!ok) throw handoff_error("--take-over " + path + ": the running server refused: " + why);
  const bool has_arena = offer.get<std::uint8_t>() != 0;
  t.geometry = offer.get<handoff_geometry>();
  std::string map_error;
  if (has_arena) {
    try {
      t.arena = transport::shared_arena::map_at(offer.take_fd(), t.geometry.arena_address, t.geometry.arena_size);
    } catch (const std::exception& e) {
      map_error = e.what();
    }
  }
  handoff_writer mapped;
  mapped.put<std::uint8_t>(map_error.empty());
  mapped.put_string(map_error);
  send_blob(t.sock, mapped);
  if (!map_error.empty()) throw handoff_error("--take-over " + path + ": " + map_error);
  t.state.emplace(receive_blob(t.sock));
  if (t.state->get<std::uint64_t>() != handoff_magic) throw handoff_error("--take-over " + path + ": a malformed state");
}

template <typename Fs>
int serve(Fs& fs, const options& o, counters* external_stats = nullptr) {
  server_log log(o.debug);
  counters own_stats;
  counters& stats = external_stats ? *external_stats : own_stats;

  // Signals go to a signalfd watched on the ring; block them before anything else runs.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGHUP);
  sigset_t old_mask;
  pthread_sigmask(SIG_BLOCK, &stop_signals, &old_mask);
  int sigfd = signalfd(-1, &stop_signals, SFD_CLOEXEC);
  if (sigfd < 0) {
    log.info("signalfd: %s", std::strerror(errno));
    return 1;
  }
  struct restore {
    int fd;
    sigset_t mask;
    ~restore() {
      ::close(fd);
      pthread_sigmask(SIG_SETMASK, &mask, nullptr);
    }
  } restore_signals{sigfd, old_mask};

  // Idmapped mounts change what every request says about its caller: only a filesystem written
  // for that may allow them.
  if (o.allow_idmap) {
    if constexpr (!requires { requires Fs::supports_idmapped_mounts; }) {
      log.info("-o allow_idmap: this filesystem does not support idmapped mounts");
      return 2;
    }
    if (!o.mount.default_permissions) {
      log.info("-o allow_idmap needs default_permissions");
      return 2;
    }
  }

  if (!o.handoff_socket.empty() || !o.take_over.empty()) {
    if constexpr (!hands_over_state<Fs>) {
      log.info("%s: this filesystem cannot hand its state to a successor (it has no save_state/restore_state)",
               o.take_over.empty() ? "--handoff-socket" : "--take-over");
      return 2;
    }
  }

  // A successor takes the mount over instead of mounting: the predecessor's terms, its /dev/fuse,
  // its ring entries (held in memory mapped here at the same address) and its filesystem state.
  std::unique_ptr<fuse_mount> m;
  taken_over_mount pred;
  init_terms terms;
  const bool successor = !o.take_over.empty();
  if (successor) {
    try {
      take_over_from(o.take_over, pred);
      handoff_reader& in = *pred.state;
      terms = get_terms(in);
      const std::string mountpoint = in.get_string();
      const bool unprivileged = in.get<std::uint8_t>() != 0;
      m = std::make_unique<fuse_mount>(fuse_mount::taken_over_t{}, in.take_fd(), mountpoint, unprivileged);
      char resolved[PATH_MAX];
      if (!::realpath(o.mountpoint.c_str(), resolved) || mountpoint != resolved)
        log.info("--take-over: serving %s, where the predecessor mounted (not %s)", mountpoint.c_str(), o.mountpoint.c_str());
    } catch (const std::exception& e) {
      const std::string what = e.what();
      log.info("%s%s", what.rfind("--take-over", 0) == 0 ? "" : ("--take-over " + o.take_over + ": ").c_str(), what.c_str());
      return 1;
    }
  } else {
    try {
      m = std::make_unique<fuse_mount>(o.mountpoint, o.mount);
    } catch (const mount_error& e) {
      log.info("%s", e.what());
      return 1;
    }
  }
  // Buffers before the ring: the ring goes first at the end, so no operation of it can still be
  // writing into a freed buffer. Sized for what the kernel may send: at least its default 32
  // pages, whatever -o max_pages asked for (the kernel ignores smaller counts it was not told).
  const std::size_t max_payload = std::max<std::size_t>({o.max_pages, terms.max_pages, 32}) * 4096;
  std::vector<std::unique_ptr<transport::dev_buffers>> buffers;
  for (unsigned i = 0; i < o.depth; ++i) buffers.push_back(std::make_unique<transport::dev_buffers>(max_payload));
  std::unique_ptr<io::ring> ring;
  try {
    io::ring_options ro;
    ro.entries = std::max(64u, 4 * o.depth + 8);
    ring = std::make_unique<io::ring>(ro);
  } catch (const std::exception& e) {
    log.info("%s", e.what());
    return 1;
  }
  io::ring& r = *ring;
  if (!r.fallback_reason().empty()) log.info("%s", r.fallback_reason().c_str());

  if (!successor) {
  init_wishes w;
  w.flags = wanted_flags(fs, o);
  if (!o.handoff_socket.empty()) {
    // A handoff quiets each idle ring entry with a background request (handoff_server.hpp): the
    // kernel must let that many run at once (its default is 12).
    const unsigned need = transport::possible_cpus() * o.depth + 12;
    w.max_background = static_cast<std::uint16_t>(std::min(need, 65535u));
    w.congestion_threshold = static_cast<std::uint16_t>(w.max_background * 3 / 4);
  }
  if (o.transport != transport_choice::dev_fuse) w.flags |= abi::init_flag::over_io_uring;
  w.max_write = o.max_write;
  w.max_pages = o.max_pages;
  if (o.request_timeout) {
    w.flags |= abi::init_flag::request_timeout;
    w.request_timeout = o.request_timeout;
  }
  if (w.flags & abi::init_flag::passthrough) {
    // The backing files may sit on a plain filesystem (depth 0); the kernel refuses deeper ones
    // with ELOOP at open_backing. The kernel turns passthrough off beside writeback_cache.
    w.max_stack_depth = 1;
    if (w.flags & abi::init_flag::writeback_cache) {
      log.info("kernel passthrough is not possible with writeback_cache: it stays off");
      w.flags &= ~abi::init_flag::passthrough;
    }
  }
  if (!transport::set_nonblocking(m->fd())) {
    log.info("cannot make /dev/fuse non-blocking: %s", std::strerror(errno));
    return 1;
  }
  if (!negotiate(r, *m, *buffers[0], w, terms, log)) return 1;
  const bool must_ring = o.transport == transport_choice::ring || o.transport == transport_choice::pool;
  if (must_ring && !terms.has(abi::init_flag::over_io_uring)) {
    // Nothing has been served yet: the unmount below cannot strand a client.
    log.info("--transport %s: the kernel does not offer FUSE-over-io_uring (needs Linux 6.14+ and "
             "/sys/module/fuse/parameters/enable_uring = Y)", o.transport == transport_choice::pool ? "pool" : "ring");
    return 1;
  }
  if (o.transport == transport_choice::pool && !terms.offers(abi::init_flag::has_io_uring_bufpool)) {
    log.info("--transport pool: the kernel does not offer buffer pools (FUSE protocol 7.46, Linux 7.3+)");
    return 1;
  }
  if (o.transport == transport_choice::dev_fuse)
    log.info("serving /dev/fuse (--transport dev)");
  else if (!terms.offers(abi::init_flag::over_io_uring))
    log.info("serving /dev/fuse: the kernel does not offer FUSE-over-io_uring (needs Linux 6.14+ and "
             "/sys/module/fuse/parameters/enable_uring = Y)");
  if (o.allow_idmap && !terms.has(abi::init_flag::allow_idmap))
    log.info("-o allow_idmap: the kernel does not offer idmapped FUSE mounts (Linux 6.12+): they stay refused");
  if (o.request_timeout && !terms.has(abi::init_flag::request_timeout))
    log.info("-o request_timeout: the kernel does not offer request timeouts (FUSE 7.43, Linux 6.14+): requests wait for ever");
  if (o.debug)
    log.info("mounted %s: protocol 7.%u, max_write %u, flags 0x%llx", m->mountpoint().c_str(), terms.minor, terms.max_write,
             static_cast<unsigned long long>(terms.flags));
  }  // !successor

  // RETRIEVE's answers come back on /dev/fuse, to whichever reader: routed to the asker.
  notify_replies replies;
  if constexpr (handlers::init<Fs>) {
    connection conn(m->fd(), terms.flags, terms.minor, terms.max_write, &replies);
    try {
      fs.init(conn);
    } catch (const std::exception& e) {
      // Nothing has been served: the mount goes (a successor's stays the predecessor's).
      log.info("the filesystem's init failed: %s", e.what());
      if (successor) {
        m->hand_over();
      } else {
        m->abort();
        m->detach();
      }
      return 1;
    }
  }
  // The ring geometry (the successor's is the predecessor's) and, in the successor, the entries
  // as they were held, then the filesystem's state.
  unsigned queues = terms.has(abi::init_flag::over_io_uring) ? transport::possible_cpus() : 0;
  unsigned depth = o.depth;
  std::size_t payload_size = queues ? transport::ring_payload_size(terms.max_write, terms.max_pages) : 0;
  if (successor) {
    queues = pred.geometry.queues;
    depth = pred.geometry.depth;
    payload_size = pred.geometry.payload_size;
    if (queues && queues != transport::possible_cpus()) {
      log.info("--take-over: the predecessor served %u ring queues, this machine has %u CPUs", queues, transport::possible_cpus());
      return 1;
    }
  }
  const transport::queue_layout qlayout = transport::layout_of_queue(depth, payload_size);
  transport::shared_arena own_arena;
  if (queues && !successor) {
    try {
      own_arena = transport::shared_arena::create(queues * qlayout.per_queue());
    } catch (const std::exception& e) {
      log.info("%s", e.what());
      return 1;
    }
  }
  transport::shared_arena& arena = successor ? pred.arena : own_arena;
  if (queues && arena.size() < queues * qlayout.per_queue()) {
    log.info("--take-over: the predecessor's ring memory is smaller than its geometry says");
    return 1;
  }
  std::unique_ptr<transport::entry_slot[]> slots(new transport::entry_slot[std::size_t{queues} * depth]);
  std::vector<transport::queue_mode> modes(queues);
  if (successor) {
    try {
      handoff_reader& in = *pred.state;
      const auto n = in.get<std::uint32_t>();
      if (n != queues * depth) throw handoff_error("--take-over: the held entries do not match the ring geometry");
      for (std::uint32_t i = 0; i < n; ++i) {
        const auto state = static_cast<transport::entry_state>(in.get<std::uint8_t>());
        slots[i].commit_id = in.get<std::uint64_t>();
        if (!transport::is_held(state)) throw handoff_error("--take-over: an entry the predecessor did not hold");
        slots[i].state.store(state);
      }
      for (auto& qm : modes) {
        qm = in.get<transport::queue_mode>();
        // The tables pool.hpp and uring.hpp make: sparse (the pool at `depth`, or none), or the
        // pool or payload block alone at 0, or nothing registered.
        const bool known = qm.sparse_table ? (qm.pool_index == -1 || qm.pool_index == static_cast<std::int32_t>(depth))
                                           : (qm.pool_index == -1 || qm.pool_index == 0);
        if (!known || (qm.zero_copy && !qm.sparse_table)) throw handoff_error("--take-over: a queue's buffer table makes no sense");
      }
      if (terms.has(abi::init_flag::allow_idmap) && !requires { requires Fs::supports_idmapped_mounts; })
        throw handoff_error("--take-over: the mount allows idmapped mounts, which this filesystem does not support");
      if constexpr (hands_over_state<Fs>) fs.restore_state(in);
      if (!in.at_end()) throw handoff_error("--take-over: more state than the filesystem read");
    } catch (const std::exception& e) {
      // Nothing is served yet: tell the predecessor, which then serves on.
      handoff_writer no;
      no.put<std::uint8_t>(0);
      no.put_string(e.what());
      try {
        send_blob(pred.sock, no);
      } catch (...) {
      }
      log.info("%s", e.what());
      m->hand_over();  // the mount stays the predecessor's
      return 1;
    }
  }

  proto::layout_options layout;
  layout.setxattr_ext = terms.has(abi::init_flag::setxattr_ext);

  // The ring: one pinned thread per possible CPU, started only now that INIT is answered.
  // INTERRUPT reaches the request it names on any thread, through the threads' mailboxes.
  interrupt_router router;
  transport::ring_setup rs;
  rs.router = &router;
  std::vector<std::thread> queue_threads;
  handoff_gate gate;
  std::vector<std::atomic<std::uint64_t>> queue_requests(queues);
  // Outlives the queue threads: a thread may still be inside count_down() when wait() returns.
  std::latch started(queues);
  if (queues) {
    rs.fuse_fd = m->fd();
    rs.depth = depth;
    rs.payload_size = payload_size;
    rs.arena = &arena;
    rs.arena_layout = qlayout;
    rs.slots = slots.get();
    rs.modes = modes.data();
    rs.gate = &gate;
    rs.adopt = successor;
    // Buffer pools when the kernel offers them (7.46), unless the 7.42 ring was asked for. (A
    // successor continues each queue as the predecessor set it up: rs.modes.)
    rs.use_pool = terms.offers(abi::init_flag::has_io_uring_bufpool) && o.transport != transport_choice::ring;
    rs.zero_copy = rs.use_pool && o.zero_copy;
    rs.layout = layout;
    rs.cache = &o.cache;
    rs.stats = &stats;
    rs.replies = &replies;
    rs.queues_running = static_cast<int>(queues);
    for (unsigned q = 0; q < queues; ++q)
      queue_threads.emplace_back([&, q] { transport::run_ring_queue(fs, rs, static_cast<std::uint16_t>(q), started, queue_requests[q]); });
    started.wait();
    if (rs.queues_failed.load() > 0) {
      // A queue without entries blocks every client of its CPU: end the connection instead. (A
      // successor's entries wait for the predecessor's go, which never comes: the mount stays the
      // predecessor's, which serves on.)
      log.info("%d of %u ring queues could not be set up: %s", rs.queues_failed.load(), queues,
               successor ? "giving the mount back to the predecessor" : "aborting the connection");
      if (successor) {
        handoff_writer no;
        no.put<std::uint8_t>(0);
        no.put_string("its ring queues could not be set up");
        try {
          send_blob(pred.sock, no);
        } catch (...) {
        }
        gate.decide(true);  // the held entries stay as they are
      }
      m->abort();
      m->detach();
      for (auto& t : queue_threads) t.join();
      return 1;
    }
    if (rs.use_pool)
      log.info("serving over FUSE-over-io_uring with buffer pools: %u queues x %u entries, %zu KiB buffers; %d queues pooled, "
               "%d zero-copy", queues, depth, rs.payload_size / 1024, rs.pool_queues.load(), rs.zero_copy_queues.load());
    else
      log.info("serving over FUSE-over-io_uring: %u queues x %u entries, %zu KiB payload each%s", queues, depth,
               rs.payload_size / 1024, successor ? " (taken over)" : "");
  }
  if (o.debug) {
    // The buffer memory this mount holds (all of it pinned where registered): the ring's payloads
    // or pools, the /dev/fuse readers' request and reply buffers, the extra reading threads'.
    const double mib = 1024.0 * 1024.0;
    const std::size_t reader_bytes = o.depth * 2 * (max_payload + 4096);
    const std::size_t ring_bytes = queues * std::size_t{depth} * rs.payload_size;
    const std::size_t thread_bytes = queues ? 0 : (transport::possible_cpus() - 1) * reader_bytes;
    log.info("buffers: %.1f MiB (ring %.1f MiB = %u queues x %u x %zu KiB; /dev/fuse readers %.1f MiB; extra reading threads "
             "%.1f MiB)", static_cast<double>(ring_bytes + reader_bytes + thread_bytes) / mib, static_cast<double>(ring_bytes) / mib,
             queues, depth, rs.payload_size / 1024, static_cast<double>(reader_bytes) / mib, static_cast<double>(thread_bytes) / mib);
  }
  if (successor) {
    // Everything is set up and nothing of the connection touched: the predecessor may still take
    // it back. Ready; then, on its go, the held entries are served and committed from here.
    bool go = false;
    try {
      handoff_writer ready;
      ready.put<std::uint8_t>(1);
      ready.put_string("");
      send_blob(pred.sock, ready);
      handoff_reader answer = receive_blob(pred.sock);
      go = answer.get<std::uint64_t>() == handoff_magic;
    } catch (const std::exception& e) {
      log.info("--take-over: %s: the predecessor keeps the mount", e.what());
    }
    if (!go) {
      gate.decide(true);  // the held entries are left as they are, for the predecessor
      for (auto& t : queue_threads) t.join();
      return 1;
    }
    m->claim();
    gate.decide(false);  // go: the held entries are served and committed from this process's rings
    log.info("took the mount %s over", m->mountpoint().c_str());
  }
  // Without the ring, /dev/fuse carries everything: one more reading thread per further possible
  // CPU, each on its own cloned descriptor and ring.
  transport::dev_threads_setup ds;
  std::vector<std::thread> dev_threads;
  if (!queues) {
    ds.cache = &o.cache;
    ds.stats = &stats;
    ds.layout = layout;
    ds.router = &router;
    ds.replies = &replies;
    ds.gate = &gate;
    ds.depth = o.depth;
    ds.max_payload = max_payload;
    for (unsigned t = 1; t < transport::possible_cpus(); ++t) {
      int fd = transport::clone_dev_fd(m->fd());
      if (fd < 0) {
        log.info("cannot clone /dev/fuse for another reading thread (%s): serving on fewer threads", std::strerror(-fd));
        break;
      }
      ds.running.fetch_add(1);
      dev_threads.emplace_back([&fs, &ds, fd, t] { transport::run_dev_thread(fs, fd, t, ds); });
    }
    if (o.debug) log.info("serving /dev/fuse on %zu threads", dev_threads.size() + 1);
  }

  // Restart without unmount: a successor may connect to --handoff-socket (handoff_server.hpp).
  handoff_site site;
  int listen_fd = -1;
  int listener_stop = -1;
  std::thread listener;
  if (!o.handoff_socket.empty()) {
    try {
      listen_fd = listen_for_successor(o.handoff_socket);
    } catch (const std::exception& e) {
      log.info("%s: no handoff possible", e.what());
    }
  }

  auto stop_threads = [&] {
    // After the unmount the ring entries complete -ENOTCONN and the readers see ENODEV; a
    // connection the kernel keeps alive is aborted after the grace period.
    auto busy = [&] { return rs.queues_running.load() > 0 || ds.running.load() > 0; };
    for (int i = 0; i < static_cast<int>(o.shutdown_grace * 20) + 1 && busy(); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (busy() && !site.handed_off.load()) {
      log.info("serving threads still waiting after the unmount: aborting the connection");
      m->abort();
      router.stop_all();  // and whatever their handlers still wait for
    }
    for (auto& t : queue_threads) t.join();
    for (auto& t : dev_threads) t.join();
  };

  // The readers' buffers as fixed buffers of the main ring (request 2i, reply 2i+1).
  bool dev_fixed = true;
  {
    std::vector<iovec> iov;
    for (auto& b : buffers) {
      iov.push_back({b->request().data(), b->request().size()});
      iov.push_back({b->reply().data(), b->reply().size()});
    }
    try {
      r.register_buffers(iov);
    } catch (const std::exception& e) {
      dev_fixed = false;
      log.info("/dev/fuse reader buffers not registered (%s); handlers use plain reads", e.what());
    }
  }

  mailbox main_box;
  main_box.reading_fd = m->fd();
  main_box.gate = &gate;
  router.add(main_box);
  serve_state st;
  st.mount = m.get();
  st.connection_lost = &rs.connection_lost;
  st.router = &router;
  st.box = &main_box;
  st.replies = &replies;
  st.live_readers = static_cast<int>(o.depth);
  if (listen_fd >= 0) {
    st.handoff = &site;
    site.mountpoint = m->mountpoint();
    site.device = m->device();
    site.unprivileged = m->unprivileged();
    site.fuse_fd = m->fd();
    site.terms = terms;
    site.geometry = {queues, depth, payload_size, queues ? arena.address() : 0, queues ? arena.size() : 0};
    site.arena = &arena;
    site.rs = queues ? &rs : nullptr;
    site.router = &router;
    site.gate = &gate;
    site.readers = static_cast<int>(o.depth + dev_threads.size() * ds.depth);
    if constexpr (hands_over_state<Fs>) site.save_state = [&fs](handoff_writer& w) { fs.save_state(w); };
    site.connection_lost = &rs.connection_lost;
    listener_stop = ::eventfd(0, EFD_CLOEXEC);
    listener = std::thread([&] { run_handoff_listener(listen_fd, listener_stop, site); });
  }
  {
    io::scope s;
    io::scope watcher;
    watcher.spawn(watch_mailbox(r, main_box, [&] { return s.active() == 0; }));
    for (unsigned i = 0; i < o.depth; ++i)
      s.spawn(run_reader(fs, r, st, o.cache, *buffers[i], stats, layout, dev_fixed ? static_cast<int>(2 * i) : -1));
    s.spawn(watch_for_stop(r, st, sigfd, o.shutdown_grace, log));
    r.run_until([&] { return s.active() == 0; });
    main_box.wake();  // the main mailbox's watcher sees the readers gone and ends
    r.run_until([&] { return watcher.active() == 0; });
    if (s.failed()) {
      try {
        s.rethrow_if_failed();
      } catch (const std::exception& e) {
        log.info("a serving coroutine failed: %s", e.what());
      }
    }
  }
  if (listener.joinable()) {
    std::uint64_t one = 1;
    (void)!::write(listener_stop, &one, sizeof one);
    listener.join();
  }
  if (listen_fd >= 0) ::close(listen_fd);
  if (listener_stop >= 0) ::close(listener_stop);
  if (site.handed_off.load()) {
    m->hand_over();  // the successor serves it now: no unmount, no abort
  } else {
    m->detach();
    if (listen_fd >= 0) ::unlink(o.handoff_socket.c_str());
  }
  stop_threads();
  router.remove(main_box);
  if (o.debug) {
    stats.print(stderr);
    for (unsigned q = 0; q < queues; ++q)
      std::fprintf(stderr, "queue %u requests=%llu\n", q, static_cast<unsigned long long>(queue_requests[q].load()));
  }
  return st.read_failed ? 1 : 0;
}

// The command line of a filesystem's main(): fills `o`, and returns -1 to go on serving, or the
// exit status when there is nothing to serve (--help printed: 0; a bad command line, reported in
// one line: 2). `positionals` names what comes before the options in the usage line.
inline int parse_main_options(int argc, char** argv, std::string_view about, std::string_view extra_usage, options& o,
                              std::string_view positionals = "MOUNTPOINT") {
  parse_outcome p = parse_command_line(argc, argv, o);
  const char* name = argc > 0 ? argv[0] : "corofuse";
  if (p.what == parse_outcome::kind::help) {
    std::printf("%.*s\n\nusage: %s %.*s [options]\n\n%.*s%.*s", static_cast<int>(about.size()), about.data(), name,
                static_cast<int>(positionals.size()), positionals.data(), static_cast<int>(extra_usage.size()), extra_usage.data(),
                static_cast<int>(common_usage.size()), common_usage.data());
    return 0;
  }
  if (p.what == parse_outcome::kind::error) {
    std::fprintf(stderr, "%s: %s (try --help)\n", name, p.error.c_str());
    return 2;
  }
  if (o.mount.subtype.empty()) {
    std::string base(name);
    o.mount.subtype = base.substr(base.find_last_of('/') + 1);
  }
  return -1;
}

// The whole program of a filesystem: parse the command line, mount, serve, exit.
//   int main(int argc, char** argv) { my_fs fs; return corofuse::session::main(fs, argc, argv, "my_fs: ..."); }
// `extra_usage` describes options the program takes out of argv itself before calling this.
template <typename Fs>
int main(Fs& fs, int argc, char** argv, std::string_view about, std::string_view extra_usage = {}) {
  options o;
  if (int status = parse_main_options(argc, argv, about, extra_usage, o); status >= 0) return status;
  return serve(fs, o);
}

}  // namespace corofuse::session
