// The node layer (corofuse/node.hpp) driven in-process through the test kit: lookup counts and
// FORGET, ids and generations, listings (READDIR and READDIRPLUS), hard links, path(), rename's
// rules, making and removing names, orphaned(), O_TMPFILE, SETATTR (with the setuid/setgid rules),
// async node operations, what a read-only tree offers, unknown ids, and the tree shared by threads
// that each drive it. Every opcode the tree answers appears in at least one test.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <latch>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "corofuse/corofuse.hpp"
#include "corofuse/node.hpp"
#include "corofuse/testing.hpp"

namespace cf = corofuse;
namespace abi = corofuse::abi;
namespace kit = corofuse::testing;
namespace request = corofuse::testing::request;
using cf::node::made;
using kit::with_nul;

namespace {

// ---- node types ---------------------------------------------------------------------------------

// A writable node with every operation the tree knows, and counters a test reads.
struct mem_node : cf::node::inode<mem_node> {
  using inode::inode;  // from made (makeable: clients may make files) and from a mode

  mutable std::mutex mutex;
  std::string data;
  std::map<std::string, std::string, std::less<>> xattrs;
  std::atomic<int> orphans{0}, truncates{0}, opens{0}, releases{0}, fsyncs{0}, flushes{0};
  std::atomic<off_t> last_truncate{-1};

  off_t size() const {
    std::lock_guard lock(mutex);
    return static_cast<off_t>(data.size());
  }
  cf::result<cf::open_reply> open(cf::context&, int) {
    opens++;
    cf::open_reply r;
    r.fh = 1000 + id();
    return r;
  }
  cf::result<> release(cf::context&, cf::file_info&) {
    releases++;
    return cf::ok();
  }
  cf::result<std::size_t> read(cf::context&, cf::file_info&, std::span<std::byte> out, off_t off) {
    if (off < 0) return cf::error(EINVAL);
    std::lock_guard lock(mutex);
    const std::size_t from = std::min(static_cast<std::size_t>(off), data.size());
    const std::size_t n = std::min(out.size(), data.size() - from);
    std::memcpy(out.data(), data.data() + from, n);
    return n;
  }
  cf::result<std::size_t> write(cf::context&, cf::file_info&, std::span<const std::byte> in, off_t off) {
    if (off < 0) return cf::error(EINVAL);
    std::lock_guard lock(mutex);
    const auto at = static_cast<std::size_t>(off);
    if (at + in.size() > data.size()) data.resize(at + in.size());
    std::memcpy(data.data() + at, in.data(), in.size());
    return in.size();
  }
  cf::result<> truncate(cf::context&, off_t size) {
    truncates++;
    last_truncate = size;
    std::lock_guard lock(mutex);
    data.resize(static_cast<std::size_t>(size));
    return cf::ok();
  }
  cf::result<> fsync(cf::context&, cf::file_info&, bool) {
    fsyncs++;
    return cf::ok();
  }
  cf::result<> flush(cf::context&, cf::file_info&) {
    flushes++;
    return cf::ok();
  }
  cf::result<> fallocate(cf::context&, cf::file_info&, int mode, off_t off, off_t len) {
    if (mode != 0) return cf::error(EOPNOTSUPP);
    std::lock_guard lock(mutex);
    if (static_cast<std::size_t>(off + len) > data.size()) data.resize(static_cast<std::size_t>(off + len));
    return cf::ok();
  }
  cf::result<off_t> lseek(cf::context&, cf::file_info&, off_t off, int whence) {
    std::lock_guard lock(mutex);
    const auto size = static_cast<off_t>(data.size());
    if (off >= size) return cf::error(ENXIO);
    if (whence == SEEK_DATA) return off;
    if (whence == SEEK_HOLE) return size;
    return cf::error(EINVAL);
  }
  cf::result<std::size_t> getxattr(cf::context&, std::string_view name, std::span<std::byte> out) {
    std::lock_guard lock(mutex);
    auto it = xattrs.find(name);
    if (it == xattrs.end()) return cf::error(ENODATA);
    if (out.empty()) return it->second.size();
    if (out.size() < it->second.size()) return cf::error(ERANGE);
    std::memcpy(out.data(), it->second.data(), it->second.size());
    return it->second.size();
  }
  cf::result<std::size_t> listxattr(cf::context&, std::span<std::byte> out) {
    std::lock_guard lock(mutex);
    std::string all;
    for (const auto& [k, v] : xattrs) all.append(k).push_back('\0');
    if (out.empty()) return all.size();
    if (out.size() < all.size()) return cf::error(ERANGE);
    std::memcpy(out.data(), all.data(), all.size());
    return all.size();
  }
  cf::result<> setxattr(cf::context&, std::string_view name, std::span<const std::byte> value, int flags) {
    std::lock_guard lock(mutex);
    auto it = xattrs.find(name);
    if ((flags & XATTR_CREATE) && it != xattrs.end()) return cf::error(EEXIST);
    if ((flags & XATTR_REPLACE) && it == xattrs.end()) return cf::error(ENODATA);
    xattrs[std::string(name)] = std::string(reinterpret_cast<const char*>(value.data()), value.size());
    return cf::ok();
  }
  cf::result<> removexattr(cf::context&, std::string_view name) {
    std::lock_guard lock(mutex);
    return xattrs.erase(std::string(name)) ? cf::ok() : cf::result<>(cf::error(ENODATA));
  }
  cf::result<struct statvfs> statfs(cf::context&) {
    struct statvfs v {};
    v.f_bsize = v.f_frsize = 4096;
    v.f_blocks = 1000;
    v.f_bfree = v.f_bavail = 600;
    v.f_files = 1234;
    v.f_namemax = 255;
    return v;
  }
  void orphaned() {
    orphans++;
    all_orphans++;
  }
  static inline std::atomic<int> all_orphans{0};  // of every mem_node: for nodes a test cannot reach
};

// A read-only node: not constructible from `made`, no write, no truncate. It counts its opens and
// releases (hello's node has an open hook too).
struct ro_node : cf::node::inode<ro_node> {
  explicit ro_node(mode_t mode, std::string text = {}) : inode(mode), text(std::move(text)) {}
  std::string text;
  std::atomic<int> opens{0}, releases{0};

  off_t size() const { return static_cast<off_t>(text.size()); }
  cf::result<cf::open_reply> open(cf::context&, int) {
    opens++;
    return cf::open_reply{};
  }
  cf::result<> release(cf::context&, cf::file_info&) {
    releases++;
    return cf::ok();
  }
  cf::result<std::size_t> read(cf::context&, cf::file_info&, std::span<std::byte> out, off_t off) {
    const std::size_t from = std::min(static_cast<std::size_t>(std::max<off_t>(off, 0)), text.size());
    const std::size_t n = std::min(out.size(), text.size() - from);
    std::memcpy(out.data(), text.data() + from, n);
    return n;
  }
};

// A node whose data lives in a file descriptor and whose READ, WRITE and FSYNC co_await real I/O
// on the request's ring.
struct async_node : cf::node::inode<async_node> {
  async_node(mode_t mode, int fd) : inode(mode), fd(fd) {}
  int fd;

  off_t size() const {
    struct stat st {};
    return fd >= 0 && ::fstat(fd, &st) == 0 ? st.st_size : 0;
  }
  cf::io::task<cf::result<std::size_t>> read(cf::context& ctx, cf::file_info&, std::span<std::byte> out, off_t off) {
    int n = co_await ctx.read_fixed(fd, out, off);
    if (n < 0) co_return cf::error(-n);
    co_return static_cast<std::size_t>(n);
  }
  cf::io::task<cf::result<std::size_t>> write(cf::context& ctx, cf::file_info&, std::span<const std::byte> in, off_t off) {
    int n = co_await ctx.write_fixed(fd, in, off);
    if (n < 0) co_return cf::error(-n);
    co_return static_cast<std::size_t>(n);
  }
  cf::io::task<cf::result<>> fsync(cf::context& ctx, cf::file_info&, bool datasync) {
    int n = co_await cf::io::fsync(ctx.ring(), fd, datasync);
    if (n < 0) co_return cf::error(-n);
    co_return cf::ok();
  }
};

// A node made with its directory (node types that share state with it): records the directory.
struct dir_aware_node : cf::node::inode<dir_aware_node> {
  dir_aware_node(const made& m, dir_aware_node& dir) : inode(m), made_in(dir.id()) {}
  explicit dir_aware_node(mode_t mode) : inode(mode) {}
  cf::ino made_in = 0;
};

// A node whose open() asks the tree for its own path (a node may use the tree's read side from
// its operations: they "run without any of the tree's locks held").
struct path_asking_node : cf::node::inode<path_asking_node> {
  using inode::inode;
  static inline cf::node::tree<path_asking_node>* owner = nullptr;
  std::string seen;
  cf::result<cf::open_reply> open(cf::context&, int) {
    auto p = owner->path(*this);
    seen = p ? *p : "error " + std::to_string(p.error_code());
    return cf::open_reply{};
  }
};

template <typename T> concept asks_init_flags = requires(T& x) { x.init_flags(); };

// What a node starts with: `mode`, owned by the serving user.
made made_of(mode_t mode) { return made{mode, ::getuid(), ::getgid(), 0, {}, {}}; }

using mem_tree = cf::node::tree<mem_node>;
using ro_tree = cf::node::tree<ro_node>;
using async_tree = cf::node::tree<async_node>;

// ---- request builders the kit has not ------------------------------------------------------------

kit::message mknod_msg(std::uint64_t parent, std::string_view name, std::uint32_t mode, std::uint32_t rdev = 0) {
  return request::with(abi::opcode::mknod, parent, abi::mknod_in{mode, rdev, 0, 0}, with_nul(std::string(name)));
}
kit::message symlink_msg(std::uint64_t parent, std::string_view name, std::string_view target) {
  return request::bare(abi::opcode::symlink, parent, with_nul(std::string(name)) + with_nul(std::string(target)));
}
kit::message link_msg(std::uint64_t node, std::uint64_t newparent, std::string_view name) {
  return request::with(abi::opcode::link, newparent, abi::link_in{node}, with_nul(std::string(name)));
}
kit::message rename_msg(std::uint64_t parent, std::string_view name, std::uint64_t newparent, std::string_view newname) {
  return request::with(abi::opcode::rename, parent, abi::rename_in{newparent},
                       with_nul(std::string(name)) + with_nul(std::string(newname)));
}
kit::message rename2_msg(std::uint64_t parent, std::string_view name, std::uint64_t newparent, std::string_view newname,
                         std::uint32_t flags) {
  return request::with(abi::opcode::rename2, parent, abi::rename2_in{newparent, flags, 0},
                       with_nul(std::string(name)) + with_nul(std::string(newname)));
}
kit::message setattr_msg(std::uint64_t node, const abi::setattr_in& s) { return request::with(abi::opcode::setattr, node, s); }
kit::message tmpfile_msg(std::uint64_t parent, std::uint32_t mode, std::uint32_t flags) {
  return request::with(abi::opcode::tmpfile, parent, abi::create_in{flags, mode, 0, 0}, with_nul("/"));
}
kit::message create_msg(std::uint64_t parent, std::string_view name, std::uint32_t mode, std::uint32_t flags, std::uint32_t open_flags) {
  return request::with(abi::opcode::create, parent, abi::create_in{flags, mode, 0, open_flags}, with_nul(std::string(name)));
}
kit::message open_msg(std::uint64_t node, std::uint32_t flags, std::uint32_t open_flags) {
  return request::with(abi::opcode::open, node, abi::open_in{flags, open_flags});
}
kit::message write_msg(std::uint64_t node, std::uint64_t fh, std::uint64_t off, std::string_view data, std::uint32_t write_flags) {
  abi::write_in w{};
  w.fh = fh;
  w.offset = off;
  w.size = static_cast<std::uint32_t>(data.size());
  w.write_flags = write_flags;
  return request::with(abi::opcode::write, node, w, std::string(data));
}
kit::message batch_forget_msg(const std::vector<abi::forget_one>& items) {
  abi::batch_forget_in b{static_cast<std::uint32_t>(items.size()), 0};
  return request::with(abi::opcode::batch_forget, 0, b,
                       std::string(reinterpret_cast<const char*>(items.data()), items.size() * sizeof(abi::forget_one)));
}
kit::message readlink_msg(std::uint64_t node) { return request::bare(abi::opcode::readlink, node); }
kit::message fsync_msg(std::uint64_t node, std::uint64_t fh, bool datasync) {
  return request::with(abi::opcode::fsync, node, abi::fsync_in{fh, datasync ? abi::fsync_flag::fdatasync : 0u, 0});
}
kit::message fallocate_msg(std::uint64_t node, std::uint64_t fh, std::uint32_t mode, std::uint64_t off, std::uint64_t len) {
  return request::with(abi::opcode::fallocate, node, abi::fallocate_in{fh, off, len, mode, 0});
}
kit::message lseek_msg(std::uint64_t node, std::uint64_t fh, std::uint64_t off, std::uint32_t whence) {
  return request::with(abi::opcode::lseek, node, abi::lseek_in{fh, off, whence, 0});
}
kit::message getxattr_msg(std::uint64_t node, std::string_view name, std::uint32_t size) {
  return request::with(abi::opcode::getxattr, node, abi::getxattr_in{size, 0}, with_nul(std::string(name)));
}
kit::message listxattr_msg(std::uint64_t node, std::uint32_t size) {
  return request::with(abi::opcode::listxattr, node, abi::getxattr_in{size, 0});
}
kit::message setxattr_msg(std::uint64_t node, std::string_view name, std::string_view value, std::uint32_t flags = 0) {
  return request::with(abi::opcode::setxattr, node, abi::setxattr_in{static_cast<std::uint32_t>(value.size()), flags, 0, 0},
                       with_nul(std::string(name)) + std::string(value));
}
kit::message removexattr_msg(std::uint64_t node, std::string_view name) {
  return request::bare(abi::opcode::removexattr, node, with_nul(std::string(name)));
}

// ---- reply helpers ----------------------------------------------------------------------------------

abi::entry_out entry_of(const kit::reply& r) {
  INFO("error " << r.error);
  REQUIRE(r.error == 0);
  return r.as<abi::entry_out>();
}
struct made_and_opened {
  abi::entry_out e;
  abi::open_out o;
};
made_and_opened opened_of(const kit::reply& r) {
  INFO("error " << r.error);
  REQUIRE(r.error == 0);
  REQUIRE(r.bytes.size() == sizeof(abi::entry_out) + sizeof(abi::open_out));
  made_and_opened m{r.as<abi::entry_out>(), {}};
  std::memcpy(&m.o, r.bytes.data() + sizeof(abi::entry_out), sizeof m.o);
  return m;
}
template <typename Fs>
abi::entry_out lookup(kit::driver<Fs>& d, std::uint64_t parent, std::string_view name) {
  return entry_of(d.send(request::lookup(parent, name)));
}
template <typename Fs>
abi::attr attr_of(kit::driver<Fs>& d, std::uint64_t node) {
  auto r = d.send(request::getattr(node));
  INFO("GETATTR of " << node << ": error " << r.error);
  REQUIRE(r.error == 0);
  return r.template as<abi::attr_out>().attr;
}
template <typename Fs>
int error_of(kit::driver<Fs>& d, kit::message m) {
  return d.send(std::move(m)).error;
}
std::vector<std::string> names_of(const std::vector<kit::reply::entry>& entries) {
  std::vector<std::string> out;
  for (const auto& e : entries) out.push_back(e.name);
  return out;
}
std::shared_ptr<mem_node> file_node(mode_t mode = S_IFREG | 0644, std::string text = {}) {
  auto n = std::make_shared<mem_node>(made_of(mode));
  n->data = std::move(text);
  return n;
}
std::shared_ptr<mem_node> dir_node(mode_t mode = 0755) { return std::make_shared<mem_node>(made_of(static_cast<mode_t>(S_IFDIR | mode))); }

std::int64_t ns_of(std::uint64_t sec, std::uint32_t nsec) { return static_cast<std::int64_t>(sec) * 1000000000 + nsec; }
std::int64_t now_ns() {
  const timespec t = cf::node::now();
  return static_cast<std::int64_t>(t.tv_sec) * 1000000000 + t.tv_nsec;
}

}  // namespace

// ---- lookup counts, FORGET, ids, generations ------------------------------------------------------

TEST_CASE("node tree: a node looked up N times stays known until FORGET of N; more saturates; then ESTALE", "[node][forget]") {
  mem_tree t;
  kit::driver<mem_tree> d(t);
  auto f = file_node(S_IFREG | 0644, "abc");
  REQUIRE(t.add(t.root(), "f", f));
  CHECK(t.known() == 1);  // the root only: tree.add gives no id to the kernel

  const auto e = lookup(d, cf::root_ino, "f");
  CHECK(e.nodeid == f->id());
  for (int i = 0; i < 2; ++i) CHECK(lookup(d, cf::root_ino, "f").nodeid == e.nodeid);
  CHECK(t.known() == 2);

  auto forgot = d.send(request::forget(e.nodeid, 2));
  CHECK_FALSE(forgot.answered);
  CHECK(t.known() == 2);
  CHECK(attr_of(d, e.nodeid).size == 3);
  d.send(request::forget(e.nodeid, 1));
  CHECK(t.known() == 1);
  CHECK(d.send(request::getattr(e.nodeid)).error == ESTALE);
  CHECK(d.send(request::open(e.nodeid, O_RDONLY)).error == ESTALE);

  // Still named: looked up again, the same id.
  CHECK(lookup(d, cf::root_ino, "f").nodeid == e.nodeid);
  CHECK(t.known() == 2);

  // A FORGET of more than was given saturates at 0 (the count does not wrap).
  d.send(request::forget(e.nodeid, 100));
  CHECK(t.known() == 1);
  CHECK(d.send(request::getattr(e.nodeid)).error == ESTALE);
  CHECK(lookup(d, cf::root_ino, "f").nodeid == e.nodeid);
  d.send(request::forget(e.nodeid, 1));  // one given, one forgotten: gone again
  CHECK(t.known() == 1);

  // The root is never forgotten.
  d.send(request::forget(cf::root_ino, 7));
  CHECK(t.known() == 1);
  CHECK(attr_of(d, cf::root_ino).ino == cf::root_ino);
  // A FORGET of an id the kernel does not hold is ignored.
  CHECK_FALSE(d.send(request::forget(4242, 1)).answered);
  CHECK(t.known() == 1);
}

TEST_CASE("node tree: BATCH_FORGET forgets each listed node by its own count", "[node][forget]") {
  mem_tree t;
  kit::driver<mem_tree> d(t);
  for (const char* n : {"a", "b", "c"}) REQUIRE(t.add(t.root(), n, file_node()));
  const auto a = lookup(d, 1, "a").nodeid;
  lookup(d, 1, "a");
  const auto b = lookup(d, 1, "b").nodeid;
  const auto c = lookup(d, 1, "c").nodeid;
  lookup(d, 1, "c");
  lookup(d, 1, "c");
  CHECK(t.known() == 4);

  auto r = d.send(batch_forget_msg({{a, 2}, {b, 1}, {c, 1}}));
  CHECK_FALSE(r.answered);
  CHECK(t.known() == 2);
  CHECK(d.send(request::getattr(a)).error == ESTALE);
  CHECK(d.send(request::getattr(b)).error == ESTALE);
  CHECK(d.send(request::getattr(c)).error == 0);
  d.send(batch_forget_msg({{c, 1}, {c, 1}, {999, 3}}));  // the same node twice, an unknown one
  CHECK(t.known() == 1);
  CHECK(d.send(request::getattr(c)).error == ESTALE);
}

TEST_CASE("node tree: ids are never reused; every node of a tree has the tree's nonzero generation", "[node][forget]") {
  mem_tree t;
  kit::driver<mem_tree> d(t);
  std::vector<std::uint64_t> ids;
  for (int i = 0; i < 60; ++i) {
    const std::string name = "x" + std::to_string(i % 3);
    std::uint64_t id = 0;
    switch (i % 4) {
      case 0: {  // CREATE, RELEASE, UNLINK, FORGET
        auto c = opened_of(d.send(request::create(1, name, S_IFREG | 0644, O_RDWR)));
        id = c.e.nodeid;
        CHECK(d.send(request::release(id, c.o.fh)).error == 0);
        CHECK(error_of(d, request::unlink(1, name)) == 0);
        break;
      }
      case 1:  // MKDIR, RMDIR
        id = entry_of(d.send(request::mkdir(1, name, 0755))).nodeid;
        CHECK(error_of(d, request::rmdir(1, name)) == 0);
        break;
      case 2:  // SYMLINK, UNLINK
        id = entry_of(d.send(symlink_msg(1, name, "t"))).nodeid;
        CHECK(error_of(d, request::unlink(1, name)) == 0);
        break;
      default: {  // tree.add and tree.remove from the filesystem's side, then a LOOKUP in between
        auto n = file_node();
        REQUIRE(t.add(t.root(), name, n));
        id = lookup(d, 1, name).nodeid;
        CHECK(id == n->id());
        REQUIRE(t.remove(t.root(), name));
        break;
      }
    }
    d.send(request::forget(id, 1));
    ids.push_back(id);
  }
  CHECK(t.known() == 1);
  for (std::size_t i = 1; i < ids.size(); ++i) {
    INFO("id " << i << ": " << ids[i] << " after " << ids[i - 1]);
    CHECK(ids[i] > ids[i - 1]);
  }
  CHECK(ids.front() > cf::root_ino);

  // The generation: one for the whole tree, nonzero, the same in every reply that carries it.
  const std::uint64_t g = t.root().generation();
  CHECK(g != 0);
  auto dir = entry_of(d.send(request::mkdir(1, "dir", 0755)));
  auto file = opened_of(d.send(request::create(dir.nodeid, "file", S_IFREG | 0600, O_RDWR))).e;
  auto fifo = entry_of(d.send(mknod_msg(dir.nodeid, "fifo", S_IFIFO | 0600)));
  auto ln = entry_of(d.send(symlink_msg(dir.nodeid, "ln", "file")));
  auto hard = entry_of(d.send(link_msg(file.nodeid, 1, "hard")));
  auto tmp = opened_of(d.send(tmpfile_msg(dir.nodeid, S_IFREG | 0600, O_RDWR))).e;
  for (const auto& e : {dir, file, fifo, ln, hard, tmp}) CHECK(e.generation == g);
  auto added = file_node();
  REQUIRE(t.add(t.root(), "added", added));
  CHECK(added->generation() == g);
  CHECK(lookup(d, 1, "added").generation == g);
  for (const auto& e : d.send(request::readdirplus(dir.nodeid, 0, 0)).plus_entries())
    if (e.lookup.nodeid) CHECK(e.lookup.generation == g);

  // A tree made after this one (a restarted server) must not give the same (id, generation) to
  // another file: an NFS handle of the old file must go stale, not name the new one.
  mem_tree later;
  auto again = file_node();
  REQUIRE(later.add(later.root(), "other", again));
  INFO("first tree's generation " << g << ", the next tree's " << later.root().generation() << "; ids " << again->id());
  // Two trees made within the same second (a server restarted at once) must not repeat (id,
  // generation) pairs: the generation comes from the clock in nanoseconds (a regression: it was
  // whole seconds).
  CHECK(later.root().generation() != g);
}

// ---- listings -----------------------------------------------------------------------------------

TEST_CASE("node tree: READDIR lists ., .., then children in the order they were named, resuming from any entry", "[node][readdir]") {
  mem_tree t;
  kit::driver<mem_tree> d(t);
  const auto dir = entry_of(d.send(request::mkdir(1, "d", 0755)));
  auto dnode = t.at("d");
  REQUIRE(dnode);
  for (const char* n : {"zeta", "alpha", "mid"}) REQUIRE(t.add(*dnode, n, file_node()));
  REQUIRE(t.add(*dnode, "sub", dir_node()));

  // OPENDIR and RELEASEDIR: the tree has no handler, the kernel's defaults answer (success).
  auto od = d.send(request::opendir(dir.nodeid));
  REQUIRE(od.error == 0);
  const auto fh = od.as<abi::open_out>().fh;

  auto all = d.send(request::readdir(dir.nodeid, fh, 0)).entries();
  CHECK(names_of(all) == std::vector<std::string>{".", "..", "zeta", "alpha", "mid", "sub"});
  REQUIRE(all.size() == 6);
  CHECK(all[0].ino == dir.nodeid);
  CHECK(all[1].ino == cf::root_ino);
  CHECK(all[0].type == DT_DIR);
  CHECK(all[1].type == DT_DIR);
  CHECK(all[2].type == DT_REG);
  CHECK(all[5].type == DT_DIR);
  CHECK(all[2].ino == t.at("d/zeta")->id());

  // Resuming from each entry's offset gives exactly the entries after it.
  for (std::size_t i = 0; i < all.size(); ++i) {
    auto rest = d.send(request::readdir(dir.nodeid, fh, all[i].next_offset)).entries();
    std::vector<std::string> want;
    for (std::size_t k = i + 1; k < all.size(); ++k) want.push_back(all[k].name);
    INFO("resumed after " << all[i].name);
    CHECK(names_of(rest) == want);
  }

  // A reply with room for three: ".", "..", "zeta"; names come and go before the next READDIR.
  const auto room = static_cast<std::uint32_t>(abi::dirent_size(1) + abi::dirent_size(2) + abi::dirent_size(4) + abi::dirent_size(5) - 1);
  auto first = d.send(request::readdir(dir.nodeid, fh, 0, room)).entries();
  REQUIRE(names_of(first) == std::vector<std::string>{".", "..", "zeta"});
  REQUIRE(t.remove(*dnode, "alpha"));  // not yet listed: never shown
  REQUIRE(t.remove(*dnode, "zeta"));   // the entry the listing resumes from
  REQUIRE(t.add(*dnode, "new", file_node()));
  REQUIRE(t.add(*dnode, "zeta", file_node()));  // named again: a new place at the end
  auto rest = d.send(request::readdir(dir.nodeid, fh, first.back().next_offset)).entries();
  CHECK(names_of(rest) == std::vector<std::string>{"mid", "sub", "new", "zeta"});
  // A RENAME within the directory moves the name to the end too.
  CHECK(error_of(d, rename_msg(dir.nodeid, "mid", dir.nodeid, "mid2")) == 0);
  CHECK(names_of(d.send(request::readdir(dir.nodeid, fh, 0)).entries()) ==
        std::vector<std::string>{".", "..", "sub", "new", "zeta", "mid2"});

  // ".." of the root is the root; ".." of a subdirectory is its parent.
  auto root_list = d.send(request::readdir(1, 0, 0)).entries();
  REQUIRE(root_list.size() >= 2);
  CHECK(root_list[1].ino == cf::root_ino);
  const auto sub = lookup(d, dir.nodeid, "sub");
  auto sub_list = d.send(request::readdir(sub.nodeid, 0, 0)).entries();
  REQUIRE(sub_list.size() == 2);
  CHECK(sub_list[1].ino == dir.nodeid);

  // READDIR of a file is ENOTDIR.
  const auto f = lookup(d, dir.nodeid, "new");
  CHECK(d.send(request::readdir(f.nodeid, 0, 0)).error == ENOTDIR);
  CHECK(d.send(request::release(dir.nodeid, fh, true)).error == 0);
}

TEST_CASE("node tree: READDIRPLUS counts one lookup per entry that fit, none for . and ..; FORGET drops them", "[node][readdir]") {
  mem_tree t;
  kit::driver<mem_tree> d(t);
  const auto dir = entry_of(d.send(request::mkdir(1, "many", 0755)));
  auto dnode = t.at("many");
  for (int i = 0; i < 10; ++i) REQUIRE(t.add(*dnode, "f" + std::to_string(i), file_node(S_IFREG | 0644, std::string(i, 'x'))));
  // f3 already looked up once by the kernel: the listing adds a second count.
  const auto f3 = lookup(d, dir.nodeid, "f3");
  CHECK(t.known() == 3);

  // Room for ".", "..", and four names: the fifth record does not fit.
  const auto room = static_cast<std::uint32_t>(abi::direntplus_size(1) + abi::direntplus_size(2) + 5 * abi::direntplus_size(2) - 1);
  auto first = d.send(request::readdirplus(dir.nodeid, 0, 0, room)).plus_entries();
  REQUIRE(first.size() == 6);
  CHECK(first[0].name == ".");
  CHECK(first[1].name == "..");
  CHECK(first[0].lookup.nodeid == 0);
  CHECK(first[1].lookup.nodeid == 0);
  std::vector<std::uint64_t> given;
  for (std::size_t k = 2; k < first.size(); ++k) {
    CHECK(first[k].name == "f" + std::to_string(k - 2));
    CHECK(first[k].lookup.nodeid == first[k].ino);
    CHECK(first[k].lookup.attr.size == k - 2);
    CHECK((first[k].lookup.attr.mode & S_IFMT) == S_IFREG);
    given.push_back(first[k].ino);
  }
  CHECK(t.known() == 6);  // root, many, f0..f3 (f3 counted twice)

  // FORGET of what the listing gave: f0..f2 go, f3 keeps the LOOKUP's count.
  for (auto id : given) d.send(request::forget(id, 1));
  CHECK(t.known() == 3);
  CHECK(d.send(request::getattr(given[0])).error == ESTALE);
  CHECK(attr_of(d, f3.nodeid).size == 3);
  d.send(request::forget(f3.nodeid, 1));
  CHECK(t.known() == 2);

  // The rest of the listing, resumed from the last record that fit.
  std::vector<abi::forget_one> rest_given;
  std::vector<std::string> rest_names;
  for (std::uint64_t off = first.back().next_offset;;) {
    auto more = d.send(request::readdirplus(dir.nodeid, 0, off, room)).plus_entries();
    if (more.empty()) break;
    for (const auto& e : more) {
      rest_names.push_back(e.name);
      CHECK(e.lookup.nodeid == e.ino);
      rest_given.push_back({e.ino, 1});
    }
    off = more.back().next_offset;
  }
  CHECK(rest_names == std::vector<std::string>{"f4", "f5", "f6", "f7", "f8", "f9"});
  CHECK(t.known() == 8);
  d.send(batch_forget_msg(rest_given));
  CHECK(t.known() == 2);
}

// ---- hard links and path() ----------------------------------------------------------------------

TEST_CASE("node tree: hard links count in nlink; LINK and UNLINK; path() gives the first remaining name", "[node][link]") {
  mem_tree t;
  kit::driver<mem_tree> d(t);
  auto f = file_node();
  REQUIRE(t.add(t.root(), "a", f));
  REQUIRE(t.add(t.root(), "b", f));
  CHECK(f->attributes().nlink == 2);
  const auto a = lookup(d, 1, "a");
  CHECK(a.attr.nlink == 2);
  CHECK(lookup(d, 1, "b").nodeid == a.nodeid);
  CHECK(attr_of(d, a.nodeid).nlink == 2);

  const auto sub = entry_of(d.send(request::mkdir(1, "sub", 0755)));
  const auto linked = entry_of(d.send(link_msg(a.nodeid, sub.nodeid, "c")));
  CHECK(linked.nodeid == a.nodeid);
  CHECK(linked.attr.nlink == 3);
  CHECK(attr_of(d, a.nodeid).nlink == 3);
  CHECK(lookup(d, sub.nodeid, "c").nodeid == a.nodeid);
  CHECK(*t.path(*f) == "/a");

  CHECK(error_of(d, request::unlink(1, "a")) == 0);
  CHECK(attr_of(d, a.nodeid).nlink == 2);
  CHECK(*t.path(*f) == "/b");
  CHECK(error_of(d, request::unlink(1, "b")) == 0);
  CHECK(*t.path(*f) == "/sub/c");
  CHECK(attr_of(d, a.nodeid).nlink == 1);
  CHECK(f->orphans == 0);

  // Refused links.
  CHECK(error_of(d, link_msg(sub.nodeid, 1, "dirlink")) == EPERM);    // a directory
  CHECK(error_of(d, link_msg(a.nodeid, sub.nodeid, "c")) == EEXIST);  // a taken name
  CHECK(error_of(d, link_msg(a.nodeid, a.nodeid, "x")) == ENOTDIR);   // into a file
  CHECK(error_of(d, link_msg(a.nodeid, 1, std::string(256, 'n'))) == ENAMETOOLONG);
  CHECK_FALSE(t.add(t.root(), "sub2", t.at("sub")));  // a directory has one name
  CHECK(t.add(t.root(), "sub2", t.at("sub")).error_code() == EMLINK);
  CHECK(t.add(t.root(), "sub", file_node()).error_code() == EEXIST);
  CHECK(t.add(*f, "x", file_node()).error_code() == ENOTDIR);
  CHECK(t.add(t.root(), "bad/name", file_node()).error_code() == EINVAL);
  CHECK(t.add(t.root(), "..", file_node()).error_code() == EINVAL);
  CHECK(t.add(t.root(), "y", nullptr).error_code() == EINVAL);
  // No loops: not the root, not a directory inside itself.
  CHECK(t.add(*t.at("sub"), "root", t.root().shared_from_this()).error_code() == EINVAL);
  auto outer = dir_node(), inner = dir_node();
  REQUIRE(t.add(*outer, "inner", inner));  // a subtree built before it is named
  CHECK(t.add(*inner, "outer", outer).error_code() == EINVAL);
  CHECK(t.add(*outer, "self", outer).error_code() == EINVAL);
  REQUIRE(t.add(t.root(), "outer", outer));
  CHECK(*t.path(*inner) == "/outer/inner");
  CHECK(inner->id() != outer->id());
  CHECK(lookup(d, lookup(d, 1, "outer").nodeid, "inner").nodeid == inner->id());
  CHECK(t.remove(t.root(), "nothing").error_code() == ENOENT);
  CHECK(attr_of(d, 1).nlink == 4);  // the root: ".", its name, the ".." of sub and of outer
}

TEST_CASE("node tree: path() and at(): nested, after RENAME across directories, the root, ENOENT once unlinked", "[node][path]") {
  mem_tree t;
  kit::driver<mem_tree> d(t);
  const auto a = entry_of(d.send(request::mkdir(1, "a", 0755)));
  const auto b = entry_of(d.send(request::mkdir(a.nodeid, "b", 0755)));
  const auto c = entry_of(d.send(request::mkdir(b.nodeid, "c", 0755)));
  auto f = opened_of(d.send(request::create(c.nodeid, "f", S_IFREG | 0644, O_RDWR)));
  CHECK(d.send(request::release(f.e.nodeid, f.o.fh)).error == 0);

  auto cn = t.at("a/b/c");
  REQUIRE(cn);
  CHECK(cn->id() == c.nodeid);
  CHECK(t.at("a//b/./c/") == cn);
  CHECK(t.at("/a/b/c") == cn);
  CHECK(t.at("") == t.root().shared_from_this());
  CHECK(t.at("a/x") == nullptr);
  CHECK(t.at("a/b/c/f/g") == nullptr);
  auto fn = t.at("a/b/c/f");
  REQUIRE(fn);
  CHECK(*t.path(*cn) == "/a/b/c");
  CHECK(*t.path(*fn) == "/a/b/c/f");
  CHECK(*t.path(t.root()) == "/");

  const auto other = entry_of(d.send(request::mkdir(1, "other", 0755)));
  CHECK(error_of(d, rename_msg(b.nodeid, "c", other.nodeid, "c2")) == 0);
  CHECK(*t.path(*cn) == "/other/c2");
  CHECK(*t.path(*fn) == "/other/c2/f");
  CHECK(t.at("a/b/c") == nullptr);
  CHECK(t.at("other/c2/f") == fn);

  CHECK(error_of(d, request::unlink(c.nodeid, "f")) == 0);
  CHECK(t.path(*fn).error_code() == ENOENT);
  CHECK(error_of(d, request::rmdir(other.nodeid, "c2")) == 0);
  CHECK(t.path(*cn).error_code() == ENOENT);
  auto loose = file_node();
  CHECK(t.path(*loose).error_code() == ENOENT);  // never in the tree
}

// ---- rename -------------------------------------------------------------------------------------

TEST_CASE("node tree: RENAME's rules", "[node][rename]") {
  mem_tree t;
  kit::driver<mem_tree> d(t);
  const auto d1 = entry_of(d.send(request::mkdir(1, "d1", 0755)));
  const auto d2 = entry_of(d.send(request::mkdir(1, "d2", 0755)));
  auto make_file = [&](std::uint64_t dir, const std::string& name) {
    auto c = opened_of(d.send(request::create(dir, name, S_IFREG | 0644, O_RDWR)));
    CHECK(d.send(request::release(c.e.nodeid, c.o.fh)).error == 0);
    return c.e;
  };

  SECTION("plain, within a directory (RENAME)") {
    const auto a = make_file(d1.nodeid, "a");
    CHECK(error_of(d, rename_msg(d1.nodeid, "a", d1.nodeid, "b")) == 0);
    CHECK(d.send(request::lookup(d1.nodeid, "a")).error == ENOENT);
    CHECK(lookup(d, d1.nodeid, "b").nodeid == a.nodeid);
    CHECK(attr_of(d, a.nodeid).nlink == 1);
    CHECK(error_of(d, rename_msg(d1.nodeid, "missing", d1.nodeid, "x")) == ENOENT);
    CHECK(error_of(d, rename_msg(d1.nodeid, "b", a.nodeid, "x")) == ENOTDIR);  // new parent a file
    CHECK(error_of(d, rename_msg(d1.nodeid, "b", d1.nodeid, std::string(256, 'n'))) == ENAMETOOLONG);
    CHECK(error_of(d, rename_msg(d1.nodeid, "b", d1.nodeid, "b")) == 0);  // onto itself: nothing
    CHECK(lookup(d, d1.nodeid, "b").nodeid == a.nodeid);
  }

  SECTION("across directories (RENAME2, flags 0): parents' link counts move with a directory") {
    const auto sub = entry_of(d.send(request::mkdir(d1.nodeid, "sub", 0755)));
    CHECK(attr_of(d, d1.nodeid).nlink == 3);
    CHECK(attr_of(d, d2.nodeid).nlink == 2);
    CHECK(error_of(d, rename2_msg(d1.nodeid, "sub", d2.nodeid, "moved", 0)) == 0);
    CHECK(attr_of(d, d1.nodeid).nlink == 2);
    CHECK(attr_of(d, d2.nodeid).nlink == 3);
    CHECK(attr_of(d, sub.nodeid).nlink == 2);
    auto listed = d.send(request::readdir(sub.nodeid, 0, 0)).entries();
    REQUIRE(listed.size() == 2);
    CHECK(listed[1].ino == d2.nodeid);  // ".." follows
    // A file moves without touching the parents' counts.
    const auto f = make_file(d1.nodeid, "f");
    CHECK(error_of(d, rename_msg(d1.nodeid, "f", d2.nodeid, "f")) == 0);
    CHECK(attr_of(d, d1.nodeid).nlink == 2);
    CHECK(attr_of(d, d2.nodeid).nlink == 3);
    CHECK(lookup(d, d2.nodeid, "f").nodeid == f.nodeid);
  }

  SECTION("over a file: the replaced node loses its name; orphaned() once it is not open") {
    const auto src = make_file(d1.nodeid, "src");
    auto victim = opened_of(d.send(request::create(d1.nodeid, "victim", S_IFREG | 0644, O_RDWR)));
    auto vnode = t.at("d1/victim");
    REQUIRE(vnode);
    CHECK(error_of(d, rename_msg(d1.nodeid, "src", d1.nodeid, "victim")) == 0);
    CHECK(lookup(d, d1.nodeid, "victim").nodeid == src.nodeid);
    CHECK(attr_of(d, victim.e.nodeid).nlink == 0);
    CHECK(vnode->orphans == 0);  // still open
    CHECK(d.send(request::release(victim.e.nodeid, victim.o.fh)).error == 0);
    CHECK(vnode->orphans == 1);
    // A replaced file with another name keeps it, and is no orphan.
    const auto kept = make_file(d1.nodeid, "kept");
    auto knode = t.at("d1/kept");
    REQUIRE(entry_of(d.send(link_msg(kept.nodeid, d2.nodeid, "kept2"))).attr.nlink == 2);
    make_file(d1.nodeid, "src2");
    CHECK(error_of(d, rename_msg(d1.nodeid, "src2", d1.nodeid, "kept")) == 0);
    CHECK(attr_of(d, kept.nodeid).nlink == 1);
    CHECK(knode->orphans == 0);
    CHECK(*t.path(*knode) == "/d2/kept2");
  }

  SECTION("RENAME_NOREPLACE: EEXIST over a name, a plain rename otherwise") {
    const auto a = make_file(d1.nodeid, "a");
    make_file(d1.nodeid, "b");
    CHECK(error_of(d, rename2_msg(d1.nodeid, "a", d1.nodeid, "b", RENAME_NOREPLACE)) == EEXIST);
    CHECK(lookup(d, d1.nodeid, "a").nodeid == a.nodeid);
    CHECK(error_of(d, rename2_msg(d1.nodeid, "a", d2.nodeid, "c", RENAME_NOREPLACE)) == 0);
    CHECK(lookup(d, d2.nodeid, "c").nodeid == a.nodeid);
  }

  SECTION("RENAME_EXCHANGE: both names swap (a file and a directory across directories); ENOENT without a target") {
    const auto f = make_file(d1.nodeid, "x");
    const auto y = entry_of(d.send(request::mkdir(d2.nodeid, "y", 0755)));
    CHECK(attr_of(d, d1.nodeid).nlink == 2);
    CHECK(attr_of(d, d2.nodeid).nlink == 3);
    CHECK(error_of(d, rename2_msg(d1.nodeid, "x", d2.nodeid, "y", RENAME_EXCHANGE)) == 0);
    CHECK(lookup(d, d1.nodeid, "x").nodeid == y.nodeid);
    CHECK(lookup(d, d2.nodeid, "y").nodeid == f.nodeid);
    CHECK(attr_of(d, d1.nodeid).nlink == 3);  // the directory now lives in d1
    CHECK(attr_of(d, d2.nodeid).nlink == 2);
    CHECK(*t.path(*t.at("d1/x")) == "/d1/x");
    CHECK(t.at("d1/x")->id() == y.nodeid);
    CHECK(*t.path(*t.at("d2/y")) == "/d2/y");
    auto listed = d.send(request::readdir(y.nodeid, 0, 0)).entries();
    REQUIRE(listed.size() == 2);
    CHECK(listed[1].ino == d1.nodeid);
    // Within one directory.
    const auto p = make_file(d1.nodeid, "p");
    const auto q = make_file(d1.nodeid, "q");
    CHECK(error_of(d, rename2_msg(d1.nodeid, "p", d1.nodeid, "q", RENAME_EXCHANGE)) == 0);
    CHECK(lookup(d, d1.nodeid, "p").nodeid == q.nodeid);
    CHECK(lookup(d, d1.nodeid, "q").nodeid == p.nodeid);
    CHECK(attr_of(d, p.nodeid).nlink == 1);
    CHECK(attr_of(d, q.nodeid).nlink == 1);
    CHECK(error_of(d, rename2_msg(d1.nodeid, "p", d1.nodeid, "absent", RENAME_EXCHANGE)) == ENOENT);
    CHECK(lookup(d, d1.nodeid, "p").nodeid == q.nodeid);
  }

  SECTION("a directory into its own subtree: EINVAL (also by RENAME_EXCHANGE)") {
    const auto sub = entry_of(d.send(request::mkdir(d1.nodeid, "sub", 0755)));
    const auto inner = entry_of(d.send(request::mkdir(sub.nodeid, "inner", 0755)));
    CHECK(error_of(d, rename_msg(1, "d1", inner.nodeid, "x")) == EINVAL);
    CHECK(error_of(d, rename_msg(1, "d1", d1.nodeid, "x")) == EINVAL);
    CHECK(error_of(d, rename2_msg(inner.nodeid, "z", 1, "d1", RENAME_EXCHANGE)) == ENOENT);
    entry_of(d.send(request::mkdir(inner.nodeid, "z", 0755)));
    CHECK(error_of(d, rename2_msg(inner.nodeid, "z", 1, "d1", RENAME_EXCHANGE)) == EINVAL);
    CHECK(error_of(d, rename2_msg(1, "d1", inner.nodeid, "z", RENAME_EXCHANGE)) == EINVAL);
    CHECK(*t.path(*t.at("d1/sub/inner")) == "/d1/sub/inner");
  }

  SECTION("directory over directory: ENOTEMPTY when full, replaced when empty") {
    const auto s = entry_of(d.send(request::mkdir(d1.nodeid, "s", 0755)));
    const auto full = entry_of(d.send(request::mkdir(d2.nodeid, "full", 0755)));
    make_file(full.nodeid, "inside");
    const auto empty = entry_of(d.send(request::mkdir(d2.nodeid, "empty", 0755)));
    auto enode = t.at("d2/empty");
    CHECK(error_of(d, rename_msg(d1.nodeid, "s", d2.nodeid, "full")) == ENOTEMPTY);
    CHECK(attr_of(d, d2.nodeid).nlink == 4);
    CHECK(error_of(d, rename_msg(d1.nodeid, "s", d2.nodeid, "empty")) == 0);
    CHECK(lookup(d, d2.nodeid, "empty").nodeid == s.nodeid);
    CHECK(attr_of(d, empty.nodeid).nlink == 0);
    CHECK(attr_of(d, d1.nodeid).nlink == 2);
    CHECK(attr_of(d, d2.nodeid).nlink == 4);  // full, empty (now s)
    CHECK(enode->orphans == 1);
  }

  SECTION("file over directory: EISDIR; directory over file: ENOTDIR; unknown flags: EINVAL") {
    make_file(d1.nodeid, "f");
    entry_of(d.send(request::mkdir(d1.nodeid, "dir", 0755)));
    CHECK(error_of(d, rename_msg(d1.nodeid, "f", d1.nodeid, "dir")) == EISDIR);
    CHECK(error_of(d, rename_msg(d1.nodeid, "dir", d1.nodeid, "f")) == ENOTDIR);
    CHECK(error_of(d, rename2_msg(d1.nodeid, "f", d1.nodeid, "g", 1u << 2 /* RENAME_WHITEOUT */)) == EINVAL);
    CHECK(error_of(d, rename2_msg(d1.nodeid, "f", d1.nodeid, "g", 1u << 7)) == EINVAL);
    CHECK(error_of(d, rename2_msg(d1.nodeid, "f", d1.nodeid, "dir", RENAME_NOREPLACE | RENAME_EXCHANGE)) == EINVAL);
    CHECK(d.send(request::lookup(d1.nodeid, "g")).error == ENOENT);
  }

  SECTION("a hard link renamed onto its other name: both names stay") {
    const auto a = make_file(d1.nodeid, "a");
    entry_of(d.send(link_msg(a.nodeid, d1.nodeid, "b")));
    CHECK(error_of(d, rename_msg(d1.nodeid, "a", d1.nodeid, "b")) == 0);
    CHECK(lookup(d, d1.nodeid, "a").nodeid == a.nodeid);
    CHECK(lookup(d, d1.nodeid, "b").nodeid == a.nodeid);
    CHECK(attr_of(d, a.nodeid).nlink == 2);
    CHECK(error_of(d, rename2_msg(d1.nodeid, "a", d1.nodeid, "b", RENAME_EXCHANGE)) == 0);
    // renameat2(RENAME_NOREPLACE) over an existing name is EEXIST on Linux whatever inode the
    // name holds (do_renameat2 checks before vfs_rename): the check comes before the tree's
    // "same inode, nothing to do" (a regression: it came after).
    CHECK(error_of(d, rename2_msg(d1.nodeid, "a", d1.nodeid, "b", RENAME_NOREPLACE)) == EEXIST);
    CHECK(lookup(d, d1.nodeid, "a").nodeid == a.nodeid);
  }
}

// ---- making names ---------------------------------------------------------------------------------

TEST_CASE("node tree: MKDIR, CREATE, MKNOD, SYMLINK: modes, owners, setgid directories, and their errors", "[node][make]") {
  mem_tree t;
  kit::driver<mem_tree> d(t);
  d.set_caller(1000, 100);

  const auto dir = entry_of(d.send(request::mkdir(1, "dir", 01777, 022)));
  CHECK(dir.attr.mode == (S_IFDIR | 01777));  // the kernel applied the umask already
  CHECK(dir.attr.uid == 1000);
  CHECK(dir.attr.gid == 100);
  CHECK(dir.attr.nlink == 2);
  CHECK(attr_of(d, 1).nlink == 3);

  auto f = opened_of(d.send(request::create(1, "file", S_IFREG | 0640, O_RDWR)));
  CHECK(f.e.attr.mode == (S_IFREG | 0640));
  CHECK(f.e.attr.uid == 1000);
  CHECK(f.e.attr.gid == 100);
  CHECK(f.e.attr.nlink == 1);
  CHECK(f.o.fh == 1000 + f.e.nodeid);  // the node's open() answered
  CHECK(d.send(request::release(f.e.nodeid, f.o.fh)).error == 0);

  const auto fifo = entry_of(d.send(mknod_msg(1, "fifo", S_IFIFO | 0600)));
  CHECK(fifo.attr.mode == (S_IFIFO | 0600));
  CHECK(fifo.attr.uid == 1000);
  const auto chr = entry_of(d.send(mknod_msg(1, "null", S_IFCHR | 0666, makedev(1, 3))));
  CHECK(chr.attr.mode == (S_IFCHR | 0666));
  CHECK(chr.attr.rdev == makedev(1, 3));
  CHECK(entry_of(d.send(mknod_msg(1, "sock", S_IFSOCK | 0644))).attr.mode == (S_IFSOCK | 0644));
  CHECK(entry_of(d.send(mknod_msg(1, "reg", S_IFREG | 0644))).attr.mode == (S_IFREG | 0644));
  CHECK(error_of(d, mknod_msg(1, "dir2", S_IFDIR | 0755)) == EINVAL);

  const auto ln = entry_of(d.send(symlink_msg(1, "ln", "some/target")));
  CHECK(ln.attr.mode == (S_IFLNK | 0777));
  CHECK(ln.attr.size == 11);
  CHECK(ln.attr.uid == 1000);
  auto target = d.send(readlink_msg(ln.nodeid));
  REQUIRE(target.error == 0);
  CHECK(target.text() == "some/target");
  CHECK(d.send(readlink_msg(f.e.nodeid)).error == EINVAL);  // not a symlink
  CHECK(error_of(d, symlink_msg(1, "long", std::string(PATH_MAX, 't'))) == ENAMETOOLONG);

  SECTION("setgid directories: new names take the directory's group, new directories stay setgid") {
    d.set_caller(0, 0);
    const auto sg = entry_of(d.send(request::mkdir(1, "sg", 02775)));
    abi::setattr_in chown{};
    chown.valid = abi::fattr::gid;
    chown.gid = 500;
    REQUIRE(d.send(setattr_msg(sg.nodeid, chown)).error == 0);
    CHECK(attr_of(d, sg.nodeid).mode == (S_IFDIR | 02775));

    d.set_caller(1000, 100);
    auto in = opened_of(d.send(request::create(sg.nodeid, "f", S_IFREG | 0644, O_RDWR)));
    CHECK(in.e.attr.gid == 500);
    CHECK(in.e.attr.uid == 1000);
    const auto sub = entry_of(d.send(request::mkdir(sg.nodeid, "sub", 0755)));
    CHECK(sub.attr.gid == 500);
    CHECK(sub.attr.mode == (S_IFDIR | 02755));
    CHECK(entry_of(d.send(request::mkdir(sub.nodeid, "deeper", 0700))).attr.gid == 500);  // inherited again
    CHECK(entry_of(d.send(mknod_msg(sg.nodeid, "p", S_IFIFO | 0600))).attr.gid == 500);
    CHECK(entry_of(d.send(symlink_msg(sg.nodeid, "l", "f"))).attr.gid == 500);
    CHECK(opened_of(d.send(tmpfile_msg(sg.nodeid, S_IFREG | 0600, O_RDWR))).e.attr.gid == 500);
    CHECK(opened_of(d.send(tmpfile_msg(1, S_IFREG | 0600, O_RDWR))).e.attr.gid == 100);
    // Outside it: the caller's group; a plain directory's new directory is not setgid.
    const auto plain = entry_of(d.send(request::mkdir(1, "plain", 0755)));
    CHECK(plain.attr.gid == 100);
    CHECK(plain.attr.mode == (S_IFDIR | 0755));
  }

  SECTION("EEXIST, ENOTDIR, ENAMETOOLONG, ESTALE") {
    CHECK(error_of(d, request::mkdir(1, "dir", 0755)) == EEXIST);
    CHECK(error_of(d, mknod_msg(1, "file", S_IFIFO | 0600)) == EEXIST);
    CHECK(error_of(d, symlink_msg(1, "dir", "x")) == EEXIST);
    CHECK(error_of(d, request::mkdir(f.e.nodeid, "x", 0755)) == ENOTDIR);
    CHECK(error_of(d, request::create(f.e.nodeid, "x", S_IFREG | 0644, O_RDWR)) == ENOTDIR);
    CHECK(error_of(d, mknod_msg(f.e.nodeid, "x", S_IFIFO | 0600)) == ENOTDIR);
    CHECK(error_of(d, symlink_msg(f.e.nodeid, "x", "y")) == ENOTDIR);
    CHECK(error_of(d, tmpfile_msg(f.e.nodeid, S_IFREG | 0600, O_RDWR)) == ENOTDIR);
    CHECK(error_of(d, request::lookup(f.e.nodeid, "x")) == ENOTDIR);
    const std::string too_long(256, 'n'), longest(255, 'n');
    CHECK(error_of(d, request::mkdir(1, too_long, 0755)) == ENAMETOOLONG);
    CHECK(error_of(d, request::create(1, too_long, S_IFREG | 0644, O_RDWR)) == ENAMETOOLONG);
    CHECK(error_of(d, mknod_msg(1, too_long, S_IFIFO | 0600)) == ENAMETOOLONG);
    CHECK(error_of(d, symlink_msg(1, too_long, "x")) == ENAMETOOLONG);
    CHECK(error_of(d, request::lookup(1, too_long)) == ENAMETOOLONG);
    CHECK(entry_of(d.send(request::mkdir(1, longest, 0755))).attr.mode == (S_IFDIR | 0755));
    CHECK(lookup(d, 1, longest).attr.nlink == 2);
    CHECK(error_of(d, request::mkdir(777, "x", 0755)) == ESTALE);
  }

  SECTION("CREATE of an existing name: EEXIST over a fifo or with O_EXCL, EISDIR over a directory, else opens it") {
    CHECK(error_of(d, request::create(1, "fifo", S_IFREG | 0644, O_RDWR)) == EEXIST);
    CHECK(error_of(d, request::create(1, "null", S_IFREG | 0644, O_RDWR)) == EEXIST);
    CHECK(error_of(d, request::create(1, "ln", S_IFREG | 0644, O_RDWR)) == EEXIST);
    CHECK(error_of(d, request::create(1, "dir", S_IFREG | 0644, O_RDWR)) == EISDIR);
    CHECK(error_of(d, request::create(1, "file", S_IFREG | 0644, O_RDWR | O_EXCL)) == EEXIST);
    auto fnode = t.at("file");
    fnode->data = "contents";
    auto again = opened_of(d.send(request::create(1, "file", S_IFREG | 0600, O_RDWR)));
    CHECK(again.e.nodeid == f.e.nodeid);
    CHECK(again.e.attr.mode == (S_IFREG | 0640));  // the existing file's mode
    CHECK(again.e.attr.size == 8);
    CHECK(fnode->truncates == 0);
    CHECK(d.send(request::release(again.e.nodeid, again.o.fh)).error == 0);
    auto trunc = opened_of(d.send(request::create(1, "file", S_IFREG | 0600, O_RDWR | O_TRUNC)));
    CHECK(trunc.e.attr.size == 0);
    CHECK(fnode->truncates == 1);
    CHECK(fnode->last_truncate == 0);
    CHECK(d.send(request::release(trunc.e.nodeid, trunc.o.fh)).error == 0);
  }

  SECTION("RMDIR and UNLINK: ENOTEMPTY, EISDIR, ENOTDIR, ENOENT; a removed directory takes no new names") {
    REQUIRE(d.send(request::create(dir.nodeid, "inside", S_IFREG | 0644, O_RDWR)).error == 0);
    CHECK(error_of(d, request::rmdir(1, "dir")) == ENOTEMPTY);
    CHECK(error_of(d, request::unlink(1, "dir")) == EISDIR);
    CHECK(error_of(d, request::rmdir(1, "file")) == ENOTDIR);
    CHECK(error_of(d, request::rmdir(1, "nothing")) == ENOENT);
    CHECK(error_of(d, request::unlink(1, "nothing")) == ENOENT);
    CHECK(error_of(d, request::unlink(dir.nodeid, "inside")) == 0);
    CHECK(attr_of(d, 1).nlink == 3);
    CHECK(error_of(d, request::rmdir(1, "dir")) == 0);
    CHECK(attr_of(d, 1).nlink == 2);
    CHECK(attr_of(d, dir.nodeid).nlink == 0);
    CHECK(error_of(d, request::mkdir(dir.nodeid, "late", 0755)) == ENOENT);
    CHECK(error_of(d, request::create(dir.nodeid, "late", S_IFREG | 0644, O_RDWR)) == ENOENT);
    CHECK(error_of(d, mknod_msg(dir.nodeid, "late", S_IFIFO | 0644)) == ENOENT);
    CHECK(error_of(d, symlink_msg(dir.nodeid, "late", "x")) == ENOENT);
    CHECK(names_of(d.send(request::readdir(dir.nodeid, 0, 0)).entries()) == std::vector<std::string>{".", ".."});
    CHECK(error_of(d, request::unlink(1, "ln")) == 0);
    CHECK(error_of(d, request::unlink(1, "fifo")) == 0);
    CHECK(d.send(request::lookup(1, "fifo")).error == ENOENT);
  }
}

TEST_CASE("node tree: a node type made with its directory gets the directory it is made in", "[node][make]") {
  using aware_tree = cf::node::tree<dir_aware_node>;
  static_assert(cf::node::ops::makeable<dir_aware_node>);
  static_assert(!std::constructible_from<dir_aware_node, const made&>);
  static_assert(cf::handlers::mkdir<aware_tree> && cf::handlers::create<aware_tree> && cf::handlers::tmpfile<aware_tree>);
  CHECK_THROWS_AS(aware_tree(), std::invalid_argument);  // no root, and none can be made
  aware_tree t(std::make_shared<dir_aware_node>(S_IFDIR | 0755));
  kit::driver<aware_tree> d(t);
  const auto sub = entry_of(d.send(request::mkdir(1, "sub", 0755)));
  CHECK(t.at("sub")->made_in == cf::root_ino);
  REQUIRE(d.send(request::create(sub.nodeid, "f", S_IFREG | 0644, O_RDWR)).error == 0);
  CHECK(t.at("sub/f")->made_in == sub.nodeid);
  REQUIRE(d.send(mknod_msg(sub.nodeid, "p", S_IFIFO | 0644)).error == 0);
  CHECK(t.at("sub/p")->made_in == sub.nodeid);
  REQUIRE(d.send(symlink_msg(sub.nodeid, "l", "f")).error == 0);
  CHECK(t.at("sub/l")->made_in == sub.nodeid);
  auto tmp = opened_of(d.send(tmpfile_msg(sub.nodeid, S_IFREG | 0600, O_RDWR)));
  REQUIRE(d.send(link_msg(tmp.e.nodeid, 1, "was_tmp")).error == 0);
  CHECK(t.at("was_tmp")->made_in == sub.nodeid);
}

TEST_CASE("node tree: READLINK answers a node's computed target, else the one it was made with", "[node][make]") {
  struct link_node : cf::node::inode<link_node> {
    using inode::inode;
    cf::result<std::string> readlink(cf::context& c) {
      if (std::string_view(target()) == "fails") return cf::error(EIO);
      return "computed for uid " + std::to_string(c.uid()) + " from " + target();
    }
  };
  cf::node::tree<link_node> t;
  kit::driver<cf::node::tree<link_node>> d(t);
  d.set_caller(77, 7);
  const auto l = entry_of(d.send(symlink_msg(1, "l", "stored")));
  CHECK(d.send(readlink_msg(l.nodeid)).text() == "computed for uid 77 from stored");
  const auto bad = entry_of(d.send(symlink_msg(1, "bad", "fails")));
  CHECK(d.send(readlink_msg(bad.nodeid)).error == EIO);
  CHECK(d.send(readlink_msg(1)).error == EINVAL);
}

// ---- orphaned() and O_TMPFILE ---------------------------------------------------------------------

TEST_CASE("node tree: orphaned() is called exactly once, when no name and no open file remain", "[node][orphan]") {
  mem_tree t;
  kit::driver<mem_tree> d(t);
  auto create = [&](const std::string& name) {
    auto c = opened_of(d.send(request::create(1, name, S_IFREG | 0644, O_RDWR)));
    auto n = t.at(name);
    REQUIRE(n);
    return std::pair{c, n};
  };

  SECTION("unlinked while open, then released") {
    auto [c, n] = create("a");
    CHECK(error_of(d, request::unlink(1, "a")) == 0);
    CHECK(n->orphans == 0);
    CHECK(attr_of(d, c.e.nodeid).nlink == 0);
    // Still readable and writable through the open file.
    CHECK(d.send(request::write(c.e.nodeid, c.o.fh, 0, "still")).error == 0);
    CHECK(d.send(request::read(c.e.nodeid, c.o.fh, 0, 10)).text() == "still");
    CHECK(d.send(request::release(c.e.nodeid, c.o.fh)).error == 0);
    CHECK(n->orphans == 1);
    CHECK(n->releases == 1);
    d.send(request::release(c.e.nodeid, c.o.fh));  // a RELEASE without its OPEN: nothing more
    CHECK(n->orphans == 1);
    d.send(request::forget(c.e.nodeid, 1));
    CHECK(n->orphans == 1);
  }
  SECTION("released, then unlinked") {
    auto [c, n] = create("b");
    CHECK(d.send(request::release(c.e.nodeid, c.o.fh)).error == 0);
    CHECK(n->orphans == 0);
    CHECK(error_of(d, request::unlink(1, "b")) == 0);
    CHECK(n->orphans == 1);
  }
  SECTION("two opens: only the last RELEASE orphans it") {
    auto [c, n] = create("c");
    auto o2 = d.send(request::open(c.e.nodeid, O_RDONLY));
    REQUIRE(o2.error == 0);
    CHECK(n->open_count() == 2);
    CHECK(error_of(d, request::unlink(1, "c")) == 0);
    CHECK(d.send(request::release(c.e.nodeid, c.o.fh)).error == 0);
    CHECK(n->orphans == 0);
    CHECK(d.send(request::release(c.e.nodeid, o2.as<abi::open_out>().fh)).error == 0);
    CHECK(n->orphans == 1);
  }
  SECTION("hard links: never while a name remains") {
    auto [c, n] = create("h");
    REQUIRE(d.send(link_msg(c.e.nodeid, 1, "h2")).error == 0);
    CHECK(d.send(request::release(c.e.nodeid, c.o.fh)).error == 0);
    CHECK(error_of(d, request::unlink(1, "h")) == 0);
    CHECK(n->orphans == 0);
    auto o = d.send(request::open(c.e.nodeid, O_RDONLY));
    CHECK(d.send(request::release(c.e.nodeid, o.as<abi::open_out>().fh)).error == 0);
    CHECK(n->orphans == 0);
    CHECK(error_of(d, request::unlink(1, "h2")) == 0);
    CHECK(n->orphans == 1);
  }
  SECTION("an O_TMPFILE file closed without a name") {
    const int before = mem_node::all_orphans;
    auto tmp = opened_of(d.send(tmpfile_msg(1, S_IFREG | 0600, O_RDWR)));
    CHECK(tmp.e.attr.nlink == 0);
    CHECK(d.send(request::write(tmp.e.nodeid, tmp.o.fh, 0, "scratch")).error == 0);
    CHECK(mem_node::all_orphans == before);
    CHECK(d.send(request::release(tmp.e.nodeid, tmp.o.fh)).error == 0);
    CHECK(mem_node::all_orphans == before + 1);
    CHECK(d.send(request::getattr(tmp.e.nodeid)).error == 0);  // the kernel still holds it
    d.send(request::forget(tmp.e.nodeid, 1));
    CHECK(mem_node::all_orphans == before + 1);
  }
  SECTION("tree.remove from the filesystem's side") {
    auto n = file_node();
    REQUIRE(t.add(t.root(), "r", n));
    REQUIRE(t.remove(t.root(), "r"));
    CHECK(n->orphans == 1);
  }
  SECTION("a node the filesystem names again after tree.remove is orphaned again when it loses that name") {
    // tree.remove + tree.add is the only way for the filesystem to move a node itself.
    auto n = file_node(S_IFREG | 0644, "kept");
    REQUIRE(t.add(t.root(), "r", n));
    REQUIRE(t.remove(t.root(), "r"));
    CHECK(n->orphans == 1);
    REQUIRE(t.add(t.root(), "r2", n));
    CHECK(n->attributes().nlink == 1);
    const auto id = lookup(d, 1, "r2").nodeid;
    CHECK(error_of(d, request::unlink(1, "r2")) == 0);
    CHECK(attr_of(d, id).nlink == 0);
    // Named anew, a node is orphaned again when it loses that name (a regression: the first
    // orphaned() was the only one, and a filesystem freeing data there leaked the second time).
    CHECK(n->orphans == 2);
  }
  SECTION("a directory removed by RMDIR") {
    REQUIRE(d.send(request::mkdir(1, "dir", 0755)).error == 0);
    auto n = t.at("dir");
    CHECK(error_of(d, request::rmdir(1, "dir")) == 0);
    CHECK(attr_of(d, n->id()).nlink == 0);
    // RMDIR orphans the directory as tree.remove(dir) and a RENAME over an empty directory do (a
    // regression: RMDIR did not).
    CHECK(n->orphans == 1);
  }
}

TEST_CASE("node tree: O_TMPFILE then LINK gives the file a name; LINK after its release is ENOENT", "[node][orphan][tmpfile]") {
  mem_tree t;
  kit::driver<mem_tree> d(t);
  const auto dir = entry_of(d.send(request::mkdir(1, "d", 0755)));
  auto tmp = opened_of(d.send(tmpfile_msg(dir.nodeid, S_IFREG | 0600, O_RDWR)));
  CHECK(tmp.e.attr.nlink == 0);
  CHECK(tmp.e.attr.mode == (S_IFREG | 0600));
  CHECK(names_of(d.send(request::readdir(dir.nodeid, 0, 0)).entries()) == std::vector<std::string>{".", ".."});
  CHECK(d.send(request::write(tmp.e.nodeid, tmp.o.fh, 0, "kept")).error == 0);
  const auto linked = entry_of(d.send(link_msg(tmp.e.nodeid, dir.nodeid, "named")));
  CHECK(linked.nodeid == tmp.e.nodeid);
  CHECK(linked.attr.nlink == 1);
  CHECK(linked.attr.size == 4);
  CHECK(lookup(d, dir.nodeid, "named").nodeid == tmp.e.nodeid);
  auto n = t.at("d/named");
  REQUIRE(n);
  CHECK(d.send(request::release(tmp.e.nodeid, tmp.o.fh)).error == 0);
  CHECK(n->orphans == 0);
  CHECK(*t.path(*n) == "/d/named");

  // Released without a name: orphaned at once, and no LINK brings it back.
  const int before = mem_node::all_orphans;
  auto gone = opened_of(d.send(tmpfile_msg(dir.nodeid, S_IFREG | 0600, O_RDWR)));
  CHECK(d.send(request::release(gone.e.nodeid, gone.o.fh)).error == 0);
  CHECK(mem_node::all_orphans == before + 1);
  CHECK(error_of(d, link_msg(gone.e.nodeid, dir.nodeid, "too_late")) == ENOENT);
  CHECK(d.send(request::lookup(dir.nodeid, "too_late")).error == ENOENT);

  // Linked, unlinked again while still open: no second name (only O_TMPFILE files get one back).
  auto twice = opened_of(d.send(tmpfile_msg(dir.nodeid, S_IFREG | 0600, O_RDWR)));
  REQUIRE(d.send(link_msg(twice.e.nodeid, dir.nodeid, "once")).error == 0);
  auto tn = t.at("d/once");
  CHECK(error_of(d, request::unlink(dir.nodeid, "once")) == 0);
  CHECK(tn->orphans == 0);
  CHECK(error_of(d, link_msg(twice.e.nodeid, dir.nodeid, "again")) == ENOENT);
  CHECK(d.send(request::release(twice.e.nodeid, twice.o.fh)).error == 0);
  CHECK(tn->orphans == 1);
}

// ---- attributes and data ------------------------------------------------------------------------

TEST_CASE("node tree: SETATTR: chmod, chown, utimes, size through truncate()", "[node][setattr]") {
  mem_tree t;
  kit::driver<mem_tree> d(t);
  auto f = opened_of(d.send(request::create(1, "f", S_IFREG | 0644, O_RDWR)));
  auto n = t.at("f");
  n->data = "hello world";
  const auto id = f.e.nodeid;

  abi::setattr_in s{};
  s.valid = abi::fattr::mode;
  s.mode = S_IFDIR | 04600;  // the type bits are the node's own
  auto r = d.send(setattr_msg(id, s));
  REQUIRE(r.error == 0);
  CHECK(r.as<abi::attr_out>().attr.mode == (S_IFREG | 04600));

  s = {};
  s.valid = abi::fattr::uid | abi::fattr::gid;
  s.uid = 42;
  s.gid = 43;
  auto owned = d.send(setattr_msg(id, s)).as<abi::attr_out>().attr;
  CHECK(owned.uid == 42);
  CHECK(owned.gid == 43);
  CHECK(owned.mode == (S_IFREG | 04600));  // no KILL_SUIDGID asked: nothing dropped

  s = {};
  s.valid = abi::fattr::atime | abi::fattr::mtime;
  s.atime = 1000;
  s.atimensec = 5;
  s.mtime = 2000;
  s.mtimensec = 250;
  const auto before = now_ns();
  auto timed = d.send(setattr_msg(id, s)).as<abi::attr_out>().attr;
  CHECK(ns_of(timed.atime, timed.atimensec) == ns_of(1000, 5));
  CHECK(ns_of(timed.mtime, timed.mtimensec) == ns_of(2000, 250));
  CHECK(ns_of(timed.ctime, timed.ctimensec) >= before);
  s = {};
  s.valid = abi::fattr::atime_now | abi::fattr::mtime_now | abi::fattr::ctime;
  s.ctime = 3000;
  auto now_set = d.send(setattr_msg(id, s)).as<abi::attr_out>().attr;
  CHECK(ns_of(now_set.atime, now_set.atimensec) >= before);
  CHECK(ns_of(now_set.mtime, now_set.mtimensec) >= before);
  CHECK(now_set.ctime == 3000);

  s = {};
  s.valid = abi::fattr::size;
  s.size = 5;
  auto cut = d.send(setattr_msg(id, s));
  REQUIRE(cut.error == 0);
  CHECK(cut.as<abi::attr_out>().attr.size == 5);
  CHECK(ns_of(cut.as<abi::attr_out>().attr.mtime, cut.as<abi::attr_out>().attr.mtimensec) >= before);
  CHECK(n->truncates == 1);
  CHECK(n->last_truncate == 5);
  CHECK(n->data == "hello");
  s.size = static_cast<std::uint64_t>(-1);  // negative as off_t
  CHECK(d.send(setattr_msg(id, s)).error == EINVAL);
  s.size = 0;
  CHECK(d.send(setattr_msg(1, s)).error == EISDIR);
  CHECK(d.send(setattr_msg(999, s)).error == ESTALE);
  CHECK(n->truncates == 1);

  // OPEN with O_TRUNC truncates through the node too.
  auto o = d.send(request::open(id, O_WRONLY | O_TRUNC));
  REQUIRE(o.error == 0);
  CHECK(n->truncates == 2);
  CHECK(attr_of(d, id).size == 0);
  CHECK(d.send(request::release(id, o.as<abi::open_out>().fh)).error == 0);
  CHECK(d.send(request::release(id, f.o.fh)).error == 0);
}

TEST_CASE("node tree: setuid and setgid go as the kernel's rules say (KILL_SUIDGID on WRITE, SETATTR, OPEN, CREATE)", "[node][setattr]") {
  mem_tree t;
  kit::driver<mem_tree> d(t);
  static_assert(asks_init_flags<mem_tree>);
  CHECK((t.init_flags() & abi::init_flag::handle_killpriv_v2) != 0);
  // A file of uid 0, gid 50, with `mode`, opened (as root) for writing.
  auto make = [&](const std::string& name, mode_t mode) {
    d.set_caller(0, 0);
    auto c = opened_of(d.send(request::create(1, name, S_IFREG | 0644, O_RDWR)));
    abi::setattr_in s{};
    s.valid = abi::fattr::mode | abi::fattr::gid;
    s.mode = mode;
    s.gid = 50;
    REQUIRE(d.send(setattr_msg(c.e.nodeid, s)).error == 0);
    return c;
  };
  auto mode_of = [&](std::uint64_t id) { return attr_of(d, id).mode & 07777; };

  SECTION("WRITE") {
    auto a = make("a", 06755);
    d.set_caller(1000, 100);
    CHECK(d.send(write_msg(a.e.nodeid, a.o.fh, 0, "x", 0)).error == 0);
    CHECK(mode_of(a.e.nodeid) == 06755);  // the kernel did not ask
    CHECK(d.send(write_msg(a.e.nodeid, a.o.fh, 0, "x", abi::write_flag::kill_suidgid)).error == 0);
    CHECK(mode_of(a.e.nodeid) == 0755);  // group-executable: both go

    auto b = make("b", 06644);  // setgid without group execute (mandatory locking): stays for the group
    d.set_caller(1000, 50);
    CHECK(d.send(write_msg(b.e.nodeid, b.o.fh, 0, "x", abi::write_flag::kill_suidgid)).error == 0);
    CHECK(mode_of(b.e.nodeid) == 02644);
    auto c = make("c", 06644);
    d.set_caller(1000, 100);  // not in the file's group
    CHECK(d.send(write_msg(c.e.nodeid, c.o.fh, 0, "x", abi::write_flag::kill_suidgid)).error == 0);
    CHECK(mode_of(c.e.nodeid) == 0644);
  }
  SECTION("SETATTR size, and chown") {
    auto a = make("a", 06755);
    d.set_caller(1000, 50);
    abi::setattr_in s{};
    s.valid = abi::fattr::size;
    s.size = 0;
    CHECK(d.send(setattr_msg(a.e.nodeid, s)).error == 0);
    CHECK(mode_of(a.e.nodeid) == 06755);
    s.valid = abi::fattr::size | abi::fattr::kill_suidgid;
    CHECK(d.send(setattr_msg(a.e.nodeid, s)).error == 0);
    CHECK(mode_of(a.e.nodeid) == 0755);

    auto b = make("b", 06745);  // chown: setuid goes; setgid only with group execute
    d.set_caller(0, 0);
    s = {};
    s.valid = abi::fattr::uid | abi::fattr::kill_suidgid;
    s.uid = 7;
    CHECK(d.send(setattr_msg(b.e.nodeid, s)).error == 0);
    CHECK(mode_of(b.e.nodeid) == 02745);
    auto c = make("c", 06755);
    s.valid = abi::fattr::gid | abi::fattr::kill_suidgid;
    s.gid = 8;
    CHECK(d.send(setattr_msg(c.e.nodeid, s)).error == 0);
    CHECK(mode_of(c.e.nodeid) == 0755);
  }
  SECTION("OPEN and CREATE with O_TRUNC") {
    auto a = make("a", 06755);
    d.set_caller(1000, 100);
    auto o = d.send(open_msg(a.e.nodeid, O_WRONLY | O_TRUNC, 0));
    REQUIRE(o.error == 0);
    CHECK(mode_of(a.e.nodeid) == 06755);
    o = d.send(open_msg(a.e.nodeid, O_WRONLY | O_TRUNC, abi::open_flag::kill_suidgid));
    REQUIRE(o.error == 0);
    CHECK(mode_of(a.e.nodeid) == 0755);
    auto b = make("b", 06755);
    d.set_caller(1000, 100);
    auto c = d.send(create_msg(1, "b", S_IFREG | 0644, O_WRONLY | O_TRUNC, abi::open_flag::kill_suidgid));
    REQUIRE(c.error == 0);
    CHECK(c.as<abi::entry_out>().nodeid == b.e.nodeid);
    CHECK(mode_of(b.e.nodeid) == 0755);
  }
}

TEST_CASE("node tree: READ moves the access time as relatime does", "[node][setattr]") {
  mem_tree t;
  kit::driver<mem_tree> d(t);
  REQUIRE(t.add(t.root(), "f", file_node(S_IFREG | 0644, "data")));
  const auto id = lookup(d, 1, "f").nodeid;
  auto atime = [&] {
    auto a = attr_of(d, id);
    return ns_of(a.atime, a.atimensec);
  };
  abi::setattr_in s{};
  s.valid = abi::fattr::atime;
  s.atime = 1000;  // long before the last change
  REQUIRE(d.send(setattr_msg(id, s)).error == 0);
  CHECK(atime() == ns_of(1000, 0));
  const auto before = now_ns();
  CHECK(d.send(request::read(id, 0, 0, 10)).text() == "data");
  const auto first = atime();
  CHECK(first >= before);
  // Newer than the last change and less than a day old: a second READ leaves it.
  CHECK(d.send(request::read(id, 0, 0, 10)).error == 0);
  CHECK(atime() == first);
  // A failed READ moves nothing; a WRITE changes the data, and the next READ moves it again.
  CHECK(d.send(request::read(id, 0, static_cast<std::uint64_t>(-1), 10)).error == EINVAL);
  CHECK(atime() == first);
  CHECK(d.send(request::write(id, 0, 4, "!")).error == 0);
  CHECK(atime() == first);
  CHECK(d.send(request::read(id, 0, 0, 10)).text() == "data!");
  CHECK(atime() > first);
  // An access time a day old moves however recent the last change.
  s.atime = static_cast<std::uint64_t>(cf::node::now().tv_sec - 2 * 24 * 3600);
  REQUIRE(d.send(setattr_msg(id, s)).error == 0);
  s.valid = abi::fattr::mtime | abi::fattr::ctime;  // changes older still
  s.mtime = s.ctime = s.atime - 10;
  REQUIRE(d.send(setattr_msg(id, s)).error == 0);
  const auto old = atime();
  CHECK(d.send(request::read(id, 0, 0, 10)).error == 0);
  CHECK(atime() > old);
}

TEST_CASE("node tree: file operations reach the node: OPEN, READ, WRITE, FLUSH, FSYNC, FALLOCATE, LSEEK, xattrs, STATFS, RELEASE",
          "[node][data]") {
  const auto via = GENERATE(kit::arrival::dev_fuse, kit::arrival::ring);
  INFO((via == kit::arrival::ring ? "ring entries" : "/dev/fuse messages"));
  mem_tree t;
  kit::driver<mem_tree> d(t);
  auto c = opened_of(d.send(request::create(1, "f", S_IFREG | 0644, O_RDWR), via));
  auto n = t.at("f");
  const auto id = c.e.nodeid, fh = c.o.fh;
  CHECK(n->opens == 1);
  CHECK(n->open_count() == 1);

  const auto m0 = ns_of(c.e.attr.mtime, c.e.attr.mtimensec);
  auto w = d.send(request::write(id, fh, 0, "hello, node"), via);
  REQUIRE(w.error == 0);
  CHECK(w.as<abi::write_out>().size == 11);
  auto a = attr_of(d, id);
  CHECK(a.size == 11);
  CHECK(ns_of(a.mtime, a.mtimensec) >= m0);
  CHECK(d.send(request::read(id, fh, 7, 100), via).text() == "node");
  CHECK(d.send(request::read(id, fh, 100, 100), via).text().empty());

  CHECK(d.send(request::flush(id, fh), via).error == 0);
  CHECK(n->flushes == 1);
  CHECK(d.send(fsync_msg(id, fh, true), via).error == 0);
  CHECK(n->fsyncs == 1);

  CHECK(d.send(fallocate_msg(id, fh, 0, 0, 4096), via).error == 0);
  CHECK(attr_of(d, id).size == 4096);
  CHECK(d.send(fallocate_msg(id, fh, 1, 0, 8192), via).error == EOPNOTSUPP);
  CHECK(d.send(fallocate_msg(1, 0, 0, 0, 10), via).error == ENODEV);  // a directory

  auto seek = d.send(lseek_msg(id, fh, 100, SEEK_HOLE), via);
  REQUIRE(seek.error == 0);
  CHECK(seek.as<abi::lseek_out>().offset == 4096);
  CHECK(d.send(lseek_msg(id, fh, 5000, SEEK_DATA), via).error == ENXIO);

  const auto ctime0 = attr_of(d, id);
  CHECK(d.send(setxattr_msg(id, "user.k", "value", XATTR_CREATE), via).error == 0);
  CHECK(d.send(setxattr_msg(id, "user.k", "other", XATTR_CREATE), via).error == EEXIST);
  CHECK(ns_of(attr_of(d, id).ctime, attr_of(d, id).ctimensec) >= ns_of(ctime0.ctime, ctime0.ctimensec));
  auto size_q = d.send(getxattr_msg(id, "user.k", 0), via);
  REQUIRE(size_q.error == 0);
  CHECK(size_q.as<abi::getxattr_out>().size == 5);
  CHECK(d.send(getxattr_msg(id, "user.k", 64), via).text() == "value");
  CHECK(d.send(getxattr_msg(id, "user.k", 2), via).error == ERANGE);
  CHECK(d.send(getxattr_msg(id, "user.none", 64), via).error == ENODATA);
  CHECK(d.send(listxattr_msg(id, 64), via).text() == std::string("user.k\0", 7));
  CHECK(d.send(removexattr_msg(id, "user.k"), via).error == 0);
  CHECK(d.send(removexattr_msg(id, "user.k"), via).error == ENODATA);

  auto st = d.send(request::statfs(id), via);  // answered by the root, whatever node asks
  REQUIRE(st.error == 0);
  CHECK(st.as<abi::statfs_out>().st.files == 1234);
  CHECK(st.as<abi::statfs_out>().st.blocks == 1000);
  CHECK(st.as<abi::statfs_out>().st.namelen == 255);

  CHECK(d.send(request::open(1, O_WRONLY), via).error == EISDIR);
  CHECK(d.send(request::release(id, fh), via).error == 0);
  CHECK(n->releases == 1);
  CHECK(n->open_count() == 0);
}

// ---- async node operations --------------------------------------------------------------------------

TEST_CASE("node tree: a node's READ, WRITE and FSYNC as tasks co_await real I/O through the context", "[node][async]") {
  const auto via = GENERATE(kit::arrival::dev_fuse, kit::arrival::ring);
  INFO((via == kit::arrival::ring ? "ring entries" : "/dev/fuse messages"));
  const int fd = ::memfd_create("corofuse-node-async", MFD_CLOEXEC);
  REQUIRE(fd >= 0);
  struct closer {
    int fd;
    ~closer() { ::close(fd); }
  } close_it{fd};
  REQUIRE(::pwrite(fd, "0123456789abcdef", 16, 0) == 16);

  async_tree t(std::make_shared<async_node>(S_IFDIR | 0755, -1));
  auto file = std::make_shared<async_node>(S_IFREG | 0644, fd);
  REQUIRE(t.add(t.root(), "data", file));
  static_assert(cf::handlers::read<async_tree> && cf::handlers::write<async_tree> && cf::handlers::fsync<async_tree>);
  static_assert(!cf::handlers::mkdir<async_tree>);
  kit::driver<async_tree> d(t);
  const auto e = lookup(d, 1, "data");
  CHECK(e.attr.size == 16);
  auto o = d.send(request::open(e.nodeid, O_RDWR), via);
  REQUIRE(o.error == 0);
  const auto fh = o.as<abi::open_out>().fh;

  abi::setattr_in s{};
  s.valid = abi::fattr::atime;
  s.atime = 1000;
  REQUIRE(d.send(setattr_msg(e.nodeid, s), via).error == 0);
  auto r = d.send(request::read(e.nodeid, fh, 4, 6), via);
  REQUIRE(r.error == 0);
  CHECK(r.text() == "456789");
  CHECK(attr_of(d, e.nodeid).atime > 1000);  // the tree's continuation ran after the task

  const auto m0 = attr_of(d, e.nodeid);
  auto w = d.send(request::write(e.nodeid, fh, 10, "XYZ"), via);
  REQUIRE(w.error == 0);
  CHECK(w.as<abi::write_out>().size == 3);
  const auto m1 = attr_of(d, e.nodeid);
  CHECK(ns_of(m1.mtime, m1.mtimensec) >= ns_of(m0.mtime, m0.mtimensec));
  CHECK(d.send(request::read(e.nodeid, fh, 0, 64), via).text() == "0123456789XYZdef");
  CHECK(d.send(request::read(e.nodeid, fh, 64, 64), via).text().empty());
  CHECK(d.send(request::write(e.nodeid, fh, 16, "++"), via).error == 0);
  CHECK(attr_of(d, e.nodeid).size == 18);
  CHECK(d.send(fsync_msg(e.nodeid, fh, false), via).error == 0);

  // Unknown ids: the task answers ESTALE without touching a node.
  CHECK(d.send(request::read(999, 0, 0, 16), via).error == ESTALE);
  CHECK(d.send(request::write(999, 0, 0, "x"), via).error == ESTALE);
  CHECK(d.send(fsync_msg(999, 0, false), via).error == ESTALE);
  // An error from the I/O itself comes back as the reply's error.
  auto broken = std::make_shared<async_node>(S_IFREG | 0644, -1);
  REQUIRE(t.add(t.root(), "broken", broken));
  const auto b = lookup(d, 1, "broken");
  CHECK(d.send(request::read(b.nodeid, 0, 0, 16), via).error == EBADF);
  CHECK(d.send(request::release(e.nodeid, fh), via).error == 0);
}

// ---- what a read-only tree offers -----------------------------------------------------------------

TEST_CASE("node tree: a tree of read-only nodes offers only what they can do; the rest is ENOSYS", "[node][readonly]") {
  namespace h = cf::handlers;
  // Always: names, attributes, listings, open files.
  static_assert(h::lookup<ro_tree> && h::forget<ro_tree> && h::getattr<ro_tree> && h::setattr<ro_tree> && h::readlink<ro_tree>);
  static_assert(h::open<ro_tree> && h::release<ro_tree> && h::read<ro_tree> && h::readdir<ro_tree> && h::readdirplus<ro_tree>);
  // Not for these nodes.
  static_assert(!h::write<ro_tree> && !h::fsync<ro_tree> && !h::flush<ro_tree> && !h::fallocate<ro_tree> && !h::lseek<ro_tree>);
  static_assert(!h::getxattr<ro_tree> && !h::listxattr<ro_tree> && !h::setxattr<ro_tree> && !h::removexattr<ro_tree>);
  static_assert(!h::statfs<ro_tree>);
  static_assert(!h::mkdir<ro_tree> && !h::mknod<ro_tree> && !h::symlink<ro_tree> && !h::create<ro_tree> && !h::tmpfile<ro_tree>);
  static_assert(!h::link<ro_tree> && !h::unlink<ro_tree> && !h::rmdir<ro_tree> && !h::rename<ro_tree>);
  static_assert(!asks_init_flags<ro_tree>);
  static_assert(!cf::node::ops::makeable<ro_node>);
  // A makeable node type with every operation: all of them.
  static_assert(h::write<mem_tree> && h::fsync<mem_tree> && h::flush<mem_tree> && h::fallocate<mem_tree> && h::lseek<mem_tree>);
  static_assert(h::getxattr<mem_tree> && h::listxattr<mem_tree> && h::setxattr<mem_tree> && h::removexattr<mem_tree>);
  static_assert(h::statfs<mem_tree> && h::init<mem_tree>);
  static_assert(h::mkdir<mem_tree> && h::mknod<mem_tree> && h::symlink<mem_tree> && h::create<mem_tree> && h::tmpfile<mem_tree>);
  static_assert(h::link<mem_tree> && h::unlink<mem_tree> && h::rmdir<mem_tree> && h::rename<mem_tree>);
  CHECK(h::signatures_match<ro_tree>());

  CHECK_THROWS_AS(ro_tree(), std::invalid_argument);                                           // no root, none can be made
  CHECK_THROWS_AS(ro_tree(std::make_shared<ro_node>(S_IFREG | 0444)), std::invalid_argument);  // not a directory
  ro_tree t(std::make_shared<ro_node>(S_IFDIR | 0555));
  auto hello = std::make_shared<ro_node>(S_IFREG | 0444, "Hello, World!\n");
  REQUIRE(t.add(t.root(), "hello", hello));
  kit::driver<ro_tree> d(t);
  const auto e = lookup(d, 1, "hello");
  CHECK(e.attr.size == 14);
  CHECK(e.attr.mode == (S_IFREG | 0444));
  auto o = d.send(request::open(e.nodeid, O_RDONLY));
  REQUIRE(o.error == 0);
  CHECK(d.send(request::read(e.nodeid, 0, 7, 100)).text() == "World!\n");
  CHECK(names_of(d.send(request::readdir(1, 0, 0)).entries()) == std::vector<std::string>{".", "..", "hello"});
  CHECK(d.send(request::readdirplus(1, 0, 0)).plus_entries().size() == 3);

  CHECK(d.send(request::write(e.nodeid, 0, 0, "x")).error == ENOSYS);
  CHECK(d.send(request::mkdir(1, "d", 0755)).error == ENOSYS);
  CHECK(d.send(request::create(1, "c", S_IFREG | 0644, O_RDWR)).error == ENOSYS);
  CHECK(d.send(mknod_msg(1, "n", S_IFIFO | 0644)).error == ENOSYS);
  CHECK(d.send(symlink_msg(1, "s", "t")).error == ENOSYS);
  CHECK(d.send(link_msg(e.nodeid, 1, "l")).error == ENOSYS);
  CHECK(d.send(request::unlink(1, "hello")).error == ENOSYS);
  CHECK(d.send(request::rmdir(1, "hello")).error == ENOSYS);
  CHECK(d.send(rename_msg(1, "hello", 1, "bye")).error == ENOSYS);
  CHECK(d.send(tmpfile_msg(1, S_IFREG | 0600, O_RDWR)).error == ENOSYS);
  CHECK(d.send(fsync_msg(e.nodeid, 0, false)).error == ENOSYS);
  CHECK(d.send(fallocate_msg(e.nodeid, 0, 0, 0, 10)).error == ENOSYS);
  CHECK(d.send(lseek_msg(e.nodeid, 0, 0, SEEK_DATA)).error == ENOSYS);
  CHECK(d.send(getxattr_msg(e.nodeid, "user.x", 10)).error == ENOSYS);
  CHECK(d.send(request::flush(e.nodeid, 0)).error == 0);  // no handler: nothing buffered
  auto st = d.send(request::statfs(1));                   // no handler: the default answer
  REQUIRE(st.error == 0);
  CHECK(st.as<abi::statfs_out>().st.namelen == 255);
  // SETATTR: attributes the tree keeps change; a size cannot (no truncate()).
  abi::setattr_in s{};
  s.valid = abi::fattr::size;
  CHECK(d.send(setattr_msg(e.nodeid, s)).error == EPERM);
  CHECK(hello->text == "Hello, World!\n");
  s.valid = abi::fattr::mode;
  s.mode = 0400;
  CHECK(d.send(setattr_msg(e.nodeid, s)).as<abi::attr_out>().attr.mode == (S_IFREG | 0400));
  CHECK(d.send(request::release(e.nodeid, 0)).error == 0);
  CHECK(hello->opens == hello->releases);
}

TEST_CASE("node tree: a failed OPEN (O_TRUNC without truncate()) leaves no open behind in the node", "[node][readonly]") {
  ro_tree t(std::make_shared<ro_node>(S_IFDIR | 0555));
  auto hello = std::make_shared<ro_node>(S_IFREG | 0644, "text");
  REQUIRE(t.add(t.root(), "hello", hello));
  kit::driver<ro_tree> d(t);
  const auto e = lookup(d, 1, "hello");
  CHECK(d.send(request::open(e.nodeid, O_WRONLY | O_TRUNC)).error == EPERM);
  CHECK(hello->open_count() == 0);
  // The kernel sends no RELEASE for a failed OPEN, so whatever the node's open() set up must not
  // outlive it: O_TRUNC on a node without truncate() is refused before the node opens anything
  // (a regression: it was refused after).
  CHECK(hello->opens == hello->releases);
}

TEST_CASE("node tree: node operations run without the tree's locks (open() may ask the tree for its path)", "[node][locks]") {
  cf::node::tree<path_asking_node> t;
  path_asking_node::owner = &t;
  kit::driver<cf::node::tree<path_asking_node>> d(t);
  auto dir = entry_of(d.send(request::mkdir(1, "d", 0755)));
  auto tmp = d.send(tmpfile_msg(dir.nodeid, S_IFREG | 0600, O_RDWR));
  CHECK(tmp.error == 0);
  auto c = d.send(request::create(dir.nodeid, "f", S_IFREG | 0644, O_RDWR));
  // CREATE calls the node's open() (and truncate() for O_TRUNC) after the names lock is released,
  // as the header promises: a node may read the tree from open() (a regression: the lock was
  // held, and the shared_mutex threw EDEADLK, or it hung).
  CHECK(c.error == 0);
  // OPEN (no tree lock held around the node's open()) works.
  auto l = d.send(request::lookup(dir.nodeid, "f"));
  REQUIRE(l.error == 0);
  auto n = t.at("d/f");
  REQUIRE(n);
  n->seen.clear();
  CHECK(d.send(request::open(l.as<abi::entry_out>().nodeid, O_RDONLY)).error == 0);
  CHECK(n->seen == "/d/f");
  path_asking_node::owner = nullptr;
}

// ---- unknown ids, notifications -------------------------------------------------------------------

TEST_CASE("node tree: ids the kernel was never given answer ESTALE; notifications before INIT are ENOTCONN", "[node][stale]") {
  mem_tree t;
  kit::driver<mem_tree> d(t);
  auto hidden = file_node(S_IFREG | 0644, "x");
  REQUIRE(t.add(t.root(), "hidden", hidden));  // in the tree, never looked up
  for (std::uint64_t id : {std::uint64_t{999}, std::uint64_t{0}, hidden->id()}) {
    INFO("id " << id);
    CHECK(d.send(request::getattr(id)).error == ESTALE);
    CHECK(d.send(request::read(id, 0, 0, 10)).error == ESTALE);
    CHECK(d.send(request::write(id, 0, 0, "x")).error == ESTALE);
    CHECK(d.send(request::lookup(id, "x")).error == ESTALE);
    abi::setattr_in s{};
    s.valid = abi::fattr::mode;
    CHECK(d.send(setattr_msg(id, s)).error == ESTALE);
    CHECK(d.send(request::open(id, O_RDONLY)).error == ESTALE);
    CHECK(d.send(request::readdir(id, 0, 0)).error == ESTALE);
    CHECK(d.send(request::readdirplus(id, 0, 0)).error == ESTALE);
    CHECK(d.send(readlink_msg(id)).error == ESTALE);
    CHECK(d.send(request::mkdir(id, "x", 0755)).error == ESTALE);
    CHECK(d.send(request::create(id, "x", S_IFREG | 0644, O_RDWR)).error == ESTALE);
    CHECK(d.send(mknod_msg(id, "x", S_IFIFO | 0644)).error == ESTALE);
    CHECK(d.send(symlink_msg(id, "x", "y")).error == ESTALE);
    CHECK(d.send(tmpfile_msg(id, S_IFREG | 0600, O_RDWR)).error == ESTALE);
    CHECK(d.send(request::unlink(id, "x")).error == ESTALE);
    CHECK(d.send(request::rmdir(id, "x")).error == ESTALE);
    CHECK(d.send(rename_msg(id, "x", 1, "y")).error == ESTALE);
    CHECK(d.send(rename_msg(1, "hidden", id, "y")).error == ESTALE);
    CHECK(d.send(link_msg(id, 1, "y")).error == ESTALE);
    CHECK(d.send(link_msg(1, id, "y")).error == EPERM);  // the root is a directory: EPERM first
    CHECK(d.send(request::flush(id, 0)).error == ESTALE);
    CHECK(d.send(fsync_msg(id, 0, false)).error == ESTALE);
    CHECK(d.send(fallocate_msg(id, 0, 0, 0, 1)).error == ESTALE);
    CHECK(d.send(lseek_msg(id, 0, 0, SEEK_DATA)).error == ESTALE);
    CHECK(d.send(getxattr_msg(id, "user.a", 10)).error == ESTALE);
    CHECK(d.send(listxattr_msg(id, 10)).error == ESTALE);
    CHECK(d.send(setxattr_msg(id, "user.a", "v")).error == ESTALE);
    CHECK(d.send(removexattr_msg(id, "user.a")).error == ESTALE);
    CHECK(d.send(request::release(id, 0)).error == 0);  // nothing to release
    CHECK_FALSE(d.send(request::forget(id, 1)).answered);
  }
  CHECK(t.known() == 1);
  CHECK(hidden->orphans == 0);
  CHECK(t.at("hidden") == hidden);

  // Never served: no connection to notify.
  CHECK(t.invalidate_data(*hidden).error_code() == ENOTCONN);
  CHECK(t.invalidate_data(t.root(), 0, 10).error_code() == ENOTCONN);
  CHECK(t.invalidate_entry(t.root(), "hidden").error_code() == ENOTCONN);
  // add and remove work without one.
  REQUIRE(t.add(t.root(), "more", file_node()));
  REQUIRE(t.remove(t.root(), "more"));
}

// ---- threads ------------------------------------------------------------------------------------

TEST_CASE("node tree: threads with their own drivers share a tree; lookup counts balance", "[node][threads]") {
  mem_tree t;
  auto shared = dir_node();
  REQUIRE(t.add(t.root(), "shared", shared));
  constexpr int files = 8;
  for (int k = 0; k < files; ++k) REQUIRE(t.add(*shared, "f" + std::to_string(k), file_node(S_IFREG | 0644, "data")));
  constexpr int iterations = 4000;
  std::latch start(4);  // all four begin together

  std::mutex problems_mutex;
  std::vector<std::string> problems;
  auto problem = [&](const std::string& what, int err) {
    std::lock_guard lock(problems_mutex);
    if (problems.size() < 20) problems.push_back(what + ": " + std::to_string(err));
  };

  // Readers: LOOKUP, GETATTR, OPEN, READ, RELEASE, FORGET, READDIRPLUS of the shared names.
  auto reader = [&](unsigned seed) {
    kit::driver<mem_tree> d(t);
    start.arrive_and_wait();
    std::mt19937 rng(seed);
    std::map<std::uint64_t, std::uint64_t> given;
    auto dir = d.send(request::lookup(1, "shared"));
    if (dir.error) return problem("lookup shared", dir.error);
    const auto dirid = dir.as<abi::entry_out>().nodeid;
    given[dirid]++;
    for (int i = 0; i < iterations; ++i) {
      const std::string name = "f" + std::to_string(rng() % files);
      auto l = d.send(request::lookup(dirid, name));
      if (l.error) {
        if (l.error != ENOENT) problem("lookup " + name, l.error);
        continue;
      }
      const auto id = l.as<abi::entry_out>().nodeid;
      given[id]++;
      if (auto g = d.send(request::getattr(id)); g.error) problem("getattr of a held node", g.error);
      auto o = d.send(request::open(id, O_RDONLY));
      if (o.error) {
        problem("open of a held node", o.error);
      } else {
        const auto fh = o.as<abi::open_out>().fh;
        if (auto r = d.send(request::read(id, fh, 0, 64)); r.error) problem("read", r.error);
        if (auto r = d.send(request::release(id, fh)); r.error) problem("release", r.error);
      }
      if (rng() % 2) {  // give some back at once
        d.send(request::forget(id, 1));
        given[id]--;
      }
      if (i % 64 == 0) {
        auto p = d.send(request::readdirplus(dirid, 0, 0));
        if (p.error) problem("readdirplus", p.error);
        for (const auto& e : p.plus_entries())
          if (e.lookup.nodeid) given[e.lookup.nodeid]++;
      }
      if (i % 97 == 0) {  // the filesystem's side reads the tree too
        if (auto n = t.at("shared/" + name)) {
          auto path = t.path(*n);
          if (!path && path.error_code() != ENOENT) problem("path", path.error_code());
        }
      }
    }
    std::vector<abi::forget_one> back;
    for (auto [id, n] : given)
      if (n) back.push_back({id, n});
    d.send(batch_forget_msg(back));
  };

  // A writer: CREATE, WRITE, RENAME over the shared names, UNLINK, and names made again.
  auto writer = [&] {
    kit::driver<mem_tree> d(t);
    start.arrive_and_wait();
    auto dir = d.send(request::lookup(1, "shared"));
    if (dir.error) return problem("writer lookup shared", dir.error);
    const auto dirid = dir.as<abi::entry_out>().nodeid;
    std::map<std::uint64_t, std::uint64_t> given;
    given[dirid]++;
    for (int i = 0; i < iterations; ++i) {
      const std::string tmp = "tmp" + std::to_string(i % 4);
      const std::string target = "f" + std::to_string(i % files);
      auto c = d.send(request::create(dirid, tmp, S_IFREG | 0644, O_RDWR));
      if (c.error) {
        problem("create " + tmp, c.error);
        continue;
      }
      const auto id = c.as<abi::entry_out>().nodeid;
      abi::open_out o;
      std::memcpy(&o, c.bytes.data() + sizeof(abi::entry_out), sizeof o);
      given[id]++;
      if (auto w = d.send(request::write(id, o.fh, 0, "new data " + std::to_string(i))); w.error) problem("write", w.error);
      if (auto r = d.send(request::release(id, o.fh)); r.error) problem("release", r.error);
      if (auto r = d.send(rename2_msg(dirid, tmp, dirid, target, i % 5 == 0 ? RENAME_EXCHANGE : 0)); r.error) {
        if (r.error != ENOENT) problem("rename " + tmp + " " + target, r.error);  // EXCHANGE with a removed target
      }
      if (i % 3 == 0) {
        const std::string victim = "f" + std::to_string((i + 3) % files);
        if (auto r = d.send(request::unlink(dirid, victim)); r.error && r.error != ENOENT) problem("unlink " + victim, r.error);
      }
      if (auto r = d.send(request::unlink(dirid, tmp)); r.error && r.error != ENOENT) problem("unlink " + tmp, r.error);
      if (i % 2 == 0) {  // forget as the kernel would, not in order
        d.send(request::forget(id, 1));
        given[id]--;
      }
    }
    std::vector<abi::forget_one> back;
    for (auto [id, n] : given)
      if (n) back.push_back({id, n});
    d.send(batch_forget_msg(back));
  };

  // The filesystem's side: tree.add and tree.remove in the same directory, path() and at().
  std::vector<std::shared_ptr<mem_node>> side_nodes;
  auto side = [&] {
    start.arrive_and_wait();
    for (int i = 0; i < iterations; ++i) {
      const std::string name = "side" + std::to_string(i % 4);
      auto n = file_node(S_IFREG | 0644, "side");
      if (auto r = t.add(*shared, name, n); !r) {
        if (r.error_code() != EEXIST) problem("add " + name, r.error_code());
        continue;
      }
      side_nodes.push_back(n);
      if (auto p = t.path(*n); !p && p.error_code() != ENOENT) problem("side path", p.error_code());
      if (auto r = t.remove(*shared, name); !r && r.error_code() != ENOENT) problem("remove " + name, r.error_code());
    }
  };

  {
    std::vector<std::thread> threads;
    threads.emplace_back(reader, 1u);
    threads.emplace_back(reader, 2u);
    threads.emplace_back(writer);
    threads.emplace_back(side);
    for (auto& th : threads) th.join();
  }
  INFO("problems: " << problems.size() << (problems.empty() ? "" : ", first: " + problems.front()));
  CHECK(problems.empty());
  CHECK(t.known() == 1);
  for (const auto& n : side_nodes) {  // each named once and removed again: orphaned once
    CHECK(n->attributes().nlink == 0);
    CHECK(n->orphans == 1);
  }

  // The names the tree keeps agree with its listing.
  kit::driver<mem_tree> d(t);
  const auto dirid = lookup(d, 1, "shared").nodeid;
  std::set<std::string> listed;
  for (const auto& e : d.send(request::readdir(dirid, 0, 0)).entries())
    if (e.name != "." && e.name != "..") {
      listed.insert(e.name);
      CHECK(t.at("shared/" + e.name) != nullptr);
      CHECK(t.at("shared/" + e.name)->id() == e.ino);
    }
  CHECK(shared->attributes().nlink == 2);
  CHECK(attr_of(d, dirid).size == static_cast<std::uint64_t>((listed.size() + 2) * 20));
  d.send(request::forget(dirid, 1));
  CHECK(t.known() == 1);
}
