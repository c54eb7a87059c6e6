// Request extensions (security contexts, supplementary groups): laid out as the kernel's
// get_create_ext() does, parsed in both arrival forms, refused when malformed, and handed to a
// creating handler through its context.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <cstring>
#include <string>
#include <vector>

#include "corofuse/corofuse.hpp"
#include "corofuse/fs/dispatch.hpp"
#include "tests/unit/fake_request.hpp"

namespace abi = corofuse::abi;
namespace cf = corofuse;
namespace io = corofuse::io;
namespace proto = corofuse::proto;
using corofuse::testing::message;
using corofuse::testing::ring_entry;
using corofuse::testing::with_nul;

namespace {

void put32(std::vector<std::byte>& v, std::uint32_t x) {
  const auto* b = reinterpret_cast<const std::byte*>(&x);
  v.insert(v.end(), b, b + 4);
}
void pad8(std::vector<std::byte>& v) { v.resize((v.size() + 7) & ~std::size_t{7}, std::byte{0}); }

// A security-context header with `contexts` (name, value) records, as get_security_context()
// builds it: {size, nr_secctx}, then per context {size, padding} + name + NUL + value, padded.
std::vector<std::byte> secctx_record(const std::vector<std::pair<std::string, std::string>>& contexts) {
  std::vector<std::byte> v;
  put32(v, 0);  // size, filled in below
  put32(v, static_cast<std::uint32_t>(contexts.size()));
  for (const auto& [name, value] : contexts) {
    put32(v, static_cast<std::uint32_t>(value.size()));
    put32(v, 0);
    for (char c : name) v.push_back(static_cast<std::byte>(c));
    v.push_back(std::byte{0});
    for (char c : value) v.push_back(static_cast<std::byte>(c));
    pad8(v);
  }
  const auto size = static_cast<std::uint32_t>(v.size());
  std::memcpy(v.data(), &size, 4);
  return v;
}

// A supplementary-groups record, as get_create_supp_group() builds it.
std::vector<std::byte> groups_record(const std::vector<std::uint32_t>& groups) {
  std::vector<std::byte> v;
  put32(v, 0);
  put32(v, static_cast<std::uint32_t>(abi::ext_type::groups));
  put32(v, static_cast<std::uint32_t>(groups.size()));
  for (auto g : groups) put32(v, g);
  pad8(v);
  const auto size = static_cast<std::uint32_t>(v.size());
  std::memcpy(v.data(), &size, 4);
  return v;
}

std::vector<std::byte> cat(std::vector<std::byte> a, const std::vector<std::byte>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::string text(std::span<const std::byte> b) { return std::string(reinterpret_cast<const char*>(b.data()), b.size()); }

}  // namespace

TEST_CASE("extensions: a security context and the parent's group, in both arrival forms", "[proto][ext]") {
  abi::mkdir_in mk{0755, 022};
  const auto ext = cat(secctx_record({{"security.selinux", "system_u:object_r:tmp_t:s0"}}), groups_record({2000}));
  message m(abi::opcode::mkdir, &mk, sizeof mk, with_nul("dir"), ext);
  ring_entry e(m, sizeof mk);
  proto::request r;
  for (int form = 0; form < 2; ++form) {
    INFO((form == 0 ? "/dev/fuse" : "ring"));
    REQUIRE((form == 0 ? m.parse(r) : e.parse(r)) == proto::parse_error::none);
    CHECK(r.name() == "dir");
    const proto::extensions& x = r.parsed_extensions();
    CHECK(x.security_context_count() == 1);
    CHECK(x.security_context_name() == "security.selinux");
    CHECK(text(x.security_context_value()) == "system_u:object_r:tmp_t:s0");
    CHECK(x.group_count() == 1);
    CHECK(x.group(0) == 2000);
    CHECK(x.has_group(2000));
    CHECK_FALSE(x.has_group(2001));
  }
}

TEST_CASE("extensions: an empty security-context header (no LSM labels dentries) means none", "[proto][ext]") {
  abi::create_in in{};
  message m(abi::opcode::create, &in, sizeof in, with_nul("f"), secctx_record({}));
  proto::request r;
  REQUIRE(m.parse(r) == proto::parse_error::none);
  CHECK(r.parsed_extensions().security_context_count() == 0);
  CHECK(r.parsed_extensions().security_context_name().empty());
  CHECK(r.parsed_extensions().group_count() == 0);
}

TEST_CASE("extensions: records of an unknown type are skipped", "[proto][ext]") {
  abi::mknod_in in{};
  std::vector<std::byte> unknown;
  put32(unknown, 16);
  put32(unknown, 77);
  put32(unknown, 0xdeadbeef);
  put32(unknown, 0xdeadbeef);
  message m(abi::opcode::mknod, &in, sizeof in, with_nul("n"), cat(unknown, groups_record({5, 6, 7})));
  proto::request r;
  REQUIRE(m.parse(r) == proto::parse_error::none);
  CHECK(r.parsed_extensions().group_count() == 3);
  CHECK(r.parsed_extensions().group(2) == 7);
  CHECK(r.parsed_extensions().group(3) == 0);  // past the end: nothing read
}

TEST_CASE("extensions: malformed areas are refused as bad_extensions, in both forms", "[proto][ext]") {
  abi::mkdir_in mk{0755, 022};
  auto with_size = [](std::vector<std::byte> v, std::uint32_t size) {
    std::memcpy(v.data(), &size, 4);
    return v;
  };
  std::vector<std::byte> no_nul = secctx_record({{"security.x", "v"}});
  std::fill(no_nul.begin() + 16, no_nul.end(), std::byte{'a'});  // the name runs to the end
  std::vector<std::byte> long_value = secctx_record({{"security.x", "v"}});
  const std::uint32_t huge = 1000;
  std::memcpy(long_value.data() + 8, &huge, 4);  // the context's size points past its record
  std::vector<std::byte> many_groups = groups_record({1});
  const std::uint32_t count = 100;
  std::memcpy(many_groups.data() + 8, &count, 4);
  std::vector<std::byte> empty_name = secctx_record({{"", "v"}});
  std::vector<std::byte> missing_context = secctx_record({{"security.x", "v"}});
  const std::uint32_t two = 2;
  std::memcpy(missing_context.data() + 4, &two, 4);  // says two, holds one

  const std::vector<std::pair<const char*, std::vector<std::byte>>> cases = {
      {"size below the leader", with_size(groups_record({1}), 4)},
      {"size not a multiple of 8", with_size(groups_record({1}), 12)},
      {"size past the area", with_size(groups_record({1}), 64)},
      {"more groups than bytes", many_groups},
      {"two group lists", cat(groups_record({1}), groups_record({2}))},
      {"two security-context headers", cat(secctx_record({}), secctx_record({}))},
      {"a name without its NUL", no_nul},
      {"an empty name", empty_name},
      {"a context longer than its record", long_value},
      {"fewer contexts than announced", missing_context},
  };
  for (const auto& [what, ext] : cases) {
    INFO(what);
    message m(abi::opcode::mkdir, &mk, sizeof mk, with_nul("dir"), ext);
    ring_entry e(m, sizeof mk);
    proto::request r;
    CHECK(m.parse(r) == proto::parse_error::bad_extensions);
    CHECK(e.parse(r) == proto::parse_error::bad_extensions);
  }
}

namespace {

// Records what a creating handler learns from its context.
struct creating_fs {
  std::string seen;
  cf::result<cf::entry> mkdir(cf::context& c, cf::ino, std::string_view name, mode_t, mode_t) {
    seen = std::string(name) + " uid=" + std::to_string(c.uid()) + " known=" + (c.caller_known() ? "1" : "0") +
           " in2000=" + (c.caller_in_group(2000) ? "1" : "0") + " in100=" + (c.caller_in_group(100) ? "1" : "0") +
           " in3000=" + (c.caller_in_group(3000) ? "1" : "0") + " ctx=" + std::string(c.security_context_name()) + ":" +
           text(c.security_context_value());
    cf::entry e;
    e.ino = 5;
    e.attr.st_ino = 5;
    e.attr.st_mode = S_IFDIR | 0755;
    return e;
  }
  cf::result<cf::attr> getattr(cf::context& c, cf::ino, const cf::file_info*) {
    seen = std::string("getattr known=") + (c.caller_known() ? "1" : "0") + " in2000=" + (c.caller_in_group(2000) ? "1" : "0");
    cf::attr a;
    a.st.st_mode = S_IFDIR | 0755;
    return a;
  }
};

}  // namespace

TEST_CASE("a creating handler sees the caller's groups and the security context; the next request does not", "[proto][ext][dispatch]") {
  io::ring ring;
  cf::cache_defaults defaults;
  cf::context ctx{&ring, defaults};
  std::vector<std::byte> space(4096);
  proto::reply_buffer out{space};
  creating_fs fs;

  abi::mkdir_in mk{0755, 022};
  message m(abi::opcode::mkdir, &mk, sizeof mk, with_nul("d"), cat(secctx_record({{"security.selinux", "label"}}), groups_record({2000})));
  proto::request req;
  REQUIRE(m.parse(req) == proto::parse_error::none);
  auto st = io::sync_wait(ring, cf::dispatch(fs, ctx, req, out));
  CHECK(st.error == 0);
  CHECK(fs.seen == "d uid=1000 known=1 in2000=1 in100=1 in3000=0 ctx=security.selinux:label");

  // A request without extensions (and, as on an idmapping mount, naming no caller) clears them.
  abi::getattr_in ga{};
  message g(abi::opcode::getattr, &ga, sizeof ga);
  g.header().uid = static_cast<std::uint32_t>(-1);
  g.header().gid = static_cast<std::uint32_t>(-1);
  REQUIRE(g.parse(req) == proto::parse_error::none);
  out.clear();
  st = io::sync_wait(ring, cf::dispatch(fs, ctx, req, out));
  CHECK(st.error == 0);
  CHECK(fs.seen == "getattr known=0 in2000=0");
  CHECK_FALSE(ctx.caller_in_group(static_cast<gid_t>(-1)));
}
