// Notifications through a live mount: memfs changes its tree behind the kernel's back (commands on
// its --control FIFO) and tells the kernel, which then shows the change at once although its
// caches would keep the old state for an hour (entry_timeout and attr_timeout 3600).
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <string>
#include <thread>

#include "tests/mount/server_harness.hpp"

using corofuse::testing::in_client;
using corofuse::testing::runfile;
using corofuse::testing::server;

namespace {

bool uring_enabled() { return corofuse::testing::read_file("/sys/module/fuse/parameters/enable_uring").rfind("Y", 0) == 0; }

// Sends one command and waits for memfs's "memfs control: COMMAND: RESULT" line; returns RESULT.
std::string command(server& s, const std::string& fifo, const std::string& cmd) {
  const std::size_t seen = s.log().size();
  int fd = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK);
  REQUIRE(fd >= 0);
  const std::string line = cmd + "\n";
  REQUIRE(::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()));
  ::close(fd);
  const std::string marker = "memfs control: " + cmd + ": ";
  for (int i = 0; i < 200; ++i) {
    std::string log = s.log();
    auto at = log.find(marker, seen);
    if (at != std::string::npos && log.find('\n', at) != std::string::npos) {
      auto from = at + marker.size();
      return log.substr(from, log.find('\n', at) - from);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  FAIL("no answer to '" << cmd << "' in the log:\n" << s.log());
  return {};
}

// pread of the whole file from an fd the client keeps open (its page cache stays in use).
std::string pread_all(int fd) {
  char buf[256];
  ssize_t n = ::pread(fd, buf, sizeof buf, 0);
  return n < 0 ? "ERR " + std::string(std::strerror(errno)) : std::string(buf, static_cast<std::size_t>(n));
}

}  // namespace

TEST_CASE("memfs --control: changes behind the kernel's back are seen at once through notifications", "[mount][notify]") {
  const std::string transport = GENERATE(as<std::string>{}, "ring", "dev");
  INFO("transport: " << transport);
  REQUIRE(::geteuid() == 0);
  if (transport == "ring") REQUIRE(uring_enabled());
  char tmpl[] = "/tmp/corofuse-control-XXXXXX";
  REQUIRE(::mkdtemp(tmpl));
  const std::string fifo_dir = tmpl;
  const std::string fifo = fifo_dir + "/fifo";
  struct remove_fifo {
    std::string dir, fifo;
    ~remove_fifo() {
      ::unlink(fifo.c_str());
      ::rmdir(dir.c_str());
    }
  } cleanup{fifo_dir, fifo};

  server s(runfile("examples/memfs/memfs"),
           {"--stats", "-o", "entry_timeout=3600,attr_timeout=3600", "--transport", transport, "--control", fifo});
  INFO("memfs log:\n" << s.log());
  REQUIRE(s.mounted());
  const std::string dir = s.dir();

  // The files, and the kernel's caches filled: a's pages through an open fd, b's and c's names.
  REQUIRE(in_client([&] {
            for (const char* n : {"a", "b", "c"}) {
              int fd = ::open((dir + "/" + n).c_str(), O_CREAT | O_WRONLY, 0644);
              if (fd < 0 || ::write(fd, "one", 3) != 3 || ::close(fd) != 0) return 1;
            }
            return 0;
          }) == 0);

  // All in one client that keeps a open, so the page cache of a stays in use between the steps.
  int to_client[2], to_parent[2];
  REQUIRE(::pipe(to_client) == 0);
  REQUIRE(::pipe(to_parent) == 0);
  auto say = [](int fd, const std::string& m) { return ::write(fd, m.c_str(), m.size() + 1) > 0; };
  auto hear = [](int fd) {
    std::string m;
    char c;
    while (::read(fd, &c, 1) == 1 && c != 0) m += c;
    return m;
  };
  pid_t client = corofuse::testing::start_client(
      [&] {
        int fd = ::open((dir + "/a").c_str(), O_RDONLY);
        if (fd < 0) return 1;
        struct stat st {};
        for (;;) {
          std::string ask = hear(to_client[0]);
          if (ask.empty() || ask == "done") return 0;
          std::string answer;
          if (ask == "read a") answer = pread_all(fd);
          else if (ask.rfind("stat ", 0) == 0)
            answer = ::stat((dir + "/" + ask.substr(5)).c_str(), &st) == 0 ? "exists" : std::strerror(errno);
          if (!say(to_parent[1], answer)) return 2;
        }
      },
      60);
  REQUIRE(client > 0);
  auto ask = [&](const std::string& q) {
    say(to_client[1], q);
    return hear(to_parent[0]);
  };

  CHECK(ask("read a") == "one");
  CHECK(ask("stat b") == "exists");
  CHECK(ask("stat c") == "exists");

  // Without a notification the kernel keeps showing its cached pages (the test's control case).
  CHECK(command(s, fifo, "set-unnotified a uno").rfind("ok", 0) == 0);
  CHECK(ask("read a") == "one");

  // With one, the new contents (and size) show at once.
  CHECK(command(s, fifo, "set a two-two-two") == "ok");
  CHECK(ask("read a") == "two-two-two");

  // STORE puts the data into the kernel's cache itself; RETRIEVE reads the cache back.
  CHECK(command(s, fifo, "store a stored!") == "ok, store ok");
  CHECK(ask("read a") == "stored!");
  CHECK(command(s, fifo, "retrieve a") == "7 bytes cached, same as memfs");

  // Names: a delete and a rename made behind the kernel's back.
  CHECK(command(s, fifo, "rm b").rfind("unlinked, notify delete ok", 0) == 0);
  CHECK(ask("stat b") == std::string(std::strerror(ENOENT)));
  CHECK(command(s, fifo, "mv c d") == "renamed, inval_entry ok and ok (not cached)");  // d was never looked up
  CHECK(ask("stat c") == std::string(std::strerror(ENOENT)));
  CHECK(ask("stat d") == "exists");

  CHECK(command(s, fifo, "epoch") == "ok");
  CHECK(command(s, fifo, "frobnicate").rfind("error: unknown command", 0) == 0);

  say(to_client[1], "done");
  int status = 0;
  ::waitpid(client, &status, 0);
  CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 0));
  for (int fd : {to_client[0], to_client[1], to_parent[0], to_parent[1]}) ::close(fd);

  s.signal(SIGTERM);
  CHECK(s.wait_exit(30));
  CHECK(s.exit_status() == 0);
  CHECK_FALSE(s.mounted());
}
