// INIT negotiation: from the kernel's offer and what the filesystem wants, the reply and the
// terms both sides then hold to. A pure function, so every rule is unit-tested.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>

#include "corofuse/abi/flags.hpp"
#include "corofuse/abi/protocol.hpp"
#include "corofuse/abi/structs.hpp"

namespace corofuse::session {

struct init_wishes {
  std::uint64_t flags = 0;             // abi::init_flag bits the filesystem would like
  std::uint32_t max_write = 1u << 20;  // bytes; capped by max_pages
  std::uint32_t max_pages = 256;       // pages per request (the kernel caps it at fs.fuse.max_pages_limit)
  std::uint32_t max_readahead = 1u << 20;
  std::uint16_t max_background = 0;  // 0: the kernel's default
  std::uint16_t congestion_threshold = 0;
  std::uint32_t time_gran = 1;        // nanoseconds
  std::uint16_t request_timeout = 0;  // seconds, sent with init_flag::request_timeout (7.43)
  std::uint32_t max_stack_depth = 0;  // with init_flag::passthrough
};

struct init_terms {
  std::uint32_t kernel_major = 0;
  std::uint32_t kernel_minor = 0;
  std::uint32_t minor = 0;    // the protocol both speak: min(kernel, ours)
  std::uint64_t offered = 0;  // what the kernel offered
  std::uint64_t flags = 0;    // what was agreed (the reply's flags)
  std::uint32_t max_write = 0;
  std::uint32_t max_pages = 0;
  std::uint32_t max_readahead = 0;
  bool has(std::uint64_t flag) const noexcept { return (flags & flag) != 0; }
  bool offers(std::uint64_t flag) const noexcept { return (offered & flag) != 0; }
};

struct init_outcome {
  enum class kind {
    agreed,       // reply with `reply` (its full size); terms hold
    retry_major,  // kernel speaks a newer major: reply with our major only, it will ask again
    refused,      // kernel too old: answer EPROTO and give up
  } what = kind::refused;
  abi::init_out reply{};
  init_terms terms;
  std::string why;  // for refused
};

inline init_outcome negotiate_init(const abi::init_in& in, const init_wishes& w) {
  init_outcome out;
  out.terms.kernel_major = in.major;
  out.terms.kernel_minor = in.minor;
  if (in.major > abi::kernel_version) {
    out.what = init_outcome::kind::retry_major;
    out.reply.major = abi::kernel_version;
    out.reply.minor = abi::kernel_minor_version;
    return out;
  }
  if (in.major < abi::kernel_version || in.minor < 31) {
    out.what = init_outcome::kind::refused;
    out.why = "kernel FUSE protocol " + std::to_string(in.major) + "." + std::to_string(in.minor) +
              " is too old: corofuse needs 7.31 (Linux 5.4) or newer";
    return out;
  }
  // flags2 exists only when the kernel sets init_ext in flags.
  std::uint64_t offered = in.flags;
  if (in.flags & abi::init_flag::init_ext) offered = abi::init_flag::join(in.flags, in.flags2);
  out.terms.offered = offered;

  std::uint64_t flags = w.flags & offered;
  // With FUSE_MAX_PAGES the kernel takes our page count, smaller or larger than its default of
  // 32; without it requests are 32 pages, whatever we would like.
  std::uint32_t pages = std::clamp<std::uint32_t>(w.max_pages, 1, 65535);
  if (offered & abi::init_flag::max_pages) {
    flags |= abi::init_flag::max_pages;
  } else {
    pages = 32;
    flags &= ~abi::init_flag::max_pages;
  }
  if (offered & abi::init_flag::init_ext) flags |= abi::init_flag::init_ext;  // or flags2 is ignored
  // Large writes are what every filesystem wants; they are offered by every kernel we speak to.
  if (offered & abi::init_flag::big_writes) flags |= abi::init_flag::big_writes;

  abi::init_out& r = out.reply;
  r.major = abi::kernel_version;
  r.minor = abi::kernel_minor_version;
  r.max_readahead = std::min(in.max_readahead, w.max_readahead);
  r.flags = abi::init_flag::low_word(flags);
  r.flags2 = abi::init_flag::high_word(flags);
  r.max_background = w.max_background;
  r.congestion_threshold = w.congestion_threshold;
  r.max_write = std::max<std::uint32_t>(4096, std::min<std::uint32_t>(w.max_write, pages * 4096u));
  r.time_gran = w.time_gran;
  r.max_pages = (flags & abi::init_flag::max_pages) ? static_cast<std::uint16_t>(pages) : 0;
  r.max_stack_depth = (flags & abi::init_flag::passthrough) ? w.max_stack_depth : 0;
  r.request_timeout = (flags & abi::init_flag::request_timeout) ? w.request_timeout : 0;

  out.what = init_outcome::kind::agreed;
  out.terms.minor = std::min(in.minor, abi::kernel_minor_version);
  out.terms.flags = flags;
  out.terms.max_write = r.max_write;
  out.terms.max_pages = pages;
  out.terms.max_readahead = r.max_readahead;
  return out;
}

}  // namespace corofuse::session
