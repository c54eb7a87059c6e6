// How each opcode's request arguments are laid out.
//
// The kernel sends a request as its in_header, then its first argument (the per-op struct,
// empty for opcodes that have none since Linux 6.14), then the remaining arguments (names, data,
// xattr values), then the request extensions (total_extlen * 8 bytes). On /dev/fuse these pieces
// arrive contiguously; on the io_uring ring the per-op struct is in the header buffer's op_in area
// and the rest in the payload buffer. Knowing the per-op struct's size lets one parser serve both.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

#include "corofuse/abi/protocol.hpp"
#include "corofuse/abi/structs.hpp"

namespace corofuse::proto {

// What follows the per-op struct.
enum class trailing : std::uint8_t {
  none,       // nothing the server needs (extra bytes are ignored)
  name,       // one NUL-terminated name
  two_names,  // two NUL-terminated names (RENAME/RENAME2: old, new; SYMLINK: name, target)
  data,       // raw bytes (WRITE data, SETXATTR name+value, IOCTL input, NOTIFY_REPLY data)
  array,      // an array of fixed records (BATCH_FORGET, REMOVEMAPPING)
};

struct op_layout {
  std::size_t op_size;  // size of the per-op struct (0: none)
  trailing rest;
  bool known;  // an opcode this protocol version defines
};

// Negotiated details that change a layout.
struct layout_options {
  bool setxattr_ext = true;  // init_flag::setxattr_ext accepted: setxattr_in is 16 bytes, else 8
};

constexpr op_layout layout_of(abi::opcode op, const layout_options& o = {}) noexcept {
  using abi::opcode;
  namespace a = abi;
  switch (op) {
    case opcode::lookup: return {0, trailing::name, true};
    case opcode::forget: return {sizeof(a::forget_in), trailing::none, true};
    case opcode::getattr: return {sizeof(a::getattr_in), trailing::none, true};
    case opcode::setattr: return {sizeof(a::setattr_in), trailing::none, true};
    case opcode::readlink: return {0, trailing::none, true};
    case opcode::symlink: return {0, trailing::two_names, true};
    case opcode::mknod: return {sizeof(a::mknod_in), trailing::name, true};
    case opcode::mkdir: return {sizeof(a::mkdir_in), trailing::name, true};
    case opcode::unlink: return {0, trailing::name, true};
    case opcode::rmdir: return {0, trailing::name, true};
    case opcode::rename: return {sizeof(a::rename_in), trailing::two_names, true};
    case opcode::link: return {sizeof(a::link_in), trailing::name, true};
    case opcode::open: return {sizeof(a::open_in), trailing::none, true};
    case opcode::read: return {sizeof(a::read_in), trailing::none, true};
    case opcode::write: return {sizeof(a::write_in), trailing::data, true};
    case opcode::statfs: return {0, trailing::none, true};
    case opcode::release: return {sizeof(a::release_in), trailing::none, true};
    case opcode::fsync: return {sizeof(a::fsync_in), trailing::none, true};
    case opcode::setxattr: return {o.setxattr_ext ? sizeof(a::setxattr_in) : abi::compat_setxattr_in_size, trailing::data, true};
    case opcode::getxattr: return {sizeof(a::getxattr_in), trailing::name, true};
    case opcode::listxattr: return {sizeof(a::getxattr_in), trailing::none, true};
    case opcode::removexattr: return {0, trailing::name, true};
    case opcode::flush: return {sizeof(a::flush_in), trailing::none, true};
    case opcode::init: return {sizeof(a::init_in), trailing::none, true};
    case opcode::opendir: return {sizeof(a::open_in), trailing::none, true};
    case opcode::readdir: return {sizeof(a::read_in), trailing::none, true};
    case opcode::releasedir: return {sizeof(a::release_in), trailing::none, true};
    case opcode::fsyncdir: return {sizeof(a::fsync_in), trailing::none, true};
    case opcode::getlk:
    case opcode::setlk:
    case opcode::setlkw: return {sizeof(a::lk_in), trailing::none, true};
    case opcode::access: return {sizeof(a::access_in), trailing::none, true};
    case opcode::create: return {sizeof(a::create_in), trailing::name, true};
    case opcode::interrupt: return {sizeof(a::interrupt_in), trailing::none, true};
    case opcode::bmap: return {sizeof(a::bmap_in), trailing::none, true};
    case opcode::destroy: return {0, trailing::none, true};
    case opcode::ioctl: return {sizeof(a::ioctl_in), trailing::data, true};
    case opcode::poll: return {sizeof(a::poll_in), trailing::none, true};
    case opcode::notify_reply: return {sizeof(a::notify_retrieve_in), trailing::data, true};
    case opcode::batch_forget: return {sizeof(a::batch_forget_in), trailing::array, true};
    case opcode::fallocate: return {sizeof(a::fallocate_in), trailing::none, true};
    case opcode::readdirplus: return {sizeof(a::read_in), trailing::none, true};
    case opcode::rename2: return {sizeof(a::rename2_in), trailing::two_names, true};
    case opcode::lseek: return {sizeof(a::lseek_in), trailing::none, true};
    case opcode::copy_file_range:
    case opcode::copy_file_range_64: return {sizeof(a::copy_file_range_in), trailing::none, true};
    case opcode::setupmapping: return {sizeof(a::setupmapping_in), trailing::none, true};
    case opcode::removemapping: return {sizeof(a::removemapping_in), trailing::array, true};
    case opcode::syncfs: return {sizeof(a::syncfs_in), trailing::none, true};
    case opcode::tmpfile: return {sizeof(a::create_in), trailing::none, true};  // a "/" name may follow: unused
    case opcode::statx: return {sizeof(a::statx_in), trailing::none, true};
    case opcode::cuse_init:
    case opcode::cuse_init_bswap_reserved:
    case opcode::init_bswap_reserved: break;
  }
  return {0, trailing::none, false};
}

}  // namespace corofuse::proto
