// Restart without unmount: passthrough hands its mount to a successor process (--handoff-socket,
// --take-over) while clients stream reads and writes through it. The clients see no error, their
// open files and a directory listing opened before survive, the data is right (through the mount
// and in the backing files), and the mount is the same one throughout. Both transports; root, on
// the host kernel.
#include <catch2/catch.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/mount/server_harness.hpp"

using corofuse::testing::is_mounted;
using corofuse::testing::read_file;
using corofuse::testing::runfile;
using corofuse::testing::start_client;

namespace {

const std::string passthrough_bin = runfile("examples/passthrough/passthrough");
const std::string memfs_bin = runfile("examples/memfs/memfs");

// One server process of the test (several share one mount point): its own log; SIGKILLed if the
// test ends with it still running.
class server_process : public corofuse::testing::child_process {
 public:
  server_process(const std::string& log, std::vector<std::string> argv) : log_(log) {
    pid_ = ::fork();
    if (pid_ == 0) {
      int fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      std::vector<char*> a;
      for (auto& s : argv) a.push_back(s.data());
      a.push_back(nullptr);
      ::execv(a[0], a.data());
      ::_exit(127);
    }
  }
  ~server_process() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    ::unlink(log_.c_str());
  }
  std::string log() const { return read_file(log_); }

 private:
  std::string log_;
};

// The directories of one test: backing tmpfs, mount point, socket; whatever happens, nothing stays
// mounted (detach, then abort this mount's own connection) and everything is removed.
class handoff_dirs {
 public:
  handoff_dirs() {
    char tmpl[] = "/tmp/corofuse-handoff-XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    base_ = tmpl;
    ::mkdir(src().c_str(), 0755);
    ::mkdir(mnt().c_str(), 0755);
    if (::mount("corofuse-handoff", src().c_str(), "tmpfs", 0, "size=256m") != 0) throw std::runtime_error("tmpfs mount failed");
  }
  ~handoff_dirs() {
    corofuse::testing::detach_and_abort(mnt());
    ::umount2(src().c_str(), MNT_DETACH);
    ::rmdir(src().c_str());
    ::rmdir(mnt().c_str());
    ::unlink(sock().c_str());
    ::rmdir(base_.c_str());
  }
  std::string src() const { return base_ + "/src"; }
  std::string mnt() const { return base_ + "/mnt"; }
  std::string sock() const { return base_ + "/handoff.sock"; }
  std::string log(const std::string& n) const { return base_ + "." + n + ".log"; }

 private:
  std::string base_;
};

bool wait_mounted(const std::string& dir, double seconds) {
  for (int i = 0; i < static_cast<int>(seconds * 50); ++i) {
    if (is_mounted(dir)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

// The bytes client `id` writes at `off` in round `round`.
char pattern(int id, std::uint64_t off, std::uint64_t round) {
  return static_cast<char>((off * 7 + round * 131 + id * 17 + off / 4096) & 0xff);
}

// A client that streams for `seconds`: random 64 KiB writes into its 4 MiB file through one
// descriptor opened at the start, random reads checked against what it wrote, small files made and
// removed, a listing walked; a second listing opened at the start is read only at the end. Any
// surprise is a message and exit status 1.
int stream(const std::string& dir, int id, double seconds) {
  constexpr std::size_t file_size = 4 << 20, block = 64 << 10;
  const std::string path = dir + "/stream-" + std::to_string(id);
  int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_RDWR, 0644);
  if (fd < 0) return std::fprintf(stderr, "client %d: open: %s\n", id, std::strerror(errno)), 1;
  DIR* early = ::opendir(dir.c_str());
  if (!early) return std::fprintf(stderr, "client %d: opendir: %s\n", id, std::strerror(errno)), 1;
  std::vector<char> model(file_size, 0), buf(block);
  if (::ftruncate(fd, file_size) != 0) return std::fprintf(stderr, "client %d: ftruncate: %s\n", id, std::strerror(errno)), 1;
  std::mt19937_64 rng(static_cast<std::uint64_t>(id) * 7919);
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  std::uint64_t round = 0;
  while (std::chrono::steady_clock::now() < until) {
    ++round;
    const std::uint64_t woff = (rng() % (file_size / block)) * block;
    for (std::size_t i = 0; i < block; ++i) buf[i] = pattern(id, woff + i, round);
    ssize_t n = ::pwrite(fd, buf.data(), block, static_cast<off_t>(woff));
    if (n != static_cast<ssize_t>(block))
      return std::fprintf(stderr, "client %d: pwrite round %llu: %zd %s\n", id, static_cast<unsigned long long>(round), n,
                          std::strerror(errno)),
             1;
    std::memcpy(model.data() + woff, buf.data(), block);
    const std::uint64_t roff = rng() % (file_size - block);
    n = ::pread(fd, buf.data(), block, static_cast<off_t>(roff));
    if (n != static_cast<ssize_t>(block))
      return std::fprintf(stderr, "client %d: pread round %llu: %zd %s\n", id, static_cast<unsigned long long>(round), n,
                          std::strerror(errno)),
             1;
    if (std::memcmp(buf.data(), model.data() + roff, block) != 0)
      return std::fprintf(stderr, "client %d: round %llu: read back other bytes at %llu\n", id, static_cast<unsigned long long>(round),
                          static_cast<unsigned long long>(roff)),
             1;
    if (round % 8 == 0) {
      const std::string tmp = dir + "/tmp-" + std::to_string(id) + "-" + std::to_string(round);
      int t = ::open(tmp.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0600);
      if (t < 0 || ::write(t, "x", 1) != 1 || ::close(t) != 0 || ::unlink(tmp.c_str()) != 0)
        return std::fprintf(stderr, "client %d: small file %s: %s\n", id, tmp.c_str(), std::strerror(errno)), 1;
      DIR* d = ::opendir(dir.c_str());
      if (!d) return std::fprintf(stderr, "client %d: opendir: %s\n", id, std::strerror(errno)), 1;
      bool seen = false;
      while (dirent* e = ::readdir(d)) seen |= path.substr(dir.size() + 1) == e->d_name;
      ::closedir(d);
      if (!seen) return std::fprintf(stderr, "client %d: its file is missing from the listing\n", id), 1;
    }
  }
  // Everything again, through the descriptor that lived through the handoffs.
  for (std::size_t off = 0; off < file_size; off += block) {
    if (::pread(fd, buf.data(), block, static_cast<off_t>(off)) != static_cast<ssize_t>(block) ||
        std::memcmp(buf.data(), model.data() + off, block) != 0)
      return std::fprintf(stderr, "client %d: final check at %zu: %s\n", id, off, std::strerror(errno)), 1;
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) return std::fprintf(stderr, "client %d: fsync/close: %s\n", id, std::strerror(errno)), 1;
  errno = 0;
  bool found = false;
  while (dirent* e = ::readdir(early)) found |= path.substr(dir.size() + 1) == e->d_name;
  if (errno != 0 || !found) return std::fprintf(stderr, "client %d: the early listing failed: %s\n", id, std::strerror(errno)), 1;
  ::closedir(early);
  std::fprintf(stderr, "client %d: %llu rounds\n", id, static_cast<unsigned long long>(round));
  return 0;
}

int exit_status(pid_t pid) {
  int st = 0;
  if (::waitpid(pid, &st, 0) != pid) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

bool same_bytes(const std::string& a, const std::string& b) {
  const std::string x = read_file(a), y = read_file(b);
  return !x.empty() && x == y;
}

}  // namespace

TEST_CASE("passthrough handed over twice while two clients stream: no client error, open files survive, data right", "[mount][handoff]") {
  REQUIRE(::geteuid() == 0);
  const std::string transport = GENERATE(as<std::string>{}, "ring", "dev");
  INFO("transport " << transport);
  if (transport == "ring") REQUIRE(corofuse::testing::uring_enabled());
  handoff_dirs d;
  auto args = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = {passthrough_bin, d.src(), d.mnt(), "--transport", transport, "--handoff-socket", d.sock()};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  server_process first(d.log("first"), args({}));
  REQUIRE(wait_mounted(d.mnt(), 10));
  const dev_t dev = corofuse::session::mounted_device(d.mnt());
  INFO("first server:\n" << first.log());

  std::vector<pid_t> clients;
  for (int id = 0; id < 2; ++id) clients.push_back(start_client([&, id] { return stream(d.mnt(), id, 8.0); }, 90));
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));

  server_process second(d.log("second"), args({"--take-over", d.sock()}));
  CHECK(first.wait_exit(20));
  CHECK(first.exit_status() == 0);
  INFO("second server:\n" << second.log());
  std::this_thread::sleep_for(std::chrono::milliseconds(2000));
  server_process third(d.log("third"), args({"--take-over", d.sock()}));
  CHECK(second.wait_exit(20));
  CHECK(second.exit_status() == 0);
  INFO("third server:\n" << third.log());

  for (pid_t c : clients) CHECK(exit_status(c) == 0);
  // What the ring entries held at each freeze (requests and replies in flight are the hard case).
  for (const std::string& log : {first.log(), second.log()}) {
    auto at = log.find("handed the mount over");
    if (at != std::string::npos) WARN(transport << ": " << log.substr(at, log.find('\n', at) - at));
  }
  CHECK(corofuse::session::mounted_device(d.mnt()) == dev);  // the same mount, never remounted
  CHECK(first.log().find("handed the mount over") != std::string::npos);
  CHECK(second.log().find("took the mount") != std::string::npos);
  CHECK(second.log().find("handed the mount over") != std::string::npos);
  CHECK(third.log().find("took the mount") != std::string::npos);
  for (int id = 0; id < 2; ++id) {
    const std::string n = "/stream-" + std::to_string(id);
    CHECK(same_bytes(d.mnt() + n, d.src() + n));
  }
  // The last one serves on, and stops as any server does.
  third.signal(SIGTERM);
  CHECK(third.wait_exit(20));
  CHECK(third.exit_status() == 0);
  CHECK_FALSE(is_mounted(d.mnt()));
}

TEST_CASE("a takeover that cannot happen says why in one line and leaves the running server serving", "[mount][handoff]") {
  REQUIRE(::geteuid() == 0);
  handoff_dirs d;
  server_process first(d.log("first"), {passthrough_bin, d.src(), d.mnt(), "--handoff-socket", d.sock()});
  REQUIRE(wait_mounted(d.mnt(), 10));
  INFO("first server:\n" << first.log());
  auto run = [&](const std::string& cmd, std::string& out) {
    const std::string log = d.log("cli");
    int rc = std::system(("timeout -k 5 30 " + cmd + " > " + log + " 2>&1").c_str());
    out = read_file(log);
    ::unlink(log.c_str());
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  };
  std::string out;
  // Nobody listens there.
  CHECK(run(passthrough_bin + " " + d.src() + " " + d.mnt() + " --take-over " + d.sock() + ".none", out) == 1);
  CHECK(out.find("--take-over") != std::string::npos);
  CHECK(std::count(out.begin(), out.end(), '\n') == 1);
  // memfs keeps its files in memory and cannot hand them over: refused before anything happens.
  CHECK(run(memfs_bin + " " + d.mnt() + " --take-over " + d.sock(), out) == 2);
  CHECK(out.find("cannot hand its state") != std::string::npos);
  CHECK(run(memfs_bin + " /tmp --handoff-socket " + d.sock() + ".memfs", out) == 2);
  CHECK(std::count(out.begin(), out.end(), '\n') == 1);
  // A successor that fails after the freeze: it cannot receive the state's descriptors (a client
  // holds 64 files open; the successor may open 32). The first server takes everything back, the
  // client holding the files open through all of it sees nothing, and the log says why.
  pid_t holder = start_client(
      [&] {
        std::vector<int> fds;
        for (int i = 0; i < 64; ++i) {
          const std::string p = d.mnt() + "/held-" + std::to_string(i);
          int fd = ::open(p.c_str(), O_CREAT | O_RDWR, 0644);
          if (fd < 0 || ::pwrite(fd, p.data(), p.size(), 0) != static_cast<ssize_t>(p.size())) return 1;
          fds.push_back(fd);
        }
        std::this_thread::sleep_for(std::chrono::seconds(4));  // the failed takeover happens now
        for (int i = 0; i < 64; ++i) {
          const std::string p = d.mnt() + "/held-" + std::to_string(i);
          std::string back(p.size(), '\0');
          if (::pread(fds[i], back.data(), back.size(), 0) != static_cast<ssize_t>(p.size()) || back != p) return 2;
          if (::close(fds[i]) != 0) return 3;
        }
        return 0;
      },
      60);
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  CHECK(run("prlimit --nofile=32:32 " + passthrough_bin + " " + d.src() + " " + d.mnt() + " --take-over " + d.sock(), out) == 1);
  CHECK(out.find("--take-over") != std::string::npos);
  CHECK(out.find("RLIMIT_NOFILE") != std::string::npos);
  CHECK(std::count(out.begin(), out.end(), '\n') == 1);
  CHECK(exit_status(holder) == 0);
  CHECK(first.log().find("failed") != std::string::npos);  // "handoff to pid N failed (...): serving on"
  // The first server still serves, and still takes a real successor afterwards.
  CHECK(corofuse::testing::in_client([&] {
          int fd = ::open((d.mnt() + "/after").c_str(), O_CREAT | O_WRONLY, 0644);
          return fd >= 0 && ::write(fd, "ok", 2) == 2 && ::close(fd) == 0 ? 0 : 1;
        }) == 0);
  server_process second(d.log("second"), {passthrough_bin, d.src(), d.mnt(), "--take-over", d.sock()});
  CHECK(first.wait_exit(20));
  CHECK(first.exit_status() == 0);
  INFO("second server:\n" << second.log());
  CHECK(read_file(d.mnt() + "/after") == "ok");
  second.signal(SIGTERM);
  CHECK(second.wait_exit(20));
  CHECK(second.exit_status() == 0);
}

TEST_CASE("passthrough handed over between its inode schemes: descriptors to handles works, handles to descriptors is refused",
          "[mount][handoff]") {
  REQUIRE(::geteuid() == 0);
  handoff_dirs d;
  auto args = [&](const std::string& handles, std::vector<std::string> extra) {
    std::vector<std::string> a = {passthrough_bin, d.src(), d.mnt(), "--inode-handles", handles, "--handoff-socket", d.sock()};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  server_process first(d.log("first"), args("off", {}));
  REQUIRE(wait_mounted(d.mnt(), 10));
  INFO("first server:\n" << first.log());
  // A client keeps a file open and a node known (by an O_PATH descriptor) through every handover.
  int holder_pipe[2];
  REQUIRE(::pipe(holder_pipe) == 0);
  pid_t holder = start_client(
      [&] {
        ::close(holder_pipe[1]);
        const std::string f = d.mnt() + "/held", n = d.mnt() + "/known";
        int fd = ::open(f.c_str(), O_CREAT | O_RDWR, 0644);
        int known = ::open(n.c_str(), O_CREAT | O_WRONLY, 0644);
        if (fd < 0 || known < 0 || ::write(fd, "one", 3) != 3 || ::write(known, "known", 5) != 5 || ::close(known) != 0) return 1;
        known = ::open(n.c_str(), O_PATH);
        if (known < 0) return 2;
        char go;
        if (::read(holder_pipe[0], &go, 1) != 1) return 3;  // the handovers happen now
        if (::pwrite(fd, "two", 3, 3) != 3) return 4;
        char back[8] = {};
        if (::pread(fd, back, sizeof back, 0) != 6 || std::string(back, 6) != "onetwo") return 5;
        struct stat st {};
        if (::fstat(known, &st) != 0 || st.st_size != 5) return 6;
        return ::close(fd) == 0 && ::close(known) == 0 ? 0 : 7;
      },
      90);
  ::close(holder_pipe[0]);
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));

  // Descriptors per inode to file handles: each handed-over node keeps its descriptor.
  server_process second(d.log("second"), args("auto", {"--take-over", d.sock()}));
  CHECK(first.wait_exit(20));
  CHECK(first.exit_status() == 0);
  INFO("second server:\n" << second.log());
  CHECK(second.log().find("took the mount") != std::string::npos);
  // Back to descriptors: nodes recorded as handles cannot be served without them (a state this
  // server cannot take); the second serves on.
  CHECK(corofuse::testing::in_client([&] { return ::open((d.mnt() + "/new").c_str(), O_CREAT | O_WRONLY, 0644) >= 0 ? 0 : 1; }) == 0);
  const std::string log = d.log("cli");
  int rc = std::system(("timeout -k 5 30 " + passthrough_bin + " " + d.src() + " " + d.mnt() + " --inode-handles off --take-over " +
                        d.sock() + " > " + log + " 2>&1")
                           .c_str());
  const std::string out = read_file(log);
  ::unlink(log.c_str());
  INFO("third server:\n" << out);
  CHECK(WIFEXITED(rc));
  CHECK(WEXITSTATUS(rc) == 1);
  CHECK(out.find("file handles") != std::string::npos);
  CHECK(second.log().find("failed") != std::string::npos);

  CHECK(::write(holder_pipe[1], "g", 1) == 1);
  ::close(holder_pipe[1]);
  CHECK(exit_status(holder) == 0);
  CHECK(read_file(d.src() + "/held") == "onetwo");
  CHECK(read_file(d.mnt() + "/known") == "known");
  second.signal(SIGTERM);
  CHECK(second.wait_exit(20));
  CHECK(second.exit_status() == 0);
  CHECK_FALSE(is_mounted(d.mnt()));
}
