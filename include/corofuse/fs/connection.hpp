// The mounted connection as a filesystem sees it once INIT is agreed: what the kernel accepted,
// and the device-level calls a filesystem may make (registering backing files for kernel
// passthrough). A filesystem with a member `void init(const corofuse::connection&)` gets one
// before the first request is served; it is a small value, safe to copy and to use from any
// thread while the mount lives.
#pragma once

#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <span>
#include <string_view>

#include "corofuse/abi/flags.hpp"
#include "corofuse/abi/ioctl.hpp"
#include "corofuse/abi/structs.hpp"
#include "corofuse/abi/protocol.hpp"
#include "corofuse/fs/notify_replies.hpp"
#include "corofuse/fs/result.hpp"
#include "corofuse/fs/types.hpp"
#include "corofuse/io/operations.hpp"
#include "corofuse/io/ring.hpp"
#include "corofuse/io/task.hpp"

namespace corofuse {

class connection {
 public:
  connection() = default;
  connection(int fuse_fd, std::uint64_t agreed_flags, std::uint32_t minor, std::uint32_t max_write,
             notify_replies* replies = nullptr) noexcept
      : fd_(fuse_fd), flags_(agreed_flags), minor_(minor), max_write_(max_write), replies_(replies) {}

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

  // ---- notifications ----------------------------------------------------------------------
  // Telling the kernel about changes it did not make itself (another client of a network
  // filesystem, a control command, a timer). Each is one write(2) to /dev/fuse, safe from any
  // thread and any coroutine, while the ring runs. Errors: ENOENT when the kernel does not know
  // the inode or name (nothing was cached: nothing to do), ENOSYS before the protocol has it,
  // ENOTCONN once unmounted. Do not call them while the kernel waits for a reply of yours that
  // holds the lock they need (inval_entry/delete lock the parent directory): from a handler for
  // an operation on that directory, they would wait for ever.

  // Drops the kernel's cached attributes of `node` and its cached data in [offset, offset+len)
  // (len 0: to the end; offset < 0: attributes only).
  result<> inval_inode(ino node, std::int64_t offset = 0, std::int64_t len = 0) const noexcept {
    abi::notify_inval_inode_out out{node, offset, len};
    return send(abi::notify_code::inval_inode, &out, sizeof out);
  }

  // Drops the cached lookup of `name` in `parent` (expire_only: only marks it stale, 7.38+).
  result<> inval_entry(ino parent, std::string_view name, bool expire_only = false) const noexcept {
    abi::notify_inval_entry_out out{parent, static_cast<std::uint32_t>(name.size()), expire_only ? abi::inval_entry_flag::expire_only : 0u};
    return send(abi::notify_code::inval_entry, &out, sizeof out, name, true);
  }

  // `name` in `parent`, which named `child`, is gone: the kernel drops the dentry and, if it still
  // points at `child`, unhashes it as an unlink would (open files keep working).
  result<> delete_entry(ino parent, ino child, std::string_view name) const noexcept {
    abi::notify_delete_out out{parent, child, static_cast<std::uint32_t>(name.size()), 0};
    return send(abi::notify_code::delete_entry, &out, sizeof out, name, true);
  }

  // Puts `data` into the kernel's page cache of `node` at `offset` (and extends its size).
  result<> store(ino node, std::uint64_t offset, std::span<const std::byte> data) const noexcept {
    abi::notify_store_out out{node, offset, static_cast<std::uint32_t>(data.size()), 0};
    return send(abi::notify_code::store, &out, sizeof out, std::string_view(reinterpret_cast<const char*>(data.data()), data.size()),
                false);
  }

  // A poll handle (from a POLL request) is ready again.
  result<> poll_wakeup(std::uint64_t kh) const noexcept {
    abi::notify_poll_wakeup_out out{kh};
    return send(abi::notify_code::poll, &out, sizeof out);
  }

  // Every cached lookup becomes stale at once (7.44).
  result<> inc_epoch() const noexcept {
    if (minor_ < 44) return error(ENOSYS);
    return send(abi::notify_code::inc_epoch, nullptr, 0);
  }

  // Asks the kernel to forget unused inodes (7.45): it sends FORGET for those it drops.
  result<> prune(std::span<const ino> nodes) const noexcept {
    if (minor_ < 45) return error(ENOSYS);
    abi::notify_prune_out out{static_cast<std::uint32_t>(nodes.size()), 0, 0};
    return send(abi::notify_code::prune, &out, sizeof out,
                std::string_view(reinterpret_cast<const char*>(nodes.data()), nodes.size() * sizeof(ino)), false);
  }

  // Reads back what the kernel has cached of `node` from `offset`, up to dst.size() bytes, into
  // dst: co_await it on a corofuse ring (a handler's ctx.ring(), any queue or reader). The
  // kernel's answer (NOTIFY_REPLY) arrives on /dev/fuse and is routed here; the result is the
  // number of bytes it sent (only pages it has cached, up to the first one it has not).
  io::task<result<std::size_t>> retrieve(io::ring& r, ino node, std::uint64_t offset, std::span<std::byte> dst) const {
    if (!replies_) co_return error(ENOSYS);
    notify_replies::slot s;
    s.unique = replies_->next_unique();
    s.buffer = dst;
    s.efd = ::eventfd(0, EFD_CLOEXEC);
    if (s.efd < 0) co_return error(errno);
    struct closer {
      notify_replies* replies;
      notify_replies::slot& s;
      ~closer() {
        replies->forget(s);
        ::close(s.efd);
      }
    } close_it{replies_, s};
    replies_->expect(s);
    abi::notify_retrieve_out out{s.unique, node, offset, static_cast<std::uint32_t>(dst.size()), 0};
    result<> sent = send(abi::notify_code::retrieve, &out, sizeof out);
    if (!sent) co_return error(sent.error_code());
    std::uint64_t v = 0;
    int n = co_await io::read(r, s.efd, std::span(reinterpret_cast<std::byte*>(&v), sizeof v), static_cast<std::uint64_t>(-1));
    if (n < 0) co_return error(-n);
    co_return s.received;
  }

 private:
  int fd_ = -1;
  std::uint64_t flags_ = 0;
  std::uint32_t minor_ = 0;
  std::uint32_t max_write_ = 0;
  notify_replies* replies_ = nullptr;

  // One notification: out_header (unique 0, error = the code), the struct, then `tail` (a name
  // gets its NUL when `nul`).
  result<> send(abi::notify_code code, const void* arg, std::size_t size, std::string_view tail = {}, bool nul = false) const noexcept {
    abi::out_header h{};
    h.len = static_cast<std::uint32_t>(sizeof h + size + tail.size() + (nul ? 1 : 0));
    h.error = static_cast<std::int32_t>(code);
    h.unique = 0;
    static const char zero = 0;
    iovec iov[4] = {{&h, sizeof h},
                    {const_cast<void*>(arg), size},
                    {const_cast<char*>(tail.data()), tail.size()},
                    {const_cast<char*>(&zero), nul ? 1u : 0u}};
    ssize_t n;
    do {
      n = ::writev(fd_, iov, 4);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return error(errno);
    return ok();
  }
};

}  // namespace corofuse
