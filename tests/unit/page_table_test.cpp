// memfs's page table: pages found where they were added, holes in between, chunks dropped when
// their last page goes, and the next page after any index across chunk boundaries.
#include <catch2/catch.hpp>

#include <cstdint>
#include <optional>

#include "examples/memfs/page_table.hpp"

using table = page_table<4096>;

TEST_CASE("page_table: add, find, erase, and holes read as absent", "[memfs]") {
  table t;
  CHECK(t.empty());
  CHECK(t.find(0) == nullptr);
  table::page* p = t.add(5);
  REQUIRE(p);
  CHECK(p->bytes[0] == std::byte{0});  // a new page is zero-filled
  p->bytes[10] = std::byte{7};
  CHECK(t.add(5) == p);  // adding an existing page keeps it
  CHECK(t.find(5)->bytes[10] == std::byte{7});
  CHECK(t.size() == 1);
  CHECK_FALSE(t.contains(4));
  CHECK_FALSE(t.contains(6));
  CHECK(t.erase(5));
  CHECK_FALSE(t.erase(5));
  CHECK(t.empty());
  CHECK(t.find(5) == nullptr);
}

TEST_CASE("page_table: next_present across chunks, and far apart pages of a sparse file", "[memfs]") {
  table t;
  const std::uint64_t far = (std::uint64_t{1} << 34) + 3;  // 64 TiB into a file
  for (std::uint64_t i : {std::uint64_t{0}, std::uint64_t{511}, std::uint64_t{512}, std::uint64_t{2000}, far}) t.add(i);
  CHECK(t.size() == 5);
  CHECK(t.next_present(0) == std::optional<std::uint64_t>(0));
  CHECK(t.next_present(1) == std::optional<std::uint64_t>(511));
  CHECK(t.next_present(512) == std::optional<std::uint64_t>(512));
  CHECK(t.next_present(513) == std::optional<std::uint64_t>(2000));
  CHECK(t.next_present(2001) == std::optional<std::uint64_t>(far));
  CHECK(t.next_present(far + 1) == std::nullopt);
  // Emptying a chunk drops it; its neighbours stay.
  CHECK(t.erase(512));
  CHECK(t.next_present(512) == std::optional<std::uint64_t>(2000));
  CHECK(t.contains(511));
  t.clear();
  CHECK(t.empty());
  CHECK(t.next_present(0) == std::nullopt);
}
