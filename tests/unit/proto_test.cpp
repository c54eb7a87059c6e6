// Request parsing and reply writing, on hand-built messages in both arrival forms.
#include <catch2/catch.hpp>

#include <cstring>
#include <string>
#include <vector>

#include "corofuse/proto.hpp"

namespace abi = corofuse::abi;
namespace proto = corofuse::proto;

#include "tests/unit/fake_request.hpp"

using corofuse::testing::message;
using corofuse::testing::ring_entry;
using corofuse::testing::with_nul;

TEST_CASE("every opcode of 7.46 has a layout; the gaps and CUSE do not", "[proto]") {
  for (std::uint32_t op = 1; op <= abi::max_opcode; ++op) {
    INFO("opcode " << op);
    bool gap = op == 7 || op == 19;
    CHECK(proto::layout_of(static_cast<abi::opcode>(op)).known == !gap);
  }
  CHECK_FALSE(proto::layout_of(abi::opcode::cuse_init).known);
  CHECK_FALSE(proto::layout_of(static_cast<abi::opcode>(abi::max_opcode + 1)).known);
  CHECK(proto::layout_of(abi::opcode::setxattr).op_size == sizeof(abi::setxattr_in));
  CHECK(proto::layout_of(abi::opcode::setxattr, {.setxattr_ext = false}).op_size == abi::compat_setxattr_in_size);
}

TEST_CASE("every known opcode parses from a minimal well-formed message, in both forms", "[proto]") {
  for (std::uint32_t n = 1; n <= abi::max_opcode; ++n) {
    auto op = static_cast<abi::opcode>(n);
    auto l = proto::layout_of(op);
    if (!l.known) continue;
    INFO(abi::opcode_name(op));
    std::vector<std::byte> op_struct(l.op_size);
    std::string rest;
    if (l.rest == proto::trailing::name) rest = with_nul("a");
    if (l.rest == proto::trailing::two_names) rest = with_nul("a") + with_nul("b");
    if (op == abi::opcode::setxattr) rest = with_nul("user.x");
    message m(op, op_struct.data(), op_struct.size(), rest);
    proto::request r;
    REQUIRE(m.parse(r) == proto::parse_error::none);
    CHECK(r.opcode() == op);
    CHECK(r.op_bytes().size() == l.op_size);
    ring_entry e(m, l.op_size);
    proto::request rr;
    REQUIRE(e.parse(rr) == proto::parse_error::none);
    CHECK(rr.opcode() == op);
    CHECK(rr.name() == r.name());
    CHECK(rr.second_name() == r.second_name());
  }
}

TEST_CASE("LOOKUP: header fields and the name", "[proto]") {
  message m(abi::opcode::lookup, nullptr, 0, with_nul("hello.txt"));
  proto::request r;
  REQUIRE(m.parse(r) == proto::parse_error::none);
  CHECK(r.unique() == 42);
  CHECK(r.nodeid() == 7);
  CHECK(r.uid() == 1000);
  CHECK(r.gid() == 100);
  CHECK(r.pid() == 1234);
  CHECK(r.name() == "hello.txt");
  CHECK(r.data().empty());
}

TEST_CASE("WRITE: op struct and exactly the declared data", "[proto]") {
  abi::write_in w{};
  w.fh = 9;
  w.offset = 1ull << 33;
  w.size = 5;
  message m(abi::opcode::write, &w, sizeof w, "abcde");
  proto::request r;
  REQUIRE(m.parse(r) == proto::parse_error::none);
  auto in = r.op<abi::write_in>();
  CHECK(in.fh == 9);
  CHECK(in.offset == (1ull << 33));
  REQUIRE(r.data().size() == 5);
  CHECK(std::memcmp(r.data().data(), "abcde", 5) == 0);

  ring_entry e(m, sizeof w);
  proto::request rr;
  REQUIRE(e.parse(rr) == proto::parse_error::none);
  CHECK(rr.data().size() == 5);
  CHECK(std::memcmp(rr.data().data(), "abcde", 5) == 0);

  w.size = 6;  // declares more than it carries
  message bad(abi::opcode::write, &w, sizeof w, "abcde");
  CHECK(bad.parse(r) == proto::parse_error::bad_data_size);
}

TEST_CASE("SETXATTR: name then value of the declared size", "[proto]") {
  abi::setxattr_in s{};
  s.size = 3;
  message m(abi::opcode::setxattr, &s, sizeof s, with_nul("user.k") + std::string("v\0w", 3));
  proto::request r;
  REQUIRE(m.parse(r) == proto::parse_error::none);
  CHECK(r.name() == "user.k");
  REQUIRE(r.data().size() == 3);
  CHECK(std::memcmp(r.data().data(), "v\0w", 3) == 0);
}

TEST_CASE("RENAME2 and SYMLINK carry two names", "[proto]") {
  abi::rename2_in rn{};
  rn.newdir = 5;
  rn.flags = 1;
  message m(abi::opcode::rename2, &rn, sizeof rn, with_nul("old") + with_nul("new"));
  proto::request r;
  REQUIRE(m.parse(r) == proto::parse_error::none);
  CHECK(r.op<abi::rename2_in>().newdir == 5);
  CHECK(r.name() == "old");
  CHECK(r.second_name() == "new");

  message s(abi::opcode::symlink, nullptr, 0, with_nul("link") + with_nul("/target/path"));
  REQUIRE(s.parse(r) == proto::parse_error::none);
  CHECK(r.name() == "link");
  CHECK(r.second_name() == "/target/path");

  message one(abi::opcode::rename2, &rn, sizeof rn, with_nul("old") + "new");  // second NUL missing
  CHECK(one.parse(r) == proto::parse_error::missing_name);
}

TEST_CASE("BATCH_FORGET: the count is checked against the bytes", "[proto]") {
  abi::batch_forget_in b{};
  b.count = 2;
  abi::forget_one items[2] = {{10, 1}, {11, 3}};
  std::string rest(reinterpret_cast<const char*>(items), sizeof items);
  message m(abi::opcode::batch_forget, &b, sizeof b, rest);
  proto::request r;
  REQUIRE(m.parse(r) == proto::parse_error::none);
  REQUIRE(r.data().size() == sizeof items);
  abi::forget_one got[2];
  std::memcpy(got, r.data().data(), sizeof got);
  CHECK(got[1].nodeid == 11);
  CHECK(got[1].nlookup == 3);

  b.count = 3;
  message lying(abi::opcode::batch_forget, &b, sizeof b, rest);
  CHECK(lying.parse(r) == proto::parse_error::bad_data_size);
  b.count = 0xffffffffu;  // an overflow attempt: count * 16 must not wrap
  message huge(abi::opcode::batch_forget, &b, sizeof b, rest);
  CHECK(huge.parse(r) == proto::parse_error::bad_data_size);
}

TEST_CASE("extensions are split off the end", "[proto]") {
  abi::mkdir_in mk{0755, 022};
  message m(abi::opcode::mkdir, &mk, sizeof mk, with_nul("dir"), 16);
  proto::request r;
  REQUIRE(m.parse(r) == proto::parse_error::none);
  CHECK(r.name() == "dir");
  CHECK(r.extensions().size() == 16);
  CHECK(r.args().size() == 4);

  ring_entry e(m, sizeof mk);
  REQUIRE(e.parse(r) == proto::parse_error::none);
  CHECK(r.extensions().size() == 16);
  CHECK(r.name() == "dir");
}

TEST_CASE("malformed messages are refused with the reason", "[proto]") {
  proto::request r;
  std::vector<std::byte> tiny(10);
  CHECK(proto::parse_message(tiny, r) == proto::parse_error::short_header);

  message m(abi::opcode::lookup, nullptr, 0, with_nul("x"));
  m.header().len += 1;
  CHECK(m.parse(r) == proto::parse_error::length_mismatch);

  abi::read_in rd{};
  message cut(abi::opcode::read, &rd, sizeof rd - 8);
  CHECK(cut.parse(r) == proto::parse_error::short_op_struct);

  message unknown(static_cast<abi::opcode>(7), nullptr, 0);
  CHECK(unknown.parse(r) == proto::parse_error::unknown_opcode);
  CHECK(proto::errno_for(proto::parse_error::unknown_opcode) == ENOSYS);
  CHECK(proto::errno_for(proto::parse_error::missing_name) == EINVAL);

  message noname(abi::opcode::unlink, nullptr, 0, "abc");  // no NUL
  CHECK(noname.parse(r) == proto::parse_error::missing_name);

  message ext(abi::opcode::getattr, &rd, 16);
  ext.header().total_extlen = 100;  // 800 bytes of extensions in a 56-byte message
  CHECK(ext.parse(r) == proto::parse_error::bad_extensions);

  CHECK(proto::describe(proto::parse_error::payload_overflow).find("payload") != std::string_view::npos);
}

TEST_CASE("a ring entry's payload_sz cannot point past its buffer", "[proto]") {
  message m(abi::opcode::lookup, nullptr, 0, with_nul("x"));
  ring_entry e(m, 0);
  proto::request r;
  e.hdr.ring_ent_in_out.payload_sz = 5000;  // buffer is 4096
  CHECK(e.parse(r) == proto::parse_error::payload_overflow);
  CHECK(proto::parse_ring_entry(e.hdr, e.payload, 1, r) == proto::parse_error::payload_overflow);
}

TEST_CASE("reply_buffer refuses what does not fit and never writes past its end", "[proto]") {
  std::vector<std::byte> space(40, std::byte{0x55});
  proto::reply_buffer out(std::span<std::byte>(space).first(32));
  abi::attr_out a{};
  CHECK_FALSE(out.put(a));  // 104 bytes into 32
  CHECK(out.size() == 0);
  abi::entry_out e{};
  CHECK_FALSE(out.put(e));
  abi::write_out w{5, 0};
  CHECK(out.put(w));
  CHECK(out.put(w));
  CHECK(out.put(w));
  CHECK(out.put(w));
  CHECK_FALSE(out.put(w));
  CHECK(out.size() == 32);
  CHECK(space[32] == std::byte{0x55});  // the guard bytes are untouched
  CHECK_FALSE(out.commit(1));
  out.clear();
  CHECK(out.room() == 32);
}

TEST_CASE("dirent_packer: padded records, resume offsets, stops at the limit", "[proto]") {
  std::vector<std::byte> space(4096);
  proto::reply_buffer out(space);
  proto::dirent_packer p(out, 100);
  CHECK(p.add(".", 1, 4, 1));                // 24 + 1 -> 32
  CHECK(p.add("..", 1, 4, 2));               // 32
  CHECK_FALSE(p.add("abcdefghi", 5, 8, 3));  // 24 + 9 -> 40: total 104 > 100
  CHECK(p.count() == 2);                     // the third did not fit ...
  CHECK(p.size() == 64);
  CHECK(out.size() == 64);  // ... and left nothing behind
  abi::dirent d{};
  std::memcpy(&d, space.data() + 32, sizeof d);
  CHECK(d.off == 2);
  CHECK(d.namelen == 2);
  CHECK(d.type == 4);
  CHECK(std::memcmp(space.data() + 32 + sizeof d, "..", 2) == 0);
  for (std::size_t i = 32 + sizeof d + 2; i < 64; ++i) CHECK(space[i] == std::byte{0});  // padding
}

TEST_CASE("dirent_packer: READDIRPLUS records carry the entry", "[proto]") {
  std::vector<std::byte> space(4096);
  proto::reply_buffer out(space);
  proto::dirent_packer p(out, 4096);
  abi::entry_out e{};
  e.nodeid = 77;
  e.attr.ino = 77;
  e.attr.mode = 0100644;
  CHECK(p.fits_plus(4));
  CHECK(p.add_plus("file", e, 77, 8, 9));
  CHECK(p.size() == abi::direntplus_size(4));
  abi::direntplus d{};
  std::memcpy(&d, space.data(), sizeof d);
  CHECK(d.entry.nodeid == 77);
  CHECK(d.dirent.ino == 77);
  CHECK(d.dirent.off == 9);
  CHECK(d.dirent.namelen == 4);
  // A limit larger than the buffer is clamped to the buffer.
  proto::reply_buffer small(std::span<std::byte>(space).first(100));
  proto::dirent_packer q(small, 1 << 20);
  CHECK_FALSE(q.fits_plus(4));
  CHECK_FALSE(q.add_plus("file", e, 77, 8, 1));  // 160 bytes into 100
}

TEST_CASE("a zero-copy ring entry is refused by the copying parser", "[proto]") {
  abi::write_in w{};
  w.size = 4096;
  message m(abi::opcode::write, &w, sizeof w, std::string(4096, 'x'));
  ring_entry e(m, sizeof w);
  e.hdr.ring_ent_in_out.flags = abi::uring_ent_zero_copy;
  proto::request r;
  CHECK(e.parse(r) == proto::parse_error::zero_copy_entry);
  CHECK(r.data().empty());
}

TEST_CASE("a zero-copy ring entry with a window: WRITE's data is the window, READ has no payload", "[proto]") {
  // The window stands for the client's pages at the entry's slot: never read, only addressed.
  std::vector<std::byte> window_space(8192);
  std::span<const std::byte> window(window_space);
  abi::write_in w{};
  w.size = 4096;
  w.offset = 12288;
  message m(abi::opcode::write, &w, sizeof w);
  ring_entry e(m, sizeof w);
  e.hdr.ring_ent_in_out.flags = abi::uring_ent_zero_copy;
  e.hdr.ring_ent_in_out.payload_sz = 4096;  // the page bytes, not in the payload
  proto::request r;
  REQUIRE(proto::parse_ring_entry(e.hdr, e.payload, e.payload.size(), r, {}, window) == proto::parse_error::none);
  CHECK(r.data().data() == window.data());
  CHECK(r.data().size() == 4096);
  CHECK(r.op<abi::write_in>().offset == 12288);

  // More page bytes than the window (or than payload_sz says) is refused.
  w.size = 16384;
  message big(abi::opcode::write, &w, sizeof w);
  ring_entry e2(big, sizeof w);
  e2.hdr.ring_ent_in_out.flags = abi::uring_ent_zero_copy;
  e2.hdr.ring_ent_in_out.payload_sz = 16384;
  CHECK(proto::parse_ring_entry(e2.hdr, e2.payload, e2.payload.size(), r, {}, window) == proto::parse_error::bad_data_size);
  e.hdr.ring_ent_in_out.payload_sz = 100;  // less than write_in.size
  CHECK(proto::parse_ring_entry(e.hdr, e.payload, e.payload.size(), r, {}, window) == proto::parse_error::bad_data_size);

  abi::read_in rd{};
  rd.size = 65536;
  message mr(abi::opcode::read, &rd, sizeof rd);
  ring_entry er(mr, sizeof rd);
  er.hdr.ring_ent_in_out.flags = abi::uring_ent_zero_copy;
  REQUIRE(proto::parse_ring_entry(er.hdr, er.payload, er.payload.size(), r, {}, window) == proto::parse_error::none);
  CHECK(r.opcode() == abi::opcode::read);
  CHECK(r.data().empty());

  // Only READ and WRITE can be zero-copy.
  abi::getattr_in g{};
  message mg(abi::opcode::getattr, &g, sizeof g);
  ring_entry eg(mg, sizeof g);
  eg.hdr.ring_ent_in_out.flags = abi::uring_ent_zero_copy;
  CHECK(proto::parse_ring_entry(eg.hdr, eg.payload, eg.payload.size(), r, {}, window) == proto::parse_error::zero_copy_entry);
}

TEST_CASE("NOTIFY_REPLY on the ring: the retrieve struct leads the payload, the data follows", "[proto]") {
  abi::notify_retrieve_in in{};
  in.offset = 4096;
  in.size = 5;
  message m(abi::opcode::notify_reply, &in, sizeof in, "hello");
  ring_entry e(m, sizeof in);
  CHECK(e.hdr.ring_ent_in_out.payload_sz == sizeof in + 5);
  proto::request r;
  REQUIRE(e.parse(r) == proto::parse_error::none);
  CHECK(r.op<abi::notify_retrieve_in>().offset == 4096);
  CHECK(r.op<abi::notify_retrieve_in>().size == 5);
  CHECK(std::string(reinterpret_cast<const char*>(r.data().data()), r.data().size()) == "hello");
  e.hdr.ring_ent_in_out.payload_sz = 10;  // shorter than the struct
  CHECK(e.parse(r) == proto::parse_error::short_op_struct);
}

TEST_CASE("INIT from a kernel before 7.36 (16-byte init_in) parses, the rest reads as zero", "[proto]") {
  abi::init_in old{};
  old.major = 7;
  old.minor = 31;
  old.max_readahead = 4096;
  old.flags = 1;
  message m(abi::opcode::init, &old, 16);
  proto::request r;
  REQUIRE(m.parse(r) == proto::parse_error::none);
  auto in = r.op<abi::init_in>();
  CHECK(in.minor == 31);
  CHECK(in.flags == 1);
  CHECK(in.flags2 == 0);
  message cut(abi::opcode::init, &old, 12);
  CHECK(cut.parse(r) == proto::parse_error::short_op_struct);
}
