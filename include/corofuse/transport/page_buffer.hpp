// Page-aligned, uninitialised byte buffers for requests and replies. Page alignment lets a
// handler read into them from a file opened with O_DIRECT (which refuses unaligned memory), and
// the kernel and the handlers write before anything is read, so nothing is zeroed.
#pragma once

#include <cstddef>
#include <memory>
#include <new>

namespace corofuse::transport {

inline constexpr std::size_t page_size = 4096;

struct page_buffer_free {
  void operator()(std::byte* p) const noexcept { ::operator delete[](p, std::align_val_t{page_size}); }
};
using page_buffer = std::unique_ptr<std::byte[], page_buffer_free>;

inline page_buffer make_page_buffer(std::size_t n) {
  return page_buffer(static_cast<std::byte*>(::operator new[](n, std::align_val_t{page_size})));
}

}  // namespace corofuse::transport
