// Running an example server for a mount test, safely.
//
// The server runs as a child process on a fresh temporary mount point. Every client operation
// runs in another child with an alarm, so a broken server fails the test instead of hanging it.
// Whatever happens, the guard stops the server it started (its own PID only), detaches the mount,
// aborts the connection if the kernel still holds it, and removes the mount point.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <algorithm>
#include <vector>

#include "corofuse/session/mount.hpp"

namespace corofuse::testing {

// The example binary's path inside the test's runfiles.
inline std::string runfile(const std::string& path) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* ws = std::getenv("TEST_WORKSPACE");
  return std::string(srcdir ? srcdir : ".") + "/" + (ws ? ws : "corofuse") + "/" + path;
}

inline bool is_mounted(const std::string& dir) { return corofuse::session::mounted_device(dir) != 0; }

// True when `dir` holds a mount other than `before` (the device that was there, or 0).
inline bool mounted_anew(const std::string& dir, dev_t before) {
  const dev_t now = corofuse::session::mounted_device(dir);
  return now != 0 && now != before;
}

inline std::string read_file(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// FUSE-over-io_uring is switched on (tools/setup writes Y to the module parameter).
inline bool uring_enabled() { return read_file("/sys/module/fuse/parameters/enable_uring").rfind("Y", 0) == 0; }

// The last `n` characters of a (server) log: enough to read in a failure message.
inline std::string tail(const std::string& s, std::size_t n = 6000) { return s.size() <= n ? s : "..." + s.substr(s.size() - n); }

// A debug server prints its per-opcode counters at exit, one line each: "counter OP dev=N ring=N".
// The line of `op` (empty when absent), a key's value in it (0 when absent), and both summed.
inline std::string counter_line(const std::string& log, const std::string& op) {
  auto at = log.find("counter " + op + " ");
  if (at == std::string::npos) return {};
  return log.substr(at, log.find('\n', at) - at);
}
inline std::uint64_t counter_value(const std::string& line, const std::string& key) {
  auto at = line.find(key + "=");
  return at == std::string::npos ? 0 : std::stoull(line.substr(at + key.size() + 1));
}
inline std::uint64_t requests(const std::string& log, const std::string& op) {
  auto line = counter_line(log, op);
  return counter_value(line, "dev") + counter_value(line, "ring");
}

// Starts `fn` in a child process with an alarm of `seconds`; the child's exit status is fn's
// result (98 when it threw). Returns the child's pid, or -1.
inline pid_t start_client(const std::function<int()>& fn, int seconds) {
  pid_t pid = ::fork();
  if (pid == 0) {
    ::alarm(static_cast<unsigned>(seconds));
    int rc = 99;
    try {
      rc = fn();
    } catch (...) {
      rc = 98;
    }
    ::_exit(rc);
  }
  return pid;
}

// Runs `fn` in a child process with a 20 s alarm; returns its exit status (or 128+signal).
inline int in_client(const std::function<int()>& fn, int seconds = 20) {
  pid_t pid = start_client(fn, seconds);
  if (pid < 0) return -1;
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// The client children a test started: each reaped once; any still running at the end (a failed
// test) is killed by its own pid.
class clients {
 public:
  clients() = default;
  clients(const clients&) = delete;
  clients& operator=(const clients&) = delete;
  ~clients() {
    for (pid_t p : running_) {
      ::kill(p, SIGKILL);
      ::waitpid(p, nullptr, 0);
    }
  }
  void add(pid_t p) {
    if (p > 0) running_.push_back(p);
  }
  const std::vector<pid_t>& running() const { return running_; }
  // Waits for the client (its alarm bounds the wait): its exit status, or 128 + signal.
  int wait(pid_t p) {
    int status = 0;
    ::waitpid(p, &status, 0);
    running_.erase(std::remove(running_.begin(), running_.end(), p), running_.end());
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  // Waits for every client: their exit statuses, in the order they were added.
  std::vector<int> wait_all() {
    std::vector<int> out;
    while (!running_.empty()) out.push_back(wait(running_.front()));
    return out;
  }

 private:
  std::vector<pid_t> running_;
};

// Runs a shell command as a client (with a timeout); returns its exit status.
inline int sh(const std::string& cmd, int seconds = 60) {
  return in_client([&] { return std::system(("timeout -k 5 " + std::to_string(seconds) + " sh -c '" + cmd + "'").c_str()) >> 8; },
                   seconds + 10);
}

// A child process a test started: waited for without blocking, signalled by its own pid only.
class child_process {
 public:
  pid_t pid() const { return pid_; }
  // True once the child has ended (its status is then in exit_status()).
  bool exited() {
    if (pid_ <= 0) return true;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      status_ = status;
      pid_ = -1;
      return true;
    }
    return false;
  }
  bool wait_exit(int seconds) {
    for (int i = 0; i < seconds * 20; ++i) {
      if (exited()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return exited();
  }
  int exit_status() const { return WIFEXITED(status_) ? WEXITSTATUS(status_) : 128 + WTERMSIG(status_); }
  void signal(int sig) {
    if (pid_ > 0) ::kill(pid_, sig);
  }

 protected:
  pid_t pid_ = -1;
  int status_ = 0;
};

// Detaches whatever is mounted on `dir` now and aborts that mount's own connection (the device is
// read before the detach: a device number remembered from earlier may belong to another mount by
// now, and aborting it would cut someone else's connection).
inline void detach_and_abort(const std::string& dir) {
  const dev_t dev = corofuse::session::mounted_device(dir);
  if (dev == 0) return;
  ::umount2(dir.c_str(), MNT_DETACH);
  corofuse::session::abort_connection(dev);
}

// Names a mount point the caller owns (and removes): a server mounts there instead of on a fresh
// temporary directory of its own, so that a test can mount the same place again.
struct existing_dir {
  std::string path;
};

class server : public child_process {
 public:
  // Starts `binary MOUNTPOINT args...` and waits until the mount is there (or the server died).
  // `as_user` (a uid, with its primary gid `as_group`) runs it without root, through setpriv: the
  // mount point is then that user's. `leading` arguments go before the mount point (passthrough's
  // SOURCE).
  server(const std::string& binary, std::vector<std::string> args, int as_user = -1, int as_group = -1,
         std::vector<std::string> leading = {}) {
    char tmpl[] = "/tmp/corofuse-mnt-XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    own_dir_ = true;
    start(binary, std::move(args), as_user, as_group, std::move(leading));
  }
  // The same on `at.path`, which stays when the server is gone.
  server(const existing_dir& at, const std::string& binary, std::vector<std::string> args) {
    dir_ = at.path;
    start(binary, std::move(args), -1, -1, {});
  }

  ~server() { stop_and_clean(); }
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  const std::string& dir() const { return dir_; }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  bool mounted() const { return is_mounted(dir_); }
  std::string log() const { return read_file(log_); }
  dev_t device() const { return corofuse::session::mounted_device(dir_); }

  void stop_and_clean() {
    if (pid_ > 0) {
      signal(SIGTERM);
      if (!wait_exit(10)) {
        signal(SIGKILL);
        wait_exit(10);
      }
    }
    if (!dir_.empty()) detach_and_abort(dir_);
    if (own_dir_ && !dir_.empty()) ::rmdir(dir_.c_str());
    if (!log_.empty()) ::unlink(log_.c_str());
    dir_.clear();
    log_.clear();
  }

 private:
  void start(const std::string& binary, std::vector<std::string> args, int as_user, int as_group, std::vector<std::string> leading) {
    log_ = dir_ + ".log";
    std::vector<std::string> argv_s;
    if (as_user >= 0) {
      if (::chown(dir_.c_str(), static_cast<uid_t>(as_user), static_cast<gid_t>(as_group)) != 0)
        throw std::runtime_error("chown of the mount point failed");
      argv_s = {"/usr/bin/setpriv", "--reuid=" + std::to_string(as_user), "--regid=" + std::to_string(as_group), "--clear-groups"};
    }
    argv_s.push_back(binary);
    argv_s.insert(argv_s.end(), leading.begin(), leading.end());
    argv_s.push_back(dir_);
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    const dev_t before = corofuse::session::mounted_device(dir_);
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      int fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      std::vector<char*> argv;
      for (auto& s : argv_s) argv.push_back(s.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    // A new mount, not one already there (a test that mounts on a taken directory on purpose).
    for (int i = 0; i < 200 && !mounted_anew(dir_, before); ++i) {
      if (exited()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }

  std::string dir_;
  std::string log_;
  bool own_dir_ = false;
};

}  // namespace corofuse::testing
