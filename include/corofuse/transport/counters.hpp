// Per-opcode request counters, by the way requests arrived, plus errors: printed at exit with -d
// (tests and bench/run read them) and read by tests in-process.
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

class counter_shard {
 public:
  explicit counter_shard(std::string label) : label_(std::move(label)) {}
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

  alignas(64) table dev_{};
  table ring_{};
  table errors_{};
  std::atomic<std::uint64_t> malformed_{0};
  std::atomic<std::uint64_t> zero_copy_{0};
  std::atomic<std::uint64_t> requests_{0};
  std::string label_;          // "queue 3", "dev 1": for the -d report
  alignas(64) char end_[1]{};  // the next shard starts on a cache line of its own
};

class counters {
 public:
  // A shard for one serving thread, kept until the counters go (threads start and end with the
  // server; the few bytes stay for the report at exit). Not on the hot path: a lock is fine.
  counter_shard& add_shard(std::string label) {
    std::lock_guard lock(mutex_);
    return shards_.emplace_back(std::move(label));
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
  // (tests and bench/run parse these).
  void report(const std::function<void(std::string_view)>& line) const {
    char buf[160];
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

 private:
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
};

}  // namespace corofuse::transport
