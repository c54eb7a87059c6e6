// Per-opcode request counters, by arrival path, plus errors. Updated from any queue thread
// (relaxed atomics: counts, not ordering), read by tests and printed at exit with -d.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <string>

#include "corofuse/abi/protocol.hpp"

namespace corofuse::session {

class counters {
 public:
  enum class path { dev_fuse, ring };

  void request(abi::opcode op, path p) noexcept { slot(p == path::ring ? ring_ : dev_, op).fetch_add(1, std::memory_order_relaxed); }
  void error(abi::opcode op) noexcept { slot(errors_, op).fetch_add(1, std::memory_order_relaxed); }
  void malformed() noexcept { malformed_.fetch_add(1, std::memory_order_relaxed); }
  // A request whose data was in the client's pages (7.46 zero-copy).
  void zero_copy() noexcept { zero_copy_.fetch_add(1, std::memory_order_relaxed); }

  std::uint64_t requests(abi::opcode op, path p) const noexcept { return get(p == path::ring ? ring_ : dev_, op); }
  std::uint64_t errors(abi::opcode op) const noexcept { return get(errors_, op); }
  std::uint64_t malformed_requests() const noexcept { return malformed_.load(std::memory_order_relaxed); }
  std::uint64_t zero_copy_requests() const noexcept { return zero_copy_.load(std::memory_order_relaxed); }
  std::uint64_t total(path p) const noexcept {
    std::uint64_t t = 0;
    for (const auto& c : p == path::ring ? ring_ : dev_) t += c.load(std::memory_order_relaxed);
    return t;
  }

  // One line per opcode seen: "counter OPNAME dev=N ring=N errors=N" (tests parse this).
  void print(std::FILE* f) const {
    for (std::uint32_t i = 0; i < slots; ++i) {
      auto d = dev_[i].load(std::memory_order_relaxed), r = ring_[i].load(std::memory_order_relaxed),
           e = errors_[i].load(std::memory_order_relaxed);
      if (d + r + e == 0) continue;
      std::string name(i == 0 ? std::string_view("OTHER") : abi::opcode_name(static_cast<abi::opcode>(i)));
      std::fprintf(f, "counter %s dev=%llu ring=%llu errors=%llu\n", name.c_str(), static_cast<unsigned long long>(d),
                   static_cast<unsigned long long>(r), static_cast<unsigned long long>(e));
    }
    if (auto m = malformed_requests()) std::fprintf(f, "counter MALFORMED %llu\n", static_cast<unsigned long long>(m));
    if (auto z = zero_copy_requests()) std::fprintf(f, "counter ZERO_COPY %llu\n", static_cast<unsigned long long>(z));
  }

 private:
  static constexpr std::uint32_t slots = abi::max_opcode + 1;  // slot 0: anything unknown
  using table = std::array<std::atomic<std::uint64_t>, slots>;
  static std::uint32_t index(abi::opcode op) noexcept {
    auto i = static_cast<std::uint32_t>(op);
    return i < slots ? i : 0;
  }
  static std::atomic<std::uint64_t>& slot(table& t, abi::opcode op) noexcept { return t[index(op)]; }
  static std::uint64_t get(const table& t, abi::opcode op) noexcept { return t[index(op)].load(std::memory_order_relaxed); }

  table dev_{};
  table ring_{};
  table errors_{};
  std::atomic<std::uint64_t> malformed_{0};
  std::atomic<std::uint64_t> zero_copy_{0};
};

}  // namespace corofuse::session
