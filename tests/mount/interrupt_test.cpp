// INTERRUPT as cancellation, through a live mount on both transports.
//
// A small filesystem served in a forked child (this test's own, so its handlers can be slow on
// purpose):
//   /slow     READ waits 60 s on the queue's ring through ctx.track(): an INTERRUPT cancels the
//             wait, the handler returns ECANCELED, the client's read(2) fails with EINTR at once.
//   /forever  READ waits an hour on an operation it does NOT track: an INTERRUPT cannot reach it,
//             but SIGTERM must still end the server (the unmount, the grace period, the abort,
//             then every thread cancels what it has in flight).
//   /fast     READ answers at once: it still works after the interrupted ones (nothing leaked).
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>

#include "corofuse/corofuse.hpp"
#include "tests/mount/in_process_mount.hpp"

namespace cf = corofuse;
using corofuse::testing::is_mounted;
using corofuse::testing::uring_enabled;

namespace {

constexpr cf::ino slow_ino = 2, forever_ino = 3, fast_ino = 4;

class slow_fs {
 public:
  cf::result<cf::entry> lookup(cf::context&, cf::ino parent, std::string_view name) {
    if (parent != cf::root_ino) return cf::error(ENOTDIR);
    cf::entry e;
    if (name == "slow") e.ino = slow_ino;
    else if (name == "forever") e.ino = forever_ino;
    else if (name == "fast") e.ino = fast_ino;
    else return cf::error(ENOENT);
    e.attr = stat_of(e.ino);
    return e;
  }
  cf::result<cf::attr> getattr(cf::context&, cf::ino i, const cf::file_info*) {
    if (i < cf::root_ino || i > fast_ino) return cf::error(ENOENT);
    return cf::attr{stat_of(i)};
  }
  cf::result<cf::open_reply> open(cf::context&, cf::ino i, int) {
    if (i == cf::root_ino) return cf::error(EISDIR);
    cf::open_reply r;
    r.direct_io = true;  // every read(2) is a READ
    return r;
  }
  cf::task<cf::result<std::size_t>> read(cf::context& ctx, cf::ino i, cf::file_info&, std::span<std::byte> out, off_t off) {
    if (i == slow_ino) {
      int r = co_await ctx.track(cf::io::timeout(ctx.ring(), std::chrono::seconds(60)));
      if (r == -ECANCELED || ctx.interrupted()) co_return cf::error(ECANCELED);
    } else if (i == forever_ino) {
      (void)co_await cf::io::timeout(ctx.ring(), std::chrono::hours(1));  // not tracked
      co_return cf::error(EIO);
    }
    if (off >= 4096) co_return std::size_t{0};
    const std::size_t n = std::min<std::size_t>(out.size(), 4096 - static_cast<std::size_t>(off));
    std::memset(out.data(), 'f', n);
    co_return n;
  }

 private:
  static struct stat stat_of(cf::ino i) {
    struct stat st {};
    st.st_ino = i;
    st.st_nlink = i == cf::root_ino ? 2 : 1;
    st.st_mode = i == cf::root_ino ? (S_IFDIR | 0755) : (S_IFREG | 0644);
    st.st_size = i == cf::root_ino ? 0 : 4096;
    return st;
  }
};

// slow_fs served by a forked child (in_process_mount.hpp: the guard ends it and cleans up).
corofuse::testing::in_process_mount mount_slow_fs(cf::session::transport_choice t, std::uint16_t request_timeout = 0) {
  cf::session::options o;
  o.mount.fsname = "slowfs";
  o.transport = t;
  o.debug = true;
  o.shutdown_grace = 1;
  o.request_timeout = request_timeout;
  return corofuse::testing::in_process_mount(corofuse::testing::in_process_mount::serving<slow_fs>(), o);
}

void on_usr1(int) {}

// In a client child: read(2) of `path` with SIGUSR1 handled without SA_RESTART; the parent signals
// after `delay`. Exit status: 0 = EINTR within `limit` seconds, 1 = another result, 2 = too slow.
pid_t start_interrupted_read(const std::string& path, double limit) {
  return corofuse::testing::start_client(
      [&] {
        struct sigaction sa {};
        sa.sa_handler = on_usr1;
        ::sigaction(SIGUSR1, &sa, nullptr);  // no SA_RESTART: the read must end
        int fd = ::open(path.c_str(), O_RDONLY);
        if (fd < 0) return 3;
        char buf[4096];
        auto t0 = std::chrono::steady_clock::now();
        ssize_t n = ::read(fd, buf, sizeof buf);
        int e = errno;
        double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        ::close(fd);
        if (n >= 0 || e != EINTR) return 1;
        return took < limit ? 0 : 2;
      },
      90);
}

int wait_status(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

TEST_CASE("INTERRUPT cancels a slow handler's tracked operation: the client's read ends with EINTR at once", "[mount][interrupt]") {
  const auto t = GENERATE(cf::session::transport_choice::ring, cf::session::transport_choice::dev_fuse);
  REQUIRE(::geteuid() == 0);
  if (t == cf::session::transport_choice::ring) REQUIRE(uring_enabled());
  auto m = mount_slow_fs(t);
  INFO("server log:\n" << m.log());
  REQUIRE(is_mounted(m.dir()));

  for (int round = 0; round < 3; ++round) {  // more than once: nothing is left behind by the first
    pid_t client = start_interrupted_read(m.path("slow"), 10.0);
    REQUIRE(client > 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));  // the READ is in the handler by now
    ::kill(client, SIGUSR1);
    CHECK(wait_status(client) == 0);  // EINTR, well before the handler's 60 s
  }
  // The same server still answers.
  CHECK(corofuse::testing::in_client([&] {
          int fd = ::open(m.path("fast").c_str(), O_RDONLY);
          char buf[16];
          return fd >= 0 && ::read(fd, buf, sizeof buf) == 16 && buf[0] == 'f' ? 0 : 1;
        }) == 0);
  CHECK(m.terminate(20));
  CHECK(m.exit_status() == 0);
  CHECK_FALSE(is_mounted(m.dir()));
  const std::string log = m.log();
  INFO("server log at exit:\n" << log);
  CHECK(log.find("counter INTERRUPT dev=") != std::string::npos);  // the interrupts were received
}

TEST_CASE("A handler that never completes does not keep SIGTERM from ending the server", "[mount][interrupt]") {
  const auto t = GENERATE(cf::session::transport_choice::ring, cf::session::transport_choice::dev_fuse);
  REQUIRE(::geteuid() == 0);
  if (t == cf::session::transport_choice::ring) REQUIRE(uring_enabled());
  auto m = mount_slow_fs(t);
  INFO("server log:\n" << m.log());
  REQUIRE(is_mounted(m.dir()));
  // A client stuck in the never-ending READ (killed at the end; its read fails once the
  // connection is aborted).
  pid_t client = corofuse::testing::start_client(
      [&] {
        int fd = ::open(m.path("forever").c_str(), O_RDONLY);
        char buf[16];
        return fd >= 0 && ::read(fd, buf, sizeof buf) < 0 ? 0 : 1;
      },
      60);
  REQUIRE(client > 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(m.terminate(30));  // unmount, 1 s grace, abort, cancel everything in flight
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  INFO("the server took " << took << " s to exit; its log:\n" << m.log());
  CHECK(m.exit_status() == 0);
  CHECK_FALSE(is_mounted(m.dir()));
  CHECK(wait_status(client) == 0);  // the client's read failed (the connection was aborted)
}

TEST_CASE("-o request_timeout: the kernel gives up on a request that waits too long", "[mount][interrupt]") {
  const auto t = GENERATE(cf::session::transport_choice::ring, cf::session::transport_choice::dev_fuse);
  REQUIRE(::geteuid() == 0);
  if (t == cf::session::transport_choice::ring) REQUIRE(uring_enabled());
  auto m = mount_slow_fs(t, 2);
  INFO("server log:\n" << m.log());
  REQUIRE(is_mounted(m.dir()));
  const std::string log0 = m.log();
  if (log0.find("does not offer request timeouts") != std::string::npos) {
    WARN("this kernel has no FUSE request timeouts: not tested");
    return;
  }
  // The never-ending READ: the kernel aborts the connection after about 2 s (it checks
  // periodically), and the client's read fails instead of hanging.
  int rc = corofuse::testing::in_client(
      [&] {
        int fd = ::open(m.path("forever").c_str(), O_RDONLY);
        if (fd < 0) return 3;
        char buf[16];
        return ::read(fd, buf, sizeof buf) < 0 ? 0 : 1;  // the alarm (90 s) fails the test if it hangs
      },
      90);
  CHECK(rc == 0);
  CHECK(m.terminate(30));
  CHECK_FALSE(is_mounted(m.dir()));
}
