// The FUSE protocol's version, opcodes and notification codes, as the kernel numbers them.
// Written from the kernel's documented interface; tests/unit/abi_agreement_test.cpp checks every
// value against Linux 7.3's <linux/fuse.h>.
#pragma once

#include <cstdint>
#include <string_view>

namespace corofuse::abi {

// The protocol this library speaks: 7.46 (Linux 7.3: buffer pools and zero-copy).
inline constexpr std::uint32_t kernel_version = 7;
inline constexpr std::uint32_t kernel_minor_version = 46;

// The minor versions that introduced what the transports rely on.
inline constexpr std::uint32_t minor_with_init_ext = 36;  // flags2 in INIT
inline constexpr std::uint32_t minor_with_statx = 39;     // FUSE_STATX
inline constexpr std::uint32_t minor_with_io_uring = 42;  // FUSE-over-io_uring
inline constexpr std::uint32_t minor_with_bufpool = 46;   // ADD_QUEUE / ADD_BUFPOOL / zero-copy

inline constexpr std::uint64_t root_id = 1;             // node id of the mount's root directory
inline constexpr std::uint32_t min_read_buffer = 8192;  // smallest /dev/fuse read the kernel accepts

// Sizes of older struct versions the kernel may still send or accept.
inline constexpr std::uint32_t compat_entry_out_size = 120;
inline constexpr std::uint32_t compat_attr_out_size = 96;
inline constexpr std::uint32_t compat_mknod_in_size = 8;
inline constexpr std::uint32_t compat_write_in_size = 24;
inline constexpr std::uint32_t compat_statfs_size = 48;
inline constexpr std::uint32_t compat_setxattr_in_size = 8;
inline constexpr std::uint32_t compat_init_out_size = 8;
inline constexpr std::uint32_t compat_22_init_out_size = 24;
inline constexpr std::uint32_t cuse_init_info_max = 4096;

// Bit 63 of a request's unique id marks a request the kernel resent (FUSE_NOTIFY_RESEND).
inline constexpr std::uint64_t unique_resend = 1ull << 63;
// uid/gid the kernel sends when the caller's id cannot be mapped into the mount's namespace.
inline constexpr std::uint32_t invalid_uidgid = 0xffffffffu;

enum class opcode : std::uint32_t {
  lookup = 1,
  forget = 2,  // no reply
  getattr = 3,
  setattr = 4,
  readlink = 5,
  symlink = 6,
  mknod = 8,
  mkdir = 9,
  unlink = 10,
  rmdir = 11,
  rename = 12,
  link = 13,
  open = 14,
  read = 15,
  write = 16,
  statfs = 17,
  release = 18,
  fsync = 20,
  setxattr = 21,
  getxattr = 22,
  listxattr = 23,
  removexattr = 24,
  flush = 25,
  init = 26,
  opendir = 27,
  readdir = 28,
  releasedir = 29,
  fsyncdir = 30,
  getlk = 31,
  setlk = 32,
  setlkw = 33,
  access = 34,
  create = 35,
  interrupt = 36,
  bmap = 37,
  destroy = 38,
  ioctl = 39,
  poll = 40,
  notify_reply = 41,
  batch_forget = 42,  // no reply
  fallocate = 43,
  readdirplus = 44,
  rename2 = 45,
  lseek = 46,
  copy_file_range = 47,
  setupmapping = 48,
  removemapping = 49,
  syncfs = 50,
  tmpfile = 51,
  statx = 52,
  copy_file_range_64 = 53,  // 7.45

  cuse_init = 4096,
  // Opcodes that would appear if the peer had the other byte order.
  cuse_init_bswap_reserved = 1048576,
  init_bswap_reserved = 436207616,
};

// Highest FUSE (not CUSE) opcode of protocol 7.46.
inline constexpr std::uint32_t max_opcode = 53;

// Kernel-to-server requests that must never be answered: FORGET and BATCH_FORGET, and
// NOTIFY_REPLY (the kernel's answer to a RETRIEVE notification). INTERRUPT is answered only to ask
// for a resend (EAGAIN), so it is not listed.
constexpr bool opcode_has_no_reply(opcode op) noexcept {
  return op == opcode::forget || op == opcode::batch_forget || op == opcode::notify_reply;
}

// The kernel's name for an opcode, for logs and counters ("LOOKUP"); "UNKNOWN" when unknown.
constexpr std::string_view opcode_name(opcode op) noexcept {
  switch (op) {
    case opcode::lookup: return "LOOKUP";
    case opcode::forget: return "FORGET";
    case opcode::getattr: return "GETATTR";
    case opcode::setattr: return "SETATTR";
    case opcode::readlink: return "READLINK";
    case opcode::symlink: return "SYMLINK";
    case opcode::mknod: return "MKNOD";
    case opcode::mkdir: return "MKDIR";
    case opcode::unlink: return "UNLINK";
    case opcode::rmdir: return "RMDIR";
    case opcode::rename: return "RENAME";
    case opcode::link: return "LINK";
    case opcode::open: return "OPEN";
    case opcode::read: return "READ";
    case opcode::write: return "WRITE";
    case opcode::statfs: return "STATFS";
    case opcode::release: return "RELEASE";
    case opcode::fsync: return "FSYNC";
    case opcode::setxattr: return "SETXATTR";
    case opcode::getxattr: return "GETXATTR";
    case opcode::listxattr: return "LISTXATTR";
    case opcode::removexattr: return "REMOVEXATTR";
    case opcode::flush: return "FLUSH";
    case opcode::init: return "INIT";
    case opcode::opendir: return "OPENDIR";
    case opcode::readdir: return "READDIR";
    case opcode::releasedir: return "RELEASEDIR";
    case opcode::fsyncdir: return "FSYNCDIR";
    case opcode::getlk: return "GETLK";
    case opcode::setlk: return "SETLK";
    case opcode::setlkw: return "SETLKW";
    case opcode::access: return "ACCESS";
    case opcode::create: return "CREATE";
    case opcode::interrupt: return "INTERRUPT";
    case opcode::bmap: return "BMAP";
    case opcode::destroy: return "DESTROY";
    case opcode::ioctl: return "IOCTL";
    case opcode::poll: return "POLL";
    case opcode::notify_reply: return "NOTIFY_REPLY";
    case opcode::batch_forget: return "BATCH_FORGET";
    case opcode::fallocate: return "FALLOCATE";
    case opcode::readdirplus: return "READDIRPLUS";
    case opcode::rename2: return "RENAME2";
    case opcode::lseek: return "LSEEK";
    case opcode::copy_file_range: return "COPY_FILE_RANGE";
    case opcode::setupmapping: return "SETUPMAPPING";
    case opcode::removemapping: return "REMOVEMAPPING";
    case opcode::syncfs: return "SYNCFS";
    case opcode::tmpfile: return "TMPFILE";
    case opcode::statx: return "STATX";
    case opcode::copy_file_range_64: return "COPY_FILE_RANGE_64";
    case opcode::cuse_init: return "CUSE_INIT";
    case opcode::cuse_init_bswap_reserved:
    case opcode::init_bswap_reserved: break;
  }
  return "UNKNOWN";
}

// Server-to-kernel notifications (written to /dev/fuse with unique 0 and the code as error).
enum class notify_code : std::int32_t {
  poll = 1,
  inval_inode = 2,
  inval_entry = 3,
  store = 4,
  retrieve = 5,
  delete_entry = 6,
  resend = 7,
  inc_epoch = 8,  // 7.44
  prune = 9,      // 7.45
};

// Request extension types (after the op's arguments, total_extlen * 8 bytes).
enum class ext_type : std::uint32_t {
  max_nr_secctx = 31,  // types 0..31 are security-context headers
  groups = 32,         // supplementary groups (FUSE_CREATE_SUPP_GROUP)
};

}  // namespace corofuse::abi
