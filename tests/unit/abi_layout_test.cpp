// corofuse's protocol helpers and layouts on their own, without the kernel header: how the 64-bit
// INIT flag set splits into flags/flags2, directory record padding, opcode names, and where the
// io_uring structs sit in an entry's buffer and in the SQE.
#include <catch2/catch.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "corofuse/abi.hpp"

namespace abi = corofuse::abi;
namespace init_flag = abi::init_flag;

TEST_CASE("init_flag: 64-bit set <-> flags/flags2", "[abi]") {
  // Bits 32.. go to flags2, so over_io_uring (41) is flags2 bit 9 and bufpool (43) bit 11.
  CHECK(init_flag::low_word(init_flag::over_io_uring) == 0);
  CHECK(init_flag::high_word(init_flag::over_io_uring) == 1u << 9);
  CHECK(init_flag::low_word(init_flag::has_io_uring_bufpool) == 0);
  CHECK(init_flag::high_word(init_flag::has_io_uring_bufpool) == 1u << 11);
  CHECK(init_flag::high_word(init_flag::security_ctx) == 1u << 0);

  // The top bits of flags stay in flags: init_ext is bit 30, init_reserved bit 31.
  CHECK(init_flag::low_word(init_flag::init_ext) == 1u << 30);
  CHECK(init_flag::high_word(init_flag::init_ext) == 0);
  CHECK(init_flag::low_word(init_flag::init_reserved) == 1u << 31);
  CHECK(init_flag::high_word(init_flag::init_reserved) == 0);

  // join() puts flags2 above flags, with no sign extension of bit 31.
  CHECK(init_flag::join(1u << 30, 0) == init_flag::init_ext);
  CHECK(init_flag::join(0, 1u << 9) == init_flag::over_io_uring);
  CHECK(init_flag::join(0xffffffffu, 0) == 0xffffffffull);
  CHECK(init_flag::join(0, 0xffffffffu) == 0xffffffff00000000ull);

  // Every single bit, and a mixed set like a real INIT reply, survive the round trip.
  for (unsigned bit = 0; bit < 64; ++bit) {
    CAPTURE(bit);
    const std::uint64_t f = std::uint64_t{1} << bit;
    CHECK(init_flag::join(init_flag::low_word(f), init_flag::high_word(f)) == f);
  }
  const std::uint64_t reply = init_flag::async_read | init_flag::max_pages | init_flag::init_ext | init_flag::over_io_uring |
                              init_flag::has_io_uring_bufpool;
  CHECK(init_flag::join(init_flag::low_word(reply), init_flag::high_word(reply)) == reply);
}

TEST_CASE("dirent and direntplus record sizes", "[abi]") {
  // A READDIR record is the 24-byte header and the name, padded to 8 bytes.
  CHECK(abi::dirent_name_offset == 24);
  CHECK(abi::dirent_size(0) == 24);
  CHECK(abi::dirent_size(1) == 32);
  CHECK(abi::dirent_size(8) == 32);
  CHECK(abi::dirent_size(9) == 40);
  CHECK(abi::dirent_size(255) == 280);

  // A READDIRPLUS record is entry_out (128) + dirent (24) = 152 and the name, padded to 8.
  CHECK(abi::direntplus_name_offset == 152);
  CHECK(abi::direntplus_size(0) == 152);
  CHECK(abi::direntplus_size(1) == 160);
  CHECK(abi::direntplus_size(8) == 160);
  CHECK(abi::direntplus_size(9) == 168);
  for (std::size_t n = 0; n <= 64; ++n) {
    CAPTURE(n);
    // Smallest multiple of 8 that holds the name: the next record stays 8-byte aligned.
    const std::size_t size = abi::direntplus_size(n);
    CHECK(size % 8 == 0);
    CHECK(size >= 152 + n);
    CHECK(size < 152 + n + 8);
  }
}

TEST_CASE("opcode_name and opcode_has_no_reply", "[abi]") {
  CHECK(abi::opcode_name(abi::opcode::lookup) == "LOOKUP");
  CHECK(abi::opcode_name(abi::opcode::batch_forget) == "BATCH_FORGET");
  CHECK(abi::opcode_name(abi::opcode::copy_file_range_64) == "COPY_FILE_RANGE_64");
  CHECK(abi::opcode_name(abi::opcode::cuse_init) == "CUSE_INIT");
  // Numbers that are not opcodes: 0, the holes 7 and 19, past the last, the byte-swapped INIT.
  CHECK(abi::opcode_name(static_cast<abi::opcode>(0)) == "UNKNOWN");
  CHECK(abi::opcode_name(static_cast<abi::opcode>(7)) == "UNKNOWN");
  CHECK(abi::opcode_name(static_cast<abi::opcode>(19)) == "UNKNOWN");
  CHECK(abi::opcode_name(static_cast<abi::opcode>(abi::max_opcode + 1)) == "UNKNOWN");
  CHECK(abi::opcode_name(abi::opcode::init_bswap_reserved) == "UNKNOWN");
  // max_opcode is the last opcode, not one past it.
  CHECK(abi::opcode_name(static_cast<abi::opcode>(abi::max_opcode)) != "UNKNOWN");

  // FORGETs are fire-and-forget: no request waits for a reply, so a server must not send one.
  CHECK(abi::opcode_has_no_reply(abi::opcode::forget));
  CHECK(abi::opcode_has_no_reply(abi::opcode::batch_forget));
  CHECK(abi::opcode_has_no_reply(abi::opcode::notify_reply));  // the kernel sets noreply on RETRIEVE replies
  CHECK_FALSE(abi::opcode_has_no_reply(abi::opcode::lookup));
  CHECK_FALSE(abi::opcode_has_no_reply(abi::opcode::init));
  CHECK_FALSE(abi::opcode_has_no_reply(abi::opcode::release));
  CHECK_FALSE(abi::opcode_has_no_reply(abi::opcode::destroy));
}

TEST_CASE("io_uring entry header buffer", "[abi]") {
  // The kernel copies in_header (request) or takes out_header (reply) at offset 0, the op's
  // struct at 128 and its own ring_ent_in_out at 256.
  CHECK(offsetof(abi::uring_req_header, in_out) == 0);
  CHECK(offsetof(abi::uring_req_header, op_in) == abi::uring_in_out_header_size);
  CHECK(offsetof(abi::uring_req_header, ring_ent_in_out) == 256);
  CHECK(sizeof(abi::uring_req_header) == 256 + sizeof(abi::uring_ent_in_out));
  CHECK(sizeof(abi::uring_ent_in_out) == 32);

  // Both headers, and the largest op struct (INIT's), fit their areas, suitably aligned.
  CHECK(sizeof(abi::in_header) <= sizeof(abi::uring_req_header::in_out));
  CHECK(sizeof(abi::out_header) <= sizeof(abi::uring_req_header::in_out));
  CHECK(sizeof(abi::init_out) <= sizeof(abi::uring_req_header::op_in));
  CHECK(alignof(abi::uring_req_header) >= alignof(abi::in_header));
  CHECK(offsetof(abi::uring_req_header, op_in) % alignof(abi::init_out) == 0);
}

TEST_CASE("io_uring command area in the SQE", "[abi]") {
  // The command sits at SQE offset 48 and must fit a 128-byte (IORING_SETUP_SQE128) SQE.
  constexpr std::size_t sqe128_size = 128;
  CHECK(abi::sqe_cmd_offset == 48);
  CHECK(sizeof(abi::uring_cmd_req) == 40);
  CHECK(abi::sqe_cmd_offset + sizeof(abi::uring_cmd_req) <= sqe128_size);

  // 7.42 kernels read 24 bytes: flags, commit_id, qid and padding, i.e. all before the union.
  CHECK(abi::uring_cmd_req_size_7_42 == 24);
  CHECK(offsetof(abi::uring_cmd_req, bufpool) == abi::uring_cmd_req_size_7_42);
  CHECK(offsetof(abi::uring_cmd_req, ent_zero_copy_buf_index) == abi::uring_cmd_req_size_7_42);
}
