// The base of every node of a node-based filesystem (node/tree.hpp): what the layer keeps for each
// node so that the filesystem does not have to. A filesystem declares its node type as
//
//   struct my_node : corofuse::node::inode<my_node> { using inode::inode; ... };
//
// and gives it the operations it supports (node/tree.hpp lists them). The base holds:
//   - the node id the kernel knows it by (also its inode number), and a generation;
//   - the attributes the tree keeps for it: mode, owner, group, device number, times, link count,
//     a symlink's target (a node may compute its size and blocks itself);
//   - a directory's children by name, each with a stable listing cookie;
//   - where it is named (parent and name, one per hard link), for path();
//   - the kernel's lookup count and the number of open files.
// All of it is changed only by the tree, under the tree's locks; a node reads its own attributes
// with attributes().
//
// The base is CRTP (no virtual function): the tree calls the node's operations directly, and the
// compiler inlines them into the dispatch. A filesystem that wants polymorphic nodes makes its
// node type an abstract class with virtual operations; the tree then calls those.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "corofuse/fs/types.hpp"

namespace corofuse::node {

template <typename Node>
class tree;

// What a node starts with. A tree that lets clients make files (its node type is constructible
// from `made`) builds new nodes from it; a filesystem builds its own the same way.
struct made {
  mode_t mode = S_IFREG | 0644;  // file type and permission bits
  uid_t uid = ::getuid();
  gid_t gid = ::getgid();
  dev_t rdev = 0;           // a device node's number
  std::string_view target;  // a symlink's target
  timespec mtime{};         // its modification, access and change times; 0: now (the epoch itself:
                            // tree::edit_attributes)
};

// A node's attributes as the tree keeps them (a copy, taken under the node's lock).
struct attributes {
  mode_t mode = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  dev_t rdev = 0;
  nlink_t nlink = 0;
  timespec atime{}, mtime{}, ctime{};
};

inline timespec now() noexcept {
  timespec t{};
  ::clock_gettime(CLOCK_REALTIME, &t);
  return t;
}

template <typename Derived>
class inode : public std::enable_shared_from_this<Derived> {
 public:
  explicit inode(const made& m) : type_(m.mode & S_IFMT), target_(m.target) {
    attrs_.mode = m.mode;
    attrs_.uid = m.uid;
    attrs_.gid = m.gid;
    attrs_.rdev = m.rdev;
    attrs_.atime = attrs_.mtime = attrs_.ctime = (m.mtime.tv_sec || m.mtime.tv_nsec) ? m.mtime : now();
  }
  // A node of type and permissions `mode`, owned by the serving user.
  explicit inode(mode_t mode) : inode(made{mode, ::getuid(), ::getgid(), 0, {}, {}}) {}
  inode(const inode&) = delete;
  inode& operator=(const inode&) = delete;

  // The file type (S_IFREG, S_IFDIR, ...): fixed for the node's life.
  mode_t type() const noexcept { return type_; }
  bool is_dir() const noexcept { return S_ISDIR(type_); }
  bool is_file() const noexcept { return S_ISREG(type_); }
  // The node id: the kernel's name for it and its inode number. 0 until the node is in a tree.
  // Ids are never reused in a tree's lifetime.
  corofuse::ino id() const noexcept { return id_; }
  std::uint64_t generation() const noexcept { return generation_; }

  // A copy of the attributes the tree keeps.
  node::attributes attributes() const {
    std::shared_lock lock(attr_lock_);
    return attrs_;
  }
  // A symlink's target (fixed at creation).
  const std::string& target() const noexcept { return target_; }
  // Open files of this node (OPEN and CREATE not yet RELEASEd).
  std::uint32_t open_count() const noexcept { return opens_.load(std::memory_order_relaxed); }

 private:
  friend class tree<Derived>;

  struct child {
    std::shared_ptr<Derived> node;
    std::uint64_t cookie;
  };
  using children_map = std::map<std::string, child, std::less<>>;
  struct link {
    Derived* parent;  // valid while the link exists: a directory with children is never freed
    std::string name;
  };

  const mode_t type_;
  const std::string target_;
  corofuse::ino id_ = 0;
  std::uint64_t generation_ = 0;

  // Attributes: under attr_lock_.
  mutable std::shared_mutex attr_lock_;
  node::attributes attrs_;
  bool linkable_ = false;  // an O_TMPFILE file, nameless, that linkat may still name

  // The kernel's references: under the tree's shard lock of this id.
  std::uint64_t lookups_ = 0;
  std::atomic<std::uint32_t> opens_{0};

  // Names: under the tree's names lock.
  std::vector<link> links_;
  children_map children_;                                               // a directory's entries
  std::map<std::uint64_t, typename children_map::iterator> by_cookie_;  // the same, in listing order
  std::uint64_t next_cookie_ = 3;                                       // 1 and 2 resume after . and ..
  std::atomic<std::uint32_t> entries_{0};                               // children_.size(), for a stat that holds no names lock
  std::atomic<bool> orphaned_{false};                                   // orphaned() was called
};

}  // namespace corofuse::node
