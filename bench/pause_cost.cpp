// What the ring entries' pause bookkeeping (restart without unmount) costs per request, with and
// without a possible handoff: the calls serve_ring_entry makes for every request (frozen() at
// arrival, serving(), frozen() before the commit, waiting()), on transport::ring_pause itself.
// Without --handoff-socket `possible` is false and the calls are plain tests of a bool; with it,
// each request pays a sequentially consistent store and two sequentially consistent loads.
//   bazel run -c opt //bench:pause_cost [-- ITERATIONS]
#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "corofuse/transport/uring.hpp"

namespace tp = corofuse::transport;

// Kept out of line, so that the loop is what an entry does per request and not folded away.
[[gnu::noinline]] static bool per_request(const tp::ring_pause& pause, tp::entry_slot& slot) {
  bool held = pause.frozen();
  pause.serving(slot);
  held |= pause.frozen();
  pause.waiting(slot);
  return held;
}

static double ns_per_request(bool possible, long iterations) {
  tp::ring_pause pause;
  pause.possible = possible;
  tp::entry_slot slot;
  long held = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (long i = 0; i < iterations; ++i) held += per_request(pause, slot);
  const auto t1 = std::chrono::steady_clock::now();
  if (held) std::printf("(held %ld)\n", held);
  return std::chrono::duration<double, std::nano>(t1 - t0).count() / static_cast<double>(iterations);
}

int main(int argc, char** argv) {
  const long iterations = argc > 1 ? std::atol(argv[1]) : 50'000'000;
  double off[5], on[5];
  for (int round = 0; round < 5; ++round) {  // interleaved: the machine is shared and noisy
    off[round] = ns_per_request(false, iterations);
    on[round] = ns_per_request(true, iterations);
  }
  auto median = [](double* v) {
    for (int i = 0; i < 5; ++i)
      for (int j = i + 1; j < 5; ++j)
        if (v[j] < v[i]) std::swap(v[i], v[j]);
    return v[2];
  };
  const double a = median(off), b = median(on);
  std::printf("pause bookkeeping per request (median of 5 x %ld): no handoff possible %.2f ns, --handoff-socket %.2f ns (%.1fx)\n",
              iterations, a, b, b / a);
  return 0;
}
