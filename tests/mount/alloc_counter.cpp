// Linked into a server build for tests/mount/alloc_test: counts every heap allocation of the
// process (malloc and friends; operator new allocates through malloc) and, on SIGUSR2, writes
// "allocations N" to stderr. The test reads that line before and after a run of requests.
#include <execinfo.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cerrno>
#include <cstring>

extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);
void __libc_free(void*);
}

namespace {
std::atomic<std::uint64_t> allocations{0};

// COROFUSE_ALLOC_TRACE=N: allocations N to N+4 print a backtrace (to find an unexpected one);
// COROFUSE_ALLOC_TRACE=report: the first five after each report do.
std::atomic<std::uint64_t> trace_from{0};
bool trace_after_report = false;
thread_local bool in_trace = false;

void count() noexcept {
  const std::uint64_t n = allocations.fetch_add(1, std::memory_order_relaxed) + 1;
  const std::uint64_t from = trace_from.load(std::memory_order_relaxed);
  if (from && n >= from && n < from + 5 && !in_trace) {
    in_trace = true;
    void* frames[32];
    int depth = ::backtrace(frames, 32);
    (void)!::write(2, "allocation backtrace:\n", 22);
    ::backtrace_symbols_fd(frames, depth, 2);
    in_trace = false;
  }
}

void report(int) {
  char buf[48] = "allocations ";
  char digits[24];
  int n = 0;
  std::uint64_t v = allocations.load(std::memory_order_relaxed);
  do {
    digits[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v);
  std::size_t len = std::strlen(buf);
  while (n) buf[len++] = digits[--n];
  buf[len++] = '\n';
  (void)!::write(2, buf, len);
  if (trace_after_report) trace_from.store(allocations.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

struct install {
  install() {
    if (const char* t = std::getenv("COROFUSE_ALLOC_TRACE")) {
      trace_after_report = std::strcmp(t, "report") == 0;
      if (!trace_after_report) trace_from = std::strtoull(t, nullptr, 10);
    }
    struct sigaction sa {};
    sa.sa_handler = report;
    sa.sa_flags = SA_RESTART;
    ::sigaction(SIGUSR2, &sa, nullptr);
  }
} installed;
}  // namespace

extern "C" {
void* malloc(std::size_t n) {
  count();
  return __libc_malloc(n);
}
void* calloc(std::size_t a, std::size_t b) {
  count();
  return __libc_calloc(a, b);
}
void* realloc(void* p, std::size_t n) {
  count();
  return __libc_realloc(p, n);
}
void free(void* p) { __libc_free(p); }
void* memalign(std::size_t align, std::size_t n) {
  count();
  return __libc_memalign(align, n);
}
void* aligned_alloc(std::size_t align, std::size_t n) {
  count();
  return __libc_memalign(align, n);
}
int posix_memalign(void** out, std::size_t align, std::size_t n) {
  count();
  void* p = __libc_memalign(align, n);
  if (!p) return ENOMEM;
  *out = p;
  return 0;
}
}
