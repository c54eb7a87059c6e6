// io::ring: creation and its options, the SQE helpers, the loop's guard against waiting forever,
// more operations than the submission queue holds, and registered buffers and files.
//
// Never `CHECK(co_await ...)`: Catch2 repeats a CHECK's argument in unevaluated positions and
// g++ 12 hoists the await out of those too, running the operation three times.
#include <catch2/catch.hpp>

#include "tests/unit/temp_file.hpp"

#include <fcntl.h>
#include <liburing.h>
#include <stdlib.h>
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

io::ring_options with_entries(unsigned entries, unsigned cq_entries = 0) {
  io::ring_options o;
  o.entries = entries;
  o.cq_entries = cq_entries;
  return o;
}


std::span<std::byte> bytes(std::vector<char>& v) { return std::as_writable_bytes(std::span(v)); }
std::string str(const std::vector<char>& v, std::size_t n) { return std::string(v.data(), n); }

bool all_zero(const void* p, std::size_t n) {
  auto* b = static_cast<const unsigned char*>(p);
  for (std::size_t i = 0; i < n; ++i)
    if (b[i] != 0) return false;
  return true;
}

// Turns SQEs obtained by hand into nops that carry no completion record, submits them and reaps
// their CQEs (drain skips records-less CQEs): the ring is then as if they never were.
void flush_untracked(io::ring& r, io_uring_sqe* first, unsigned n) {
  for (unsigned i = 0; i < n; ++i) {
    io_uring_sqe* s = r.next_sqe(first, i);
    io_uring_prep_nop(s);
    io_uring_sqe_set_data(s, nullptr);
  }
  r.submit();
  r.run_once(false);
}

// Nothing left in flight, and no stray completion arrives later.
void check_quiet(io::ring& r) {
  CHECK(r.in_flight() == 0);
  CHECK(r.run_once(false) == 0);
}

}  // namespace

TEST_CASE("ring: default options get the best setup flags", "[io][ring]") {
  io::ring r;
  const unsigned f = r.setup_flags();
  CHECK((f & IORING_SETUP_SQE128) != 0);
  CHECK((f & IORING_SETUP_SINGLE_ISSUER) != 0);
  CHECK((f & IORING_SETUP_DEFER_TASKRUN) != 0);
  CHECK((f & IORING_SETUP_CLAMP) != 0);
  CHECK((f & IORING_SETUP_CQSIZE) != 0);
  CHECK((f & IORING_SETUP_COOP_TASKRUN) == 0);  // the first choice was accepted: no fallback
  CHECK(r.fallback_reason().empty());
  CHECK(r.has_sqe128());
  CHECK(r.sqe_size() == 128);
  CHECK(r.fd() >= 0);
  CHECK(r.native()->ring_fd == r.fd());
  CHECK(r.sq_entries() == 256);
  CHECK(r.cq_entries() == 512);  // twice the SQ by default
  // Links rely on these two features.
  CHECK((r.features() & IORING_FEAT_CQE_SKIP) != 0);
  CHECK((r.features() & IORING_FEAT_NODROP) != 0);
  CHECK(r.in_flight() == 0);
}

TEST_CASE("ring: queue sizes", "[io][ring]") {
  SECTION("entries round up to a power of two, the CQ follows at twice the SQ") {
    io::ring r(with_entries(100));
    CHECK(r.sq_entries() == 128);
    CHECK(r.cq_entries() == 256);  // 200, rounded up
  }
  SECTION("an explicit CQ size") {
    io::ring r(with_entries(8, 1000));
    CHECK(r.sq_entries() == 8);
    CHECK(r.cq_entries() == 1024);
  }
  SECTION("a CQ smaller than the SQ is raised to the SQ") {
    io::ring r(with_entries(64, 4));
    CHECK(r.sq_entries() == 64);
    CHECK(r.cq_entries() >= r.sq_entries());
  }
  SECTION("CLAMP: oversized requests are clamped instead of refused") {
    io::ring r(with_entries(1u << 20));
    CHECK(r.sq_entries() == 32768);  // IORING_MAX_ENTRIES
    CHECK(r.cq_entries() == 65536);  // IORING_MAX_CQ_ENTRIES
  }
  SECTION("entries = 0 is refused before the kernel is asked") { CHECK_THROWS_AS(io::ring(with_entries(0)), std::invalid_argument); }
}

TEST_CASE("ring: option combinations", "[io][ring]") {
  io::ring_options o = with_entries(8);
  unsigned expect_set = 0, expect_clear = 0;
  SECTION("64-byte SQEs") {
    o.sqe128 = false;
    expect_set = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    expect_clear = IORING_SETUP_SQE128;
  }
  SECTION("no single issuer: cooperative task running instead of deferred") {
    o.single_issuer = false;
    expect_set = IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_SQE128;
    expect_clear = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
  }
  SECTION("single issuer without deferred task running") {
    o.defer_taskrun = false;
    expect_set = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
    expect_clear = IORING_SETUP_DEFER_TASKRUN;
  }
  SECTION("plain ring") {
    o.single_issuer = false;
    o.defer_taskrun = false;
    o.coop_taskrun = false;
    expect_clear = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_COOP_TASKRUN;
  }
  io::ring r(o);
  CAPTURE(r.setup_flags());
  CHECK((r.setup_flags() & expect_set) == expect_set);
  CHECK((r.setup_flags() & expect_clear) == 0);
  CHECK(r.has_sqe128() == o.sqe128);
  CHECK(r.sqe_size() == (o.sqe128 ? 128u : 64u));
  // These are choices, not fallbacks.
  CHECK(r.fallback_reason().empty());

  // Every flavour runs operations, including ones completed through task work (the timeout).
  auto body = [&]() -> io::task<int> {
    int a = co_await io::nop(r);
    int b = co_await io::timeout(r, 1ms);
    co_return a == 0 && b == -ETIME ? 1 : 0;
  };
  CHECK(io::sync_wait(r, body()) == 1);
  check_quiet(r);
}

TEST_CASE("ring: run_once with nothing in flight throws instead of hanging", "[io][ring]") {
  io::ring r(with_entries(8));
  CHECK_THROWS_AS(r.run_once(), std::logic_error);
  CHECK(r.run_once(false) == 0);  // not waiting is fine

  // The same after some traffic: the in-flight count went back to zero.
  auto body = [&]() -> io::task<int> { co_return co_await io::nop(r); };
  CHECK(io::sync_wait(r, body()) == 0);
  CHECK(r.in_flight() == 0);
  CHECK_THROWS_AS(r.run_once(), std::logic_error);
}

TEST_CASE("ring: get_sqes returns cleared, consecutive 128-byte SQEs", "[io][ring]") {
  io::ring r(with_entries(8));
  REQUIRE(r.sqe_size() == 128);
  auto* base = reinterpret_cast<unsigned char*>(r.native()->sq.sqes);
  // Dirty the whole SQE array, as earlier use would: get_sqes must clear all 128 bytes.
  std::memset(base, 0xab, r.sq_entries() * r.sqe_size());

  io_uring_sqe* first = r.get_sqes(3);
  CHECK(reinterpret_cast<unsigned char*>(first) == base);
  for (unsigned i = 0; i < 3; ++i) {
    CAPTURE(i);
    io_uring_sqe* s = r.next_sqe(first, i);
    CHECK(reinterpret_cast<unsigned char*>(s) == base + i * 128);  // 128-byte stride
    CHECK(all_zero(s, 128));
  }
  // The rest stays dirty: only what was handed out is cleared.
  CHECK_FALSE(all_zero(base + 3 * 128, 128));
  flush_untracked(r, first, 3);
  CHECK(io_uring_sq_ready(r.native()) == 0);

  // Use up indices 3..7, 0..2 and 3..5; the next run of 3 (indices 6, 7, 0) wraps around the
  // end of the array, where next_sqe must wrap too.
  for (unsigned n : {5u, 3u, 3u}) flush_untracked(r, r.get_sqes(n), n);
  std::memset(base, 0xcd, r.sq_entries() * r.sqe_size());
  io_uring_sqe* w = r.get_sqes(3);
  CHECK(reinterpret_cast<unsigned char*>(w) == base + 6 * 128);
  CHECK(reinterpret_cast<unsigned char*>(r.next_sqe(w, 1)) == base + 7 * 128);
  CHECK(reinterpret_cast<unsigned char*>(r.next_sqe(w, 2)) == base + 0 * 128);
  for (unsigned i = 0; i < 3; ++i) CHECK(all_zero(r.next_sqe(w, i), 128));
  flush_untracked(r, w, 3);

  CHECK_THROWS_AS(r.get_sqes(9), std::invalid_argument);  // more than the ring holds
  check_quiet(r);
}

TEST_CASE("ring: 64-byte SQE rings clear and step by 64 bytes", "[io][ring]") {
  io::ring_options o = with_entries(4);
  o.sqe128 = false;
  io::ring r(o);
  auto* base = reinterpret_cast<unsigned char*>(r.native()->sq.sqes);
  std::memset(base, 0xab, r.sq_entries() * 64);
  io_uring_sqe* first = r.get_sqes(2);
  CHECK(reinterpret_cast<unsigned char*>(r.next_sqe(first, 1)) == base + 64);
  CHECK(all_zero(first, 128));
  CHECK_FALSE(all_zero(base + 128, 64));  // the third SQE was not handed out
  flush_untracked(r, first, 2);
  check_quiet(r);
}

TEST_CASE("ring: a full submission queue is submitted to make room", "[io][ring]") {
  io::ring r(with_entries(8));
  io_uring_sqe* all = r.get_sqes(8);
  for (unsigned i = 0; i < 8; ++i) {
    io_uring_prep_nop(r.next_sqe(all, i));
    io_uring_sqe_set_data(r.next_sqe(all, i), nullptr);
  }
  REQUIRE(io_uring_sq_space_left(r.native()) == 0);
  io_uring_sqe* more = r.get_sqe();  // must push the 8 queued ones to the kernel first
  CHECK(io_uring_sq_ready(r.native()) == 1);
  flush_untracked(r, more, 1);
  check_quiet(r);
}

namespace {
io::task<int> one_nop(io::ring& r, int v) {
  int res = co_await io::nop(r);
  co_return res == 0 ? v : -1000 + res;
}
io::task<int> one_timeout(io::ring& r) { co_return co_await io::timeout(r, 1ms); }
io::task<int> nop_pair(io::ring& r) {
  io::link_result lr = co_await io::link(io::nop(r), io::nop(r));
  co_return lr.first_reported ? -1 : lr.second;
}
}  // namespace

TEST_CASE("ring: more operations than the SQ holds", "[io][ring]") {
  // 8 SQ entries, 16 CQ entries: 100 operations in flight also overflow the CQ (the kernel keeps
  // the overflow: IORING_FEAT_NODROP).
  io::ring r(with_entries(8));
  std::vector<io::task<int>> tasks;
  for (int i = 0; i < 100; ++i) tasks.push_back(one_nop(r, i));
  std::vector<int> out = io::sync_wait(r, io::when_all(std::move(tasks)));
  REQUIRE(out.size() == 100);
  for (int i = 0; i < 100; ++i) CHECK(out[static_cast<std::size_t>(i)] == i);
  check_quiet(r);

  // Timers complete later, through task work, all at about the same time.
  std::vector<io::task<int>> timers;
  for (int i = 0; i < 100; ++i) timers.push_back(one_timeout(r));
  for (int res : io::sync_wait(r, io::when_all(std::move(timers)))) CHECK(res == -ETIME);
  check_quiet(r);

  // A link needs 2 consecutive SQEs: with 7 queued in the 8-entry SQ it must submit first.
  std::vector<io::task<int>> mixed;
  for (int i = 0; i < 7; ++i) mixed.push_back(one_nop(r, i));
  mixed.push_back(nop_pair(r));
  mixed.push_back(nop_pair(r));
  std::vector<int> m = io::sync_wait(r, io::when_all(std::move(mixed)));
  REQUIRE(m.size() == 9);
  for (int i = 0; i < 7; ++i) CHECK(m[static_cast<std::size_t>(i)] == i);
  CHECK(m[7] == 0);
  CHECK(m[8] == 0);
  check_quiet(r);
}

TEST_CASE("ring: registered buffers", "[io][ring]") {
  io::ring r(with_entries(8));
  temp_file f;
  f.fill("0123456789abcdefghij");

  std::vector<char> a(4096), b(8192);
  const iovec iov[2] = {{a.data(), a.size()}, {b.data(), b.size()}};
  r.register_buffers(iov);
  // Only one buffer table per ring.
  CHECK_THROWS_AS(r.register_buffers(iov), io::ring_error);

  int into_b = 0, into_a = 0, outside = 0;
  auto body = [&]() -> io::task<void> {
    // Into buffer 1 at an offset inside it.
    into_b = co_await io::read_fixed(r, f.fd, b.data() + 1000, 10, 10, 1);
    into_a = co_await io::read_fixed(r, f.fd, a.data(), 4, 0, 0);
    // An address outside the named buffer is refused by the kernel.
    outside = co_await io::read_fixed(r, f.fd, a.data(), 4, 0, 1);
  };
  io::sync_wait(r, body());
  CHECK(into_b == 10);
  CHECK(std::string(b.data() + 1000, 10) == "abcdefghij");
  CHECK(into_a == 4);
  CHECK(str(a, 4) == "0123");
  CHECK(outside < 0);
  r.unregister_buffers();
  auto after = [&]() -> io::task<int> { co_return co_await io::read_fixed(r, f.fd, a.data(), 4, 0, 0); };
  CHECK(io::sync_wait(r, after()) < 0);  // the table is gone
  check_quiet(r);
}

TEST_CASE("ring: sparse buffer table filled by update_buffers", "[io][ring]") {
  io::ring r(with_entries(8));
  temp_file f;
  f.fill("sparse slots");
  r.register_buffers_sparse(4);
  std::vector<char> buf(4096);
  const iovec iov[1] = {{buf.data(), buf.size()}};
  r.update_buffers(2, iov);

  int filled = 0, empty = 0;
  auto body = [&]() -> io::task<void> {
    filled = co_await io::read_fixed(r, f.fd, buf.data() + 100, 6, 0, 2);
    // Slot 1 is still empty.
    empty = co_await io::read_fixed(r, f.fd, buf.data(), 6, 0, 1);
  };
  io::sync_wait(r, body());
  CHECK(filled == 6);
  CHECK(std::string(buf.data() + 100, 6) == "sparse");
  CHECK(empty < 0);
  // Updating past the table's end is an error the ring reports.
  CHECK_THROWS_AS(r.update_buffers(4, iov), io::ring_error);
  r.unregister_buffers();
  check_quiet(r);
}

TEST_CASE("ring: registered files and io::fixed_file", "[io][ring]") {
  io::ring r(with_entries(8));
  temp_file f, g;
  f.fill("file zero");
  g.fill("file three");
  std::vector<char> buf(64);

  const int fds[1] = {f.fd};
  r.register_files(fds);
  CHECK_THROWS_AS(r.register_files(fds), io::ring_error);  // one table per ring
  auto read_slot = [&](int slot) -> io::task<int> { co_return co_await io::read(r, io::fixed_file(slot), bytes(buf), 0); };
  CHECK(io::sync_wait(r, read_slot(0)) == 9);
  CHECK(str(buf, 9) == "file zero");
  CHECK(io::sync_wait(r, read_slot(1)) == -EBADF);  // beyond the table
  r.unregister_files();

  r.register_files_sparse(8);
  CHECK(io::sync_wait(r, read_slot(3)) == -EBADF);  // an empty slot
  const int gfd[1] = {g.fd};
  r.update_files(3, gfd);
  CHECK(io::sync_wait(r, read_slot(3)) == 10);
  CHECK(str(buf, 10) == "file three");
  // The registered file stays usable after the plain descriptor is gone... via its slot only.
  const int dup_fd = ::dup(g.fd);
  REQUIRE(dup_fd >= 0);
  const int dfd[1] = {dup_fd};
  r.update_files(5, dfd);
  ::close(dup_fd);
  std::fill(buf.begin(), buf.end(), 0);
  CHECK(io::sync_wait(r, read_slot(5)) == 10);
  CHECK(str(buf, 10) == "file three");
  // -1 empties a slot again.
  const int none[1] = {-1};
  r.update_files(3, none);
  CHECK(io::sync_wait(r, read_slot(3)) == -EBADF);
  r.unregister_files();
  check_quiet(r);
}
