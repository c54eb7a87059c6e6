// The request extensions: what the kernel appends to a creating request (CREATE, MKNOD, MKDIR,
// SYMLINK, TMPFILE) after its arguments, total_extlen * 8 bytes, when INIT agreed to them.
//
// The area is a list of records, each led by {u32 size; u32 type} with size a multiple of 8 that
// counts the leader. Types 0..31 are a security-context header (FUSE_SECURITY_CTX): the type is
// then the number of contexts that follow, each {u32 size; u32 padding} + the xattr name with its
// NUL + `size` bytes of context, padded to 8. Type 32 lists supplementary groups
// (FUSE_CREATE_SUPP_GROUP): {u32 nr_groups} + nr_groups u32 group ids; the kernel sends the parent
// directory's group when the caller belongs to it through a supplementary group only. Records of
// other types are skipped: a newer kernel only sends what INIT agreed to, and a type we do not
// know cannot change what we do. Everything is checked against the area before it is read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>

#include "corofuse/abi/protocol.hpp"
#include "corofuse/abi/structs.hpp"

namespace corofuse::proto {

class extensions {
 public:
  // Supplementary groups the kernel named (at most one today: the parent's group).
  std::size_t group_count() const noexcept { return groups_.size() / sizeof(std::uint32_t); }
  std::uint32_t group(std::size_t i) const noexcept {
    std::uint32_t g = 0;
    if (i < group_count()) std::memcpy(&g, groups_.data() + i * sizeof g, sizeof g);  // may be unaligned
    return g;
  }
  bool has_group(std::uint32_t g) const noexcept {
    for (std::size_t i = 0; i < group_count(); ++i)
      if (group(i) == g) return true;
    return false;
  }

  // The security contexts (xattr name and value) the LSM wants the new object to carry. The
  // kernel sends at most one (an LSM gives one context per new dentry); a header with no
  // context (no LSM labels dentries, the usual case without SELinux) counts as none.
  std::size_t security_context_count() const noexcept { return secctx_count_; }
  std::string_view security_context_name() const noexcept { return secctx_name_; }
  std::span<const std::byte> security_context_value() const noexcept { return secctx_value_; }

  // Parses `area` (total_extlen * 8 bytes); false when a record does not fit or is malformed.
  bool parse(std::span<const std::byte> area) noexcept {
    *this = extensions{};
    while (!area.empty()) {
      abi::ext_header h;
      if (area.size() < sizeof h) return false;
      std::memcpy(&h, area.data(), sizeof h);
      if (h.size < sizeof h || h.size % 8 != 0 || h.size > area.size()) return false;
      const auto body = area.subspan(sizeof h, h.size - sizeof h);
      if (h.type <= static_cast<std::uint32_t>(abi::ext_type::max_nr_secctx)) {
        if (!parse_security_contexts(body, h.type)) return false;
      } else if (h.type == static_cast<std::uint32_t>(abi::ext_type::groups)) {
        if (!groups_.empty()) return false;  // one list per request
        abi::supp_groups sg;
        if (body.size() < sizeof sg) return false;
        std::memcpy(&sg, body.data(), sizeof sg);
        const auto ids = body.subspan(sizeof sg);
        if (sg.nr_groups > ids.size() / sizeof(std::uint32_t)) return false;
        groups_ = ids.first(std::size_t{sg.nr_groups} * sizeof(std::uint32_t));
      }
      area = area.subspan(h.size);
    }
    return true;
  }

 private:
  bool parse_security_contexts(std::span<const std::byte> body, std::uint32_t count) noexcept {
    if (secctx_seen_) return false;  // one header per request
    secctx_seen_ = true;
    for (std::uint32_t i = 0; i < count; ++i) {
      abi::secctx c;
      if (body.size() < sizeof c) return false;
      std::memcpy(&c, body.data(), sizeof c);
      const auto rest = body.subspan(sizeof c);
      const void* nul = std::memchr(rest.data(), 0, rest.size());
      if (!nul) return false;
      const std::size_t name_len = static_cast<std::size_t>(static_cast<const std::byte*>(nul) - rest.data());
      if (name_len == 0 || c.size > rest.size() - name_len - 1) return false;
      const std::size_t record = (sizeof c + name_len + 1 + c.size + 7) & ~std::size_t{7};
      if (record > body.size()) return false;
      if (i == 0) {
        secctx_name_ = std::string_view(reinterpret_cast<const char*>(rest.data()), name_len);
        secctx_value_ = rest.subspan(name_len + 1, c.size);
      }
      body = body.subspan(record);
    }
    secctx_count_ = count;
    return true;
  }

  std::span<const std::byte> groups_;
  std::string_view secctx_name_;
  std::span<const std::byte> secctx_value_;
  std::uint32_t secctx_count_ = 0;
  bool secctx_seen_ = false;
};

}  // namespace corofuse::proto
