// What the handoff tests share: server processes of one mount, the directories of a test (a backing
// tmpfs, the mount point, the socket; nothing stays mounted whatever happens), and streaming
// clients that check every byte they read back.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "tests/mount/server_harness.hpp"

namespace corofuse::testing::handoff {


// One server process of the test (several share one mount point): its own log; SIGKILLed if the
// test ends with it still running.
class server_process : public child_process {
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
  // Whether the log says `text` within `seconds`. A process writes what it noticed (a peer's death,
  // a finished handoff) a moment after the event the test waited for, later still under a
  // sanitizer: a log is polled, never read once.
  bool logged(const std::string& text, double seconds = 20) const {
    for (int i = 0; i < static_cast<int>(seconds * 20); ++i) {
      if (log().find(text) != std::string::npos) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return log().find(text) != std::string::npos;
  }

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
    detach_and_abort(mnt());
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

inline bool wait_mounted(const std::string& dir, double seconds) {
  for (int i = 0; i < static_cast<int>(seconds * 50); ++i) {
    if (is_mounted(dir)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

// The bytes client `id` writes at `off` in round `round`.
inline char pattern(int id, std::uint64_t off, std::uint64_t round) {
  return static_cast<char>((off * 7 + round * 131 + id * 17 + off / 4096) & 0xff);
}

// A client that streams for `seconds`: random 64 KiB writes into its 4 MiB file through one
// descriptor opened at the start, random reads checked against what it wrote, small files made and
// removed, a listing walked; a second listing opened at the start is read only at the end. Any
// surprise is a message and exit status 1.
inline int stream(const std::string& dir, int id, double seconds) {
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

inline int exit_status(pid_t pid) {
  int st = 0;
  if (::waitpid(pid, &st, 0) != pid) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

inline bool same_bytes(const std::string& a, const std::string& b) {
  const std::string x = read_file(a), y = read_file(b);
  return !x.empty() && x == y;
}


}  // namespace corofuse::testing::handoff
