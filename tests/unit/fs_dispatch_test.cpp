// Dispatch over an in-memory transport: every opcode the dispatcher handles, through a handler
// that returns values and one that returns tasks, the defaults of absent handlers, and the
// exception barrier.
#include <catch2/catch.hpp>

#include <dirent.h>
#include <fcntl.h>

#include <array>
#include <cstring>
#include <map>
#include <mutex>
#include <ranges>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "corofuse/corofuse.hpp"
#include "corofuse/fs/dispatch.hpp"
#include "tests/unit/fake_request.hpp"
#include "tests/unit/temp_file.hpp"

namespace abi = corofuse::abi;
namespace cf = corofuse;
namespace io = corofuse::io;
namespace proto = corofuse::proto;
using corofuse::testing::message;
using corofuse::testing::with_nul;

namespace {

// Records what reached it; answers from small fixed data.
struct recording_fs {
  std::vector<std::string> calls;
  std::map<cf::ino, std::uint64_t> forgotten;
  std::vector<std::string> names = {"a", "bb", "ccc", "dddd"};

  static cf::entry entry_for(cf::ino i, mode_t mode) {
    cf::entry e;
    e.ino = i;
    e.generation = 3;
    e.attr.st_ino = i;
    e.attr.st_mode = mode;
    e.attr.st_nlink = 1;
    e.entry_timeout = 2.5;
    return e;
  }

  cf::result<cf::entry> lookup(cf::context& c, cf::ino parent, std::string_view name) {
    calls.push_back("lookup " + std::to_string(parent) + " " + std::string(name) + " uid=" + std::to_string(c.uid()));
    if (name == "missing") return cf::error(ENOENT);
    if (name == "throw") throw std::runtime_error("boom");
    return entry_for(10, S_IFREG | 0644);
  }
  void forget(cf::context&, cf::ino i, std::uint64_t n) { forgotten[i] += n; }
  cf::result<cf::attr> getattr(cf::context&, cf::ino i, const cf::file_info* fi) {
    calls.push_back("getattr " + std::to_string(i) + (fi ? " fh=" + std::to_string(fi->fh) : ""));
    cf::attr a;
    a.st.st_ino = i;
    a.st.st_mode = S_IFDIR | 0755;
    a.st.st_size = 4096;
    a.timeout = 0.5;
    return a;
  }
  cf::result<cf::attr> setattr(cf::context&, cf::ino i, const cf::set_attr& s, const cf::file_info*) {
    calls.push_back("setattr " + std::to_string(i) + (s.has_size() ? " size=" + std::to_string(s.size) : "") +
                    (s.has_mode() ? " mode" : "") + (s.atime.tv_nsec == UTIME_NOW ? " atime=now" : ""));
    cf::attr a;
    a.st.st_ino = i;
    a.st.st_size = s.size;
    return a;
  }
  cf::result<std::string> readlink(cf::context&, cf::ino) { return std::string("target/path"); }
  cf::result<cf::entry> mknod(cf::context&, cf::ino, std::string_view n, mode_t m, dev_t rdev, mode_t umask) {
    calls.push_back("mknod " + std::string(n) + " " + std::to_string(m) + " " + std::to_string(rdev) + " " + std::to_string(umask));
    return entry_for(11, m);
  }
  cf::result<cf::entry> mkdir(cf::context&, cf::ino, std::string_view n, mode_t m, mode_t umask) {
    calls.push_back("mkdir " + std::string(n) + " " + std::to_string(m) + " " + std::to_string(umask));
    return entry_for(12, S_IFDIR | m);
  }
  cf::result<cf::entry> symlink(cf::context&, cf::ino, std::string_view n, std::string_view target) {
    calls.push_back("symlink " + std::string(n) + " -> " + std::string(target));
    return entry_for(13, S_IFLNK | 0777);
  }
  cf::result<> unlink(cf::context&, cf::ino, std::string_view n) {
    calls.push_back("unlink " + std::string(n));
    return cf::ok();
  }
  cf::result<> rmdir(cf::context&, cf::ino, std::string_view n) {
    calls.push_back("rmdir " + std::string(n));
    return cf::error(ENOTEMPTY);
  }
  cf::result<> rename(cf::context&, cf::ino p, std::string_view n, cf::ino np, std::string_view nn, unsigned flags) {
    calls.push_back("rename " + std::to_string(p) + "/" + std::string(n) + " " + std::to_string(np) + "/" + std::string(nn) + " " +
                    std::to_string(flags));
    return cf::ok();
  }
  cf::result<cf::entry> link(cf::context&, cf::ino old, cf::ino np, std::string_view n) {
    calls.push_back("link " + std::to_string(old) + " " + std::to_string(np) + "/" + std::string(n));
    return entry_for(old, S_IFREG | 0644);
  }
  cf::result<cf::open_reply> open(cf::context&, cf::ino, int flags) {
    calls.push_back("open " + std::to_string(flags));
    cf::open_reply r;
    r.fh = 99;
    r.keep_cache = true;
    return r;
  }
  // A task-returning handler: awaits a nop on the queue's ring before answering.
  io::task<cf::result<std::size_t>> read(cf::context& c, cf::ino, cf::file_info& fi, std::span<std::byte> buf, off_t off) {
    co_await io::nop(c.ring());
    calls.push_back("read fh=" + std::to_string(fi.fh) + " off=" + std::to_string(off) + " size=" + std::to_string(buf.size()));
    const std::string text = "hello, world\n";
    std::size_t n = 0;
    for (; n < buf.size() && off + static_cast<off_t>(n) < static_cast<off_t>(text.size()); ++n)
      buf[n] = static_cast<std::byte>(text[static_cast<std::size_t>(off) + n]);
    co_return n;
  }
  io::task<cf::result<std::size_t>> write(cf::context& c, cf::ino, cf::file_info&, std::span<const std::byte> data, off_t off) {
    co_await io::nop(c.ring());
    calls.push_back("write " + std::string(reinterpret_cast<const char*>(data.data()), data.size()) + " @" + std::to_string(off));
    co_return data.size();
  }
  cf::result<struct statvfs> statfs(cf::context&, cf::ino) {
    struct statvfs v {};
    v.f_blocks = 1000;
    v.f_bsize = 4096;
    v.f_namemax = 255;
    return v;
  }
  cf::result<> release(cf::context&, cf::ino, cf::file_info& fi) {
    calls.push_back("release " + std::to_string(fi.fh));
    return cf::ok();
  }
  cf::result<> flush(cf::context&, cf::ino, cf::file_info& fi) {
    calls.push_back("flush " + std::to_string(fi.fh));
    return cf::ok();
  }
  cf::result<> fsync(cf::context&, cf::ino, cf::file_info&, bool datasync) {
    calls.push_back(std::string("fsync ") + (datasync ? "data" : "all"));
    return cf::ok();
  }
  cf::result<std::vector<cf::dir_entry>> readdir(cf::context&, cf::ino, cf::file_info&, off_t off) {
    std::vector<cf::dir_entry> out;
    for (std::size_t i = static_cast<std::size_t>(off); i < names.size(); ++i) out.push_back({names[i], 100 + i, DT_REG, i + 1});
    return out;
  }
  cf::result<> access(cf::context&, cf::ino, int mask) { return mask & W_OK ? cf::result<>(cf::error(EACCES)) : cf::ok(); }
  cf::result<cf::created> create(cf::context&, cf::ino, std::string_view n, mode_t m, mode_t, int flags) {
    calls.push_back("create " + std::string(n) + " " + std::to_string(flags));
    cf::created c;
    c.e = entry_for(14, S_IFREG | m);
    c.open.fh = 7;
    return c;
  }
};

// Extended attributes, space and copy operations, statx and tmpfile.
struct extended_fs {
  std::map<std::string, std::string> xattrs{{"user.a", "alpha"}, {"user.b", ""}};
  std::vector<std::string> calls;

  cf::result<std::size_t> getxattr(cf::context&, cf::ino, std::string_view name, std::span<std::byte> buf) {
    auto it = xattrs.find(std::string(name));
    if (it == xattrs.end()) return cf::error(ENODATA);
    if (buf.empty()) return it->second.size();
    if (buf.size() < it->second.size()) return cf::error(ERANGE);
    std::memcpy(buf.data(), it->second.data(), it->second.size());
    return it->second.size();
  }
  cf::result<std::size_t> listxattr(cf::context&, cf::ino, std::span<std::byte> buf) {
    std::string all;
    for (auto& [k, v] : xattrs) all += k + '\0';
    if (buf.empty()) return all.size();
    if (buf.size() < all.size()) return cf::error(ERANGE);
    std::memcpy(buf.data(), all.data(), all.size());
    return all.size();
  }
  cf::result<> setxattr(cf::context&, cf::ino, std::string_view name, std::span<const std::byte> v, int flags) {
    calls.push_back("setxattr " + std::string(name) + " flags=" + std::to_string(flags));
    xattrs[std::string(name)] = std::string(reinterpret_cast<const char*>(v.data()), v.size());
    return cf::ok();
  }
  cf::result<> removexattr(cf::context&, cf::ino, std::string_view name) {
    return xattrs.erase(std::string(name)) ? cf::ok() : cf::result<>(cf::error(ENODATA));
  }
  cf::result<> fallocate(cf::context&, cf::ino, cf::file_info& fi, int mode, off_t off, off_t len) {
    calls.push_back("fallocate fh=" + std::to_string(fi.fh) + " mode=" + std::to_string(mode) + " " + std::to_string(off) + "+" +
                    std::to_string(len));
    return cf::ok();
  }
  cf::result<off_t> lseek(cf::context&, cf::ino, cf::file_info&, off_t off, int whence) {
    if (whence == SEEK_DATA) return off;
    if (whence == SEEK_HOLE) return off_t{1} << 40;
    return cf::error(EINVAL);
  }
  cf::result<std::size_t> copy_file_range(cf::context&, cf::ino in, cf::file_info& fin, off_t off_in, cf::ino out, cf::file_info& fout,
                                          off_t off_out, std::size_t len, int) {
    calls.push_back("copy " + std::to_string(in) + ":" + std::to_string(fin.fh) + "@" + std::to_string(off_in) + " -> " +
                    std::to_string(out) + ":" + std::to_string(fout.fh) + "@" + std::to_string(off_out) + " len=" + std::to_string(len));
    return len;
  }
  cf::result<struct ::statx> statx(cf::context&, cf::ino i, const cf::file_info*, int, unsigned mask) {
    struct ::statx x {};
    x.stx_mask = mask & (STATX_BASIC_STATS | STATX_BTIME);
    x.stx_ino = i;
    x.stx_mode = S_IFREG | 0600;
    x.stx_size = 77;
    x.stx_btime.tv_sec = 1234;
    return x;
  }
  cf::result<cf::created> tmpfile(cf::context&, cf::ino, mode_t mode, mode_t, int flags) {
    calls.push_back("tmpfile " + std::to_string(mode) + " " + std::to_string(flags));
    cf::created c;
    c.e.ino = 50;
    c.e.attr.st_mode = S_IFREG | mode;
    c.open.fh = 5;
    return c;
  }
};

// A filesystem with no handlers at all.
struct empty_fs {};

struct harness {
  io::ring ring;
  cf::cache_defaults defaults;
  cf::context ctx{&ring, defaults};
  std::vector<std::byte> space = std::vector<std::byte>(64 * 1024);
  proto::reply_buffer out{space};

  template <typename Fs>
  cf::reply_status run(Fs& fs, const message& m) {
    proto::request req;
    REQUIRE(proto::parse_message(m.bytes, req) == proto::parse_error::none);
    out.clear();
    return io::sync_wait(ring, cf::dispatch(fs, ctx, req, out));
  }
  template <typename T>
  T reply_as() const {
    REQUIRE(out.size() >= sizeof(T));
    T v;
    std::memcpy(&v, space.data(), sizeof v);
    return v;
  }
};

}  // namespace

TEST_CASE("dispatch: LOOKUP replies an entry_out with the handler's values and the caller in the context", "[fs][dispatch]") {
  harness h;
  recording_fs fs;
  message m(abi::opcode::lookup, nullptr, 0, with_nul("file"));
  auto st = h.run(fs, m);
  CHECK(st.error == 0);
  CHECK_FALSE(st.no_reply);
  REQUIRE(h.out.size() == sizeof(abi::entry_out));
  auto e = h.reply_as<abi::entry_out>();
  CHECK(e.nodeid == 10);
  CHECK(e.generation == 3);
  CHECK(e.entry_valid == 2);
  CHECK(e.entry_valid_nsec == 500000000u);
  CHECK(e.attr_valid == 1);  // the mount default
  CHECK(e.attr.mode == (S_IFREG | 0644));
  CHECK(fs.calls.back() == "lookup 7 file uid=1000");
}

TEST_CASE("dispatch: errors and exceptions", "[fs][dispatch]") {
  harness h;
  recording_fs fs;
  CHECK(h.run(fs, message(abi::opcode::lookup, nullptr, 0, with_nul("missing"))).error == ENOENT);
  CHECK(h.run(fs, message(abi::opcode::lookup, nullptr, 0, with_nul("throw"))).error == EIO);
  CHECK(h.out.size() == 0);
  CHECK(h.run(fs, message(abi::opcode::rmdir, nullptr, 0, with_nul("d"))).error == ENOTEMPTY);
}

TEST_CASE("dispatch: FORGET and BATCH_FORGET reach forget() and are never answered", "[fs][dispatch]") {
  harness h;
  recording_fs fs;
  abi::forget_in f{5};
  auto st = h.run(fs, message(abi::opcode::forget, &f, sizeof f));
  CHECK(st.no_reply);
  CHECK(fs.forgotten[7] == 5);
  abi::batch_forget_in b{2, 0};
  abi::forget_one items[2] = {{20, 1}, {21, 2}};
  st = h.run(fs, message(abi::opcode::batch_forget, &b, sizeof b, std::string(reinterpret_cast<char*>(items), sizeof items)));
  CHECK(st.no_reply);
  CHECK(fs.forgotten[20] == 1);
  CHECK(fs.forgotten[21] == 2);
}

TEST_CASE("dispatch: GETATTR with and without a file handle; SETATTR fields", "[fs][dispatch]") {
  harness h;
  recording_fs fs;
  abi::getattr_in g{};
  CHECK(h.run(fs, message(abi::opcode::getattr, &g, sizeof g)).error == 0);
  CHECK(fs.calls.back() == "getattr 7");
  auto a = h.reply_as<abi::attr_out>();
  CHECK(a.attr_valid == 0);
  CHECK(a.attr_valid_nsec == 500000000u);
  CHECK(a.attr.size == 4096);
  g.getattr_flags = abi::getattr_flag::fh;
  g.fh = 44;
  h.run(fs, message(abi::opcode::getattr, &g, sizeof g));
  CHECK(fs.calls.back() == "getattr 7 fh=44");

  abi::setattr_in s{};
  s.valid = abi::fattr::size | abi::fattr::atime_now | abi::fattr::mode;
  s.size = 123;
  CHECK(h.run(fs, message(abi::opcode::setattr, &s, sizeof s)).error == 0);
  CHECK(fs.calls.back() == "setattr 7 size=123 mode atime=now");
  CHECK(h.reply_as<abi::attr_out>().attr.size == 123);
}

TEST_CASE("dispatch: READLINK, MKNOD, MKDIR, SYMLINK, UNLINK, RENAME, RENAME2, LINK", "[fs][dispatch]") {
  harness h;
  recording_fs fs;
  CHECK(h.run(fs, message(abi::opcode::readlink, nullptr, 0)).error == 0);
  CHECK(std::string(reinterpret_cast<const char*>(h.space.data()), h.out.size()) == "target/path");

  abi::mknod_in mn{S_IFIFO | 0600, 0, 022, 0};
  CHECK(h.run(fs, message(abi::opcode::mknod, &mn, sizeof mn, with_nul("fifo"))).error == 0);
  CHECK(fs.calls.back() == "mknod fifo " + std::to_string(S_IFIFO | 0600) + " 0 18");
  CHECK(h.reply_as<abi::entry_out>().nodeid == 11);

  abi::mkdir_in mk{0755, 022};
  CHECK(h.run(fs, message(abi::opcode::mkdir, &mk, sizeof mk, with_nul("dir"))).error == 0);
  CHECK(fs.calls.back() == "mkdir dir 493 18");
  CHECK(h.reply_as<abi::entry_out>().attr.mode == (S_IFDIR | 0755));

  CHECK(h.run(fs, message(abi::opcode::symlink, nullptr, 0, with_nul("ln") + with_nul("/t"))).error == 0);
  CHECK(fs.calls.back() == "symlink ln -> /t");

  CHECK(h.run(fs, message(abi::opcode::unlink, nullptr, 0, with_nul("gone"))).error == 0);
  CHECK(fs.calls.back() == "unlink gone");
  CHECK(h.out.size() == 0);

  abi::rename_in rn{9};
  CHECK(h.run(fs, message(abi::opcode::rename, &rn, sizeof rn, with_nul("a") + with_nul("b"))).error == 0);
  CHECK(fs.calls.back() == "rename 7/a 9/b 0");
  abi::rename2_in rn2{9, 1, 0};
  CHECK(h.run(fs, message(abi::opcode::rename2, &rn2, sizeof rn2, with_nul("a") + with_nul("b"))).error == 0);
  CHECK(fs.calls.back() == "rename 7/a 9/b 1");

  abi::link_in ln{10};
  CHECK(h.run(fs, message(abi::opcode::link, &ln, sizeof ln, with_nul("hard"))).error == 0);
  CHECK(fs.calls.back() == "link 10 7/hard");
  CHECK(h.reply_as<abi::entry_out>().nodeid == 10);
}

TEST_CASE("dispatch: OPEN, READ (a task, in place), WRITE (a task), FLUSH, FSYNC, RELEASE", "[fs][dispatch]") {
  harness h;
  recording_fs fs;
  abi::open_in o{O_RDWR, 0};
  CHECK(h.run(fs, message(abi::opcode::open, &o, sizeof o)).error == 0);
  auto oo = h.reply_as<abi::open_out>();
  CHECK(oo.fh == 99);
  CHECK(oo.open_flags == abi::fopen::keep_cache);

  abi::read_in r{};
  r.fh = 99;
  r.offset = 7;
  r.size = 100;
  CHECK(h.run(fs, message(abi::opcode::read, &r, sizeof r)).error == 0);
  CHECK(fs.calls.back() == "read fh=99 off=7 size=100");
  CHECK(std::string(reinterpret_cast<const char*>(h.space.data()), h.out.size()) == "world\n");

  abi::write_in w{};
  w.size = 3;
  w.offset = 1ull << 32;
  CHECK(h.run(fs, message(abi::opcode::write, &w, sizeof w, "xyz")).error == 0);
  CHECK(fs.calls.back() == "write xyz @4294967296");
  CHECK(h.reply_as<abi::write_out>().size == 3);

  abi::flush_in f{};
  f.fh = 99;
  CHECK(h.run(fs, message(abi::opcode::flush, &f, sizeof f)).error == 0);
  CHECK(fs.calls.back() == "flush 99");
  abi::fsync_in fs_in{99, abi::fsync_flag::fdatasync, 0};
  CHECK(h.run(fs, message(abi::opcode::fsync, &fs_in, sizeof fs_in)).error == 0);
  CHECK(fs.calls.back() == "fsync data");
  abi::release_in rel{};
  rel.fh = 99;
  CHECK(h.run(fs, message(abi::opcode::release, &rel, sizeof rel)).error == 0);
  CHECK(fs.calls.back() == "release 99");
}

TEST_CASE("dispatch: READDIR packs what fits and resumes at the next offset", "[fs][dispatch]") {
  harness h;
  recording_fs fs;
  abi::read_in r{};
  r.size = 64;  // two 32-byte records: "a" and "bb"
  CHECK(h.run(fs, message(abi::opcode::readdir, &r, sizeof r)).error == 0);
  REQUIRE(h.out.size() == 64);
  abi::dirent d{};
  std::memcpy(&d, h.space.data() + 32, sizeof d);
  CHECK(d.ino == 101);
  CHECK(d.off == 2);
  r.offset = d.off;  // the kernel continues from the last record's offset
  r.size = 4096;
  CHECK(h.run(fs, message(abi::opcode::readdir, &r, sizeof r)).error == 0);
  CHECK(h.out.size() == 32 + 32);  // "ccc" and "dddd"
  std::memcpy(&d, h.space.data(), sizeof d);
  CHECK(d.namelen == 3);
  r.offset = 4;
  CHECK(h.run(fs, message(abi::opcode::readdir, &r, sizeof r)).error == 0);
  CHECK(h.out.size() == 0);  // the end of the listing
}

TEST_CASE("dispatch: STATFS, ACCESS, CREATE", "[fs][dispatch]") {
  harness h;
  recording_fs fs;
  CHECK(h.run(fs, message(abi::opcode::statfs, nullptr, 0)).error == 0);
  auto s = h.reply_as<abi::statfs_out>();
  CHECK(s.st.blocks == 1000);
  CHECK(s.st.bsize == 4096);
  abi::access_in a{R_OK, 0};
  CHECK(h.run(fs, message(abi::opcode::access, &a, sizeof a)).error == 0);
  a.mask = W_OK;
  CHECK(h.run(fs, message(abi::opcode::access, &a, sizeof a)).error == EACCES);
  abi::create_in c{O_CREAT | O_WRONLY, 0644, 022, 0};
  CHECK(h.run(fs, message(abi::opcode::create, &c, sizeof c, with_nul("new"))).error == 0);
  REQUIRE(h.out.size() == sizeof(abi::entry_out) + sizeof(abi::open_out));
  abi::open_out oo;
  std::memcpy(&oo, h.space.data() + sizeof(abi::entry_out), sizeof oo);
  CHECK(oo.fh == 7);
  CHECK(h.reply_as<abi::entry_out>().nodeid == 14);
}

TEST_CASE("dispatch: absent handlers get the kernel's expected defaults", "[fs][dispatch]") {
  harness h;
  empty_fs fs;
  CHECK(h.run(fs, message(abi::opcode::lookup, nullptr, 0, with_nul("x"))).error == ENOSYS);
  abi::getattr_in g{};
  CHECK(h.run(fs, message(abi::opcode::getattr, &g, sizeof g)).error == ENOSYS);
  abi::open_in o{O_RDONLY, 0};
  CHECK(h.run(fs, message(abi::opcode::open, &o, sizeof o)).error == 0);  // opening always works
  CHECK(h.reply_as<abi::open_out>().fh == 0);
  CHECK(h.run(fs, message(abi::opcode::opendir, &o, sizeof o)).error == 0);
  abi::release_in rel{};
  CHECK(h.run(fs, message(abi::opcode::release, &rel, sizeof rel)).error == 0);
  CHECK(h.run(fs, message(abi::opcode::releasedir, &rel, sizeof rel)).error == 0);
  abi::flush_in f{};
  CHECK(h.run(fs, message(abi::opcode::flush, &f, sizeof f)).error == 0);
  CHECK(h.run(fs, message(abi::opcode::statfs, nullptr, 0)).error == 0);  // df still works
  CHECK(h.reply_as<abi::statfs_out>().st.namelen == 255);
  abi::fsync_in fsy{};
  CHECK(h.run(fs, message(abi::opcode::fsync, &fsy, sizeof fsy)).error == ENOSYS);
  abi::statx_in sx{};
  CHECK(h.run(fs, message(abi::opcode::statx, &sx, sizeof sx)).error == ENOSYS);  // the kernel falls back to GETATTR
  abi::forget_in fg{1};
  CHECK(h.run(fs, message(abi::opcode::forget, &fg, sizeof fg)).no_reply);
  abi::interrupt_in in{1};
  CHECK(h.run(fs, message(abi::opcode::interrupt, &in, sizeof in)).no_reply);
  CHECK(h.run(fs, message(abi::opcode::destroy, nullptr, 0)).error == 0);
}

TEST_CASE("dispatch: GETXATTR and LISTXATTR, size queries and values; SETXATTR, REMOVEXATTR", "[fs][dispatch]") {
  harness h;
  extended_fs fs;
  abi::getxattr_in g{0, 0};
  CHECK(h.run(fs, message(abi::opcode::getxattr, &g, sizeof g, with_nul("user.a"))).error == 0);
  CHECK(h.reply_as<abi::getxattr_out>().size == 5);  // size query
  g.size = 64;
  CHECK(h.run(fs, message(abi::opcode::getxattr, &g, sizeof g, with_nul("user.a"))).error == 0);
  CHECK(std::string(reinterpret_cast<const char*>(h.space.data()), h.out.size()) == "alpha");
  g.size = 2;
  CHECK(h.run(fs, message(abi::opcode::getxattr, &g, sizeof g, with_nul("user.a"))).error == ERANGE);
  CHECK(h.run(fs, message(abi::opcode::getxattr, &g, sizeof g, with_nul("user.none"))).error == ENODATA);

  abi::getxattr_in l{0, 0};
  CHECK(h.run(fs, message(abi::opcode::listxattr, &l, sizeof l)).error == 0);
  CHECK(h.reply_as<abi::getxattr_out>().size == 14);
  l.size = 100;
  CHECK(h.run(fs, message(abi::opcode::listxattr, &l, sizeof l)).error == 0);
  CHECK(std::string(reinterpret_cast<const char*>(h.space.data()), h.out.size()) == std::string("user.a\0user.b\0", 14));

  abi::setxattr_in sx{3, 1 /* XATTR_CREATE */, 0, 0};
  CHECK(h.run(fs, message(abi::opcode::setxattr, &sx, sizeof sx, with_nul("user.c") + "xyz")).error == 0);
  CHECK(fs.calls.back() == "setxattr user.c flags=1");
  CHECK(fs.xattrs["user.c"] == "xyz");
  CHECK(h.run(fs, message(abi::opcode::removexattr, nullptr, 0, with_nul("user.c"))).error == 0);
  CHECK(h.run(fs, message(abi::opcode::removexattr, nullptr, 0, with_nul("user.c"))).error == ENODATA);
}

TEST_CASE("dispatch: FALLOCATE, LSEEK, COPY_FILE_RANGE(_64), STATX, TMPFILE", "[fs][dispatch]") {
  harness h;
  extended_fs fs;
  abi::fallocate_in fa{3, 4096, 8192, 1, 0};
  CHECK(h.run(fs, message(abi::opcode::fallocate, &fa, sizeof fa)).error == 0);
  CHECK(fs.calls.back() == "fallocate fh=3 mode=1 4096+8192");

  abi::lseek_in ls{0, 100, SEEK_HOLE, 0};
  CHECK(h.run(fs, message(abi::opcode::lseek, &ls, sizeof ls)).error == 0);
  CHECK(h.reply_as<abi::lseek_out>().offset == (1ull << 40));
  ls.whence = SEEK_END;
  CHECK(h.run(fs, message(abi::opcode::lseek, &ls, sizeof ls)).error == EINVAL);

  abi::copy_file_range_in c{1, 10, 20, 2, 30, 1ull << 33, 0};
  CHECK(h.run(fs, message(abi::opcode::copy_file_range, &c, sizeof c)).error == 0);
  CHECK(fs.calls.back() == "copy 7:1@10 -> 20:2@30 len=" + std::to_string(0xfffff000u));  // capped to fit 32 bits
  CHECK(h.reply_as<abi::write_out>().size == 0xfffff000u);
  CHECK(h.run(fs, message(abi::opcode::copy_file_range_64, &c, sizeof c)).error == 0);
  CHECK(h.reply_as<abi::copy_file_range_out>().bytes_copied == (1ull << 33));

  abi::statx_in sxi{0, 0, 0, 0, STATX_BASIC_STATS | STATX_BTIME};
  CHECK(h.run(fs, message(abi::opcode::statx, &sxi, sizeof sxi)).error == 0);
  auto so = h.reply_as<abi::statx_out>();
  CHECK(so.stat.ino == 7);
  CHECK(so.stat.size == 77);
  CHECK(so.stat.btime.tv_sec == 1234);
  CHECK(so.attr_valid == 1);

  abi::create_in t{O_RDWR, 0600, 022, 0};
  CHECK(h.run(fs, message(abi::opcode::tmpfile, &t, sizeof t, with_nul("/"))).error == 0);
  CHECK(fs.calls.back() == "tmpfile 384 2");
  REQUIRE(h.out.size() == sizeof(abi::entry_out) + sizeof(abi::open_out));
  CHECK(h.reply_as<abi::entry_out>().nodeid == 50);
}

namespace {
// READ and WRITE served from a backing file with the context's fixed-buffer I/O.
struct backed_fs {
  int fd;
  io::task<cf::result<std::size_t>> read(cf::context& ctx, cf::ino, cf::file_info&, std::span<std::byte> buf, off_t off) {
    int n = co_await ctx.read_fixed(fd, buf, off);
    if (n < 0) co_return cf::error(-n);
    co_return static_cast<std::size_t>(n);
  }
  io::task<cf::result<std::size_t>> write(cf::context& ctx, cf::ino, cf::file_info&, std::span<const std::byte> data, off_t off) {
    int n = co_await ctx.write_fixed(fd, data, off);
    if (n < 0) co_return cf::error(-n);
    co_return static_cast<std::size_t>(n);
  }
};

// The backing file: 16 known bytes.
struct temp_backing : corofuse::testing::temp_file {
  temp_backing() : temp_file("corofuse-backed") { fill("0123456789abcdef"); }
};
}  // namespace

TEST_CASE("context: read_fixed / write_fixed move data between a backing file and the request's buffers", "[fs][dispatch][fixed]") {
  temp_backing file;
  backed_fs fs{file.fd};
  abi::read_in r{};
  r.offset = 4;
  r.size = 6;

  SECTION("into a registered reply buffer (READ_FIXED)") {
    harness h;
    iovec iov{h.space.data(), h.space.size()};
    h.ring.register_buffers(std::span<const iovec>(&iov, 1));
    cf::detail::context_access::set_registered_buffer(h.ctx, 0, h.space, 0);
    CHECK(h.run(fs, message(abi::opcode::read, &r, sizeof r)).error == 0);
    CHECK(std::string(reinterpret_cast<const char*>(h.space.data()), h.out.size()) == "456789");
  }
  SECTION("into an unregistered buffer (plain READ)") {
    harness h;
    CHECK(h.run(fs, message(abi::opcode::read, &r, sizeof r)).error == 0);
    CHECK(std::string(reinterpret_cast<const char*>(h.space.data()), h.out.size()) == "456789");
  }
  SECTION("the fixed path is really taken: a buffer named registered that the ring does not have fails") {
    harness h;
    cf::detail::context_access::set_registered_buffer(h.ctx, 0, h.space, 0);  // no buffer table on this ring
    CHECK(h.run(fs, message(abi::opcode::read, &r, sizeof r)).error != 0);
  }
  SECTION("WRITE data from a registered request buffer (WRITE_FIXED)") {
    harness h;
    abi::write_in w{};
    w.offset = 10;
    w.size = 3;
    message m(abi::opcode::write, &w, sizeof w, "XYZ");
    iovec iov{m.bytes.data(), m.bytes.size()};
    h.ring.register_buffers(std::span<const iovec>(&iov, 1));
    cf::detail::context_access::set_registered_buffer(h.ctx, 1, m.bytes, 0);
    CHECK(h.run(fs, m).error == 0);
    CHECK(h.reply_as<abi::write_out>().size == 3);
    char back[16];
    REQUIRE(::pread(file.fd, back, 16, 0) == 16);
    CHECK(std::string(back, 16) == "0123456789XYZdef");
  }
}

namespace {
struct slice_fs {
  int fd;
  cf::result<cf::file_slice> read(cf::context&, cf::ino, cf::file_info&, std::span<std::byte> buf, off_t off) {
    return cf::file_slice{fd, off, buf.size() + 100};  // asks for more than fits: capped
  }
};
struct mixed_fs {
  cf::result<cf::read_reply> read(cf::context&, cf::ino i, cf::file_info&, std::span<std::byte> buf, off_t) {
    if (i == 7) return cf::read_reply::from(cf::file_slice{3, 10, 4});
    buf[0] = std::byte{'q'};
    return cf::read_reply::bytes_copied(1);
  }
};
}  // namespace

TEST_CASE("dispatch: READ answered with a file slice is handed to the transport, capped to the buffer", "[fs][dispatch]") {
  harness h;
  slice_fs fs{42};
  abi::read_in r{};
  r.offset = 8;
  r.size = 300;
  auto st = h.run(fs, message(abi::opcode::read, &r, sizeof r));
  CHECK(st.error == 0);
  REQUIRE(st.read_from_file);
  CHECK(st.data_from.fd == 42);
  CHECK(st.data_from.offset == 8);
  CHECK(st.data_from.size == 300);  // the request's size, not the handler's 400
  CHECK(h.out.size() == 0);         // nothing written yet: the transport reads

  mixed_fs m;
  st = h.run(m, message(abi::opcode::read, &r, sizeof r));  // node 7: from a file
  CHECK(st.read_from_file);
  CHECK(st.data_from.size == 4);
  message other(abi::opcode::read, &r, sizeof r);
  other.header().nodeid = 8;
  st = h.run(m, other);  // in place
  CHECK_FALSE(st.read_from_file);
  CHECK(h.out.size() == 1);
  CHECK(h.space[0] == std::byte{'q'});
}

namespace {
// libfuse's shape of open: not a corofuse handler. Before the signature check it was silently
// ignored (and every OPEN succeeded); now dispatch<libfuse_style_open> does not compile.
struct libfuse_style_open {
  cf::result<cf::open_reply> open(cf::context&, cf::ino, cf::file_info&) { return cf::error(EACCES); }
};
struct only_lookup {
  cf::result<cf::entry> lookup(cf::context&, cf::ino, std::string_view) { return cf::error(ENOENT); }
};
}  // namespace

TEST_CASE("handler signatures: a member named like a handler must match", "[fs][dispatch]") {
  namespace h = corofuse::handlers;
  STATIC_REQUIRE(h::has_member_open<libfuse_style_open>);
  STATIC_REQUIRE_FALSE(h::open<libfuse_style_open>);
  STATIC_REQUIRE(h::open<recording_fs>);
  STATIC_REQUIRE(h::read<recording_fs>);  // a task-returning handler
  STATIC_REQUIRE(h::readdir<recording_fs>);
  STATIC_REQUIRE(h::read<slice_fs>);  // result<file_slice>
  STATIC_REQUIRE(h::read<mixed_fs>);  // result<read_reply>
  STATIC_REQUIRE(h::signatures_match<recording_fs>());
  STATIC_REQUIRE(h::signatures_match<extended_fs>());
  STATIC_REQUIRE(h::signatures_match<only_lookup>());
  STATIC_REQUIRE_FALSE(h::has_member_getattr<only_lookup>);
}

TEST_CASE("dispatch: GETXATTR's name survives a value written over the request (ring payload)", "[fs][dispatch]") {
  // On the ring the request and the reply share the payload: write the value first, then look
  // at the name, as a careless handler might.
  struct overwriting_fs {
    std::string seen;
    cf::result<std::size_t> getxattr(cf::context&, cf::ino, std::string_view name, std::span<std::byte> buf) {
      if (buf.empty()) return std::size_t{10};
      std::memset(buf.data(), 'V', 10);
      seen = std::string(name);
      return std::size_t{10};
    }
  } fs;
  harness h;
  abi::getxattr_in g{64, 0};
  message m(abi::opcode::getxattr, &g, sizeof g, with_nul("user.name"));
  // The ring form: parse from an entry whose payload is also the reply buffer.
  corofuse::testing::ring_entry e(m, sizeof g);
  proto::request req;
  REQUIRE(proto::parse_ring_entry(e.hdr, e.payload, e.payload.size(), req) == proto::parse_error::none);
  proto::reply_buffer out(e.payload);
  auto st = io::sync_wait(h.ring, cf::dispatch(fs, h.ctx, req, out));
  CHECK(st.error == 0);
  CHECK(fs.seen == "user.name");
}

TEST_CASE("dispatch: READDIRPLUS from readdir's listing: lookups asked only for entries that fit, never for . and ..", "[fs][dispatch]") {
  namespace h = corofuse::handlers;
  struct plus_fs {
    std::vector<std::uint64_t> looked_up;
    std::vector<std::string> names = {".", "..", "f2", "f3", "f4", "gone", "f6", "f7", "f8", "f9"};
    auto readdir(cf::context&, cf::ino, cf::file_info&, off_t off) {
      auto entries = std::views::iota(static_cast<std::uint64_t>(off), std::uint64_t{10}) | std::views::transform([this](std::uint64_t i) {
                       return cf::dirplus_entry{names[i], 100 + i, i < 2 ? std::uint32_t{DT_DIR} : std::uint32_t{DT_REG}, i + 1, [this, i] {
                                                  looked_up.push_back(i);
                                                  cf::entry e;
                                                  if (names[i] == "gone") return e;  // went away meanwhile: no attributes
                                                  e.ino = 100 + i;
                                                  e.attr.st_mode = S_IFREG | 0644;
                                                  e.attr.st_size = static_cast<off_t>(i);
                                                  return e;
                                                }};
                     });
      return cf::result<decltype(entries)>(std::move(entries));
    }
  } fs;
  STATIC_REQUIRE(h::readdirplus<plus_fs>);
  harness hr;
  abi::read_in r{};
  std::size_t four = 0;
  for (std::size_t i = 0; i < 4; ++i) four += abi::direntplus_size(fs.names[i].size());
  r.size = static_cast<std::uint32_t>(four + 10);  // room for ".", "..", "f2", "f3"
  REQUIRE(hr.run(fs, message(abi::opcode::readdirplus, &r, sizeof r)).error == 0);
  CHECK(fs.looked_up == std::vector<std::uint64_t>{2, 3});
  REQUIRE(hr.out.size() == four);
  std::vector<abi::direntplus> got;
  for (std::size_t at = 0; at < hr.out.size();) {
    abi::direntplus d{};
    std::memcpy(&d, hr.space.data() + at, sizeof d);
    got.push_back(d);
    at += abi::direntplus_size(d.dirent.namelen);
  }
  REQUIRE(got.size() == 4);
  CHECK(got[0].entry.nodeid == 0);  // "." and "..": the kernel ignores their attributes
  CHECK(got[0].dirent.ino == 100);
  CHECK(got[1].entry.nodeid == 0);
  CHECK(got[1].dirent.ino == 101);
  CHECK(got[2].entry.nodeid == 102);
  CHECK(got[2].entry.attr.size == 2);
  CHECK(got[3].dirent.off == 4);  // resumes after f3

  // From the next offset: an entry whose lookup finds nothing goes without attributes.
  fs.looked_up.clear();
  r.offset = 4;
  r.size = 4096;
  hr.out.clear();
  REQUIRE(hr.run(fs, message(abi::opcode::readdirplus, &r, sizeof r)).error == 0);
  CHECK(fs.looked_up == std::vector<std::uint64_t>{4, 5, 6, 7, 8, 9});
  abi::direntplus f4{}, gone{};
  std::memcpy(&f4, hr.space.data(), sizeof f4);
  std::memcpy(&gone, hr.space.data() + abi::direntplus_size(2), sizeof gone);
  CHECK(f4.entry.nodeid == 104);
  CHECK(gone.entry.nodeid == 0);
  CHECK(gone.dirent.ino == 105);

  // READDIR from the same listing asks for no lookup at all.
  fs.looked_up.clear();
  r.offset = 0;
  hr.out.clear();
  REQUIRE(hr.run(fs, message(abi::opcode::readdir, &r, sizeof r)).error == 0);
  CHECK(fs.looked_up.empty());
  CHECK(hr.out.size() > 0);
}

TEST_CASE("dispatch: a listing of plain entries serves READDIR only; a locked_listing holds its lock while packed", "[fs][dispatch]") {
  namespace h = corofuse::handlers;
  struct locked_fs {
    std::mutex m;
    bool held_while_packing = false;
    std::array<cf::dir_entry, 2> all = {{{"a", 5, DT_REG, 1}, {"b", 6, DT_REG, 2}}};
    auto readdir(cf::context&, cf::ino, cf::file_info&, off_t off) {
      auto view = std::span(all).subspan(static_cast<std::size_t>(off)) | std::views::transform([this](const cf::dir_entry& e) {
                    held_while_packing = !m.try_lock();
                    if (!held_while_packing) m.unlock();
                    return e;
                  });
      return cf::result<cf::locked_listing<std::unique_lock<std::mutex>, decltype(view)>>({std::unique_lock(m), view});
    }
  } fs;
  STATIC_REQUIRE(h::readdir<locked_fs>);
  STATIC_REQUIRE(!h::readdirplus<locked_fs>);
  harness hr;
  abi::read_in r{};
  r.size = 4096;
  REQUIRE(hr.run(fs, message(abi::opcode::readdir, &r, sizeof r)).error == 0);
  CHECK(hr.out.size() == 2 * abi::dirent_size(1));
  CHECK(fs.held_while_packing);
  CHECK(fs.m.try_lock());  // and released once the reply was packed
  fs.m.unlock();
  CHECK(hr.run(fs, message(abi::opcode::readdirplus, &r, sizeof r)).error == ENOSYS);
}

TEST_CASE("dispatch: FSYNCDIR, OPENDIR and RELEASEDIR reach their handlers; NOTIFY_REPLY is never answered", "[fs][dispatch]") {
  struct dir_fs {
    std::vector<std::string> calls;
    cf::result<cf::open_reply> opendir(cf::context&, cf::ino i, int) {
      calls.push_back("opendir " + std::to_string(i));
      cf::open_reply r;
      r.fh = 5;
      r.cache_dir = true;
      return r;
    }
    cf::result<> fsyncdir(cf::context&, cf::ino, cf::file_info& fi, bool datasync) {
      calls.push_back("fsyncdir " + std::to_string(fi.fh) + (datasync ? " data" : " all"));
      return cf::ok();
    }
    cf::result<> releasedir(cf::context&, cf::ino, cf::file_info& fi) {
      calls.push_back("releasedir " + std::to_string(fi.fh));
      return cf::ok();
    }
  } fs;
  harness h;
  abi::open_in o{O_RDONLY | O_DIRECTORY, 0};
  CHECK(h.run(fs, message(abi::opcode::opendir, &o, sizeof o)).error == 0);
  CHECK(fs.calls.back() == "opendir 7");
  auto oo = h.reply_as<abi::open_out>();
  CHECK(oo.fh == 5);
  CHECK(oo.open_flags == abi::fopen::cache_dir);
  abi::fsync_in f{5, 0, 0};
  CHECK(h.run(fs, message(abi::opcode::fsyncdir, &f, sizeof f)).error == 0);
  CHECK(fs.calls.back() == "fsyncdir 5 all");
  abi::release_in r{};
  r.fh = 5;
  CHECK(h.run(fs, message(abi::opcode::releasedir, &r, sizeof r)).error == 0);
  CHECK(fs.calls.back() == "releasedir 5");
  abi::notify_retrieve_in nr{};
  CHECK(h.run(fs, message(abi::opcode::notify_reply, &nr, sizeof nr, "data")).no_reply);
}

namespace {
// Restricted ioctls: a GETFLAGS-like command answered with 4 bytes, an echo, and one that lies.
struct ioctl_fs {
  std::vector<std::string> calls;
  cf::result<cf::ioctl_reply> ioctl(cf::context&, cf::ino i, cf::file_info& fi, unsigned cmd, std::uint64_t arg,
                                    std::span<const std::byte> in, std::span<std::byte> out, bool is_dir) {
    calls.push_back("ioctl " + std::to_string(i) + " fh=" + std::to_string(fi.fh) + " cmd=" + std::to_string(cmd) +
                    " arg=" + std::to_string(arg) + " in=" + std::to_string(in.size()) + " out=" + std::to_string(out.size()) +
                    (is_dir ? " dir" : ""));
    if (cmd == 1) {  // answers 4 bytes
      if (out.size() < 4) return cf::error(EINVAL);
      std::uint32_t v = 0x10;
      std::memcpy(out.data(), &v, 4);
      return cf::ioctl_reply{0, 4};
    }
    if (cmd == 2) {  // echoes the input, returns its length
      std::size_t n = std::min(in.size(), out.size());
      std::memcpy(out.data(), in.data(), n);
      return cf::ioctl_reply{static_cast<std::int32_t>(n), n};
    }
    if (cmd == 3) return cf::ioctl_reply{0, out.size() + 1};  // more than it was given
    return cf::error(ENOTTY);
  }
};
}  // namespace

TEST_CASE("dispatch: IOCTL, restricted only: the output follows ioctl_out; input and output both reach the handler", "[fs][dispatch]") {
  harness h;
  ioctl_fs fs;
  abi::ioctl_in in{};
  in.fh = 12;
  in.cmd = 1;
  in.arg = 0x7000;
  in.out_size = 4;
  CHECK(h.run(fs, message(abi::opcode::ioctl, &in, sizeof in)).error == 0);
  CHECK(fs.calls.back() == "ioctl 7 fh=12 cmd=1 arg=28672 in=0 out=4");
  REQUIRE(h.out.size() == sizeof(abi::ioctl_out) + 4);
  auto head = h.reply_as<abi::ioctl_out>();
  CHECK(head.result == 0);
  CHECK(head.flags == 0);
  std::uint32_t v = 0;
  std::memcpy(&v, h.space.data() + sizeof(abi::ioctl_out), 4);
  CHECK(v == 0x10);

  // Input and output of the same size; on the ring they share the payload.
  in.cmd = 2;
  in.in_size = 5;
  in.out_size = 5;
  in.flags = abi::ioctl_flag::dir;
  CHECK(h.run(fs, message(abi::opcode::ioctl, &in, sizeof in, "hello")).error == 0);
  CHECK(fs.calls.back() == "ioctl 7 fh=12 cmd=2 arg=28672 in=5 out=5 dir");
  CHECK(h.reply_as<abi::ioctl_out>().result == 5);
  CHECK(std::string(reinterpret_cast<const char*>(h.space.data()) + sizeof(abi::ioctl_out), 5) == "hello");

  in.flags = 0;
  in.cmd = 3;
  CHECK(h.run(fs, message(abi::opcode::ioctl, &in, sizeof in, "hello")).error == EIO);
  in.cmd = 4;
  CHECK(h.run(fs, message(abi::opcode::ioctl, &in, sizeof in, "hello")).error == ENOTTY);

  // Unrestricted (the server could name client memory) and 32-bit callers are not served.
  const auto before = fs.calls.size();
  in.cmd = 1;
  in.flags = abi::ioctl_flag::unrestricted;
  CHECK(h.run(fs, message(abi::opcode::ioctl, &in, sizeof in, "hello")).error == ENOSYS);
  in.flags = abi::ioctl_flag::compat;
  CHECK(h.run(fs, message(abi::opcode::ioctl, &in, sizeof in, "hello")).error == ENOTTY);
  CHECK(fs.calls.size() == before);

  // Without a handler: ENOTTY, what an ioctl nobody knows gives.
  empty_fs none;
  CHECK(h.run(none, message(abi::opcode::ioctl, &in, sizeof in, "hello")).error == ENOTTY);
}
