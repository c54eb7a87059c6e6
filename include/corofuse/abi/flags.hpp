// Flag bits of the FUSE protocol 7.46, grouped by the field that carries them.
#pragma once

#include <cstdint>

namespace corofuse::abi {

// INIT capability flags: one 64-bit set. On the wire the low half is fuse_init_in/out.flags and
// the high half is flags2, which counts only when init_ext is set in the reply.
namespace init_flag {
inline constexpr std::uint64_t async_read = 1ull << 0;
inline constexpr std::uint64_t posix_locks = 1ull << 1;
inline constexpr std::uint64_t file_ops = 1ull << 2;
inline constexpr std::uint64_t atomic_o_trunc = 1ull << 3;
inline constexpr std::uint64_t export_support = 1ull << 4;
inline constexpr std::uint64_t big_writes = 1ull << 5;
inline constexpr std::uint64_t dont_mask = 1ull << 6;
inline constexpr std::uint64_t splice_write = 1ull << 7;
inline constexpr std::uint64_t splice_move = 1ull << 8;
inline constexpr std::uint64_t splice_read = 1ull << 9;
inline constexpr std::uint64_t flock_locks = 1ull << 10;
inline constexpr std::uint64_t has_ioctl_dir = 1ull << 11;
inline constexpr std::uint64_t auto_inval_data = 1ull << 12;
inline constexpr std::uint64_t do_readdirplus = 1ull << 13;
inline constexpr std::uint64_t readdirplus_auto = 1ull << 14;
inline constexpr std::uint64_t async_dio = 1ull << 15;
inline constexpr std::uint64_t writeback_cache = 1ull << 16;
inline constexpr std::uint64_t no_open_support = 1ull << 17;
inline constexpr std::uint64_t parallel_dirops = 1ull << 18;
inline constexpr std::uint64_t handle_killpriv = 1ull << 19;
inline constexpr std::uint64_t posix_acl = 1ull << 20;
inline constexpr std::uint64_t abort_error = 1ull << 21;
inline constexpr std::uint64_t max_pages = 1ull << 22;
inline constexpr std::uint64_t cache_symlinks = 1ull << 23;
inline constexpr std::uint64_t no_opendir_support = 1ull << 24;
inline constexpr std::uint64_t explicit_inval_data = 1ull << 25;
inline constexpr std::uint64_t map_alignment = 1ull << 26;
inline constexpr std::uint64_t submounts = 1ull << 27;
inline constexpr std::uint64_t handle_killpriv_v2 = 1ull << 28;
inline constexpr std::uint64_t setxattr_ext = 1ull << 29;
inline constexpr std::uint64_t init_ext = 1ull << 30;
inline constexpr std::uint64_t init_reserved = 1ull << 31;
inline constexpr std::uint64_t security_ctx = 1ull << 32;
inline constexpr std::uint64_t has_inode_dax = 1ull << 33;
inline constexpr std::uint64_t create_supp_group = 1ull << 34;
inline constexpr std::uint64_t has_expire_only = 1ull << 35;
inline constexpr std::uint64_t direct_io_allow_mmap = 1ull << 36;
inline constexpr std::uint64_t passthrough = 1ull << 37;
inline constexpr std::uint64_t no_export_support = 1ull << 38;
inline constexpr std::uint64_t has_resend = 1ull << 39;
inline constexpr std::uint64_t direct_io_relax = direct_io_allow_mmap;  // the old name
inline constexpr std::uint64_t allow_idmap = 1ull << 40;
inline constexpr std::uint64_t over_io_uring = 1ull << 41;
inline constexpr std::uint64_t request_timeout = 1ull << 42;
inline constexpr std::uint64_t has_io_uring_bufpool = 1ull << 43;  // 7.46: the capability probe

// Splitting and joining the 64-bit set as fuse_init_in/out carry it.
constexpr std::uint32_t low_word(std::uint64_t f) noexcept { return static_cast<std::uint32_t>(f); }
constexpr std::uint32_t high_word(std::uint64_t f) noexcept { return static_cast<std::uint32_t>(f >> 32); }
constexpr std::uint64_t join(std::uint32_t flags, std::uint32_t flags2) noexcept {
  return (static_cast<std::uint64_t>(flags2) << 32) | flags;
}
}  // namespace init_flag

// CUSE INIT flags.
namespace cuse_flag {
inline constexpr std::uint32_t unrestricted_ioctl = 1u << 0;
}

// fuse_setattr_in.valid: which fields a SETATTR changes.
namespace fattr {
inline constexpr std::uint32_t mode = 1u << 0;
inline constexpr std::uint32_t uid = 1u << 1;
inline constexpr std::uint32_t gid = 1u << 2;
inline constexpr std::uint32_t size = 1u << 3;
inline constexpr std::uint32_t atime = 1u << 4;
inline constexpr std::uint32_t mtime = 1u << 5;
inline constexpr std::uint32_t fh = 1u << 6;
inline constexpr std::uint32_t atime_now = 1u << 7;
inline constexpr std::uint32_t mtime_now = 1u << 8;
inline constexpr std::uint32_t lockowner = 1u << 9;
inline constexpr std::uint32_t ctime = 1u << 10;
inline constexpr std::uint32_t kill_suidgid = 1u << 11;
}  // namespace fattr

// fuse_open_out.open_flags: how the kernel should treat an open file.
namespace fopen {
inline constexpr std::uint32_t direct_io = 1u << 0;
inline constexpr std::uint32_t keep_cache = 1u << 1;
inline constexpr std::uint32_t nonseekable = 1u << 2;
inline constexpr std::uint32_t cache_dir = 1u << 3;
inline constexpr std::uint32_t stream = 1u << 4;
inline constexpr std::uint32_t noflush = 1u << 5;
inline constexpr std::uint32_t parallel_direct_writes = 1u << 6;
inline constexpr std::uint32_t passthrough = 1u << 7;
inline constexpr std::uint32_t io_uring_zero_copy = 1u << 8;  // 7.46
}  // namespace fopen

// fuse_release_in.release_flags
namespace release_flag {
inline constexpr std::uint32_t flush = 1u << 0;
inline constexpr std::uint32_t flock_unlock = 1u << 1;
}

// fuse_getattr_in.getattr_flags
namespace getattr_flag {
inline constexpr std::uint32_t fh = 1u << 0;
}

// fuse_lk_in.lk_flags
namespace lk_flag {
inline constexpr std::uint32_t flock = 1u << 0;
}

// fuse_write_in.write_flags
namespace write_flag {
inline constexpr std::uint32_t cache = 1u << 0;
inline constexpr std::uint32_t lockowner = 1u << 1;
inline constexpr std::uint32_t kill_suidgid = 1u << 2;
inline constexpr std::uint32_t kill_priv = kill_suidgid;  // the old name
}  // namespace write_flag

// fuse_read_in.read_flags
namespace read_flag {
inline constexpr std::uint32_t lockowner = 1u << 1;
}

// fuse_ioctl_in.flags / fuse_ioctl_out.flags
namespace ioctl_flag {
inline constexpr std::uint32_t compat = 1u << 0;
inline constexpr std::uint32_t unrestricted = 1u << 1;
inline constexpr std::uint32_t retry = 1u << 2;
inline constexpr std::uint32_t bits32 = 1u << 3;
inline constexpr std::uint32_t dir = 1u << 4;
inline constexpr std::uint32_t compat_x32 = 1u << 5;
inline constexpr std::uint32_t max_iov = 256;  // not a flag: the most iovecs a retry may name
}  // namespace ioctl_flag

// fuse_poll_in.flags
namespace poll_flag {
inline constexpr std::uint32_t schedule_notify = 1u << 0;
}

// fuse_fsync_in.fsync_flags
namespace fsync_flag {
inline constexpr std::uint32_t fdatasync = 1u << 0;
}

// fuse_attr.flags
namespace attr_flag {
inline constexpr std::uint32_t submount = 1u << 0;
inline constexpr std::uint32_t dax = 1u << 1;
}

// fuse_open_in.open_flags / fuse_create_in.open_flags
namespace open_flag {
inline constexpr std::uint32_t kill_suidgid = 1u << 0;
}

// fuse_setxattr_in.setxattr_flags
namespace setxattr_flag {
inline constexpr std::uint32_t acl_kill_sgid = 1u << 0;
}

// fuse_notify_inval_entry_out.flags
namespace inval_entry_flag {
inline constexpr std::uint32_t expire_only = 1u << 0;
}

// fuse_setupmapping_in.flags
namespace setupmapping_flag {
inline constexpr std::uint64_t write = 1ull << 0;
inline constexpr std::uint64_t read = 1ull << 1;
}

}  // namespace corofuse::abi
