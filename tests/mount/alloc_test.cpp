// No heap allocation per request in steady state: memfs and passthrough, built with every heap
// allocation counted (alloc_counter.cpp), serve 10,000 requests (READ, WRITE, GETATTR, LOOKUP)
// through a live mount on each transport, and the count must not move. passthrough runs once per
// way of touching its backing files (inline system calls, inline-else-ring, ring only).
//
// Caches are off (attr_timeout=0, entry_timeout=0, O_DIRECT), so every call is a request. A
// warm-up of the same calls from every CPU comes first: pools and tables grow there (the first
// request of a kind on a serving thread may allocate its frame; a later one must not). Each
// client opens the file once (OPEN, FLUSH, RELEASE: three requests more, also allocation-free).
#include <catch2/catch.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sched.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "tests/mount/server_harness.hpp"

using corofuse::testing::in_client;
using corofuse::testing::requests;
using corofuse::testing::runfile;
using corofuse::testing::server;
using corofuse::testing::uring_enabled;

namespace {

constexpr int rounds = 2500;  // x 4 calls = 10,000 requests
constexpr std::size_t block = 4096;
constexpr int blocks = 256;  // a 1 MiB file

// The server's allocation count: SIGUSR2 makes it print "allocations N"; the newest line counts.
std::uint64_t allocations(server& s) {
  const std::string before = s.log();
  s.signal(SIGUSR2);
  for (int i = 0; i < 200; ++i) {
    std::string log = s.log();
    if (log.size() > before.size()) {
      auto at = log.rfind("allocations ");
      if (at != std::string::npos && at >= before.size()) return std::stoull(log.substr(at + 12));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  FAIL("the server did not report its allocations");
  return 0;
}

// Runs `fn` in a client pinned to `cpu` (the ring's queue for that CPU serves it).
int on_cpu(unsigned cpu, const std::function<int()>& fn) {
  return in_client(
      [&] {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        if (::sched_setaffinity(0, sizeof set, &set) != 0) return 20;
        return fn();
      },
      120);
}

// Opens and closes the file `n` times (OPEN, FLUSH, RELEASE): the warm-up of those handlers'
// frames on every serving thread.
int open_close(const std::string& dir, int n) {
  for (int i = 0; i < n; ++i) {
    int fd = ::open((dir + "/d/f").c_str(), O_RDWR | O_DIRECT);
    if (fd < 0 || ::close(fd) != 0) return 16;
  }
  return 0;
}

// One round of calls, each one request: O_DIRECT read and write of a block, fstat, and a stat
// of the path (a LOOKUP, names are not cached).
int workload(const std::string& dir, int n) {
  const std::string path = dir + "/d/f";
  int fd = ::open(path.c_str(), O_RDWR | O_DIRECT);
  if (fd < 0) return 10;
  void* mem = nullptr;
  if (::posix_memalign(&mem, block, block) != 0) return 11;
  std::memset(mem, 'x', block);
  for (int i = 0; i < n; ++i) {
    const off_t off = static_cast<off_t>((i % blocks) * block);
    if (::pread(fd, mem, block, off) != static_cast<ssize_t>(block)) return 12;
    if (::pwrite(fd, mem, block, off) != static_cast<ssize_t>(block)) return 13;
    struct stat st {};
    if (::fstat(fd, &st) != 0) return 14;
    if (::stat(path.c_str(), &st) != 0) return 15;
  }
  ::free(mem);
  ::close(fd);
  return 0;
}

// passthrough's backing: how its READs and WRITEs reach the backing file (fs/backing.hpp), each
// a path of its own: "local" a directory on /tmp's disk filesystem (cached reads inline with
// RWF_NOWAIT, else on the ring), "memory" a tmpfs mounted for the test (system calls on the queue
// thread), "remote" the disk directory with --backing remote (everything on the ring).
void check_steady_state(const std::string& fs, const std::string& transport, const std::string& backing = "") {
  INFO(fs << " over " << transport << (backing.empty() ? "" : ", backing " + backing));
  REQUIRE(::geteuid() == 0);
  if (transport == "ring") REQUIRE(uring_enabled());
  std::string source;
  std::vector<std::string> leading;
  std::vector<std::string> args = {"--stats", "-o", "attr_timeout=0,entry_timeout=0", "--transport", transport};
  struct cleanup {
    std::string dir;
    bool mounted = false;
    ~cleanup() {
      if (mounted) ::umount2(dir.c_str(), MNT_DETACH);
      if (!dir.empty()) (void)std::system(("rm -rf '" + dir + "'").c_str());
    }
  } remove_source;
  if (fs == "passthrough") {
    char tmpl[] = "/tmp/corofuse-alloc-src-XXXXXX";
    REQUIRE(::mkdtemp(tmpl));
    source = tmpl;
    remove_source.dir = source;
    leading.push_back(source);
    if (backing == "memory") {
      REQUIRE(::mount("corofuse-alloc", source.c_str(), "tmpfs", 0, "size=64m,mode=0755") == 0);
      remove_source.mounted = true;
    } else if (backing == "remote") {
      args.push_back("--backing");
      args.push_back("remote");
    }
  }

  server s(runfile("tests/mount/" + fs + "_counted"), args, -1, -1, leading);
  INFO("server log:\n" << s.log());
  REQUIRE(s.mounted());
  const std::string dir = s.dir();
  REQUIRE(in_client([&] {
            if (::mkdir((dir + "/d").c_str(), 0755) != 0) return 1;
            int fd = ::open((dir + "/d/f").c_str(), O_CREAT | O_WRONLY, 0644);
            if (fd < 0) return 2;
            std::vector<char> data(block * blocks, 'a');
            if (::write(fd, data.data(), data.size()) != static_cast<ssize_t>(data.size())) return 3;
            return ::close(fd) == 0 ? 0 : 4;
          }) == 0);
  // Warm-up from every CPU (each has its own queue on the ring; the /dev/fuse threads take
  // requests in any order): the first request of a kind on a thread may allocate its frame.
  const unsigned cpus = std::max(1u, std::thread::hardware_concurrency());
  for (unsigned cpu = 0; cpu < cpus; ++cpu) {
    REQUIRE(on_cpu(cpu, [&] { return workload(dir, rounds); }) == 0);
    REQUIRE(on_cpu(cpu, [&] { return open_close(dir, 200); }) == 0);
  }
  const std::uint64_t before = allocations(s);
  for (unsigned cpu = 0; cpu < cpus; ++cpu) REQUIRE(on_cpu(cpu, [&] { return workload(dir, rounds / static_cast<int>(cpus)); }) == 0);
  const std::uint64_t after = allocations(s);

  s.signal(SIGTERM);
  REQUIRE(s.wait_exit(30));
  const std::string log = s.log();
  INFO("server log (end):\n" << log.substr(log.size() > 3000 ? log.size() - 3000 : 0));
  // Both phases reached the server: at least 2 x 2500 of each kind.
  CHECK(requests(log, "READ") >= 2 * rounds);
  CHECK(requests(log, "WRITE") >= 2 * rounds);
  CHECK(requests(log, "GETATTR") >= 2 * rounds);
  CHECK(requests(log, "LOOKUP") >= 2 * rounds);
  INFO("allocations during 10,000 requests: " << (after - before));
  CHECK(after - before == 0);
}

// Lists a directory of `entries` names `n` times (OPENDIR, READDIR or READDIRPLUS until the end,
// RELEASEDIR); counts the names seen.
int list_dir(const std::string& path, int n, std::size_t entries) {
  for (int i = 0; i < n; ++i) {
    DIR* d = ::opendir(path.c_str());
    if (!d) return 30;
    std::size_t seen = 0;
    while (::readdir(d)) ++seen;
    ::closedir(d);
    if (seen != entries + 2) return 31;
  }
  return 0;
}

// A listing is packed from the filesystem's range straight into the reply: listing a 10,000-entry
// directory again and again allocates nothing. READDIRPLUS (each entry's attributes, a lookup
// counted) is what the kernel asks for first; READDIR when it has the names cached.
void check_listing_steady_state(const std::string& fs, const std::string& transport) {
  INFO(fs << " over " << transport);
  REQUIRE(::geteuid() == 0);
  if (transport == "ring") REQUIRE(uring_enabled());
  constexpr std::size_t entries = 10000;
  constexpr int listings = 6;
  struct cleanup {
    std::string dir;
    ~cleanup() {
      if (dir.empty()) return;
      ::umount2(dir.c_str(), MNT_DETACH);
      ::rmdir(dir.c_str());
    }
  } source;
  std::vector<std::string> leading;
  if (fs == "passthrough") {  // over a tmpfs of its own
    char tmpl[] = "/tmp/corofuse-alloc-list-XXXXXX";
    REQUIRE(::mkdtemp(tmpl));
    REQUIRE(::mount("corofuse-alloc", tmpl, "tmpfs", 0, "size=64m,mode=0755") == 0);
    source.dir = tmpl;
    leading.push_back(source.dir);
  }
  server s(runfile("tests/mount/" + fs + "_counted"), {"--stats", "-o", "attr_timeout=0,entry_timeout=0", "--transport", transport}, -1, -1,
           leading);
  INFO("server log:\n" << s.log());
  REQUIRE(s.mounted());
  const std::string dir = s.dir() + "/many";
  REQUIRE(in_client(
              [&] {
                if (::mkdir(dir.c_str(), 0755) != 0) return 1;
                for (std::size_t i = 0; i < entries; ++i) {
                  int fd = ::open((dir + "/file-" + std::to_string(i)).c_str(), O_CREAT | O_WRONLY, 0644);
                  if (fd < 0 || ::close(fd) != 0) return 2;
                }
                return 0;
              },
              300) == 0);
  const unsigned cpus = std::max(1u, std::thread::hardware_concurrency());
  for (unsigned cpu = 0; cpu < cpus; ++cpu) REQUIRE(on_cpu(cpu, [&] { return list_dir(dir, 2, entries); }) == 0);
  const std::uint64_t before = allocations(s);
  for (unsigned cpu = 0; cpu < cpus; ++cpu) REQUIRE(on_cpu(cpu, [&] { return list_dir(dir, listings, entries); }) == 0);
  const std::uint64_t after = allocations(s);

  s.signal(SIGTERM);
  REQUIRE(s.wait_exit(30));
  const std::string log = s.log();
  INFO("server log (end):\n" << log.substr(log.size() > 3000 ? log.size() - 3000 : 0));
  // A reply holds what the client's buffer does (readdir(3) asks for 32 KiB: some 700 names here),
  // so each listing is more than ten requests.
  CHECK(requests(log, "READDIR") + requests(log, "READDIRPLUS") >= cpus * (listings + 2) * (entries / 1000));
  INFO("allocations during " << cpus * listings << " listings of " << entries << " entries: " << (after - before));
  CHECK(after - before == 0);
}

}  // namespace

TEST_CASE("memfs: no heap allocation per request in steady state (READ, WRITE, GETATTR, LOOKUP)", "[mount][alloc]") {
  const std::string transport = GENERATE(as<std::string>{}, "ring", "dev");
  check_steady_state("memfs", transport);
}

TEST_CASE("passthrough: no heap allocation per request in steady state (READ, WRITE, GETATTR, LOOKUP)", "[mount][alloc]") {
  const std::string transport = GENERATE(as<std::string>{}, "ring", "dev");
  const std::string backing = GENERATE(as<std::string>{}, "local", "memory", "remote");
  check_steady_state("passthrough", transport, backing);
}

TEST_CASE("memfs and passthrough: no heap allocation listing a 10,000-entry directory (READDIR, READDIRPLUS)", "[mount][alloc]") {
  const std::string fs = GENERATE(as<std::string>{}, "memfs", "passthrough");
  const std::string transport = GENERATE(as<std::string>{}, "ring", "dev");
  check_listing_steady_state(fs, transport);
}
