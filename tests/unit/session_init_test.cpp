// INIT negotiation rules, against offers shaped like real kernels'.
#include <catch2/catch.hpp>

#include "corofuse/session/init.hpp"

namespace abi = corofuse::abi;
namespace fl = corofuse::abi::init_flag;
using corofuse::session::init_outcome;
using corofuse::session::init_wishes;
using corofuse::session::negotiate_init;

namespace {
// What Linux 6.18 offers (protocol 7.45), including flags2 bits 32..42 (docs/kernel.md, "INIT").
abi::init_in linux_6_18() {
  abi::init_in in{};
  in.major = 7;
  in.minor = 45;
  in.max_readahead = 128 * 1024;
  std::uint64_t offered = fl::async_read | fl::posix_locks | fl::atomic_o_trunc | fl::export_support | fl::big_writes | fl::dont_mask |
                          fl::flock_locks | fl::do_readdirplus | fl::readdirplus_auto | fl::async_dio | fl::writeback_cache |
                          fl::parallel_dirops | fl::max_pages | fl::setxattr_ext | fl::init_ext | fl::security_ctx | fl::create_supp_group |
                          fl::has_expire_only | fl::direct_io_allow_mmap | fl::passthrough | fl::no_export_support | fl::has_resend |
                          fl::allow_idmap | fl::over_io_uring | fl::request_timeout;
  in.flags = fl::low_word(offered);
  in.flags2 = fl::high_word(offered);
  return in;
}
}  // namespace

TEST_CASE("INIT: agreed flags are what was both offered and wanted, flags2 included", "[session][init]") {
  init_wishes w;
  w.flags = fl::async_read | fl::over_io_uring | fl::has_io_uring_bufpool | fl::writeback_cache;
  auto out = negotiate_init(linux_6_18(), w);
  REQUIRE(out.what == init_outcome::kind::agreed);
  CHECK(out.terms.has(fl::over_io_uring));
  CHECK_FALSE(out.terms.has(fl::has_io_uring_bufpool));  // 6.18 does not offer buffer pools
  CHECK(out.terms.has(fl::init_ext));                    // or the kernel would ignore flags2
  CHECK(out.terms.has(fl::writeback_cache));
  CHECK_FALSE(out.terms.has(fl::posix_locks));  // offered, not wanted
  CHECK(out.reply.flags2 & (1u << 9));          // OVER_IO_URING is bit 9 of flags2
  CHECK(out.reply.flags & (1u << 30));          // INIT_EXT
  CHECK(out.reply.major == 7);
  CHECK(out.reply.minor == abi::kernel_minor_version);
  CHECK(out.terms.minor == 45);
}

TEST_CASE("INIT: without init_ext in the offer, flags2 is not read", "[session][init]") {
  auto in = linux_6_18();
  in.flags &= ~fl::low_word(fl::init_ext);
  init_wishes w;
  w.flags = fl::over_io_uring;
  auto out = negotiate_init(in, w);
  REQUIRE(out.what == init_outcome::kind::agreed);
  CHECK_FALSE(out.terms.has(fl::over_io_uring));
  CHECK(out.reply.flags2 == 0);
  CHECK_FALSE(out.terms.has(fl::init_ext));
}

TEST_CASE("INIT: max_pages and max_write", "[session][init]") {
  init_wishes w;
  auto out = negotiate_init(linux_6_18(), w);
  CHECK(out.terms.has(fl::max_pages));
  CHECK(out.reply.max_pages == 256);
  CHECK(out.reply.max_write == 256 * 4096);      // docs/kernel.md, "INIT": max_write = max_pages * 4096
  CHECK(out.reply.max_readahead == 128 * 1024);  // never more than the kernel offered

  w.max_write = 64 * 1024;
  out = negotiate_init(linux_6_18(), w);
  CHECK(out.reply.max_write == 64 * 1024);

  auto old = linux_6_18();
  old.flags &= ~fl::low_word(fl::max_pages);
  out = negotiate_init(old, init_wishes{});
  CHECK_FALSE(out.terms.has(fl::max_pages));
  CHECK(out.reply.max_pages == 0);
  CHECK(out.reply.max_write == 32 * 4096);  // 32 pages without FUSE_MAX_PAGES
  CHECK(out.terms.max_pages == 32);         // buffers must hold what the kernel will send

  init_wishes small;
  small.max_pages = 8;
  out = negotiate_init(linux_6_18(), small);
  CHECK(out.terms.has(fl::max_pages));  // fewer than 32 pages needs the flag too
  CHECK(out.reply.max_pages == 8);
  CHECK(out.reply.max_write == 8 * 4096);
}

TEST_CASE("INIT: a newer major asks the kernel to retry with ours; an old kernel is refused", "[session][init]") {
  auto in = linux_6_18();
  in.major = 8;
  auto out = negotiate_init(in, init_wishes{});
  CHECK(out.what == init_outcome::kind::retry_major);
  CHECK(out.reply.major == 7);

  in.major = 7;
  in.minor = 26;
  out = negotiate_init(in, init_wishes{});
  CHECK(out.what == init_outcome::kind::refused);
  CHECK_THAT(out.why, Catch::Contains("too old"));
}

TEST_CASE("INIT: fields tied to flags are sent only with their flag", "[session][init]") {
  init_wishes w;
  w.request_timeout = 30;
  w.max_stack_depth = 1;
  auto out = negotiate_init(linux_6_18(), w);  // neither request_timeout nor passthrough wanted
  CHECK(out.reply.request_timeout == 0);
  CHECK(out.reply.max_stack_depth == 0);
  w.flags = fl::request_timeout | fl::passthrough;
  out = negotiate_init(linux_6_18(), w);
  CHECK(out.reply.request_timeout == 30);
  CHECK(out.reply.max_stack_depth == 1);
}
