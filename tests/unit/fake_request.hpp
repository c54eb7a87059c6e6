// Hand-built FUSE requests for unit tests: a /dev/fuse message and the same request as an io_uring
// ring entry.
#pragma once

#include <cstring>
#include <string>
#include <vector>

#include "corofuse/abi.hpp"
#include "corofuse/proto/request.hpp"

namespace corofuse::testing {
namespace abi = corofuse::abi;
namespace proto = corofuse::proto;

// A /dev/fuse message: header, per-op struct, trailing bytes, extensions.
struct message {
  std::vector<std::byte> bytes;

  // `ext_bytes` of extensions: one record of a type no kernel sends (skipped by the parser).
  message(abi::opcode op, const void* op_struct, std::size_t op_size, const std::string& rest = {}, std::size_t ext_bytes = 0)
      : message(op, op_struct, op_size, rest, unknown_extension(ext_bytes)) {}

  // `ext`, a multiple of 8 bytes, as the extensions.
  message(abi::opcode op, const void* op_struct, std::size_t op_size, const std::string& rest, const std::vector<std::byte>& ext) {
    const std::size_t ext_bytes = ext.size();
    abi::in_header h{};
    h.opcode = static_cast<std::uint32_t>(op);
    h.unique = 42;
    h.nodeid = 7;
    h.uid = 1000;
    h.gid = 100;
    h.pid = 1234;
    h.total_extlen = static_cast<std::uint16_t>(ext_bytes / 8);
    h.len = static_cast<std::uint32_t>(sizeof h + op_size + rest.size() + ext_bytes);
    append(&h, sizeof h);
    append(op_struct, op_size);
    append(rest.data(), rest.size());
    bytes.insert(bytes.end(), ext.begin(), ext.end());
  }
  static std::vector<std::byte> unknown_extension(std::size_t n) {
    std::vector<std::byte> ext(n, std::byte{0xee});
    if (n >= sizeof(abi::ext_header)) {
      const abi::ext_header h{static_cast<std::uint32_t>(n), 0xeeee};
      std::memcpy(ext.data(), &h, sizeof h);
    }
    return ext;
  }
  void append(const void* p, std::size_t n) {
    auto* b = static_cast<const std::byte*>(p);
    bytes.insert(bytes.end(), b, b + n);
  }
  abi::in_header& header() { return *reinterpret_cast<abi::in_header*>(bytes.data()); }
  proto::parse_error parse(proto::request& r) const { return proto::parse_message(bytes, r); }
};

// The same request as an io_uring entry: header buffer + payload.
struct ring_entry {
  abi::uring_req_header hdr{};
  std::vector<std::byte> payload = std::vector<std::byte>(4096);

  // As the kernel lays a request out in an entry: the op struct in op_in, the rest in the payload;
  // but NOTIFY_REPLY and REMOVEMAPPING have an empty first argument, so their struct leads the
  // payload (fuse_set_zero_arg0).
  explicit ring_entry(const message& m, std::size_t op_size) {
    abi::in_header h;
    std::memcpy(&h, m.bytes.data(), sizeof h);
    std::memcpy(hdr.in_out, m.bytes.data(), sizeof(abi::in_header));
    const auto op = static_cast<abi::opcode>(h.opcode);
    const bool in_payload = op == abi::opcode::notify_reply || op == abi::opcode::removemapping;
    if (in_payload) op_size = 0;
    std::memcpy(hdr.op_in, m.bytes.data() + sizeof(abi::in_header), op_size);
    std::size_t rest = m.bytes.size() - sizeof(abi::in_header) - op_size;
    std::memcpy(payload.data(), m.bytes.data() + sizeof(abi::in_header) + op_size, rest);
    hdr.ring_ent_in_out.payload_sz = static_cast<std::uint32_t>(rest);
  }
  proto::parse_error parse(proto::request& r) const { return proto::parse_ring_entry(hdr, payload, payload.size(), r); }
};

inline std::string with_nul(std::string s) { return s.push_back('\0'), s; }


}  // namespace corofuse::testing
