// Per-opcode request counters, by the way requests arrived, plus errors: printed at exit with -d
// or --stats (tests and bench/run read them) and read by tests in-process. With those options also
// each opcode's latency (from the request's arrival to its reply being ready), as a histogram of
// powers of two, and with -d a trace line per request (transport/request_path.hpp).
//
// Every serving thread counts into a shard of its own, on cache lines of its own: a count is a
// plain load and store by its one writer, never a locked instruction or a cache line bounced
// between the per-CPU queues. Readers add the shards up (relaxed: counts, not ordering).
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>

#include "corofuse/abi/protocol.hpp"

namespace corofuse::transport {

enum class arrival { dev_fuse, ring };

// Latency buckets: bucket b holds times from 2^b to 2^(b+1) - 1 ns (b 0 also holds 0); the last
// one everything from 2^31 ns (2.1 s) up.
inline constexpr std::uint32_t latency_buckets = 32;
inline std::uint32_t latency_bucket(std::uint64_t ns) noexcept {
  const std::uint32_t b = ns == 0 ? 0 : static_cast<std::uint32_t>(63 - __builtin_clzll(ns));
  return b < latency_buckets ? b : latency_buckets - 1;
}

// What the serving threads record besides the counts: set before they start.
struct recording {
  bool timed = false;   // latency histograms (--stats, -d)
  bool traced = false;  // a log line per request (-d)
};

class counter_shard {
 public:
  explicit counter_shard(std::string label, recording rec = {}) : rec_(rec), label_(std::move(label)) {}
  counter_shard(const counter_shard&) = delete;
  counter_shard& operator=(const counter_shard&) = delete;

  void request(abi::opcode op, arrival a) noexcept {
    bump(a == arrival::ring ? ring_[index(op)] : dev_[index(op)]);
    bump(requests_);
  }
  void error(abi::opcode op) noexcept { bump(errors_[index(op)]); }
  void malformed() noexcept { bump(malformed_); }
  // A request whose data was in the client's pages (7.46 zero-copy).
  void zero_copy() noexcept { bump(zero_copy_); }
  // How long a request of `op` took to serve (only called when timed()).
  void latency(abi::opcode op, std::uint64_t ns) noexcept { bump(latency_[index(op)][latency_bucket(ns)]); }

  bool timed() const noexcept { return rec_.timed; }
  bool traced() const noexcept { return rec_.traced; }

  const std::string& label() const noexcept { return label_; }
  std::uint64_t requests() const noexcept { return requests_.load(std::memory_order_relaxed); }

 private:
  friend class counters;
  static constexpr std::uint32_t slots = abi::max_opcode + 1;  // slot 0: anything unknown
  using table = std::array<std::atomic<std::uint64_t>, slots>;
  static std::uint32_t index(abi::opcode op) noexcept {
    auto i = static_cast<std::uint32_t>(op);
    return i < slots ? i : 0;
  }
  // Only this shard's thread writes: no read-modify-write needed.
  static void bump(std::atomic<std::uint64_t>& c) noexcept { c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed); }

  alignas(64) recording rec_;
  table dev_{};
  table ring_{};
  table errors_{};
  std::atomic<std::uint64_t> malformed_{0};
  std::atomic<std::uint64_t> zero_copy_{0};
  std::atomic<std::uint64_t> requests_{0};
  std::array<std::array<std::atomic<std::uint64_t>, latency_buckets>, slots> latency_{};
  std::string label_;          // "queue 3", "dev 1": for the -d report
  alignas(64) char end_[1]{};  // the next shard starts on a cache line of its own
};

class counters {
 public:
  // A shard for one serving thread, kept until the counters go (threads start and end with the
  // server; the few bytes stay for the report at exit). Not on the hot path: a lock is fine.
  counter_shard& add_shard(std::string label) {
    std::lock_guard lock(mutex_);
    return shards_.emplace_back(std::move(label), rec_);
  }
  // What shards added from now on record (before the serving threads start).
  void set_recording(recording rec) {
    std::lock_guard lock(mutex_);
    rec_ = rec;
  }
  bool timed() const {
    std::lock_guard lock(mutex_);
    return rec_.timed;
  }
  // The requests of `op` served in latency bucket `b` (latency_bucket).
  std::uint64_t latency_count(abi::opcode op, std::uint32_t b) const {
    return sum([&](const counter_shard& s) { return load(s.latency_[counter_shard::index(op)][b < latency_buckets ? b : 0]); });
  }

  std::uint64_t requests(abi::opcode op, arrival a) const {
    return sum([&](const counter_shard& s) { return load((a == arrival::ring ? s.ring_ : s.dev_)[counter_shard::index(op)]); });
  }
  std::uint64_t errors(abi::opcode op) const {
    return sum([&](const counter_shard& s) { return load(s.errors_[counter_shard::index(op)]); });
  }
  std::uint64_t malformed_requests() const {
    return sum([](const counter_shard& s) { return load(s.malformed_); });
  }
  std::uint64_t zero_copy_requests() const {
    return sum([](const counter_shard& s) { return load(s.zero_copy_); });
  }
  std::uint64_t total(arrival a) const {
    return sum([&](const counter_shard& s) {
      std::uint64_t t = 0;
      for (const auto& c : a == arrival::ring ? s.ring_ : s.dev_) t += load(c);
      return t;
    });
  }

  // The report, one line each through `line`: "counter OPNAME dev=N ring=N errors=N" per opcode
  // seen, "counter MALFORMED N", "counter ZERO_COPY N", then "queue Q requests=N" per ring queue
  // (tests and bench/run parse these); when timed, "latency OPNAME n=N p50<T p90<T p99<T max<T
  // | <1us:N <2us:N ...", the percentiles as the upper edge of their power-of-two bucket.
  void report(const std::function<void(std::string_view)>& line) const {
    char buf[160];
    report_counts(line, buf);
    if (timed()) report_latency(line);
  }

 private:
  void report_counts(const std::function<void(std::string_view)>& line, char (&buf)[160]) const {
    for (std::uint32_t i = 0; i < counter_shard::slots; ++i) {
      const auto d = sum([&](const counter_shard& s) { return load(s.dev_[i]); });
      const auto r = sum([&](const counter_shard& s) { return load(s.ring_[i]); });
      const auto e = sum([&](const counter_shard& s) { return load(s.errors_[i]); });
      if (d + r + e == 0) continue;
      const std::string_view name = i == 0 ? std::string_view("OTHER") : abi::opcode_name(static_cast<abi::opcode>(i));
      line(format(buf, "counter %.*s dev=%llu ring=%llu errors=%llu", static_cast<int>(name.size()), name.data(),
                  static_cast<unsigned long long>(d), static_cast<unsigned long long>(r), static_cast<unsigned long long>(e)));
    }
    if (auto m = malformed_requests()) line(format(buf, "counter MALFORMED %llu", static_cast<unsigned long long>(m)));
    if (auto z = zero_copy_requests()) line(format(buf, "counter ZERO_COPY %llu", static_cast<unsigned long long>(z)));
    std::lock_guard lock(mutex_);
    for (const auto& s : shards_) {
      if (s.label().rfind("queue ", 0) != 0) continue;
      line(format(buf, "%s requests=%llu", s.label().c_str(), static_cast<unsigned long long>(s.requests())));
    }
  }

  // A bucket's upper edge, short: "<512ns", "<33us", "<1.1s".
  static std::string edge(std::uint32_t b) {
    const double ns = static_cast<double>(std::uint64_t{1} << (b + 1));
    char t[24];
    if (b + 1 >= latency_buckets) return ">=2.1s";
    if (ns < 1e3) std::snprintf(t, sizeof t, "<%.0fns", ns);
    else if (ns < 1e6) std::snprintf(t, sizeof t, "<%.0fus", ns / 1e3);
    else if (ns < 1e9) std::snprintf(t, sizeof t, "<%.0fms", ns / 1e6);
    else std::snprintf(t, sizeof t, "<%.1fs", ns / 1e9);
    return t;
  }

  void report_latency(const std::function<void(std::string_view)>& line) const {
    for (std::uint32_t i = 1; i < counter_shard::slots; ++i) {
      std::array<std::uint64_t, latency_buckets> h{};
      std::uint64_t n = 0;
      for (std::uint32_t b = 0; b < latency_buckets; ++b) n += h[b] = sum([&](const counter_shard& s) { return load(s.latency_[i][b]); });
      if (n == 0) continue;
      auto at = [&](double q) {
        std::uint64_t seen = 0;
        for (std::uint32_t b = 0; b < latency_buckets; ++b)
          if ((seen += h[b]) >= static_cast<std::uint64_t>(q * static_cast<double>(n) + 0.5) && seen > 0) return edge(b);
        return edge(latency_buckets - 1);
      };
      std::uint32_t top = 0;
      for (std::uint32_t b = 0; b < latency_buckets; ++b)
        if (h[b]) top = b;
      const std::string_view name = abi::opcode_name(static_cast<abi::opcode>(i));
      std::string out = "latency " + std::string(name) + " n=" + std::to_string(n) + " p50" + at(0.50) + " p90" + at(0.90) + " p99" +
                        at(0.99) + " max" + edge(top) + " |";
      for (std::uint32_t b = 0; b < latency_buckets; ++b)
        if (h[b]) out += " " + edge(b) + ":" + std::to_string(h[b]);
      line(out);
    }
  }

  static std::uint64_t load(const std::atomic<std::uint64_t>& c) noexcept { return c.load(std::memory_order_relaxed); }
  template <typename F>
  std::uint64_t sum(F f) const {
    std::lock_guard lock(mutex_);
    std::uint64_t t = 0;
    for (const auto& s : shards_) t += f(s);
    return t;
  }
  template <typename... A>
  static std::string_view format(char (&buf)[160], const char* fmt, A... a) {
    int n = std::snprintf(buf, sizeof buf, fmt, a...);
    return {buf, n < 0 ? 0 : std::min<std::size_t>(static_cast<std::size_t>(n), sizeof buf - 1)};
  }

  mutable std::mutex mutex_;
  std::deque<counter_shard> shards_;
  recording rec_;
};

}  // namespace corofuse::transport
