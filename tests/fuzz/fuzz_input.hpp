// Shared by the fuzz targets and the seed generator: reading an input as little-endian fields
// (what runs out reads as zeros), building /dev/fuse messages, and the input formats.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "corofuse/abi.hpp"

namespace corofuse::fuzz {

// Fails the run loudly: libFuzzer records the input, the replay main's exit status is non-zero.
[[noreturn]] inline void fail(const char* what, int line) {
  std::fprintf(stderr, "fuzz invariant violated (line %d): %s\n", line, what);
  std::abort();
}
#define FUZZ_CHECK(cond) ((cond) ? (void)0 : ::corofuse::fuzz::fail(#cond, __LINE__))

class reader {
 public:
  reader(const std::uint8_t* data, std::size_t size) noexcept : data_(data), size_(size) {}
  std::size_t left() const noexcept { return size_ - at_; }
  bool empty() const noexcept { return at_ >= size_; }
  template <typename T>
  T get() noexcept {
    T v{};
    const std::size_t n = std::min(sizeof(T), left());
    std::memcpy(&v, data_ + at_, n);
    at_ += n;
    return v;
  }
  // Up to n bytes (fewer when the input ends).
  std::span<const std::uint8_t> take(std::size_t n) noexcept {
    n = std::min(n, left());
    std::span<const std::uint8_t> s(data_ + at_, n);
    at_ += n;
    return s;
  }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t at_ = 0;
};

// A /dev/fuse message: in_header (len computed), then `body` (per-op struct, arguments), then
// `ext_bytes` of extensions.
inline std::vector<std::byte> make_message(abi::opcode op, std::uint64_t nodeid, std::span<const std::byte> body, std::size_t ext_bytes = 0,
                                           std::uint32_t uid = 1000, std::uint32_t gid = 100) {
  abi::in_header h{};
  h.opcode = static_cast<std::uint32_t>(op);
  h.unique = 42;
  h.nodeid = nodeid;
  h.uid = uid;
  h.gid = gid;
  h.pid = 1234;
  h.total_extlen = static_cast<std::uint16_t>(ext_bytes / 8);
  h.len = static_cast<std::uint32_t>(sizeof h + body.size() + ext_bytes / 8 * 8);
  std::vector<std::byte> m(sizeof h);
  std::memcpy(m.data(), &h, sizeof h);
  m.insert(m.end(), body.begin(), body.end());
  m.resize(m.size() + ext_bytes / 8 * 8, std::byte{0xee});
  return m;
}

// Appends a struct's bytes, or a string's (with its NUL when asked).
struct body_builder {
  std::vector<std::byte> bytes;
  template <typename T>
  body_builder& put(const T& v) {
    auto* b = reinterpret_cast<const std::byte*>(&v);
    bytes.insert(bytes.end(), b, b + sizeof v);
    return *this;
  }
  body_builder& str(const std::string& s, bool nul = true) {
    auto* b = reinterpret_cast<const std::byte*>(s.data());
    bytes.insert(bytes.end(), b, b + s.size());
    if (nul) bytes.push_back(std::byte{0});
    return *this;
  }
};

// ---- request_parser_fuzz's input ---------------------------------------------------------------
// [u8 flags][u32 explicit payload_sz][u16 zero-copy window size][u8 capacity cut] then a /dev/fuse
// message. flags bit 0: the ring forms also use the explicit payload_sz (beside the natural one).
inline constexpr std::size_t parser_prefix_size = 8;

// ---- dispatch_memfs_fuzz's input ---------------------------------------------------------------
// A sequence of records: [u8 opcode][u8 mode][u8 node][u16 body length][body]. `opcode` is taken
// modulo 64 (the protocol's opcodes below 64; unknown ones are answered ENOSYS); `node` selects
// the request's nodeid (below: known nodes); mode bit 0: deliver as an io_uring entry (the reply
// written over the payload the request came in, as the ring transport does), else as /dev/fuse;
// mode bits 1-2: 0, 8, 16 or 24 bytes of extensions; mode bit 3: uid 0 (else 1000).
// The body is the per-op struct and the arguments, as the kernel lays them out.
// node: 0-31 index the nodes seen so far (0: the root), 32-254 that value - 32 as a raw nodeid,
// 255: a raw u64 nodeid after the record header.
struct dispatch_record {
  std::uint8_t opcode;
  std::uint8_t mode;
  std::uint8_t node;
  std::vector<std::byte> body;
};

inline void append_record(std::vector<std::uint8_t>& out, const dispatch_record& r) {
  out.push_back(r.opcode);
  out.push_back(r.mode);
  out.push_back(r.node);
  const std::uint16_t n = static_cast<std::uint16_t>(r.body.size());
  out.push_back(static_cast<std::uint8_t>(n & 0xff));
  out.push_back(static_cast<std::uint8_t>(n >> 8));
  for (std::byte b : r.body) out.push_back(static_cast<std::uint8_t>(b));
}

}  // namespace corofuse::fuzz
