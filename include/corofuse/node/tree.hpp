// A filesystem as a tree of node objects: the tree assigns node ids, keeps names, hard links and
// link counts, counts the kernel's lookups and answers FORGET, keeps attributes and listings. The
// filesystem writes a node type (node/inode.hpp) with the operations it supports, builds its tree,
// and serves the tree like any filesystem:
//
//   struct file : cf::node::inode<file> {
//     using inode::inode;
//     std::string text;
//     off_t size() const { return text.size(); }
//     cf::result<std::size_t> read(cf::context&, cf::file_info&, std::span<std::byte> out, off_t off);
//   };
//   cf::node::tree<file> fs;
//   fs.add(fs.root(), "greeting", std::make_shared<file>(S_IFREG | 0444));
//   return cf::session::main(fs, argc, argv, "...");
//
// A node's operations, each optional; the tree offers the kernel exactly those its node type has
// (a tree whose nodes cannot be written announces no WRITE; SETATTR is always answered, from the
// attributes the tree keeps: a read-only filesystem mounts with -o ro), and calls them directly:
// the compiler inlines them into the dispatch. Those marked (async) may also return io::task<...> and co_await
// I/O, like raw handlers (README: Writing a filesystem):
//   read(context&, file_info&, std::span<std::byte>, off_t)        -> result<size_t | read_reply> (async)
//   write(context&, file_info&, std::span<const std::byte>, off_t) -> result<size_t>             (async)
//   fsync(context&, file_info&, bool datasync), flush(context&, file_info&) -> result<>       (async)
//   size() const -> off_t; blocks() const -> blkcnt_t             a file's size and 512-byte blocks
//   truncate(context&, off_t) -> result<>                          SETATTR's size, O_TRUNC
//   open(context&, int flags) -> result<open_reply>;  release(context&, file_info&) -> result<>
//   fallocate(context&, file_info&, int mode, off_t, off_t) -> result<>
//   lseek(context&, file_info&, off_t, int whence) -> result<off_t>
//   getxattr / listxattr / setxattr / removexattr: the raw handlers' shapes without the ino
//   readlink(context&) -> result<std::string>     a computed target (otherwise made::target)
//   statfs(context&) -> result<struct statvfs>     asked of the root
//   orphaned()                                     no name and no open file left: data may go
//                                                  (again after the filesystem names it anew)
// A node type constructible from `made` makes the tree writable by clients: CREATE, MKNOD, MKDIR,
// SYMLINK, LINK, UNLINK, RMDIR, RENAME and O_TMPFILE are answered by the tree (new nodes are
// std::make_shared<Node>(made{...}, directory), or (made{...})), with tmpfs's rules for modes,
// owners, setgid directories, link counts and times.
//
// Threads: every queue serves at once. Node ids resolve through 64 sharded tables (a short mutex
// per shard, no lock shared by all CPUs); attributes have a reader-writer lock per node; names
// have one reader-writer lock per tree (LOOKUP and READDIR share it, name changes take it
// exclusively). A node's own operations run without any of the tree's locks held, so a node
// guards its own data and may call the tree; size() and blocks() alone may be asked while a
// READDIRPLUS walks a directory with the names lock held shared: they must not call the tree.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <concepts>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include <range/v3/view/concat.hpp>
#include <range/v3/view/drop.hpp>
#include <range/v3/view/single.hpp>
#include <range/v3/view/subrange.hpp>
#include <range/v3/view/transform.hpp>

#include "corofuse/fs/connection.hpp"
#include "corofuse/fs/context.hpp"
#include "corofuse/fs/dispatch.hpp"
#include "corofuse/fs/listing.hpp"
#include "corofuse/fs/result.hpp"
#include "corofuse/fs/types.hpp"
#include "corofuse/io/task.hpp"
#include "corofuse/node/inode.hpp"

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

namespace corofuse::node {

// clang-format off
namespace ops {
using bytes = std::span<std::byte>;
using const_bytes = std::span<const std::byte>;
template <typename N> concept reads = requires(N& n, context& c, file_info& fi, bytes b, off_t o) { n.read(c, fi, b, o); };
template <typename N> concept writes = requires(N& n, context& c, file_info& fi, const_bytes b, off_t o) { n.write(c, fi, b, o); };
template <typename N> concept fsyncs = requires(N& n, context& c, file_info& fi, bool d) { n.fsync(c, fi, d); };
template <typename N> concept flushes = requires(N& n, context& c, file_info& fi) { n.flush(c, fi); };
template <typename N> concept sized = requires(const N& n) { { n.size() } -> std::convertible_to<off_t>; };
template <typename N> concept counts_blocks = requires(const N& n) { { n.blocks() } -> std::convertible_to<blkcnt_t>; };
template <typename N> concept truncates = requires(N& n, context& c, off_t o) { { n.truncate(c, o) } -> std::same_as<result<>>; };
template <typename N> concept opens = requires(N& n, context& c, int f) { { n.open(c, f) } -> std::same_as<result<open_reply>>; };
template <typename N> concept releases = requires(N& n, context& c, file_info& fi) { { n.release(c, fi) } -> std::same_as<result<>>; };
template <typename N> concept fallocates = requires(N& n, context& c, file_info& fi, int m, off_t o) { { n.fallocate(c, fi, m, o, o) } -> std::same_as<result<>>; };
template <typename N> concept seeks = requires(N& n, context& c, file_info& fi, off_t o, int w) { { n.lseek(c, fi, o, w) } -> std::same_as<result<off_t>>; };
template <typename N> concept gets_xattrs = requires(N& n, context& c, std::string_view s, bytes b) { { n.getxattr(c, s, b) } -> std::same_as<result<std::size_t>>; };
template <typename N> concept lists_xattrs = requires(N& n, context& c, bytes b) { { n.listxattr(c, b) } -> std::same_as<result<std::size_t>>; };
template <typename N> concept sets_xattrs = requires(N& n, context& c, std::string_view s, const_bytes b, int f) { { n.setxattr(c, s, b, f) } -> std::same_as<result<>>; };
template <typename N> concept removes_xattrs = requires(N& n, context& c, std::string_view s) { { n.removexattr(c, s) } -> std::same_as<result<>>; };
template <typename N> concept reads_links = requires(N& n, context& c) { { n.readlink(c) } -> std::same_as<result<std::string>>; };
template <typename N> concept reports_space = requires(N& n, context& c) { { n.statfs(c) } -> std::same_as<result<struct statvfs>>; };
template <typename N> concept notices_orphans = requires(N& n) { n.orphaned(); };
// Clients may make files: the tree builds new nodes from `made`, and the directory they go in when
// the node type takes it (a node that shares state with its directory: a mount's space limit).
template <typename N> concept makeable_in = std::constructible_from<N, const made&, N&>;
template <typename N> concept makeable = makeable_in<N> || std::constructible_from<N, const made&>;
}  // namespace ops
// clang-format on

template <typename Node>
class tree {
 public:
  static constexpr std::size_t name_max = 255;

  // A tree over `root` (a directory). Without one, a node type constructible from `made` gets a
  // root directory of mode 0755 owned by the serving user.
  explicit tree(std::shared_ptr<Node> root = nullptr) : root_(std::move(root)) {
    static_assert(std::is_base_of_v<inode<Node>, Node>, "corofuse: a tree's node type derives from node::inode<itself>");
    if (!root_) {
      if constexpr (std::constructible_from<Node, const made&>) {
        root_ = std::make_shared<Node>(made{S_IFDIR | 0755, ::getuid(), ::getgid(), 0, {}, {}});
      } else {
        throw std::invalid_argument("corofuse::node::tree: no root given, and the node type cannot make one from node::made");
      }
    }
    if (!root_->is_dir()) throw std::invalid_argument("corofuse::node::tree: the root must be a directory");
    root_->id_ = root_ino;
    root_->generation_ = generation_;
    root_->attrs_.nlink = 2;
    shard_of(root_ino).nodes.emplace(root_ino, root_);
  }
  tree(const tree&) = delete;
  tree& operator=(const tree&) = delete;

  Node& root() const noexcept { return *root_; }

  // ---- building and changing the tree from the filesystem's side ------------------------------

  // Names `child` `name` in the directory `dir`: a new node (it gets its id here) or another name
  // for a file (a hard link). A node belongs to one tree; a directory has one name (EMLINK for a
  // second) and never goes inside itself (EINVAL). While mounted, the kernel forgets a cached "no
  // such name". Not from a handler serving a request on `dir` itself (see notifications below).
  result<> add(Node& dir, std::string_view name, std::shared_ptr<Node> child) {
    if (!child) return error(EINVAL);
    if (int e = check_name(name)) return error(e);
    {
      std::unique_lock names(names_);
      if (!dir.is_dir()) return error(ENOTDIR);
      if (dir.children_.count(name)) return error(EEXIST);
      if (child->is_dir() && !child->links_.empty()) return error(EMLINK);                                    // a directory has one name
      if (child.get() == root_.get() || (child->is_dir() && is_ancestor(*child, dir))) return error(EINVAL);  // no loops
      if (child->id_ == 0) adopt(*child);
      link_child(dir, name, std::move(child));
    }
    if (dir.id_ != 0 && connected()) (void)conn_.inval_entry(dir.id_, name);
    return ok();
  }

  // Removes the name `name` from `dir` (a directory only when empty). While mounted, the kernel
  // drops the name too; open files keep working.
  result<> remove(Node& dir, std::string_view name) {
    std::shared_ptr<Node> gone;
    {
      std::unique_lock names(names_);
      auto it = dir.children_.find(name);
      if (it == dir.children_.end()) return error(ENOENT);
      gone = it->second.node;
      if (gone->is_dir() && !gone->children_.empty()) return error(ENOTEMPTY);
      unlink_child(dir, it);
    }
    if (connected()) (void)conn_.delete_entry(dir.id_, gone->id_, name);
    notice_orphan(*gone);
    return ok();
  }

  // Changes a node's stored attributes from the filesystem's side: `f(node::attributes&)` runs
  // under the node's lock. For a tree built from existing data (naming a child stamps "now" on the
  // directory's mtime, as any name change does), or a change made behind the kernel's back (then
  // also invalidate_data). The file type and the link count stay the tree's.
  template <typename F>
  void edit_attributes(Node& n, F&& f) {
    std::unique_lock lock(n.attr_lock_);
    attributes a = n.attrs_;
    f(a);
    a.mode = (a.mode & 07777) | n.type();
    a.nlink = n.attrs_.nlink;
    n.attrs_ = a;
  }

  // The node at `path` ("a/b/c", from the root), or null.
  std::shared_ptr<Node> at(std::string_view path) const {
    std::shared_lock names(names_);
    Node* n = root_.get();
    while (!path.empty()) {
      const auto slash = path.find('/');
      const std::string_view part = path.substr(0, slash);
      path = slash == std::string_view::npos ? std::string_view{} : path.substr(slash + 1);
      if (part.empty() || part == ".") continue;
      auto it = n->children_.find(part);
      if (it == n->children_.end()) return nullptr;
      n = it->second.node.get();
    }
    return n->shared_from_this();
  }

  // The node's path from the root ("/" for the root; the first of a hard-linked file's names).
  // ENOENT for a node without a name (unlinked, or not in the tree).
  result<std::string> path(const Node& n) const {
    std::shared_lock names(names_);
    std::vector<std::string_view> parts;
    for (const Node* p = &n; p != root_.get();) {
      if (p->links_.empty()) return error(ENOENT);
      parts.push_back(p->links_.front().name);
      p = p->links_.front().parent;
    }
    std::string out;
    for (auto it = parts.rbegin(); it != parts.rend(); ++it) out.append("/").append(*it);
    return out.empty() ? std::string("/") : out;
  }

  // ---- notifications -----------------------------------------------------------------------
  // For changes the kernel did not make itself (the data changed behind the mount, a name came or
  // went): each is one write to the device. ENOENT when the kernel has nothing cached (nothing to
  // do). Never from a handler serving a request on the same node or directory: the kernel holds
  // the lock the notification needs until that request is answered.

  // The kernel drops its cached data of `n` in [offset, offset + len) (len 0: to the end), and its
  // cached attributes.
  result<> invalidate_data(const Node& n, std::int64_t offset = 0, std::int64_t len = 0) const {
    if (!connected()) return error(ENOTCONN);
    return conn_.inval_inode(n.id_, offset, len);
  }
  // The kernel forgets what it cached of the name `name` in `dir`.
  result<> invalidate_entry(const Node& dir, std::string_view name) const {
    if (!connected()) return error(ENOTCONN);
    return conn_.inval_entry(dir.id_, name);
  }

  // Nodes the kernel holds (looked up and not yet forgotten), the root included.
  std::size_t known() const {
    std::size_t n = 0;
    for (auto& s : shards_) {
      std::lock_guard lock(s.mutex);
      n += s.nodes.size();
    }
    return n;
  }

  // ---- the handlers ------------------------------------------------------------------------

  // A writable tree clears setuid and setgid itself on writes, truncations and chown (tmpfs's
  // rule, with what the kernel says of the caller's privilege), so the kernel leaves it to us.
  std::uint64_t init_flags() const requires ops::makeable<Node> { return abi::init_flag::handle_killpriv_v2; }

  void init(const connection& c) {
    conn_ = c;
    connected_.store(true, std::memory_order_release);
  }

  result<entry> lookup(context&, ino parent, std::string_view name) {
    if (name.size() > name_max) return error(ENAMETOOLONG);
    std::shared_lock names(names_);
    auto dir = find(parent);
    if (!dir) return error(ESTALE);
    if (!dir->is_dir()) return error(ENOTDIR);
    auto it = dir->children_.find(name);
    if (it == dir->children_.end()) return error(ENOENT);
    std::shared_ptr<Node> n = it->second.node;
    names.unlock();  // the attributes (size() is the node's) without the names lock
    return entry_of(*n, true);
  }

  void forget(context&, ino i, std::uint64_t n) {
    std::shared_ptr<Node> last;  // a node nothing else holds ends here, after the shard's lock
    shard& s = shard_of(i);
    std::lock_guard lock(s.mutex);
    auto it = s.nodes.find(i);
    if (it == s.nodes.end()) return;
    Node& nd = *it->second;
    nd.lookups_ = nd.lookups_ > n ? nd.lookups_ - n : 0;  // saturating: a FORGET of more than given
    if (nd.lookups_ == 0 && i != root_ino) {
      last = std::move(it->second);
      s.nodes.erase(it);
    }
  }

  result<attr> getattr(context&, ino i, const file_info*) {
    auto n = find(i);
    if (!n) return error(ESTALE);
    return attr{stat_of(*n)};
  }

  result<attr> setattr(context& c, ino i, const set_attr& s, const file_info*) {
    auto n = find(i);
    if (!n) return error(ESTALE);
    const timespec t = now();
    if (s.has_size()) {
      if constexpr (ops::truncates<Node>) {
        if (n->is_dir()) return error(EISDIR);
        if (s.size < 0) return error(EINVAL);
        if (auto r = n->truncate(c, s.size); !r) return error(r.error_code());
      } else {
        return error(n->is_dir() ? EISDIR : EPERM);
      }
    }
    {
      std::unique_lock lock(n->attr_lock_);
      attributes& a = n->attrs_;
      if (s.has_size()) a.mtime = t;
      if (s.has_mode()) a.mode = (a.mode & S_IFMT) | (s.mode & 07777);
      if (s.has_uid()) a.uid = s.uid;
      if (s.has_gid()) a.gid = s.gid;
      if (s.kill_suidgid()) {
        if (s.has_uid() || s.has_gid()) {
          // chown: setuid goes; setgid only with group execute (without it, it marks mandatory
          // locking and stays), whoever the caller.
          a.mode &= ~static_cast<mode_t>(S_ISUID | ((a.mode & S_IXGRP) ? S_ISGID : 0));
        } else {
          drop_suidgid(a, c);  // a truncation by a caller without CAP_FSETID
        }
      }
      if (s.has_atime()) a.atime = s.atime.tv_nsec == UTIME_NOW ? t : s.atime;
      if (s.has_mtime()) a.mtime = s.mtime.tv_nsec == UTIME_NOW ? t : s.mtime;
      a.ctime = s.has_ctime() ? s.ctime : t;
    }
    return attr{stat_of(*n)};
  }

  result<std::string> readlink(context& c, ino i) {
    auto n = find(i);
    if (!n) return error(ESTALE);
    if (!S_ISLNK(n->type())) return error(EINVAL);
    if constexpr (ops::reads_links<Node>) {
      return n->readlink(c);
    } else {
      return n->target();
    }
  }

  result<open_reply> open(context& c, ino i, int flags) {
    auto n = find(i);
    if (!n) return error(ESTALE);
    if (n->is_dir() && (flags & O_ACCMODE) != O_RDONLY) return error(EISDIR);
    return open_node(c, *n, flags);
  }

  result<> release(context& c, ino i, file_info& fi) {
    auto n = find(i);
    if (!n) return ok();
    result<> r;
    if constexpr (ops::releases<Node>) r = n->release(c, fi);
    std::uint32_t open = n->opens_.load(std::memory_order_relaxed);
    do {
      if (open == 0) return r;  // a RELEASE without its OPEN: nothing to count
    } while (!n->opens_.compare_exchange_weak(open, open - 1, std::memory_order_acq_rel));
    if (open == 1) {
      {
        std::unique_lock lock(n->attr_lock_);
        if (n->attrs_.nlink == 0) n->linkable_ = false;  // a closed O_TMPFILE file can no longer be named
      }
      notice_orphan(*n);
    }
    return r;
  }

  auto read(context& c, ino i, file_info& fi, ops::bytes out, off_t off) requires ops::reads<Node> {
    using R = decltype(std::declval<Node&>().read(c, fi, out, off));
    return on_node<R>(
        i, [&c, &fi, out, off](Node& n) { return n.read(c, fi, out, off); },
        [](auto&& r, Node& n) {
          if (r) accessed(n);
          return std::move(r);
        });
  }

  auto write(context& c, ino i, file_info& fi, ops::const_bytes in, off_t off) requires ops::writes<Node> {
    using R = decltype(std::declval<Node&>().write(c, fi, in, off));
    return on_node<R>(
        i, [&c, &fi, in, off](Node& n) { return n.write(c, fi, in, off); },
        [&c](auto&& r, Node& n) {
          if (r) modified(n, c.kill_suidgid() ? &c : nullptr);
          return std::move(r);
        });
  }

  auto fsync(context& c, ino i, file_info& fi, bool datasync) requires ops::fsyncs<Node> {
    using R = decltype(std::declval<Node&>().fsync(c, fi, datasync));
    return on_node<R>(
        i, [&c, &fi, datasync](Node& n) { return n.fsync(c, fi, datasync); }, [](auto&& r, Node&) { return std::move(r); });
  }

  auto flush(context& c, ino i, file_info& fi) requires ops::flushes<Node> {
    using R = decltype(std::declval<Node&>().flush(c, fi));
    return on_node<R>(
        i, [&c, &fi](Node& n) { return n.flush(c, fi); }, [](auto&& r, Node&) { return std::move(r); });
  }

  result<> fallocate(context& c, ino i, file_info& fi, int mode, off_t off, off_t len) requires ops::fallocates<Node> {
    auto n = find(i);
    if (!n) return error(ESTALE);
    if (!n->is_file()) return error(ENODEV);
    auto r = n->fallocate(c, fi, mode, off, len);
    if (r) modified(*n, nullptr);
    return r;
  }

  result<off_t> lseek(context& c, ino i, file_info& fi, off_t off, int whence) requires ops::seeks<Node> {
    auto n = find(i);
    if (!n) return error(ESTALE);
    return n->lseek(c, fi, off, whence);
  }

  result<std::size_t> getxattr(context& c, ino i, std::string_view name, ops::bytes out) requires ops::gets_xattrs<Node> {
    auto n = find(i);
    if (!n) return error(ESTALE);
    return n->getxattr(c, name, out);
  }
  result<std::size_t> listxattr(context& c, ino i, ops::bytes out) requires ops::lists_xattrs<Node> {
    auto n = find(i);
    if (!n) return error(ESTALE);
    return n->listxattr(c, out);
  }
  result<> setxattr(context& c, ino i, std::string_view name, ops::const_bytes value, int flags) requires ops::sets_xattrs<Node> {
    auto n = find(i);
    if (!n) return error(ESTALE);
    auto r = n->setxattr(c, name, value, flags);
    if (r) changed(*n);
    return r;
  }
  result<> removexattr(context& c, ino i, std::string_view name) requires ops::removes_xattrs<Node> {
    auto n = find(i);
    if (!n) return error(ESTALE);
    auto r = n->removexattr(c, name);
    if (r) changed(*n);
    return r;
  }

  result<struct statvfs> statfs(context& c, ino) requires ops::reports_space<Node> { return root_->statfs(c); }

  // One entry of a listing: what READDIR packs, and the lookup READDIRPLUS asks for (counted only
  // for the entries the kernel receives).
  struct listed {
    std::string_view name;
    corofuse::ino ino = 0;
    std::uint32_t type = 0;
    std::uint64_t next_offset = 0;
    Node* node = nullptr;
    tree* owner = nullptr;
    entry lookup() const { return owner->entry_of(*node, true); }
  };

  // ".", "..", then the children in the order they were named, each resuming after itself: a view
  // over the directory's own maps, walked while the names lock is held shared.
  auto readdir(context&, ino i, file_info&, off_t off) {
    std::shared_lock names(names_);
    auto dir = find(i);
    using listing = locked_listing<std::shared_lock<std::shared_mutex>, decltype(listing_of(*root_, *root_, 0))>;
    if (!dir) return result<listing>(error(ESTALE));
    if (!dir->is_dir()) return result<listing>(error(ENOTDIR));
    Node& up = dir->links_.empty() ? *dir : *dir->links_.front().parent;
    return result<listing>(listing(std::move(names), listing_of(*dir, up, off)));
  }

  // ---- names, for a tree whose clients may make files ----------------------------------------

  result<entry> mknod(context& c, ino parent, std::string_view name, mode_t mode, dev_t rdev, mode_t) requires ops::makeable<Node> {
    const mode_t type = mode & S_IFMT;
    if (type != S_IFREG && type != S_IFIFO && type != S_IFCHR && type != S_IFBLK && type != S_IFSOCK) return error(EINVAL);
    std::unique_lock names(names_);
    auto made_node = make_child(c, parent, name, made{mode, c.uid(), 0, rdev, {}, {}});
    if (!made_node) return error(made_node.error_code());
    return entry_of(**made_node, true);
  }

  result<entry> mkdir(context& c, ino parent, std::string_view name, mode_t mode, mode_t) requires ops::makeable<Node> {
    std::unique_lock names(names_);
    auto made_node = make_child(c, parent, name, made{static_cast<mode_t>(S_IFDIR | (mode & 07777)), c.uid(), 0, 0, {}, {}});
    if (!made_node) return error(made_node.error_code());
    return entry_of(**made_node, true);
  }

  result<entry> symlink(context& c, ino parent, std::string_view name, std::string_view target) requires ops::makeable<Node> {
    if (target.size() >= PATH_MAX) return error(ENAMETOOLONG);
    std::unique_lock names(names_);
    auto made_node = make_child(c, parent, name, made{S_IFLNK | 0777, c.uid(), 0, 0, target, {}});
    if (!made_node) return error(made_node.error_code());
    return entry_of(**made_node, true);
  }

  // The name is found or made under the names lock; the node is opened after it (its open() and
  // truncate() run without the tree's locks), and counted as the kernel's only once it is open.
  result<created> create(context& c, ino parent, std::string_view name, mode_t mode, mode_t, int flags) requires ops::makeable<Node> {
    std::shared_ptr<Node> n;
    bool made_now = false;
    {
      std::unique_lock names(names_);
      auto dir = find(parent);
      if (!dir) return error(ESTALE);
      if (!dir->is_dir()) return error(ENOTDIR);
      if (auto it = dir->children_.find(name); it != dir->children_.end()) {  // made meanwhile: open it
        if (flags & O_EXCL) return error(EEXIST);
        n = it->second.node;
        if (n->is_dir()) return error(EISDIR);
        // The kernel takes nothing but a regular file from CREATE (anything else fails the open
        // with EIO): a fifo, device, socket or symlink made meanwhile under the name is EEXIST.
        if (!n->is_file()) return error(EEXIST);
      } else {
        auto made_node = make_child(c, parent, name, made{static_cast<mode_t>(S_IFREG | (mode & 07777)), c.uid(), 0, 0, {}, {}});
        if (!made_node) return error(made_node.error_code());
        n = (*made_node)->shared_from_this();
        made_now = true;
      }
    }
    // A new file is empty: O_TRUNC has nothing to do (and its mtime is its birth).
    auto r = open_node(c, *n, made_now ? flags & ~O_TRUNC : flags);
    if (!r) return error(r.error_code());
    return created{entry_of(*n, true), *r};
  }

  result<created> tmpfile(context& c, ino parent, mode_t mode, mode_t, int flags) requires ops::makeable<Node> {
    auto dir = find(parent);
    if (!dir) return error(ESTALE);
    if (!dir->is_dir()) return error(ENOTDIR);
    auto n = new_node(made{static_cast<mode_t>(S_IFREG | (mode & 07777)), c.uid(), group_for(*dir, c), 0, {}, {}}, *dir);
    adopt(*n);
    n->linkable_ = true;  // nameless until linkat gives it one
    open_reply r{};
    if constexpr (ops::opens<Node>) {
      auto o = n->open(c, flags);
      if (!o) return error(o.error_code());
      r = *o;
    }
    n->opens_.store(1, std::memory_order_relaxed);
    return created{entry_of(*n, true), r};
  }

  result<entry> link(context&, ino i, ino newparent, std::string_view newname) requires ops::makeable<Node> {
    if (int e = check_name(newname)) return error(e);
    std::unique_lock names(names_);
    auto n = find(i);
    if (!n) return error(ESTALE);
    if (n->is_dir()) return error(EPERM);
    auto dir = find(newparent);
    if (!dir) return error(ESTALE);
    if (!dir->is_dir()) return error(ENOTDIR);
    if (dir->children_.count(newname)) return error(EEXIST);
    if (dir->attributes().nlink == 0) return error(ENOENT);  // a removed directory takes no new names
    {
      std::shared_lock lock(n->attr_lock_);
      if (n->attrs_.nlink == 0 && !n->linkable_) return error(ENOENT);  // only O_TMPFILE files get a name back
    }
    link_child(*dir, newname, n);
    {
      std::unique_lock lock(n->attr_lock_);
      n->linkable_ = false;
    }
    return entry_of(*n, true);
  }

  result<> unlink(context&, ino parent, std::string_view name) requires ops::makeable<Node> {
    std::shared_ptr<Node> gone;
    {
      std::unique_lock names(names_);
      auto dir = find(parent);
      if (!dir) return error(ESTALE);
      auto it = dir->children_.find(name);
      if (it == dir->children_.end()) return error(ENOENT);
      if (it->second.node->is_dir()) return error(EISDIR);
      gone = it->second.node;
      unlink_child(*dir, it);
    }
    notice_orphan(*gone);
    return ok();
  }

  result<> rmdir(context&, ino parent, std::string_view name) requires ops::makeable<Node> {
    std::unique_lock names(names_);
    auto dir = find(parent);
    if (!dir) return error(ESTALE);
    auto it = dir->children_.find(name);
    if (it == dir->children_.end()) return error(ENOENT);
    std::shared_ptr<Node> gone = it->second.node;
    if (!gone->is_dir()) return error(ENOTDIR);
    if (!gone->children_.empty()) return error(ENOTEMPTY);
    unlink_child(*dir, it);
    names.unlock();
    notice_orphan(*gone);
    return ok();
  }

  result<> rename(context&, ino parent, std::string_view name, ino newparent, std::string_view newname,
                  unsigned flags) requires ops::makeable<Node> {
    if (flags & ~static_cast<unsigned>(RENAME_NOREPLACE | RENAME_EXCHANGE)) return error(EINVAL);
    if ((flags & RENAME_NOREPLACE) && (flags & RENAME_EXCHANGE)) return error(EINVAL);
    if (int e = check_name(newname)) return error(e);
    std::shared_ptr<Node> replaced;
    {
      std::unique_lock names(names_);
      auto from = find(parent);
      auto to = find(newparent);
      if (!from || !to) return error(ESTALE);
      if (!to->is_dir()) return error(ENOTDIR);
      auto src = from->children_.find(name);
      if (src == from->children_.end()) return error(ENOENT);
      std::shared_ptr<Node> moving = src->second.node;
      auto dst = to->children_.find(newname);
      Node* target = dst == to->children_.end() ? nullptr : dst->second.node.get();
      if (target && (flags & RENAME_NOREPLACE)) return error(EEXIST);
      if (target == moving.get()) return ok();  // the same inode under both names: nothing to do
      // A directory may not move into its own subtree.
      if (moving->is_dir() && is_ancestor(*moving, *to)) return error(EINVAL);
      if ((flags & RENAME_EXCHANGE) && !target) return error(ENOENT);
      if ((flags & RENAME_EXCHANGE) && target->is_dir() && is_ancestor(*target, *from)) return error(EINVAL);
      if (target && !(flags & RENAME_EXCHANGE)) {
        if (flags & RENAME_NOREPLACE) return error(EEXIST);
        if (moving->is_dir()) {
          if (!target->is_dir()) return error(ENOTDIR);
          if (!target->children_.empty()) return error(ENOTEMPTY);
        } else if (target->is_dir()) {
          return error(EISDIR);
        }
      }
      const timespec t = now();
      if (flags & RENAME_EXCHANGE) {
        std::swap(src->second.node, dst->second.node);
        relink(*moving, *from, name, *to, newname);
        relink(*target, *to, newname, *from, name);
        if (from != to) {
          move_dir_count(*moving, *from, *to);
          move_dir_count(*target, *to, *from);
        }
        for (Node* n : {moving.get(), target}) set_times(*n, t, false, true);
        for (Node* d : {from.get(), to.get()}) set_times(*d, t, true, true);
        return ok();
      }
      if (target) {  // replaced: it loses this name
        replaced = dst->second.node;
        unlink_child(*to, dst);
      }
      erase_entry(*from, src);
      relink(*moving, *from, name, *to, newname);
      add_entry(*to, newname, moving);
      if (from != to) move_dir_count(*moving, *from, *to);
      set_times(*moving, t, false, true);
      for (Node* d : {from.get(), to.get()}) set_times(*d, t, true, true);
    }
    if (replaced) notice_orphan(*replaced);
    return ok();
  }

 private:
  struct alignas(64) shard {
    mutable std::mutex mutex;
    std::unordered_map<corofuse::ino, std::shared_ptr<Node>> nodes;
  };
  static constexpr std::size_t shard_count = 64;
  shard& shard_of(corofuse::ino i) const { return shards_[i % shard_count]; }

  bool connected() const noexcept { return connected_.load(std::memory_order_acquire); }

  static int check_name(std::string_view name) {
    if (name.empty() || name == "." || name == ".." || name.find('/') != std::string_view::npos) return EINVAL;
    return name.size() > name_max ? ENAMETOOLONG : 0;
  }

  // The node the kernel names `i`, kept alive for the caller; null when the kernel does not know it.
  std::shared_ptr<Node> find(corofuse::ino i) const {
    shard& s = shard_of(i);
    std::lock_guard lock(s.mutex);
    auto it = s.nodes.find(i);
    return it == s.nodes.end() ? nullptr : it->second;
  }

  static std::shared_ptr<Node> new_node(const made& m, Node& dir) requires ops::makeable<Node> {
    if constexpr (ops::makeable_in<Node>) {
      return std::make_shared<Node>(m, dir);
    } else {
      return std::make_shared<Node>(m);
    }
  }

  // Gives a new node its id (never reused: a 64-bit counter) and the tree's generation.
  void adopt(Node& n) {
    n.id_ = next_id_.fetch_add(1, std::memory_order_relaxed);
    n.generation_ = generation_;
  }

  // The reply to a lookup of `n`; counting it puts `n` in the id table until the kernel forgets it.
  entry entry_of(Node& n, bool count) {
    if (count) {
      shard& s = shard_of(n.id_);
      std::lock_guard lock(s.mutex);
      if (n.lookups_++ == 0) s.nodes.emplace(n.id_, n.shared_from_this());
    }
    entry e;
    e.ino = n.id_;
    e.generation = n.generation_;
    e.attr = stat_of(n);
    return e;
  }

  struct stat stat_of(const Node& n) const {
    struct stat st {};
    const attributes a = n.attributes();
    st.st_ino = n.id_;
    st.st_mode = a.mode;
    st.st_nlink = a.nlink;
    st.st_uid = a.uid;
    st.st_gid = a.gid;
    st.st_rdev = a.rdev;
    st.st_atim = a.atime;
    st.st_mtim = a.mtime;
    st.st_ctim = a.ctime;
    st.st_blksize = 4096;
    if (n.is_dir()) {
      st.st_size = static_cast<off_t>((n.entries_.load(std::memory_order_relaxed) + 2) * 20);  // as tmpfs: grows with entries
    } else if (S_ISLNK(n.type())) {
      st.st_size = static_cast<off_t>(n.target().size());
    } else if constexpr (ops::sized<Node>) {
      st.st_size = n.size();
    }
    if constexpr (ops::counts_blocks<Node>) {
      st.st_blocks = n.blocks();
    } else {
      st.st_blocks = (st.st_size + 511) / 512;
    }
    return st;
  }

  // Calls a node operation returning R (a result or a task of one) on the node `i`, then `k` on
  // its result: a plain call when the operation is synchronous, a coroutine when it is a task.
  template <typename R, typename Call, typename K>
  auto on_node(corofuse::ino i, Call call, K k) {
    using T = typename handlers::handler_result<R>::type;
    using U = std::invoke_result_t<K, T&&, Node&>;
    if constexpr (detail::is_task<R>::value) {
      return on_node_async<U>(find(i), std::move(call), std::move(k));
    } else {
      auto n = find(i);
      if (!n) return U(error(ESTALE));
      return k(call(*n), *n);
    }
  }
  template <typename U, typename Call, typename K>
  static io::task<U> on_node_async(std::shared_ptr<Node> n, Call call, K k) {
    if (!n) co_return U(error(ESTALE));
    auto r = co_await call(*n);
    co_return k(std::move(r), *n);
  }

  // relatime, as tmpfs: the access time moves when it is older than the last change, or a day
  // old. Checked under the shared lock: the exclusive one only when it moves.
  static void accessed(Node& n) {
    const timespec t = now();
    auto stale = [&](const attributes& a) {
      return !after(a.atime, a.mtime) || !after(a.atime, a.ctime) || a.atime.tv_sec <= t.tv_sec - 24 * 3600;
    };
    {
      std::shared_lock lock(n.attr_lock_);
      if (!stale(n.attrs_)) return;
    }
    std::unique_lock lock(n.attr_lock_);
    if (stale(n.attrs_)) n.attrs_.atime = t;
  }
  static bool after(const timespec& a, const timespec& b) { return a.tv_sec > b.tv_sec || (a.tv_sec == b.tv_sec && a.tv_nsec > b.tv_nsec); }

  // The data changed: mtime and ctime move; a write by a caller without CAP_FSETID drops setuid
  // (and setgid as the kernel's rule says) when `caller` is given.
  static void modified(Node& n, const context* caller) {
    const timespec t = now();
    std::unique_lock lock(n.attr_lock_);
    n.attrs_.mtime = n.attrs_.ctime = t;
    if (caller) drop_suidgid(n.attrs_, *caller);
  }
  static void changed(Node& n) {
    std::unique_lock lock(n.attr_lock_);
    n.attrs_.ctime = now();
  }
  static void set_times(Node& n, const timespec& t, bool mtime, bool ctime) {
    std::unique_lock lock(n.attr_lock_);
    if (mtime) n.attrs_.mtime = t;
    if (ctime) n.attrs_.ctime = t;
  }

  // Opens `n`: the node's own open(), then O_TRUNC (Linux truncates even with O_RDONLY: the
  // kernel checked write permission), undone with the node's release() when the truncation fails,
  // for the kernel sends no RELEASE after a failed OPEN. Counts the open file.
  result<open_reply> open_node(context& c, Node& n, int flags) {
    const bool truncating = (flags & O_TRUNC) && n.is_file();
    if constexpr (!ops::truncates<Node>) {
      if (truncating) return error(EPERM);  // refused before the node opens anything
    }
    open_reply r{};
    if constexpr (ops::opens<Node>) {
      auto o = n.open(c, flags);
      if (!o) return error(o.error_code());
      r = *o;
    }
    if (truncating) {
      if (auto t = truncate_on_open(n, c); !t) {
        if constexpr (ops::releases<Node>) {
          file_info fi{r.fh, static_cast<std::uint32_t>(flags), 0};
          (void)n.release(c, fi);
        }
        return error(t.error_code());
      }
    }
    n.opens_.fetch_add(1, std::memory_order_relaxed);
    return r;
  }

  // The kernel's rule (setattr_should_drop_sgid): setuid always goes; setgid goes when the file is
  // group-executable, or when the caller is not in the file's group.
  static void drop_suidgid(attributes& a, const context& c) {
    mode_t kill = S_ISUID;
    if ((a.mode & S_ISGID) && ((a.mode & S_IXGRP) || !c.caller_in_group(a.gid))) kill |= S_ISGID;
    if (a.mode & kill) {
      a.mode &= ~kill;
      a.ctime = now();
    }
  }

  // O_TRUNC, handled in OPEN (the kernel asks for the privilege drop with it).
  static result<> truncate_on_open(Node& n, context& c) {
    if constexpr (ops::truncates<Node>) {
      if (auto r = n.truncate(c, 0); !r) return r;
      modified(n, c.kill_suidgid() ? &c : nullptr);
      return ok();
    } else {
      return error(EPERM);
    }
  }

  // New files take the directory's group when it is setgid (and new directories stay setgid).
  static gid_t group_for(const Node& dir, const context& c) {
    const attributes a = dir.attributes();
    return (a.mode & S_ISGID) ? a.gid : c.gid();
  }

  // A new node named `name` in `parent` (names lock held exclusive).
  result<Node*> make_child(context& c, corofuse::ino parent, std::string_view name, made m) requires ops::makeable<Node> {
    auto dir = find(parent);
    if (!dir) return error(ESTALE);
    if (!dir->is_dir()) return error(ENOTDIR);
    if (dir->children_.count(name)) return error(EEXIST);
    if (int e = check_name(name)) return error(e);
    if (dir->attributes().nlink == 0) return error(ENOENT);  // a removed directory takes no new names
    const attributes d = dir->attributes();
    m.gid = (d.mode & S_ISGID) ? d.gid : c.gid();
    if (S_ISDIR(m.mode) && (d.mode & S_ISGID)) m.mode |= S_ISGID;
    auto n = new_node(m, *dir);
    adopt(*n);
    Node* made_node = n.get();
    link_child(*dir, name, std::move(n));
    return made_node;
  }

  // ---- names (under names_ exclusive) --------------------------------------------------------

  static void add_entry(Node& dir, std::string_view name, std::shared_ptr<Node> n) {
    const std::uint64_t cookie = dir.next_cookie_++;
    auto [it, added] = dir.children_.emplace(std::string(name), typename inode<Node>::child{std::move(n), cookie});
    dir.by_cookie_.emplace(cookie, it);
    dir.entries_.fetch_add(1, std::memory_order_relaxed);
  }
  static void erase_entry(Node& dir, typename inode<Node>::children_map::iterator it) {
    dir.by_cookie_.erase(it->second.cookie);
    dir.children_.erase(it);
    dir.entries_.fetch_sub(1, std::memory_order_relaxed);
  }

  // `n` gets the name `name` in `dir`: link counts and times follow.
  static void link_child(Node& dir, std::string_view name, std::shared_ptr<Node> n) {
    const timespec t = now();
    n->orphaned_.store(false, std::memory_order_relaxed);  // named again: it may be orphaned again
    n->links_.push_back({&dir, std::string(name)});
    {
      std::unique_lock lock(n->attr_lock_);
      n->attrs_.nlink = n->is_dir() ? 2 : n->attrs_.nlink + 1;
      n->attrs_.ctime = t;
    }
    {
      std::unique_lock lock(dir.attr_lock_);
      if (n->is_dir()) dir.attrs_.nlink++;  // the new directory's ".."
      dir.attrs_.mtime = dir.attrs_.ctime = t;
    }
    add_entry(dir, name, std::move(n));
  }

  // The entry `it` of `dir` goes: the node loses a link (a directory all of them).
  static void unlink_child(Node& dir, typename inode<Node>::children_map::iterator it) {
    const timespec t = now();
    std::shared_ptr<Node> n = it->second.node;
    auto& links = n->links_;
    const std::string_view name = it->first;
    links.erase(std::find_if(links.begin(), links.end(), [&](const auto& l) { return l.parent == &dir && l.name == name; }));
    erase_entry(dir, it);
    {
      std::unique_lock lock(n->attr_lock_);
      if (n->is_dir()) {
        n->attrs_.nlink = 0;
      } else if (n->attrs_.nlink) {
        n->attrs_.nlink--;
      }
      n->attrs_.ctime = t;
    }
    std::unique_lock lock(dir.attr_lock_);
    if (n->is_dir()) dir.attrs_.nlink--;
    dir.attrs_.mtime = dir.attrs_.ctime = t;
  }

  static void relink(Node& n, Node& from, std::string_view name, Node& to, std::string_view newname) {
    for (auto& l : n.links_) {
      if (l.parent == &from && l.name == name) {
        l.parent = &to;
        l.name = std::string(newname);
        return;
      }
    }
  }
  static void move_dir_count(Node& n, Node& from, Node& to) {
    if (!n.is_dir()) return;
    {
      std::unique_lock lock(from.attr_lock_);
      from.attrs_.nlink--;
    }
    std::unique_lock lock(to.attr_lock_);
    to.attrs_.nlink++;
  }

  // Whether `candidate` is `start` or one of its ancestors.
  bool is_ancestor(const Node& candidate, const Node& start) const {
    for (const Node* p = &start;;) {
      if (p == &candidate) return true;
      if (p == root_.get() || p->links_.empty()) return false;
      p = p->links_.front().parent;
    }
  }

  // No name and no open file left: the node's data may go (the kernel may still ask for its
  // attributes). Called once, without the tree's locks.
  static void notice_orphan(Node& n) {
    if constexpr (ops::notices_orphans<Node>) {
      {
        std::shared_lock lock(n.attr_lock_);
        if (n.attrs_.nlink != 0 || n.linkable_) return;
      }
      if (n.opens_.load(std::memory_order_acquire) != 0) return;
      if (!n.orphaned_.exchange(true, std::memory_order_acq_rel)) n.orphaned();
    }
  }

  auto listing_of(Node& dir, Node& up, off_t off) {
    namespace rv = ranges::views;
    const auto from = static_cast<std::uint64_t>(std::max<off_t>(off, 0));
    auto dots = rv::concat(rv::single(listed{".", dir.id_, DT_DIR, 1, &dir, this}),
                           rv::single(listed{"..", up.id_, DT_DIR, 2, &up, this})) |
                rv::drop(std::min<std::uint64_t>(from, 2));
    auto entries = ranges::subrange(dir.by_cookie_.upper_bound(std::max<std::uint64_t>(from, 2)), dir.by_cookie_.end()) |
                   rv::transform([this](const auto& cookie_and_entry) {
                     const auto& [name, c] = *cookie_and_entry.second;
                     return listed{name,         c.node->id_, static_cast<std::uint32_t>(c.node->type() >> 12), cookie_and_entry.first,
                                   c.node.get(), this};
                   });
    return rv::concat(std::move(dots), std::move(entries));
  }

  std::shared_ptr<Node> root_;
  mutable std::array<shard, shard_count> shards_;
  mutable std::shared_mutex names_;
  std::atomic<corofuse::ino> next_id_{root_ino + 1};
  // Tells this tree's nodes from those of an earlier server (an NFS file handle outlives us).
  const std::uint64_t generation_ = [] {
    const timespec t = now();  // nanoseconds: two trees made in one second differ too
    return static_cast<std::uint64_t>(t.tv_sec) * 1000000000u + static_cast<std::uint64_t>(t.tv_nsec);
  }();
  connection conn_;
  std::atomic<bool> connected_{false};
};

}  // namespace corofuse::node
