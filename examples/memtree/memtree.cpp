// memtree: memfs's behaviour (an in-memory filesystem that behaves like tmpfs) written on the node
// layer (corofuse/node.hpp) instead of raw handlers.
//
// The tree does what memfs writes out by hand: node ids, lookup counts and FORGET, names, hard
// links, link counts, modes and owners of new files, setgid directories, times, rename's rules,
// listings, O_TMPFILE. What is left here is what only this filesystem knows: where a file's bytes
// live (sparse pages against a size limit, file_pages.hpp, shared with memfs), its extended
// attributes (xattr_map.hpp, likewise), and the space statfs reports. The same behaviour suite runs on both (tests/mount/fs_suite_test.cpp), and
// bench/run measures both, so the layer's cost is a number.
//
// Every CPU's queue serves at once: a node's data has a reader-writer lock of its own (READ
// shared, WRITE exclusive), its xattrs another; the tree's locks are never held around these.
#include <linux/falloc.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>

#include "corofuse/corofuse.hpp"
#include "examples/memfs/file_pages.hpp"
#include "examples/memfs/xattr_map.hpp"

namespace cf = corofuse;

// What all files of one mount share: the byte limit and the count of nodes (for statfs).
struct mount_state {
  explicit mount_state(std::uint64_t limit) : space(limit) {}
  space_budget space;
  std::atomic<std::uint64_t> nodes{0};
};

class mem_node : public cf::node::inode<mem_node> {
 public:
  mem_node(const cf::node::made& m, mount_state& state) : inode(m), state_(&state), data_(state.space) {
    state_->nodes.fetch_add(1, std::memory_order_relaxed);
  }
  // A node a client makes inside `dir` (the tree calls this): same mount, same limit.
  mem_node(const cf::node::made& m, mem_node& dir) : mem_node(m, *dir.state_) {}
  ~mem_node() { state_->nodes.fetch_sub(1, std::memory_order_relaxed); }

  off_t size() const {
    std::shared_lock lock(data_lock_);
    return static_cast<off_t>(data_.size());
  }
  blkcnt_t blocks() const {
    std::shared_lock lock(data_lock_);
    return static_cast<blkcnt_t>(data_.blocks());
  }

  cf::result<std::size_t> read(cf::context&, cf::file_info&, std::span<std::byte> out, off_t off) {
    if (is_dir()) return cf::error(EISDIR);
    if (off < 0) return cf::error(EINVAL);
    std::shared_lock lock(data_lock_);
    const auto start = static_cast<std::uint64_t>(off);
    if (start >= data_.size()) return std::size_t{0};
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(out.size(), data_.size() - start));
    data_.copy_out(start, out.first(n));
    return n;
  }

  cf::result<std::size_t> write(cf::context&, cf::file_info& fi, std::span<const std::byte> in, off_t off) {
    if (!is_file()) return cf::error(EINVAL);
    if (off < 0) return cf::error(EINVAL);
    std::unique_lock lock(data_lock_);
    const std::uint64_t start = (fi.flags & O_APPEND) ? data_.size() : static_cast<std::uint64_t>(off);
    if (start + in.size() > file_pages::max_size) return cf::error(EFBIG);
    const std::size_t written = data_.copy_in(start, in);
    if (written == 0 && !in.empty()) return cf::error(ENOSPC);
    return written;
  }

  cf::result<> truncate(cf::context&, off_t size) {
    if (!is_file()) return cf::error(EINVAL);
    if (static_cast<std::uint64_t>(size) > file_pages::max_size) return cf::error(EFBIG);
    std::unique_lock lock(data_lock_);
    data_.resize(static_cast<std::uint64_t>(size));
    return cf::ok();
  }

  cf::result<> fsync(cf::context&, cf::file_info&, bool) { return cf::ok(); }  // memory is the medium

  cf::result<> fallocate(cf::context&, cf::file_info&, int mode, off_t off, off_t len) {
    if (off < 0 || len <= 0) return cf::error(EINVAL);
    const auto start = static_cast<std::uint64_t>(off), end = start + static_cast<std::uint64_t>(len);
    if (end > file_pages::max_size) return cf::error(EFBIG);
    std::unique_lock lock(data_lock_);
    if (mode == (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)) {
      data_.punch(start, end);
      return cf::ok();
    }
    if (mode != 0 && mode != FALLOC_FL_KEEP_SIZE) return cf::error(EOPNOTSUPP);
    if (!data_.reserve(start, end, mode == FALLOC_FL_KEEP_SIZE)) return cf::error(ENOSPC);
    return cf::ok();
  }

  cf::result<off_t> lseek(cf::context&, cf::file_info&, off_t off, int whence) {
    if (off < 0) return cf::error(ENXIO);
    std::shared_lock lock(data_lock_);
    const auto pos = static_cast<std::uint64_t>(off);
    if (pos >= data_.size()) return cf::error(ENXIO);
    if (whence == SEEK_DATA) {
      const auto at = data_.next_data(pos);
      if (!at) return cf::error(ENXIO);
      return static_cast<off_t>(*at);
    }
    if (whence == SEEK_HOLE) return static_cast<off_t>(data_.next_hole(pos));
    return cf::error(EINVAL);
  }

  // No name and no open file left: nothing can reach the bytes, so their space is free at once,
  // as on tmpfs (the kernel may still hold the node, for a last stat).
  void orphaned() {
    std::unique_lock lock(data_lock_);
    data_.release();
  }

  // Extended attributes: tmpfs's rules (xattr_map.hpp), under a lock of their own.
  cf::result<std::size_t> getxattr(cf::context&, std::string_view name, std::span<std::byte> out) {
    std::lock_guard lock(xattr_lock_);
    return xattrs_.get(name, out);
  }
  cf::result<std::size_t> listxattr(cf::context& c, std::span<std::byte> out) {
    std::lock_guard lock(xattr_lock_);
    return xattrs_.list(c.uid() == 0, out);
  }
  cf::result<> setxattr(cf::context&, std::string_view name, std::span<const std::byte> value, int flags) {
    std::lock_guard lock(xattr_lock_);
    return xattrs_.set(name, value, flags);
  }
  cf::result<> removexattr(cf::context&, std::string_view name) {
    std::lock_guard lock(xattr_lock_);
    return xattrs_.remove(name);
  }

  // Asked of the root: the mount's limit and what is used of it.
  cf::result<struct statvfs> statfs(cf::context&) {
    struct statvfs v {};
    const std::uint64_t limit = state_->space.limit(), used = state_->space.used();
    v.f_bsize = v.f_frsize = space_budget::page_bytes;
    v.f_blocks = limit / space_budget::page_bytes;
    v.f_bfree = v.f_bavail = (limit - std::min(used, limit)) / space_budget::page_bytes;
    v.f_files = std::uint64_t{1} << 32;
    v.f_ffree = v.f_favail = v.f_files - state_->nodes.load(std::memory_order_relaxed);
    v.f_namemax = cf::node::tree<mem_node>::name_max;
    return v;
  }

 private:
  mount_state* state_;
  mutable std::shared_mutex data_lock_;
  file_pages data_;
  std::mutex xattr_lock_;
  xattr_map xattrs_;
};

int main(int argc, char** argv) {
  namespace session = cf::session;
  std::uint64_t size = default_space_limit();
  const session::own_options own = {
      session::own_option::flag("--size", "N",
                                "the most file data memtree holds: bytes, with K/M/G/T, or N% of the memory\n"
                                "it may use (RAM, or its cgroup's limit; default 25%); writes beyond it\n"
                                "fail with ENOSPC; at most what a cgroup's memory limit leaves",
                                [&](std::string_view v) -> std::string {
                                  return parse_space_limit(v, size)
                                             ? ""
                                             : "bytes with an optional K/M/G/T suffix, or 1-100% of memory; at least 4096";
                                }),
  };
  constexpr std::string_view about =
      "memtree: an in-memory POSIX filesystem (files, directories, links, devices, xattrs) on corofuse's node layer";
  session::options o;
  if (int status = session::parse_main_options(argc, argv, about, {}, o, "MOUNTPOINT", own); status >= 0) return status;
  std::string note;
  size = held_to_cgroup(size, note);
  if (!note.empty()) std::fprintf(stderr, "%s: %s\n", argv[0], note.c_str());
  mount_state state(size);
  cf::node::tree<mem_node> fs(std::make_shared<mem_node>(cf::node::made{S_IFDIR | 0755, ::geteuid(), ::getegid(), 0, {}, {}}, state));
  return session::serve(fs, o);
}
