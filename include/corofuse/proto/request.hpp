// A validated view of one FUSE request, whichever way it arrived.
//
// parse_message() takes a /dev/fuse message (header, per-op struct, arguments, extensions, all
// contiguous); parse_ring_entry() takes an io_uring entry's header buffer and payload. Both check
// every length against the buffer they were given before anything is read, and return a
// parse_error naming what is wrong instead of a view that could read out of bounds. The view does
// not own the bytes: it is valid while the buffer is.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <type_traits>

#include "corofuse/abi/protocol.hpp"
#include "corofuse/abi/structs.hpp"
#include "corofuse/abi/uring.hpp"
#include "corofuse/proto/extensions.hpp"
#include "corofuse/proto/op_layout.hpp"

namespace corofuse::proto {

using bytes = std::span<const std::byte>;

enum class parse_error : std::uint8_t {
  none,
  short_header,      // fewer bytes than an in_header
  length_mismatch,   // in_header.len disagrees with the bytes received
  unknown_opcode,    // not an opcode of protocol 7.46 (answered ENOSYS)
  short_op_struct,   // the per-op struct is cut short
  bad_extensions,    // total_extlen points outside the request, or a malformed extension
  missing_name,      // a name without its terminating NUL
  bad_data_size,     // the data length disagrees with the size the op struct declares
  payload_overflow,  // the ring entry's payload_sz exceeds the payload buffer
  zero_copy_entry,   // a 7.46 zero-copy entry: its data is in the client's pages, not the payload
};

constexpr std::string_view describe(parse_error e) noexcept {
  switch (e) {
    case parse_error::none: return "ok";
    case parse_error::short_header: return "request shorter than its header";
    case parse_error::length_mismatch: return "request length field disagrees with the bytes received";
    case parse_error::unknown_opcode: return "unknown opcode";
    case parse_error::short_op_struct: return "request's per-op struct is truncated";
    case parse_error::bad_extensions: return "request extensions exceed the request or are malformed";
    case parse_error::missing_name: return "name without terminating NUL";
    case parse_error::bad_data_size: return "data length disagrees with the declared size";
    case parse_error::payload_overflow: return "ring payload size exceeds the payload buffer";
    case parse_error::zero_copy_entry: return "zero-copy ring entry given to the copying parser";
  }
  return "?";
}

// The errno a malformed request is answered with.
constexpr int errno_for(parse_error e) noexcept { return e == parse_error::unknown_opcode ? 38 /*ENOSYS*/ : 22 /*EINVAL*/; }

class request {
 public:
  const abi::in_header& header() const noexcept { return header_; }
  abi::opcode opcode() const noexcept { return static_cast<abi::opcode>(header_.opcode); }
  std::uint64_t unique() const noexcept { return header_.unique; }
  std::uint64_t nodeid() const noexcept { return header_.nodeid; }
  std::uint32_t uid() const noexcept { return header_.uid; }
  std::uint32_t gid() const noexcept { return header_.gid; }
  std::uint32_t pid() const noexcept { return header_.pid; }

  // The per-op struct, copied out (buffers need not be aligned; these structs are small).
  template <typename T>
  T op() const noexcept {
    static_assert(std::is_trivially_copyable_v<T>);
    T v{};
    std::memcpy(&v, op_.data(), std::min(sizeof(T), op_.size()));
    return v;
  }
  bytes op_bytes() const noexcept { return op_; }

  // The arguments after the per-op struct (names, data), extensions excluded.
  bytes args() const noexcept { return args_; }
  // The request extensions (security contexts, supplementary groups), total_extlen * 8 bytes.
  bytes extensions() const noexcept { return ext_; }
  // The same, parsed (validated by the parser): supplementary groups and security contexts.
  const proto::extensions& parsed_extensions() const noexcept { return parsed_ext_; }

  // First and second NUL-terminated names of the arguments (validated by the parser for the
  // opcodes whose layout has them; empty otherwise).
  std::string_view name() const noexcept { return name1_; }
  std::string_view second_name() const noexcept { return name2_; }
  // The bytes after the names: WRITE data, SETXATTR value, IOCTL input.
  bytes data() const noexcept { return data_; }

 private:
  friend parse_error finish_parse(request&, const layout_options&) noexcept;
  friend parse_error parse_message(bytes, request&, const layout_options&) noexcept;
  friend parse_error parse_ring_entry(const abi::uring_req_header&, bytes, std::size_t, request&, const layout_options&, bytes) noexcept;

  abi::in_header header_{};
  bytes op_;
  bytes args_;
  bytes ext_;
  proto::extensions parsed_ext_;
  bytes data_;
  std::string_view name1_;
  std::string_view name2_;
};

namespace detail {
// Splits `in` at its first NUL: the name before it, the rest after it. False when there is none.
inline bool take_name(bytes& in, std::string_view& out) noexcept {
  const void* nul = std::memchr(in.data(), 0, in.size());
  if (!nul) return false;
  std::size_t n = static_cast<std::size_t>(static_cast<const std::byte*>(nul) - in.data());
  out = std::string_view(reinterpret_cast<const char*>(in.data()), n);
  in = in.subspan(n + 1);
  return true;
}
}  // namespace detail

// Checks the trailing arguments against the opcode's layout and fills names and data.
inline parse_error finish_parse(request& r, const layout_options& o) noexcept {
  const op_layout l = layout_of(r.opcode(), o);
  bytes rest = r.args_;
  switch (l.rest) {
    case trailing::none: break;
    case trailing::name:
      if (!detail::take_name(rest, r.name1_)) return parse_error::missing_name;
      break;
    case trailing::two_names:
      if (!detail::take_name(rest, r.name1_) || !detail::take_name(rest, r.name2_)) return parse_error::missing_name;
      break;
    case trailing::data:
      if (r.opcode() == abi::opcode::setxattr) {
        if (!detail::take_name(rest, r.name1_)) return parse_error::missing_name;
        auto in = r.op<abi::setxattr_in>();
        if (rest.size() < in.size) return parse_error::bad_data_size;
        r.data_ = rest.first(in.size);
      } else if (r.opcode() == abi::opcode::write) {
        auto in = r.op<abi::write_in>();
        if (rest.size() < in.size) return parse_error::bad_data_size;
        r.data_ = rest.first(in.size);
      } else if (r.opcode() == abi::opcode::ioctl) {
        auto in = r.op<abi::ioctl_in>();
        if (rest.size() < in.in_size) return parse_error::bad_data_size;
        r.data_ = rest.first(in.in_size);
      } else {
        r.data_ = rest;  // NOTIFY_REPLY: the retrieved bytes
      }
      break;
    case trailing::array: {
      std::size_t count = r.opcode() == abi::opcode::batch_forget ? r.op<abi::batch_forget_in>().count
                                                                  : r.op<abi::removemapping_in>().count;
      std::size_t each = r.opcode() == abi::opcode::batch_forget ? sizeof(abi::forget_one) : sizeof(abi::removemapping_one);
      if (count > rest.size() / each) return parse_error::bad_data_size;
      r.data_ = rest.first(count * each);
      break;
    }
  }
  return parse_error::none;
}

// A whole /dev/fuse message.
inline parse_error parse_message(bytes msg, request& r, const layout_options& o = {}) noexcept {
  r = request{};
  if (msg.size() < sizeof(abi::in_header)) return parse_error::short_header;
  std::memcpy(&r.header_, msg.data(), sizeof(abi::in_header));
  if (r.header_.len != msg.size()) return parse_error::length_mismatch;
  const op_layout l = layout_of(r.opcode(), o);
  if (!l.known) return parse_error::unknown_opcode;
  bytes body = msg.subspan(sizeof(abi::in_header));
  std::size_t ext = std::size_t{r.header_.total_extlen} * 8;
  if (ext > body.size()) return parse_error::bad_extensions;
  r.ext_ = body.last(ext);
  if (!r.parsed_ext_.parse(r.ext_)) return parse_error::bad_extensions;
  body = body.first(body.size() - ext);
  std::size_t op_size = l.op_size;
  // Kernels before protocol 7.36 send the 16-byte INIT of old; op<init_in>() zero-fills the rest.
  if (r.opcode() == abi::opcode::init && body.size() < op_size && body.size() >= 16) op_size = body.size();
  if (body.size() < op_size) return parse_error::short_op_struct;
  r.op_ = body.first(op_size);
  r.args_ = body.subspan(op_size);
  return finish_parse(r, o);
}

// An io_uring entry: its header buffer (in_header in in_out, the per-op struct in op_in,
// payload_sz in ring_ent_in_out) and its payload (the arguments, then the extensions).
// `payload_capacity` is the payload buffer's size: payload_sz beyond it is rejected.
//
// A 7.46 zero-copy entry (FUSE_URING_ENT_ZERO_COPY) carries its page data in the client's pages,
// registered at the entry's fixed-buffer slot, not in the payload. Without a `zero_copy_window`
// it is refused (reading the data from the payload would hand stale bytes of an earlier request to
// the filesystem). With one (the transport's never-mapped stand-in for the slot, see
// context::set_registered_buffer), a WRITE's data is that window's first `size` bytes, to be
// moved with context::write_fixed, and a READ has nothing in the payload at all.
inline parse_error parse_ring_entry(const abi::uring_req_header& hdr, bytes payload, std::size_t payload_capacity, request& r,
                                    const layout_options& o = {}, bytes zero_copy_window = {}) noexcept {
  r = request{};
  std::memcpy(&r.header_, hdr.in_out, sizeof(abi::in_header));
  const bool zero_copy = hdr.ring_ent_in_out.flags & abi::uring_ent_zero_copy;
  if (zero_copy && zero_copy_window.empty()) return parse_error::zero_copy_entry;
  if (zero_copy && r.opcode() != abi::opcode::read && r.opcode() != abi::opcode::write) return parse_error::zero_copy_entry;
  std::size_t payload_sz = hdr.ring_ent_in_out.payload_sz;
  const op_layout l = layout_of(r.opcode(), o);
  if (!l.known) return parse_error::unknown_opcode;
  if (l.op_size > abi::uring_op_in_out_size) return parse_error::short_op_struct;
  // The kernel puts a request's first argument in op_in, and gives NOTIFY_REPLY and
  // REMOVEMAPPING an empty first argument (fuse_set_zero_arg0): their struct leads the payload.
  const bool op_in_payload = r.opcode() == abi::opcode::notify_reply || r.opcode() == abi::opcode::removemapping;
  if (!op_in_payload) r.op_ = bytes(reinterpret_cast<const std::byte*>(hdr.op_in), l.op_size);
  std::size_t page_bytes = 0;
  if (zero_copy && r.opcode() == abi::opcode::write) {
    page_bytes = r.op<abi::write_in>().size;  // counted in payload_sz, but not in the payload
    if (page_bytes > payload_sz || page_bytes > zero_copy_window.size()) return parse_error::bad_data_size;
    payload_sz -= page_bytes;
  }
  if (payload_sz > payload_capacity || payload_sz > payload.size()) return parse_error::payload_overflow;
  bytes body = payload.first(payload_sz);
  std::size_t ext = std::size_t{r.header_.total_extlen} * 8;
  if (ext > body.size()) return parse_error::bad_extensions;
  r.ext_ = body.last(ext);
  if (!r.parsed_ext_.parse(r.ext_)) return parse_error::bad_extensions;
  r.args_ = body.first(body.size() - ext);
  if (op_in_payload) {
    if (r.args_.size() < l.op_size) return parse_error::short_op_struct;
    r.op_ = r.args_.first(l.op_size);
    r.args_ = r.args_.subspan(l.op_size);
  }
  if (zero_copy) {
    if (!r.args_.empty()) return parse_error::bad_data_size;  // READ and WRITE carry nothing else
    r.data_ = zero_copy_window.first(page_bytes);
    return parse_error::none;
  }
  return finish_parse(r, o);
}

}  // namespace corofuse::proto
