// A FIFO that takes commands from outside the mount, one per line, on a thread of its own: the way
// to change a filesystem behind the kernel's back (and then tell the kernel, with notifications).
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>

class control_channel {
 public:
  // Creates the FIFO at `path` (mode 0600) unless one is there, and calls `on_line` for every
  // line written to it, on the channel's thread, until destroyed.
  control_channel(std::string path, std::function<void(std::string_view)> on_line) : path_(std::move(path)), on_line_(std::move(on_line)) {
    if (std::string why = prepare(path_); !why.empty()) throw std::runtime_error(why);
    // Read-write: the FIFO stays open with no writer, so poll does not report hang-ups in a loop.
    fd_ = ::open(path_.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd_ < 0) throw std::runtime_error("open " + path_ + ": " + std::strerror(errno));
    stop_ = ::eventfd(0, EFD_CLOEXEC);
    if (stop_ < 0) {
      ::close(fd_);
      throw std::runtime_error(std::string("eventfd: ") + std::strerror(errno));
    }
    thread_ = std::thread([this] { run(); });
  }
  // Makes sure a FIFO is at `path` (creating it, mode 0600); what is wrong otherwise, in one
  // line. A program checks this before it mounts, so a bad path never leaves a mount behind.
  static std::string prepare(const std::string& path) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0) {
      if (!S_ISFIFO(st.st_mode)) return "--control " + path + ": exists and is not a FIFO";
    } else if (::mkfifo(path.c_str(), 0600) != 0) {
      return "--control " + path + ": cannot create the FIFO: " + std::strerror(errno);
    }
    return {};
  }

  ~control_channel() {
    std::uint64_t one = 1;
    (void)!::write(stop_, &one, sizeof one);
    thread_.join();
    ::close(fd_);
    ::close(stop_);
  }
  control_channel(const control_channel&) = delete;
  control_channel& operator=(const control_channel&) = delete;

 private:
  void run() {
    std::string pending;
    char buf[4096];
    for (;;) {
      pollfd p[2] = {{fd_, POLLIN, 0}, {stop_, POLLIN, 0}};
      if (::poll(p, 2, -1) < 0) {
        if (errno == EINTR) continue;
        return;
      }
      if (p[1].revents) return;
      ssize_t n = ::read(fd_, buf, sizeof buf);
      if (n <= 0) continue;
      pending.append(buf, static_cast<std::size_t>(n));
      for (std::size_t nl; (nl = pending.find('\n')) != std::string::npos;) {
        std::string line = pending.substr(0, nl);
        pending.erase(0, nl + 1);
        if (!line.empty()) on_line_(line);
      }
      if (pending.size() > 65536) pending.clear();  // a line that long is not a command
    }
  }

  std::string path_;
  std::function<void(std::string_view)> on_line_;
  int fd_ = -1;
  int stop_ = -1;
  std::thread thread_;
};
