// memfs: an in-memory POSIX filesystem, meant to behave like tmpfs as far as FUSE allows.
//
// Regular files (sparse, in page-sized chunks), directories, symlinks, hard links, fifos and
// device nodes; rename with RENAME_NOREPLACE / RENAME_EXCHANGE; unlinked files live while open or
// known to the kernel; xattrs; fallocate, SEEK_DATA/SEEK_HOLE, copy_file_range, O_TMPFILE; a size
// limit. Permission checks are the kernel's (default_permissions). Inode numbers are never reused
// (64-bit counter), so the kernel never sees one number name two inodes.
//
// Every CPU's queue serves at once, so nothing on the data path is shared by all of them:
// - names_ (one reader-writer lock) guards the names: every directory's entries and every
//   directory's parent. LOOKUP and READDIR take it shared; what adds, removes or moves a name
//   takes it exclusive, so a rename sees and changes every directory it touches at once.
// - each node has a reader-writer lock of its own for its attributes and data: READ, GETATTR and
//   the xattr reads take it shared (two readers of one file do not wait for each other; the access
//   time has a small lock of its own, so relatime needs no exclusive lock), WRITE and SETATTR
//   exclusive.
//   A name change takes names_, then the locks of the nodes it changes, in inode order.
// - the node table is split in shards by inode number, each with its own mutex held only to find,
//   add or drop a node; the bytes held are an atomic counter.
// So two clients on different files never wait for each other, and data is copied under the lock
// of its own file only.
#include <dirent.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <range/v3/view/concat.hpp>
#include <range/v3/view/drop.hpp>
#include <range/v3/view/single.hpp>
#include <range/v3/view/subrange.hpp>
#include <range/v3/view/transform.hpp>

#include "corofuse/corofuse.hpp"
#include "examples/memfs/control_channel.hpp"
#include "examples/memfs/file_pages.hpp"
#include "examples/memfs/xattr_map.hpp"

namespace cf = corofuse;

namespace {

constexpr std::size_t page_bytes = file_pages::page_bytes;
constexpr std::size_t name_max = 255;
constexpr std::uint64_t max_file_size = file_pages::max_size;

timespec now() {
  timespec t{};
  clock_gettime(CLOCK_REALTIME, &t);
  return t;
}

// Who owns the root directory, and its permission bits (-o uid=,gid=,mode=).
struct root_owner {
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  mode_t mode = 0755;
};

}  // namespace

class memfs {
 public:
  explicit memfs(std::uint64_t size_limit, root_owner owner = {}) : space_(size_limit) {
    std::shared_ptr<node> root = make_node(S_IFDIR | (owner.mode & 07777), owner.uid, owner.gid);
    root->nlink = 2;
    root->parent = cf::root_ino;
    root->lookups = 1;  // the kernel holds the root for the mount's lifetime
  }

  // The kernel leaves clearing setuid/setgid to memfs (and says when): that is how tmpfs's rule,
  // which also drops setgid for a writer outside the file's group, can be followed exactly.
  // Security contexts (an LSM's label for each new object) arrive with the creating request and
  // are kept as the object's xattr, as a disk filesystem would store them.
  std::uint64_t init_flags() const { return cf::abi::init_flag::handle_killpriv_v2 | cf::abi::init_flag::security_ctx; }

  // memfs allows idmapped mounts (-o allow_idmap): the owner of a new object comes with the
  // creating request, and nothing else depends on who asks, except two rules that then take the
  // cautious side: trusted.* xattrs are listed to nobody, and a truncation by an unknown caller
  // drops setgid (the caller is never known to be in the file's group).
  static constexpr bool supports_idmapped_mounts = true;

  // ---- changes from outside the mount (--control FIFO) ------------------------------------------
  // Commands written to the FIFO change the tree behind the kernel's back; memfs then tells the
  // kernel with notifications, so that even with long cache times it sees the change at once:
  //   set PATH TEXT     PATH's contents become TEXT            -> inval_inode (data and attributes)
  //   set-unnotified PATH TEXT   the same, and the kernel is not told (to show why it must be)
  //   store PATH TEXT   the same, pushed into the kernel's cache -> inval_inode (attributes) + store
  //   rm PATH           PATH (not a directory) is unlinked     -> delete
  //   mv OLD NEW        OLD is renamed to NEW                   -> inval_entry for both names
  //   retrieve PATH     reads back the kernel's cached data of PATH and compares it with memfs's
  //   epoch             every cached name becomes stale         -> inc_epoch (Linux 6.16+)
  // Each command logs one line "memfs control: COMMAND: RESULT" on stderr.
  void set_control_path(std::string path) { control_path_ = std::move(path); }

  void init(const cf::connection& c) {
    conn_ = c;
    if (!control_path_.empty()) control_ = std::make_unique<control_channel>(control_path_, [this](std::string_view l) { control(l); });
  }

  // ---- names --------------------------------------------------------------------------------

  cf::result<cf::entry> lookup(cf::context&, cf::ino parent, std::string_view name) {
    if (name.size() > name_max) return cf::error(ENAMETOOLONG);
    std::shared_lock names(names_);
    auto found = child(parent, name);
    if (!found) return cf::error(found.error_code());
    node& nd = **found;
    std::shared_lock lock(nd.lock);
    return entry_of(nd, /*count_lookup=*/true);
  }

  void forget(cf::context&, cf::ino i, std::uint64_t n) {
    std::shared_ptr<node> nd = find(i);
    if (!nd) return;
    // Saturating: a FORGET of more than the kernel was given must not wrap the count.
    std::uint64_t have = nd->lookups.load(std::memory_order_relaxed);
    while (!nd->lookups.compare_exchange_weak(have, have > n ? have - n : 0, std::memory_order_acq_rel)) {
    }
    if (have <= n) retire_if_unused(std::move(nd));
  }

  cf::result<cf::attr> getattr(cf::context&, cf::ino i, const cf::file_info*) {
    std::shared_ptr<node> nd = find(i);
    if (!nd) return cf::error(ENOENT);
    std::shared_lock lock(nd->lock);
    return cf::attr{stat_of(*nd)};
  }

  cf::result<cf::attr> setattr(cf::context& c, cf::ino i, const cf::set_attr& s, const cf::file_info*) {
    std::shared_ptr<node> nd = find(i);
    if (!nd) return cf::error(ENOENT);
    std::unique_lock lock(nd->lock);
    const timespec t = now();
    if (s.has_size()) {
      if (!S_ISREG(nd->type)) return cf::error(S_ISDIR(nd->type) ? EISDIR : EINVAL);
      if (s.size < 0) return cf::error(EINVAL);
      if (static_cast<std::uint64_t>(s.size) > max_file_size) return cf::error(EFBIG);
      nd->data.resize(static_cast<std::uint64_t>(s.size));
      nd->mtime = t;
    }
    if (s.has_mode()) nd->mode = (nd->mode & S_IFMT) | (s.mode & 07777);
    if (s.has_uid()) nd->uid = s.uid;
    if (s.has_gid()) nd->gid = s.gid;
    if (s.kill_suidgid()) {
      if (s.has_uid() || s.has_gid()) {
        // chown: setuid goes; setgid only with group execute (without it, it marks mandatory
        // locking and stays), whoever the caller.
        nd->mode &= ~static_cast<mode_t>(S_ISUID | ((nd->mode & S_IXGRP) ? S_ISGID : 0));
      } else {
        kill_suidgid(*nd, c);  // a truncation by a caller without CAP_FSETID
      }
    }
    if (s.has_atime()) nd->set_atime(s.atime.tv_nsec == UTIME_NOW ? t : s.atime);
    if (s.has_mtime()) nd->mtime = s.mtime.tv_nsec == UTIME_NOW ? t : s.mtime;
    nd->ctime = s.has_ctime() ? s.ctime : t;
    return cf::attr{stat_of(*nd)};
  }

  cf::result<std::string> readlink(cf::context&, cf::ino i) {
    std::shared_ptr<node> nd = find(i);
    if (!nd) return cf::error(ENOENT);
    if (!S_ISLNK(nd->type)) return cf::error(EINVAL);
    return nd->target;  // set before the link got its name, never changed
  }

  cf::result<cf::entry> mknod(cf::context& c, cf::ino parent, std::string_view name, mode_t mode, dev_t rdev, mode_t) {
    const mode_t type = mode & S_IFMT;
    if (type != S_IFREG && type != S_IFIFO && type != S_IFCHR && type != S_IFBLK && type != S_IFSOCK) return cf::error(EINVAL);
    std::unique_lock names(names_);
    auto made = add_child(c, parent, name, mode, [&](node& nd) { nd.rdev = rdev; });
    if (!made) return cf::error(made.error_code());
    return entry_of(**made, /*count_lookup=*/true);
  }

  cf::result<cf::entry> mkdir(cf::context& c, cf::ino parent, std::string_view name, mode_t mode, mode_t) {
    std::unique_lock names(names_);
    auto made = add_child(c, parent, name, S_IFDIR | (mode & 07777), [&](node& nd) {
      nd.nlink = 2;
      nd.parent = parent;
    });
    if (!made) return cf::error(made.error_code());
    return entry_of(**made, true);
  }

  cf::result<cf::entry> symlink(cf::context& c, cf::ino parent, std::string_view name, std::string_view target) {
    if (target.size() >= PATH_MAX) return cf::error(ENAMETOOLONG);
    std::unique_lock names(names_);
    auto made = add_child(c, parent, name, S_IFLNK | 0777, [&](node& nd) { nd.target = std::string(target); });
    if (!made) return cf::error(made.error_code());
    return entry_of(**made, true);
  }

  cf::result<> unlink(cf::context&, cf::ino parent, std::string_view name) {
    std::shared_ptr<node> gone;
    {
      std::unique_lock names(names_);
      auto found = child_entry(parent, name);
      if (!found) return cf::error(found.error_code());
      auto [dir, it] = *found;
      gone = it->second.nd;
      if (S_ISDIR(gone->type)) return cf::error(EISDIR);
      node_locks locks{dir, gone.get()};
      remove_name(*dir, it);
      drop_link(*gone);
    }
    retire_if_unused(std::move(gone));
    return cf::ok();
  }

  cf::result<> rmdir(cf::context&, cf::ino parent, std::string_view name) {
    std::shared_ptr<node> gone;
    {
      std::unique_lock names(names_);
      auto found = child_entry(parent, name);
      if (!found) return cf::error(found.error_code());
      auto [dir, it] = *found;
      gone = it->second.nd;
      if (!S_ISDIR(gone->type)) return cf::error(ENOTDIR);
      if (!gone->children.empty()) return cf::error(ENOTEMPTY);
      node_locks locks{dir, gone.get()};
      remove_name(*dir, it);
      dir->nlink--;
      gone->nlink = 0;
      gone->ctime = now();
    }
    retire_if_unused(std::move(gone));
    return cf::ok();
  }

  cf::result<> rename(cf::context&, cf::ino parent, std::string_view name, cf::ino newparent, std::string_view newname, unsigned flags) {
    if (flags & ~static_cast<unsigned>(RENAME_NOREPLACE | RENAME_EXCHANGE)) return cf::error(EINVAL);
    if ((flags & RENAME_NOREPLACE) && (flags & RENAME_EXCHANGE)) return cf::error(EINVAL);
    if (newname.size() > name_max) return cf::error(ENAMETOOLONG);
    std::shared_ptr<node> replaced;
    {
      std::unique_lock names(names_);
      auto src = child_entry(parent, name);
      if (!src) return cf::error(src.error_code());
      auto [from_dir, from_it] = *src;
      std::shared_ptr<node> to_dir_ref = find(newparent);
      node* to_dir = to_dir_ref.get();
      if (!to_dir) return cf::error(ENOENT);
      if (!S_ISDIR(to_dir->type)) return cf::error(ENOTDIR);
      std::shared_ptr<node> moving = from_it->second.nd;
      auto existing = to_dir->children.find(newname);
      node* target = existing == to_dir->children.end() ? nullptr : existing->second.nd.get();
      if (target == moving.get()) return cf::ok();  // the same inode under both names: nothing to do
      // A directory may not move into its own subtree.
      if (S_ISDIR(moving->type) && is_ancestor(moving->ino, newparent)) return cf::error(EINVAL);
      if ((flags & RENAME_EXCHANGE) && !target) return cf::error(ENOENT);
      if ((flags & RENAME_EXCHANGE) && S_ISDIR(target->type) && is_ancestor(target->ino, parent)) return cf::error(EINVAL);
      if (target && !(flags & RENAME_EXCHANGE)) {
        if (flags & RENAME_NOREPLACE) return cf::error(EEXIST);
        if (S_ISDIR(moving->type)) {
          if (!S_ISDIR(target->type)) return cf::error(ENOTDIR);
          if (!target->children.empty()) return cf::error(ENOTEMPTY);
        } else if (S_ISDIR(target->type)) {
          return cf::error(EISDIR);
        }
      }
      node_locks locks{from_dir, to_dir, moving.get(), target};
      const timespec t = now();

      if (flags & RENAME_EXCHANGE) {
        std::swap(from_it->second.nd, existing->second.nd);
        if (from_dir != to_dir) {
          fix_parent(*moving, *from_dir, *to_dir);
          fix_parent(*target, *to_dir, *from_dir);
        }
        moving->ctime = target->ctime = from_dir->mtime = from_dir->ctime = to_dir->mtime = to_dir->ctime = t;
        return cf::ok();
      }
      if (target) {  // replaced: it loses this name
        replaced = existing->second.nd;
        remove_name(*to_dir, existing);
        if (S_ISDIR(target->type)) {
          to_dir->nlink--;
          target->nlink = 0;
          target->ctime = t;
        } else {
          drop_link(*target);
        }
      }
      remove_name(*from_dir, from_it);
      add_name(*to_dir, newname, std::move(moving));
      node& moved = *to_dir->children.find(newname)->second.nd;
      if (from_dir != to_dir) fix_parent(moved, *from_dir, *to_dir);
      moved.ctime = from_dir->mtime = from_dir->ctime = to_dir->mtime = to_dir->ctime = t;
    }
    if (replaced) retire_if_unused(std::move(replaced));
    return cf::ok();
  }

  cf::result<cf::entry> link(cf::context&, cf::ino i, cf::ino newparent, std::string_view newname) {
    if (newname.size() > name_max) return cf::error(ENAMETOOLONG);
    std::unique_lock names(names_);
    std::shared_ptr<node> nd = find(i);
    if (!nd) return cf::error(ENOENT);
    if (S_ISDIR(nd->type)) return cf::error(EPERM);
    std::shared_ptr<node> dir = find(newparent);
    if (!dir) return cf::error(ENOENT);
    if (!S_ISDIR(dir->type)) return cf::error(ENOTDIR);
    if (dir->children.count(newname)) return cf::error(EEXIST);
    node_locks locks{dir.get(), nd.get()};
    if (nd->nlink == 0 && !nd->linkable) return cf::error(ENOENT);  // only O_TMPFILE files get a name back
    add_name(*dir, newname, nd);
    nd->nlink++;
    nd->linkable = false;
    nd->ctime = dir->mtime = dir->ctime = now();
    return entry_of(*nd, true);
  }

  // ---- files ---------------------------------------------------------------------------------

  cf::result<cf::open_reply> open(cf::context& c, cf::ino i, int flags) {
    std::shared_ptr<node> nd = find(i);
    if (!nd) return cf::error(ENOENT);
    if (S_ISDIR(nd->type) && (flags & O_ACCMODE) != O_RDONLY) return cf::error(EISDIR);
    std::unique_lock lock(nd->lock);
    // Linux truncates on O_TRUNC even with O_RDONLY (the kernel checked write permission).
    if ((flags & O_TRUNC) && S_ISREG(nd->type)) truncate_on_open(*nd, c);
    nd->opens++;
    return cf::open_reply{};
  }

  cf::result<cf::created> create(cf::context& c, cf::ino parent, std::string_view name, mode_t mode, mode_t, int flags) {
    std::unique_lock names(names_);
    if (auto found = child(parent, name)) {  // created meanwhile by someone else: open it
      if (flags & O_EXCL) return cf::error(EEXIST);
      node& nd = **found;
      if (S_ISDIR(nd.type)) return cf::error(EISDIR);
      // The kernel takes nothing but a regular file from CREATE (anything else fails the open
      // with EIO): a fifo, device, socket or symlink made meanwhile under the name is EEXIST.
      if (!S_ISREG(nd.type)) return cf::error(EEXIST);
      std::unique_lock lock(nd.lock);
      if (flags & O_TRUNC) truncate_on_open(nd, c);
      nd.opens++;
      return cf::created{entry_of(nd, true), {}};
    }
    auto made = add_child(c, parent, name, S_IFREG | (mode & 07777), [](node& nd) { nd.opens = 1; });
    if (!made) return cf::error(made.error_code());
    return cf::created{entry_of(**made, true), {}};
  }

  cf::result<cf::created> tmpfile(cf::context& c, cf::ino parent, mode_t mode, mode_t, int) {
    std::shared_ptr<node> dir = find(parent);
    if (!dir) return cf::error(ENOENT);
    if (!S_ISDIR(dir->type)) return cf::error(ENOTDIR);
    gid_t group;
    {
      std::shared_lock lock(dir->lock);
      group = group_for(*dir, c);
    }
    std::shared_ptr<node> nd = make_node(S_IFREG | (mode & 07777), c.uid(), group, [&](node& n) {
      label(n, c);
      n.nlink = 0;  // nameless until linkat gives it one
      n.linkable = true;
      n.opens = 1;
    });
    return cf::created{entry_of(*nd, true), {}};
  }

  cf::result<std::size_t> read(cf::context&, cf::ino i, cf::file_info&, std::span<std::byte> out, off_t off) {
    std::shared_ptr<node> nd = find(i);
    if (!nd) return cf::error(ENOENT);
    if (S_ISDIR(nd->type)) return cf::error(EISDIR);
    if (off < 0) return cf::error(EINVAL);
    std::shared_lock lock(nd->lock);
    const auto start = static_cast<std::uint64_t>(off);
    if (start >= nd->data.size()) return std::size_t{0};
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(out.size(), nd->data.size() - start));
    nd->data.copy_out(start, out.first(n));
    // relatime, as tmpfs: the access time moves when it is older than the last change or a day
    // old. Readers hold the node's lock shared, so the access time has a small lock of its own.
    const timespec t = now();
    std::lock_guard atime_lock(nd->atime_mutex);
    if (older(nd->atime, nd->mtime) || older(nd->atime, nd->ctime) || nd->atime.tv_sec <= t.tv_sec - 24 * 3600) nd->atime = t;
    return n;
  }

  cf::result<std::size_t> write(cf::context& c, cf::ino i, cf::file_info& fi, std::span<const std::byte> in, off_t off) {
    std::shared_ptr<node> nd = find(i);
    if (!nd) return cf::error(ENOENT);
    if (!S_ISREG(nd->type)) return cf::error(EINVAL);
    if (off < 0) return cf::error(EINVAL);
    std::unique_lock lock(nd->lock);
    const std::uint64_t start = (fi.flags & O_APPEND) ? nd->data.size() : static_cast<std::uint64_t>(off);
    if (start + in.size() > max_file_size) return cf::error(EFBIG);
    std::size_t written = nd->data.copy_in(start, in);
    if (written == 0 && !in.empty()) return cf::error(ENOSPC);
    if (c.kill_suidgid()) kill_suidgid(*nd, c);
    nd->mtime = nd->ctime = now();
    return written;
  }

  cf::result<> release(cf::context&, cf::ino i, cf::file_info&) {
    std::shared_ptr<node> nd = find(i);
    if (!nd) return cf::ok();
    {
      std::unique_lock lock(nd->lock);
      if (nd->opens) nd->opens--;
      release_data_if_unreachable(*nd);
    }
    retire_if_unused(std::move(nd));
    return cf::ok();
  }

  cf::result<> fsync(cf::context&, cf::ino, cf::file_info&, bool) { return cf::ok(); }  // memory is the medium

  cf::result<> fallocate(cf::context&, cf::ino i, cf::file_info&, int mode, off_t off, off_t len) {
    if (off < 0 || len <= 0) return cf::error(EINVAL);
    std::shared_ptr<node> nd = find(i);
    if (!nd) return cf::error(ENOENT);
    if (!S_ISREG(nd->type)) return cf::error(ENODEV);
    const auto start = static_cast<std::uint64_t>(off), end = start + static_cast<std::uint64_t>(len);
    if (end > max_file_size) return cf::error(EFBIG);
    std::unique_lock lock(nd->lock);
    if (mode == (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)) {
      nd->data.punch(start, end);
    } else if (mode == 0 || mode == FALLOC_FL_KEEP_SIZE) {
      // The pages are taken now, so later writes in the range cannot fail for space.
      if (!nd->data.reserve(start, end, mode == FALLOC_FL_KEEP_SIZE)) return cf::error(ENOSPC);
    } else {
      return cf::error(EOPNOTSUPP);
    }
    nd->mtime = nd->ctime = now();
    return cf::ok();
  }

  cf::result<off_t> lseek(cf::context&, cf::ino i, cf::file_info&, off_t off, int whence) {
    std::shared_ptr<node> nd = find(i);
    if (!nd) return cf::error(ENOENT);
    if (off < 0) return cf::error(ENXIO);
    std::shared_lock lock(nd->lock);
    const auto pos = static_cast<std::uint64_t>(off);
    if (pos >= nd->data.size()) return cf::error(ENXIO);
    if (whence == SEEK_DATA) {
      const auto at = nd->data.next_data(pos);
      if (!at) return cf::error(ENXIO);
      return static_cast<off_t>(*at);
    }
    if (whence == SEEK_HOLE) return static_cast<off_t>(nd->data.next_hole(pos));
    return cf::error(EINVAL);
  }

  cf::result<std::size_t> copy_file_range(cf::context&, cf::ino in, cf::file_info&, off_t off_in, cf::ino out, cf::file_info&,
                                          off_t off_out, std::size_t len, int flags) {
    if (flags != 0) return cf::error(EINVAL);
    if (off_in < 0 || off_out < 0) return cf::error(EINVAL);
    std::shared_ptr<node> src = find(in), dst = find(out);
    if (!src || !dst) return cf::error(ENOENT);
    if (!S_ISREG(src->type) || !S_ISREG(dst->type)) return cf::error(EINVAL);
    // The source read-locked, the destination write-locked (one lock when they are one file), in
    // inode order like every holder of two node locks.
    std::shared_lock<std::shared_mutex> reading(src->lock, std::defer_lock);
    std::unique_lock<std::shared_mutex> writing(dst->lock, std::defer_lock);
    if (src == dst) {
      writing.lock();
    } else if (src->ino < dst->ino) {
      reading.lock();
      writing.lock();
    } else {
      writing.lock();
      reading.lock();
    }
    const auto from = static_cast<std::uint64_t>(off_in);
    if (from >= src->data.size()) return std::size_t{0};
    std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(len, src->data.size() - from));
    n = std::min<std::size_t>(n, 16u << 20);  // a bounded chunk per request; the kernel loops
    if (static_cast<std::uint64_t>(off_out) + n > max_file_size) return cf::error(EFBIG);
    std::vector<std::byte> buf(n);  // the ranges may overlap within one file
    src->data.copy_out(from, buf);
    std::size_t written = dst->data.copy_in(static_cast<std::uint64_t>(off_out), buf);
    if (written == 0) return cf::error(ENOSPC);
    dst->mtime = dst->ctime = now();
    return written;
  }

  // ---- directories ---------------------------------------------------------------------------

  cf::result<cf::open_reply> opendir(cf::context&, cf::ino i, int) {
    std::shared_ptr<node> nd = find(i);
    if (!nd) return cf::error(ENOENT);
    if (!S_ISDIR(nd->type)) return cf::error(ENOTDIR);
    std::unique_lock lock(nd->lock);
    nd->opens++;
    // The kernel is not asked to keep listings (FOPEN_CACHE_DIR). Tried: a listing of a directory
    // that changes while it is read then comes back one entry per getdents64 (the kernel drops
    // what it kept at every change and starts over from the server), and a reader never reaches
    // the end of a directory another process keeps adding to (fs_suite_test's "entries come and
    // go"); tmpfs lists such a directory in some 140 calls. memfs's listings are views of its own
    // map and cost the server no copy, so an uncached listing is what it offers.
    return cf::open_reply{};
  }

  cf::result<> releasedir(cf::context& c, cf::ino i, cf::file_info& fi) { return release(c, i, fi); }

 private:
  struct node;

  // One entry of a listing: what READDIR packs, and the lookup READDIRPLUS asks for (counted only
  // for the entries the kernel receives).
  struct listed {
    std::string_view name;
    cf::ino ino = 0;
    std::uint32_t type = 0;
    std::uint64_t next_offset = 0;
    node* nd = nullptr;
    cf::entry lookup() const {
      std::shared_lock lock(nd->lock);
      return entry_of(*nd, /*count_lookup=*/true);
    }
  };

  // A directory's listing from READDIR offset `off` (under names_, held shared while the framework
  // packs it): ".", "..", then the entries in cookie order, each resuming after itself. A view
  // over the directory's own map: nothing is copied or allocated.
  static auto listing_of(node& dir, node& up, off_t off) {
    namespace rv = ranges::views;
    const auto from = static_cast<std::uint64_t>(std::max<off_t>(off, 0));
    auto dots = rv::concat(rv::single(listed{".", dir.ino, DT_DIR, 1, &dir}), rv::single(listed{"..", up.ino, DT_DIR, 2, &up})) |
                rv::drop(std::min<std::uint64_t>(from, 2));
    auto entries = ranges::subrange(dir.by_cookie.upper_bound(std::max<std::uint64_t>(from, 2)), dir.by_cookie.end()) |
                   rv::transform([](const auto& cookie_and_name) {
                     const auto& [name, c] = *cookie_and_name.second;
                     return listed{name, c.nd->ino, static_cast<std::uint32_t>(c.nd->type >> 12), cookie_and_name.first, c.nd.get()};
                   });
    return rv::concat(std::move(dots), std::move(entries));
  }

 public:
  // The listing holds names_ shared until the framework has packed the reply.
  auto readdir(cf::context&, cf::ino i, cf::file_info&, off_t off) {
    std::shared_lock names(names_);
    std::shared_ptr<node> dir = find(i);
    using listing = cf::locked_listing<std::shared_lock<std::shared_mutex>, decltype(listing_of(*dir, *dir, off))>;
    if (!dir) return cf::result<listing>(cf::error(ENOENT));
    if (!S_ISDIR(dir->type)) return cf::result<listing>(cf::error(ENOTDIR));
    std::shared_ptr<node> up = find(dir->parent);  // a directory's parent lives while it has a name (names_)
    node& parent = up ? *up : *dir;
    return cf::result<listing>(listing(std::move(names), listing_of(*dir, parent, off)));
  }

  cf::result<> fsyncdir(cf::context&, cf::ino, cf::file_info&, bool) { return cf::ok(); }

  cf::result<struct statvfs> statfs(cf::context&, cf::ino) {
    struct statvfs v {};
    const std::uint64_t used = space_.used(), limit = space_.limit();
    v.f_bsize = page_bytes;
    v.f_frsize = page_bytes;
    v.f_blocks = limit / page_bytes;
    v.f_bfree = v.f_bavail = (limit - std::min(used, limit)) / page_bytes;
    v.f_files = std::uint64_t{1} << 32;
    v.f_ffree = v.f_favail = v.f_files - node_count_.load(std::memory_order_relaxed);
    v.f_namemax = name_max;
    return v;
  }

  cf::result<struct ::statx> statx(cf::context&, cf::ino i, const cf::file_info*, int, unsigned) {
    std::shared_ptr<node> nd = find(i);
    if (!nd) return cf::error(ENOENT);
    std::shared_lock lock(nd->lock);
    const struct stat st = stat_of(*nd);
    struct ::statx x {};
    x.stx_mask = STATX_BASIC_STATS | STATX_BTIME;
    x.stx_blksize = static_cast<std::uint32_t>(st.st_blksize);
    x.stx_nlink = static_cast<std::uint32_t>(st.st_nlink);
    x.stx_uid = st.st_uid;
    x.stx_gid = st.st_gid;
    x.stx_mode = static_cast<std::uint16_t>(st.st_mode);
    x.stx_ino = st.st_ino;
    x.stx_size = static_cast<std::uint64_t>(st.st_size);
    x.stx_blocks = static_cast<std::uint64_t>(st.st_blocks);
    auto ts = [](const timespec& t) { return statx_timestamp{t.tv_sec, static_cast<std::uint32_t>(t.tv_nsec), 0}; };
    x.stx_atime = ts(st.st_atim);
    x.stx_mtime = ts(nd->mtime);
    x.stx_ctime = ts(nd->ctime);
    x.stx_btime = ts(nd->btime);
    x.stx_rdev_major = major(nd->rdev);
    x.stx_rdev_minor = minor(nd->rdev);
    return x;
  }

  // ---- extended attributes -------------------------------------------------------------------

  cf::result<std::size_t> getxattr(cf::context&, cf::ino i, std::string_view name, std::span<std::byte> out) {
    std::shared_ptr<node> nd = find(i);
    if (!nd) return cf::error(ENOENT);
    std::shared_lock lock(nd->lock);
    return nd->xattrs.get(name, out);
  }

  // trusted.* names are listed only to a privileged caller, as tmpfs does.
  cf::result<std::size_t> listxattr(cf::context& c, cf::ino i, std::span<std::byte> out) {
    std::shared_ptr<node> nd = find(i);
    if (!nd) return cf::error(ENOENT);
    std::shared_lock lock(nd->lock);
    return nd->xattrs.list(c.uid() == 0, out);
  }

  cf::result<> setxattr(cf::context&, cf::ino i, std::string_view name, std::span<const std::byte> value, int flags) {
    std::shared_ptr<node> nd = find(i);
    if (!nd) return cf::error(ENOENT);
    std::unique_lock lock(nd->lock);
    auto r = nd->xattrs.set(name, value, flags);
    if (r) nd->ctime = now();
    return r;
  }

  cf::result<> removexattr(cf::context&, cf::ino i, std::string_view name) {
    std::shared_ptr<node> nd = find(i);
    if (!nd) return cf::error(ENOENT);
    std::unique_lock lock(nd->lock);
    auto r = nd->xattrs.remove(name);
    if (r) nd->ctime = now();
    return r;
  }

  // For tests and -d: bytes of file data held.
  std::uint64_t used_bytes() const { return space_.used(); }

 private:
  // A directory's entry: the node it names, and its cookie (its place in the listing order).
  struct child_entry_t {
    std::shared_ptr<node> nd;
    std::uint64_t cookie = 0;
  };
  using children_map = std::map<std::string, child_entry_t, std::less<>>;

  struct node {
    node(cf::ino i, mode_t m, space_budget& space) : ino(i), type(m & S_IFMT), mode(m), data(space) {}
    const cf::ino ino;
    const mode_t type;  // S_IFMT bits: fixed for the node's life, read without a lock

    std::shared_mutex lock;  // everything below, but the names (names_) and the atomics
    mode_t mode;
    uid_t uid = 0;
    gid_t gid = 0;
    nlink_t nlink = 1;
    dev_t rdev = 0;
    timespec mtime{}, ctime{}, btime{};
    // The access time, under a lock of its own (READ moves it holding the node's lock shared). Any
    // time_t a client sets is kept, as on tmpfs.
    mutable std::mutex atime_mutex;
    timespec atime{};
    std::atomic<std::uint64_t> lookups{0};  // references the kernel holds (returned by FORGET)
    std::uint64_t opens = 0;                // open files and directories
    bool linkable = false;                  // an O_TMPFILE file not yet linked: linkat may name it
    xattr_map xattrs;
    file_pages data;  // a regular file's bytes and size
    // directories, under names_ (and changed with this lock held too, so a stat of the directory
    // sees its entry count whole): name -> entry, and a stable listing order by cookie (never
    // reused), so that a READDIR offset stays valid while entries come and go
    children_map children;
    std::map<std::uint64_t, children_map::iterator> by_cookie;
    std::uint64_t next_cookie = 3;  // 1 and 2 are "." and ".."
    cf::ino parent = 0;
    // symlinks: set before the link has a name
    std::string target;

    void set_atime(const timespec& t) {
      std::lock_guard lock(atime_mutex);
      atime = t;
    }
    timespec get_atime() const {
      std::lock_guard lock(atime_mutex);
      return atime;
    }
  };

  // Exclusive locks of the nodes a name change touches (null and repeated entries skipped), taken
  // in inode order: with names_ held exclusive by the caller, and data-path handlers holding one
  // node lock at a time (two, in the same order, for copy_file_range), no two lockers wait on each
  // other in a cycle.
  class node_locks {
   public:
    node_locks(std::initializer_list<node*> nodes) {
      for (node* n : nodes)
        if (n && std::find(held_.begin(), held_.begin() + count_, n) == held_.begin() + count_) held_[count_++] = n;
      std::sort(held_.begin(), held_.begin() + count_, [](const node* a, const node* b) { return a->ino < b->ino; });
      for (std::size_t k = 0; k < count_; ++k) held_[k]->lock.lock();
    }
    ~node_locks() {
      for (std::size_t k = count_; k-- > 0;) held_[k]->lock.unlock();
    }
    node_locks(const node_locks&) = delete;
    node_locks& operator=(const node_locks&) = delete;

   private:
    std::array<node*, 4> held_{};
    std::size_t count_ = 0;
  };

  // Whether `a` is at or before `b`.
  static bool older(const timespec& a, const timespec& b) {
    return a.tv_sec < b.tv_sec || (a.tv_sec == b.tv_sec && a.tv_nsec <= b.tv_nsec);
  }

  // The kernel's rule (setattr_should_drop_sgid): setuid always goes; setgid goes when the file is
  // group-executable, or when the caller is not in the file's group (the request carries the
  // caller's primary group only: supplementary groups are not seen). Under the node's lock.
  static void kill_suidgid(node& nd, const cf::context& c) {
    mode_t kill = S_ISUID;
    if ((nd.mode & S_ISGID) && ((nd.mode & S_IXGRP) || c.gid() != nd.gid)) kill |= S_ISGID;
    if (nd.mode & kill) {
      nd.mode &= ~kill;
      nd.ctime = now();
    }
  }

  // O_TRUNC handled in OPEN (ATOMIC_O_TRUNC); the kernel asks for the privilege drop with it.
  void truncate_on_open(node& nd, const cf::context& c) {
    nd.data.resize(0);
    if (c.kill_suidgid()) kill_suidgid(nd, c);
    nd.mtime = nd.ctime = now();
  }

  // ---- the node table -------------------------------------------------------------------------

  struct alignas(64) shard {
    std::mutex mutex;
    std::unordered_map<cf::ino, std::shared_ptr<node>> nodes;
  };
  static constexpr std::size_t shard_count = 64;
  shard& shard_of(cf::ino i) { return shards_[i % shard_count]; }

  // The node, kept alive for the caller even if it is dropped meanwhile; null when unknown.
  std::shared_ptr<node> find(cf::ino i) {
    shard& s = shard_of(i);
    std::lock_guard lock(s.mutex);
    auto it = s.nodes.find(i);
    return it == s.nodes.end() ? nullptr : it->second;
  }

  // A new node, set up by `init` before any other thread can reach it, then in the table.
  template <typename Init = void (*)(node&)>
  std::shared_ptr<node> make_node(
      mode_t mode, uid_t uid, gid_t gid, Init&& init = [](node&) {}) {
    auto nd = std::make_shared<node>(next_ino_.fetch_add(1, std::memory_order_relaxed), mode, space_);
    nd->uid = uid;
    nd->gid = gid;
    nd->mtime = nd->ctime = nd->btime = now();
    nd->set_atime(nd->mtime);
    init(*nd);
    shard& s = shard_of(nd->ino);
    {
      std::lock_guard lock(s.mutex);
      s.nodes.emplace(nd->ino, nd);
    }
    node_count_.fetch_add(1, std::memory_order_relaxed);
    return nd;
  }

  // A node's data goes when no name and no open file is left (nothing can reach it any more: the
  // space is free at once, as on tmpfs). Under the node's exclusive lock.
  void release_data_if_unreachable(node& nd) {
    if (nd.nlink != 0 || nd.opens != 0 || nd.linkable || nd.ino == cf::root_ino) return;
    nd.data.release();
  }

  // The node leaves the table once the kernel's references are gone too. Called without its lock.
  // Nothing can bring it back meanwhile: with no name, no open file and no lookup, no request can
  // reach it, so the check and the removal need not be one step (a second caller finds it gone).
  void retire_if_unused(std::shared_ptr<node> nd) {
    {
      std::unique_lock lock(nd->lock);
      release_data_if_unreachable(*nd);
      if (nd->nlink != 0 || nd->opens != 0 || nd->lookups.load(std::memory_order_acquire) != 0 || nd->ino == cf::root_ino) return;
      nd->data.release();  // a never-linked O_TMPFILE's
    }
    shard& s = shard_of(nd->ino);
    std::lock_guard lock(s.mutex);
    if (s.nodes.erase(nd->ino)) node_count_.fetch_sub(1, std::memory_order_relaxed);
  }

  // ---- names (under names_) -------------------------------------------------------------------

  // The security context the kernel sent with a creating request becomes the object's xattr.
  static void label(node& nd, const cf::context& c) {
    if (c.security_context_name().empty()) return;
    const auto v = c.security_context_value();
    nd.xattrs.put(c.security_context_name(), std::string(reinterpret_cast<const char*>(v.data()), v.size()));
  }

  // New files take the directory's group when it is setgid (and new directories stay setgid).
  static gid_t group_for(const node& dir, const cf::context& c) { return (dir.mode & S_ISGID) ? dir.gid : c.gid(); }

  // The directory `parent` and its entry `name`. The directory stays alive while names_ is held
  // (it has a name, or is open, or is the root).
  cf::result<std::pair<node*, children_map::iterator>> child_entry(cf::ino parent, std::string_view name) {
    std::shared_ptr<node> dir = find(parent);
    if (!dir) return cf::error(ENOENT);
    if (!S_ISDIR(dir->type)) return cf::error(ENOTDIR);
    auto it = dir->children.find(name);
    if (it == dir->children.end()) return cf::error(ENOENT);
    return std::pair{dir.get(), it};
  }
  cf::result<node*> child(cf::ino parent, std::string_view name) {
    auto found = child_entry(parent, name);
    if (!found) return cf::error(found.error_code());
    return found->second->second.nd.get();
  }

  // A new node named `name` in `parent` (names_ held exclusive), set up by `init` first.
  template <typename Init>
  cf::result<node*> add_child(const cf::context& c, cf::ino parent, std::string_view name, mode_t mode, Init&& init) {
    std::shared_ptr<node> dir = find(parent);
    if (!dir) return cf::error(ENOENT);
    if (!S_ISDIR(dir->type)) return cf::error(ENOTDIR);
    if (name.empty() || name.size() > name_max) return cf::error(name.empty() ? ENOENT : ENAMETOOLONG);
    if (dir->children.count(name)) return cf::error(EEXIST);
    std::unique_lock lock(dir->lock);
    if (dir->nlink == 0) return cf::error(ENOENT);  // a removed directory takes no new names
    if ((mode & S_IFMT) == S_IFDIR && (dir->mode & S_ISGID)) mode |= S_ISGID;
    std::shared_ptr<node> nd = make_node(mode, c.uid(), group_for(*dir, c), [&](node& n) {
      label(n, c);
      init(n);
    });
    if (S_ISDIR(nd->type)) dir->nlink++;  // the new directory's ".."
    node* made = nd.get();
    add_name(*dir, name, std::move(nd));
    dir->mtime = dir->ctime = made->ctime;
    return made;
  }

  // Under names_ exclusive and the directory's lock.
  static void add_name(node& dir, std::string_view name, std::shared_ptr<node> nd) {
    const std::uint64_t cookie = dir.next_cookie++;
    auto [it, added] = dir.children.emplace(std::string(name), child_entry_t{std::move(nd), cookie});
    dir.by_cookie.emplace(cookie, it);
  }

  static void remove_name(node& dir, children_map::iterator it) {
    dir.by_cookie.erase(it->second.cookie);
    dir.children.erase(it);
    dir.mtime = dir.ctime = now();
  }

  static void fix_parent(node& moved, node& from, node& to) {
    if (!S_ISDIR(moved.type)) return;
    moved.parent = to.ino;
    from.nlink--;
    to.nlink++;
  }

  // Whether `candidate` is `start` or one of its ancestors (names_ held: parents do not move).
  bool is_ancestor(cf::ino candidate, cf::ino start) {
    for (cf::ino i = start;;) {
      if (i == candidate) return true;
      std::shared_ptr<node> nd = find(i);
      if (!nd || i == cf::root_ino) return false;
      i = nd->parent;
    }
  }

  // Under the node's exclusive lock; the caller retires it afterwards.
  void drop_link(node& nd) {
    if (nd.nlink) nd.nlink--;
    nd.ctime = now();
    release_data_if_unreachable(nd);
  }

  // Under the node's lock (shared is enough: the count is atomic).
  static cf::entry entry_of(node& nd, bool count_lookup = false) {
    if (count_lookup) nd.lookups.fetch_add(1, std::memory_order_relaxed);
    cf::entry e;
    e.ino = nd.ino;
    e.generation = 0;  // inode numbers are never reused
    e.attr = stat_of(nd);
    return e;
  }

  static struct stat stat_of(const node& nd) {
    struct stat st {};
    st.st_ino = nd.ino;
    st.st_mode = nd.mode;
    st.st_nlink = nd.nlink;
    st.st_uid = nd.uid;
    st.st_gid = nd.gid;
    st.st_rdev = nd.rdev;
    st.st_blksize = page_bytes;
    if (S_ISREG(nd.type)) {
      st.st_size = static_cast<off_t>(nd.data.size());
      st.st_blocks = static_cast<blkcnt_t>(nd.data.blocks());
    } else if (S_ISLNK(nd.type)) {
      st.st_size = static_cast<off_t>(nd.target.size());
    } else if (S_ISDIR(nd.type)) {
      st.st_size = static_cast<off_t>((nd.children.size() + 2) * 20);  // tmpfs-like: grows with entries
    }
    st.st_atim = nd.get_atime();
    st.st_mtim = nd.mtime;
    st.st_ctim = nd.ctime;
    return st;
  }


  // ---- the control FIFO's commands (on its own thread) ----------------------------------------

  static std::string_view next_word(std::string_view& rest) {
    std::size_t start = rest.find_first_not_of(' ');
    if (start == std::string_view::npos) return rest = {}, std::string_view{};
    rest.remove_prefix(start);
    std::size_t end = rest.find(' ');
    std::string_view w = rest.substr(0, end);
    rest = end == std::string_view::npos ? std::string_view{} : rest.substr(end + 1);
    return w;
  }

  // PATH (relative to the root, '/'-separated) to its parent directory and last name; under
  // names_ (shared is enough). A last name no directory may hold ("." or "..", a NUL in it, none
  // at all) gives nullptr: mv would otherwise make an entry of it.
  node* parent_of(std::string_view path, std::string& name) {
    std::shared_ptr<node> root = find(cf::root_ino);
    node* dir = root.get();  // the root is never dropped
    while (!path.empty() && path.front() == '/') path.remove_prefix(1);
    for (;;) {
      std::size_t slash = path.find('/');
      if (slash == std::string_view::npos) {
        name = std::string(path);
        return name.empty() || name == "." || name == ".." || name.find('\0') != std::string::npos ? nullptr : dir;
      }
      auto it = dir->children.find(path.substr(0, slash));
      if (it == dir->children.end()) return nullptr;
      dir = it->second.nd.get();
      if (!S_ISDIR(dir->type)) return nullptr;
      path.remove_prefix(slash + 1);
    }
  }
  node* resolve(std::string_view path) {
    std::string name;
    node* dir = parent_of(path, name);
    if (!dir) return nullptr;
    auto it = dir->children.find(name);
    return it == dir->children.end() ? nullptr : it->second.nd.get();
  }

  // ENOENT from a notification: the kernel had nothing of it cached, so nothing to invalidate.
  static std::string describe(const cf::result<>& r) {
    if (r) return "ok";
    if (r.error_code() == ENOENT) return "ok (not cached)";
    return failed(r);
  }
  // A command's own failure (ENOENT included: no such file).
  static std::string failed(const cf::result<>& r) { return std::string("error ") + std::strerror(r.error_code()); }

  void control(std::string_view line) {
    std::string_view rest = line;
    const std::string_view cmd = next_word(rest);
    std::string result;
    cf::context none(nullptr, cache_);
    if (cmd == "set" || cmd == "store" || cmd == "set-unnotified") {
      const std::string path(next_word(rest));
      const std::string text(rest);
      cf::ino ino = 0;
      {
        std::shared_lock names(names_);
        node* nd = resolve(path);
        if (nd && S_ISREG(nd->type)) {
          std::unique_lock lock(nd->lock);
          nd->data.resize(0);
          nd->data.copy_in(0, std::as_bytes(std::span(text.data(), text.size())));
          nd->mtime = nd->ctime = now();
          ino = nd->ino;
        }
      }
      if (!ino) {
        result = "error: no such regular file";
      } else if (cmd == "set-unnotified") {
        result = "ok (the kernel was not told: it may show the old contents until its caches expire)";
      } else if (cmd == "set") {
        result = describe(conn_.inval_inode(ino, 0, 0));
      } else {
        result = describe(conn_.inval_inode(ino, -1, 0)) + ", store " +
                 describe(conn_.store(ino, 0, std::as_bytes(std::span(text.data(), text.size()))));
      }
    } else if (cmd == "rm") {
      const std::string path(next_word(rest));
      std::string name;
      cf::ino parent = 0, child = 0;
      {
        std::shared_lock names(names_);
        node* dir = parent_of(path, name);
        node* nd = dir ? resolve(path) : nullptr;
        if (nd) parent = dir->ino, child = nd->ino;
      }
      auto r = parent ? unlink(none, parent, name) : cf::result<>(cf::error(ENOENT));
      result = r ? "unlinked, notify delete " + describe(conn_.delete_entry(parent, child, name)) : failed(r);
    } else if (cmd == "mv") {
      const std::string from(next_word(rest)), to(next_word(rest));
      std::string from_name, to_name;
      cf::ino from_dir = 0, to_dir = 0;
      {
        std::shared_lock names(names_);
        node* a = parent_of(from, from_name);
        node* b = parent_of(to, to_name);
        if (a && b) from_dir = a->ino, to_dir = b->ino;
      }
      auto r = from_dir ? rename(none, from_dir, from_name, to_dir, to_name, 0) : cf::result<>(cf::error(ENOENT));
      result = r ? "renamed, inval_entry " + describe(conn_.inval_entry(from_dir, from_name)) + " and " +
                       describe(conn_.inval_entry(to_dir, to_name))
                 : failed(r);
    } else if (cmd == "retrieve") {
      const std::string path(next_word(rest));
      cf::ino ino = 0;
      std::vector<std::byte> mine;
      {
        std::shared_lock names(names_);
        node* nd = resolve(path);
        if (nd && S_ISREG(nd->type)) {
          std::shared_lock lock(nd->lock);
          ino = nd->ino;
          mine.resize(std::min<std::uint64_t>(nd->data.size(), 1 << 20));
          nd->data.copy_out(0, mine);
        }
      }
      if (!ino) {
        result = "error: no such regular file";
      } else {
        if (!control_ring_) control_ring_ = std::make_unique<cf::io::ring>(cf::io::ring_options{});
        std::vector<std::byte> cached(mine.size());
        auto got = cf::io::sync_wait(*control_ring_, conn_.retrieve(*control_ring_, ino, 0, cached));
        if (!got) {
          result = describe(cf::error(got.error_code()));
        } else {
          // (An empty file's buffers have no data() to compare: memcmp must not see null.)
          const bool same = *got == 0 || std::memcmp(cached.data(), mine.data(), *got) == 0;
          result = std::to_string(*got) + " bytes cached, " + (same ? "same as memfs" : "DIFFERENT from memfs");
          if (!same && *got <= 64) result += ": \"" + std::string(reinterpret_cast<const char*>(cached.data()), *got) + "\"";
        }
      }
    } else if (cmd == "epoch") {
      result = describe(conn_.inc_epoch());
    } else {
      result = "error: unknown command (set, store, rm, mv, retrieve, epoch)";
    }
    std::fprintf(stderr, "memfs control: %.*s: %s\n", static_cast<int>(line.size()), line.data(), result.c_str());
  }

  std::shared_mutex names_;  // every directory's entries and parent (see the top of this file)
  std::array<shard, shard_count> shards_;
  std::atomic<cf::ino> next_ino_{cf::root_ino};
  std::atomic<std::uint64_t> node_count_{0};
  space_budget space_;  // the bytes all files hold, against --size
  cf::connection conn_;
  cf::cache_defaults cache_;
  std::string control_path_;
  std::unique_ptr<cf::io::ring> control_ring_;  // the control thread's, for RETRIEVE
  std::unique_ptr<control_channel> control_;    // last: its thread stops first
};

namespace {

// Parses an owner id for -o uid= / gid= (decimal, as tmpfs takes it; -1 is "no id" to the kernel).
bool parse_id(std::string_view s, std::uint32_t& out) {
  if (s.empty() || s.size() > 10 || s.find_first_not_of("0123456789") != std::string_view::npos) return false;
  const std::uint64_t v = std::stoull(std::string(s));
  if (v >= 0xffffffffu) return false;
  out = static_cast<std::uint32_t>(v);
  return true;
}

// Parses the root's permission bits for -o mode= (octal, at most 07777, as tmpfs takes it).
bool parse_mode(std::string_view s, mode_t& out) {
  if (s.empty() || s.size() > 5 || s.find_first_not_of("01234567") != std::string_view::npos) return false;
  const unsigned long v = std::stoul(std::string(s), nullptr, 8);
  if (v > 07777) return false;
  out = static_cast<mode_t>(v);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  namespace session = corofuse::session;
  std::uint64_t size = default_space_limit();
  std::string control;
  // The root belongs to whoever runs memfs (an ordinary user mounting through fusermount3 can then
  // use it at once), as tmpfs's root belongs to whoever mounts it; -o uid=,gid=,mode= choose.
  root_owner root{static_cast<std::uint32_t>(::geteuid()), static_cast<std::uint32_t>(::getegid()), 0755};
  const session::own_options own = {
      session::own_option::flag("--size", "N",
                                "the most file data memfs holds: bytes, with K/M/G/T, or N% of the memory\n"
                                "it may use (RAM, or its cgroup's limit; default 25%); writes beyond it\n"
                                "fail with ENOSPC; at most what a cgroup's memory limit leaves",
                                [&](std::string_view v) -> std::string {
                                  return parse_space_limit(v, size)
                                             ? ""
                                             : "bytes with an optional K/M/G/T suffix, or 1-100% of memory; at least 4096";
                                }),
      session::own_option::flag("--control", "FIFO",
                                "take commands from FIFO (created if missing) that change the tree\n"
                                "behind the kernel's back and notify it: set|store PATH TEXT, rm PATH,\n"
                                "mv OLD NEW, retrieve PATH, epoch (see memfs.cpp)",
                                [&](std::string_view v) -> std::string {
                                  if (v.empty()) return "a FIFO path";
                                  control = std::string(v);
                                  return "";
                                }),
      session::own_option::mount("uid", "N", "the root directory's owner (default: the user running memfs)",
                                 [&](std::string_view v) -> std::string { return parse_id(v, root.uid) ? "" : "a numeric user id"; }),
      session::own_option::mount("gid", "N", "the root directory's group (default: that user's group)",
                                 [&](std::string_view v) -> std::string { return parse_id(v, root.gid) ? "" : "a numeric group id"; }),
      session::own_option::mount("mode", "OCTAL", "the root directory's permissions (default 0755)",
                                 [&](std::string_view v) -> std::string { return parse_mode(v, root.mode) ? "" : "octal, at most 07777"; }),
  };
  constexpr std::string_view about = "memfs: an in-memory POSIX filesystem (files, directories, links, devices, xattrs)";
  session::options o;
  if (int status = session::parse_main_options(argc, argv, about, {}, o, "MOUNTPOINT", own); status >= 0) return status;
  std::string note;
  size = held_to_cgroup(size, note);
  if (!note.empty()) std::fprintf(stderr, "%s: %s\n", argv[0], note.c_str());
  memfs fs(size, root);
  if (!control.empty()) {
    // Before mounting: a bad FIFO path is one line and nothing mounted.
    if (std::string why = control_channel::prepare(control); !why.empty()) {
      std::fprintf(stderr, "%s: %s\n", argv[0], why.c_str());
      return 1;
    }
    fs.set_control_path(control);
  }
  return session::serve(fs, o);
}
