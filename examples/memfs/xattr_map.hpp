// A node's extended attributes kept in memory, with tmpfs's rules: the user., trusted. and
// security. namespaces (system.* holds ACLs, which need more than a map: EOPNOTSUPP), values up
// to 64 KiB, XATTR_CREATE and XATTR_REPLACE, size queries with an empty buffer, ERANGE for a short
// one, and trusted.* names listed only to a privileged caller. Shared by the in-memory examples.
// Not thread-safe: the caller holds the node's lock.
#pragma once

#include <sys/xattr.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <map>
#include <span>
#include <string>
#include <string_view>

#include "corofuse/fs/result.hpp"

class xattr_map {
 public:
  static constexpr std::size_t value_max = 65536;

  // 0, or the errno a name gets before anything is looked up.
  static int check_name(std::string_view name) {
    if (name.empty() || name.size() > 255) return name.empty() ? EINVAL : ERANGE;
    for (std::string_view ns : {"user.", "trusted.", "security."})
      if (name.substr(0, ns.size()) == ns && name.size() > ns.size()) return 0;
    return EOPNOTSUPP;
  }

  corofuse::result<std::size_t> get(std::string_view name, std::span<std::byte> out) const {
    if (int e = check_name(name)) return corofuse::error(e);
    auto it = map_.find(name);
    if (it == map_.end()) return corofuse::error(ENODATA);
    if (out.empty()) return it->second.size();
    if (out.size() < it->second.size()) return corofuse::error(ERANGE);
    std::memcpy(out.data(), it->second.data(), it->second.size());
    return it->second.size();
  }

  // The names, each NUL-terminated; trusted.* only when `privileged` (root stands in for
  // CAP_SYS_ADMIN: a request carries no capabilities).
  corofuse::result<std::size_t> list(bool privileged, std::span<std::byte> out) const {
    auto visible = [&](const std::string& k) { return privileged || k.rfind("trusted.", 0) != 0; };
    std::size_t total = 0;
    for (const auto& [k, v] : map_)
      if (visible(k)) total += k.size() + 1;
    if (out.empty()) return total;
    if (out.size() < total) return corofuse::error(ERANGE);
    std::size_t at = 0;
    for (const auto& [k, v] : map_) {
      if (!visible(k)) continue;
      std::memcpy(out.data() + at, k.c_str(), k.size() + 1);
      at += k.size() + 1;
    }
    return total;
  }

  corofuse::result<> set(std::string_view name, std::span<const std::byte> value, int flags) {
    if (int e = check_name(name)) return corofuse::error(e);
    if (value.size() > value_max) return corofuse::error(E2BIG);
    auto it = map_.find(name);
    if ((flags & XATTR_CREATE) && it != map_.end()) return corofuse::error(EEXIST);
    if ((flags & XATTR_REPLACE) && it == map_.end()) return corofuse::error(ENODATA);
    std::string v(reinterpret_cast<const char*>(value.data()), value.size());
    if (it == map_.end()) map_.emplace(std::string(name), std::move(v));
    else it->second = std::move(v);
    return corofuse::ok();
  }

  corofuse::result<> remove(std::string_view name) {
    if (int e = check_name(name)) return corofuse::error(e);
    auto it = map_.find(name);
    if (it == map_.end()) return corofuse::error(ENODATA);
    map_.erase(it);
    return corofuse::ok();
  }

  // Sets `name` without the checks (a security label the kernel sent with a creating request).
  void put(std::string_view name, std::string value) { map_[std::string(name)] = std::move(value); }

 private:
  std::map<std::string, std::string, std::less<>> map_;
};
