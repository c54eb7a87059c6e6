// A regular file's data in memfs: its 4 KiB pages, sparse (a hole holds no page and reads as
// zeros), in a table of two levels: chunks of 512 page slots (2 MiB of file) in an ordered map of
// chunks. A READ finds its page with a lookup among the file's chunks (128 for a 256 MiB file)
// and an index, where an ordered map of pages walks 16 levels of pointers for the same file.
// Not thread-safe: memfs holds the file's lock.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>

template <std::size_t PageBytes>
class page_table {
 public:
  struct page {
    std::byte bytes[PageBytes];
  };
  static constexpr std::size_t per_chunk = 512;

  // Page `index`, or null for a hole.
  page* find(std::uint64_t index) const noexcept {
    auto it = chunks_.find(index / per_chunk);
    return it == chunks_.end() ? nullptr : it->second->slots[index % per_chunk].get();
  }
  bool contains(std::uint64_t index) const noexcept { return find(index) != nullptr; }

  // A new zero-filled page at `index` (a hole before); returns it.
  page* add(std::uint64_t index) {
    std::unique_ptr<chunk>& c = chunks_[index / per_chunk];
    if (!c) c = std::make_unique<chunk>();
    std::unique_ptr<page>& slot = c->slots[index % per_chunk];
    if (!slot) {
      slot = std::make_unique<page>();
      ++c->used;
      ++count_;
    }
    return slot.get();
  }

  // Makes `index` a hole again; true when a page was there.
  bool erase(std::uint64_t index) noexcept {
    auto it = chunks_.find(index / per_chunk);
    if (it == chunks_.end()) return false;
    std::unique_ptr<page>& slot = it->second->slots[index % per_chunk];
    if (!slot) return false;
    slot.reset();
    --count_;
    if (--it->second->used == 0) chunks_.erase(it);
    return true;
  }

  // The first page at `index` or after it, if any.
  std::optional<std::uint64_t> next_present(std::uint64_t index) const noexcept {
    for (auto it = chunks_.lower_bound(index / per_chunk); it != chunks_.end(); ++it) {
      const std::size_t from = it->first == index / per_chunk ? static_cast<std::size_t>(index % per_chunk) : 0;
      for (std::size_t k = from; k < per_chunk; ++k)
        if (it->second->slots[k]) return it->first * per_chunk + k;
    }
    return std::nullopt;
  }

  std::size_t size() const noexcept { return count_; }  // pages held
  bool empty() const noexcept { return count_ == 0; }
  void clear() noexcept {
    chunks_.clear();
    count_ = 0;
  }

 private:
  struct chunk {
    std::array<std::unique_ptr<page>, per_chunk> slots;
    std::size_t used = 0;
  };
  std::map<std::uint64_t, std::unique_ptr<chunk>> chunks_;
  std::size_t count_ = 0;
};
