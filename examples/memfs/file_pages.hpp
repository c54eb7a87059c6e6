// A regular file's bytes kept in memory, as tmpfs keeps them: sparse 4 KiB pages (a hole holds no
// page and reads as zeros) counted against a filesystem-wide byte limit, so a write that finds no
// room stops with ENOSPC and space freed by one file is at once usable by another. What the
// in-memory examples share: memtree's files hold one each.
// Not thread-safe: the caller holds the file's lock (shared for copy_out, size and the seeks).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include <unistd.h>

#include "examples/memfs/page_table.hpp"

// The bytes every file of a filesystem may hold together, taken a page at a time.
class space_budget {
 public:
  static constexpr std::size_t page_bytes = 4096;
  explicit space_budget(std::uint64_t limit) : limit_(limit) {}

  // One more page against the limit: a compare-and-swap, so two writers never both take the last.
  bool take_page() {
    std::uint64_t used = used_.load(std::memory_order_relaxed);
    do {
      if (used + page_bytes > limit_) return false;
    } while (!used_.compare_exchange_weak(used, used + page_bytes, std::memory_order_relaxed));
    return true;
  }
  void give_back(std::uint64_t pages) { used_.fetch_sub(pages * page_bytes, std::memory_order_relaxed); }
  std::uint64_t used() const { return used_.load(std::memory_order_relaxed); }
  std::uint64_t limit() const { return limit_; }

 private:
  const std::uint64_t limit_;
  std::atomic<std::uint64_t> used_{0};
};

class file_pages {
 public:
  static constexpr std::size_t page_bytes = space_budget::page_bytes;
  static constexpr std::uint64_t max_size = std::uint64_t{1} << 46;  // 64 TiB, far below off_t's limit

  explicit file_pages(space_budget& budget) : budget_(&budget) {}
  ~file_pages() { release(); }
  file_pages(const file_pages&) = delete;
  file_pages& operator=(const file_pages&) = delete;

  std::uint64_t size() const noexcept { return size_; }
  std::uint64_t blocks() const noexcept { return pages_.size() * (page_bytes / 512); }

  // Copies [start, start + out.size()) out; the caller clamps to size().
  void copy_out(std::uint64_t start, std::span<std::byte> out) const {
    walk(start, out.size(), [&](std::uint64_t index, std::size_t in_page, std::size_t done, std::size_t n) {
      const auto* p = pages_.find(index);
      if (!p) std::memset(out.data() + done, 0, n);  // a hole reads as zeros
      else std::memcpy(out.data() + done, p->bytes + in_page, n);
      return true;
    });
  }

  // Copies in page by page and stops where space runs out. Returns the bytes written.
  std::size_t copy_in(std::uint64_t start, std::span<const std::byte> in) {
    const std::size_t done = walk(start, in.size(), [&](std::uint64_t index, std::size_t in_page, std::size_t at, std::size_t n) {
      auto* p = pages_.find(index);
      if (!p) {
        if (!budget_->take_page()) return false;
        p = pages_.add(index);
      }
      std::memcpy(p->bytes + in_page, in.data() + at, n);
      return true;
    });
    if (done && start + done > size_) size_ = start + done;
    return done;
  }

  // A new size: pages wholly past it go, the last partial page is zeroed past it.
  void resize(std::uint64_t size) {
    if (size < size_) {
      punch(size, size_);
      for (auto p = pages_.next_present((size + page_bytes - 1) / page_bytes); p; p = pages_.next_present(*p + 1)) drop(*p);
    }
    size_ = size;
  }

  // Zeroes [start, end): whole pages are released, partial pages cleared.
  void punch(std::uint64_t start, std::uint64_t end) {
    for (auto p = pages_.next_present(start / page_bytes); p && *p * page_bytes < end; p = pages_.next_present(*p + 1)) {
      const std::uint64_t pstart = *p * page_bytes, pend = pstart + page_bytes;
      if (start <= pstart && pend <= end) {
        drop(*p);
        continue;
      }
      const std::uint64_t a = std::max(start, pstart), b = std::min(end, pend);
      std::memset(pages_.find(*p)->bytes + (a - pstart), 0, static_cast<std::size_t>(b - a));
    }
  }

  // fallocate: the pages of [start, end) are taken now, so later writes there cannot fail for
  // space; the size grows to `end` unless `keep_size`. False (ENOSPC) when the limit is reached.
  bool reserve(std::uint64_t start, std::uint64_t end, bool keep_size) {
    for (std::uint64_t p = start / page_bytes; p <= (end - 1) / page_bytes; ++p) {
      if (pages_.contains(p)) continue;
      if (!budget_->take_page()) return false;
      pages_.add(p);
    }
    if (!keep_size && end > size_) size_ = end;
    return true;
  }

  // SEEK_DATA / SEEK_HOLE from `pos` (< size()): the offset, or nothing (ENXIO).
  std::optional<std::uint64_t> next_data(std::uint64_t pos) const {
    const auto data = pages_.next_present(pos / page_bytes);
    if (!data || *data * page_bytes >= size_) return std::nullopt;
    return std::max(pos, *data * page_bytes);
  }
  std::uint64_t next_hole(std::uint64_t pos) const {
    for (std::uint64_t p = pos / page_bytes;; ++p) {
      if (p * page_bytes >= size_) return size_;
      if (!pages_.contains(p)) return std::max(pos, p * page_bytes);
    }
  }

  // Every page goes back to the budget (the file is gone; its size stays for a last stat).
  void release() {
    budget_->give_back(pages_.size());
    pages_.clear();
  }

 private:
  void drop(std::uint64_t index) {
    if (pages_.erase(index)) budget_->give_back(1);
  }

  // Walks [start, start + len) page by page: `piece(page index, offset in page, bytes done,
  // length)` for each piece, stopping early when it returns false. Returns the bytes walked.
  template <typename Piece>
  static std::size_t walk(std::uint64_t start, std::size_t len, Piece&& piece) {
    std::size_t done = 0;
    while (done < len) {
      const std::uint64_t pos = start + done;
      const std::size_t in_page = static_cast<std::size_t>(pos % page_bytes);
      const std::size_t n = std::min(len - done, page_bytes - in_page);
      if (!piece(pos / page_bytes, in_page, done, n)) break;
      done += n;
    }
    return done;
  }

  space_budget* budget_;
  page_table<page_bytes> pages_;
  std::uint64_t size_ = 0;
};

// The lowest memory limit of this process's cgroup and its ancestors (memory.limit_in_bytes,
// cgroup v1; memory.max, v2), found through /proc/self/cgroup and the cgroup mounts in
// /proc/self/mountinfo; UINT64_MAX when there is none (or none can be read). In a container or a
// systemd unit with MemoryMax= it is what the cgroup's OOM killer enforces.
inline std::uint64_t cgroup_memory_limit() {
  std::uint64_t limit = UINT64_MAX;
  const auto slurp = [](const std::string& path) {
    std::string s;
    if (std::FILE* f = std::fopen(path.c_str(), "re")) {
      char buf[4096];
      for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) s.append(buf, n);
      std::fclose(f);
    }
    return s;
  };
  // The i-th field of `line` split at `sep` (empty past the last).
  const auto field = [](std::string_view line, char sep, std::size_t i) {
    for (; i > 0; --i) {
      const auto at = line.find(sep);
      if (at == std::string_view::npos) return std::string_view{};
      line.remove_prefix(at + 1);
    }
    return line.substr(0, line.find(sep));
  };
  const auto has_word = [](std::string_view list, std::string_view word) {
    for (;;) {
      const auto comma = list.find(',');
      if (list.substr(0, comma) == word) return true;
      if (comma == std::string_view::npos) return false;
      list.remove_prefix(comma + 1);
    }
  };
  // The memory cgroup's path in the v1 hierarchy ("ID:memory,...:PATH") and in v2 ("0::PATH").
  std::string v1_path, v2_path;
  const std::string cgroups = slurp("/proc/self/cgroup");
  for (std::size_t at = 0; at < cgroups.size();) {
    const std::size_t end = std::min(cgroups.find('\n', at), cgroups.size());
    const std::string_view line = std::string_view(cgroups).substr(at, end - at);
    at = end + 1;
    const std::size_t c1 = line.find(':'), c2 = c1 == std::string_view::npos ? c1 : line.find(':', c1 + 1);
    if (c2 == std::string_view::npos) continue;
    const std::string_view controllers = line.substr(c1 + 1, c2 - c1 - 1), path = line.substr(c2 + 1);
    if (line.substr(0, c1) == "0" && controllers.empty()) v2_path = path;
    else if (has_word(controllers, "memory")) v1_path = path;
  }
  // Each mount of those hierarchies: the cgroup's directory under it, then every ancestor's up to
  // the mount.
  const std::string mounts = slurp("/proc/self/mountinfo");
  for (std::size_t at = 0; at < mounts.size();) {
    const std::size_t end = std::min(mounts.find('\n', at), mounts.size());
    const std::string_view line = std::string_view(mounts).substr(at, end - at);
    at = end + 1;
    const std::size_t dash = line.find(" - ");
    if (dash == std::string_view::npos) continue;
    const std::string_view type = field(line.substr(dash + 3), ' ', 0), super = field(line.substr(dash + 3), ' ', 2);
    const bool v1 = type == "cgroup" && has_word(super, "memory") && !v1_path.empty();
    const bool v2 = type == "cgroup2" && !v2_path.empty();
    if (!v1 && !v2) continue;
    std::string_view root = field(line, ' ', 3), path = v1 ? v1_path : v2_path;
    if (root == "/") root = {};
    if (path.substr(0, root.size()) != root || (path.size() > root.size() && path[root.size()] != '/')) continue;
    const std::string top(field(line, ' ', 4));
    std::string dir = top + std::string(path.substr(root.size()));
    while (dir.size() > top.size() && dir.back() == '/') dir.pop_back();
    for (;;) {
      const std::string value = slurp(dir + (v1 ? "/memory.limit_in_bytes" : "/memory.max"));
      std::uint64_t n = 0;
      std::size_t digits = 0;
      for (; digits < value.size() && digits < 19 && value[digits] >= '0' && value[digits] <= '9'; ++digits)
        n = n * 10 + static_cast<std::uint64_t>(value[digits] - '0');
      if (digits > 0 && n > 0) limit = std::min(limit, n);  // "max" (v2) is no limit
      if (dir.size() <= top.size()) break;
      dir.resize(std::max(dir.rfind('/'), top.size()));
    }
  }
  return limit;
}

// The memory this process may use: physical memory, or less under a lower cgroup limit.
inline std::uint64_t usable_memory() {
  const std::uint64_t ram = static_cast<std::uint64_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));
  return std::min(ram, cgroup_memory_limit());
}

// The default limit: a quarter of the memory this process may use, as tmpfs takes a quarter of
// RAM (a default above a cgroup's limit would have its OOM killer end the server where a write
// should fail with ENOSPC).
inline std::uint64_t default_space_limit() { return usable_memory() / 4; }

// A limit asked for (--size) held against the cgroup's: the server itself needs some of it (its
// ring and reader buffers, its tables: about 32 MiB on a small machine), and data beyond the rest
// could never all be held: the OOM killer would end the server mid-write where a write should
// fail with ENOSPC. So the limit is at most the cgroup's less 32 MiB (and at most three quarters
// of it), and `note` says so; physical memory alone caps nothing (swap may hold the rest, as for
// tmpfs).
inline std::uint64_t held_to_cgroup(std::uint64_t asked, std::string& note) {
  const std::uint64_t cgroup = cgroup_memory_limit();
  if (cgroup == UINT64_MAX) return asked;
  const std::uint64_t room = std::min(cgroup / 4 * 3, cgroup > (64u << 20) ? cgroup - (32u << 20) : cgroup / 2);
  if (asked <= room) return asked;
  const std::uint64_t held = std::max<std::uint64_t>(room / space_budget::page_bytes * space_budget::page_bytes, space_budget::page_bytes);
  note = "--size " + std::to_string(asked >> 20) + " MiB is more than this process's memory cgroup allows (its limit is " +
         std::to_string(cgroup >> 20) + " MiB): holding at most " + std::to_string(held >> 20) + " MiB of file data";
  return held;
}

// --size N[K|M|G|T] or a percentage of the memory this process may use ("25%"), at least a page.
inline bool parse_space_limit(std::string_view s, std::uint64_t& out) {
  if (s.empty()) return false;
  const std::uint64_t ram = usable_memory();
  std::uint64_t mult = 1;
  bool percent = false;
  switch (s.back()) {
    case 'k':
    case 'K': mult = 1ull << 10; break;
    case 'm':
    case 'M': mult = 1ull << 20; break;
    case 'g':
    case 'G': mult = 1ull << 30; break;
    case 't':
    case 'T': mult = 1ull << 40; break;
    case '%': percent = true; break;
    default: break;
  }
  if (mult != 1 || percent) s.remove_suffix(1);
  if (s.empty() || s.size() > 15 || s.find_first_not_of("0123456789") != std::string_view::npos) return false;
  const std::uint64_t v = std::stoull(std::string(s));
  if (percent) {
    if (v == 0 || v > 100) return false;
    out = ram / 100 * v;
  } else {
    if (v > (std::uint64_t{1} << 62) / mult) return false;
    out = v * mult;
  }
  return out >= space_budget::page_bytes;
}
