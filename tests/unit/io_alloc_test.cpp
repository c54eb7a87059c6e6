// The runtime's hot path allocates nothing: once the frame pool is warm, awaiting operations,
// nested tasks and links never reaches the global allocator. Every global operator new/delete is
// replaced here by a counting version; counting is switched on only around the measured loops.
#include <catch2/catch.hpp>

#include "tests/unit/temp_file.hpp"

#include <stdlib.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#include "corofuse/io.hpp"

namespace io = corofuse::io;
using corofuse::testing::temp_file;

namespace {

std::atomic<bool> g_counting{false};
std::atomic<std::size_t> g_allocations{0};

void* counted_malloc(std::size_t n) noexcept {
  if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1, std::memory_order_relaxed);
  return std::malloc(n == 0 ? 1 : n);
}

void* counted_aligned(std::size_t n, std::align_val_t al) noexcept {
  if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1, std::memory_order_relaxed);
  std::size_t a = static_cast<std::size_t>(al);
  if (a < sizeof(void*)) a = sizeof(void*);
  void* p = nullptr;
  return ::posix_memalign(&p, a, n == 0 ? 1 : n) == 0 ? p : nullptr;
}

void* or_throw(void* p) {
  if (!p) throw std::bad_alloc();
  return p;
}

// Counts the allocations made while it is alive.
class counting_window {
 public:
  counting_window() {
    g_allocations.store(0);
    g_counting.store(true);
  }
  counting_window(const counting_window&) = delete;
  ~counting_window() { g_counting.store(false); }
  std::size_t count() const { return g_allocations.load(); }
};

}  // namespace

// ---- the replaced global allocation functions (all standard overloads) ----------------------

void* operator new(std::size_t n) { return or_throw(counted_malloc(n)); }
void* operator new[](std::size_t n) { return or_throw(counted_malloc(n)); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return counted_malloc(n); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return counted_malloc(n); }
void* operator new(std::size_t n, std::align_val_t a) { return or_throw(counted_aligned(n, a)); }
void* operator new[](std::size_t n, std::align_val_t a) { return or_throw(counted_aligned(n, a)); }
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept { return counted_aligned(n, a); }
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept { return counted_aligned(n, a); }

void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }

namespace {

// Defeats the optimiser's licence to elide a new/delete pair.
void* volatile g_sink;

io::ring_options opts() {
  io::ring_options o;
  o.entries = 64;
  return o;
}

io::task<int> nested(io::ring& r, int v) {
  int res = co_await io::nop(r);
  co_return res == 0 ? v : -1;
}

struct loop_result {
  std::size_t allocations = 0;
  int wrong = 0;  // iterations whose results were not the expected ones
};

// One iteration: a plain operation, a nested task awaiting one, and a link of two.
io::task<int> iteration(io::ring& r, int i) {
  int wrong = 0;
  if (co_await io::nop(r) != 0) ++wrong;
  if (co_await nested(r, i) != i) ++wrong;
  io::link_result lr = co_await io::link(io::nop(r), io::nop(r));
  if (lr.first_reported || lr.second != 0) ++wrong;
  co_return wrong;
}

io::task<loop_result> hot_loop(io::ring& r, int warmup, int measured) {
  loop_result out;
  for (int i = 0; i < warmup; ++i) out.wrong += co_await iteration(r, i);
  {
    counting_window w;
    for (int i = 0; i < measured; ++i) out.wrong += co_await iteration(r, i);
    out.allocations = w.count();
  }
  co_return out;
}


io::task<loop_result> fixed_loop(io::ring& r, int fd, char* buf, int warmup, int measured) {
  loop_result out;
  auto one = [&](int i) -> io::task<int> {
    // Write 512 bytes from the first half of the buffer, read them back into the second half.
    buf[0] = static_cast<char>(i);
    int w = co_await io::write_fixed(r, fd, buf, 512, 0, 0);
    int rd = co_await io::read_fixed(r, fd, buf + 4096, 512, 0, 0);
    co_return w == 512 && rd == 512 && buf[4096] == static_cast<char>(i) ? 0 : 1;
  };
  for (int i = 0; i < warmup; ++i) out.wrong += co_await one(i);
  {
    counting_window w;
    for (int i = 0; i < measured; ++i) out.wrong += co_await one(i);
    out.allocations = w.count();
  }
  co_return out;
}

}  // namespace

TEST_CASE("alloc: the counter sees allocations", "[io][alloc]") {
  // Without this, a counter that never counts would make the tests below pass vacuously.
  std::size_t plain = 0, pooled_too_big = 0, vec = 0;
  {
    counting_window w;
    g_sink = new int(1);
    delete static_cast<int*>(g_sink);
    plain = w.count();
  }
  {
    counting_window w;
    // Bigger than any pooled class: the frame pool hands this to operator new.
    void* p = io::frame_pool::allocate(io::frame_pool::max_pooled_size + 1);
    io::frame_pool::deallocate(p, io::frame_pool::max_pooled_size + 1);
    pooled_too_big = w.count();
  }
  {
    counting_window w;
    std::vector<long> v(100);
    g_sink = v.data();
    vec = w.count();
  }
  CHECK(plain == 1);
  CHECK(pooled_too_big == 1);
  CHECK(vec == 1);
}

TEST_CASE("alloc: nop, nested task and link allocate nothing once warm", "[io][alloc]") {
  io::ring r(opts());
  loop_result res = io::sync_wait(r, hot_loop(r, 300, 10000));
  CHECK(res.wrong == 0);
  CHECK(res.allocations == 0);
  CHECK(r.in_flight() == 0);
}

TEST_CASE("alloc: read_fixed/write_fixed on a registered buffer allocate nothing", "[io][alloc]") {
  io::ring r(opts());
  temp_file f;
  std::vector<char> buf(8192);
  const iovec iov[1] = {{buf.data(), buf.size()}};
  r.register_buffers(iov);
  loop_result res = io::sync_wait(r, fixed_loop(r, f.fd, buf.data(), 300, 10000));
  CHECK(res.wrong == 0);
  CHECK(res.allocations == 0);
  CHECK(r.in_flight() == 0);
}
