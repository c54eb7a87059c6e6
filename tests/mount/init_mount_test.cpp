// A real mount on the host kernel: mount(2), the kernel's INIT read through io_uring from
// /dev/fuse, our negotiated reply, a client's stat answered, then a detach that ends the
// connection. Nothing is left behind even when a check fails: the guard detaches, aborts the
// connection through fusectl and stops the client it started.
#include <catch2/catch.hpp>

#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "corofuse/corofuse.hpp"

namespace abi = corofuse::abi;
namespace io = corofuse::io;
namespace proto = corofuse::proto;
namespace session = corofuse::session;

namespace {

struct test_mount {
  std::string dir;
  std::unique_ptr<session::fuse_mount> m;
  pid_t client = -1;

  test_mount() {
    char tmpl[] = "/tmp/corofuse-init-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    dir = tmpl;
    session::mount_options opt;
    opt.fsname = "corofuse-test";
    opt.subtype = "inittest";
    m = std::make_unique<session::fuse_mount>(dir, opt);
  }
  ~test_mount() {
    if (client > 0) {
      ::kill(client, SIGKILL);
    }
    if (m) {
      m->detach();
      m->abort();  // harmless when the connection already ended
    }
    if (client > 0) ::waitpid(client, nullptr, 0);
    m.reset();
    ::rmdir(dir.c_str());
  }
};

bool readable_within(int fd, int ms) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, ms) == 1;
}

// Reads one request through io_uring (after poll says one is there, so the read cannot hang).
int read_request(io::ring& r, int fd, std::vector<std::byte>& buf) {
  if (!readable_within(fd, 10000)) return -ETIMEDOUT;
  auto body = [&]() -> io::task<int> { co_return co_await io::read(r, fd, buf, 0); };
  return io::sync_wait(r, body());
}

int send_reply(int fd, std::uint64_t unique, int error, const void* arg, std::size_t len) {
  abi::out_header h{static_cast<std::uint32_t>(sizeof h + len), -error, unique};
  iovec iov[2] = {{&h, sizeof h}, {const_cast<void*>(arg), len}};
  ssize_t n = ::writev(fd, iov, len ? 2 : 1);
  return n < 0 ? -errno : static_cast<int>(n);
}

bool uring_enabled() {
  std::ifstream f("/sys/module/fuse/parameters/enable_uring");
  char c = 0;
  return f >> c && c == 'Y';
}

}  // namespace

TEST_CASE("mount, INIT over /dev/fuse, a stat answered, detach ends the connection", "[mount][init]") {
  REQUIRE(::geteuid() == 0);  // mount tests run as root (tools/test under sudo, CI as root)
  test_mount t;
  const int fd = t.m->fd();
  CHECK(t.m->device() != 0);  // found in mountinfo: the abort path works

  io::ring r;
  std::vector<std::byte> buf(1 << 20 | 4096);

  // INIT
  int n = read_request(r, fd, buf);
  REQUIRE(n > 0);
  proto::request req;
  REQUIRE(proto::parse_message(std::span(buf).first(static_cast<std::size_t>(n)), req) == proto::parse_error::none);
  REQUIRE(req.opcode() == abi::opcode::init);
  auto in = req.op<abi::init_in>();
  INFO("kernel FUSE " << in.major << "." << in.minor);
  CHECK(in.major == 7);
  CHECK(in.minor >= 36);

  // Served over /dev/fuse here: accepting over_io_uring without registering a ring entry on every
  // CPU's queue would block every client (docs/kernel.md, "The 7.42 ring"), so the offer is
  // checked, not taken.
  session::init_wishes w;
  w.flags = abi::init_flag::async_read;
  auto out = session::negotiate_init(in, w);
  REQUIRE(out.what == session::init_outcome::kind::agreed);
  if (in.minor >= abi::minor_with_io_uring && uring_enabled()) {
    // The kernel offers the ring only with enable_uring=Y (tools/setup sets it).
    CHECK(out.terms.offers(abi::init_flag::over_io_uring));
  }
  CHECK_FALSE(out.terms.has(abi::init_flag::over_io_uring));
  REQUIRE(send_reply(fd, req.unique(), 0, &out.reply, sizeof out.reply) == static_cast<int>(sizeof(abi::out_header) + sizeof out.reply));

  // A client stats the root; we answer GETATTR (and ENOSYS to anything else, e.g. STATX).
  t.client = ::fork();
  REQUIRE(t.client >= 0);
  if (t.client == 0) {
    struct stat st {};
    ::alarm(20);  // never outlive a broken server
    _exit(::stat(t.dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode) && st.st_ino == 1 ? 0 : 1);
  }
  int status = -1;
  int served_getattr = 0;
  for (int turns = 0; turns < 50; ++turns) {
    if (::waitpid(t.client, &status, WNOHANG) == t.client) {
      t.client = -1;
      break;
    }
    if (!readable_within(fd, 200)) continue;
    n = read_request(r, fd, buf);
    REQUIRE(n > 0);
    REQUIRE(proto::parse_message(std::span(buf).first(static_cast<std::size_t>(n)), req) == proto::parse_error::none);
    if (req.opcode() == abi::opcode::getattr && req.nodeid() == abi::root_id) {
      abi::attr_out a{};
      a.attr.ino = 1;
      a.attr.mode = S_IFDIR | 0755;
      a.attr.nlink = 2;
      send_reply(fd, req.unique(), 0, &a, sizeof a);
      ++served_getattr;
    } else if (!abi::opcode_has_no_reply(req.opcode())) {
      send_reply(fd, req.unique(), ENOSYS, nullptr, 0);
    }
  }
  REQUIRE(t.client == -1);  // the client finished
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(served_getattr >= 1);

  // Detach: no user holds the superblock, so the connection ends and reads fail with ENODEV.
  t.m->detach();
  CHECK_FALSE(t.m->mounted());
  REQUIRE(readable_within(fd, 10000));
  n = read_request(r, fd, buf);
  CHECK(n == -ENODEV);
}

TEST_CASE("mount errors name the cause", "[mount]") {
  REQUIRE(::geteuid() == 0);
  session::mount_options opt;
  try {
    session::fuse_mount m("/nonexistent/corofuse/mountpoint", opt);
    FAIL("mounted on a missing directory");
  } catch (const session::mount_error& e) {
    CHECK(e.code().value() == ENOENT);
    CHECK_THAT(std::string(e.what()), Catch::Contains("/nonexistent/corofuse/mountpoint"));
  }
  char tmpl[] = "/tmp/corofuse-file-XXXXXX";
  int f = ::mkstemp(tmpl);
  REQUIRE(f >= 0);
  ::close(f);
  try {
    session::fuse_mount m(tmpl, opt);
    FAIL("mounted on a regular file");
  } catch (const session::mount_error& e) {
    CHECK(e.code().value() == ENOTDIR);
    CHECK_THAT(std::string(e.what()), Catch::Contains("not a directory"));
  }
  ::unlink(tmpl);
}
