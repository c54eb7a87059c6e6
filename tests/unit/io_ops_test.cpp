// Every awaitable operation against a real ring and real temporary files: results, side effects
// on the files, cancellation and links. Each test ends with nothing in flight and no stray CQE.
//
// Results are awaited into variables and checked afterwards, never `CHECK(co_await ...)`: Catch2
// repeats a CHECK's argument in unevaluated and short-circuited positions, and g++ 12 hoists the
// co_await out of those too, so the operation would run three times.
#include <catch2/catch.hpp>

#include "tests/unit/temp_file.hpp"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/stat.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "corofuse/io.hpp"

namespace io = corofuse::io;
using corofuse::testing::temp_file;
using namespace std::chrono_literals;

namespace {

std::string temp_root() {
  const char* dir = std::getenv("TEST_TMPDIR");
  return dir && *dir ? dir : "/tmp";
}

// A temporary file, removed again when the test ends.

// A temporary directory; the test removes what it creates inside.
struct temp_dir {
  std::string path;
  temp_dir() {
    path = temp_root() + "/corofuse-dir-XXXXXX";
    REQUIRE(::mkdtemp(path.data()) != nullptr);
  }
  temp_dir(const temp_dir&) = delete;
  ~temp_dir() { ::rmdir(path.c_str()); }
};

struct pipe_fds {
  int rd = -1, wr = -1;
  pipe_fds() {
    int p[2];
    REQUIRE(::pipe(p) == 0);
    rd = p[0];
    wr = p[1];
  }
  pipe_fds(const pipe_fds&) = delete;
  ~pipe_fds() {
    ::close(rd);
    ::close(wr);
  }
};

std::span<std::byte> bytes(std::vector<char>& v) { return std::as_writable_bytes(std::span(v)); }
std::span<const std::byte> bytes(const std::string& s) { return std::as_bytes(std::span(s.data(), s.size())); }

io::ring_options opts(unsigned entries = 32) {
  io::ring_options o;
  o.entries = entries;
  return o;
}

// Nothing left in flight, and no stray completion arrives later (a CQE for a record whose frame is
// gone would show up here, or would have pushed in_flight below zero, i.e. huge).
void check_quiet(io::ring& r) {
  CHECK(r.in_flight() == 0);
  CHECK(r.run_once(false) == 0);
}

}  // namespace

TEST_CASE("ops: nop", "[io][ops]") {
  io::ring r(opts());
  auto body = [&]() -> io::task<int> { co_return co_await io::nop(r); };
  CHECK(io::sync_wait(r, body()) == 0);
  check_quiet(r);
}

TEST_CASE("ops: timeout waits, then completes -ETIME", "[io][ops]") {
  io::ring r(opts());
  auto wait_for = [&](std::chrono::nanoseconds d) -> io::task<int> { co_return co_await io::timeout(r, d); };

  auto t0 = std::chrono::steady_clock::now();
  CHECK(io::sync_wait(r, wait_for(100ms)) == -ETIME);
  // Timers never fire early; the slack only absorbs clock granularity. No upper bound: noisy host.
  CHECK(std::chrono::steady_clock::now() - t0 >= 90ms);

  // Seconds and nanoseconds are split correctly (1 s + 50 ms, not 50 ms nor 1 s + 1.05 s).
  t0 = std::chrono::steady_clock::now();
  CHECK(io::sync_wait(r, wait_for(1050ms)) == -ETIME);
  CHECK(std::chrono::steady_clock::now() - t0 >= 1040ms);

  CHECK(io::sync_wait(r, wait_for(0ns)) == -ETIME);
  check_quiet(r);
}

TEST_CASE("ops: read and write", "[io][ops]") {
  io::ring r(opts());
  temp_file f;
  const std::string hello = "hello, world";
  std::vector<char> buf(64);
  int wrote = 0, wrote_far = 0, read_all = 0, read_far = 0, read_past = 0, read_bad = 0;
  std::string first, far;
  auto body = [&]() -> io::task<void> {
    wrote = co_await io::write(r, f.fd, bytes(hello), 0);
    wrote_far = co_await io::write(r, f.fd, bytes(std::string("XY")), 100);
    read_all = co_await io::read(r, f.fd, bytes(buf), 0);
    first.assign(buf.data(), hello.size());
    read_far = co_await io::read(r, f.fd, bytes(buf), 100);
    far.assign(buf.data(), 2);
    read_past = co_await io::read(r, f.fd, bytes(buf), 1000);
    read_bad = co_await io::read(r, -1, bytes(buf), 0);
  };
  io::sync_wait(r, body());
  CHECK(wrote == static_cast<int>(hello.size()));
  CHECK(wrote_far == 2);
  CHECK(read_all == 64);
  CHECK(first == hello);
  CHECK(read_far == 2);
  CHECK(far == "XY");
  CHECK(read_past == 0);  // past the end
  CHECK(read_bad == -EBADF);
  CHECK(f.st().st_size == 102);
  CHECK(f.contents().substr(0, hello.size()) == hello);
  check_quiet(r);
}

TEST_CASE("ops: readv and writev", "[io][ops]") {
  io::ring r(opts());
  temp_file f;
  std::string a = "abc", b = "defgh";
  const iovec out[2] = {{a.data(), a.size()}, {b.data(), b.size()}};
  char x[2], y[6];
  const iovec in[2] = {{x, sizeof x}, {y, sizeof y}};
  int wrote = 0, got = 0;
  auto body = [&]() -> io::task<void> {
    wrote = co_await io::writev(r, f.fd, out, 5);
    got = co_await io::readv(r, f.fd, in, 5);
  };
  io::sync_wait(r, body());
  CHECK(wrote == 8);
  CHECK(got == 8);
  CHECK(std::string(x, 2) == "ab");
  CHECK(std::string(y, 6) == "cdefgh");
  CHECK(f.contents() == std::string(5, '\0') + "abcdefgh");
  check_quiet(r);
}

TEST_CASE("ops: read_fixed and write_fixed on registered buffers", "[io][ops]") {
  io::ring r(opts());
  temp_file f;
  std::vector<char> a(4096, 'a'), b(4096);
  const iovec iov[2] = {{a.data(), a.size()}, {b.data(), b.size()}};
  r.register_buffers(iov);
  std::memcpy(a.data() + 300, "fixed!", 6);
  int wrote = 0, got = 0;
  auto body = [&]() -> io::task<void> {
    // From an offset inside buffer 0 to file offset 7.
    wrote = co_await io::write_fixed(r, f.fd, a.data() + 300, 6, 7, 0);
    // Into an offset inside buffer 1.
    got = co_await io::read_fixed(r, f.fd, b.data() + 2000, 6, 7, 1);
  };
  io::sync_wait(r, body());
  CHECK(wrote == 6);
  CHECK(got == 6);
  CHECK(f.contents() == std::string(7, '\0') + "fixed!");
  CHECK(std::string(b.data() + 2000, 6) == "fixed!");
  CHECK(b[1999] == 0);
  CHECK(b[2006] == 0);

  const int fds[1] = {f.fd};
  r.register_files(fds);
  auto fixed_both = [&]() -> io::task<int> { co_return co_await io::read_fixed(r, io::fixed_file(0), b.data(), 13, 0, 1); };
  CHECK(io::sync_wait(r, fixed_both()) == 13);
  CHECK(std::string(b.data() + 7, 6) == "fixed!");
  check_quiet(r);
}

TEST_CASE("ops: fsync and fdatasync", "[io][ops]") {
  io::ring r(opts());
  temp_file f;
  f.fill("dirty data");
  int plain = 1, data = 1, bad = 0;
  auto body = [&]() -> io::task<void> {
    plain = co_await io::fsync(r, f.fd);
    data = co_await io::fsync(r, f.fd, /*datasync=*/true);
    bad = co_await io::fsync(r, -1);
  };
  io::sync_wait(r, body());
  CHECK(plain == 0);
  CHECK(data == 0);
  CHECK(bad == -EBADF);
  check_quiet(r);
}

TEST_CASE("ops: fallocate", "[io][ops]") {
  io::ring r(opts());
  temp_file f;
  constexpr std::uint64_t mib = 1 << 20;
  auto body = [&](int mode, std::uint64_t off, std::uint64_t len) -> io::task<int> {
    co_return co_await io::fallocate(r, f.fd, mode, off, len);
  };
  CHECK(io::sync_wait(r, body(0, 0, mib)) == 0);
  struct stat s1 = f.st();
  CHECK(s1.st_size == static_cast<off_t>(mib));
  CHECK(s1.st_blocks * 512 >= static_cast<blkcnt_t>(mib));

  // KEEP_SIZE: blocks are reserved beyond the end, the size stays.
  CHECK(io::sync_wait(r, body(FALLOC_FL_KEEP_SIZE, mib, mib)) == 0);
  struct stat s2 = f.st();
  CHECK(s2.st_size == static_cast<off_t>(mib));
  CHECK(s2.st_blocks * 512 >= static_cast<blkcnt_t>(2 * mib));
  CHECK(s2.st_blocks > s1.st_blocks);

  CHECK(io::sync_wait(r, body(0, 0, 0)) == -EINVAL);  // zero length
  check_quiet(r);
}

TEST_CASE("ops: openat, close", "[io][ops]") {
  io::ring r(opts());
  temp_dir d;
  const std::string name = d.path + "/created";
  const int dfd = ::open(d.path.c_str(), O_DIRECTORY | O_RDONLY | O_CLOEXEC);
  REQUIRE(dfd >= 0);
  int fd = -1, wrote = 0, closed = 1, exclusive = 0, again = -1, closed_again = 1, missing = 0;
  auto body = [&]() -> io::task<void> {
    fd = co_await io::openat(r, AT_FDCWD, name.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0640);
    if (fd < 0) co_return;
    wrote = co_await io::write(r, fd, bytes(std::string("via openat")), 0);
    closed = co_await io::close(r, fd);
    // It exists now: O_EXCL refuses a second creation.
    exclusive = co_await io::openat(r, AT_FDCWD, name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0640);
    // Relative to a directory descriptor.
    again = co_await io::openat(r, dfd, "created", O_RDONLY | O_CLOEXEC);
    if (again >= 0) closed_again = co_await io::close(r, again);
    missing = co_await io::openat(r, dfd, "missing", O_RDONLY);
  };
  io::sync_wait(r, body());
  ::close(dfd);
  REQUIRE(fd >= 0);
  CHECK(wrote == 10);
  CHECK(closed == 0);
  CHECK(exclusive == -EEXIST);
  CHECK(again >= 0);
  CHECK(closed_again == 0);
  CHECK(missing == -ENOENT);
  struct stat st {};
  CHECK(::stat(name.c_str(), &st) == 0);
  CHECK(st.st_size == 10);
  CHECK((st.st_mode & 0777) == 0640);
  // The descriptors are really closed: fcntl on them fails (this test opened nothing since).
  CHECK(::fcntl(fd, F_GETFD) == -1);
  CHECK(::fcntl(again, F_GETFD) == -1);
  ::unlink(name.c_str());
  check_quiet(r);
}

TEST_CASE("ops: close of a bad descriptor", "[io][ops]") {
  io::ring r(opts());
  int closed = ::dup(0);
  REQUIRE(closed >= 0);
  ::close(closed);
  auto body = [&](int fd) -> io::task<int> { co_return co_await io::close(r, fd); };
  CHECK(io::sync_wait(r, body(-1)) == -EBADF);
  CHECK(io::sync_wait(r, body(closed)) == -EBADF);
  check_quiet(r);
}

TEST_CASE("ops: statx on a descriptor and by path", "[io][ops]") {
  io::ring r(opts());
  temp_file f;
  f.fill("twelve bytes");
  struct ::statx a {
  }, b{}, c{};
  int on_fd = 1, by_path = 1, missing = 0;
  const std::string missing_path = f.path + ".missing";
  auto body = [&]() -> io::task<void> {
    on_fd = co_await io::statx(r, f.fd, "", AT_EMPTY_PATH, STATX_SIZE | STATX_TYPE, &a);
    by_path = co_await io::statx(r, AT_FDCWD, f.path.c_str(), 0, STATX_SIZE | STATX_INO, &b);
    missing = co_await io::statx(r, AT_FDCWD, missing_path.c_str(), 0, STATX_SIZE, &c);
  };
  io::sync_wait(r, body());
  CHECK(on_fd == 0);
  CHECK(by_path == 0);
  CHECK(missing == -ENOENT);
  CHECK((a.stx_mask & STATX_SIZE) != 0);
  CHECK(a.stx_size == 12);
  CHECK(S_ISREG(a.stx_mode));
  CHECK(b.stx_size == 12);
  CHECK(b.stx_ino == f.st().st_ino);
  check_quiet(r);
}

TEST_CASE("ops: uring_cmd fills the SQE's command area", "[io][ops]") {
  io::ring r(opts());
  unsigned char cmd[80];
  for (unsigned i = 0; i < sizeof cmd; ++i) cmd[i] = static_cast<unsigned char>(i + 1);
  auto op = io::uring_cmd(r, io::fixed_file(3), 0x1234, cmd, sizeof cmd, 0xdead0000, 77, 5);
  // Prepare into a scratch SQE (no kernel involved) and look at what would be submitted.
  alignas(64) unsigned char area[128];
  std::memset(area, 0, sizeof area);
  auto* s = reinterpret_cast<io_uring_sqe*>(area);
  op.prepare(s);
  CHECK(s->opcode == IORING_OP_URING_CMD);
  CHECK(s->fd == 3);
  CHECK((s->flags & IOSQE_FIXED_FILE) != 0);
  CHECK(s->cmd_op == 0x1234);
  CHECK(s->addr == 0xdead0000);
  CHECK(s->len == 77);
  CHECK(s->uring_cmd_flags == IORING_URING_CMD_FIXED);
  CHECK(s->buf_index == 5);
  CHECK(std::memcmp(area + 48, cmd, sizeof cmd) == 0);  // the command area: bytes 48..127
  check_quiet(r);
}

TEST_CASE("ops: uring_cmd on files that do not support it", "[io][ops]") {
  io::ring r(opts());
  temp_file f;
  pipe_fds p;
  unsigned char cmd[80] = {1, 2, 3};
  auto body = [&](int fd, std::size_t len) -> io::task<int> { co_return co_await io::uring_cmd(r, fd, 0, cmd, len); };
  // A regular file and a pipe have no ->uring_cmd: the kernel refuses (-EOPNOTSUPP today).
  int on_file = io::sync_wait(r, body(f.fd, 80));
  int on_pipe = io::sync_wait(r, body(p.rd, 16));
  CAPTURE(on_file, on_pipe);
  CHECK(on_file < 0);
  CHECK(on_pipe < 0);
  // The ring survives.
  auto nop = [&]() -> io::task<int> { co_return co_await io::nop(r); };
  CHECK(io::sync_wait(r, nop()) == 0);

  // More than 80 bytes never fits an SQE.
  unsigned char big[81] = {};
  CHECK_THROWS_AS(io::uring_cmd(r, f.fd, 0, big, sizeof big), std::invalid_argument);
  check_quiet(r);
}

TEST_CASE("ops: uring_cmd on a 64-byte SQE ring holds 16 bytes", "[io][ops]") {
  io::ring_options o = opts(8);
  o.sqe128 = false;
  io::ring r(o);
  REQUIRE_FALSE(r.has_sqe128());
  temp_file f;
  unsigned char cmd[17] = {};
  CHECK_THROWS_AS(io::uring_cmd(r, f.fd, 0, cmd, 17), std::invalid_argument);
  // 16 bytes fit; the file still refuses the command, and the ring goes on.
  auto body = [&]() -> io::task<int> { co_return co_await io::uring_cmd(r, f.fd, 0, cmd, 16); };
  CHECK(io::sync_wait(r, body()) < 0);
  auto nop = [&]() -> io::task<int> { co_return co_await io::nop(r); };
  CHECK(io::sync_wait(r, nop()) == 0);
  check_quiet(r);
}

TEST_CASE("ops: cancel a pending timeout by op_id", "[io][ops][cancel]") {
  io::ring r(opts());
  io::op_id id;
  bool was_pending = false;
  auto sleeper = [&]() -> io::task<int> { co_return co_await io::timeout(r, 10s).track(id); };
  auto canceller = [&]() -> io::task<int> {
    // when_all started the sleeper first: its timeout is queued and named by `id`.
    was_pending = id.pending();
    co_return co_await io::cancel(r, id);
  };
  auto [slept, cancelled] = io::sync_wait(r, io::when_all(sleeper(), canceller()));
  CHECK(was_pending);
  CHECK(slept == -ECANCELED);
  CHECK(cancelled == 0);
  CHECK_FALSE(id.pending());  // cleared on completion
  check_quiet(r);
}

TEST_CASE("ops: cancel of an op_id that is not pending", "[io][ops][cancel]") {
  io::ring r(opts());
  io::op_id id;
  REQUIRE_FALSE(id.pending());
  // Decided without the kernel: the operation is ready at once.
  auto op = io::cancel(r, id);
  CHECK(op.is_immediate());
  CHECK(op.await_ready());

  // Awaited in a root: it finishes inside spawn, with no ring turn and nothing in flight.
  io::scope s;
  int res = 0;
  auto body = [&]() -> io::task<void> { res = co_await io::cancel(r, id); };
  s.spawn(body());
  CHECK(s.active() == 0);
  CHECK(res == -ENOENT);
  CHECK(r.in_flight() == 0);
  CHECK(io_uring_sq_ready(r.native()) == 0);

  // An op_id whose operation has completed is no longer pending.
  auto short_wait = [&]() -> io::task<int> {
    int t = co_await io::timeout(r, 1ms).track(id);
    int c = co_await io::cancel(r, id);
    co_return t == -ETIME ? c : -1000;
  };
  CHECK(io::sync_wait(r, short_wait()) == -ENOENT);
  check_quiet(r);
}

TEST_CASE("ops: cancel_fd cancels a read that never gets data", "[io][ops][cancel]") {
  io::ring r(opts());
  pipe_fds p;
  std::vector<char> buf(16);
  auto reader = [&]() -> io::task<int> { co_return co_await io::read(r, p.rd, bytes(buf), 0); };
  auto canceller = [&]() -> io::task<int> {
    int n = co_await io::cancel_fd(r, p.rd);
    // Had nothing been cancelled, unblock the reader so the test fails instead of hanging.
    if (n < 1) CHECK(::write(p.wr, "x", 1) == 1);
    co_return n;
  };
  auto [read_res, cancelled] = io::sync_wait(r, io::when_all(reader(), canceller()));
  CHECK(cancelled == 1);
  CHECK(read_res == -ECANCELED);
  check_quiet(r);
}

TEST_CASE("ops: cancel_fd with nothing to cancel reports 0 cancelled", "[io][ops][cancel]") {
  io::ring r(opts());
  pipe_fds p;
  // With IORING_ASYNC_CANCEL_ALL the kernel returns the number cancelled: 0 when nothing matched.
  auto none = [&]() -> io::task<int> { co_return co_await io::cancel_fd(r, p.rd); };
  CHECK(io::sync_wait(r, none()) == 0);
  check_quiet(r);
}

TEST_CASE("ops: link, both succeed", "[io][ops][link]") {
  io::ring r(opts());
  temp_file f;
  const std::string data = "linked write";
  std::vector<char> buf(data.size());
  const int n = static_cast<int>(data.size());
  auto body = [&](bool skip) -> io::task<io::link_result> {
    std::fill(buf.begin(), buf.end(), 0);
    // The read runs only after the write has completed, so it sees the data.
    co_return co_await io::link(io::write(r, f.fd, bytes(data), 0), io::read(r, f.fd, bytes(buf), 0), skip);
  };

  SECTION("skipping the first CQE") {
    io::link_result lr = io::sync_wait(r, body(true));
    CHECK_FALSE(lr.first_reported);
    CHECK(lr.second == n);
  }
  SECTION("both CQEs") {
    io::link_result lr = io::sync_wait(r, body(false));
    CHECK(lr.first_reported);
    CHECK(lr.first == n);
    CHECK(lr.second == n);
  }
  CHECK(std::string(buf.data(), buf.size()) == data);
  check_quiet(r);
}

TEST_CASE("ops: link, the first fails", "[io][ops][link]") {
  io::ring r(opts());
  std::vector<char> buf(16);
  const bool skip = GENERATE(true, false);
  CAPTURE(skip);
  auto body = [&]() -> io::task<io::link_result> { co_return co_await io::link(io::read(r, -1, bytes(buf), 0), io::nop(r), skip); };
  io::link_result lr = io::sync_wait(r, body());
  CHECK(lr.first_reported);
  CHECK(lr.first == -EBADF);
  CHECK(lr.second == -ECANCELED);
  check_quiet(r);
  // The ring goes on.
  auto nop = [&]() -> io::task<int> { co_return co_await io::nop(r); };
  CHECK(io::sync_wait(r, nop()) == 0);
  check_quiet(r);
}

TEST_CASE("ops: link, the second fails", "[io][ops][link]") {
  io::ring r(opts());
  std::vector<char> buf(16);
  const bool skip = GENERATE(true, false);
  CAPTURE(skip);
  auto body = [&]() -> io::task<io::link_result> { co_return co_await io::link(io::nop(r), io::read(r, -1, bytes(buf), 0), skip); };
  io::link_result lr = io::sync_wait(r, body());
  CHECK(lr.first_reported == !skip);
  CHECK(lr.first == 0);
  CHECK(lr.second == -EBADF);
  check_quiet(r);
}

TEST_CASE("ops: link with a timeout first", "[io][ops][link]") {
  // The timespec lives in the prepared lambda, which the link moved into itself: it must still
  // be there when the kernel reads it at submission. An expired timeout counts as a failure.
  io::ring r(opts());
  const bool skip = GENERATE(true, false);
  CAPTURE(skip);
  auto body = [&]() -> io::task<io::link_result> { co_return co_await io::link(io::timeout(r, 50ms), io::nop(r), skip); };
  const auto t0 = std::chrono::steady_clock::now();
  io::link_result lr = io::sync_wait(r, body());
  CHECK(std::chrono::steady_clock::now() - t0 >= 40ms);
  CHECK(lr.first_reported);
  CHECK(lr.first == -ETIME);
  CHECK(lr.second == -ECANCELED);
  check_quiet(r);
}

TEST_CASE("ops: link, a short read breaks the link", "[io][ops][link]") {
  io::ring r(opts());
  temp_file f;
  f.fill("ten bytes!");
  std::vector<char> buf(4096);
  const bool skip = GENERATE(true, false);
  CAPTURE(skip);
  auto body = [&]() -> io::task<io::link_result> { co_return co_await io::link(io::read(r, f.fd, bytes(buf), 0), io::nop(r), skip); };
  io::link_result lr = io::sync_wait(r, body());
  CHECK(lr.first_reported);
  CHECK(lr.first == 10);
  CHECK(lr.second == -ECANCELED);
  CHECK(std::string(buf.data(), 10) == "ten bytes!");
  check_quiet(r);
}

TEST_CASE("ops: many links in a row", "[io][ops][link]") {
  // Links of mixed outcomes back to back, on a small ring: the in-flight count must stay exact.
  io::ring r(opts(8));
  std::vector<char> buf(8);
  int wrong = 0;
  auto body = [&]() -> io::task<void> {
    for (int i = 0; i < 200; ++i) {
      const bool skip = i % 2 == 0;
      io::link_result ok = co_await io::link(io::nop(r), io::nop(r), skip);
      if (ok.second != 0 || ok.first_reported == skip) ++wrong;
      io::link_result bad = co_await io::link(io::read(r, -1, bytes(buf), 0), io::nop(r), skip);
      if (bad.first != -EBADF || bad.second != -ECANCELED || !bad.first_reported) ++wrong;
    }
  };
  io::sync_wait(r, body());
  CHECK(wrong == 0);
  check_quiet(r);
}

// A finished operation's record can be reused at the same address by the next frame of the same
// size (frames are recycled). A cancellation aimed at the finished one must not hit the new one:
// the stale id below carries the new record's address with the finished operation's generation,
// exactly what a reused frame produces (whether a given compiler reuses the frame or not).
TEST_CASE("ops: a stale op_id never cancels the operation that reused its address", "[io][ops][cancel]") {
  io::ring r(opts());
  auto body = [&]() -> io::task<std::vector<int>> {
    io::op_id first;
    int ra = co_await io::timeout(r, std::chrono::milliseconds(1)).track(first);
    (void)ra;
    io::op_id second;
    io::op_id stale;
    auto long_wait = [&]() -> io::task<int> {
      int res = co_await io::timeout(r, std::chrono::seconds(30)).track(second);
      co_return res;
    };
    auto cancel_both = [&]() -> io::task<std::vector<int>> {
      // While `second` is in flight: its address, the generation before its own.
      std::uint64_t gen = second.user_data >> io::ring::address_bits;
      std::uint64_t older_gen = gen > 1 ? gen - 1 : 0xffff;
      stale.user_data = (second.user_data & io::ring::address_mask) | (older_gen << io::ring::address_bits);
      int stale_res = co_await io::cancel(r, stale);
      int real_res = co_await io::cancel(r, second);
      co_return std::vector<int>{stale_res, real_res};
    };
    auto [rb, rc] = co_await io::when_all(long_wait(), cancel_both());
    co_return std::vector<int>{rb, rc[0], rc[1]};
  };
  std::vector<int> got = io::sync_wait(r, body());
  CHECK(got[1] == -ENOENT);     // the stale id is told apart by its tag
  CHECK(got[2] == 0);           // the real cancellation found its target
  CHECK(got[0] == -ECANCELED);  // the long timeout ended by the real cancellation
  check_quiet(r);
}
