// The request and reply structs of FUSE protocol 7.46, byte for byte as the kernel reads and
// writes them. Every struct has a static_assert on its size, and the fields the kernel reads on
// offsets; tests/unit/abi_agreement_test.cpp compares all of it with Linux 7.3's <linux/fuse.h>.
#pragma once

#include <cstddef>
#include <cstdint>

namespace corofuse::abi {

using u8 = std::uint8_t;
using u16 = std::uint16_t;
using u32 = std::uint32_t;
using u64 = std::uint64_t;
using s32 = std::int32_t;
using s64 = std::int64_t;

// ---- attributes -------------------------------------------------------------------------------

struct attr {
  u64 ino;
  u64 size;
  u64 blocks;
  u64 atime;
  u64 mtime;
  u64 ctime;
  u32 atimensec;
  u32 mtimensec;
  u32 ctimensec;
  u32 mode;
  u32 nlink;
  u32 uid;
  u32 gid;
  u32 rdev;
  u32 blksize;
  u32 flags;  // attr_flag::*
};
static_assert(sizeof(attr) == 88);
static_assert(offsetof(attr, atimensec) == 48 && offsetof(attr, mode) == 60 && offsetof(attr, flags) == 84);

struct sx_time {
  s64 tv_sec;
  u32 tv_nsec;
  s32 reserved;
};
static_assert(sizeof(sx_time) == 16);

struct statx_attr {
  u32 mask;
  u32 blksize;
  u64 attributes;
  u32 nlink;
  u32 uid;
  u32 gid;
  u16 mode;
  u16 spare0[1];
  u64 ino;
  u64 size;
  u64 blocks;
  u64 attributes_mask;
  sx_time atime;
  sx_time btime;
  sx_time ctime;
  sx_time mtime;
  u32 rdev_major;
  u32 rdev_minor;
  u32 dev_major;
  u32 dev_minor;
  u64 spare2[14];
};
static_assert(sizeof(statx_attr) == 256);
static_assert(offsetof(statx_attr, mode) == 28 && offsetof(statx_attr, ino) == 32 && offsetof(statx_attr, atime) == 64 &&
              offsetof(statx_attr, rdev_major) == 128);

struct kstatfs {
  u64 blocks;
  u64 bfree;
  u64 bavail;
  u64 files;
  u64 ffree;
  u32 bsize;
  u32 namelen;
  u32 frsize;
  u32 padding;
  u32 spare[6];
};
static_assert(sizeof(kstatfs) == 80);
static_assert(offsetof(kstatfs, bsize) == 40 && offsetof(kstatfs, frsize) == 48);

struct file_lock {
  u64 start;
  u64 end;
  u32 type;
  u32 pid;  // tgid
};
static_assert(sizeof(file_lock) == 24);

// ---- headers ----------------------------------------------------------------------------------

struct in_header {
  u32 len;
  u32 opcode;
  u64 unique;
  u64 nodeid;
  u32 uid;
  u32 gid;
  u32 pid;
  u16 total_extlen;  // length of the request extensions, in 8-byte units
  u16 padding;
};
static_assert(sizeof(in_header) == 40);
static_assert(offsetof(in_header, opcode) == 4 && offsetof(in_header, unique) == 8 && offsetof(in_header, nodeid) == 16 &&
              offsetof(in_header, uid) == 24 && offsetof(in_header, gid) == 28 && offsetof(in_header, pid) == 32 &&
              offsetof(in_header, total_extlen) == 36);

struct out_header {
  u32 len;
  s32 error;  // 0 or a negative errno (or a notify_code, with unique 0)
  u64 unique;
};
static_assert(sizeof(out_header) == 16);
static_assert(offsetof(out_header, error) == 4 && offsetof(out_header, unique) == 8);

// ---- lookup, forget, attributes ---------------------------------------------------------------

struct entry_out {
  u64 nodeid;
  u64 generation;  // (nodeid, generation) must be unique for the filesystem's lifetime
  u64 entry_valid;
  u64 attr_valid;
  u32 entry_valid_nsec;
  u32 attr_valid_nsec;
  struct attr attr;
};
static_assert(sizeof(entry_out) == 128);
static_assert(offsetof(entry_out, attr) == 40);

struct forget_in {
  u64 nlookup;
};
static_assert(sizeof(forget_in) == 8);

struct forget_one {
  u64 nodeid;
  u64 nlookup;
};
static_assert(sizeof(forget_one) == 16);

struct batch_forget_in {
  u32 count;  // forget_one entries follow
  u32 dummy;
};
static_assert(sizeof(batch_forget_in) == 8);

struct getattr_in {
  u32 getattr_flags;
  u32 dummy;
  u64 fh;
};
static_assert(sizeof(getattr_in) == 16);

struct attr_out {
  u64 attr_valid;
  u32 attr_valid_nsec;
  u32 dummy;
  struct attr attr;
};
static_assert(sizeof(attr_out) == 104);
static_assert(offsetof(attr_out, attr) == 16);

struct statx_in {
  u32 getattr_flags;
  u32 reserved;
  u64 fh;
  u32 sx_flags;
  u32 sx_mask;
};
static_assert(sizeof(statx_in) == 24);

struct statx_out {
  u64 attr_valid;
  u32 attr_valid_nsec;
  u32 flags;
  u64 spare[2];
  statx_attr stat;
};
static_assert(sizeof(statx_out) == 288);
static_assert(offsetof(statx_out, stat) == 32);

// ---- names and nodes --------------------------------------------------------------------------

struct mknod_in {
  u32 mode;
  u32 rdev;
  u32 umask;
  u32 padding;
};
static_assert(sizeof(mknod_in) == 16);

struct mkdir_in {
  u32 mode;
  u32 umask;
};
static_assert(sizeof(mkdir_in) == 8);

struct rename_in {
  u64 newdir;
};
static_assert(sizeof(rename_in) == 8);

struct rename2_in {
  u64 newdir;
  u32 flags;  // RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT
  u32 padding;
};
static_assert(sizeof(rename2_in) == 16);

struct link_in {
  u64 oldnodeid;
};
static_assert(sizeof(link_in) == 8);

struct setattr_in {
  u32 valid;  // fattr::*
  u32 padding;
  u64 fh;
  u64 size;
  u64 lock_owner;
  u64 atime;
  u64 mtime;
  u64 ctime;
  u32 atimensec;
  u32 mtimensec;
  u32 ctimensec;
  u32 mode;
  u32 unused4;
  u32 uid;
  u32 gid;
  u32 unused5;
};
static_assert(sizeof(setattr_in) == 88);
static_assert(offsetof(setattr_in, size) == 16 && offsetof(setattr_in, atime) == 32 && offsetof(setattr_in, mode) == 68 &&
              offsetof(setattr_in, uid) == 76);

// ---- open files -------------------------------------------------------------------------------

struct open_in {
  u32 flags;       // the open(2) flags
  u32 open_flags;  // open_flag::*
};
static_assert(sizeof(open_in) == 8);

struct create_in {
  u32 flags;
  u32 mode;
  u32 umask;
  u32 open_flags;
};
static_assert(sizeof(create_in) == 16);

struct open_out {
  u64 fh;
  u32 open_flags;  // fopen::*
  s32 backing_id;  // with fopen::passthrough
};
static_assert(sizeof(open_out) == 16);
static_assert(offsetof(open_out, open_flags) == 8 && offsetof(open_out, backing_id) == 12);

struct release_in {
  u64 fh;
  u32 flags;
  u32 release_flags;
  u64 lock_owner;
};
static_assert(sizeof(release_in) == 24);

struct flush_in {
  u64 fh;
  u32 unused;
  u32 padding;
  u64 lock_owner;
};
static_assert(sizeof(flush_in) == 24);

struct read_in {
  u64 fh;
  u64 offset;
  u32 size;
  u32 read_flags;
  u64 lock_owner;
  u32 flags;
  u32 padding;
};
static_assert(sizeof(read_in) == 40);
static_assert(offsetof(read_in, offset) == 8 && offsetof(read_in, size) == 16);

struct write_in {
  u64 fh;
  u64 offset;
  u32 size;
  u32 write_flags;
  u64 lock_owner;
  u32 flags;
  u32 padding;
};
static_assert(sizeof(write_in) == 40);
static_assert(offsetof(write_in, offset) == 8 && offsetof(write_in, size) == 16);

struct write_out {
  u32 size;
  u32 padding;
};
static_assert(sizeof(write_out) == 8);

struct statfs_out {
  kstatfs st;
};
static_assert(sizeof(statfs_out) == 80);

struct fsync_in {
  u64 fh;
  u32 fsync_flags;
  u32 padding;
};
static_assert(sizeof(fsync_in) == 16);

// ---- extended attributes ----------------------------------------------------------------------

struct setxattr_in {
  u32 size;
  u32 flags;
  u32 setxattr_flags;  // present with init_flag::setxattr_ext; compat_setxattr_in_size without
  u32 padding;
};
static_assert(sizeof(setxattr_in) == 16);

struct getxattr_in {
  u32 size;
  u32 padding;
};
static_assert(sizeof(getxattr_in) == 8);

struct getxattr_out {
  u32 size;
  u32 padding;
};
static_assert(sizeof(getxattr_out) == 8);

// ---- locks, access ----------------------------------------------------------------------------

struct lk_in {
  u64 fh;
  u64 owner;
  file_lock lk;
  u32 lk_flags;
  u32 padding;
};
static_assert(sizeof(lk_in) == 48);
static_assert(offsetof(lk_in, lk) == 16 && offsetof(lk_in, lk_flags) == 40);

struct lk_out {
  file_lock lk;
};
static_assert(sizeof(lk_out) == 24);

struct access_in {
  u32 mask;
  u32 padding;
};
static_assert(sizeof(access_in) == 8);

// ---- INIT -------------------------------------------------------------------------------------

struct init_in {
  u32 major;
  u32 minor;
  u32 max_readahead;
  u32 flags;   // init_flag low word
  u32 flags2;  // init_flag high word
  u32 unused[11];
};
static_assert(sizeof(init_in) == 64);
static_assert(offsetof(init_in, flags) == 12 && offsetof(init_in, flags2) == 16);

struct init_out {
  u32 major;
  u32 minor;
  u32 max_readahead;
  u32 flags;
  u16 max_background;
  u16 congestion_threshold;
  u32 max_write;
  u32 time_gran;
  u16 max_pages;
  u16 map_alignment;
  u32 flags2;
  u32 max_stack_depth;
  u16 request_timeout;  // seconds, with init_flag::request_timeout
  u16 unused[11];
};
static_assert(sizeof(init_out) == 64);
static_assert(offsetof(init_out, max_background) == 16 && offsetof(init_out, congestion_threshold) == 18 &&
              offsetof(init_out, max_write) == 20 && offsetof(init_out, time_gran) == 24 && offsetof(init_out, max_pages) == 28 &&
              offsetof(init_out, map_alignment) == 30 && offsetof(init_out, flags2) == 32 && offsetof(init_out, max_stack_depth) == 36 &&
              offsetof(init_out, request_timeout) == 40);

struct cuse_init_in {
  u32 major;
  u32 minor;
  u32 unused;
  u32 flags;
};
static_assert(sizeof(cuse_init_in) == 16);

struct cuse_init_out {
  u32 major;
  u32 minor;
  u32 unused;
  u32 flags;
  u32 max_read;
  u32 max_write;
  u32 dev_major;
  u32 dev_minor;
  u32 spare[10];
};
static_assert(sizeof(cuse_init_out) == 72);

// ---- interrupt, bmap, ioctl, poll, fallocate --------------------------------------------------

struct interrupt_in {
  u64 unique;
};
static_assert(sizeof(interrupt_in) == 8);

struct bmap_in {
  u64 block;
  u32 blocksize;
  u32 padding;
};
static_assert(sizeof(bmap_in) == 16);

struct bmap_out {
  u64 block;
};
static_assert(sizeof(bmap_out) == 8);

struct ioctl_in {
  u64 fh;
  u32 flags;
  u32 cmd;
  u64 arg;
  u32 in_size;
  u32 out_size;
};
static_assert(sizeof(ioctl_in) == 32);

struct ioctl_iovec {
  u64 base;
  u64 len;
};
static_assert(sizeof(ioctl_iovec) == 16);

struct ioctl_out {
  s32 result;
  u32 flags;
  u32 in_iovs;
  u32 out_iovs;
};
static_assert(sizeof(ioctl_out) == 16);

struct poll_in {
  u64 fh;
  u64 kh;
  u32 flags;
  u32 events;
};
static_assert(sizeof(poll_in) == 24);

struct poll_out {
  u32 revents;
  u32 padding;
};
static_assert(sizeof(poll_out) == 8);

struct notify_poll_wakeup_out {
  u64 kh;
};
static_assert(sizeof(notify_poll_wakeup_out) == 8);

struct fallocate_in {
  u64 fh;
  u64 offset;
  u64 length;
  u32 mode;
  u32 padding;
};
static_assert(sizeof(fallocate_in) == 32);

// ---- directories ------------------------------------------------------------------------------

// One READDIR record: the header, then namelen bytes of name, padded to a multiple of 8.
struct dirent {
  u64 ino;
  u64 off;  // the offset that continues the listing after this entry
  u32 namelen;
  u32 type;  // DT_* (mode >> 12)
};
static_assert(sizeof(dirent) == 24);
inline constexpr std::size_t dirent_name_offset = sizeof(dirent);

// One READDIRPLUS record: an entry_out, then a dirent, then the padded name.
struct direntplus {
  entry_out entry;
  struct dirent dirent;
};
static_assert(sizeof(direntplus) == 152);
static_assert(offsetof(direntplus, dirent) == 128);
inline constexpr std::size_t direntplus_name_offset = sizeof(direntplus);

// Records are padded to 8 bytes.
constexpr std::size_t dirent_align(std::size_t n) noexcept { return (n + 7) & ~std::size_t{7}; }
constexpr std::size_t dirent_size(std::size_t namelen) noexcept { return dirent_align(dirent_name_offset + namelen); }
constexpr std::size_t direntplus_size(std::size_t namelen) noexcept { return dirent_align(direntplus_name_offset + namelen); }

// ---- notifications (server to kernel) ---------------------------------------------------------

struct notify_inval_inode_out {
  u64 ino;
  s64 off;
  s64 len;
};
static_assert(sizeof(notify_inval_inode_out) == 24);

struct notify_inval_entry_out {
  u64 parent;
  u32 namelen;
  u32 flags;  // inval_entry_flag::*
};
static_assert(sizeof(notify_inval_entry_out) == 16);

struct notify_delete_out {
  u64 parent;
  u64 child;
  u32 namelen;
  u32 padding;
};
static_assert(sizeof(notify_delete_out) == 24);

struct notify_store_out {
  u64 nodeid;
  u64 offset;
  u32 size;
  u32 padding;
};
static_assert(sizeof(notify_store_out) == 24);

struct notify_retrieve_out {
  u64 notify_unique;
  u64 nodeid;
  u64 offset;
  u32 size;
  u32 padding;
};
static_assert(sizeof(notify_retrieve_out) == 32);

// The kernel's answer to a RETRIEVE arrives as a NOTIFY_REPLY request with this struct.
struct notify_retrieve_in {
  u64 dummy1;
  u64 offset;
  u32 size;
  u32 dummy2;
  u64 dummy3;
  u64 dummy4;
};
static_assert(sizeof(notify_retrieve_in) == 40);
static_assert(offsetof(notify_retrieve_in, offset) == 8 && offsetof(notify_retrieve_in, size) == 16);

struct notify_prune_out {
  u32 count;  // node ids (u64) follow
  u32 padding;
  u64 spare;
};
static_assert(sizeof(notify_prune_out) == 16);

// ---- passthrough, lseek, copy_file_range, DAX, syncfs -----------------------------------------

struct backing_map {
  s32 fd;
  u32 flags;
  u64 padding;
};
static_assert(sizeof(backing_map) == 16);

struct lseek_in {
  u64 fh;
  u64 offset;
  u32 whence;
  u32 padding;
};
static_assert(sizeof(lseek_in) == 24);

struct lseek_out {
  u64 offset;
};
static_assert(sizeof(lseek_out) == 8);

struct copy_file_range_in {
  u64 fh_in;
  u64 off_in;
  u64 nodeid_out;
  u64 fh_out;
  u64 off_out;
  u64 len;
  u64 flags;
};
static_assert(sizeof(copy_file_range_in) == 56);

struct copy_file_range_out {  // COPY_FILE_RANGE_64's reply (7.45)
  u64 bytes_copied;
};
static_assert(sizeof(copy_file_range_out) == 8);

struct setupmapping_in {
  u64 fh;
  u64 foffset;
  u64 len;
  u64 flags;  // setupmapping_flag::*
  u64 moffset;
};
static_assert(sizeof(setupmapping_in) == 40);

struct removemapping_in {
  u32 count;  // removemapping_one entries follow
};
static_assert(sizeof(removemapping_in) == 4);

struct removemapping_one {
  u64 moffset;
  u64 len;
};
static_assert(sizeof(removemapping_one) == 16);

struct syncfs_in {
  u64 padding;
};
static_assert(sizeof(syncfs_in) == 8);

// ---- request extensions (total_extlen) --------------------------------------------------------

struct secctx {
  u32 size;
  u32 padding;
};
static_assert(sizeof(secctx) == 8);

struct secctx_header {
  u32 size;
  u32 nr_secctx;
};
static_assert(sizeof(secctx_header) == 8);

struct ext_header {
  u32 size;  // of this extension, header included, a multiple of 8
  u32 type;  // ext_type
};
static_assert(sizeof(ext_header) == 8);

struct supp_groups {
  u32 nr_groups;  // u32 group ids follow
};
static_assert(sizeof(supp_groups) == 4);

}  // namespace corofuse::abi
