// examples/hello mounted on the host kernel and used by real system calls and tools; its command
// line; and every way a serving session ends: SIGTERM, an outside umount, SIGTERM while a client
// keeps a file open, a connection abort, and the daemon killed. No test may hang or leave a mount.
#include <catch2/catch.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <algorithm>
#include <fstream>
#include <functional>
#include <set>
#include <thread>
#include <string>

#include "tests/mount/server_harness.hpp"

using corofuse::testing::counter_line;
using corofuse::testing::counter_value;
using corofuse::testing::in_client;
using corofuse::testing::read_file;
using corofuse::testing::runfile;
using corofuse::testing::server;
using corofuse::testing::sh;
using corofuse::testing::uring_enabled;

namespace {
const std::string hello_bin = runfile("examples/hello/hello");

// The same behaviour over each transport; returns the server's log for transport-specific checks.
std::string exercise_hello(const std::string& transport) {
  server s(hello_bin, {"-d", "--transport", transport});
  REQUIRE(s.mounted());

  // Reading: the content, via the syscalls and via cat.
  CHECK(in_client([&] { return read_file(s.path("hello")) == "Hello, World!\n" ? 0 : 1; }) == 0);
  CHECK(sh("cat " + s.path("hello") + " | grep -qx \"Hello, World!\"") == 0);
  // Reads that fit the file (READ linked to the commit, complete) and that pass its end (short).
  CHECK(sh("test \"$(dd if=" + s.path("hello") + " bs=5 count=2 status=none)\" = \"Hello, Wor\"") == 0);
  CHECK(sh("test \"$(dd if=" + s.path("hello") + " bs=7 skip=1 status=none)\" = \"World!\"") == 0);

  // The listing is exactly ., .., hello, notes.
  CHECK(in_client([&] {
          DIR* d = ::opendir(s.dir().c_str());
          if (!d) return 1;
          std::set<std::string> names;
          while (dirent* e = ::readdir(d)) names.insert(e->d_name);
          ::closedir(d);
          return names == std::set<std::string>{".", "..", "hello", "notes"} ? 0 : 2;
        }) == 0);

  // /hello is read-only: opening it for writing fails with EACCES (mode 0444, checked by the kernel).
  CHECK(in_client([&] {
          int fd = ::open(s.path("hello").c_str(), O_WRONLY);
          return fd < 0 && errno == EACCES ? 0 : 1;
        }) == 0);
  CHECK(in_client([&] {
          struct stat st {};
          return ::stat(s.path("nothing-here").c_str(), &st) != 0 && errno == ENOENT ? 0 : 1;
        }) == 0);

  // /notes: write, append, read back with cmp, truncate, stat.
  CHECK(sh("printf abc > " + s.path("notes") + " && printf def >> " + s.path("notes")) == 0);
  CHECK(in_client([&] { return read_file(s.path("notes")) == "abcdef" ? 0 : 1; }) == 0);
  CHECK(sh("head -c 300000 /dev/urandom > " + s.dir() + ".src && cp " + s.dir() + ".src " + s.path("notes") + " && cmp " + s.dir() +
           ".src " + s.path("notes") + "; rc=$?; rm -f " + s.dir() + ".src; exit $rc") == 0);
  CHECK(sh("dd if=/dev/zero of=" + s.path("notes") + " bs=64k count=4 conv=notrunc status=none") == 0);
  CHECK(in_client([&] {
          struct stat st {};
          if (::stat(s.path("notes").c_str(), &st) != 0) return 1;
          return st.st_size == 300000 ? 0 : 2;
        }) == 0);
  CHECK(in_client([&] { return ::truncate(s.path("notes").c_str(), 10) == 0 ? 0 : 1; }) == 0);
  CHECK(in_client([&] {
          struct stat st {};
          return ::stat(s.path("notes").c_str(), &st) == 0 && st.st_size == 10 ? 0 : 1;
        }) == 0);
  // Larger than hello's 1 MiB limit: the kernel passes EFBIG on.
  CHECK(in_client([&] {
          int fd = ::open(s.path("notes").c_str(), O_WRONLY);
          if (fd < 0) return 1;
          static char big[1 << 16];
          ssize_t n = ::pwrite(fd, big, sizeof big, 2 << 20);
          int e = errno;
          ::close(fd);
          return n < 0 && e == EFBIG ? 0 : 2;
        }) == 0);
  CHECK(sh("df " + s.dir() + " > /dev/null") == 0);
  // Clients on each CPU at once: the kernel routes each to its CPU's queue.
  CHECK(sh("for i in 1 2 3 4 5 6 7 8; do taskset -c 0 cat " + s.path("hello") +
           " > /dev/null; done & "
           "for i in 1 2 3 4 5 6 7 8; do taskset -c 1 cat " +
           s.path("hello") + " > /dev/null; done; wait") == 0);

  // SIGTERM: the server unmounts, prints its counters and exits 0.
  s.signal(SIGTERM);
  REQUIRE(s.wait_exit(20));
  CHECK(s.exit_status() == 0);
  CHECK_FALSE(s.mounted());
  std::string log = s.log();
  CHECK(log.find("unmounting") != std::string::npos);
  CHECK_FALSE(counter_line(log, "WRITE").empty());
  return log;
}
}  // namespace

TEST_CASE("hello over /dev/fuse: system calls and tools; every request counted on /dev/fuse", "[mount][hello]") {
  REQUIRE(::geteuid() == 0);
  std::string log = exercise_hello("dev");
  INFO(log);
  // Without the ring every CPU after the first gets a reading thread on a cloned descriptor.
  if (std::thread::hardware_concurrency() > 1) {
    auto at = log.find("serving /dev/fuse on ");
    REQUIRE(at != std::string::npos);
    CHECK(std::stoi(log.substr(at + std::strlen("serving /dev/fuse on "))) >= 2);
  }
  for (const char* op : {"LOOKUP", "GETATTR", "OPEN", "READ", "WRITE", "READDIRPLUS"}) {
    INFO(op);
    CHECK(counter_value(counter_line(log, op), "dev") > 0);
    CHECK(counter_value(counter_line(log, op), "ring") == 0);
  }
}

TEST_CASE("hello over the io_uring ring: the ring carries the requests, both CPUs' queues serve", "[mount][hello][ring]") {
  REQUIRE(::geteuid() == 0);
  REQUIRE(uring_enabled());  // tools/setup enables it; the fallback has its own test
  std::string log = exercise_hello("auto");
  INFO(log);
  CHECK(log.find("serving over FUSE-over-io_uring") != std::string::npos);
  for (const char* op : {"LOOKUP", "GETATTR", "OPEN", "READ", "WRITE", "READDIRPLUS", "FLUSH", "RELEASE"}) {
    INFO(op);
    CHECK(counter_value(counter_line(log, op), "ring") > 0);
    CHECK(counter_value(counter_line(log, op), "dev") == 0);  // /dev/fuse only for FORGET/INTERRUPT
  }
  auto queue_requests = [&](int q) {
    auto at = log.find("queue " + std::to_string(q) + " requests=");
    return at == std::string::npos ? 0ull : std::stoull(log.substr(log.find('=', at) + 1));
  };
  CHECK(queue_requests(0) > 0);
  CHECK(queue_requests(1) > 0);
}

TEST_CASE("hello with enable_uring=N: falls back to /dev/fuse and says why", "[mount][hello][ring]") {
  REQUIRE(::geteuid() == 0);
  const std::string param = "/sys/module/fuse/parameters/enable_uring";
  const bool was = uring_enabled();
  auto set = [&](const char* v) {
    std::ofstream f(param);
    f << v;
    return static_cast<bool>(f);
  };
  REQUIRE(set("N"));
  struct restore_param {
    std::function<void()> fn;
    ~restore_param() { fn(); }
  } restore{[&] { set(was ? "Y" : "N"); }};
  server s(hello_bin, {"-d"});
  REQUIRE(s.mounted());
  CHECK(in_client([&] { return read_file(s.path("hello")) == "Hello, World!\n" ? 0 : 1; }) == 0);
  s.signal(SIGTERM);
  REQUIRE(s.wait_exit(20));
  std::string log = s.log();
  INFO(log);
  CHECK(log.find("does not offer FUSE-over-io_uring") != std::string::npos);
  CHECK(counter_value(counter_line(log, "READ"), "dev") > 0);
  CHECK(counter_value(counter_line(log, "READ"), "ring") == 0);
}

TEST_CASE("hello: -d traces each request and its reply; --stats counts and times them, on SIGUSR1 too; neither by default",
          "[mount][hello][trace]") {
  REQUIRE(::geteuid() == 0);
  const std::string transport = GENERATE(as<std::string>{}, "dev", "ring");
  if (transport == "ring") REQUIRE(uring_enabled());
  INFO("transport " << transport);
  auto count = [](const std::string& log, const std::string& what) {
    std::size_t n = 0;
    for (std::size_t at = log.find(what); at != std::string::npos; at = log.find(what, at + 1)) ++n;
    return n;
  };
  SECTION("-d: one line per request with its arguments, outcome and time; latency histograms at exit") {
    server s(hello_bin, {"-d", "--transport", transport});
    REQUIRE(s.mounted());
    CHECK(in_client([&] { return read_file(s.path("hello")) == "Hello, World!\n" ? 0 : 1; }) == 0);
    CHECK(in_client([&] {
            struct stat st {};
            return ::stat(s.path("nothing-here").c_str(), &st) != 0 && errno == ENOENT ? 0 : 1;
          }) == 0);
    s.signal(SIGTERM);
    REQUIRE(s.wait_exit(20));
    const std::string log = s.log();
    INFO(log);
    // A lookup that fails, one that succeeds, the open and the read, each with what it asked.
    CHECK(log.find(" LOOKUP node 1 name \"nothing-here\" -> ENOENT, ") != std::string::npos);
    CHECK(log.find(" LOOKUP node 1 name \"hello\" -> OK 128 bytes, ") != std::string::npos);
    CHECK(log.find(" OPEN node 2 flags ") != std::string::npos);
    CHECK(log.find(" READ node 2 fh ") != std::string::npos);
    CHECK(log.find("offset 0 size ") != std::string::npos);
    // Every line starts with the request's unique, one per request the counters saw (and no more).
    const auto traced = count(log, "\nunique ");
    CHECK(traced >= 4);
    CHECK(log.find("\nlatency LOOKUP n=") != std::string::npos);
    CHECK(log.find("\nlatency READ n=") != std::string::npos);
    CHECK(log.find("\ncounter READ ") != std::string::npos);
  }
  SECTION("--stats: counters and histograms, on SIGUSR1 while serving and at exit; no trace") {
    server s(hello_bin, {"--stats", "--transport", transport});
    REQUIRE(s.mounted());
    CHECK(in_client([&] { return read_file(s.path("hello")) == "Hello, World!\n" ? 0 : 1; }) == 0);
    s.signal(SIGUSR1);
    std::string log;
    for (int i = 0; i < 100 && count(log = s.log(), "latency READ n=") == 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    INFO(log);
    CHECK(count(log, "counter READ ") == 1);  // the report, and the server still serves
    CHECK(count(log, "latency READ n=") == 1);
    CHECK(s.mounted());
    CHECK(in_client([&] { return read_file(s.path("hello")) == "Hello, World!\n" ? 0 : 1; }) == 0);
    s.signal(SIGTERM);
    REQUIRE(s.wait_exit(20));
    log = s.log();
    CHECK(count(log, "counter READ ") == 2);  // and again at exit
    CHECK(count(log, "\nunique ") == 0);
  }
  SECTION("by default: neither") {
    server s(hello_bin, {"--transport", transport});
    REQUIRE(s.mounted());
    CHECK(in_client([&] { return read_file(s.path("hello")) == "Hello, World!\n" ? 0 : 1; }) == 0);
    s.signal(SIGTERM);
    REQUIRE(s.wait_exit(20));
    const std::string log = s.log();
    INFO(log);
    CHECK(count(log, "unique ") == 0);
    CHECK(count(log, "counter ") == 0);
    CHECK(count(log, "latency ") == 0);
  }
}

TEST_CASE("hello: an outside umount ends the server cleanly", "[mount][hello][shutdown]") {
  REQUIRE(::geteuid() == 0);
  server s(hello_bin, {"--transport", "dev"});
  REQUIRE(s.mounted());
  CHECK(sh("umount " + s.dir()) == 0);
  REQUIRE(s.wait_exit(20));
  CHECK(s.exit_status() == 0);
  CHECK_FALSE(s.mounted());
}

TEST_CASE("hello: SIGTERM while a client keeps a file open: abort after the grace period", "[mount][hello][shutdown]") {
  REQUIRE(::geteuid() == 0);
  server s(hello_bin, {"--shutdown-grace", "1"});
  REQUIRE(s.mounted());
  // A client holds /hello open, waits for the signal to be handled, then reads again.
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  pid_t client = ::fork();
  REQUIRE(client >= 0);
  if (client == 0) {
    ::alarm(30);
    int fd = ::open(s.path("hello").c_str(), O_RDONLY);
    if (fd < 0) ::_exit(1);
    char c = 'r';
    if (::write(fds[1], &c, 1) != 1) ::_exit(2);
    ::sleep(4);  // the server unmounts, waits 1 s, then aborts the connection
    char buf[64];
    ssize_t n = ::pread(fd, buf, sizeof buf, 0);
    ::_exit(n < 0 && (errno == ENOTCONN || errno == ECONNABORTED) ? 0 : 3);
  }
  char c = 0;
  REQUIRE(::read(fds[0], &c, 1) == 1);
  s.signal(SIGTERM);
  REQUIRE(s.wait_exit(20));  // returns: the connection was aborted, the readers ended
  CHECK(s.exit_status() == 0);
  int status = 0;
  ::waitpid(client, &status, 0);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(s.log().find("aborting") != std::string::npos);
  ::close(fds[0]);
  ::close(fds[1]);
}

TEST_CASE("hello: a connection aborted from fusectl ends the server; the mount point is reusable", "[mount][hello][shutdown]") {
  REQUIRE(::geteuid() == 0);
  std::string dir;
  {
    server s(hello_bin, {});
    REQUIRE(s.mounted());
    dev_t dev = s.device();
    REQUIRE(corofuse::session::abort_connection(dev));
    REQUIRE(s.wait_exit(20));
    CHECK(s.exit_status() == 0);
    // The server took its dead mount down itself: the directory is plain again and answers.
    CHECK_FALSE(s.mounted());
    CHECK(in_client([&] {
            struct stat st {};
            return ::stat(s.dir().c_str(), &st) == 0 && S_ISDIR(st.st_mode) ? 0 : 1;
          }) == 0);
  }
  // A new server mounts and serves again.
  server again(hello_bin, {});
  REQUIRE(again.mounted());
  CHECK(in_client([&] { return read_file(again.path("hello")) == "Hello, World!\n" ? 0 : 1; }) == 0);
}

TEST_CASE("hello: the daemon killed: clients get an error, never a hang", "[mount][hello][shutdown]") {
  REQUIRE(::geteuid() == 0);
  server s(hello_bin, {});
  REQUIRE(s.mounted());
  s.signal(SIGKILL);
  REQUIRE(s.wait_exit(20));
  CHECK(in_client([&] {
          int fd = ::open(s.path("hello").c_str(), O_RDONLY);
          return fd < 0 && (errno == ENOTCONN || errno == ECONNABORTED) ? 0 : 1;
        }) == 0);
  // The guard detaches the dead mount; nothing is left behind (checked by the next test's mount).
}

TEST_CASE("hello: bad command lines give one clear line, exit 2, and mount nothing", "[mount][hello][cli]") {
  REQUIRE(::geteuid() == 0);
  auto run = [](const std::string& args, std::string& out) {
    std::string log = "/tmp/corofuse-cli-" + std::to_string(::getpid()) + ".log";
    int rc = std::system(("timeout 20 " + hello_bin + " " + args + " > " + log + " 2>&1").c_str());
    out = read_file(log);
    ::unlink(log.c_str());
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  };
  std::string out;
  CHECK(run("--help", out) == 0);
  CHECK(out.find("usage:") != std::string::npos);
  CHECK(out.find("--transport") != std::string::npos);

  CHECK(run("", out) == 2);
  CHECK(out.find("missing mount point") != std::string::npos);
  CHECK(run("/tmp --bogus", out) == 2);
  CHECK(out.find("unknown option --bogus") != std::string::npos);
  CHECK(run("/tmp -o max_write=abc", out) == 2);
  CHECK(out.find("bad value for -o max_write") != std::string::npos);
  CHECK(run("/tmp -o frobnicate", out) == 2);
  CHECK(run("/tmp --transport carrier-pigeon", out) == 2);
  CHECK(run("/tmp --depth 0", out) == 2);
  CHECK(run("/tmp /var", out) == 2);
  // A mount point that is not a directory, or missing: exit 1 with the reason; nothing mounted.
  CHECK(run("/etc/hostname", out) == 1);
  CHECK(out.find("not a directory") != std::string::npos);
  CHECK(run("/nonexistent/dir", out) == 1);
  CHECK(out.find("No such file") != std::string::npos);
  CHECK(std::count(out.begin(), out.end(), '\n') == 1);
}

TEST_CASE("hello without root: mounted through fusermount3, served, unmounted by SIGTERM", "[mount][hello][fusermount]") {
  REQUIRE(::geteuid() == 0);                             // to become nobody and to clean up
  REQUIRE(::access("/usr/bin/fusermount3", X_OK) == 0);  // package fuse3 (tools/setup)
  const int nobody = 65534;
  // The binary must be reachable by nobody: runfiles live under root's home.
  char bin_dir[] = "/tmp/corofuse-bin-XXXXXX";
  REQUIRE(::mkdtemp(bin_dir) != nullptr);
  std::string bin = std::string(bin_dir) + "/hello";
  REQUIRE(sh("cp " + hello_bin + " " + bin + " && chmod 755 " + std::string(bin_dir) + " " + bin) == 0);
  struct remove_bin {
    std::string dir, file;
    ~remove_bin() {
      ::unlink(file.c_str());
      ::rmdir(dir.c_str());
    }
  } cleanup{bin_dir, bin};

  server s(bin, {"-d"}, nobody, nobody);
  INFO(s.log());
  REQUIRE(s.mounted());
  CHECK(read_file("/proc/self/mountinfo").find("user_id=65534") != std::string::npos);
  // Without allow_other only the mounting user may enter: run the client as nobody too.
  auto as_nobody = [&](const std::string& cmd) { return sh("setpriv --reuid=65534 --regid=65534 --clear-groups sh -c \"" + cmd + "\""); };
  CHECK(as_nobody("grep -qx \\\"Hello, World!\\\" " + s.path("hello")) == 0);
  CHECK(as_nobody("ls " + s.dir() + " | grep -qx notes") == 0);
  s.signal(SIGTERM);
  REQUIRE(s.wait_exit(20));
  CHECK(s.exit_status() == 0);
  CHECK_FALSE(s.mounted());  // fusermount3 -u -z took it down
  std::string log = s.log();
  CHECK(counter_value(counter_line(log, "READ"), "ring") + counter_value(counter_line(log, "READ"), "dev") > 0);
}
