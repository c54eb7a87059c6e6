// Directory listings: what a filesystem's readdir returns, and how the framework packs it.
//
// One handler serves READDIR and READDIRPLUS:
//
//   result<Listing> readdir(context&, ino dir, file_info&, off_t off);
//
// `Listing` is any range of the entries after `off`: a std::ranges or range-v3 view, a span, a
// container, or a range of your own over a directory stream (examples/passthrough). The framework
// walks it and packs each entry straight into the reply buffer until the kernel's size is reached;
// what did not fit is asked for again from the last packed entry's `next_offset`. A view over the
// filesystem's own tables needs no allocation per request; `locked_listing` holds a lock for as
// long as the framework walks it.
//
// An entry has `name`, `ino`, `type` (DT_*) and `next_offset` (cf::dir_entry). When it also has
// `lookup()`, returning the entry's lookup reply (cf::dirplus_entry), the framework announces
// READDIRPLUS and answers it from the same listing: a listing with attributes saves `ls -l` a
// LOOKUP per name.
#pragma once

#include <cstdint>
#include <iterator>
#include <string_view>
#include <type_traits>
#include <utility>

#include "corofuse/abi/structs.hpp"
#include "corofuse/fs/types.hpp"
#include "corofuse/proto/reply.hpp"

namespace corofuse {

// What READDIR packs of one entry. `next_offset` resumes the listing after the entry: it must stay
// valid while the directory changes (an index into a stable order, not a position). `ino` is what
// readdir(3) shows as d_ino.
template <typename E> concept listing_entry = requires(const E& e) {
  std::string_view(e.name);
  static_cast<std::uint64_t>(e.ino);
  static_cast<std::uint32_t>(e.type);
  static_cast<std::uint64_t>(e.next_offset);
};

// READDIRPLUS also carries each entry's lookup reply. `lookup()` returns it and counts one lookup,
// which the kernel will FORGET later. The framework calls it only for an entry that fits the reply,
// and never for "." and ".." (the kernel ignores their attributes and counts nothing for them), so
// a filesystem counts exactly what the kernel received. A reply whose ino is 0 says "no
// attributes" (the entry went away meanwhile): nothing is counted, and the kernel looks the name
// up itself when it needs it.
template <typename E> concept lookup_listing_entry = listing_entry<E> && requires(E& e) {
  { e.lookup() } -> std::convertible_to<entry>;
};

template <typename R>
using listing_element_t = std::remove_cvref_t<decltype(*std::begin(std::declval<R&>()))>;

template <typename R> concept listing = requires(R& r) {
  std::begin(r);
  std::end(r);
}
&&listing_entry<listing_element_t<R>>;

template <typename R> concept lookup_listing = listing<R> && lookup_listing_entry<listing_element_t<R>>;

// An entry with its lookup: `lookup` is any callable returning the entry's lookup reply (a lambda
// capturing what it needs), called as e.lookup().
template <typename Lookup>
struct dirplus_entry {
  std::string_view name;
  corofuse::ino ino = 0;
  std::uint32_t type = 0;
  std::uint64_t next_offset = 0;
  Lookup lookup;
};
template <typename Lookup>
dirplus_entry(std::string_view, corofuse::ino, std::uint32_t, std::uint64_t, Lookup) -> dirplus_entry<Lookup>;

// A view over a filesystem's tables together with the lock that keeps them still (a
// std::shared_lock, say): the framework packs the reply before the listing, and so the lock, goes.
// The view is declared after the guard, so it is destroyed first.
template <typename Guard, typename View>
class locked_listing {
 public:
  locked_listing(Guard guard, View view) : guard_(std::move(guard)), view_(std::move(view)) {}
  auto begin() { return std::begin(view_); }
  auto end() { return std::end(view_); }

 private:
  Guard guard_;
  View view_;
};

namespace detail {

// READDIR: every entry that fits.
template <typename Listing>
void pack_listing(Listing& entries, proto::dirent_packer& pack) {
  for (auto&& e : entries) {
    if (!pack.add(std::string_view(e.name), e.ino, e.type, e.next_offset)) return;  // full: resumes at e
  }
}

// READDIRPLUS: every entry that fits, each with its lookup reply (asked for only once the record
// is known to fit, so that no lookup is counted for an entry the kernel never receives).
template <typename Listing>
void pack_listing_plus(Listing& entries, proto::dirent_packer& pack, const cache_defaults& defaults) {
  for (auto&& e : entries) {
    const std::string_view name(e.name);
    if (!pack.fits_plus(name.size())) return;
    abi::entry_out reply{};
    if (name != "." && name != "..") {
      const entry looked = e.lookup();
      if (looked.ino != 0) reply = to_wire(looked, defaults);
    }
    pack.add_plus(name, reply, e.ino, e.type, e.next_offset);
  }
}

}  // namespace detail

}  // namespace corofuse
