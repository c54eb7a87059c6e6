// Faults through a live mount, on both transports (the io_uring ring and classic /dev/fuse). In
// every case the clients must end (with an error or with success, never a hang: each runs in a
// child under an alarm), the server must end as it should, and nothing may stay mounted.
//   - memfs killed (SIGKILL) in the middle of a large write: the writer gets ECONNABORTED or
//     ENOTCONN; once the dead mount is detached, memfs mounts and serves on the same directory.
//   - an outside umount (MNT_DETACH) while two clients stream I/O: memfs exits 0 by itself.
//   - the connection aborted through fusectl while READs wait in the handlers of every CPU's queue:
//     every client fails at once, the server exits 0 by itself, the mount point serves again.
//   - handlers that throw (a std::exception, another type, from a plain handler and from a
//     coroutine after a wait): the client gets EIO, the server logs it, keeps serving, and leaks
//     nothing over thousands of throws.
//   - SIGTERM while clients stream I/O with files open on memfs: every request finishes or fails
//     cleanly, the data read back is what was written, memfs aborts after its grace period and
//     exits 0.
#include <catch2/catch.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "corofuse/corofuse.hpp"
#include "tests/mount/in_process_mount.hpp"
#include "tests/mount/server_harness.hpp"

namespace cf = corofuse;
using corofuse::testing::clients;
using corofuse::testing::existing_dir;
using corofuse::testing::in_client;
using corofuse::testing::in_process_mount;
using corofuse::testing::is_mounted;
using corofuse::testing::runfile;
using corofuse::testing::server;
using corofuse::testing::start_client;
using corofuse::testing::tail;
using corofuse::testing::uring_enabled;

namespace {

const std::string memfs_bin = runfile("examples/memfs/memfs");
constexpr std::size_t MiB = 1 << 20;

// A client's exit status for a system call that failed with an errno the test did not expect:
// the errno can be read from the failure (50 + errno).
int unexpected(int e) { return 50 + e; }

// The ways a request may end when the connection goes away under it. ECANCELED: the request was
// being handed to a ring entry of the dying server (the kernel's task work then runs cancelled and
// ends the request with it; seen under ASan, where the server dies more slowly).
bool connection_gone(int e) { return e == ECONNABORTED || e == ENOTCONN || e == ECANCELED; }

// Under AddressSanitizer freed memory sits in a quarantine for a while: the resident size grows
// without any leak (and LeakSanitizer checks leaks at exit instead).
#if defined(__SANITIZE_ADDRESS__)
constexpr bool rss_measures_leaks = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool rss_measures_leaks = false;
#else
constexpr bool rss_measures_leaks = true;
#endif
#else
constexpr bool rss_measures_leaks = true;
#endif

// A directory the test owns: a mount point to mount more than once. Removed at the end, after
// detaching whatever a failed test left on it.
class temp_dir {
 public:
  temp_dir() {
    char tmpl[] = "/tmp/corofuse-fault-XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~temp_dir() {
    corofuse::testing::detach_and_abort(path_);
    ::rmdir(path_.c_str());
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A pipe on which clients report progress, one byte each time; the parent waits for a count.
class progress {
 public:
  progress() {
    if (::pipe2(fds_, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
  }
  ~progress() {
    ::close(fds_[0]);
    ::close(fds_[1]);
  }
  progress(const progress&) = delete;
  progress& operator=(const progress&) = delete;
  void tell() const { (void)!::write(fds_[1], "+", 1); }
  // True when `count` reports came within `seconds` (a hang guard, not a speed check).
  bool wait_for(int count, int seconds) const {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    while (count > 0) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now()).count();
      if (left <= 0) return false;
      pollfd p{fds_[0], POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left)) <= 0) continue;
      char buf[16];
      ssize_t n = ::read(fds_[0], buf, std::min<std::size_t>(sizeof buf, static_cast<std::size_t>(count)));
      if (n > 0) count -= static_cast<int>(n);
    }
    return true;
  }

 private:
  int fds_[2];
};

// The byte at `off` of a streaming client's file in round `round`: every round writes different
// data, so a stale read shows.
char stream_byte(unsigned client, unsigned round, std::size_t off) {
  return static_cast<char>((off * 7 + off / 4096 + round * 13 + client * 101) & 0xff);
}

// A client that streams I/O on `path` (which must exist) until the connection or the name goes
// away: each round writes 4 MiB in 1 MiB writes and reads them back, and reports once on `p` after
// its first full round. With `reopen_each_round` it opens the file by name every round (so that
// after an outside umount it finds the name gone, and never creates one in the directory beneath);
// otherwise it keeps one descriptor open throughout. Exit status: 0 = ended by a clean error
// (the name gone, or the connection), 3 = the first round failed, 4 = read back wrong data,
// 5 = a short read or write, 50 + errno = an unexpected error.
pid_t start_streaming_client(const std::string& path, unsigned client, bool reopen_each_round, const progress& p) {
  return start_client(
      [=, &p] {
        std::string out(MiB, '\0'), in(MiB, '\0');
        int fd = -1;
        for (unsigned round = 0;; ++round) {
          if (fd < 0) {
            fd = ::open(path.c_str(), O_RDWR);
            if (fd < 0) {
              const int e = errno;
              if (round == 0) return 3;
              return e == ENOENT || connection_gone(e) ? 0 : unexpected(e);
            }
          }
          for (std::size_t chunk = 0; chunk < 4; ++chunk) {
            for (std::size_t i = 0; i < MiB; ++i) out[i] = stream_byte(client, round, chunk * MiB + i);
            ssize_t n = ::pwrite(fd, out.data(), MiB, static_cast<off_t>(chunk * MiB));
            if (n < 0) return round == 0 ? 3 : connection_gone(errno) ? 0 : unexpected(errno);
            if (n != static_cast<ssize_t>(MiB)) return 5;
          }
          for (std::size_t chunk = 0; chunk < 4; ++chunk) {
            ssize_t n = ::pread(fd, in.data(), MiB, static_cast<off_t>(chunk * MiB));
            if (n < 0) return round == 0 ? 3 : connection_gone(errno) ? 0 : unexpected(errno);
            if (n != static_cast<ssize_t>(MiB)) return 5;
            for (std::size_t i = 0; i < MiB; ++i)
              if (in[i] != stream_byte(client, round, chunk * MiB + i)) return 4;
          }
          if (round == 0) p.tell();
          if (reopen_each_round) {
            ::close(fd);
            fd = -1;
          }
        }
      },
      180);
}

// Two streaming clients on files "a" and "b" of the mount at `dir`, both streaming once the
// constructor returns; reaped by wait(), killed if the test ends first.
struct two_streams {
  progress p;
  clients c;
  pid_t a = -1, b = -1;
  two_streams(const std::string& dir, bool reopen_each_round);
  int wait_a() { return c.wait(a); }
  int wait_b() { return c.wait(b); }
};

// Creates the (empty) files a streaming client opens without O_CREAT.
int create_files(const std::vector<std::string>& paths) {
  return in_client([&] {
    for (const auto& path : paths) {
      int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
      if (fd < 0) return 1;
      ::close(fd);
    }
    return 0;
  });
}

two_streams::two_streams(const std::string& dir, bool reopen_each_round) {
  REQUIRE(create_files({dir + "/a", dir + "/b"}) == 0);
  a = start_streaming_client(dir + "/a", 0, reopen_each_round, p);
  b = start_streaming_client(dir + "/b", 1, reopen_each_round, p);
  c.add(a);
  c.add(b);
  REQUIRE(p.wait_for(2, 60));  // both stream
}

// The names in a directory other than . and .. (read directly: only for a directory nothing is
// mounted on).
std::set<std::string> entries_of(const std::string& dir) {
  std::set<std::string> names;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d))
      if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) names.insert(e->d_name);
    ::closedir(d);
  }
  return names;
}

// A file on a (fresh) mount is created, written and read back in a client.
int create_and_read_back(const std::string& path, const std::string& text) {
  return in_client([&] {
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL, 0644);
    if (fd < 0) return 1;
    if (::write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size())) return 2;
    ::close(fd);
    return corofuse::testing::read_file(path) == text ? 0 : 3;
  });
}

// The transport under test, as memfs's option and as serve()'s choice.
std::string transport_under_test() {
  const std::string t = GENERATE(as<std::string>{}, "ring", "dev");
  if (t == "ring") REQUIRE(uring_enabled());
  return t;
}
cf::session::transport_choice choice(const std::string& t) {
  return t == "ring" ? cf::session::transport_choice::ring : cf::session::transport_choice::dev_fuse;
}

// The resident memory of a process, in KiB (VmRSS in /proc/PID/status); 0 when unknown.
std::uint64_t rss_kib(pid_t pid) {
  const std::string status = corofuse::testing::read_file("/proc/" + std::to_string(pid) + "/status");
  auto at = status.find("VmRSS:");
  return at == std::string::npos ? 0 : std::stoull(status.substr(at + 6));
}

// Runs `fn` in a client pinned to `cpu` (on the ring, the kernel queues its requests on that CPU's
// queue).
pid_t start_pinned_client(unsigned cpu, const std::function<int()>& fn, int seconds) {
  return start_client(
      [cpu, fn] {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        if (::sched_setaffinity(0, sizeof set, &set) != 0) return 20;
        return fn();
      },
      seconds);
}

// ---- a filesystem whose READ of /block waits (an hour) until the connection goes away ---------

constexpr cf::ino block_ino = 2, fast_ino = 3;

struct stat stat_of(cf::ino i, off_t size) {
  struct stat st {};
  st.st_ino = i;
  st.st_nlink = i == cf::root_ino ? 2 : 1;
  st.st_mode = i == cf::root_ino ? (S_IFDIR | 0755) : (S_IFREG | 0644);
  st.st_size = i == cf::root_ino ? 0 : size;
  return st;
}

class blocking_fs {
 public:
  cf::result<cf::entry> lookup(cf::context&, cf::ino parent, std::string_view name) {
    if (parent != cf::root_ino) return cf::error(ENOTDIR);
    cf::entry e;
    if (name == "block") e.ino = block_ino;
    else if (name == "fast") e.ino = fast_ino;
    else return cf::error(ENOENT);
    e.attr = stat_of(e.ino, 4096);
    return e;
  }
  cf::result<cf::attr> getattr(cf::context&, cf::ino i, const cf::file_info*) {
    if (i < cf::root_ino || i > fast_ino) return cf::error(ENOENT);
    return cf::attr{stat_of(i, 4096)};
  }
  cf::result<cf::open_reply> open(cf::context&, cf::ino i, int) {
    if (i == cf::root_ino) return cf::error(EISDIR);
    cf::open_reply r;
    r.direct_io = true;  // every read(2) is a READ
    return r;
  }
  cf::task<cf::result<std::size_t>> read(cf::context& ctx, cf::ino i, cf::file_info&, std::span<std::byte> out, off_t off) {
    if (i == block_ino) {
      // The serving thread's CPU: on the ring, the queue's (each queue's thread is pinned).
      std::fprintf(stderr, "READ waiting on cpu %d\n", ::sched_getcpu());
      (void)co_await ctx.track(cf::io::timeout(ctx.ring(), std::chrono::hours(1)));
      co_return cf::error(EIO);
    }
    if (off >= 4096) co_return std::size_t{0};
    const std::size_t n = std::min<std::size_t>(out.size(), 4096 - static_cast<std::size_t>(off));
    std::memset(out.data(), 'f', n);
    co_return n;
  }
};

// How many READs wait in blocking_fs's handlers, and on which CPUs (from its log).
struct waiting_reads {
  std::size_t count = 0;
  std::set<int> cpus;
};
waiting_reads waiting_in(const std::string& log) {
  waiting_reads w;
  const std::string key = "READ waiting on cpu ";
  for (auto at = log.find(key); at != std::string::npos; at = log.find(key, at + 1)) {
    ++w.count;
    w.cpus.insert(std::atoi(log.c_str() + at + key.size()));
  }
  return w;
}

// ---- a filesystem whose handlers throw ---------------------------------------------------------

// Exceptions that count their live objects: after the handlers have thrown thousands of them,
// none may be left (an exception the framework caught but never freed).
std::atomic<long> live_exceptions{0};
struct counted_error : std::runtime_error {
  explicit counted_error(const char* what) : std::runtime_error(what) { ++live_exceptions; }
  counted_error(const counted_error& o) : std::runtime_error(o) { ++live_exceptions; }
  ~counted_error() override { --live_exceptions; }
};
struct not_a_std_exception {  // what a careless handler might throw: no what()
  not_a_std_exception() { ++live_exceptions; }
  not_a_std_exception(const not_a_std_exception&) { ++live_exceptions; }
  ~not_a_std_exception() { --live_exceptions; }
};

constexpr cf::ino ok_ino = 2, boom_ino = 3, live_ino = 4;

class throwing_fs {
 public:
  //   /throw-std, /throw-other  their LOOKUP throws (a std::runtime_error, another type)
  //   /boom                     its READ throws after a wait on the ring (from a coroutine)
  //   /ok                       reads "ok\n"
  //   /live                     its size is the number of exception objects alive
  cf::result<cf::entry> lookup(cf::context&, cf::ino parent, std::string_view name) {
    if (parent != cf::root_ino) return cf::error(ENOTDIR);
    if (name == "throw-std") throw counted_error("lookup of throw-std");
    if (name == "throw-other") throw not_a_std_exception{};
    cf::entry e;
    if (name == "ok") e.ino = ok_ino;
    else if (name == "boom") e.ino = boom_ino;
    else if (name == "live") e.ino = live_ino;
    else return cf::error(ENOENT);
    e.attr = attr_of(e.ino);
    return e;
  }
  cf::result<cf::attr> getattr(cf::context&, cf::ino i, const cf::file_info*) {
    if (i < cf::root_ino || i > live_ino) return cf::error(ENOENT);
    return cf::attr{attr_of(i)};
  }
  cf::result<cf::open_reply> open(cf::context&, cf::ino i, int) {
    if (i == cf::root_ino) return cf::error(EISDIR);
    cf::open_reply r;
    r.direct_io = true;  // every read(2) is a READ
    return r;
  }
  cf::task<cf::result<std::size_t>> read(cf::context& ctx, cf::ino i, cf::file_info&, std::span<std::byte> out, off_t off) {
    if (i == boom_ino) {
      (void)co_await cf::io::timeout(ctx.ring(), std::chrono::microseconds(1));
      throw counted_error("read of boom after a wait");
    }
    const std::string_view text = "ok\n";
    if (off >= static_cast<off_t>(text.size())) co_return std::size_t{0};
    const std::size_t n = std::min(out.size(), text.size() - static_cast<std::size_t>(off));
    std::memcpy(out.data(), text.data() + off, n);
    co_return n;
  }

 private:
  static struct stat attr_of(cf::ino i) {
    return stat_of(i, i == live_ino ? static_cast<off_t>(live_exceptions.load()) : i == ok_ino ? 3 : 4096);
  }
};

}  // namespace

TEST_CASE("memfs killed mid-write: the writer gets an error; memfs mounts again there", "[mount][fault][kill]") {
  REQUIRE(::geteuid() == 0);
  const std::string t = transport_under_test();
  temp_dir mnt;
  {
    server s(existing_dir{mnt.path()}, memfs_bin, {"--transport", t});
    INFO("memfs log:\n" << tail(s.log()));
    REQUIRE(s.mounted());
    progress p;
    clients c;
    // The writer reports once 16 MiB are written and goes on writing; the server dies under it.
    const pid_t writer = start_client(
        [&] {
          int fd = ::open(s.path("big").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
          if (fd < 0) return 10;
          const std::string chunk(MiB, 'w');
          for (std::size_t done = 0; done < 256 * MiB;) {
            if (done == 16 * MiB) p.tell();
            ssize_t n = ::write(fd, chunk.data(), chunk.size());
            if (n < 0) return connection_gone(errno) ? 0 : unexpected(errno);
            done += static_cast<std::size_t>(n);
          }
          return 1;  // all 256 MiB written: the kill came too late to test anything
        },
        120);
    c.add(writer);
    REQUIRE(p.wait_for(1, 60));
    s.signal(SIGKILL);
    REQUIRE(s.wait_exit(20));
    CHECK(c.wait(writer) == 0);
    // The dead mount stays until unmounted; a client gets an error from it, not a hang.
    CHECK(s.mounted());
    CHECK(in_client([&] {
            struct stat st {};
            return ::stat(s.path("big").c_str(), &st) != 0 && connection_gone(errno) ? 0 : 1;
          }) == 0);
  }  // the guard detaches the dead mount (the directory stays: it is the test's)
  REQUIRE_FALSE(is_mounted(mnt.path()));

  server again(existing_dir{mnt.path()}, memfs_bin, {"--transport", t});
  INFO("memfs (again) log:\n" << tail(again.log()));
  REQUIRE(again.mounted());
  // A fresh memfs: the old file is gone, a new one can be written and read.
  CHECK(in_client([&] {
          struct stat st {};
          return ::stat(again.path("big").c_str(), &st) != 0 && errno == ENOENT ? 0 : 1;
        }) == 0);
  CHECK(create_and_read_back(again.path("after"), "mounted again\n") == 0);
  again.signal(SIGTERM);
  REQUIRE(again.wait_exit(30));
  CHECK(again.exit_status() == 0);
  CHECK_FALSE(again.mounted());
}

TEST_CASE("umount while two clients stream I/O: memfs exits 0 by itself", "[mount][fault][umount]") {
  REQUIRE(::geteuid() == 0);
  const std::string t = transport_under_test();
  server s(memfs_bin, {"--transport", t});
  INFO("memfs log:\n" << tail(s.log()));
  REQUIRE(s.mounted());
  // Each client opens its file by name every round: after the umount the name is gone (ENOENT).
  two_streams streams(s.dir(), true);
  REQUIRE(::umount2(s.dir().c_str(), MNT_DETACH) == 0);
  // The connection ends once the clients have closed their files; the server sees it and exits.
  CHECK(s.wait_exit(30));
  INFO("memfs log at exit:\n" << tail(s.log()));
  CHECK(s.exit_status() == 0);
  CHECK(streams.wait_a() == 0);
  CHECK(streams.wait_b() == 0);
  CHECK_FALSE(s.mounted());
  // Nothing was written into the directory beneath the mount.
  CHECK(entries_of(s.dir()).empty());
}

TEST_CASE("Abort with READs in flight on every queue: clients fail, the server exits 0", "[mount][fault][abort]") {
  REQUIRE(::geteuid() == 0);
  const std::string t = transport_under_test();
  cf::session::options o;
  o.mount.fsname = "blockfs";
  o.transport = choice(t);
  o.shutdown_grace = 1;
  in_process_mount m(in_process_mount::serving<blocking_fs>(), o);
  INFO("server log:\n" << tail(m.log()));
  REQUIRE(m.mounted());

  const unsigned cpus = std::max(1u, std::thread::hardware_concurrency());
  constexpr unsigned per_cpu = 2;  // within the queue's depth (4): all are in the handlers at once
  clients c;
  for (unsigned cpu = 0; cpu < cpus; ++cpu) {
    for (unsigned k = 0; k < per_cpu; ++k) {
      // The handler would answer in an hour: only the abort can end this read before the alarm.
      c.add(start_pinned_client(
          cpu,
          [&] {
            int fd = ::open(m.path("block").c_str(), O_RDONLY);
            if (fd < 0) return 10;
            char buf[16];
            if (::read(fd, buf, sizeof buf) >= 0) return 1;
            return connection_gone(errno) ? 0 : unexpected(errno);
          },
          120));
    }
  }
  REQUIRE(c.running().size() == cpus * per_cpu);
  // Wait until every client's READ is in a handler; on the ring, on every CPU's queue.
  waiting_reads w;
  for (int i = 0; i < 600; ++i) {
    w = waiting_in(m.log());
    if (w.count >= cpus * per_cpu && (t != "ring" || w.cpus.size() >= cpus)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  INFO("READs waiting: " << w.count << " on " << w.cpus.size() << " CPUs");
  REQUIRE(w.count == cpus * per_cpu);
  if (t == "ring") REQUIRE(w.cpus.size() == cpus);

  REQUIRE(corofuse::session::abort_connection(m.device()));
  for (pid_t p : std::vector<pid_t>(c.running())) CHECK(c.wait(p) == 0);
  // The server sees the connection end, cancels the waits in its handlers and ends.
  const bool exited = m.wait_exit(30);
  INFO("server log after the abort:\n" << tail(m.log()));
  CHECK(exited);
  CHECK(m.exit_status() == 0);
  REQUIRE_FALSE(m.mounted());

  // The same directory takes a new mount, which serves.
  in_process_mount again(in_process_mount::serving<blocking_fs>(), o, m.dir());
  INFO("server (again) log:\n" << tail(again.log()));
  REQUIRE(again.mounted());
  CHECK(in_client([&] {
          int fd = ::open(again.path("fast").c_str(), O_RDONLY);
          char buf[16];
          return fd >= 0 && ::read(fd, buf, sizeof buf) == 16 && buf[0] == 'f' ? 0 : 1;
        }) == 0);
  CHECK(again.terminate(30));
  CHECK(again.exit_status() == 0);
  CHECK_FALSE(again.mounted());
}

TEST_CASE("Handlers that throw: EIO, logged, still serving, nothing leaked", "[mount][fault][throw]") {
  REQUIRE(::geteuid() == 0);
  const std::string t = transport_under_test();
  cf::session::options o;
  o.mount.fsname = "throwfs";
  o.transport = choice(t);
  o.shutdown_grace = 1;
  o.cache.entry_timeout = 0;  // every stat is a LOOKUP (the size of /live is always fresh)
  o.cache.attr_timeout = 0;
  in_process_mount m(in_process_mount::serving<throwing_fs>(), o);
  INFO("server log:\n" << tail(m.log()));
  REQUIRE(m.mounted());

  auto fails_with_eio = [](const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) != 0 && errno == EIO;
  };
  // Each throw is one failed request; the requests after it are served.
  CHECK(in_client([&] {
          struct stat st {};
          if (!fails_with_eio(m.path("throw-std"))) return 1;
          if (::stat(m.path("ok").c_str(), &st) != 0) return 2;
          if (!fails_with_eio(m.path("throw-other"))) return 3;
          if (corofuse::testing::read_file(m.path("ok")) != "ok\n") return 4;
          int fd = ::open(m.path("boom").c_str(), O_RDONLY);
          if (fd < 0) return 5;
          char buf[16];
          const bool eio = ::pread(fd, buf, sizeof buf, 0) < 0 && errno == EIO;
          ::close(fd);
          if (!eio) return 6;
          return corofuse::testing::read_file(m.path("ok")) == "ok\n" ? 0 : 7;
        }) == 0);
  {
    const std::string log = m.log();
    CHECK(log.find("LOOKUP handler threw: lookup of throw-std (answered EIO)") != std::string::npos);
    CHECK(log.find("LOOKUP handler threw: unknown exception (answered EIO)") != std::string::npos);
    CHECK(log.find("READ handler threw: read of boom after a wait (answered EIO)") != std::string::npos);
  }

  // `rounds` x 3 throws (two plain handlers, one coroutine), all answered EIO.
  auto throw_many = [&](int rounds) {
    return in_client(
        [&] {
          int fd = ::open(m.path("boom").c_str(), O_RDONLY);
          if (fd < 0) return 10;
          char buf[16];
          for (int i = 0; i < rounds; ++i) {
            if (!fails_with_eio(m.path("throw-std"))) return 1;
            if (!fails_with_eio(m.path("throw-other"))) return 2;
            if (::pread(fd, buf, sizeof buf, 0) >= 0 || errno != EIO) return 3;
          }
          ::close(fd);
          return 0;
        },
        600);
  };
  // The first thousand rounds let pools, tables and the allocator settle on every serving thread.
  REQUIRE(throw_many(1000) == 0);
  const std::uint64_t rss_before = rss_kib(m.pid());
  REQUIRE(throw_many(5000) == 0);
  const std::uint64_t rss_after = rss_kib(m.pid());
  INFO("server RSS: " << rss_before << " KiB after 3000 throws, " << rss_after << " KiB after 15000 more");
  REQUIRE(rss_before > 0);
  // A leak of even 64 bytes a throw would add about 1 MiB.
  if (rss_measures_leaks) CHECK(rss_after <= rss_before + 512);
  // No exception object outlives its request.
  CHECK(in_client([&] {
          struct stat st {};
          if (::stat(m.path("live").c_str(), &st) != 0) return 100;
          return static_cast<int>(std::min<off_t>(st.st_size, 99));
        }) == 0);
  // The server still serves, and ends normally.
  CHECK(in_client([&] { return corofuse::testing::read_file(m.path("ok")) == "ok\n" ? 0 : 1; }) == 0);
  CHECK(m.terminate(30));
  CHECK(m.exit_status() == 0);
  CHECK_FALSE(m.mounted());
}

TEST_CASE("SIGTERM while clients stream I/O on memfs: clean ends, exit 0", "[mount][fault][sigterm]") {
  REQUIRE(::geteuid() == 0);
  const std::string t = transport_under_test();
  server s(memfs_bin, {"--transport", t, "--shutdown-grace", "1"});
  INFO("memfs log:\n" << tail(s.log()));
  REQUIRE(s.mounted());
  // Each client keeps its file open: the connection outlives the unmount until the abort.
  two_streams streams(s.dir(), false);
  s.signal(SIGTERM);
  CHECK(s.wait_exit(30));
  CHECK(s.exit_status() == 0);
  // Every write and read before the abort was whole and right; then ECONNABORTED or ENOTCONN.
  CHECK(streams.wait_a() == 0);
  CHECK(streams.wait_b() == 0);
  CHECK_FALSE(s.mounted());
  const std::string log = s.log();
  INFO("memfs log at exit:\n" << tail(log));
  CHECK(log.find("unmounting") != std::string::npos);
  CHECK(log.find("aborting") != std::string::npos);  // the open files kept the connection past the grace period
  CHECK(entries_of(s.dir()).empty());
}
