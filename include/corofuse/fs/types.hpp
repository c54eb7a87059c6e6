// The values a filesystem's handlers take and return, in the terms filesystem authors know
// (struct stat, open flags, seconds), converted to and from the wire by the dispatcher.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "corofuse/abi/flags.hpp"
#include "corofuse/abi/structs.hpp"
#include "corofuse/fs/backing.hpp"
#include "corofuse/proto/reply.hpp"

namespace corofuse {

using ino = std::uint64_t;
inline constexpr ino root_ino = 1;

// Attributes, with how long the kernel may cache them (seconds; negative: the mount's default).
struct attr {
  struct stat st {};
  double timeout = -1;
};

// A name's lookup: the inode it names, its attributes, and the cache times. Every successful
// lookup (and create, mkdir, mknod, symlink, link) counts one reference the kernel later returns
// with FORGET. ino 0 is a negative entry: "no such name", cacheable for entry_timeout.
struct entry {
  corofuse::ino ino = 0;
  std::uint64_t generation = 0;  // (ino, generation) must never repeat for the filesystem's lifetime
  struct stat attr {};
  double entry_timeout = -1;
  double attr_timeout = -1;
};

// What OPEN, OPENDIR and CREATE reply: the handle the kernel passes back, and how to treat the file.
struct open_reply {
  std::uint64_t fh = 0;
  bool direct_io = false;   // bypass the page cache
  bool keep_cache = false;  // keep cached pages from an earlier open
  bool nonseekable = false;
  bool cache_dir = false;  // OPENDIR: let the kernel cache the listing
  // Kernel passthrough: READ and WRITE of this open file go from the kernel straight to the
  // backing file registered as `backing_id` (connection::open_backing); they never reach the
  // filesystem. Needs init_flag::passthrough, which the kernel refuses with writeback_cache.
  bool passthrough = false;
  std::int32_t backing_id = 0;
  // Linux 7.3 zero-copy (FOPEN_IO_URING_ZERO_COPY): on a zero-copy queue, READ and WRITE of this
  // file carry the client's own pages instead of a copy. The handlers then get a buffer that is
  // never mapped: they must move the data with context::read_fixed / write_fixed or answer READ
  // with a file_slice; touching it with the CPU faults. Ignored by other transports.
  bool zero_copy = false;
  std::uint32_t extra_open_flags = 0;  // further abi::fopen bits
};

// An open file as the kernel names it in READ, WRITE, FLUSH, RELEASE, FSYNC, ...
struct file_info {
  std::uint64_t fh = 0;
  std::uint32_t flags = 0;  // the open(2) flags
  std::uint64_t lock_owner = 0;
};

// One directory entry of a listing (fs/listing.hpp). `next_offset` resumes the listing after this
// entry: it must stay valid while the directory changes (an index into a stable order, not a
// position). The name is a view: it must stay valid until the READDIR handler's result has been
// packed (hold a lock with locked_listing, or use owned_dir_entry).
struct dir_entry {
  std::string_view name;
  corofuse::ino ino = 0;
  std::uint32_t type = 0;  // DT_* (mode >> 12)
  std::uint64_t next_offset = 0;
};

// The same, owning its name: for listings built under a lock that is released before the
// framework packs them (a string_view into the filesystem's own map could dangle by then).
struct owned_dir_entry {
  std::string name;
  corofuse::ino ino = 0;
  std::uint32_t type = 0;
  std::uint64_t next_offset = 0;
};

// A READ answered straight from a file: the transport reads up to `size` bytes at `offset` of `fd`
// into the reply buffer itself. On the ring that read is linked to COMMIT_AND_FETCH: one submit,
// one completion per request, and the data never passes through the handler. A short read (end
// of file) replies with what was read; an error replies with the error. `speed` says where the
// file's data lives (backing.hpp): a file in memory is read with pread(2) on the queue thread, a
// local one inline when cached, except on a zero-copy request (the client's pages are reachable
// only through io_uring).
struct file_slice {
  int fd = -1;
  off_t offset = 0;
  std::size_t size = 0;
  backing_speed speed = backing_speed::remote;
};

// A READ handler that answers some requests in place and others from a file returns this.
struct read_reply {
  bool from_file = false;
  std::size_t copied = 0;  // bytes written into the buffer (when !from_file)
  file_slice slice{};      // the file slice (when from_file)

  static read_reply bytes_copied(std::size_t n) noexcept { return {false, n, {}}; }
  static read_reply from(file_slice s) noexcept { return {true, 0, s}; }
};

// The cache times a mount uses when a handler does not give its own.
struct cache_defaults {
  double entry_timeout = 1.0;
  double attr_timeout = 1.0;
};

namespace detail {
inline void split_seconds(double s, std::uint64_t& sec, std::uint32_t& nsec) noexcept {
  if (!(s > 0)) {  // also catches NaN
    sec = 0;
    nsec = 0;
    return;
  }
  if (s > 1e18) s = 1e18;
  sec = static_cast<std::uint64_t>(s);
  nsec = static_cast<std::uint32_t>((s - static_cast<double>(sec)) * 1e9);
  if (nsec >= 1000000000u) nsec = 999999999u;
}
}  // namespace detail

inline abi::attr to_wire(const struct stat& st) noexcept {
  abi::attr a{};
  a.ino = st.st_ino;
  a.size = static_cast<std::uint64_t>(st.st_size);
  a.blocks = static_cast<std::uint64_t>(st.st_blocks);
  a.atime = static_cast<std::uint64_t>(st.st_atim.tv_sec);
  a.mtime = static_cast<std::uint64_t>(st.st_mtim.tv_sec);
  a.ctime = static_cast<std::uint64_t>(st.st_ctim.tv_sec);
  a.atimensec = static_cast<std::uint32_t>(st.st_atim.tv_nsec);
  a.mtimensec = static_cast<std::uint32_t>(st.st_mtim.tv_nsec);
  a.ctimensec = static_cast<std::uint32_t>(st.st_ctim.tv_nsec);
  a.mode = st.st_mode;
  a.nlink = static_cast<std::uint32_t>(st.st_nlink);
  a.uid = st.st_uid;
  a.gid = st.st_gid;
  a.rdev = static_cast<std::uint32_t>(st.st_rdev);
  a.blksize = static_cast<std::uint32_t>(st.st_blksize);
  return a;
}

inline abi::attr_out to_wire(const attr& a, const cache_defaults& d) noexcept {
  abi::attr_out o{};
  detail::split_seconds(a.timeout < 0 ? d.attr_timeout : a.timeout, o.attr_valid, o.attr_valid_nsec);
  o.attr = to_wire(a.st);
  return o;
}

inline abi::entry_out to_wire(const entry& e, const cache_defaults& d) noexcept {
  abi::entry_out o{};
  o.nodeid = e.ino;
  o.generation = e.generation;
  detail::split_seconds(e.entry_timeout < 0 ? d.entry_timeout : e.entry_timeout, o.entry_valid, o.entry_valid_nsec);
  detail::split_seconds(e.attr_timeout < 0 ? d.attr_timeout : e.attr_timeout, o.attr_valid, o.attr_valid_nsec);
  o.attr = to_wire(e.attr);
  if (o.attr.ino == 0) o.attr.ino = e.ino;
  return o;
}

// STATX: the kernel's statx fields as they are, with the attribute cache time.
inline abi::statx_out to_wire(const struct ::statx& x, const cache_defaults& d) noexcept {
  abi::statx_out o{};
  detail::split_seconds(d.attr_timeout, o.attr_valid, o.attr_valid_nsec);
  auto t = [](const struct statx_timestamp& ts) { return abi::sx_time{ts.tv_sec, ts.tv_nsec, 0}; };
  o.stat.mask = x.stx_mask;
  o.stat.blksize = x.stx_blksize;
  o.stat.attributes = x.stx_attributes;
  o.stat.nlink = x.stx_nlink;
  o.stat.uid = x.stx_uid;
  o.stat.gid = x.stx_gid;
  o.stat.mode = x.stx_mode;
  o.stat.ino = x.stx_ino;
  o.stat.size = x.stx_size;
  o.stat.blocks = x.stx_blocks;
  o.stat.attributes_mask = x.stx_attributes_mask;
  o.stat.atime = t(x.stx_atime);
  o.stat.btime = t(x.stx_btime);
  o.stat.ctime = t(x.stx_ctime);
  o.stat.mtime = t(x.stx_mtime);
  o.stat.rdev_major = x.stx_rdev_major;
  o.stat.rdev_minor = x.stx_rdev_minor;
  o.stat.dev_major = x.stx_dev_major;
  o.stat.dev_minor = x.stx_dev_minor;
  return o;
}

inline abi::open_out to_wire(const open_reply& r) noexcept {
  abi::open_out o{};
  o.fh = r.fh;
  o.open_flags = r.extra_open_flags | (r.direct_io ? abi::fopen::direct_io : 0) | (r.keep_cache ? abi::fopen::keep_cache : 0) |
                 (r.nonseekable ? abi::fopen::nonseekable : 0) | (r.cache_dir ? abi::fopen::cache_dir : 0) |
                 (r.passthrough ? abi::fopen::passthrough : 0) | (r.zero_copy ? abi::fopen::io_uring_zero_copy : 0);
  if (r.passthrough) o.backing_id = r.backing_id;
  return o;
}

}  // namespace corofuse
