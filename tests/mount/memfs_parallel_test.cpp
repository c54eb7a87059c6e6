// memfs serves every CPU's queue at once: clients pinned to different CPUs read and write their own
// files while a third renames, links, lists and unlinks in a directory beside them. Over the ring,
// each CPU's queue counts the requests it served between two SIGUSR1 reports: both queues serve
// during the same window. Every byte read is checked, and nothing waits forever (each client runs
// under an alarm); the same runs over /dev/fuse, and under ThreadSanitizer (tools/test tsan).
#include <catch2/catch.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/mount/server_harness.hpp"

using corofuse::testing::in_client;
using corofuse::testing::runfile;
using corofuse::testing::server;
using corofuse::testing::start_client;
using corofuse::testing::uring_enabled;

namespace {

constexpr std::size_t block = 64 * 1024;
constexpr int blocks = 32;  // a 2 MiB file per reader

// Byte `i` of reader `r`'s file: no two readers' files, and no two blocks, look alike.
char pattern(int r, std::size_t i) { return static_cast<char>('a' + (r * 7 + i / block + i % 251) % 26); }

// The newest "queue Q requests=N" of each queue after asking for a report (SIGUSR1).
std::map<int, std::uint64_t> queue_requests(server& s) {
  const std::size_t seen = s.log().size();
  s.signal(SIGUSR1);
  for (int i = 0; i < 200; ++i) {
    const std::string log = s.log();
    if (log.size() > seen && log.find("requests=", seen) != std::string::npos) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the report's remaining lines
      std::map<int, std::uint64_t> out;
      const std::string report = s.log().substr(seen);
      for (std::size_t at = report.find("queue "); at != std::string::npos; at = report.find("queue ", at + 1)) {
        int q = -1;
        unsigned long long n = 0;
        if (std::sscanf(report.c_str() + at, "queue %d requests=%llu", &q, &n) == 2) out[q] = n;
      }
      return out;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  FAIL("the server did not report its counters");
  return {};
}

// Pins the calling process to `cpu` (each CPU's requests go to that CPU's queue on the ring).
bool pin(unsigned cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return ::sched_setaffinity(0, sizeof set, &set) == 0;
}

// Reader `r`: its file, read back block by block with O_DIRECT (every call a READ), the middle
// block rewritten each round (a WRITE under the file's exclusive lock between shared ones), and
// a stat per round. Returns 0, or where it went wrong.
int reader(const std::string& path, int r, unsigned cpu, int rounds) {
  if (!pin(cpu)) return 40;
  int fd = ::open(path.c_str(), O_RDWR | O_DIRECT);
  if (fd < 0) return 41;
  void* mem = nullptr;
  if (::posix_memalign(&mem, 4096, block) != 0) return 42;
  char* buf = static_cast<char*>(mem);
  for (int round = 0; round < rounds; ++round) {
    for (int b = 0; b < blocks; ++b) {
      if (::pread(fd, buf, block, static_cast<off_t>(b) * block) != static_cast<ssize_t>(block)) return 43;
      for (std::size_t i = 0; i < block; i += 509)
        if (buf[i] != pattern(r, static_cast<std::size_t>(b) * block + i)) return 44;
    }
    for (std::size_t i = 0; i < block; ++i) buf[i] = pattern(r, (blocks / 2) * block + i);
    if (::pwrite(fd, buf, block, static_cast<off_t>(blocks / 2) * block) != static_cast<ssize_t>(block)) return 45;
    struct stat st {};
    if (::fstat(fd, &st) != 0 || st.st_size != static_cast<off_t>(block * blocks)) return 46;
  }
  ::free(mem);
  return ::close(fd) == 0 ? 0 : 47;
}

// The names worker: in its own directory, creates, links, renames, lists and unlinks, checking
// that each listing shows exactly the names that must be there.
int names_worker(const std::string& dir, int rounds) {
  if (::mkdir(dir.c_str(), 0755) != 0) return 50;
  for (int round = 0; round < rounds; ++round) {
    const std::string a = dir + "/a" + std::to_string(round), b = dir + "/b" + std::to_string(round), c = dir + "/c";
    int fd = ::open(a.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644);
    if (fd < 0 || ::write(fd, "x", 1) != 1 || ::close(fd) != 0) return 51;
    if (::link(a.c_str(), c.c_str()) != 0) return 52;
    if (::rename(a.c_str(), b.c_str()) != 0) return 53;
    DIR* d = ::opendir(dir.c_str());
    if (!d) return 54;
    std::set<std::string> names;
    while (dirent* e = ::readdir(d)) names.insert(e->d_name);
    ::closedir(d);
    if (names != std::set<std::string>{".", "..", "b" + std::to_string(round), "c"}) return 55;
    struct stat st {};
    if (::stat(c.c_str(), &st) != 0 || st.st_nlink != 2) return 56;
    if (::unlink(b.c_str()) != 0 || ::unlink(c.c_str()) != 0) return 57;
  }
  return ::rmdir(dir.c_str()) == 0 ? 0 : 58;
}

void run_parallel(const std::string& transport) {
  INFO("memfs over " << transport);
  REQUIRE(::geteuid() == 0);
  if (transport == "ring") REQUIRE(uring_enabled());
  const unsigned cpus = std::thread::hardware_concurrency();
  if (cpus < 2) {
    WARN("one CPU: nothing runs at once here");
    return;
  }
  server s(runfile("examples/memfs/memfs"), {"--stats", "-o", "attr_timeout=0,entry_timeout=0", "--transport", transport});
  INFO("server log:\n" << s.log());
  REQUIRE(s.mounted());
  const std::string dir = s.dir();
  REQUIRE(in_client([&] {
            for (int r = 0; r < 2; ++r) {
              std::string data(block * blocks, '\0');
              for (std::size_t i = 0; i < data.size(); ++i) data[i] = pattern(r, i);
              int fd = ::open((dir + "/reader" + std::to_string(r)).c_str(), O_CREAT | O_WRONLY, 0644);
              if (fd < 0 || ::write(fd, data.data(), data.size()) != static_cast<ssize_t>(data.size()) || ::close(fd) != 0) return 1;
            }
            return 0;
          }) == 0);

  const auto before = transport == "ring" ? queue_requests(s) : std::map<int, std::uint64_t>{};
  constexpr int rounds = 40;
  std::vector<pid_t> clients;
  for (int r = 0; r < 2; ++r) {
    const std::string path = dir + "/reader" + std::to_string(r);
    clients.push_back(start_client([&, r] { return reader(path, r, static_cast<unsigned>(r), rounds); }, 120));
  }
  clients.push_back(start_client([&] { return names_worker(dir + "/names", 300); }, 120));
  for (pid_t pid : clients) {
    REQUIRE(pid > 0);
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    INFO("client " << pid);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }
  if (transport == "ring") {
    const auto after = queue_requests(s);
    // Each reader alone makes rounds x (blocks READs + a WRITE + a GETATTR) requests on its CPU.
    for (int q = 0; q < 2; ++q) {
      INFO("queue " << q << ": " << before.count(q) << " report(s) before, " << after.count(q) << " after");
      REQUIRE(after.count(q));
      const std::uint64_t served = after.at(q) - (before.count(q) ? before.at(q) : 0);
      INFO("queue " << q << " served " << served << " requests while the clients ran");
      CHECK(served >= static_cast<std::uint64_t>(rounds * blocks));
    }
  }
}

}  // namespace

TEST_CASE("memfs: clients on two CPUs are served by both queues at once; data and names stay right", "[mount][memfs][parallel]") {
  const std::string transport = GENERATE(as<std::string>{}, "ring", "dev");
  run_parallel(transport);
}
