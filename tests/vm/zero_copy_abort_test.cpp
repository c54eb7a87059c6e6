// In the VM (Linux 7.3, root): a connection aborted while a zero-copy READ is being served must not
// let the server's data reach the client's buffer afterwards.
//
// Linux 7.3 leaves an aborted zero-copy READ's slot registered (docs/kernel.md, "Kernel caveats"):
// a READ_FIXED the server issues on that slot after the abort still writes into the client's
// pages, after the client's read(2) has returned. The framework must not issue it
// (context::read_fixed refuses once the connection is known lost) and must cancel those already in
// flight.
//
// A tiny filesystem: /f, a 1 MiB regular file opened for zero-copy (open_reply.zero_copy), served
// over --transport pool with zero-copy queues, depth 1 (--depth N: N entries a queue). Its READ
// handler, by --mode:
//   wait      (default) waits 2 s on the queue's ring, then ctx.read_fixed from a memfd of 'X'
//             (the READ_FIXED would be issued after the abort);
//   inflight  ctx.read_fixed from an empty pipe at once: the READ_FIXED is in flight at the abort,
//             and the pipe gets 64 KiB of 'P' 3 s after the READ arrived;
//   unguarded (the mutant: proves the test can fail) waits 2 s like `wait`, then issues the
//             READ_FIXED on the entry's slot (0 at depth 1) itself, bypassing ctx.read_fixed.
// The server runs in a child and mounts /tmp/za. A client child fills a 64 KiB page-aligned buffer
// with 'A', opens /f with O_DIRECT (the READ goes to the server at once, with the client's pages)
// and preads 64 KiB. 0.5 s after the handler has the READ, the parent aborts the connection
// (/sys/fs/fuse/connections/MINOR/abort). The pread must fail with ECONNABORTED or ENOTCONN; the
// client then sleeps 5 s (past the handler's wait and the pipe's data) and every byte of its buffer
// must still be 'A'. Then the server gets SIGTERM and must exit within 20 s (status reported), the
// log must show the READ was zero-copied, and nothing may be left mounted.
//
//   zero_copy_abort_test [--mode wait|inflight|unguarded] [--depth N]    exit 0: passed; 1: failed
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "corofuse/corofuse.hpp"
#include "corofuse/session/serve.hpp"

namespace cf = corofuse;

namespace {

constexpr const char* mountpoint = "/tmp/za";
constexpr std::size_t file_size = 1 << 20;
constexpr std::size_t client_size = 64 << 10;

enum class mode { wait, inflight, unguarded };

class abort_fs {
 public:
  static constexpr cf::ino file_ino = 2;

  abort_fs(mode m, int notify_fd) : mode_(m), notify_fd_(notify_fd) {
    data_fd_ = memfd_create("za", MFD_CLOEXEC);
    std::vector<char> x(file_size, 'X');
    if (data_fd_ < 0 || pwrite(data_fd_, x.data(), x.size(), 0) != static_cast<ssize_t>(x.size())) {
      std::perror("za: memfd");
      std::_Exit(3);
    }
    if (pipe2(pipe_, O_CLOEXEC) != 0) {
      std::perror("za: pipe");
      std::_Exit(3);
    }
  }

  cf::result<cf::entry> lookup(cf::context&, cf::ino parent, std::string_view name) {
    if (parent != cf::root_ino) return cf::error(ENOTDIR);
    if (name != "f") return cf::error(ENOENT);
    cf::entry e;
    e.ino = file_ino;
    e.attr = stat_of(file_ino);
    return e;
  }

  cf::result<cf::attr> getattr(cf::context&, cf::ino i, const cf::file_info*) {
    if (i != cf::root_ino && i != file_ino) return cf::error(ENOENT);
    return cf::attr{stat_of(i)};
  }

  cf::result<cf::open_reply> open(cf::context&, cf::ino i, int) {
    if (i != file_ino) return cf::error(EISDIR);
    cf::open_reply r;
    r.zero_copy = true;
    return r;
  }

  cf::task<cf::result<cf::read_reply>> read(cf::context& ctx, cf::ino i, cf::file_info&, std::span<std::byte> out, off_t off) {
    if (i != file_ino) co_return cf::error(EISDIR);
    std::fprintf(stderr, "za: READ of %zu bytes at %lld (mode %d)\n", out.size(), static_cast<long long>(off), static_cast<int>(mode_));
    char c = 'r';
    (void)!::write(notify_fd_, &c, 1);  // the parent aborts 0.5 s from now
    if (static_cast<std::size_t>(off) >= file_size) co_return cf::read_reply::bytes_copied(0);
    out = out.first(std::min(out.size(), file_size - static_cast<std::size_t>(off)));
    int n = 0;
    if (mode_ == mode::inflight) {
      std::thread([fd = pipe_[1]] {
        std::this_thread::sleep_for(std::chrono::seconds(3));
        std::vector<char> p(client_size, 'P');
        (void)!::write(fd, p.data(), p.size());
        std::fprintf(stderr, "za: wrote %zu bytes of 'P' into the pipe\n", p.size());
      }).detach();
      n = co_await ctx.read_fixed(pipe_[0], out.first(std::min(out.size(), client_size)), -1);
    } else {
      int t = co_await cf::io::timeout(ctx.ring(), std::chrono::seconds(2));
      std::fprintf(stderr, "za: the 2 s wait ended (%d)\n", t);
      if (mode_ == mode::wait) {
        n = co_await ctx.read_fixed(data_fd_, out, off);
      } else {
        // The mutant: the entry's zero-copy slot (0 at depth 1), address = offset 0 of the window,
        // without the context's check that the connection is still there.
        const unsigned len = static_cast<unsigned>(out.size());
        const int fd = data_fd_;
        n = co_await cf::io::detail::make(ctx.ring(), [=](io_uring_sqe* s) {
          io_uring_prep_read_fixed(s, fd, nullptr, len, static_cast<std::uint64_t>(off), 0);
        });
      }
    }
    std::fprintf(stderr, "za: the READ_FIXED gave %d\n", n);
    if (n < 0) co_return cf::error(-n);
    co_return cf::read_reply::bytes_copied(static_cast<std::size_t>(n));
  }

 private:
  struct stat stat_of(cf::ino i) const {
    struct stat st {};
    st.st_ino = i;
    st.st_blksize = 4096;
    if (i == cf::root_ino) {
      st.st_mode = S_IFDIR | 0755;
      st.st_nlink = 2;
    } else {
      st.st_mode = S_IFREG | 0644;
      st.st_nlink = 1;
      st.st_size = static_cast<off_t>(file_size);
      st.st_blocks = static_cast<blkcnt_t>(file_size / 512);
    }
    return st;
  }

  mode mode_;
  int notify_fd_;
  int data_fd_ = -1;
  int pipe_[2] = {-1, -1};
};

// The FUSE mount on `dir` from mountinfo (no stat of the mount point): its device minor (the
// connection's number in /sys/fs/fuse/connections), or -1.
int fuse_minor(const std::string& dir) {
  std::ifstream f("/proc/self/mountinfo");
  int minor = -1;
  for (std::string line; std::getline(f, line);) {
    std::istringstream in(line);
    std::string id, parent, dev, root, mnt;
    in >> id >> parent >> dev >> root >> mnt;
    if (mnt != dir) continue;
    auto dash = line.find(" - ");
    if (dash == std::string::npos || line.compare(dash + 3, 4, "fuse") != 0) continue;
    minor = std::atoi(dev.substr(dev.find(':') + 1).c_str());
  }
  return minor;
}

bool write_file(const std::string& path, const std::string& s) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = ::write(fd, s.data(), s.size()) == static_cast<ssize_t>(s.size());
  ::close(fd);
  return ok;
}

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Waits up to `seconds` for `pid`; its wait status, or -1 when it is still running.
int wait_for(pid_t pid, double seconds) {
  auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0) return -2;
    if (std::chrono::steady_clock::now() >= end) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

std::string describe(int status) {
  if (status == -1) return "still running";
  if (status < 0) return "lost";
  if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("killed by ") + strsignal(WTERMSIG(status));
  return "status " + std::to_string(status);
}

// The client: exit 0 when the pread failed as it should and the buffer stayed 'A'; 10+ otherwise.
int client() {
  void* mem = nullptr;
  if (posix_memalign(&mem, 4096, client_size) != 0) return 10;
  auto* buf = static_cast<unsigned char*>(mem);
  std::memset(buf, 'A', client_size);
  int fd = ::open((std::string(mountpoint) + "/f").c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
  if (fd < 0) {
    std::printf("client: open: %s\n", std::strerror(errno));
    return 11;
  }
  ssize_t n = ::pread(fd, buf, client_size, 0);
  int err = errno;
  std::printf("client: pread returned %zd (%s)\n", n, n < 0 ? std::strerror(err) : "no error");
  int rc = 0;
  if (n >= 0 || (err != ECONNABORTED && err != ENOTCONN)) {
    std::printf("client: FAIL: the pread should fail with ECONNABORTED or ENOTCONN\n");
    rc = 12;
  }
  ::close(fd);
  std::fflush(stdout);
  std::this_thread::sleep_for(std::chrono::seconds(5));  // past the handler's wait and the pipe's data
  std::size_t changed = 0, first = client_size;
  for (std::size_t i = 0; i < client_size; ++i)
    if (buf[i] != 'A') {
      if (!changed) first = i;
      ++changed;
    }
  if (changed) {
    std::printf("client: FAIL: %zu of %zu bytes of the buffer changed after the pread returned (first at %zu: '%c')\n", changed,
                client_size, first, buf[first]);
    return 13;
  }
  std::printf("client: the buffer is still all 'A' 5 s after the pread returned\n");
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  mode m = mode::wait;
  unsigned depth = 1;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--mode" && i + 1 < argc) {
      std::string v = argv[++i];
      if (v == "wait") m = mode::wait;
      else if (v == "inflight") m = mode::inflight;
      else if (v == "unguarded") m = mode::unguarded;
      else return std::fprintf(stderr, "unknown mode %s\n", v.c_str()), 2;
    } else if (a == "--depth" && i + 1 < argc) {
      depth = static_cast<unsigned>(std::atoi(argv[++i]));
      if (depth < 1 || depth > 64) return std::fprintf(stderr, "--depth 1..64\n"), 2;
    } else {
      return std::fprintf(stderr, "usage: %s [--mode wait|inflight|unguarded] [--depth N]\n", argv[0]), 2;
    }
  }
  if (m == mode::unguarded && depth != 1) return std::fprintf(stderr, "--mode unguarded needs --depth 1 (it uses slot 0)\n"), 2;
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  const char* mode_name = m == mode::wait ? "wait" : m == mode::inflight ? "inflight" : "unguarded";
  std::printf("zero_copy_abort_test: mode %s, depth %u\n", mode_name, depth);
  ::mkdir(mountpoint, 0755);
  const std::string log_path = std::string("/tmp/za-server-") + mode_name + ".log";

  int notify[2];
  if (pipe2(notify, O_CLOEXEC) != 0) return std::perror("pipe"), 1;
  pid_t server = ::fork();
  if (server == 0) {
    int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    ::close(notify[0]);
    ::alarm(120);  // never outlive the test
    abort_fs fs(m, notify[1]);
    cf::session::options o;
    o.mountpoint = mountpoint;
    o.transport = cf::session::transport_choice::pool;
    o.zero_copy = true;
    o.depth = depth;
    o.debug = true;
    // The default shutdown grace (5 s): the pipe's data (3 s after the READ) comes before the
    // shutdown, so only a cancel at the abort itself keeps it out of the client's pages.
    o.mount.subtype = "za";
    std::_Exit(cf::session::serve(fs, o));
  }
  ::close(notify[1]);

  bool ok = true;
  auto fail = [&](const std::string& why) {
    std::printf("zero_copy_abort_test: FAIL: %s\n", why.c_str());
    ok = false;
  };
  pid_t cl = -1;
  int minor = -1;
  // The mount, and the ring's start line (the client's requests must go over the pool queues).
  for (int i = 0; i < 600 && (minor = fuse_minor(mountpoint)) < 0; ++i) {
    if (wait_for(server, 0) >= 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  for (int i = 0; minor >= 0 && i < 600 && slurp(log_path).find("serving over FUSE-over-io_uring") == std::string::npos; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  std::string log = slurp(log_path);
  if (minor < 0) {
    fail("the server did not mount " + std::string(mountpoint));
  } else if (log.find("with buffer pools") == std::string::npos || log.find(" 0 zero-copy") != std::string::npos) {
    fail("the server does not serve over zero-copy pool queues");
  } else {
    std::printf("zero_copy_abort_test: mounted, connection %d\n", minor);
    cl = ::fork();
    if (cl == 0) {
      ::alarm(60);
      std::_Exit(client());
    }
    // The READ reaches the handler; 0.5 s later, the abort.
    pollfd p{notify[0], POLLIN, 0};
    if (::poll(&p, 1, 60000) != 1) {
      fail("no READ reached the handler within 60 s");
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      std::string abort_file = "/sys/fs/fuse/connections/" + std::to_string(minor) + "/abort";
      if (!write_file(abort_file, "1")) fail("cannot write " + abort_file + ": " + std::strerror(errno));
      else std::printf("zero_copy_abort_test: aborted connection %d\n", minor);
    }
    int st = wait_for(cl, 30);
    if (st == -1) {
      ::kill(cl, SIGKILL);
      st = wait_for(cl, 5);
    }
    if (!(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0)) fail("the client: " + describe(st));
  }

  // The server: SIGTERM (it may have ended by itself after the abort), then nothing mounted.
  int st = wait_for(server, 0);
  if (st == -1) {
    ::kill(server, SIGTERM);
    st = wait_for(server, 20);
  }
  if (st == -1) {
    fail("the server did not exit within 20 s of SIGTERM after the abort");
    ::kill(server, SIGKILL);
    st = wait_for(server, 5);
  }
  std::printf("zero_copy_abort_test: the server ended: %s\n", describe(st).c_str());
  if (!(st >= 0 && WIFEXITED(st))) fail("the server did not exit normally");
  if (fuse_minor(mountpoint) >= 0) {
    fail(std::string(mountpoint) + " is still mounted");
    ::umount2(mountpoint, MNT_DETACH);
  }
  log = slurp(log_path);
  if (log.find("counter ZERO_COPY") == std::string::npos) fail("the server zero-copied nothing (no 'counter ZERO_COPY')");
  std::printf("--- server log (%s)\n%s--- end of server log\n", log_path.c_str(), log.c_str());
  std::printf("zero_copy_abort_test: mode %s: %s\n", mode_name, ok ? "PASS" : "FAIL");
  return ok ? 0 : 1;
}
