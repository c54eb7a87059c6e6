// examples/passthrough's inode table in-process, driven through the test kit (corofuse/testing.hpp)
// over a tmpfs mounted for the test: no FUSE mount, but root (opening file handles needs
// CAP_DAC_READ_SEARCH). What is checked:
//   - a node whose inode was deleted behind the server's back answers ESTALE once its cached
//     descriptor is gone, and the name made again is a new node;
//   - the handoff state (save_state) restored into a new server: the same node ids serve, hard
//     links stay one node, a stale node stays stale;
//   - restore_state refuses a state that does not add up (a handle that opens another inode, one
//     longer than any handle, repeated node ids, two nodes indexed under one inode, a node with
//     neither handle nor descriptor, handles given to a server that cannot open them), and the
//     server it was given to serves on as before.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

// passthrough itself, its main renamed (examples/passthrough/passthrough.cpp is not changed). Its
// class lives outside the anonymous namespace its helpers are in: harmless in its own file, which
// g++ warns about once that file is included.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wsubobject-linkage"
#endif
#define main passthrough_main
#include "examples/passthrough/passthrough.cpp"
#undef main
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#include "corofuse/testing.hpp"

namespace abi = corofuse::abi;
namespace testing = corofuse::testing;
namespace request = corofuse::testing::request;
using corofuse::session::handoff_error;
using corofuse::session::handoff_reader;
using corofuse::session::handoff_writer;

namespace {

// A tmpfs on a fresh temporary directory (SOURCE); always detached and removed.
class backing_tmpfs {
 public:
  backing_tmpfs() {
    char tmpl[] = "/tmp/corofuse-state-src-XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    if (::mount("corofuse-state", dir_.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=0755") != 0) {
      ::rmdir(dir_.c_str());
      throw std::runtime_error("mounting a tmpfs failed");
    }
  }
  ~backing_tmpfs() {
    ::umount2(dir_.c_str(), MNT_DETACH);
    ::rmdir(dir_.c_str());
  }
  backing_tmpfs(const backing_tmpfs&) = delete;
  backing_tmpfs& operator=(const backing_tmpfs&) = delete;
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
};

void make_file(const std::string& path, const std::string& data) {
  int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0 || ::write(fd, data.data(), data.size()) != static_cast<ssize_t>(data.size()) || ::close(fd) != 0)
    throw std::runtime_error("cannot make " + path);
}

// A passthrough server object over `source`, as main() sets one up; `handles` false: as
// --inode-handles off. A cache of 16 descriptors (one per shard), so that eviction is easy to
// cause.
struct server_object {
  int source_fd = -1;
  std::unique_ptr<passthrough> fs;

  server_object(const std::string& source, bool handles) {
    source_fd = ::open(source.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st {};
    if (source_fd < 0 || ::fstat(source_fd, &st) != 0) throw std::runtime_error("cannot open SOURCE");
    std::string why;
    handle_config config;
    if (handles) {
      config = probe_handles(source_fd, st, why);
      if (!config.on) throw std::runtime_error("file handles unavailable: " + why);
      config.cache_capacity = 16;
    }
    options o;
    o.backing = cf::backing_speed::memory;
    fs = std::make_unique<passthrough>(source_fd, st, o, config);  // owns source_fd from here
  }
};

// A state as save_state() writes it, with copies of its descriptors (as SCM_RIGHTS would carry
// them) for a reader.
handoff_reader as_received(const handoff_writer& w) {
  std::vector<int> fds;
  for (int fd : w.fds()) fds.push_back(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
  return handoff_reader(w.bytes(), std::move(fds));
}

std::uint64_t node_of(testing::driver<passthrough>& d, std::uint64_t parent, const std::string& name) {
  auto r = d.send(request::lookup(parent, name));
  if (r.error != 0) throw std::runtime_error("lookup " + name + ": " + std::strerror(r.error));
  return r.as<abi::entry_out>().nodeid;
}

int getattr_error(testing::driver<passthrough>& d, std::uint64_t node) { return d.send(request::getattr(node)).error; }

// Looks up `count` files named other-N (made here): every descriptor of the small cache is
// replaced by theirs.
void churn_cache(testing::driver<passthrough>& d, const backing_tmpfs& src, int count) {
  for (int i = 0; i < count; ++i) {
    make_file(src.path("other-" + std::to_string(i)), "x");
    node_of(d, cf::root_ino, "other-" + std::to_string(i));
  }
}

// A state written by hand in save_state()'s format (the file-handle one).
constexpr std::uint64_t state_format_handles = 0xfffffffe'00000002ull;

struct node_record {
  std::uint64_t id;
  struct stat st;
  std::string handle;
  int handle_type = 0;
  int fd = -1;  // pinned: its descriptor
  bool indexed = true;
};

void put_node(handoff_writer& w, const node_record& n) {
  w.put(n.id);
  w.put(static_cast<std::uint64_t>(n.st.st_dev));
  w.put(static_cast<std::uint64_t>(n.st.st_ino));
  w.put(static_cast<std::uint32_t>(n.st.st_mode & S_IFMT));
  w.put(std::uint64_t{1});  // lookups
  w.put(std::int32_t{0});   // backing id
  w.put(std::uint32_t{0});  // backing refs
  w.put<std::uint8_t>(n.indexed ? 1 : 0);
  w.put_string(n.handle);
  w.put(n.handle_type);
  w.put<std::uint8_t>(n.fd >= 0 ? 1 : 0);
  if (n.fd >= 0) w.put_fd(n.fd);
}

handoff_writer state_of(const std::vector<node_record>& nodes, std::uint64_t next_id = 100) {
  handoff_writer w;
  w.put(state_format_handles);
  w.put(next_id);
  w.put(static_cast<std::uint64_t>(nodes.size()));
  for (const auto& n : nodes) put_node(w, n);
  w.put(std::uint64_t{0});  // no open files
  return w;
}

// A file's handle, stat and an O_PATH descriptor (closed with it).
struct backing_inode {
  node_record record;
  explicit backing_inode(const std::string& path, std::uint64_t id) {
    record.id = id;
    record.fd = ::open(path.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (record.fd < 0 || ::fstat(record.fd, &record.st) != 0) throw std::runtime_error("cannot open " + path);
    handle_buffer h;
    int mount_id = 0;
    if (!h.take(record.fd, mount_id)) throw std::runtime_error("no handle for " + path);
    record.handle = std::string(h.bytes());
    record.handle_type = h.get()->handle_type;
  }
  ~backing_inode() { ::close(record.fd); }
  node_record by_handle() const {
    node_record r = record;
    r.fd = -1;
    return r;
  }
};

}  // namespace

TEST_CASE("passthrough: a node whose inode was deleted behind its back answers ESTALE; the name made again is a new node",
          "[passthrough][state]") {
  REQUIRE(::geteuid() == 0);
  backing_tmpfs src;
  server_object s(src.dir(), true);
  testing::driver<passthrough> d(*s.fs);
  make_file(src.path("v"), "old");
  const auto old_node = node_of(d, cf::root_ino, "v");
  CHECK(getattr_error(d, old_node) == 0);
  REQUIRE(::unlink(src.path("v").c_str()) == 0);
  churn_cache(d, src, 64);  // its cached descriptor (which keeps the inode alive) is closed
  make_file(src.path("v"), "new data");
  CHECK(getattr_error(d, old_node) == ESTALE);
  const auto new_node = node_of(d, cf::root_ino, "v");
  CHECK(new_node != old_node);
  auto attr = d.send(request::getattr(new_node));
  REQUIRE(attr.error == 0);
  CHECK(attr.as<abi::attr_out>().attr.size == 8);
}

TEST_CASE("passthrough: a handed-over state serves the same nodes in the successor; hard links stay one node; stale stays stale",
          "[passthrough][state]") {
  REQUIRE(::geteuid() == 0);
  backing_tmpfs src;
  const bool predecessor_handles = GENERATE(true, false);
  INFO("predecessor with " << (predecessor_handles ? "file handles" : "descriptors per inode"));
  make_file(src.path("a"), "aaaa");
  REQUIRE(::link(src.path("a").c_str(), src.path("h").c_str()) == 0);
  REQUIRE(::mkdir(src.path("d").c_str(), 0755) == 0);
  make_file(src.path("d/b"), "bb");
  make_file(src.path("gone"), "g");

  server_object first(src.dir(), predecessor_handles);
  testing::driver<passthrough> d1(*first.fs);
  const auto a = node_of(d1, cf::root_ino, "a"), dir = node_of(d1, cf::root_ino, "d"), b = node_of(d1, dir, "b");
  const auto gone = node_of(d1, cf::root_ino, "gone");
  CHECK(node_of(d1, cf::root_ino, "h") == a);
  REQUIRE(::unlink(src.path("gone").c_str()) == 0);
  churn_cache(d1, src, 64);
  handoff_writer w;
  first.fs->save_state(w);

  server_object second(src.dir(), true);
  testing::driver<passthrough> d2(*second.fs);
  auto r = as_received(w);
  second.fs->restore_state(r);
  CHECK(node_of(d2, cf::root_ino, "a") == a);
  CHECK(node_of(d2, cf::root_ino, "h") == a);
  CHECK(node_of(d2, cf::root_ino, "d") == dir);
  CHECK(node_of(d2, dir, "b") == b);
  auto attr = d2.send(request::getattr(b));
  REQUIRE(attr.error == 0);
  CHECK(attr.as<abi::attr_out>().attr.size == 2);
  // Descriptors per inode keep a deleted inode alive (it is still the deleted file); handles do not.
  CHECK(getattr_error(d2, gone) == (predecessor_handles ? ESTALE : 0));
  // New nodes take ids past the predecessor's.
  make_file(src.path("later"), "l");
  CHECK(node_of(d2, cf::root_ino, "later") > gone);
}

TEST_CASE("passthrough: restore_state refuses a state that does not add up, and serves on as before", "[passthrough][state]") {
  REQUIRE(::geteuid() == 0);
  backing_tmpfs src;
  make_file(src.path("x"), "xx");
  make_file(src.path("y"), "yyy");
  server_object s(src.dir(), true);
  testing::driver<passthrough> d(*s.fs);
  const auto x_before = node_of(d, cf::root_ino, "x");

  backing_inode root(src.dir(), cf::root_ino), x(src.path("x"), 2), y(src.path("y"), 3);
  auto refused = [&](const handoff_writer& w, const std::string& why) {
    INFO(why);
    auto r = as_received(w);
    CHECK_THROWS_AS(s.fs->restore_state(r), handoff_error);
    // Nothing of it was taken: the server's own nodes serve on.
    CHECK(getattr_error(d, cf::root_ino) == 0);
    CHECK(node_of(d, cf::root_ino, "x") == x_before);
  };
  {  // the baseline: this state is taken (by another server)
    server_object other(src.dir(), true);
    auto r = as_received(state_of({root.record, x.by_handle(), y.by_handle()}));
    CHECK_NOTHROW(other.fs->restore_state(r));
  }
  node_record swapped = x.by_handle();
  swapped.handle = y.record.handle;  // x's number, y's handle
  refused(state_of({root.record, swapped}), "a handle that opens another inode");
  node_record too_long = x.by_handle();
  too_long.handle.assign(MAX_HANDLE_SZ + 1, 'h');
  refused(state_of({root.record, too_long}), "a handle longer than any");
  node_record twice = y.by_handle();
  twice.id = x.record.id;
  refused(state_of({root.record, x.by_handle(), twice}), "a node id given twice");
  node_record x_again = x.record;  // the same inode, by its descriptor, under another id
  x_again.id = 4;
  refused(state_of({root.record, x.by_handle(), x_again}), "two nodes indexed under one inode");
  node_record nothing = x.by_handle();
  nothing.handle.clear();
  refused(state_of({root.record, nothing}), "a node with neither handle nor descriptor");
  refused(state_of({root.record, x.by_handle()}, 2), "a node id past the counter");
  refused(state_of({x.by_handle()}), "no root");
  {
    server_object without_handles(src.dir(), false);
    auto r = as_received(state_of({root.record, x.by_handle()}));
    CHECK_THROWS_AS(without_handles.fs->restore_state(r), handoff_error);
  }
}
