// ioctls on /dev/fuse, encoded the way <asm-generic/ioctl.h> does for x86-64 and arm64.
#pragma once

#include <cstdint>

#include "corofuse/abi/structs.hpp"

namespace corofuse::abi {

namespace detail {
enum : std::uint32_t { ioc_none = 0, ioc_write = 1, ioc_read = 2 };
constexpr std::uint32_t ioc(std::uint32_t dir, std::uint32_t type, std::uint32_t nr, std::uint32_t size) noexcept {
  return (dir << 30) | (size << 16) | (type << 8) | nr;
}
}  // namespace detail

inline constexpr std::uint32_t dev_ioc_magic = 229;
// Clone a /dev/fuse fd onto the connection whose fd number is passed (one reader fd per thread).
inline constexpr std::uint32_t dev_ioc_clone = detail::ioc(detail::ioc_read, dev_ioc_magic, 0, sizeof(std::uint32_t));
// Register a backing file for kernel passthrough; returns its backing id.
inline constexpr std::uint32_t dev_ioc_backing_open = detail::ioc(detail::ioc_write, dev_ioc_magic, 1, sizeof(backing_map));
inline constexpr std::uint32_t dev_ioc_backing_close = detail::ioc(detail::ioc_write, dev_ioc_magic, 2, sizeof(std::uint32_t));
// Ask for INIT to be processed synchronously during mount(2) (7.45 kernels that support it).
inline constexpr std::uint32_t dev_ioc_sync_init = detail::ioc(detail::ioc_none, dev_ioc_magic, 3, 0);

}  // namespace corofuse::abi
