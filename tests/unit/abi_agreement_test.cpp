// corofuse's protocol definitions (corofuse/abi.hpp) compiled beside the kernel's own
// <linux/fuse.h> of protocol 7.46: every struct's size, alignment and field layout, and every
// constant, must agree. Our headers were written independently of the kernel header, so this is
// the test that would catch a typo'd offset or flag bit before a kernel does.
//
// Everything is a runtime CHECK so each area is a counted test case with a readable failure.
#include <catch2/catch.hpp>
#include <kernel_uapi_status.h>

#include <bit>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <ostream>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "corofuse/abi.hpp"

#if !COROFUSE_KERNEL_UAPI_AVAILABLE

// Without the kernel header nothing can be compared; passing would be a lie.
TEST_CASE("kernel <linux/fuse.h> is available", "[abi]") { FAIL(COROFUSE_KERNEL_UAPI_ERROR); }

#else

#include <sys/ioctl.h>  // _IO/_IOR/_IOW, which the FUSE_DEV_IOC_* macros expand to
// The 7.46 header from @kernel_uapi, found before the (older) system one; the version check
// below would catch the system header being picked up instead.
#include <linux/fuse.h>

namespace {

namespace abi = corofuse::abi;

// A constant's bit pattern at its own width. The kernel spells 32-bit flags as int (so 1 << 31
// is negative) and its enums' underlying types are the compiler's choice; ours are unsigned or
// scoped enums. What has to agree is the value in the wire field, so compare the unsigned bits.
template <class T>
constexpr std::uint64_t bits(T v) noexcept {
  if constexpr (std::is_enum_v<T>) {
    return bits(static_cast<std::underlying_type_t<T>>(v));
  } else {
    return static_cast<std::uint64_t>(static_cast<std::make_unsigned_t<T>>(v));
  }
}

// Signedness matters beside size: swapping s64 for u64 keeps the layout but changes what
// e.g. notify_inval_inode_out.len = -1 ("to the end") means.
template <class F>
inline constexpr bool signed_field = std::is_signed_v<std::remove_all_extents_t<F>>;

struct type_layout {
  std::size_t size;
  std::size_t align;
  bool operator==(const type_layout&) const = default;
};
struct field_layout {
  std::size_t offset;
  std::size_t size;
  bool is_signed;
  bool operator==(const field_layout&) const = default;
};
// Catch2 prints both sides of a failed CHECK with these.
std::ostream& operator<<(std::ostream& os, const type_layout& l) { return os << "{size " << l.size << ", align " << l.align << "}"; }
std::ostream& operator<<(std::ostream& os, const field_layout& l) {
  return os << "{offset " << l.offset << ", size " << l.size << (l.is_signed ? ", signed}" : ", unsigned}");
}

}  // namespace

#define TYPE_LAYOUT(S) \
  type_layout { sizeof(S), alignof(S) }
#define FIELD_LAYOUT(S, f) \
  field_layout { offsetof(S, f), sizeof(std::declval<S&>().f), signed_field<decltype(std::declval<S&>().f)> }

// Each check names what it compares in an INFO and compares two locals, so a failure reads
// "{offset 84, size 4, unsigned} == {offset 80, ...}" with message "fuse_attr.flags vs
// abi::attr.flags", at the line of the check.

// Kernel struct K and our struct O: same size and alignment (arrays of them, and the next
// struct in a request, depend on both).
#define CHECK_SIZE(K, O)                       \
  do {                                         \
    INFO(#K " vs " #O);                        \
    const type_layout kernel = TYPE_LAYOUT(K); \
    const type_layout ours = TYPE_LAYOUT(O);   \
    CHECK(kernel == ours);                     \
  } while (false)
// Field kf of K and field of of O: same offset, size and signedness.
#define CHECK_FIELD_AS(K, kf, O, of)                 \
  do {                                               \
    INFO(#K "." #kf " vs " #O "." #of);              \
    const field_layout kernel = FIELD_LAYOUT(K, kf); \
    const field_layout ours = FIELD_LAYOUT(O, of);   \
    CHECK(kernel == ours);                           \
  } while (false)
#define CHECK_FIELD(K, O, f) CHECK_FIELD_AS(K, f, O, f)
// A constant, size or offset: same value (same bits, for flags).
#define CHECK_CONST(k, o)                 \
  do {                                    \
    INFO(#k " vs " #o);                   \
    const std::uint64_t kernel = bits(k); \
    const std::uint64_t ours = bits(o);   \
    CHECK(kernel == ours);                \
  } while (false)

// ---- the header itself and the plain constants ---------------------------------------------------

TEST_CASE("kernel header: protocol version and constants", "[abi]") {
  WARN("kernel header: " COROFUSE_KERNEL_UAPI_SOURCE);
  // A newer header (new opcodes, flags or fields) bumps the minor version: this is what makes
  // the test notice things our headers do not know about yet.
  CHECK_CONST(FUSE_KERNEL_VERSION, abi::kernel_version);
  CHECK_CONST(FUSE_KERNEL_MINOR_VERSION, abi::kernel_minor_version);

  CHECK_CONST(FUSE_ROOT_ID, abi::root_id);
  CHECK_CONST(FUSE_MIN_READ_BUFFER, abi::min_read_buffer);
  CHECK_CONST(FUSE_COMPAT_ENTRY_OUT_SIZE, abi::compat_entry_out_size);
  CHECK_CONST(FUSE_COMPAT_ATTR_OUT_SIZE, abi::compat_attr_out_size);
  CHECK_CONST(FUSE_COMPAT_MKNOD_IN_SIZE, abi::compat_mknod_in_size);
  CHECK_CONST(FUSE_COMPAT_WRITE_IN_SIZE, abi::compat_write_in_size);
  CHECK_CONST(FUSE_COMPAT_STATFS_SIZE, abi::compat_statfs_size);
  CHECK_CONST(FUSE_COMPAT_SETXATTR_IN_SIZE, abi::compat_setxattr_in_size);
  CHECK_CONST(FUSE_COMPAT_INIT_OUT_SIZE, abi::compat_init_out_size);
  CHECK_CONST(FUSE_COMPAT_22_INIT_OUT_SIZE, abi::compat_22_init_out_size);
  CHECK_CONST(CUSE_INIT_INFO_MAX, abi::cuse_init_info_max);
  // FUSE_REMOVEMAPPING_MAX_ENTRY is PAGE_SIZE / sizeof(fuse_removemapping_one): PAGE_SIZE is not
  // defined for userspace, so it cannot be compared; fuse_removemapping_one's size is (per-op).
}

// ---- request/reply headers and request extensions -------------------------------------------------

TEST_CASE("kernel header: in/out headers and request extensions", "[abi]") {
  CHECK_SIZE(fuse_in_header, abi::in_header);
  CHECK_FIELD(fuse_in_header, abi::in_header, len);
  CHECK_FIELD(fuse_in_header, abi::in_header, opcode);
  CHECK_FIELD(fuse_in_header, abi::in_header, unique);
  CHECK_FIELD(fuse_in_header, abi::in_header, nodeid);
  CHECK_FIELD(fuse_in_header, abi::in_header, uid);
  CHECK_FIELD(fuse_in_header, abi::in_header, gid);
  CHECK_FIELD(fuse_in_header, abi::in_header, pid);
  CHECK_FIELD(fuse_in_header, abi::in_header, total_extlen);
  CHECK_FIELD(fuse_in_header, abi::in_header, padding);

  CHECK_SIZE(fuse_out_header, abi::out_header);
  CHECK_FIELD(fuse_out_header, abi::out_header, len);
  CHECK_FIELD(fuse_out_header, abi::out_header, error);
  CHECK_FIELD(fuse_out_header, abi::out_header, unique);

  CHECK_CONST(FUSE_UNIQUE_RESEND, abi::unique_resend);
  CHECK_CONST(FUSE_INVALID_UIDGID, abi::invalid_uidgid);

  // Extensions follow the op's arguments (in_header.total_extlen * 8 bytes).
  CHECK_SIZE(fuse_ext_header, abi::ext_header);
  CHECK_FIELD(fuse_ext_header, abi::ext_header, size);
  CHECK_FIELD(fuse_ext_header, abi::ext_header, type);
  CHECK_CONST(sizeof(abi::ext_type), sizeof(std::declval<fuse_ext_header&>().type));
  CHECK_CONST(FUSE_MAX_NR_SECCTX, abi::ext_type::max_nr_secctx);
  CHECK_CONST(FUSE_EXT_GROUPS, abi::ext_type::groups);

  CHECK_SIZE(fuse_secctx, abi::secctx);
  CHECK_FIELD(fuse_secctx, abi::secctx, size);
  CHECK_FIELD(fuse_secctx, abi::secctx, padding);
  CHECK_SIZE(fuse_secctx_header, abi::secctx_header);
  CHECK_FIELD(fuse_secctx_header, abi::secctx_header, size);
  CHECK_FIELD(fuse_secctx_header, abi::secctx_header, nr_secctx);

  // Ours has no flexible groups[]: the ids start right after it.
  CHECK_SIZE(fuse_supp_groups, abi::supp_groups);
  CHECK_FIELD(fuse_supp_groups, abi::supp_groups, nr_groups);
  CHECK_CONST(offsetof(fuse_supp_groups, groups), sizeof(abi::supp_groups));
}

// ---- attributes ---------------------------------------------------------------------------------

TEST_CASE("kernel header: attribute structs", "[abi]") {
  CHECK_SIZE(fuse_attr, abi::attr);
  CHECK_FIELD(fuse_attr, abi::attr, ino);
  CHECK_FIELD(fuse_attr, abi::attr, size);
  CHECK_FIELD(fuse_attr, abi::attr, blocks);
  CHECK_FIELD(fuse_attr, abi::attr, atime);
  CHECK_FIELD(fuse_attr, abi::attr, mtime);
  CHECK_FIELD(fuse_attr, abi::attr, ctime);
  CHECK_FIELD(fuse_attr, abi::attr, atimensec);
  CHECK_FIELD(fuse_attr, abi::attr, mtimensec);
  CHECK_FIELD(fuse_attr, abi::attr, ctimensec);
  CHECK_FIELD(fuse_attr, abi::attr, mode);
  CHECK_FIELD(fuse_attr, abi::attr, nlink);
  CHECK_FIELD(fuse_attr, abi::attr, uid);
  CHECK_FIELD(fuse_attr, abi::attr, gid);
  CHECK_FIELD(fuse_attr, abi::attr, rdev);
  CHECK_FIELD(fuse_attr, abi::attr, blksize);
  CHECK_FIELD(fuse_attr, abi::attr, flags);

  // Our names drop the kernel's reserved-identifier underscores.
  CHECK_SIZE(fuse_sx_time, abi::sx_time);
  CHECK_FIELD(fuse_sx_time, abi::sx_time, tv_sec);
  CHECK_FIELD(fuse_sx_time, abi::sx_time, tv_nsec);
  CHECK_FIELD_AS(fuse_sx_time, __reserved, abi::sx_time, reserved);

  CHECK_SIZE(fuse_statx, abi::statx_attr);
  CHECK_FIELD(fuse_statx, abi::statx_attr, mask);
  CHECK_FIELD(fuse_statx, abi::statx_attr, blksize);
  CHECK_FIELD(fuse_statx, abi::statx_attr, attributes);
  CHECK_FIELD(fuse_statx, abi::statx_attr, nlink);
  CHECK_FIELD(fuse_statx, abi::statx_attr, uid);
  CHECK_FIELD(fuse_statx, abi::statx_attr, gid);
  CHECK_FIELD(fuse_statx, abi::statx_attr, mode);
  CHECK_FIELD_AS(fuse_statx, __spare0, abi::statx_attr, spare0);
  CHECK_FIELD(fuse_statx, abi::statx_attr, ino);
  CHECK_FIELD(fuse_statx, abi::statx_attr, size);
  CHECK_FIELD(fuse_statx, abi::statx_attr, blocks);
  CHECK_FIELD(fuse_statx, abi::statx_attr, attributes_mask);
  CHECK_FIELD(fuse_statx, abi::statx_attr, atime);
  CHECK_FIELD(fuse_statx, abi::statx_attr, btime);
  CHECK_FIELD(fuse_statx, abi::statx_attr, ctime);
  CHECK_FIELD(fuse_statx, abi::statx_attr, mtime);
  CHECK_FIELD(fuse_statx, abi::statx_attr, rdev_major);
  CHECK_FIELD(fuse_statx, abi::statx_attr, rdev_minor);
  CHECK_FIELD(fuse_statx, abi::statx_attr, dev_major);
  CHECK_FIELD(fuse_statx, abi::statx_attr, dev_minor);
  CHECK_FIELD_AS(fuse_statx, __spare2, abi::statx_attr, spare2);

  CHECK_SIZE(fuse_kstatfs, abi::kstatfs);
  CHECK_FIELD(fuse_kstatfs, abi::kstatfs, blocks);
  CHECK_FIELD(fuse_kstatfs, abi::kstatfs, bfree);
  CHECK_FIELD(fuse_kstatfs, abi::kstatfs, bavail);
  CHECK_FIELD(fuse_kstatfs, abi::kstatfs, files);
  CHECK_FIELD(fuse_kstatfs, abi::kstatfs, ffree);
  CHECK_FIELD(fuse_kstatfs, abi::kstatfs, bsize);
  CHECK_FIELD(fuse_kstatfs, abi::kstatfs, namelen);
  CHECK_FIELD(fuse_kstatfs, abi::kstatfs, frsize);
  CHECK_FIELD(fuse_kstatfs, abi::kstatfs, padding);
  CHECK_FIELD(fuse_kstatfs, abi::kstatfs, spare);

  CHECK_SIZE(fuse_file_lock, abi::file_lock);
  CHECK_FIELD(fuse_file_lock, abi::file_lock, start);
  CHECK_FIELD(fuse_file_lock, abi::file_lock, end);
  CHECK_FIELD(fuse_file_lock, abi::file_lock, type);
  CHECK_FIELD(fuse_file_lock, abi::file_lock, pid);

  CHECK_SIZE(fuse_entry_out, abi::entry_out);
  CHECK_FIELD(fuse_entry_out, abi::entry_out, nodeid);
  CHECK_FIELD(fuse_entry_out, abi::entry_out, generation);
  CHECK_FIELD(fuse_entry_out, abi::entry_out, entry_valid);
  CHECK_FIELD(fuse_entry_out, abi::entry_out, attr_valid);
  CHECK_FIELD(fuse_entry_out, abi::entry_out, entry_valid_nsec);
  CHECK_FIELD(fuse_entry_out, abi::entry_out, attr_valid_nsec);
  CHECK_FIELD(fuse_entry_out, abi::entry_out, attr);

  CHECK_SIZE(fuse_attr_out, abi::attr_out);
  CHECK_FIELD(fuse_attr_out, abi::attr_out, attr_valid);
  CHECK_FIELD(fuse_attr_out, abi::attr_out, attr_valid_nsec);
  CHECK_FIELD(fuse_attr_out, abi::attr_out, dummy);
  CHECK_FIELD(fuse_attr_out, abi::attr_out, attr);

  CHECK_SIZE(fuse_statx_out, abi::statx_out);
  CHECK_FIELD(fuse_statx_out, abi::statx_out, attr_valid);
  CHECK_FIELD(fuse_statx_out, abi::statx_out, attr_valid_nsec);
  CHECK_FIELD(fuse_statx_out, abi::statx_out, flags);
  CHECK_FIELD(fuse_statx_out, abi::statx_out, spare);
  CHECK_FIELD(fuse_statx_out, abi::statx_out, stat);

  CHECK_SIZE(fuse_statfs_out, abi::statfs_out);
  CHECK_FIELD(fuse_statfs_out, abi::statfs_out, st);
}

// ---- per-operation request and reply structs ----------------------------------------------------

TEST_CASE("kernel header: per-operation structs", "[abi]") {
  CHECK_SIZE(fuse_forget_in, abi::forget_in);
  CHECK_FIELD(fuse_forget_in, abi::forget_in, nlookup);
  CHECK_SIZE(fuse_forget_one, abi::forget_one);
  CHECK_FIELD(fuse_forget_one, abi::forget_one, nodeid);
  CHECK_FIELD(fuse_forget_one, abi::forget_one, nlookup);
  CHECK_SIZE(fuse_batch_forget_in, abi::batch_forget_in);
  CHECK_FIELD(fuse_batch_forget_in, abi::batch_forget_in, count);
  CHECK_FIELD(fuse_batch_forget_in, abi::batch_forget_in, dummy);

  CHECK_SIZE(fuse_getattr_in, abi::getattr_in);
  CHECK_FIELD(fuse_getattr_in, abi::getattr_in, getattr_flags);
  CHECK_FIELD(fuse_getattr_in, abi::getattr_in, dummy);
  CHECK_FIELD(fuse_getattr_in, abi::getattr_in, fh);

  CHECK_SIZE(fuse_statx_in, abi::statx_in);
  CHECK_FIELD(fuse_statx_in, abi::statx_in, getattr_flags);
  CHECK_FIELD(fuse_statx_in, abi::statx_in, reserved);
  CHECK_FIELD(fuse_statx_in, abi::statx_in, fh);
  CHECK_FIELD(fuse_statx_in, abi::statx_in, sx_flags);
  CHECK_FIELD(fuse_statx_in, abi::statx_in, sx_mask);

  CHECK_SIZE(fuse_mknod_in, abi::mknod_in);
  CHECK_FIELD(fuse_mknod_in, abi::mknod_in, mode);
  CHECK_FIELD(fuse_mknod_in, abi::mknod_in, rdev);
  CHECK_FIELD(fuse_mknod_in, abi::mknod_in, umask);
  CHECK_FIELD(fuse_mknod_in, abi::mknod_in, padding);

  CHECK_SIZE(fuse_mkdir_in, abi::mkdir_in);
  CHECK_FIELD(fuse_mkdir_in, abi::mkdir_in, mode);
  CHECK_FIELD(fuse_mkdir_in, abi::mkdir_in, umask);

  CHECK_SIZE(fuse_rename_in, abi::rename_in);
  CHECK_FIELD(fuse_rename_in, abi::rename_in, newdir);
  CHECK_SIZE(fuse_rename2_in, abi::rename2_in);
  CHECK_FIELD(fuse_rename2_in, abi::rename2_in, newdir);
  CHECK_FIELD(fuse_rename2_in, abi::rename2_in, flags);
  CHECK_FIELD(fuse_rename2_in, abi::rename2_in, padding);

  CHECK_SIZE(fuse_link_in, abi::link_in);
  CHECK_FIELD(fuse_link_in, abi::link_in, oldnodeid);

  CHECK_SIZE(fuse_setattr_in, abi::setattr_in);
  CHECK_FIELD(fuse_setattr_in, abi::setattr_in, valid);
  CHECK_FIELD(fuse_setattr_in, abi::setattr_in, padding);
  CHECK_FIELD(fuse_setattr_in, abi::setattr_in, fh);
  CHECK_FIELD(fuse_setattr_in, abi::setattr_in, size);
  CHECK_FIELD(fuse_setattr_in, abi::setattr_in, lock_owner);
  CHECK_FIELD(fuse_setattr_in, abi::setattr_in, atime);
  CHECK_FIELD(fuse_setattr_in, abi::setattr_in, mtime);
  CHECK_FIELD(fuse_setattr_in, abi::setattr_in, ctime);
  CHECK_FIELD(fuse_setattr_in, abi::setattr_in, atimensec);
  CHECK_FIELD(fuse_setattr_in, abi::setattr_in, mtimensec);
  CHECK_FIELD(fuse_setattr_in, abi::setattr_in, ctimensec);
  CHECK_FIELD(fuse_setattr_in, abi::setattr_in, mode);
  CHECK_FIELD(fuse_setattr_in, abi::setattr_in, unused4);
  CHECK_FIELD(fuse_setattr_in, abi::setattr_in, uid);
  CHECK_FIELD(fuse_setattr_in, abi::setattr_in, gid);
  CHECK_FIELD(fuse_setattr_in, abi::setattr_in, unused5);

  CHECK_SIZE(fuse_open_in, abi::open_in);
  CHECK_FIELD(fuse_open_in, abi::open_in, flags);
  CHECK_FIELD(fuse_open_in, abi::open_in, open_flags);

  CHECK_SIZE(fuse_create_in, abi::create_in);
  CHECK_FIELD(fuse_create_in, abi::create_in, flags);
  CHECK_FIELD(fuse_create_in, abi::create_in, mode);
  CHECK_FIELD(fuse_create_in, abi::create_in, umask);
  CHECK_FIELD(fuse_create_in, abi::create_in, open_flags);

  CHECK_SIZE(fuse_open_out, abi::open_out);
  CHECK_FIELD(fuse_open_out, abi::open_out, fh);
  CHECK_FIELD(fuse_open_out, abi::open_out, open_flags);
  CHECK_FIELD(fuse_open_out, abi::open_out, backing_id);

  CHECK_SIZE(fuse_release_in, abi::release_in);
  CHECK_FIELD(fuse_release_in, abi::release_in, fh);
  CHECK_FIELD(fuse_release_in, abi::release_in, flags);
  CHECK_FIELD(fuse_release_in, abi::release_in, release_flags);
  CHECK_FIELD(fuse_release_in, abi::release_in, lock_owner);

  CHECK_SIZE(fuse_flush_in, abi::flush_in);
  CHECK_FIELD(fuse_flush_in, abi::flush_in, fh);
  CHECK_FIELD(fuse_flush_in, abi::flush_in, unused);
  CHECK_FIELD(fuse_flush_in, abi::flush_in, padding);
  CHECK_FIELD(fuse_flush_in, abi::flush_in, lock_owner);

  CHECK_SIZE(fuse_read_in, abi::read_in);
  CHECK_FIELD(fuse_read_in, abi::read_in, fh);
  CHECK_FIELD(fuse_read_in, abi::read_in, offset);
  CHECK_FIELD(fuse_read_in, abi::read_in, size);
  CHECK_FIELD(fuse_read_in, abi::read_in, read_flags);
  CHECK_FIELD(fuse_read_in, abi::read_in, lock_owner);
  CHECK_FIELD(fuse_read_in, abi::read_in, flags);
  CHECK_FIELD(fuse_read_in, abi::read_in, padding);

  CHECK_SIZE(fuse_write_in, abi::write_in);
  CHECK_FIELD(fuse_write_in, abi::write_in, fh);
  CHECK_FIELD(fuse_write_in, abi::write_in, offset);
  CHECK_FIELD(fuse_write_in, abi::write_in, size);
  CHECK_FIELD(fuse_write_in, abi::write_in, write_flags);
  CHECK_FIELD(fuse_write_in, abi::write_in, lock_owner);
  CHECK_FIELD(fuse_write_in, abi::write_in, flags);
  CHECK_FIELD(fuse_write_in, abi::write_in, padding);

  CHECK_SIZE(fuse_write_out, abi::write_out);
  CHECK_FIELD(fuse_write_out, abi::write_out, size);
  CHECK_FIELD(fuse_write_out, abi::write_out, padding);

  CHECK_SIZE(fuse_fsync_in, abi::fsync_in);
  CHECK_FIELD(fuse_fsync_in, abi::fsync_in, fh);
  CHECK_FIELD(fuse_fsync_in, abi::fsync_in, fsync_flags);
  CHECK_FIELD(fuse_fsync_in, abi::fsync_in, padding);

  CHECK_SIZE(fuse_setxattr_in, abi::setxattr_in);
  CHECK_FIELD(fuse_setxattr_in, abi::setxattr_in, size);
  CHECK_FIELD(fuse_setxattr_in, abi::setxattr_in, flags);
  CHECK_FIELD(fuse_setxattr_in, abi::setxattr_in, setxattr_flags);
  CHECK_FIELD(fuse_setxattr_in, abi::setxattr_in, padding);

  CHECK_SIZE(fuse_getxattr_in, abi::getxattr_in);
  CHECK_FIELD(fuse_getxattr_in, abi::getxattr_in, size);
  CHECK_FIELD(fuse_getxattr_in, abi::getxattr_in, padding);
  CHECK_SIZE(fuse_getxattr_out, abi::getxattr_out);
  CHECK_FIELD(fuse_getxattr_out, abi::getxattr_out, size);
  CHECK_FIELD(fuse_getxattr_out, abi::getxattr_out, padding);

  CHECK_SIZE(fuse_lk_in, abi::lk_in);
  CHECK_FIELD(fuse_lk_in, abi::lk_in, fh);
  CHECK_FIELD(fuse_lk_in, abi::lk_in, owner);
  CHECK_FIELD(fuse_lk_in, abi::lk_in, lk);
  CHECK_FIELD(fuse_lk_in, abi::lk_in, lk_flags);
  CHECK_FIELD(fuse_lk_in, abi::lk_in, padding);
  CHECK_SIZE(fuse_lk_out, abi::lk_out);
  CHECK_FIELD(fuse_lk_out, abi::lk_out, lk);

  CHECK_SIZE(fuse_access_in, abi::access_in);
  CHECK_FIELD(fuse_access_in, abi::access_in, mask);
  CHECK_FIELD(fuse_access_in, abi::access_in, padding);

  CHECK_SIZE(fuse_interrupt_in, abi::interrupt_in);
  CHECK_FIELD(fuse_interrupt_in, abi::interrupt_in, unique);

  CHECK_SIZE(fuse_bmap_in, abi::bmap_in);
  CHECK_FIELD(fuse_bmap_in, abi::bmap_in, block);
  CHECK_FIELD(fuse_bmap_in, abi::bmap_in, blocksize);
  CHECK_FIELD(fuse_bmap_in, abi::bmap_in, padding);
  CHECK_SIZE(fuse_bmap_out, abi::bmap_out);
  CHECK_FIELD(fuse_bmap_out, abi::bmap_out, block);

  CHECK_SIZE(fuse_poll_in, abi::poll_in);
  CHECK_FIELD(fuse_poll_in, abi::poll_in, fh);
  CHECK_FIELD(fuse_poll_in, abi::poll_in, kh);
  CHECK_FIELD(fuse_poll_in, abi::poll_in, flags);
  CHECK_FIELD(fuse_poll_in, abi::poll_in, events);
  CHECK_SIZE(fuse_poll_out, abi::poll_out);
  CHECK_FIELD(fuse_poll_out, abi::poll_out, revents);
  CHECK_FIELD(fuse_poll_out, abi::poll_out, padding);

  CHECK_SIZE(fuse_fallocate_in, abi::fallocate_in);
  CHECK_FIELD(fuse_fallocate_in, abi::fallocate_in, fh);
  CHECK_FIELD(fuse_fallocate_in, abi::fallocate_in, offset);
  CHECK_FIELD(fuse_fallocate_in, abi::fallocate_in, length);
  CHECK_FIELD(fuse_fallocate_in, abi::fallocate_in, mode);
  CHECK_FIELD(fuse_fallocate_in, abi::fallocate_in, padding);

  CHECK_SIZE(fuse_lseek_in, abi::lseek_in);
  CHECK_FIELD(fuse_lseek_in, abi::lseek_in, fh);
  CHECK_FIELD(fuse_lseek_in, abi::lseek_in, offset);
  CHECK_FIELD(fuse_lseek_in, abi::lseek_in, whence);
  CHECK_FIELD(fuse_lseek_in, abi::lseek_in, padding);
  CHECK_SIZE(fuse_lseek_out, abi::lseek_out);
  CHECK_FIELD(fuse_lseek_out, abi::lseek_out, offset);

  CHECK_SIZE(fuse_copy_file_range_in, abi::copy_file_range_in);
  CHECK_FIELD(fuse_copy_file_range_in, abi::copy_file_range_in, fh_in);
  CHECK_FIELD(fuse_copy_file_range_in, abi::copy_file_range_in, off_in);
  CHECK_FIELD(fuse_copy_file_range_in, abi::copy_file_range_in, nodeid_out);
  CHECK_FIELD(fuse_copy_file_range_in, abi::copy_file_range_in, fh_out);
  CHECK_FIELD(fuse_copy_file_range_in, abi::copy_file_range_in, off_out);
  CHECK_FIELD(fuse_copy_file_range_in, abi::copy_file_range_in, len);
  CHECK_FIELD(fuse_copy_file_range_in, abi::copy_file_range_in, flags);
  CHECK_SIZE(fuse_copy_file_range_out, abi::copy_file_range_out);
  CHECK_FIELD(fuse_copy_file_range_out, abi::copy_file_range_out, bytes_copied);

  CHECK_SIZE(fuse_setupmapping_in, abi::setupmapping_in);
  CHECK_FIELD(fuse_setupmapping_in, abi::setupmapping_in, fh);
  CHECK_FIELD(fuse_setupmapping_in, abi::setupmapping_in, foffset);
  CHECK_FIELD(fuse_setupmapping_in, abi::setupmapping_in, len);
  CHECK_FIELD(fuse_setupmapping_in, abi::setupmapping_in, flags);
  CHECK_FIELD(fuse_setupmapping_in, abi::setupmapping_in, moffset);

  CHECK_SIZE(fuse_removemapping_in, abi::removemapping_in);
  CHECK_FIELD(fuse_removemapping_in, abi::removemapping_in, count);
  CHECK_SIZE(fuse_removemapping_one, abi::removemapping_one);
  CHECK_FIELD(fuse_removemapping_one, abi::removemapping_one, moffset);
  CHECK_FIELD(fuse_removemapping_one, abi::removemapping_one, len);

  CHECK_SIZE(fuse_syncfs_in, abi::syncfs_in);
  CHECK_FIELD(fuse_syncfs_in, abi::syncfs_in, padding);
}

// ---- INIT (FUSE and CUSE) -----------------------------------------------------------------------

namespace {

struct flag_pair {
  const char* kernel_name;
  std::uint64_t kernel;
  std::uint64_t ours;
};
#define FLAG_PAIR(k, ours) \
  flag_pair { #k, bits(k), bits(ours) }

// Every INIT flag of the header, one per bit 0..43 (the alias FUSE_DIRECT_IO_RELAX is checked
// on its own).
const flag_pair init_flags[] = {
    FLAG_PAIR(FUSE_ASYNC_READ, abi::init_flag::async_read),
    FLAG_PAIR(FUSE_POSIX_LOCKS, abi::init_flag::posix_locks),
    FLAG_PAIR(FUSE_FILE_OPS, abi::init_flag::file_ops),
    FLAG_PAIR(FUSE_ATOMIC_O_TRUNC, abi::init_flag::atomic_o_trunc),
    FLAG_PAIR(FUSE_EXPORT_SUPPORT, abi::init_flag::export_support),
    FLAG_PAIR(FUSE_BIG_WRITES, abi::init_flag::big_writes),
    FLAG_PAIR(FUSE_DONT_MASK, abi::init_flag::dont_mask),
    FLAG_PAIR(FUSE_SPLICE_WRITE, abi::init_flag::splice_write),
    FLAG_PAIR(FUSE_SPLICE_MOVE, abi::init_flag::splice_move),
    FLAG_PAIR(FUSE_SPLICE_READ, abi::init_flag::splice_read),
    FLAG_PAIR(FUSE_FLOCK_LOCKS, abi::init_flag::flock_locks),
    FLAG_PAIR(FUSE_HAS_IOCTL_DIR, abi::init_flag::has_ioctl_dir),
    FLAG_PAIR(FUSE_AUTO_INVAL_DATA, abi::init_flag::auto_inval_data),
    FLAG_PAIR(FUSE_DO_READDIRPLUS, abi::init_flag::do_readdirplus),
    FLAG_PAIR(FUSE_READDIRPLUS_AUTO, abi::init_flag::readdirplus_auto),
    FLAG_PAIR(FUSE_ASYNC_DIO, abi::init_flag::async_dio),
    FLAG_PAIR(FUSE_WRITEBACK_CACHE, abi::init_flag::writeback_cache),
    FLAG_PAIR(FUSE_NO_OPEN_SUPPORT, abi::init_flag::no_open_support),
    FLAG_PAIR(FUSE_PARALLEL_DIROPS, abi::init_flag::parallel_dirops),
    FLAG_PAIR(FUSE_HANDLE_KILLPRIV, abi::init_flag::handle_killpriv),
    FLAG_PAIR(FUSE_POSIX_ACL, abi::init_flag::posix_acl),
    FLAG_PAIR(FUSE_ABORT_ERROR, abi::init_flag::abort_error),
    FLAG_PAIR(FUSE_MAX_PAGES, abi::init_flag::max_pages),
    FLAG_PAIR(FUSE_CACHE_SYMLINKS, abi::init_flag::cache_symlinks),
    FLAG_PAIR(FUSE_NO_OPENDIR_SUPPORT, abi::init_flag::no_opendir_support),
    FLAG_PAIR(FUSE_EXPLICIT_INVAL_DATA, abi::init_flag::explicit_inval_data),
    FLAG_PAIR(FUSE_MAP_ALIGNMENT, abi::init_flag::map_alignment),
    FLAG_PAIR(FUSE_SUBMOUNTS, abi::init_flag::submounts),
    FLAG_PAIR(FUSE_HANDLE_KILLPRIV_V2, abi::init_flag::handle_killpriv_v2),
    FLAG_PAIR(FUSE_SETXATTR_EXT, abi::init_flag::setxattr_ext),
    FLAG_PAIR(FUSE_INIT_EXT, abi::init_flag::init_ext),
    FLAG_PAIR(FUSE_INIT_RESERVED, abi::init_flag::init_reserved),
    FLAG_PAIR(FUSE_SECURITY_CTX, abi::init_flag::security_ctx),
    FLAG_PAIR(FUSE_HAS_INODE_DAX, abi::init_flag::has_inode_dax),
    FLAG_PAIR(FUSE_CREATE_SUPP_GROUP, abi::init_flag::create_supp_group),
    FLAG_PAIR(FUSE_HAS_EXPIRE_ONLY, abi::init_flag::has_expire_only),
    FLAG_PAIR(FUSE_DIRECT_IO_ALLOW_MMAP, abi::init_flag::direct_io_allow_mmap),
    FLAG_PAIR(FUSE_PASSTHROUGH, abi::init_flag::passthrough),
    FLAG_PAIR(FUSE_NO_EXPORT_SUPPORT, abi::init_flag::no_export_support),
    FLAG_PAIR(FUSE_HAS_RESEND, abi::init_flag::has_resend),
    FLAG_PAIR(FUSE_ALLOW_IDMAP, abi::init_flag::allow_idmap),
    FLAG_PAIR(FUSE_OVER_IO_URING, abi::init_flag::over_io_uring),
    FLAG_PAIR(FUSE_REQUEST_TIMEOUT, abi::init_flag::request_timeout),
    FLAG_PAIR(FUSE_HAS_IO_URING_BUFPOOL, abi::init_flag::has_io_uring_bufpool),
};

// Checks each pair, and that the kernel values are distinct single bits covering exactly bits
// 0..n-1: a flag left out of (or pasted twice into) a list above shows up here.
void check_flag_set(std::string_view set, const flag_pair* begin, const flag_pair* end) {
  INFO(set);
  std::uint64_t seen = 0;
  for (auto p = begin; p != end; ++p) {
    INFO(p->kernel_name);
    CHECK(p->kernel == p->ours);
    CHECK(std::has_single_bit(p->kernel));
    CHECK((seen & p->kernel) == 0);
    seen |= p->kernel;
  }
  const auto n = static_cast<unsigned>(end - begin);
  CHECK(seen == (n == 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << n) - 1));
}

template <std::size_t N>
void check_flag_set(std::string_view set, const flag_pair (&pairs)[N]) {
  check_flag_set(set, pairs, pairs + N);
}

}  // namespace

TEST_CASE("kernel header: INIT and CUSE_INIT", "[abi]") {
  CHECK_SIZE(fuse_init_in, abi::init_in);
  CHECK_FIELD(fuse_init_in, abi::init_in, major);
  CHECK_FIELD(fuse_init_in, abi::init_in, minor);
  CHECK_FIELD(fuse_init_in, abi::init_in, max_readahead);
  CHECK_FIELD(fuse_init_in, abi::init_in, flags);
  CHECK_FIELD(fuse_init_in, abi::init_in, flags2);
  CHECK_FIELD(fuse_init_in, abi::init_in, unused);

  CHECK_SIZE(fuse_init_out, abi::init_out);
  CHECK_FIELD(fuse_init_out, abi::init_out, major);
  CHECK_FIELD(fuse_init_out, abi::init_out, minor);
  CHECK_FIELD(fuse_init_out, abi::init_out, max_readahead);
  CHECK_FIELD(fuse_init_out, abi::init_out, flags);
  CHECK_FIELD(fuse_init_out, abi::init_out, max_background);
  CHECK_FIELD(fuse_init_out, abi::init_out, congestion_threshold);
  CHECK_FIELD(fuse_init_out, abi::init_out, max_write);
  CHECK_FIELD(fuse_init_out, abi::init_out, time_gran);
  CHECK_FIELD(fuse_init_out, abi::init_out, max_pages);
  CHECK_FIELD(fuse_init_out, abi::init_out, map_alignment);
  CHECK_FIELD(fuse_init_out, abi::init_out, flags2);
  CHECK_FIELD(fuse_init_out, abi::init_out, max_stack_depth);
  CHECK_FIELD(fuse_init_out, abi::init_out, request_timeout);
  CHECK_FIELD(fuse_init_out, abi::init_out, unused);

  check_flag_set("INIT flags", init_flags);
  CHECK_CONST(FUSE_DIRECT_IO_RELAX, abi::init_flag::direct_io_relax);

  CHECK_SIZE(cuse_init_in, abi::cuse_init_in);
  CHECK_FIELD(cuse_init_in, abi::cuse_init_in, major);
  CHECK_FIELD(cuse_init_in, abi::cuse_init_in, minor);
  CHECK_FIELD(cuse_init_in, abi::cuse_init_in, unused);
  CHECK_FIELD(cuse_init_in, abi::cuse_init_in, flags);

  CHECK_SIZE(cuse_init_out, abi::cuse_init_out);
  CHECK_FIELD(cuse_init_out, abi::cuse_init_out, major);
  CHECK_FIELD(cuse_init_out, abi::cuse_init_out, minor);
  CHECK_FIELD(cuse_init_out, abi::cuse_init_out, unused);
  CHECK_FIELD(cuse_init_out, abi::cuse_init_out, flags);
  CHECK_FIELD(cuse_init_out, abi::cuse_init_out, max_read);
  CHECK_FIELD(cuse_init_out, abi::cuse_init_out, max_write);
  CHECK_FIELD(cuse_init_out, abi::cuse_init_out, dev_major);
  CHECK_FIELD(cuse_init_out, abi::cuse_init_out, dev_minor);
  CHECK_FIELD(cuse_init_out, abi::cuse_init_out, spare);

  CHECK_CONST(CUSE_UNRESTRICTED_IOCTL, abi::cuse_flag::unrestricted_ioctl);
}

// ---- notifications ------------------------------------------------------------------------------

TEST_CASE("kernel header: notifications", "[abi]") {
  // The code travels in out_header.error.
  CHECK_CONST(sizeof(abi::notify_code), sizeof(std::declval<fuse_out_header&>().error));
  CHECK_CONST(FUSE_NOTIFY_POLL, abi::notify_code::poll);
  CHECK_CONST(FUSE_NOTIFY_INVAL_INODE, abi::notify_code::inval_inode);
  CHECK_CONST(FUSE_NOTIFY_INVAL_ENTRY, abi::notify_code::inval_entry);
  CHECK_CONST(FUSE_NOTIFY_STORE, abi::notify_code::store);
  CHECK_CONST(FUSE_NOTIFY_RETRIEVE, abi::notify_code::retrieve);
  CHECK_CONST(FUSE_NOTIFY_DELETE, abi::notify_code::delete_entry);
  CHECK_CONST(FUSE_NOTIFY_RESEND, abi::notify_code::resend);
  CHECK_CONST(FUSE_NOTIFY_INC_EPOCH, abi::notify_code::inc_epoch);
  CHECK_CONST(FUSE_NOTIFY_PRUNE, abi::notify_code::prune);

  CHECK_SIZE(fuse_notify_poll_wakeup_out, abi::notify_poll_wakeup_out);
  CHECK_FIELD(fuse_notify_poll_wakeup_out, abi::notify_poll_wakeup_out, kh);

  CHECK_SIZE(fuse_notify_inval_inode_out, abi::notify_inval_inode_out);
  CHECK_FIELD(fuse_notify_inval_inode_out, abi::notify_inval_inode_out, ino);
  CHECK_FIELD(fuse_notify_inval_inode_out, abi::notify_inval_inode_out, off);
  CHECK_FIELD(fuse_notify_inval_inode_out, abi::notify_inval_inode_out, len);

  CHECK_SIZE(fuse_notify_inval_entry_out, abi::notify_inval_entry_out);
  CHECK_FIELD(fuse_notify_inval_entry_out, abi::notify_inval_entry_out, parent);
  CHECK_FIELD(fuse_notify_inval_entry_out, abi::notify_inval_entry_out, namelen);
  CHECK_FIELD(fuse_notify_inval_entry_out, abi::notify_inval_entry_out, flags);

  CHECK_SIZE(fuse_notify_delete_out, abi::notify_delete_out);
  CHECK_FIELD(fuse_notify_delete_out, abi::notify_delete_out, parent);
  CHECK_FIELD(fuse_notify_delete_out, abi::notify_delete_out, child);
  CHECK_FIELD(fuse_notify_delete_out, abi::notify_delete_out, namelen);
  CHECK_FIELD(fuse_notify_delete_out, abi::notify_delete_out, padding);

  CHECK_SIZE(fuse_notify_store_out, abi::notify_store_out);
  CHECK_FIELD(fuse_notify_store_out, abi::notify_store_out, nodeid);
  CHECK_FIELD(fuse_notify_store_out, abi::notify_store_out, offset);
  CHECK_FIELD(fuse_notify_store_out, abi::notify_store_out, size);
  CHECK_FIELD(fuse_notify_store_out, abi::notify_store_out, padding);

  CHECK_SIZE(fuse_notify_retrieve_out, abi::notify_retrieve_out);
  CHECK_FIELD(fuse_notify_retrieve_out, abi::notify_retrieve_out, notify_unique);
  CHECK_FIELD(fuse_notify_retrieve_out, abi::notify_retrieve_out, nodeid);
  CHECK_FIELD(fuse_notify_retrieve_out, abi::notify_retrieve_out, offset);
  CHECK_FIELD(fuse_notify_retrieve_out, abi::notify_retrieve_out, size);
  CHECK_FIELD(fuse_notify_retrieve_out, abi::notify_retrieve_out, padding);

  CHECK_SIZE(fuse_notify_retrieve_in, abi::notify_retrieve_in);
  CHECK_FIELD(fuse_notify_retrieve_in, abi::notify_retrieve_in, dummy1);
  CHECK_FIELD(fuse_notify_retrieve_in, abi::notify_retrieve_in, offset);
  CHECK_FIELD(fuse_notify_retrieve_in, abi::notify_retrieve_in, size);
  CHECK_FIELD(fuse_notify_retrieve_in, abi::notify_retrieve_in, dummy2);
  CHECK_FIELD(fuse_notify_retrieve_in, abi::notify_retrieve_in, dummy3);
  CHECK_FIELD(fuse_notify_retrieve_in, abi::notify_retrieve_in, dummy4);

  CHECK_SIZE(fuse_notify_prune_out, abi::notify_prune_out);
  CHECK_FIELD(fuse_notify_prune_out, abi::notify_prune_out, count);
  CHECK_FIELD(fuse_notify_prune_out, abi::notify_prune_out, padding);
  CHECK_FIELD(fuse_notify_prune_out, abi::notify_prune_out, spare);
}

// ---- FUSE-over-io_uring -------------------------------------------------------------------------

TEST_CASE("kernel header: io_uring structs and commands", "[abi]") {
  CHECK_CONST(FUSE_URING_IN_OUT_HEADER_SZ, abi::uring_in_out_header_size);
  CHECK_CONST(FUSE_URING_OP_IN_OUT_SZ, abi::uring_op_in_out_size);
  CHECK_CONST(FUSE_URING_ENT_ZERO_COPY, abi::uring_ent_zero_copy);
  CHECK_CONST(FUSE_URING_ZERO_COPY, abi::uring_zero_copy);

  CHECK_CONST(FUSE_IO_URING_CMD_INVALID, abi::uring_cmd::invalid);
  CHECK_CONST(FUSE_IO_URING_CMD_REGISTER, abi::uring_cmd::register_entry);
  CHECK_CONST(FUSE_IO_URING_CMD_COMMIT_AND_FETCH, abi::uring_cmd::commit_and_fetch);
  CHECK_CONST(FUSE_IO_URING_CMD_ADD_QUEUE, abi::uring_cmd::add_queue);
  CHECK_CONST(FUSE_IO_URING_CMD_ADD_BUFPOOL, abi::uring_cmd::add_bufpool);

  CHECK_SIZE(fuse_uring_ent_in_out, abi::uring_ent_in_out);
  CHECK_FIELD(fuse_uring_ent_in_out, abi::uring_ent_in_out, flags);
  CHECK_FIELD(fuse_uring_ent_in_out, abi::uring_ent_in_out, commit_id);
  CHECK_FIELD(fuse_uring_ent_in_out, abi::uring_ent_in_out, payload_sz);
  CHECK_FIELD(fuse_uring_ent_in_out, abi::uring_ent_in_out, offset);
  CHECK_FIELD(fuse_uring_ent_in_out, abi::uring_ent_in_out, reserved);

  CHECK_SIZE(fuse_uring_req_header, abi::uring_req_header);
  // Opaque byte areas: the kernel says char, we say unsigned char, so only place and size count.
  CHECK_CONST(offsetof(fuse_uring_req_header, in_out), offsetof(abi::uring_req_header, in_out));
  CHECK_CONST(sizeof(fuse_uring_req_header::in_out), sizeof(abi::uring_req_header::in_out));
  CHECK_CONST(offsetof(fuse_uring_req_header, op_in), offsetof(abi::uring_req_header, op_in));
  CHECK_CONST(sizeof(fuse_uring_req_header::op_in), sizeof(abi::uring_req_header::op_in));
  CHECK_FIELD(fuse_uring_req_header, abi::uring_req_header, ring_ent_in_out);

  CHECK_SIZE(fuse_uring_cmd_req, abi::uring_cmd_req);
  CHECK_FIELD(fuse_uring_cmd_req, abi::uring_cmd_req, flags);
  CHECK_FIELD(fuse_uring_cmd_req, abi::uring_cmd_req, commit_id);
  CHECK_FIELD(fuse_uring_cmd_req, abi::uring_cmd_req, qid);
  CHECK_FIELD(fuse_uring_cmd_req, abi::uring_cmd_req, padding);
  CHECK_FIELD(fuse_uring_cmd_req, abi::uring_cmd_req, bufpool);
  CHECK_FIELD(fuse_uring_cmd_req, abi::uring_cmd_req, bufpool.uaddr);
  CHECK_FIELD(fuse_uring_cmd_req, abi::uring_cmd_req, bufpool.len);
  CHECK_FIELD(fuse_uring_cmd_req, abi::uring_cmd_req, bufpool.reserved);
  CHECK_FIELD(fuse_uring_cmd_req, abi::uring_cmd_req, ent_zero_copy_buf_index);
  // A 7.42 kernel reads only what precedes the 7.46 union.
  CHECK_CONST(offsetof(fuse_uring_cmd_req, bufpool), abi::uring_cmd_req_size_7_42);
}

// ---- directory records --------------------------------------------------------------------------

TEST_CASE("kernel header: READDIR and READDIRPLUS records", "[abi]") {
  // Ours has no flexible name[]: the name starts at dirent_name_offset.
  CHECK_SIZE(fuse_dirent, abi::dirent);
  CHECK_FIELD(fuse_dirent, abi::dirent, ino);
  CHECK_FIELD(fuse_dirent, abi::dirent, off);
  CHECK_FIELD(fuse_dirent, abi::dirent, namelen);
  CHECK_FIELD(fuse_dirent, abi::dirent, type);
  CHECK_CONST(FUSE_NAME_OFFSET, abi::dirent_name_offset);

  CHECK_SIZE(fuse_direntplus, abi::direntplus);
  CHECK_FIELD_AS(fuse_direntplus, entry_out, abi::direntplus, entry);
  CHECK_FIELD(fuse_direntplus, abi::direntplus, dirent);
  CHECK_FIELD(fuse_direntplus, abi::direntplus, dirent.namelen);
  CHECK_CONST(FUSE_NAME_OFFSET_DIRENTPLUS, abi::direntplus_name_offset);

  // The record-size macros against ours, for every name length up to NAME_MAX.
  for (std::size_t x = 0; x < 64; ++x) {
    CAPTURE(x);
    const std::size_t rec_align = FUSE_REC_ALIGN(x), dirent_align = FUSE_DIRENT_ALIGN(x);
    CHECK(rec_align == abi::dirent_align(x));
    CHECK(dirent_align == abi::dirent_align(x));
  }
  fuse_dirent d{};
  fuse_direntplus dp{};
  for (std::uint32_t namelen = 0; namelen <= 255; ++namelen) {
    CAPTURE(namelen);
    d.namelen = namelen;
    dp.dirent.namelen = namelen;
    const std::size_t dirent_size = FUSE_DIRENT_SIZE(&d), direntplus_size = FUSE_DIRENTPLUS_SIZE(&dp);
    CHECK(dirent_size == abi::dirent_size(namelen));
    CHECK(direntplus_size == abi::direntplus_size(namelen));
  }
}

// ---- ioctl: FUSE_IOCTL and the /dev/fuse ioctls -------------------------------------------------

TEST_CASE("kernel header: ioctl structs, flags and /dev/fuse ioctls", "[abi]") {
  CHECK_SIZE(fuse_ioctl_in, abi::ioctl_in);
  CHECK_FIELD(fuse_ioctl_in, abi::ioctl_in, fh);
  CHECK_FIELD(fuse_ioctl_in, abi::ioctl_in, flags);
  CHECK_FIELD(fuse_ioctl_in, abi::ioctl_in, cmd);
  CHECK_FIELD(fuse_ioctl_in, abi::ioctl_in, arg);
  CHECK_FIELD(fuse_ioctl_in, abi::ioctl_in, in_size);
  CHECK_FIELD(fuse_ioctl_in, abi::ioctl_in, out_size);

  CHECK_SIZE(fuse_ioctl_iovec, abi::ioctl_iovec);
  CHECK_FIELD(fuse_ioctl_iovec, abi::ioctl_iovec, base);
  CHECK_FIELD(fuse_ioctl_iovec, abi::ioctl_iovec, len);

  CHECK_SIZE(fuse_ioctl_out, abi::ioctl_out);
  CHECK_FIELD(fuse_ioctl_out, abi::ioctl_out, result);
  CHECK_FIELD(fuse_ioctl_out, abi::ioctl_out, flags);
  CHECK_FIELD(fuse_ioctl_out, abi::ioctl_out, in_iovs);
  CHECK_FIELD(fuse_ioctl_out, abi::ioctl_out, out_iovs);

  const flag_pair ioctl_flags[] = {
      FLAG_PAIR(FUSE_IOCTL_COMPAT, abi::ioctl_flag::compat), FLAG_PAIR(FUSE_IOCTL_UNRESTRICTED, abi::ioctl_flag::unrestricted),
      FLAG_PAIR(FUSE_IOCTL_RETRY, abi::ioctl_flag::retry),   FLAG_PAIR(FUSE_IOCTL_32BIT, abi::ioctl_flag::bits32),
      FLAG_PAIR(FUSE_IOCTL_DIR, abi::ioctl_flag::dir),       FLAG_PAIR(FUSE_IOCTL_COMPAT_X32, abi::ioctl_flag::compat_x32),
  };
  check_flag_set("FUSE_IOCTL_*", ioctl_flags);
  CHECK_CONST(FUSE_IOCTL_MAX_IOV, abi::ioctl_flag::max_iov);

  // Passthrough's backing file registration, the argument of FUSE_DEV_IOC_BACKING_OPEN.
  CHECK_SIZE(fuse_backing_map, abi::backing_map);
  CHECK_FIELD(fuse_backing_map, abi::backing_map, fd);
  CHECK_FIELD(fuse_backing_map, abi::backing_map, flags);
  CHECK_FIELD(fuse_backing_map, abi::backing_map, padding);

  // Ours encode the ioctl numbers by hand; the kernel's come from <asm-generic/ioctl.h>.
  CHECK_CONST(FUSE_DEV_IOC_MAGIC, abi::dev_ioc_magic);
  CHECK_CONST(FUSE_DEV_IOC_CLONE, abi::dev_ioc_clone);
  CHECK_CONST(FUSE_DEV_IOC_BACKING_OPEN, abi::dev_ioc_backing_open);
  CHECK_CONST(FUSE_DEV_IOC_BACKING_CLOSE, abi::dev_ioc_backing_close);
  CHECK_CONST(FUSE_DEV_IOC_SYNC_INIT, abi::dev_ioc_sync_init);
}

// ---- all other flag sets ------------------------------------------------------------------------

TEST_CASE("kernel header: per-operation flags", "[abi]") {
  const flag_pair fattr_flags[] = {
      FLAG_PAIR(FATTR_MODE, abi::fattr::mode),
      FLAG_PAIR(FATTR_UID, abi::fattr::uid),
      FLAG_PAIR(FATTR_GID, abi::fattr::gid),
      FLAG_PAIR(FATTR_SIZE, abi::fattr::size),
      FLAG_PAIR(FATTR_ATIME, abi::fattr::atime),
      FLAG_PAIR(FATTR_MTIME, abi::fattr::mtime),
      FLAG_PAIR(FATTR_FH, abi::fattr::fh),
      FLAG_PAIR(FATTR_ATIME_NOW, abi::fattr::atime_now),
      FLAG_PAIR(FATTR_MTIME_NOW, abi::fattr::mtime_now),
      FLAG_PAIR(FATTR_LOCKOWNER, abi::fattr::lockowner),
      FLAG_PAIR(FATTR_CTIME, abi::fattr::ctime),
      FLAG_PAIR(FATTR_KILL_SUIDGID, abi::fattr::kill_suidgid),
  };
  check_flag_set("FATTR_*", fattr_flags);

  const flag_pair fopen_flags[] = {
      FLAG_PAIR(FOPEN_DIRECT_IO, abi::fopen::direct_io),
      FLAG_PAIR(FOPEN_KEEP_CACHE, abi::fopen::keep_cache),
      FLAG_PAIR(FOPEN_NONSEEKABLE, abi::fopen::nonseekable),
      FLAG_PAIR(FOPEN_CACHE_DIR, abi::fopen::cache_dir),
      FLAG_PAIR(FOPEN_STREAM, abi::fopen::stream),
      FLAG_PAIR(FOPEN_NOFLUSH, abi::fopen::noflush),
      FLAG_PAIR(FOPEN_PARALLEL_DIRECT_WRITES, abi::fopen::parallel_direct_writes),
      FLAG_PAIR(FOPEN_PASSTHROUGH, abi::fopen::passthrough),
      FLAG_PAIR(FOPEN_IO_URING_ZERO_COPY, abi::fopen::io_uring_zero_copy),
  };
  check_flag_set("FOPEN_*", fopen_flags);

  const flag_pair release_flags[] = {
      FLAG_PAIR(FUSE_RELEASE_FLUSH, abi::release_flag::flush),
      FLAG_PAIR(FUSE_RELEASE_FLOCK_UNLOCK, abi::release_flag::flock_unlock),
  };
  check_flag_set("FUSE_RELEASE_*", release_flags);

  const flag_pair write_flags[] = {
      FLAG_PAIR(FUSE_WRITE_CACHE, abi::write_flag::cache),
      FLAG_PAIR(FUSE_WRITE_LOCKOWNER, abi::write_flag::lockowner),
      FLAG_PAIR(FUSE_WRITE_KILL_SUIDGID, abi::write_flag::kill_suidgid),
  };
  check_flag_set("FUSE_WRITE_*", write_flags);
  CHECK_CONST(FUSE_WRITE_KILL_PRIV, abi::write_flag::kill_priv);

  const flag_pair attr_flags[] = {
      FLAG_PAIR(FUSE_ATTR_SUBMOUNT, abi::attr_flag::submount),
      FLAG_PAIR(FUSE_ATTR_DAX, abi::attr_flag::dax),
  };
  check_flag_set("FUSE_ATTR_*", attr_flags);

  const flag_pair setupmapping_flags[] = {
      FLAG_PAIR(FUSE_SETUPMAPPING_FLAG_WRITE, abi::setupmapping_flag::write),
      FLAG_PAIR(FUSE_SETUPMAPPING_FLAG_READ, abi::setupmapping_flag::read),
  };
  check_flag_set("FUSE_SETUPMAPPING_FLAG_*", setupmapping_flags);

  // Flags that are alone in their field (FUSE_READ_LOCKOWNER is bit 1, not 0).
  CHECK_CONST(FUSE_GETATTR_FH, abi::getattr_flag::fh);
  CHECK_CONST(FUSE_LK_FLOCK, abi::lk_flag::flock);
  CHECK_CONST(FUSE_READ_LOCKOWNER, abi::read_flag::lockowner);
  CHECK_CONST(FUSE_POLL_SCHEDULE_NOTIFY, abi::poll_flag::schedule_notify);
  CHECK_CONST(FUSE_FSYNC_FDATASYNC, abi::fsync_flag::fdatasync);
  CHECK_CONST(FUSE_OPEN_KILL_SUIDGID, abi::open_flag::kill_suidgid);
  CHECK_CONST(FUSE_SETXATTR_ACL_KILL_SGID, abi::setxattr_flag::acl_kill_sgid);
  CHECK_CONST(FUSE_EXPIRE_ONLY, abi::inval_entry_flag::expire_only);
}

// ---- opcodes ------------------------------------------------------------------------------------

namespace {

struct opcode_pair {
  std::string_view kernel_name;
  std::uint64_t kernel;
  abi::opcode ours;
};
#define OPCODE_PAIR(k, ours) \
  opcode_pair { #k, bits(k), abi::opcode::ours }

// The header's FUSE opcodes, FUSE_LOOKUP..FUSE_COPY_FILE_RANGE_64, in order.
const opcode_pair fuse_opcodes[] = {
    OPCODE_PAIR(FUSE_LOOKUP, lookup),
    OPCODE_PAIR(FUSE_FORGET, forget),
    OPCODE_PAIR(FUSE_GETATTR, getattr),
    OPCODE_PAIR(FUSE_SETATTR, setattr),
    OPCODE_PAIR(FUSE_READLINK, readlink),
    OPCODE_PAIR(FUSE_SYMLINK, symlink),
    OPCODE_PAIR(FUSE_MKNOD, mknod),
    OPCODE_PAIR(FUSE_MKDIR, mkdir),
    OPCODE_PAIR(FUSE_UNLINK, unlink),
    OPCODE_PAIR(FUSE_RMDIR, rmdir),
    OPCODE_PAIR(FUSE_RENAME, rename),
    OPCODE_PAIR(FUSE_LINK, link),
    OPCODE_PAIR(FUSE_OPEN, open),
    OPCODE_PAIR(FUSE_READ, read),
    OPCODE_PAIR(FUSE_WRITE, write),
    OPCODE_PAIR(FUSE_STATFS, statfs),
    OPCODE_PAIR(FUSE_RELEASE, release),
    OPCODE_PAIR(FUSE_FSYNC, fsync),
    OPCODE_PAIR(FUSE_SETXATTR, setxattr),
    OPCODE_PAIR(FUSE_GETXATTR, getxattr),
    OPCODE_PAIR(FUSE_LISTXATTR, listxattr),
    OPCODE_PAIR(FUSE_REMOVEXATTR, removexattr),
    OPCODE_PAIR(FUSE_FLUSH, flush),
    OPCODE_PAIR(FUSE_INIT, init),
    OPCODE_PAIR(FUSE_OPENDIR, opendir),
    OPCODE_PAIR(FUSE_READDIR, readdir),
    OPCODE_PAIR(FUSE_RELEASEDIR, releasedir),
    OPCODE_PAIR(FUSE_FSYNCDIR, fsyncdir),
    OPCODE_PAIR(FUSE_GETLK, getlk),
    OPCODE_PAIR(FUSE_SETLK, setlk),
    OPCODE_PAIR(FUSE_SETLKW, setlkw),
    OPCODE_PAIR(FUSE_ACCESS, access),
    OPCODE_PAIR(FUSE_CREATE, create),
    OPCODE_PAIR(FUSE_INTERRUPT, interrupt),
    OPCODE_PAIR(FUSE_BMAP, bmap),
    OPCODE_PAIR(FUSE_DESTROY, destroy),
    OPCODE_PAIR(FUSE_IOCTL, ioctl),
    OPCODE_PAIR(FUSE_POLL, poll),
    OPCODE_PAIR(FUSE_NOTIFY_REPLY, notify_reply),
    OPCODE_PAIR(FUSE_BATCH_FORGET, batch_forget),
    OPCODE_PAIR(FUSE_FALLOCATE, fallocate),
    OPCODE_PAIR(FUSE_READDIRPLUS, readdirplus),
    OPCODE_PAIR(FUSE_RENAME2, rename2),
    OPCODE_PAIR(FUSE_LSEEK, lseek),
    OPCODE_PAIR(FUSE_COPY_FILE_RANGE, copy_file_range),
    OPCODE_PAIR(FUSE_SETUPMAPPING, setupmapping),
    OPCODE_PAIR(FUSE_REMOVEMAPPING, removemapping),
    OPCODE_PAIR(FUSE_SYNCFS, syncfs),
    OPCODE_PAIR(FUSE_TMPFILE, tmpfile),
    OPCODE_PAIR(FUSE_STATX, statx),
    OPCODE_PAIR(FUSE_COPY_FILE_RANGE_64, copy_file_range_64),
};

// opcode_name() is the kernel's name without its "FUSE_" prefix ("CUSE_INIT" keeps its own).
std::string_view log_name(std::string_view kernel_name) {
  constexpr std::string_view prefix = "FUSE_";
  return kernel_name.starts_with(prefix) ? kernel_name.substr(prefix.size()) : kernel_name;
}

bool kernel_defines(std::uint32_t v) {
  for (const auto& p : fuse_opcodes) {
    if (p.kernel == v) return true;
  }
  return false;
}

}  // namespace

TEST_CASE("kernel header: opcodes", "[abi]") {
  // The opcode travels in in_header.opcode.
  CHECK_CONST(sizeof(abi::opcode), sizeof(std::declval<fuse_in_header&>().opcode));

  for (const auto& p : fuse_opcodes) {
    INFO(p.kernel_name);
    CHECK(p.kernel == bits(p.ours));
    CHECK(abi::opcode_name(p.ours) == log_name(p.kernel_name));
  }
  const opcode_pair cuse_init = OPCODE_PAIR(CUSE_INIT, cuse_init);
  CHECK(cuse_init.kernel == bits(cuse_init.ours));
  CHECK(abi::opcode_name(cuse_init.ours) == log_name(cuse_init.kernel_name));
  CHECK_CONST(CUSE_INIT_BSWAP_RESERVED, abi::opcode::cuse_init_bswap_reserved);
  CHECK_CONST(FUSE_INIT_BSWAP_RESERVED, abi::opcode::init_bswap_reserved);
}

TEST_CASE("kernel header: no opcode is missing", "[abi]") {
  // The list above is the header's FUSE_LOOKUP..FUSE_COPY_FILE_RANGE_64 in order; the header's
  // last opcode is our max_opcode, and the only numbers it leaves out are 7 and 19.
  std::vector<std::uint32_t> holes;
  std::uint64_t expected = 1;
  for (const auto& p : fuse_opcodes) {
    INFO(p.kernel_name);
    REQUIRE(p.kernel >= expected);  // ascending: the list cannot hide a duplicate
    for (; expected < p.kernel; ++expected) holes.push_back(static_cast<std::uint32_t>(expected));
    ++expected;
  }
  CHECK(std::size(fuse_opcodes) + holes.size() == abi::max_opcode);
  CHECK_CONST(FUSE_COPY_FILE_RANGE_64, abi::max_opcode);
  CHECK(holes == std::vector<std::uint32_t>{7, 19});

  // Our name table knows exactly the kernel's opcodes in 1..max_opcode, and nothing past it.
  for (std::uint32_t v = 1; v <= abi::max_opcode + 1; ++v) {
    CAPTURE(v);
    const bool unknown = abi::opcode_name(static_cast<abi::opcode>(v)) == "UNKNOWN";
    CHECK(unknown == !kernel_defines(v));
  }
}

#endif  // COROFUSE_KERNEL_UAPI_AVAILABLE
