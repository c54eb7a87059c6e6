// A filesystem defined in a test, mounted on the host kernel: corofuse::session::serve() runs it in
// a forked child (so a test can give it handlers that block, fail or throw on purpose, and a hang
// or a crash stays in that child). The child writes its log to a file next to the mount point.
//
// Whatever happens, the guard ends only its own child (SIGKILL by pid), detaches the mount
// (umount2 MNT_DETACH, which never waits on the server), aborts the connection if the kernel still
// holds it, and removes the mount point it made.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>

#include "corofuse/session/options.hpp"
#include "corofuse/session/serve.hpp"
#include "tests/mount/server_harness.hpp"

namespace corofuse::testing {

class in_process_mount : public child_process {
 public:
  // Serves a default-constructed `Fs` with `o` (its mount point is filled in).
  template <typename Fs>
  static std::function<int(const corofuse::session::options&)> serving() {
    return [](const corofuse::session::options& o) {
      Fs fs;
      return corofuse::session::serve(fs, o);
    };
  }

  // Forks a child that runs `serve(o)` on a fresh temporary mount point (or on `at_dir`, which the
  // caller owns: to mount the same place again) and waits until the mount is there or the child
  // has ended. The child's exit status is serve's result, 97 when it threw.
  in_process_mount(std::function<int(const corofuse::session::options&)> serve, corofuse::session::options o,
                   const std::string& at_dir = {}) {
    if (at_dir.empty()) {
      char tmpl[] = "/tmp/corofuse-inproc-XXXXXX";
      if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
      dir_ = tmpl;
      own_dir_ = true;
    } else {
      dir_ = at_dir;
    }
    log_ = dir_ + ".log";
    o.mountpoint = dir_;
    const dev_t before = corofuse::session::mounted_device(dir_);
    const pid_t parent = ::getpid();
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      // A test process killed by its timeout must not leave a server behind.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(96);
      int fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      int rc = 1;
      try {
        rc = serve(o);
      } catch (...) {
        rc = 97;
      }
      ::_exit(rc);
    }
    // A new mount, not one already there (a test that mounts on a taken directory on purpose).
    for (int i = 0; i < 200 && !mounted_anew(dir_, before); ++i) {
      if (exited()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    dev_ = corofuse::session::mounted_device(dir_);
  }

  ~in_process_mount() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
    detach_and_abort(dir_);
    if (own_dir_) ::rmdir(dir_.c_str());
    ::unlink(log_.c_str());
  }
  in_process_mount(const in_process_mount&) = delete;
  in_process_mount& operator=(const in_process_mount&) = delete;

  const std::string& dir() const { return dir_; }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  bool mounted() const { return is_mounted(dir_); }
  // The connection's device, as mounted (it stays known after the mount is gone).
  dev_t device() const { return dev_; }
  std::string log() const { return read_file(log_); }

  // SIGTERM; true when the server exited within `seconds`.
  bool terminate(int seconds) {
    signal(SIGTERM);
    return wait_exit(seconds);
  }

 private:
  std::string dir_;
  std::string log_;
  bool own_dir_ = false;
  dev_t dev_ = 0;
};

}  // namespace corofuse::testing
