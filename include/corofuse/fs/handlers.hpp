// The handler signatures the dispatcher recognises, one concept each, and the check that a member
// with a handler's name really has a recognised signature.
//
// Without the check, `open(context&, ino, file_info&)` (libfuse's shape) would simply not be seen
// and every OPEN would succeed by default: a permission check bypassed in silence. So a member
// named like a handler must match, or the filesystem does not compile.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <utility>

#include "corofuse/fs/connection.hpp"
#include "corofuse/fs/context.hpp"
#include "corofuse/fs/listing.hpp"
#include "corofuse/fs/types.hpp"
#include "corofuse/io/task.hpp"

namespace corofuse {
struct set_attr;
}

namespace corofuse::handlers {

using bytes = std::span<std::byte>;
using const_bytes = std::span<const std::byte>;
using name = std::string_view;

// What a handler's result holds, whether it returns result<T> or io::task<result<T>>.
template <typename R>
struct handler_result {
  using type = R;
};
template <typename R>
struct handler_result<io::task<R>> {
  using type = R;
};
template <typename Fs>
using readdir_listing_t = typename handler_result<
    decltype(std::declval<Fs&>().readdir(std::declval<context&>(), ino{}, std::declval<file_info&>(), off_t{}))>::type::value_type;

// clang-format off
template <typename Fs> concept lookup = requires(Fs& fs, context& c, ino i, name n) { fs.lookup(c, i, n); };
template <typename Fs> concept forget = requires(Fs& fs, context& c, ino i, std::uint64_t k) { fs.forget(c, i, k); };
template <typename Fs> concept getattr = requires(Fs& fs, context& c, ino i, const file_info* f) { fs.getattr(c, i, f); };
template <typename Fs> concept setattr = requires(Fs& fs, context& c, ino i, const set_attr& s, const file_info* f) { fs.setattr(c, i, s, f); };
template <typename Fs> concept readlink = requires(Fs& fs, context& c, ino i) { fs.readlink(c, i); };
template <typename Fs> concept mknod = requires(Fs& fs, context& c, ino i, name n, mode_t m, dev_t d) { fs.mknod(c, i, n, m, d, m); };
template <typename Fs> concept mkdir = requires(Fs& fs, context& c, ino i, name n, mode_t m) { fs.mkdir(c, i, n, m, m); };
template <typename Fs> concept symlink = requires(Fs& fs, context& c, ino i, name n) { fs.symlink(c, i, n, n); };
template <typename Fs> concept unlink = requires(Fs& fs, context& c, ino i, name n) { fs.unlink(c, i, n); };
template <typename Fs> concept rmdir = requires(Fs& fs, context& c, ino i, name n) { fs.rmdir(c, i, n); };
template <typename Fs> concept rename = requires(Fs& fs, context& c, ino i, name n, unsigned f) { fs.rename(c, i, n, i, n, f); };
template <typename Fs> concept link = requires(Fs& fs, context& c, ino i, name n) { fs.link(c, i, i, n); };
template <typename Fs> concept open = requires(Fs& fs, context& c, ino i, int f) { fs.open(c, i, f); };
template <typename Fs> concept opendir = requires(Fs& fs, context& c, ino i, int f) { fs.opendir(c, i, f); };
template <typename Fs> concept read = requires(Fs& fs, context& c, ino i, file_info& fi, bytes b, off_t o) { fs.read(c, i, fi, b, o); };
template <typename Fs> concept write = requires(Fs& fs, context& c, ino i, file_info& fi, const_bytes b, off_t o) { fs.write(c, i, fi, b, o); };
template <typename Fs> concept statfs = requires(Fs& fs, context& c, ino i) { fs.statfs(c, i); };
template <typename Fs> concept release = requires(Fs& fs, context& c, ino i, file_info& fi) { fs.release(c, i, fi); };
template <typename Fs> concept releasedir = requires(Fs& fs, context& c, ino i, file_info& fi) { fs.releasedir(c, i, fi); };
template <typename Fs> concept flush = requires(Fs& fs, context& c, ino i, file_info& fi) { fs.flush(c, i, fi); };
template <typename Fs> concept fsync = requires(Fs& fs, context& c, ino i, file_info& fi, bool d) { fs.fsync(c, i, fi, d); };
template <typename Fs> concept fsyncdir = requires(Fs& fs, context& c, ino i, file_info& fi, bool d) { fs.fsyncdir(c, i, fi, d); };
template <typename Fs> concept readdir = requires(Fs& fs, context& c, ino i, file_info& fi, off_t o) { fs.readdir(c, i, fi, o); } && listing<readdir_listing_t<Fs>>;
// READDIRPLUS is answered from readdir's listing when its entries have lookup() (fs/listing.hpp).
template <typename Fs> concept readdirplus = readdir<Fs> && lookup_listing<readdir_listing_t<Fs>>;
template <typename Fs> concept access = requires(Fs& fs, context& c, ino i, int m) { fs.access(c, i, m); };
template <typename Fs> concept create = requires(Fs& fs, context& c, ino i, name n, mode_t m, int f) { fs.create(c, i, n, m, m, f); };
template <typename Fs> concept getxattr = requires(Fs& fs, context& c, ino i, name n, bytes b) { fs.getxattr(c, i, n, b); };
template <typename Fs> concept listxattr = requires(Fs& fs, context& c, ino i, bytes b) { fs.listxattr(c, i, b); };
template <typename Fs> concept setxattr = requires(Fs& fs, context& c, ino i, name n, const_bytes v, int f) { fs.setxattr(c, i, n, v, f); };
template <typename Fs> concept removexattr = requires(Fs& fs, context& c, ino i, name n) { fs.removexattr(c, i, n); };
template <typename Fs> concept fallocate = requires(Fs& fs, context& c, ino i, file_info& fi, int m, off_t o) { fs.fallocate(c, i, fi, m, o, o); };
template <typename Fs> concept lseek = requires(Fs& fs, context& c, ino i, file_info& fi, off_t o, int w) { fs.lseek(c, i, fi, o, w); };
template <typename Fs> concept copy_file_range = requires(Fs& fs, context& c, ino i, file_info& fi, off_t o, std::size_t n, int f) { fs.copy_file_range(c, i, fi, o, i, fi, o, n, f); };
template <typename Fs> concept statx = requires(Fs& fs, context& c, ino i, const file_info* f, int fl, unsigned m) { fs.statx(c, i, f, fl, m); };
template <typename Fs> concept tmpfile = requires(Fs& fs, context& c, ino i, mode_t m, int f) { fs.tmpfile(c, i, m, m, f); };
template <typename Fs> concept destroy = requires(Fs& fs, context& c) { fs.destroy(c); };
template <typename Fs> concept ioctl = requires(Fs& fs, context& c, ino i, file_info& fi, unsigned cmd, std::uint64_t a, const_bytes in, bytes out, bool d) { fs.ioctl(c, i, fi, cmd, a, in, out, d); };
template <typename Fs> concept init = requires(Fs& fs, connection& c) { fs.init(c); };
// clang-format on

// A member with a handler's name (public, not overloaded: `&Fs::name` must be well-formed).
#define COROFUSE_MEMBER_NAMED(member) \
  template <typename Fs> concept has_member_##member = requires { &Fs::member; };
COROFUSE_MEMBER_NAMED(lookup)
COROFUSE_MEMBER_NAMED(forget)
COROFUSE_MEMBER_NAMED(getattr)
COROFUSE_MEMBER_NAMED(setattr)
COROFUSE_MEMBER_NAMED(readlink)
COROFUSE_MEMBER_NAMED(mknod)
COROFUSE_MEMBER_NAMED(mkdir)
COROFUSE_MEMBER_NAMED(symlink)
COROFUSE_MEMBER_NAMED(unlink)
COROFUSE_MEMBER_NAMED(rmdir)
COROFUSE_MEMBER_NAMED(rename)
COROFUSE_MEMBER_NAMED(link)
COROFUSE_MEMBER_NAMED(open)
COROFUSE_MEMBER_NAMED(opendir)
COROFUSE_MEMBER_NAMED(read)
COROFUSE_MEMBER_NAMED(write)
COROFUSE_MEMBER_NAMED(statfs)
COROFUSE_MEMBER_NAMED(release)
COROFUSE_MEMBER_NAMED(releasedir)
COROFUSE_MEMBER_NAMED(flush)
COROFUSE_MEMBER_NAMED(fsync)
COROFUSE_MEMBER_NAMED(fsyncdir)
COROFUSE_MEMBER_NAMED(readdir)
COROFUSE_MEMBER_NAMED(readdirplus)
COROFUSE_MEMBER_NAMED(access)
COROFUSE_MEMBER_NAMED(create)
COROFUSE_MEMBER_NAMED(getxattr)
COROFUSE_MEMBER_NAMED(listxattr)
COROFUSE_MEMBER_NAMED(setxattr)
COROFUSE_MEMBER_NAMED(removexattr)
COROFUSE_MEMBER_NAMED(fallocate)
COROFUSE_MEMBER_NAMED(lseek)
COROFUSE_MEMBER_NAMED(copy_file_range)
COROFUSE_MEMBER_NAMED(statx)
COROFUSE_MEMBER_NAMED(tmpfile)
COROFUSE_MEMBER_NAMED(destroy)
COROFUSE_MEMBER_NAMED(init)
COROFUSE_MEMBER_NAMED(ioctl)
#undef COROFUSE_MEMBER_NAMED

// Fails the build, naming the expected signature, when a member has a handler's name but not a
// handler's signature (README.md lists them all).
template <typename Fs>
constexpr bool signatures_match() {
#define COROFUSE_CHECK(member, expected)                \
  static_assert(!has_member_##member<Fs> || member<Fs>, \
                "corofuse: " #member " does not match the handler signature " expected "; see README.md (Writing a filesystem)");
  COROFUSE_CHECK(lookup, "result<entry> lookup(context&, ino parent, std::string_view name)")
  COROFUSE_CHECK(forget, "void forget(context&, ino, std::uint64_t nlookup)")
  COROFUSE_CHECK(getattr, "result<attr> getattr(context&, ino, const file_info*)")
  COROFUSE_CHECK(setattr, "result<attr> setattr(context&, ino, const set_attr&, const file_info*)")
  COROFUSE_CHECK(readlink, "result<std::string> readlink(context&, ino)")
  COROFUSE_CHECK(mknod, "result<entry> mknod(context&, ino, std::string_view, mode_t, dev_t, mode_t umask)")
  COROFUSE_CHECK(mkdir, "result<entry> mkdir(context&, ino, std::string_view, mode_t, mode_t umask)")
  COROFUSE_CHECK(symlink, "result<entry> symlink(context&, ino, std::string_view name, std::string_view target)")
  COROFUSE_CHECK(unlink, "result<> unlink(context&, ino, std::string_view)")
  COROFUSE_CHECK(rmdir, "result<> rmdir(context&, ino, std::string_view)")
  COROFUSE_CHECK(rename, "result<> rename(context&, ino, std::string_view, ino, std::string_view, unsigned flags)")
  COROFUSE_CHECK(link, "result<entry> link(context&, ino, ino newparent, std::string_view)")
  COROFUSE_CHECK(open, "result<open_reply> open(context&, ino, int flags)")
  COROFUSE_CHECK(opendir, "result<open_reply> opendir(context&, ino, int flags)")
  COROFUSE_CHECK(read, "result<std::size_t|file_slice|read_reply> read(context&, ino, file_info&, std::span<std::byte>, off_t)")
  COROFUSE_CHECK(write, "result<std::size_t> write(context&, ino, file_info&, std::span<const std::byte>, off_t)")
  COROFUSE_CHECK(statfs, "result<struct statvfs> statfs(context&, ino)")
  COROFUSE_CHECK(release, "result<> release(context&, ino, file_info&)")
  COROFUSE_CHECK(releasedir, "result<> releasedir(context&, ino, file_info&)")
  COROFUSE_CHECK(flush, "result<> flush(context&, ino, file_info&)")
  COROFUSE_CHECK(fsync, "result<> fsync(context&, ino, file_info&, bool datasync)")
  COROFUSE_CHECK(fsyncdir, "result<> fsyncdir(context&, ino, file_info&, bool datasync)")
  COROFUSE_CHECK(readdir,
                 "result<range of entries> readdir(context&, ino, file_info&, off_t), the entries with name, ino, type, next_offset")
  static_assert(!has_member_readdirplus<Fs>,
                "corofuse: READDIRPLUS is answered from readdir's listing: give its entries a lookup() (dirplus_entry) in place of a "
                "readdirplus member; see README.md (Writing a filesystem)");
  COROFUSE_CHECK(access, "result<> access(context&, ino, int mask)")
  COROFUSE_CHECK(create, "result<created> create(context&, ino, std::string_view, mode_t, mode_t umask, int flags)")
  COROFUSE_CHECK(getxattr, "result<std::size_t> getxattr(context&, ino, std::string_view, std::span<std::byte>)")
  COROFUSE_CHECK(listxattr, "result<std::size_t> listxattr(context&, ino, std::span<std::byte>)")
  COROFUSE_CHECK(setxattr, "result<> setxattr(context&, ino, std::string_view, std::span<const std::byte>, int flags)")
  COROFUSE_CHECK(removexattr, "result<> removexattr(context&, ino, std::string_view)")
  COROFUSE_CHECK(fallocate, "result<> fallocate(context&, ino, file_info&, int mode, off_t, off_t)")
  COROFUSE_CHECK(lseek, "result<off_t> lseek(context&, ino, file_info&, off_t, int whence)")
  COROFUSE_CHECK(copy_file_range,
                 "result<std::size_t> copy_file_range(context&, ino, file_info&, off_t, ino, file_info&, off_t, std::size_t, int)")
  COROFUSE_CHECK(statx, "result<struct statx> statx(context&, ino, const file_info*, int flags, unsigned mask)")
  COROFUSE_CHECK(tmpfile, "result<created> tmpfile(context&, ino, mode_t, mode_t umask, int flags)")
  COROFUSE_CHECK(destroy, "void destroy(context&)")
  COROFUSE_CHECK(init, "void init(const connection&)")
  COROFUSE_CHECK(ioctl,
                 "result<ioctl_reply> ioctl(context&, ino, file_info&, unsigned cmd, std::uint64_t arg, std::span<const std::byte> in, "
                 "std::span<std::byte> out, bool is_dir)")
#undef COROFUSE_CHECK
  return true;
}

}  // namespace corofuse::handlers
