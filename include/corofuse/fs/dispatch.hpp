// From a parsed request to a filesystem's handler and back to reply bytes, chosen at compile time.
//
// A filesystem is any class. For each opcode the dispatcher looks for the matching member
// function (the signatures are listed in README.md and examples/hello); a handler may return its
// result directly or an io::task of it, which is awaited. An absent handler gets the answer the
// kernel expects (ENOSYS, or success where the kernel treats the operation as optional). An
// exception escaping a handler becomes EIO and a log line; it never reaches the transport.
#pragma once

#include <sys/stat.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <cerrno>
#include <concepts>
#include <cstdio>
#include <cstring>
#include <exception>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "corofuse/abi/flags.hpp"
#include "corofuse/base/log.hpp"
#include "corofuse/abi/protocol.hpp"
#include "corofuse/abi/structs.hpp"
#include "corofuse/fs/context.hpp"
#include "corofuse/fs/handlers.hpp"
#include "corofuse/fs/listing.hpp"
#include "corofuse/fs/result.hpp"
#include "corofuse/fs/types.hpp"
#include "corofuse/io/task.hpp"
#include "corofuse/proto/reply.hpp"
#include "corofuse/proto/request.hpp"

namespace corofuse {

// What SETATTR asks to change; only the fields whose has_* is true are meaningful.
struct set_attr {
  std::uint32_t valid = 0;  // abi::fattr bits, for anything not covered below
  mode_t mode = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  off_t size = 0;
  timespec atime{};  // tv_nsec == UTIME_NOW: set to now
  timespec mtime{};
  timespec ctime{};
  bool has_mode() const noexcept { return valid & abi::fattr::mode; }
  bool has_uid() const noexcept { return valid & abi::fattr::uid; }
  bool has_gid() const noexcept { return valid & abi::fattr::gid; }
  bool has_size() const noexcept { return valid & abi::fattr::size; }
  bool has_atime() const noexcept { return valid & (abi::fattr::atime | abi::fattr::atime_now); }
  bool has_mtime() const noexcept { return valid & (abi::fattr::mtime | abi::fattr::mtime_now); }
  bool has_ctime() const noexcept { return valid & abi::fattr::ctime; }
  bool kill_suidgid() const noexcept { return valid & abi::fattr::kill_suidgid; }
};

// IOCTL's reply: the command's return value, and how many bytes of output the handler wrote.
struct ioctl_reply {
  std::int32_t result = 0;
  std::size_t out_size = 0;
};

// CREATE's reply: the new entry and the open file.
struct created {
  entry e;
  open_reply open;
};

// How a request ends: reply with `error` (0: the arguments written to the reply buffer), or not at
// all; or, for a READ answered with a file_slice, with the data the transport reads first.
struct reply_status {
  int error = 0;
  bool no_reply = false;
  bool read_from_file = false;
  file_slice data_from{};
};

namespace detail {

template <typename T>
struct is_task : std::false_type {};
template <typename T>
struct is_task<io::task<T>> : std::true_type {};

// A value already at hand, awaitable like a task that is done.
template <typename T>
struct ready_value {
  T value;
  bool await_ready() const noexcept { return true; }
  void await_suspend(std::coroutine_handle<>) const noexcept {}
  T await_resume() { return std::move(value); }
};

// co_await handled(fs.op(...)): awaits a task, passes a plain result through.
template <typename R>
auto handled(R&& r) {
  if constexpr (is_task<std::remove_cvref_t<R>>::value) {
    return std::forward<R>(r);
  } else {
    return ready_value<std::remove_cvref_t<R>>{std::forward<R>(r)};
  }
}

inline void log_exception(abi::opcode op, const char* what) noexcept {
  log_message("%.*s handler threw: %s (answered EIO)", static_cast<int>(abi::opcode_name(op).size()), abi::opcode_name(op).data(), what);
}

// The answer to a handler that threw (called with the exception in flight): EIO and a log line;
// an exception never reaches the transport.
inline reply_status failed(abi::opcode op) noexcept {
  try {
    throw;
  } catch (const std::exception& e) {
    log_exception(op, e.what());
  } catch (...) {
    log_exception(op, "unknown exception");
  }
  return {EIO};
}

// The answer to an opcode no family knows.
inline io::task<reply_status> no_handler() { co_return reply_status{ENOSYS}; }

inline file_info file_from(std::uint64_t fh, std::uint32_t flags = 0, std::uint64_t lock_owner = 0) noexcept {
  return file_info{fh, flags, lock_owner};
}

inline timespec time_from(std::uint64_t sec, std::uint32_t nsec, bool now) noexcept {
  timespec t{};
  t.tv_sec = static_cast<time_t>(sec);
  t.tv_nsec = now ? UTIME_NOW : static_cast<long>(nsec);
  return t;
}

inline reply_status put_or_overflow(bool ok) noexcept { return {ok ? 0 : ERANGE}; }

template <typename T>
reply_status error_of(const result<T>& r) noexcept {
  return {r.error_code()};
}

// Default STATFS when the filesystem has none: what libfuse answers, so `df` works.
inline abi::statfs_out default_statfs() noexcept {
  abi::statfs_out s{};
  s.st.namelen = 255;
  s.st.bsize = 512;
  return s;
}

inline abi::statfs_out to_wire(const struct statvfs& v) noexcept {
  abi::statfs_out s{};
  s.st.blocks = v.f_blocks;
  s.st.bfree = v.f_bfree;
  s.st.bavail = v.f_bavail;
  s.st.files = v.f_files;
  s.st.ffree = v.f_ffree;
  s.st.bsize = static_cast<std::uint32_t>(v.f_bsize);
  s.st.namelen = static_cast<std::uint32_t>(v.f_namemax);
  s.st.frsize = static_cast<std::uint32_t>(v.f_frsize);
  return s;
}


// Names: looking them up, forgetting them, and making, linking, renaming and removing them.
template <typename Fs>
io::task<reply_status> dispatch_names(Fs& fs, context& ctx, const proto::request& req, proto::reply_buffer& out) {
  using abi::opcode;
  [[maybe_unused]] const ino node = req.nodeid();
  [[maybe_unused]] const cache_defaults& d = ctx.defaults();
  [[maybe_unused]] const opcode op = req.opcode();
  try {
    switch (op) {
      case opcode::lookup:
        if constexpr (handlers::lookup<Fs>) {
          result<entry> r = co_await detail::handled(fs.lookup(ctx, node, req.name()));
          if (!r) co_return detail::error_of(r);
          co_return detail::put_or_overflow(out.put(to_wire(*r, d)));
        }
        break;

      case opcode::forget:
        if constexpr (handlers::forget<Fs>) {
          fs.forget(ctx, node, req.op<abi::forget_in>().nlookup);
        }
        co_return reply_status{0, true};

      case opcode::batch_forget:
        if constexpr (handlers::forget<Fs>) {
          const auto items = req.data();
          for (std::size_t i = 0; i + sizeof(abi::forget_one) <= items.size(); i += sizeof(abi::forget_one)) {
            abi::forget_one f;
            std::memcpy(&f, items.data() + i, sizeof f);
            fs.forget(ctx, f.nodeid, f.nlookup);
          }
        }
        co_return reply_status{0, true};

      case opcode::mknod:
        if constexpr (handlers::mknod<Fs>) {
          auto in = req.op<abi::mknod_in>();
          result<entry> r = co_await detail::handled(fs.mknod(ctx, node, req.name(), in.mode, in.rdev, in.umask));
          if (!r) co_return detail::error_of(r);
          co_return detail::put_or_overflow(out.put(to_wire(*r, d)));
        }
        break;

      case opcode::mkdir:
        if constexpr (handlers::mkdir<Fs>) {
          auto in = req.op<abi::mkdir_in>();
          result<entry> r = co_await detail::handled(fs.mkdir(ctx, node, req.name(), in.mode, in.umask));
          if (!r) co_return detail::error_of(r);
          co_return detail::put_or_overflow(out.put(to_wire(*r, d)));
        }
        break;

      case opcode::symlink:
        if constexpr (handlers::symlink<Fs>) {
          result<entry> r = co_await detail::handled(fs.symlink(ctx, node, req.name(), req.second_name()));
          if (!r) co_return detail::error_of(r);
          co_return detail::put_or_overflow(out.put(to_wire(*r, d)));
        }
        break;

      case opcode::unlink:
        if constexpr (handlers::unlink<Fs>) {
          result<> r = co_await detail::handled(fs.unlink(ctx, node, req.name()));
          co_return detail::error_of(r);
        }
        break;

      case opcode::rmdir:
        if constexpr (handlers::rmdir<Fs>) {
          result<> r = co_await detail::handled(fs.rmdir(ctx, node, req.name()));
          co_return detail::error_of(r);
        }
        break;

      case opcode::rename:
      case opcode::rename2:
        if constexpr (handlers::rename<Fs>) {
          ino newdir = 0;
          unsigned flags = 0;
          if (op == opcode::rename2) {
            auto in = req.op<abi::rename2_in>();
            newdir = in.newdir;
            flags = in.flags;
          } else {
            newdir = req.op<abi::rename_in>().newdir;
          }
          result<> r = co_await detail::handled(fs.rename(ctx, node, req.name(), newdir, req.second_name(), flags));
          co_return detail::error_of(r);
        }
        break;

      case opcode::link:
        if constexpr (handlers::link<Fs>) {
          auto in = req.op<abi::link_in>();
          result<entry> r = co_await detail::handled(fs.link(ctx, in.oldnodeid, node, req.name()));
          if (!r) co_return detail::error_of(r);
          co_return detail::put_or_overflow(out.put(to_wire(*r, d)));
        }
        break;

      case opcode::create:
        if constexpr (handlers::create<Fs>) {
          auto in = req.op<abi::create_in>();
          detail::context_access::set_kill_suidgid(ctx, in.open_flags & abi::open_flag::kill_suidgid);
          result<created> r = co_await detail::handled(fs.create(ctx, node, req.name(), in.mode, in.umask, static_cast<int>(in.flags)));
          if (!r) co_return detail::error_of(r);
          bool ok = out.put(to_wire(r->e, d)) && out.put(to_wire(r->open));
          co_return detail::put_or_overflow(ok);
        }
        break;

      case opcode::tmpfile:
        if constexpr (handlers::tmpfile<Fs>) {
          auto in = req.op<abi::create_in>();
          result<created> r = co_await detail::handled(fs.tmpfile(ctx, node, in.mode, in.umask, static_cast<int>(in.flags)));
          if (!r) co_return detail::error_of(r);
          bool ok = out.put(to_wire(r->e, d)) && out.put(to_wire(r->open));
          co_return detail::put_or_overflow(ok);
        }
        break;

      default: break;
    }
  } catch (...) {
    co_return failed(op);
  }
  co_return reply_status{ENOSYS};
}

// Attributes, extended attributes, links' targets and the filesystem's statistics.
template <typename Fs>
io::task<reply_status> dispatch_attributes(Fs& fs, context& ctx, const proto::request& req, proto::reply_buffer& out) {
  using abi::opcode;
  [[maybe_unused]] const ino node = req.nodeid();
  [[maybe_unused]] const cache_defaults& d = ctx.defaults();
  [[maybe_unused]] const opcode op = req.opcode();
  try {
    switch (op) {
      case opcode::getattr:
        if constexpr (handlers::getattr<Fs>) {
          auto in = req.op<abi::getattr_in>();
          file_info fi = detail::file_from(in.fh);
          const file_info* pfi = (in.getattr_flags & abi::getattr_flag::fh) ? &fi : nullptr;
          result<attr> r = co_await detail::handled(fs.getattr(ctx, node, pfi));
          if (!r) co_return detail::error_of(r);
          co_return detail::put_or_overflow(out.put(to_wire(*r, d)));
        }
        break;

      case opcode::setattr:
        if constexpr (handlers::setattr<Fs>) {
          auto in = req.op<abi::setattr_in>();
          set_attr s;
          s.valid = in.valid;
          s.mode = in.mode;
          s.uid = in.uid;
          s.gid = in.gid;
          s.size = static_cast<off_t>(in.size);
          s.atime = detail::time_from(in.atime, in.atimensec, in.valid & abi::fattr::atime_now);
          s.mtime = detail::time_from(in.mtime, in.mtimensec, in.valid & abi::fattr::mtime_now);
          s.ctime = detail::time_from(in.ctime, in.ctimensec, false);
          file_info fi = detail::file_from(in.fh, 0, in.lock_owner);
          const file_info* pfi = (in.valid & abi::fattr::fh) ? &fi : nullptr;
          result<attr> r = co_await detail::handled(fs.setattr(ctx, node, s, pfi));
          if (!r) co_return detail::error_of(r);
          co_return detail::put_or_overflow(out.put(to_wire(*r, d)));
        }
        break;

      case opcode::readlink:
        if constexpr (handlers::readlink<Fs>) {
          result<std::string> r = co_await detail::handled(fs.readlink(ctx, node));
          if (!r) co_return detail::error_of(r);
          co_return detail::put_or_overflow(out.append(r->data(), r->size()));
        }
        break;

      case opcode::statfs:
        if constexpr (handlers::statfs<Fs>) {
          result<struct statvfs> r = co_await detail::handled(fs.statfs(ctx, node));
          if (!r) co_return detail::error_of(r);
          co_return detail::put_or_overflow(out.put(detail::to_wire(*r)));
        }
        co_return detail::put_or_overflow(out.put(detail::default_statfs()));

      case opcode::access:
        if constexpr (handlers::access<Fs>) {
          result<> r = co_await detail::handled(fs.access(ctx, node, static_cast<int>(req.op<abi::access_in>().mask)));
          co_return detail::error_of(r);
        }
        break;

      case opcode::getxattr:
      case opcode::listxattr: {
        // Size 0 asks for the size only; otherwise the value (or the NUL-separated names) is
        // written in place, and a buffer too small for it is the handler's ERANGE.
        auto in = req.op<abi::getxattr_in>();
        std::span<std::byte> buf = out.tail().first(std::min<std::size_t>(in.size, out.room()));
        // On the ring the value is written into the payload the name came in: keep a copy.
        char name_copy[256];
        const std::size_t name_len = std::min<std::size_t>(req.name().size(), sizeof name_copy);
        if (name_len) std::memcpy(name_copy, req.name().data(), name_len);  // LISTXATTR has no name (data() may be null)
        const std::string_view xattr_name(name_copy, name_len);
        if (req.name().size() > sizeof name_copy) co_return reply_status{ERANGE};  // XATTR_NAME_MAX is 255
        result<std::size_t> r = error(ENOSYS);
        bool handled_here = false;
        if (op == opcode::getxattr) {
          if constexpr (handlers::getxattr<Fs>) {
            r = co_await detail::handled(fs.getxattr(ctx, node, xattr_name, buf));
            handled_here = true;
          }
        } else {
          if constexpr (handlers::listxattr<Fs>) {
            r = co_await detail::handled(fs.listxattr(ctx, node, buf));
            handled_here = true;
          }
        }
        if (!handled_here) break;
        if (!r) co_return detail::error_of(r);
        if (in.size == 0) co_return detail::put_or_overflow(out.put(abi::getxattr_out{static_cast<std::uint32_t>(*r), 0}));
        if (*r > buf.size()) co_return reply_status{ERANGE};
        out.commit(*r);
        co_return reply_status{};
      }

      case opcode::setxattr:
        if constexpr (handlers::setxattr<Fs>) {
          auto in = req.op<abi::setxattr_in>();
          result<> r = co_await detail::handled(fs.setxattr(ctx, node, req.name(), req.data(), static_cast<int>(in.flags)));
          co_return detail::error_of(r);
        }
        break;

      case opcode::removexattr:
        if constexpr (handlers::removexattr<Fs>) {
          result<> r = co_await detail::handled(fs.removexattr(ctx, node, req.name()));
          co_return detail::error_of(r);
        }
        break;

      case opcode::statx:
        if constexpr (handlers::statx<Fs>) {
          auto in = req.op<abi::statx_in>();
          file_info fi = detail::file_from(in.fh);
          const file_info* pfi = (in.getattr_flags & abi::getattr_flag::fh) ? &fi : nullptr;
          result<struct ::statx> r = co_await detail::handled(fs.statx(ctx, node, pfi, static_cast<int>(in.sx_flags), in.sx_mask));
          if (!r) co_return detail::error_of(r);
          co_return detail::put_or_overflow(out.put(to_wire(*r, d)));
        }
        break;

      default: break;
    }
  } catch (...) {
    co_return failed(op);
  }
  co_return reply_status{ENOSYS};
}

// Opening, listing, flushing, syncing and releasing files and directories; the rest of the
// requests that carry no data.
template <typename Fs>
io::task<reply_status> dispatch_open_files(Fs& fs, context& ctx, const proto::request& req, proto::reply_buffer& out) {
  using abi::opcode;
  [[maybe_unused]] const ino node = req.nodeid();
  [[maybe_unused]] const cache_defaults& d = ctx.defaults();
  [[maybe_unused]] const opcode op = req.opcode();
  try {
    switch (op) {
      case opcode::open:
      case opcode::opendir: {
        auto in = req.op<abi::open_in>();
        detail::context_access::set_kill_suidgid(ctx, in.open_flags & abi::open_flag::kill_suidgid);
        if (op == opcode::open) {
          if constexpr (handlers::open<Fs>) {
            result<open_reply> r = co_await detail::handled(fs.open(ctx, node, static_cast<int>(in.flags)));
            if (!r) co_return detail::error_of(r);
            co_return detail::put_or_overflow(out.put(to_wire(*r)));
          }
        } else {
          if constexpr (handlers::opendir<Fs>) {
            result<open_reply> r = co_await detail::handled(fs.opendir(ctx, node, static_cast<int>(in.flags)));
            if (!r) co_return detail::error_of(r);
            co_return detail::put_or_overflow(out.put(to_wire(*r)));
          }
        }
        // No handler: opening always succeeds, with handle 0 (as the kernel expects).
        co_return detail::put_or_overflow(out.put(abi::open_out{}));
      }

      case opcode::release:
      case opcode::releasedir: {
        auto in = req.op<abi::release_in>();
        file_info fi = detail::file_from(in.fh, in.flags, in.lock_owner);
        if (op == opcode::release) {
          if constexpr (handlers::release<Fs>) {
            result<> r = co_await detail::handled(fs.release(ctx, node, fi));
            co_return detail::error_of(r);
          }
        } else {
          if constexpr (handlers::releasedir<Fs>) {
            result<> r = co_await detail::handled(fs.releasedir(ctx, node, fi));
            co_return detail::error_of(r);
          }
        }
        co_return reply_status{};  // nothing to release
      }

      case opcode::flush:
        if constexpr (handlers::flush<Fs>) {
          auto in = req.op<abi::flush_in>();
          file_info fi = detail::file_from(in.fh, 0, in.lock_owner);
          result<> r = co_await detail::handled(fs.flush(ctx, node, fi));
          co_return detail::error_of(r);
        }
        co_return reply_status{};  // nothing buffered

      case opcode::fsync:
      case opcode::fsyncdir: {
        auto in = req.op<abi::fsync_in>();
        file_info fi = detail::file_from(in.fh);
        const bool datasync = in.fsync_flags & abi::fsync_flag::fdatasync;
        if (op == opcode::fsync) {
          if constexpr (handlers::fsync<Fs>) {
            result<> r = co_await detail::handled(fs.fsync(ctx, node, fi, datasync));
            co_return detail::error_of(r);
          }
        } else {
          if constexpr (handlers::fsyncdir<Fs>) {
            result<> r = co_await detail::handled(fs.fsyncdir(ctx, node, fi, datasync));
            co_return detail::error_of(r);
          }
        }
        break;
      }

      case opcode::readdir:
        if constexpr (handlers::readdir<Fs>) {
          auto in = req.op<abi::read_in>();
          file_info fi = detail::file_from(in.fh, in.flags, in.lock_owner);
          auto r = co_await detail::handled(fs.readdir(ctx, node, fi, static_cast<off_t>(in.offset)));
          if (!r) co_return detail::error_of(r);
          proto::dirent_packer pack(out, in.size);
          detail::pack_listing(*r, pack);
          co_return reply_status{};
        }
        break;

      case opcode::readdirplus:  // asked for only when readdir's entries have lookup() (INIT)
        if constexpr (handlers::readdirplus<Fs>) {
          auto in = req.op<abi::read_in>();
          file_info fi = detail::file_from(in.fh, in.flags, in.lock_owner);
          auto r = co_await detail::handled(fs.readdir(ctx, node, fi, static_cast<off_t>(in.offset)));
          if (!r) co_return detail::error_of(r);
          proto::dirent_packer pack(out, in.size);
          detail::pack_listing_plus(*r, pack, d);
          co_return reply_status{};
        }
        break;

      case opcode::interrupt:     // the request path routes these before dispatch (request_path.hpp);
      case opcode::notify_reply:  // here only when dispatch is called directly: never answered
        co_return reply_status{0, true};

      case opcode::destroy:
        if constexpr (handlers::destroy<Fs>) fs.destroy(ctx);
        co_return reply_status{};

      default: break;
    }
  } catch (...) {
    co_return failed(op);
  }
  co_return reply_status{ENOSYS};
}

// Moving data: READ, WRITE, FALLOCATE, LSEEK, COPY_FILE_RANGE, IOCTL.
template <typename Fs>
io::task<reply_status> dispatch_data(Fs& fs, context& ctx, const proto::request& req, proto::reply_buffer& out) {
  using abi::opcode;
  [[maybe_unused]] const ino node = req.nodeid();
  [[maybe_unused]] const cache_defaults& d = ctx.defaults();
  [[maybe_unused]] const opcode op = req.opcode();
  try {
    switch (op) {
      case opcode::read:
        if constexpr (handlers::read<Fs>) {
          auto in = req.op<abi::read_in>();
          file_info fi = detail::file_from(in.fh, in.flags, in.lock_owner);
          // The handler fills the reply buffer in place (on the ring: the entry's payload), or
          // names a file slice for the transport to read into it.
          std::span<std::byte> buf = out.tail().first(std::min<std::size_t>(in.size, out.room()));
          auto r = co_await detail::handled(fs.read(ctx, node, fi, buf, static_cast<off_t>(in.offset)));
          if (!r) co_return detail::error_of(r);
          using value = typename decltype(r)::value_type;
          static_assert(std::is_same_v<value, file_slice> || std::is_same_v<value, read_reply> || std::is_convertible_v<value, std::size_t>,
                        "read returns result<std::size_t>, result<file_slice> or result<read_reply>");
          read_reply answer;
          if constexpr (std::is_same_v<value, file_slice>) {
            answer = read_reply::from(*r);
          } else if constexpr (std::is_same_v<value, read_reply>) {
            answer = *r;
          } else {
            answer = read_reply::bytes_copied(*r);
          }
          if (answer.from_file) {
            reply_status st;
            st.read_from_file = true;
            st.data_from = answer.slice;
            st.data_from.size = std::min(st.data_from.size, buf.size());
            co_return st;
          }
          if (answer.copied > buf.size()) {
            detail::log_exception(op, "read handler reported more bytes than its buffer holds");
            co_return reply_status{EIO};
          }
          out.commit(answer.copied);
          co_return reply_status{};
        }
        break;

      case opcode::write:
        if constexpr (handlers::write<Fs>) {
          auto in = req.op<abi::write_in>();
          file_info fi = detail::file_from(in.fh, in.flags, in.lock_owner);
          detail::context_access::set_kill_suidgid(ctx, in.write_flags & abi::write_flag::kill_suidgid);
          result<std::size_t> r = co_await detail::handled(fs.write(ctx, node, fi, req.data(), static_cast<off_t>(in.offset)));
          if (!r) co_return detail::error_of(r);
          if (*r > req.data().size()) {
            detail::log_exception(op, "write handler reported more bytes than it was given");
            co_return reply_status{EIO};
          }
          co_return detail::put_or_overflow(out.put(abi::write_out{static_cast<std::uint32_t>(*r), 0}));
        }
        break;

      case opcode::fallocate:
        if constexpr (handlers::fallocate<Fs>) {
          auto in = req.op<abi::fallocate_in>();
          file_info fi = detail::file_from(in.fh);
          result<> r = co_await detail::handled(
              fs.fallocate(ctx, node, fi, static_cast<int>(in.mode), static_cast<off_t>(in.offset), static_cast<off_t>(in.length)));
          co_return detail::error_of(r);
        }
        break;

      case opcode::lseek:
        if constexpr (handlers::lseek<Fs>) {
          auto in = req.op<abi::lseek_in>();
          file_info fi = detail::file_from(in.fh);
          result<off_t> r = co_await detail::handled(fs.lseek(ctx, node, fi, static_cast<off_t>(in.offset), static_cast<int>(in.whence)));
          if (!r) co_return detail::error_of(r);
          co_return detail::put_or_overflow(out.put(abi::lseek_out{static_cast<std::uint64_t>(*r)}));
        }
        break;

      case opcode::copy_file_range:
      case opcode::copy_file_range_64:
        if constexpr (handlers::copy_file_range<Fs>) {
          auto in = req.op<abi::copy_file_range_in>();
          file_info fin = detail::file_from(in.fh_in);
          file_info fout = detail::file_from(in.fh_out);
          // COPY_FILE_RANGE answers in a 32-bit write_out: never ask for more than fits.
          std::size_t len = op == opcode::copy_file_range ? std::min<std::uint64_t>(in.len, 0xfffff000u) : in.len;
          result<std::size_t> r = co_await detail::handled(fs.copy_file_range(ctx, node, fin, static_cast<off_t>(in.off_in), in.nodeid_out,
                                                                              fout, static_cast<off_t>(in.off_out), len,
                                                                              static_cast<int>(in.flags)));
          if (!r) co_return detail::error_of(r);
          if (op == opcode::copy_file_range)
            co_return detail::put_or_overflow(out.put(abi::write_out{static_cast<std::uint32_t>(std::min<std::size_t>(*r, len)), 0}));
          co_return detail::put_or_overflow(out.put(abi::copy_file_range_out{*r}));
        }
        break;

      case opcode::ioctl:
        if constexpr (handlers::ioctl<Fs>) {
          auto in = req.op<abi::ioctl_in>();
          // Only restricted ioctls: the kernel has fetched exactly the argument the command's
          // _IOC_SIZE names and copies back at most out_size bytes. Unrestricted ones (CUSE, or
          // a retry with iovecs) would let the server name client addresses: not served.
          if (in.flags & abi::ioctl_flag::unrestricted) co_return reply_status{ENOSYS};
          if (in.flags & abi::ioctl_flag::compat) co_return reply_status{ENOTTY};  // a 32-bit caller's layouts
          file_info fi = detail::file_from(in.fh);
          // On the ring the output is written into the payload the input came in: keep a copy.
          std::vector<std::byte> input(req.data().begin(), req.data().end());
          std::span<std::byte> tail = out.tail();
          if (tail.size() < sizeof(abi::ioctl_out)) co_return reply_status{ERANGE};
          std::span<std::byte> data =
              tail.subspan(sizeof(abi::ioctl_out)).first(std::min<std::size_t>(in.out_size, tail.size() - sizeof(abi::ioctl_out)));
          result<ioctl_reply> r = co_await detail::handled(
              fs.ioctl(ctx, node, fi, in.cmd, in.arg, std::span<const std::byte>(input), data, (in.flags & abi::ioctl_flag::dir) != 0));
          if (!r) co_return detail::error_of(r);
          if (r->out_size > data.size()) {
            detail::log_exception(op, "ioctl handler reported more output than its buffer holds");
            co_return reply_status{EIO};
          }
          abi::ioctl_out head{r->result, 0, 0, 0};
          out.put(head);
          out.commit(r->out_size);
          co_return reply_status{};
        }
        co_return reply_status{ENOTTY};  // what an ioctl nobody handles gives (ENOSYS would stick)

      default: break;
    }
  } catch (...) {
    co_return failed(op);
  }
  co_return reply_status{ENOSYS};
}

enum class opcode_family { names, attributes, open_files, data, none };

constexpr opcode_family family_of(abi::opcode op) noexcept {
  using abi::opcode;
  switch (op) {
    case opcode::lookup:
    case opcode::forget:
    case opcode::batch_forget:
    case opcode::mknod:
    case opcode::mkdir:
    case opcode::symlink:
    case opcode::unlink:
    case opcode::rmdir:
    case opcode::rename:
    case opcode::rename2:
    case opcode::link:
    case opcode::create:
    case opcode::tmpfile: return opcode_family::names;
    case opcode::getattr:
    case opcode::setattr:
    case opcode::readlink:
    case opcode::statfs:
    case opcode::access:
    case opcode::getxattr:
    case opcode::listxattr:
    case opcode::setxattr:
    case opcode::removexattr:
    case opcode::statx: return opcode_family::attributes;
    case opcode::open:
    case opcode::opendir:
    case opcode::release:
    case opcode::releasedir:
    case opcode::flush:
    case opcode::fsync:
    case opcode::fsyncdir:
    case opcode::readdir:
    case opcode::readdirplus:
    case opcode::interrupt:
    case opcode::notify_reply:
    case opcode::destroy: return opcode_family::open_files;
    case opcode::read:
    case opcode::write:
    case opcode::fallocate:
    case opcode::lseek:
    case opcode::copy_file_range:
    case opcode::copy_file_range_64:
    case opcode::ioctl: return opcode_family::data;
    default: return opcode_family::none;
  }
}

}  // namespace detail

// Runs the handler for `req` and writes the reply's arguments into `out`: the task of the
// opcode's family (one switch each, above), which catches what a handler throws. An opcode no
// family knows (INIT, which the session answers, or one this filesystem cannot be asked) answers
// ENOSYS. Not a coroutine itself: a request costs the one coroutine frame of its family.
template <typename Fs>
io::task<reply_status> dispatch(Fs& fs, context& ctx, const proto::request& req, proto::reply_buffer& out) {
  static_assert(handlers::signatures_match<Fs>());
  detail::context_access::begin(ctx, req.header(), req.parsed_extensions());
  switch (detail::family_of(req.opcode())) {
    case detail::opcode_family::names: return detail::dispatch_names(fs, ctx, req, out);
    case detail::opcode_family::attributes: return detail::dispatch_attributes(fs, ctx, req, out);
    case detail::opcode_family::open_files: return detail::dispatch_open_files(fs, ctx, req, out);
    case detail::opcode_family::data: return detail::dispatch_data(fs, ctx, req, out);
    case detail::opcode_family::none: break;
  }
  return detail::no_handler();
}

}  // namespace corofuse
