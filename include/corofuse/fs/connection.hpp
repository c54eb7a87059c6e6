// The mounted connection as a filesystem sees it once INIT is agreed: what the kernel accepted,
// and the device-level calls a filesystem may make (registering backing files for kernel
// passthrough). A filesystem with a member `void init(const corofuse::connection&)` gets one
// before the first request is served; it is a small value, safe to copy and to use from any
// thread while the mount lives.
#pragma once

#include <sys/ioctl.h>

#include <cerrno>
#include <cstdint>

#include "corofuse/abi/flags.hpp"
#include "corofuse/abi/ioctl.hpp"
#include "corofuse/abi/structs.hpp"
#include "corofuse/fs/result.hpp"

namespace corofuse {

class connection {
 public:
  connection() = default;
  connection(int fuse_fd, std::uint64_t agreed_flags, std::uint32_t minor, std::uint32_t max_write) noexcept
      : fd_(fuse_fd), flags_(agreed_flags), minor_(minor), max_write_(max_write) {}

  // True when INIT agreed on `init_flag` (an abi::init_flag bit).
  bool has(std::uint64_t init_flag) const noexcept { return (flags_ & init_flag) != 0; }
  std::uint64_t flags() const noexcept { return flags_; }
  std::uint32_t protocol_minor() const noexcept { return minor_; }
  std::uint32_t max_write() const noexcept { return max_write_; }

  // Kernel passthrough: registers the open file `fd` as a backing file and gives its id, for
  // open_reply{.passthrough = true, .backing_id = id}. The kernel keeps its own reference, so
  // `fd` may be closed afterwards; the id stays valid until close_backing. Errors: EPERM without
  // CAP_SYS_ADMIN or when INIT did not agree on passthrough, ELOOP when the backing filesystem
  // is stacked as deep as the mount allows, EINVAL for a file without read/write iterators.
  result<std::int32_t> open_backing(int fd) const noexcept {
    if (!has(abi::init_flag::passthrough)) return error(EPERM);
    abi::backing_map map{};
    map.fd = fd;
    int id = ::ioctl(fd_, abi::dev_ioc_backing_open, &map);
    if (id < 0) return error(errno);
    if (id == 0) return error(EIO);  // 0 is never a valid id
    return static_cast<std::int32_t>(id);
  }

  result<> close_backing(std::int32_t id) const noexcept {
    std::uint32_t v = static_cast<std::uint32_t>(id);
    if (::ioctl(fd_, abi::dev_ioc_backing_close, &v) < 0) return error(errno);
    return ok();
  }

  int device_fd() const noexcept { return fd_; }

 private:
  int fd_ = -1;
  std::uint64_t flags_ = 0;
  std::uint32_t minor_ = 0;
  std::uint32_t max_write_ = 0;
};

}  // namespace corofuse
