// Requests as the kernel writes them, built by hand: a /dev/fuse message and the same request as
// an io_uring ring entry (header block + payload), plus builders for the common operations. Part
// of the test kit (corofuse/testing.hpp); corofuse's own tests use it too.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "corofuse/abi.hpp"
#include "corofuse/proto/request.hpp"

namespace corofuse::testing {
namespace abi = corofuse::abi;
namespace proto = corofuse::proto;

// A /dev/fuse message: header, per-op struct, trailing bytes, extensions. The header says unique
// 42, node 7, uid 1000, gid 100, pid 1234 until changed (header()); driver::send numbers each
// request and fills in the caller it is set to.
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
    if (rest > payload.size()) payload.resize(rest);  // a large WRITE: the payload holds it all
    std::memcpy(payload.data(), m.bytes.data() + sizeof(abi::in_header) + op_size, rest);
    hdr.ring_ent_in_out.payload_sz = static_cast<std::uint32_t>(rest);
  }
  proto::parse_error parse(proto::request& r) const { return proto::parse_ring_entry(hdr, payload, payload.size(), r); }
};

inline std::string with_nul(std::string s) { return s.push_back('\0'), s; }

// ---- builders: one request each, addressed to `node` (the header's nodeid) ---------------------

namespace request {
template <typename T>
message with(abi::opcode op, std::uint64_t node, const T& op_struct, const std::string& rest = {}) {
  message m(op, &op_struct, sizeof op_struct, rest);
  m.header().nodeid = node;
  return m;
}
inline message bare(abi::opcode op, std::uint64_t node, const std::string& rest = {}) {
  message m(op, nullptr, 0, rest);
  m.header().nodeid = node;
  return m;
}

inline message lookup(std::uint64_t parent, std::string_view name) {
  return bare(abi::opcode::lookup, parent, with_nul(std::string(name)));
}
inline message getattr(std::uint64_t node) { return with(abi::opcode::getattr, node, abi::getattr_in{}); }
inline message forget(std::uint64_t node, std::uint64_t lookups) { return with(abi::opcode::forget, node, abi::forget_in{lookups}); }
inline message mkdir(std::uint64_t parent, std::string_view name, std::uint32_t mode, std::uint32_t umask = 0) {
  return with(abi::opcode::mkdir, parent, abi::mkdir_in{mode, umask}, with_nul(std::string(name)));
}
inline message unlink(std::uint64_t parent, std::string_view name) {
  return bare(abi::opcode::unlink, parent, with_nul(std::string(name)));
}
inline message rmdir(std::uint64_t parent, std::string_view name) { return bare(abi::opcode::rmdir, parent, with_nul(std::string(name))); }
inline message create(std::uint64_t parent, std::string_view name, std::uint32_t mode, std::uint32_t flags, std::uint32_t umask = 0) {
  abi::create_in c{};
  c.flags = flags;
  c.mode = mode;
  c.umask = umask;
  return with(abi::opcode::create, parent, c, with_nul(std::string(name)));
}
inline message open(std::uint64_t node, std::uint32_t flags) { return with(abi::opcode::open, node, abi::open_in{flags, 0}); }
inline message opendir(std::uint64_t node) { return with(abi::opcode::opendir, node, abi::open_in{0, 0}); }
inline message read(std::uint64_t node, std::uint64_t fh, std::uint64_t offset, std::uint32_t size) {
  abi::read_in r{};
  r.fh = fh;
  r.offset = offset;
  r.size = size;
  return with(abi::opcode::read, node, r);
}
inline message readdir(std::uint64_t node, std::uint64_t fh, std::uint64_t offset, std::uint32_t size = 4096) {
  message m = read(node, fh, offset, size);
  m.header().opcode = static_cast<std::uint32_t>(abi::opcode::readdir);
  return m;
}
inline message readdirplus(std::uint64_t node, std::uint64_t fh, std::uint64_t offset, std::uint32_t size = 4096) {
  message m = read(node, fh, offset, size);
  m.header().opcode = static_cast<std::uint32_t>(abi::opcode::readdirplus);
  return m;
}
inline message write(std::uint64_t node, std::uint64_t fh, std::uint64_t offset, std::string_view data) {
  abi::write_in w{};
  w.fh = fh;
  w.offset = offset;
  w.size = static_cast<std::uint32_t>(data.size());
  return with(abi::opcode::write, node, w, std::string(data));
}
inline message flush(std::uint64_t node, std::uint64_t fh) {
  abi::flush_in f{};
  f.fh = fh;
  return with(abi::opcode::flush, node, f);
}
inline message release(std::uint64_t node, std::uint64_t fh, bool directory = false) {
  abi::release_in r{};
  r.fh = fh;
  return with(directory ? abi::opcode::releasedir : abi::opcode::release, node, r);
}
inline message statfs(std::uint64_t node) { return bare(abi::opcode::statfs, node); }
}  // namespace request

}  // namespace corofuse::testing
