// A mounted filesystem, served until it is unmounted or the process is told to stop.
//
//   mount (or take over) -> INIT negotiated on /dev/fuse -> the filesystem's init -> the ring's
//   queues (one pinned thread per possible CPU) or more /dev/fuse threads -> the main thread's
//   readers serve -> SIGINT/SIGTERM or an outside umount -> lazy unmount (never a stat) -> readers
//   see ENODEV and end -> after a grace period a connection the kernel still keeps (open files, a
//   cwd inside) is aborted through fusectl.
#pragma once

#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <latch>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "corofuse/abi/flags.hpp"
#include "corofuse/base/log.hpp"
#include "corofuse/fs/connection.hpp"
#include "corofuse/fs/handlers.hpp"
#include "corofuse/fs/notify_replies.hpp"
#include "corofuse/io/operations.hpp"
#include "corofuse/io/ring.hpp"
#include "corofuse/io/sync_wait.hpp"
#include "corofuse/proto/request.hpp"
#include "corofuse/session/fault_points.hpp"
#include "corofuse/session/handoff.hpp"
#include "corofuse/session/handoff_server.hpp"
#include "corofuse/session/init.hpp"
#include "corofuse/session/mount.hpp"
#include "corofuse/session/options.hpp"
#include "corofuse/session/successor.hpp"
#include "corofuse/transport/counters.hpp"
#include "corofuse/transport/dev_fuse.hpp"
#include "corofuse/transport/serving_threads.hpp"
#include "corofuse/transport/uring.hpp"

namespace corofuse::session {

// The request counters a server keeps (transport/counters.hpp), under the name tests know.
using counters = transport::counters;

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


// The stop signals (SIGINT, SIGTERM, SIGHUP), and with --stats the report signal (SIGUSR1), blocked
// and read from a signalfd on the main ring for as long as the server runs; the old mask comes back
// at the end.
class stop_signals {
 public:
  // `report`: SIGUSR1 too, which prints the counters (--stats) and does not stop anything.
  explicit stop_signals(bool report = false) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    if (report) sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, &old_mask_);  // before any thread starts: they inherit it
    fd_ = ::signalfd(-1, &set, SFD_CLOEXEC);
    if (fd_ < 0) error_ = errno;
  }
  ~stop_signals() {
    if (fd_ >= 0) ::close(fd_);
    pthread_sigmask(SIG_SETMASK, &old_mask_, nullptr);
  }
  stop_signals(const stop_signals&) = delete;
  stop_signals& operator=(const stop_signals&) = delete;
  int fd() const noexcept { return fd_; }
  int error() const noexcept { return error_; }

 private:
  sigset_t old_mask_{};
  int fd_ = -1;
  int error_ = 0;
};

// What the main thread's readers and its stop watcher share.
struct main_thread_state {
  fuse_mount* mount = nullptr;
  int live_readers = 0;
  bool read_failed = false;
  io::op_id watcher_op;  // the watcher's pending signal read or grace timeout
  transport::serving_threads* threads = nullptr;
  const handoff_site* handoff = nullptr;       // a stop signal waits for a handoff's verdict
  const transport::counters* stats = nullptr;  // --stats: SIGUSR1 prints them
};

// Waits for SIGINT/SIGTERM (and prints the counters on SIGUSR1 with --stats); then unmounts lazily and, if the connection outlives the grace
// period, aborts it. Ends early when every reader has ended (an outside umount). When the abort is
// not possible (no fusectl), the server keeps serving the files still open and keeps listening:
// a further signal tries the abort again.
inline io::task<void> watch_for_stop(io::ring& r, main_thread_state& st, int sigfd, double grace) {
  bool unmounted = false;
  for (;;) {
    signalfd_siginfo si{};
    int n = co_await io::read(r, sigfd, std::span(reinterpret_cast<std::byte*>(&si), sizeof si), static_cast<std::uint64_t>(-1))
                .track(st.watcher_op);
    if (n != static_cast<int>(sizeof si)) co_return;  // cancelled: the readers ended first
    if (si.ssi_signo == SIGUSR1) {                    // --stats: the counters so far; serving goes on
      if (st.stats) st.stats->report([](std::string_view line) { log_line(log_kind::report, line); });
      continue;
    }
    if (st.handoff) {
      // A handoff under way decides first: the mount may be the successor's, not to unmount.
      while (st.handoff->in_progress.load(std::memory_order_acquire)) (void)co_await io::timeout(r, std::chrono::milliseconds(20));
      if (st.handoff->handed_off.load(std::memory_order_acquire)) co_return;
    }
    if (!unmounted) {
      log_message("%s: unmounting %s", strsignal(static_cast<int>(si.ssi_signo)), st.mount->mountpoint().c_str());
      st.mount->detach();
      unmounted = true;
      if (st.live_readers == 0) co_return;
      int t = co_await io::timeout(r, std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::duration<double>(grace)))
                  .track(st.watcher_op);
      if (t != -ETIME || st.live_readers == 0) co_return;  // cancelled: the connection ended in time
      log_message("the kernel still holds the connection after %.1f s (open files or a cwd inside): aborting it", grace);
    } else {
      log_message("%s again: aborting the connection", strsignal(static_cast<int>(si.ssi_signo)));
    }
    // Aborted now, or gone already (the kernel's request timeout, say: then there is nothing
    // left to abort). Either way handlers that would never complete must not keep the process
    // alive: every serving thread cancels what it has in flight.
    if (st.mount->abort() || st.threads->connection_is_over()) {
      st.threads->stop_all();
      co_return;
    }
    log_message(
        "cannot abort the connection (is fusectl mounted on /sys/fs/fuse/connections?): serving the open files "
        "until they are closed; signal again to retry");
  }
}

// Reads and answers INIT. Returns the agreed terms, or nothing (logged) when the kernel was refused.
inline bool negotiate(io::ring& r, fuse_mount& m, transport::dev_buffers& buf, const init_wishes& w, init_terms& terms) {
  for (;;) {
    int n = transport::read_request(m.fd(), buf.request());
    if (n == -EAGAIN) {  // INIT is queued by mount(2); wait for it on the ring all the same
      auto wait_readable = [&]() -> io::task<int> { co_return co_await io::poll(r, m.fd(), POLLIN); };
      io::sync_wait(r, wait_readable());
      continue;
    }
    if (n == -EINTR) continue;
    if (n < 0) {
      log_message("reading INIT from /dev/fuse failed: %s", std::strerror(-n));
      return false;
    }
    proto::request req;
    auto e = proto::parse_message(buf.request().first(static_cast<std::size_t>(n)), req);
    if (e != proto::parse_error::none || req.opcode() != abi::opcode::init) {
      log_message("expected INIT as the first request, got opcode %u (%s)", req.header().opcode, proto::describe(e).data());
      return false;
    }
    init_outcome out = negotiate_init(req.op<abi::init_in>(), w);
    auto reply = [&](int error, const void* p, std::size_t len) {
      return transport::send_dev_reply(m.fd(), req.unique(), error, std::span(static_cast<const std::byte*>(p), len));
    };
    if (out.what == init_outcome::kind::refused) {
      log_message("%s", out.why.c_str());
      reply(EPROTO, nullptr, 0);
      return false;
    }
    if (out.what == init_outcome::kind::retry_major) {
      // The kernel speaks a newer major: tell it ours (the short, old-style reply) and it asks again.
      reply(0, &out.reply, abi::compat_init_out_size);
      continue;
    }
    if (reply(0, &out.reply, sizeof out.reply) < 0) {
      log_message("the kernel refused our INIT reply");
      return false;
    }
    terms = out.terms;
    return true;
  }
}

// What INIT asks of the kernel, from the options and the filesystem.
template <typename Fs>
init_wishes wishes_of(const Fs& fs, const options& o) {
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
      log_message("kernel passthrough is not possible with writeback_cache: it stays off");
      w.flags &= ~abi::init_flag::passthrough;
    }
  }
  return w;
}

// Says what the negotiated terms mean for the options asked; false when a required transport is
// not offered (nothing has been served yet: the unmount that follows cannot strand a client).
inline bool check_terms(const options& o, const init_terms& terms, const fuse_mount& m) {
  const bool must_ring = o.transport == transport_choice::ring || o.transport == transport_choice::pool;
  if (must_ring && !terms.has(abi::init_flag::over_io_uring)) {
    log_message(
        "--transport %s: the kernel does not offer FUSE-over-io_uring (needs Linux 6.14+ and "
        "/sys/module/fuse/parameters/enable_uring = Y)",
        o.transport == transport_choice::pool ? "pool" : "ring");
    return false;
  }
  if (o.transport == transport_choice::pool && !terms.offers(abi::init_flag::has_io_uring_bufpool)) {
    log_message("--transport pool: the kernel does not offer buffer pools (FUSE protocol 7.46, Linux 7.3+)");
    return false;
  }
  if (o.transport == transport_choice::dev_fuse) log_message("serving /dev/fuse (--transport dev)");
  else if (!terms.offers(abi::init_flag::over_io_uring))
    log_message(
        "serving /dev/fuse: the kernel does not offer FUSE-over-io_uring (needs Linux 6.14+ and "
        "/sys/module/fuse/parameters/enable_uring = Y)");
  if (o.allow_idmap && !terms.has(abi::init_flag::allow_idmap))
    log_message("-o allow_idmap: the kernel does not offer idmapped FUSE mounts (Linux 6.12+): they stay refused");
  if (o.request_timeout && !terms.has(abi::init_flag::request_timeout))
    log_message("-o request_timeout: the kernel does not offer request timeouts (FUSE 7.43, Linux 6.14+): requests wait for ever");
  if (o.debug)
    log_message("mounted %s: protocol 7.%u, max_write %u, flags 0x%llx", m.mountpoint().c_str(), terms.minor, terms.max_write,
                static_cast<unsigned long long>(terms.flags));
  return true;
}

// Options a filesystem class cannot serve (returns the exit status), or 0.
template <typename Fs>
int refused_options(const options& o) {
  // Idmapped mounts change what every request says about its caller: only a filesystem written
  // for that may allow them.
  if (o.allow_idmap) {
    if constexpr (!requires { requires Fs::supports_idmapped_mounts; }) {
      log_message("-o allow_idmap: this filesystem does not support idmapped mounts");
      return 2;
    }
    if (!o.mount.default_permissions) {
      log_message("-o allow_idmap needs default_permissions");
      return 2;
    }
  }
  if (!o.handoff_socket.empty() || !o.take_over.empty()) {
    if constexpr (!hands_over_state<Fs>) {
      log_message("%s: this filesystem cannot hand its state to a successor (it has no save_state/restore_state)",
                  o.take_over.empty() ? "--handoff-socket" : "--take-over");
      return 2;
    }
  }
  return 0;
}

// One mounted filesystem, served: each step of serve() is a member, in the order it runs.
template <typename Fs>
class server {
 public:
  server(Fs& fs, const options& o, transport::counters& stats) : fs_(fs), o_(o), stats_(stats), signals_(o.stats || o.debug) {
    stats_.set_recording({o.stats || o.debug, o.debug});
  }
  server(const server&) = delete;
  server& operator=(const server&) = delete;
  ~server() {
    if (listener_.joinable()) {  // an early end: stop the handoff listener first
      std::uint64_t one = 1;
      (void)!::write(listener_stop_, &one, sizeof one);
      listener_.join();
    }
    join_all();
  }

  int run() {
    if (signals_.fd() < 0) {
      log_message("signalfd: %s", std::strerror(signals_.error()));
      return 1;
    }
    if (int refused = refused_options<Fs>(o_)) return refused;
    if (!mount_or_take_over()) return 1;
    if (!create_main_ring()) return 1;
    if (!successor() && !negotiate_terms()) return 1;
    if (!start_filesystem()) return 1;
    if (!plan_ring()) return 1;
    if (!start_queues()) return 1;
    log_buffers();
    if (successor() && !wait_for_go()) return 1;
    start_dev_threads();
    start_handoff_listener();
    serve_main_thread();
    shut_down();
    return main_.read_failed ? 1 : 0;
  }

 private:
  bool successor() const noexcept { return !o_.take_over.empty(); }

  // A successor takes the mount over instead of mounting: the predecessor's terms, its /dev/fuse,
  // its ring entries (held in memory mapped here at the same address) and its filesystem state.
  bool mount_or_take_over() {
    try {
      if (successor()) mount_ = take_over_mount(o_.take_over, o_.mountpoint, pred_, terms_);
      else mount_ = std::make_unique<fuse_mount>(o_.mountpoint, o_.mount);
      return true;
    } catch (const mount_error& e) {
      log_message("%s", e.what());
    } catch (const std::exception& e) {
      const std::string what = e.what();
      log_message("%s%s", what.rfind("--take-over", 0) == 0 ? "" : ("--take-over " + o_.take_over + ": ").c_str(), what.c_str());
    }
    return false;
  }

  // The main thread's ring and its readers' buffers (the ring goes first at the end, so no
  // operation of it can still be writing into a freed buffer). Sized for what the kernel may
  // send: at least its default 32 pages, whatever -o max_pages asked for (the kernel ignores
  // smaller counts it was not told).
  bool create_main_ring() {
    max_payload_ = std::max<std::size_t>({o_.max_pages, terms_.max_pages, 32}) * 4096;
    for (unsigned i = 0; i < o_.depth; ++i) buffers_.push_back(std::make_unique<transport::dev_buffers>(max_payload_));
    try {
      io::ring_options ro;
      ro.entries = std::max(64u, 4 * o_.depth + 8);
      ring_ = std::make_unique<io::ring>(ro);
    } catch (const std::exception& e) {
      log_message("%s", e.what());
      return false;
    }
    if (!ring_->fallback_reason().empty()) log_message("%s", ring_->fallback_reason().c_str());
    return true;
  }

  bool negotiate_terms() {
    if (!transport::set_nonblocking(mount_->fd())) {
      log_message("cannot make /dev/fuse non-blocking: %s", std::strerror(errno));
      return false;
    }
    return negotiate(*ring_, *mount_, *buffers_[0], wishes_of(fs_, o_), terms_) && check_terms(o_, terms_, *mount_);
  }

  // The filesystem's init(), with the connection it may notify the kernel through.
  bool start_filesystem() {
    if constexpr (handlers::init<Fs>) {
      connection conn(mount_->fd(), terms_.flags, terms_.minor, terms_.max_write, &replies_);
      try {
        fs_.init(conn);
      } catch (const std::exception& e) {
        // Nothing has been served: the mount goes (a successor's stays the predecessor's).
        log_message("the filesystem's init failed: %s", e.what());
        give_up();
        return false;
      }
    }
    return true;
  }

  // Nothing served yet and this process gives up: the mount goes, or, taken over, stays the
  // predecessor's.
  void give_up() {
    if (successor()) {
      mount_->hand_over();
    } else {
      mount_->abort();
      mount_->detach();
    }
  }

  // The ring geometry (the successor's is the predecessor's), its memory, and in the successor the
  // entries as they were held, then the filesystem's state.
  bool plan_ring() {
    queues_ = terms_.has(abi::init_flag::over_io_uring) ? transport::possible_cpus() : 0;
    depth_ = o_.depth;
    payload_size_ = queues_ ? transport::ring_payload_size(terms_.max_write, terms_.max_pages) : 0;
    if (successor()) {
      queues_ = pred_.geometry.queues;
      depth_ = pred_.geometry.depth;
      payload_size_ = pred_.geometry.payload_size;
      if (queues_ && queues_ != transport::possible_cpus()) {
        log_message("--take-over: the predecessor served %u ring queues, this machine has %u CPUs", queues_, transport::possible_cpus());
        return false;
      }
      // The geometry comes from another process: bounded before anything is sized from it (an
      // entry table of queues x depth, an arena of depth x payload per queue, in 64 bits).
      constexpr std::uint64_t max_payload = std::uint64_t{64} << 20;  // far above 256 pages of 4 KiB
      if (queues_ && (depth_ == 0 || depth_ > 1024 || payload_size_ < 4096 || payload_size_ > max_payload)) {
        log_message("--take-over: the predecessor's ring geometry makes no sense (%u entries a queue, %llu-byte payloads)", depth_,
                    static_cast<unsigned long long>(payload_size_));
        pred_.refuse("a ring geometry that makes no sense");
        mount_->hand_over();
        return false;
      }
    }
    qlayout_ = transport::layout_of_queue(depth_, payload_size_);
    if (queues_ && !successor()) {
      try {
        own_arena_ = transport::shared_arena::create(queues_ * qlayout_.per_queue());
      } catch (const std::exception& e) {
        log_message("%s", e.what());
        return false;
      }
    }
    if (queues_ && arena().size() < queues_ * qlayout_.per_queue()) {
      log_message("--take-over: the predecessor's ring memory is smaller than its geometry says");
      return false;
    }
    slots_.reset(new transport::entry_slot[std::size_t{queues_} * depth_]);
    modes_.resize(queues_);
    if (successor()) {
      try {
        if (fault_at("successor.restore")) throw handoff_error("injected fault (successor.restore)");
        restore_held_state(fs_, *pred_.state, terms_, queues_, depth_, slots_.get(), modes_);
      } catch (const std::exception& e) {
        pred_.refuse(e.what());  // nothing is served yet: the predecessor serves on
        log_message("%s", e.what());
        mount_->hand_over();  // the mount stays the predecessor's
        return false;
      }
    }
    layout_.setxattr_ext = terms_.has(abi::init_flag::setxattr_ext);
    return true;
  }
  transport::shared_arena& arena() noexcept { return successor() ? pred_.arena : own_arena_; }

  // The ring: one pinned thread per possible CPU, started only now that INIT is answered.
  bool start_queues() {
    if (!queues_) return true;
    transport::ring_setup& rs = ring_setup_;
    rs.fuse_fd = mount_->fd();
    rs.depth = depth_;
    rs.payload_size = payload_size_;
    rs.arena = &arena();
    rs.arena_layout = qlayout_;
    rs.slots = slots_.get();
    rs.modes = modes_.data();
    rs.pause.possible = !o_.handoff_socket.empty() || successor();
    rs.pause.gate = &gate_;
    rs.adopt = successor();
    // Buffer pools when the kernel offers them (7.46), unless the 7.42 ring was asked for. (A
    // successor continues each queue as the predecessor set it up: rs.modes.)
    rs.use_pool = terms_.offers(abi::init_flag::has_io_uring_bufpool) && o_.transport != transport_choice::ring;
    rs.zero_copy = rs.use_pool && o_.zero_copy;
    rs.layout = layout_;
    rs.cache = &o_.cache;
    rs.stats = &stats_;
    rs.replies = &replies_;
    rs.threads = &threads_;
    rs.queues_running = static_cast<int>(queues_);
    started_.emplace(queues_);
    for (unsigned q = 0; q < queues_; ++q)
      queue_threads_.emplace_back([this, q] { transport::run_ring_queue(fs_, ring_setup_, static_cast<std::uint16_t>(q), *started_); });
    started_->wait();
    if (successor() && fault_at("successor.queues")) rs.queues_failed.fetch_add(1);
    if (rs.queues_failed.load() > 0) {
      // A queue without entries blocks every client of its CPU: end the connection instead. (A
      // successor's entries wait for the predecessor's go, which never comes: the mount stays the
      // predecessor's, which serves on.)
      log_message("%d of %u ring queues could not be set up: %s", rs.queues_failed.load(), queues_,
                  successor() ? "giving the mount back to the predecessor" : "aborting the connection");
      if (successor()) {
        pred_.refuse("its ring queues could not be set up");
        gate_.decide(true);  // the held entries stay as they are
      }
      mount_->abort();
      mount_->detach();
      join_all();
      return false;
    }
    if (rs.use_pool)
      log_message(
          "serving over FUSE-over-io_uring with buffer pools: %u queues x %u entries, %zu KiB buffers; %d queues pooled, "
          "%d zero-copy",
          queues_, depth_, rs.payload_size / 1024, rs.pool_queues.load(), rs.zero_copy_queues.load());
    else
      log_message("serving over FUSE-over-io_uring: %u queues x %u entries, %zu KiB payload each%s", queues_, depth_,
                  rs.payload_size / 1024, successor() ? " (taken over)" : "");
    return true;
  }

  // -d, --stats: the buffer memory this mount holds (all of it pinned where registered): the ring's
  // payloads or pools, the /dev/fuse readers' request and reply buffers, the extra threads'.
  void log_buffers() const {
    if (!o_.debug && !o_.stats) return;
    const double mib = 1024.0 * 1024.0;
    const std::size_t reader_bytes = o_.depth * 2 * (max_payload_ + 4096);
    const std::size_t ring_bytes = queues_ * std::size_t{depth_} * payload_size_;
    const std::size_t thread_bytes = queues_ ? 0 : (transport::possible_cpus() - 1) * reader_bytes;
    log_message(
        "buffers: %.1f MiB (ring %.1f MiB = %u queues x %u x %zu KiB; /dev/fuse readers %.1f MiB; extra reading threads "
        "%.1f MiB)",
        static_cast<double>(ring_bytes + reader_bytes + thread_bytes) / mib, static_cast<double>(ring_bytes) / mib, queues_, depth_,
        payload_size_ / 1024, static_cast<double>(reader_bytes) / mib, static_cast<double>(thread_bytes) / mib);
  }

  // The successor, set up without touching the connection: READY; then, on the predecessor's GO,
  // the held entries are served and committed from here.
  bool wait_for_go() {
    if (fault_at("successor.ready")) pred_.refuse("injected fault (successor.ready)");
    else if (pred_.ready_and_wait_for_go()) return took_over();
    gate_.decide(true);  // the held entries are left as they are, for the predecessor
    join_all();
    return false;
  }
  bool took_over() {
    mount_->claim();
    gate_.decide(false);
    log_message("took the mount %s over", mount_->mountpoint().c_str());
    (void)fault_at("successor.go");  // only :die means anything here: past GO there is no way back
    return true;
  }

  // Without the ring, /dev/fuse carries everything: one more reading thread per further possible
  // CPU, each on its own cloned descriptor and ring.
  void start_dev_threads() {
    dev_.cache = &o_.cache;
    dev_.stats = &stats_;
    dev_.layout = layout_;
    dev_.threads = &threads_;
    dev_.replies = &replies_;
    dev_.gate = &gate_;
    dev_.depth = o_.depth;
    dev_.max_payload = max_payload_;
    dev_.thread_count = queues_ ? 1 : transport::possible_cpus();
    if (queues_) return;
    for (unsigned t = 1; t < transport::possible_cpus(); ++t) {
      int fd = transport::clone_dev_fd(mount_->fd());
      if (fd < 0) {
        log_message("cannot clone /dev/fuse for another reading thread (%s): serving on fewer threads", std::strerror(-fd));
        break;
      }
      dev_running_.fetch_add(1);
      dev_threads_.emplace_back([this, fd, t] { transport::run_dev_thread(fs_, fd, t, dev_, dev_running_); });
    }
    if (o_.debug || o_.stats) log_message("serving /dev/fuse on %zu threads", dev_threads_.size() + 1);
  }

  // Restart without unmount: a successor may connect to --handoff-socket (handoff_server.hpp).
  void start_handoff_listener() {
    if (o_.handoff_socket.empty()) return;
    try {
      listen_fd_ = listen_for_successor(o_.handoff_socket);
    } catch (const std::exception& e) {
      log_message("%s: no handoff possible", e.what());
      return;
    }
    site_.mountpoint = mount_->mountpoint();
    site_.device = mount_->device();
    site_.unprivileged = mount_->unprivileged();
    site_.fuse_fd = mount_->fd();
    site_.terms = terms_;
    site_.geometry = {queues_, depth_, payload_size_, queues_ ? arena().address() : 0, queues_ ? arena().size() : 0};
    site_.arena = &arena();
    site_.rs = queues_ ? &ring_setup_ : nullptr;
    site_.threads = &threads_;
    site_.gate = &gate_;
    site_.readers = static_cast<int>(o_.depth + dev_threads_.size() * dev_.depth);
    if constexpr (hands_over_state<Fs>) site_.save_state = [this](handoff_writer& w) { fs_.save_state(w); };
    main_.handoff = &site_;
    listener_stop_ = ::eventfd(0, EFD_CLOEXEC);
    listener_ = std::thread([this] { run_handoff_listener(listen_fd_, listener_stop_, site_); });
  }

  // The main thread: its /dev/fuse readers and the stop watcher, until the readers end.
  void serve_main_thread() {
    io::ring& r = *ring_;
    const bool fixed = transport::register_dev_buffers(r, buffers_, /*say_why=*/true);
    transport::serving_thread thread(r, threads_);
    thread.box().reading_fd = mount_->fd();
    thread.box().gate = &gate_;
    transport::counter_shard& counts = stats_.add_shard("dev 0");
    main_.mount = mount_.get();
    main_.threads = &threads_;
    if (o_.debug || o_.stats) main_.stats = &stats_;
    main_.live_readers = static_cast<int>(o_.depth);
    auto reader = [](server& s, transport::dev_buffers& b, int first, transport::serving_thread& t,
                     transport::counter_shard& c) -> io::task<void> {
      io::ring& rr = *s.ring_;
      if (co_await transport::serve_dev_fuse(s.fs_, rr, s.mount_->fd(), b, first, t, c, s.dev_, 0) == transport::reader_end::read_failed)
        s.main_.read_failed = true;
      if (--s.main_.live_readers == 0 && s.main_.watcher_op.pending())
        co_await io::cancel(rr, s.main_.watcher_op);  // nothing left to watch
    };
    for (unsigned i = 0; i < o_.depth; ++i) thread.spawn(reader(*this, *buffers_[i], fixed ? static_cast<int>(2 * i) : -1, thread, counts));
    thread.spawn(watch_for_stop(r, main_, signals_.fd(), o_.shutdown_grace));
    io::scope& done = thread.run();
    if (done.failed()) {
      try {
        done.rethrow_if_failed();
      } catch (const std::exception& e) {
        log_message("a serving coroutine failed: %s", e.what());
      }
    }
  }

  // The readers have ended: the mount goes (or, handed off, stays the successor's), the other
  // threads end (after the unmount the ring entries complete -ENOTCONN and the readers see
  // ENODEV; a connection the kernel keeps alive is aborted after the grace period), and with -d
  // the counters are reported.
  void shut_down() {
    if (listener_.joinable()) {
      std::uint64_t one = 1;
      (void)!::write(listener_stop_, &one, sizeof one);
      listener_.join();
    }
    if (listen_fd_ >= 0) ::close(listen_fd_);
    if (listener_stop_ >= 0) ::close(listener_stop_);
    if (site_.handed_off.load()) {
      mount_->hand_over();  // the successor serves it now: no unmount, no abort
    } else {
      mount_->detach();
      if (listen_fd_ >= 0) ::unlink(o_.handoff_socket.c_str());
    }
    auto busy = [&] { return ring_setup_.queues_running.load() > 0 || dev_running_.load() > 0; };
    for (int i = 0; i < static_cast<int>(o_.shutdown_grace * 20) + 1 && busy(); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (busy() && !site_.handed_off.load()) {
      log_message("serving threads still waiting after the unmount: aborting the connection");
      mount_->abort();
      threads_.stop_all();  // and whatever their handlers still wait for
    }
    join_all();
    if (o_.debug || o_.stats) stats_.report([](std::string_view line) { log_line(log_kind::report, line); });
  }

  void join_all() {
    for (auto& t : queue_threads_)
      if (t.joinable()) t.join();
    for (auto& t : dev_threads_)
      if (t.joinable()) t.join();
  }

  Fs& fs_;
  const options& o_;
  transport::counters& stats_;
  stop_signals signals_;  // first: blocked before any thread starts, restored after all ended
  std::unique_ptr<fuse_mount> mount_;
  taken_over_mount pred_;
  init_terms terms_;
  std::size_t max_payload_ = 0;
  std::vector<std::unique_ptr<transport::dev_buffers>> buffers_;  // before the ring: they outlive it
  std::unique_ptr<io::ring> ring_;
  notify_replies replies_;  // RETRIEVE's answers, routed back to the asker from any thread
  unsigned queues_ = 0;
  unsigned depth_ = 0;
  std::size_t payload_size_ = 0;
  transport::queue_layout qlayout_;
  transport::shared_arena own_arena_;
  std::unique_ptr<transport::entry_slot[]> slots_;
  std::vector<transport::queue_mode> modes_;
  proto::layout_options layout_;
  transport::serving_threads threads_;  // INTERRUPT reaches the request it names on any thread
  transport::pause_gate gate_;
  transport::ring_setup ring_setup_;
  std::optional<std::latch> started_;  // outlives the queue threads: one may still be in count_down()
  transport::dev_setup dev_;
  std::atomic<int> dev_running_{0};
  handoff_site site_;
  int listen_fd_ = -1;
  int listener_stop_ = -1;
  main_thread_state main_;
  std::vector<std::thread> queue_threads_;  // last: joined (in shut_down or the destructor) first
  std::vector<std::thread> dev_threads_;
  std::thread listener_;
};

// Mounts `fs` on o.mountpoint and serves it until it is unmounted or the process is told to stop
// (SIGINT, SIGTERM, SIGHUP); returns the process exit status: 0, 1 (it could not serve, or a
// reader failed; said in one line), 2 (options this filesystem cannot serve). `stats`, when
// given, receives the request counters (tests read them).
template <typename Fs>
int serve(Fs& fs, const options& o, transport::counters* stats = nullptr) {
  transport::counters own;
  server<Fs> s(fs, o, stats ? *stats : own);
  return s.run();
}

inline int parse_main_options(int argc, char** argv, std::string_view about, std::string_view extra_usage, options& o,
                              std::string_view positionals = "MOUNTPOINT", const own_options& own = {}) {
  parse_outcome p = parse_command_line(argc, argv, o, own);
  const char* name = argc > 0 ? argv[0] : "corofuse";
  if (p.what == parse_outcome::kind::help) {
    const std::string own_usage = usage_of(own);
    std::printf("%.*s\n\nusage: %s %.*s [options]\n\n%.*s%s%.*s", static_cast<int>(about.size()), about.data(), name,
                static_cast<int>(positionals.size()), positionals.data(), static_cast<int>(extra_usage.size()), extra_usage.data(),
                own_usage.c_str(), static_cast<int>(common_usage.size()), common_usage.data());
    return 0;
  }
  if (p.what == parse_outcome::kind::error) {
    log_to(log_kind::report, "%s: %s (try --help)", name, p.error.c_str());
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

// The same with the filesystem's own options (session/own_options.hpp), parsed with the common
// ones and listed in --help; each is applied before anything is mounted.
template <typename Fs>
int main(Fs& fs, int argc, char** argv, std::string_view about, const own_options& own) {
  options o;
  if (int status = parse_main_options(argc, argv, about, {}, o, "MOUNTPOINT", own); status >= 0) return status;
  return serve(fs, o);
}

}  // namespace corofuse::session
