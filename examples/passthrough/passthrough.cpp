// passthrough: mirrors a directory (SOURCE) at the mount point.
//
// Inodes: each backing inode the kernel knows is a node, keyed by (st_dev, st_ino) so that hard
// links are one node; node ids come from a counter and are never reused. A node records its inode
// as a file handle (name_to_handle_at), and a request that needs a descriptor gets one from a
// bounded cache of O_PATH descriptors (CLOCK), opened again by handle (open_by_handle_at) on a
// miss: the tree served is not bounded by the open-file limit. An inode deleted behind the
// mount's back gives ESTALE through its handle; a later inode that reuses its number has another
// handle, and so another node. Where handles cannot be used (no CAP_DAC_READ_SEARCH, a filesystem
// without them, another mount under SOURCE, --inode-handles off), a node holds an O_PATH,
// O_NOFOLLOW descriptor for its life instead, which also keeps its inode (and number) alive. The
// tables are sharded, each shard with its own lock.
// Every operation works relative to a descriptor of the inode with *at() calls and a single name
// component: the server never resolves a path, never follows a symlink, and so never leaves
// SOURCE, whatever is renamed or replaced inside it behind its back.
//
// Data: READ is answered with a file slice (the transport reads the backing file straight into
// the reply buffer; on the ring that read is linked to COMMIT_AND_FETCH), WRITE, FLUSH, FSYNC,
// FALLOCATE, GETATTR and STATX are io_uring operations on the queue's own ring, so a queue serves
// other requests while the backing file works. --passthrough hands READ and WRITE to the kernel
// (FUSE passthrough with backing ids): they never reach this process.
//
// Permissions: the kernel checks them (default_permissions, always on) against the backing files'
// modes with the caller's full credentials. Objects are created with the caller's fsuid/fsgid
// (so they belong to the caller), with the server's capabilities kept (its check would only
// repeat the kernel's, and without the caller's supplementary groups). Run without root, every
// file is created as the server's user.
#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "corofuse/corofuse.hpp"

namespace cf = corofuse;

class passthrough;

namespace {

// The magic link of one of our descriptors, for the calls that have no *at() form taking an
// O_PATH descriptor (open, chmod, truncate, xattrs). The kernel resolves it to the very inode
// the descriptor holds, whatever has become of its names, and does not follow it further when
// that inode is a symlink (so xattrs of a symlink itself work through it too).
struct proc_fd_path {
  char text[32];
  explicit proc_fd_path(int fd) noexcept { std::snprintf(text, sizeof text, "/proc/self/fd/%d", fd); }
  const char* c_str() const noexcept { return text; }
};

// A name from the kernel as a C string. One component: never empty, never "." or "..", no '/'.
struct component {
  char text[NAME_MAX + 1];
  int error = 0;
  explicit component(std::string_view n) noexcept {
    text[0] = 0;
    if (n.empty() || n == "." || n == ".." || n.find('/') != std::string_view::npos || n.find('\0') != std::string_view::npos) {
      error = EINVAL;
    } else if (n.size() > NAME_MAX) {
      error = ENAMETOOLONG;
    } else {
      std::memcpy(text, n.data(), n.size());
      text[n.size()] = 0;
    }
  }
  const char* c_str() const noexcept { return text; }
};

// An xattr name as a C string, on the stack (the GETXATTR of security.capability that precedes
// every write must not allocate). XATTR_NAME_MAX is 255.
struct xattr_name {
  char text[256];
  bool too_long = false;
  explicit xattr_name(std::string_view n) noexcept {
    too_long = n.size() >= sizeof text;
    const std::size_t len = too_long ? 0 : n.size();
    std::memcpy(text, n.data(), len);
    text[len] = 0;
  }
  const char* c_str() const noexcept { return text; }
};

cf::error errno_error() { return cf::error(errno ? errno : EIO); }

struct stat to_stat(const struct ::statx& x) {
  struct stat st {};
  st.st_dev = makedev(x.stx_dev_major, x.stx_dev_minor);
  st.st_ino = x.stx_ino;
  st.st_mode = x.stx_mode;
  st.st_nlink = x.stx_nlink;
  st.st_uid = x.stx_uid;
  st.st_gid = x.stx_gid;
  st.st_rdev = makedev(x.stx_rdev_major, x.stx_rdev_minor);
  st.st_size = static_cast<off_t>(x.stx_size);
  st.st_blksize = static_cast<blksize_t>(x.stx_blksize);
  st.st_blocks = static_cast<blkcnt_t>(x.stx_blocks);
  st.st_atim = {x.stx_atime.tv_sec, x.stx_atime.tv_nsec};
  st.st_mtim = {x.stx_mtime.tv_sec, x.stx_mtime.tv_nsec};
  st.st_ctim = {x.stx_ctime.tv_sec, x.stx_ctime.tv_nsec};
  return st;
}

// The open file handle the kernel passes back: the backing descriptor, and the backing id when
// the kernel does the I/O itself (--passthrough). Handles are slots checked on every use, so a
// stale or forged fh gets EBADF instead of acting on some other descriptor of this process.
struct open_file {
  int fd = -1;
  corofuse::ino node = 0;       // the inode it was opened on
  std::int32_t backing_id = 0;  // --passthrough: the inode's backing id, one reference of it
  // Directories: the listing, read with getdents64(2) into a buffer the open file keeps (open
  // files are recycled, buffer and all, so a warm server lists without allocating; fdopendir's
  // stream would be one allocation per OPENDIR).
  bool is_dir = false;
  std::unique_ptr<std::byte[]> dir_buffer;
  std::size_t dir_filled = 0, dir_at = 0;  // the entries read, and the next one in dir_buffer
  static constexpr std::size_t dir_buffer_size = 32 * 1024;
  // Where its data lives (fs/backing.hpp): in memory or on a local disk, READ and WRITE may run on
  // the queue thread; classified at open (a file under SOURCE may sit on another filesystem
  // mounted there).
  cf::backing_speed speed = cf::backing_speed::remote;
  off_t dir_offset = 0;  // where the listing stands (the d_off of the last entry handed out)
  std::mutex dir_mutex;

  // Makes this a directory's open file (a buffer the first time only) at its start.
  void open_listing() {
    is_dir = true;
    if (!dir_buffer) dir_buffer = std::make_unique<std::byte[]>(dir_buffer_size);
    dir_filled = dir_at = 0;
    dir_offset = 0;
  }
};

// A directory stream (an open directory's DIR) as a listing: each step reads one entry, holding
// the open directory's mutex while the framework packs the reply. Where the stream stands is kept
// (open_file::dir_offset), so that the next READDIR continuing from the last entry read goes on
// without a seek; after an entry that was read but did not fit, the next READDIR seeks back to it.
class dir_stream_listing {
 public:
  struct entry {
    std::string_view name;
    std::uint64_t ino = 0;
    std::uint32_t type = 0;
    std::uint64_t next_offset = 0;
    passthrough* fs = nullptr;
    int dirfd = -1;
    const char* c_name = nullptr;  // the same name, NUL-terminated, for openat
    cf::entry lookup() const;
  };
  struct sentinel {};
  class iterator {
   public:
    explicit iterator(dir_stream_listing& l) : l_(&l) {}
    const entry& operator*() const { return l_->current_; }
    iterator& operator++() {
      l_->advance();
      return *this;
    }
    bool operator==(sentinel) const { return l_->done_; }

   private:
    dir_stream_listing* l_;
  };

  // Positions the listing at the kernel's offset (0, or an entry's d_off: lseek(2) takes either)
  // and reads the first entry.
  dir_stream_listing(passthrough& fs, open_file& f, off_t off) : lock_(f.dir_mutex), f_(&f), fs_(&fs), dirfd_(f.fd) {
    if (off != f.dir_offset) {
      if (::lseek(f.fd, off, SEEK_SET) < 0) {
        error_ = errno;
        done_ = true;
        return;
      }
      f.dir_filled = f.dir_at = 0;
      f.dir_offset = off;
    }
    advance();
  }
  int error() const noexcept { return error_; }
  iterator begin() { return iterator(*this); }
  sentinel end() { return {}; }

 private:
  // The next record of the buffer, reading more of the directory when it is used up.
  void advance() {
    open_file& f = *f_;
    if (f.dir_at >= f.dir_filled) {
      const long n = ::syscall(SYS_getdents64, f.fd, f.dir_buffer.get(), open_file::dir_buffer_size);
      if (n <= 0) {
        error_ = n < 0 ? errno : 0;  // 0: the end of the directory
        done_ = true;
        return;
      }
      f.dir_filled = static_cast<std::size_t>(n);
      f.dir_at = 0;
    }
    // linux_dirent64: d_ino, d_off, d_reclen, d_type, then the NUL-terminated name.
    const std::byte* rec = f.dir_buffer.get() + f.dir_at;
    std::uint64_t ino;
    std::int64_t next;
    std::uint16_t reclen;
    std::uint8_t type;
    std::memcpy(&ino, rec, sizeof ino);
    std::memcpy(&next, rec + 8, sizeof next);
    std::memcpy(&reclen, rec + 16, sizeof reclen);
    std::memcpy(&type, rec + 18, sizeof type);
    const char* name = reinterpret_cast<const char*>(rec + 19);
    f.dir_at += reclen;
    f.dir_offset = next;
    current_ = entry{name, ino, type, static_cast<std::uint64_t>(next), fs_, dirfd_, name};
  }

  std::unique_lock<std::mutex> lock_;
  open_file* f_;
  passthrough* fs_;
  int dirfd_;
  entry current_;
  bool done_ = false;
  int error_ = 0;
};

// A file handle (name_to_handle_at(2)): an inode recorded as bytes, opened again with
// open_by_handle_at(2) and a descriptor of the same mount. On the stack: a LOOKUP of a known
// inode must not allocate.
struct handle_buffer {
  alignas(file_handle) unsigned char raw[sizeof(file_handle) + MAX_HANDLE_SZ];
  bool taken = false;

  file_handle* get() noexcept { return reinterpret_cast<file_handle*>(raw); }
  const file_handle* get() const noexcept { return reinterpret_cast<const file_handle*>(raw); }
  bool valid() const noexcept { return taken; }
  std::string_view bytes() const noexcept { return {reinterpret_cast<const char*>(get()->f_handle), get()->handle_bytes}; }
  // The handle of the inode `fd` holds and the id of the mount it is valid on; false (errno set)
  // when its filesystem gives none.
  bool take(int fd, int& mount_id) noexcept {
    get()->handle_bytes = MAX_HANDLE_SZ;
    taken = ::name_to_handle_at(fd, "", get(), &mount_id, AT_EMPTY_PATH) == 0;
    return taken;
  }
  // A recorded handle; false when it cannot be one (handed over by a predecessor).
  bool set(std::string_view bytes, int type) noexcept {
    taken = !bytes.empty() && bytes.size() <= MAX_HANDLE_SZ;
    if (!taken) return false;
    get()->handle_bytes = static_cast<unsigned int>(bytes.size());
    get()->handle_type = type;
    std::memcpy(get()->f_handle, bytes.data(), bytes.size());
    return true;
  }
};

// How inodes are recorded: as file handles when SOURCE's filesystem gives them and this process
// may open them (checked at start), else a descriptor per inode.
struct handle_config {
  bool on = false;
  int mount_fd = -1;               // a descriptor of SOURCE's mount, for open_by_handle_at(2)
  int mount_id = -1;               // its mount id: handles of other mounts are not opened with it
  std::size_t cache_capacity = 0;  // descriptors the cache keeps open (over every shard)
};

struct options {
  // --backing: how every backing file is treated (fs/backing.hpp), in place of asking its
  // filesystem; unset: SOURCE's filesystem is classified once, another one under it per open.
  std::optional<cf::backing_speed> backing;
  bool direct_io = false;
  bool kernel_passthrough = false;
  bool writeback = false;
  bool inode_handles = true;  // --inode-handles auto (true) or off
};

}  // namespace

class passthrough {
 public:
  // `handles`: how inodes are recorded (its mount descriptor is the server's from here on).
  passthrough(int source_fd, const struct stat& source_st, options o, handle_config handles)
      : opts_(o), source_dev_(source_st.st_dev), speed_(o.backing ? *o.backing : cf::classify_backing(source_fd)), handles_(handles) {
    const std::size_t per_shard = std::max<std::size_t>(1, handles_.cache_capacity / shard_count);
    for (auto& s : node_shards_) s.clock.assign(handles_.on ? per_shard : 0, nullptr);
    place_root(source_fd, source_st);
  }

  ~passthrough() {
    for (auto& f : files_)
      if (f) close_file(*f);
    clear_nodes();
    if (handles_.mount_fd >= 0) ::close(handles_.mount_fd);
  }

  // HANDLE_KILLPRIV_V2: the kernel says when a write or truncation must drop setuid/setgid, and
  // passthrough does it with the rules tmpfs follows (the backing filesystem would not: the
  // server writes with CAP_FSETID).
  // security_ctx: an LSM's label for each new object comes with the creating request and is
  // written to the backing object (the server's own creation would otherwise label it as the
  // server's, not the caller's).
  std::uint64_t init_flags() const {
    return cf::abi::init_flag::handle_killpriv_v2 | cf::abi::init_flag::security_ctx |
           (opts_.kernel_passthrough ? cf::abi::init_flag::passthrough : 0);
  }

  // Idmapped mounts (-o allow_idmap): a creating request names the new object's owner (mapped
  // through the idmapped mount), which is all passthrough acts on. Other requests name nobody:
  // trusted.* xattrs are then listed to nobody, and a truncation or write drops setgid unless the
  // caller is known to be in the file's group.
  static constexpr bool supports_idmapped_mounts = true;

  // A line for the log once the mount is up.
  void note_when_serving(std::string line) { note_when_serving_ = std::move(line); }

  void init(const cf::connection& c) {
    conn_ = c;
    if (!note_when_serving_.empty()) std::fprintf(stderr, "passthrough: %s\n", note_when_serving_.c_str());
    if (opts_.kernel_passthrough && !c.has(cf::abi::init_flag::passthrough)) {
      std::fprintf(stderr,
                   "passthrough: the kernel did not agree to FUSE passthrough (needs Linux 6.9+ with "
                   "CONFIG_FUSE_PASSTHROUGH, and no writeback_cache): serving READ and WRITE itself\n");
      opts_.kernel_passthrough = false;
    }
  }

  // ---- names --------------------------------------------------------------------------------

  cf::result<cf::entry> lookup(cf::context&, cf::ino parent, std::string_view name) {
    component n(name);
    if (n.error) return cf::error(n.error);
    inode_ref dirfd_ref = find(parent);
    if (!dirfd_ref.fd_ok()) return cf::error(dirfd_ref.error());
    const int dirfd = dirfd_ref.fd;
    int fd = ::openat(dirfd, n.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return errno_error();
    return adopt(fd);
  }

  void forget(cf::context&, cf::ino i, std::uint64_t n) { drop_lookups(i, n); }

  // ---- restart without unmount (--handoff-socket / --take-over) -------------------------------
  // The kernel names inodes by node id and open files by fh: the successor must know the same
  // ones. Everything is handed over as it is: each node's file handle as bytes, or its O_PATH
  // descriptor (SCM_RIGHTS) when it is pinned (the node id, its lookup count and its
  // kernel-passthrough backing id stay valid), each open file's descriptor (sharing its file
  // offset and locks), each directory listing's position. Nothing is rebuilt from paths: a renamed
  // or unlinked-but-open file stays what the kernel thinks it is. The cache is not handed over.
  void save_state(cf::session::handoff_writer& w) {
    auto locks = lock_everything();
    w.put(state_format_handles);
    w.put(static_cast<std::uint64_t>(next_id_.load()));
    std::uint64_t count = 0;
    for (auto& s : node_shards_) count += s.nodes.size();
    w.put(count);
    for (auto& s : node_shards_) {
      for (const auto& [id, in] : s.nodes) {
        w.put(static_cast<std::uint64_t>(in->id));
        w.put(static_cast<std::uint64_t>(in->dev));
        w.put(static_cast<std::uint64_t>(in->ino));
        w.put(static_cast<std::uint32_t>(in->type));
        w.put(in->lookups);
        w.put(in->backing_id);
        w.put(in->backing_refs);  // (recounted by the successor)
        w.put<std::uint8_t>(is_indexed(*in) ? 1 : 0);
        w.put_string(in->handle);
        w.put(in->handle_type);
        w.put<std::uint8_t>(in->pinned_fd >= 0 ? 1 : 0);
        if (in->pinned_fd >= 0) w.put_fd(in->pinned_fd);
      }
    }
    w.put(static_cast<std::uint64_t>(files_.size()));
    for (std::size_t slot = 0; slot < files_.size(); ++slot) {
      w.put(generations_[slot]);
      const open_file* f = files_[slot].get();
      w.put<std::uint8_t>(f ? 1 : 0);
      if (!f) continue;
      w.put(static_cast<std::uint64_t>(f->node));
      w.put(f->backing_id);
      w.put<std::uint8_t>(f->is_dir ? 1 : 0);
      w.put_fd(f->fd);
    }
  }

  // Everything read is checked: a state that does not add up is refused (the successor then gives
  // the mount back), never served wrongly. A predecessor from before file handles (a descriptor
  // per inode, no format mark) is understood too.
  void restore_state(cf::session::handoff_reader& r) {
    using cf::session::handoff_error;
    auto locks = lock_everything();
    if (!files_.empty()) throw handoff_error("passthrough: state restored into a server that has open files");
    restored_nodes got;
    const auto first = r.get<std::uint64_t>();
    const bool with_handles = first == state_format_handles;
    const auto next_id = static_cast<cf::ino>(with_handles ? r.get<std::uint64_t>() : first);
    if (next_id <= cf::root_ino || next_id == state_format_handles)
      throw handoff_error("passthrough: the node counter is not past the root");
    const auto inode_count = r.get<std::uint64_t>();
    for (std::uint64_t i = 0; i < inode_count; ++i) read_node(r, with_handles, next_id, got);
    auto root = got.nodes.find(cf::root_ino);
    if (root == got.nodes.end() || root->second->type != S_IFDIR || root->second->pinned_fd < 0)
      throw handoff_error("passthrough: the state has no root directory");

    std::vector<std::unique_ptr<open_file>> files;
    std::vector<std::uint32_t> generations;
    std::vector<std::size_t> free_slots;
    struct close_files {
      std::vector<std::unique_ptr<open_file>>& f;
      bool done = false;
      ~close_files() {
        if (done) return;
        for (auto& of : f) {
          if (!of) continue;
          ::close(of->fd);
        }
      }
    } files_guard{files};
    const auto slots = r.get<std::uint64_t>();
    if (slots > (std::uint64_t{1} << 24)) throw handoff_error("passthrough: an implausible number of open files");
    for (std::uint64_t slot = 0; slot < slots; ++slot) {
      generations.push_back(r.get<std::uint32_t>());
      files.emplace_back();
      if (!r.get<std::uint8_t>()) {
        free_slots.push_back(slot);
        continue;
      }
      auto f = std::make_unique<open_file>();
      f->node = static_cast<cf::ino>(r.get<std::uint64_t>());
      f->backing_id = r.get<std::int32_t>();
      const bool is_dir = r.get<std::uint8_t>() != 0;
      owned_fd fd{r.take_fd()};
      // Files opened for I/O name their inode (the backing id hangs on it); listings name none.
      if (f->node != 0) {
        auto in = got.nodes.find(f->node);
        if (in == got.nodes.end()) throw handoff_error("passthrough: an open file of an unknown inode");
        if (f->backing_id && f->backing_id != in->second->backing_id)
          throw handoff_error("passthrough: an open file's backing id is not its inode's");
        struct stat st {};
        if (::fstat(fd.fd, &st) != 0 || st.st_dev != in->second->dev || st.st_ino != in->second->ino)
          throw handoff_error("passthrough: an open file that is not its inode");
        if (f->backing_id) in->second->backing_refs++;
      } else if (f->backing_id) {
        throw handoff_error("passthrough: a backing id on a file of no inode");
      }
      if (is_dir) {
        f->open_listing();
        f->dir_offset = -1;  // a fresh listing: the next READDIR seeks to the kernel's offset
      }
      f->speed = speed_of(fd.fd, false);  // once per handed-over file: ask its filesystem
      f->fd = fd.release();
      files.back() = std::move(f);
    }
    for (auto& [id, in] : got.nodes)
      if (in->backing_id && in->backing_refs == 0) throw handoff_error("passthrough: a backing id without an open file");

    // Adopted: the root this process opened gives way to the predecessor's.
    clear_nodes();
    for (auto& [key, id] : got.index) shard_of(key).ids.emplace(key, id);
    for (auto& [id, in] : got.nodes) shard_of(id).nodes.emplace(id, std::move(in));
    got.done = true;
    next_id_ = next_id;
    files_ = std::move(files);
    generations_ = std::move(generations);
    free_slots_ = std::move(free_slots);
    files_guard.done = true;
  }

  void drop_lookups(cf::ino i, std::uint64_t n) {
    if (i == cf::root_ino) return;
    inode_key key;
    {
      node_shard& s = shard_of(i);
      std::lock_guard lock(s.mutex);
      auto it = s.nodes.find(i);
      if (it == s.nodes.end()) return;
      inode& in = *it->second;
      in.lookups = in.lookups > n ? in.lookups - n : 0;
      if (in.lookups > 0) return;
      key = {in.dev, in.ino};
      drop_node(s, it);
    }
    unindex(key, i);
  }

  cf::task<cf::result<cf::attr>> getattr(cf::context& c, cf::ino i, const cf::file_info*) {
    inode_ref in = find(i);
    if (!in.fd_ok()) co_return cf::error(in.error());
    struct ::statx x {};
    int r = co_await statx_of(c, in.fd, in.on_source, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, x);
    if (r < 0) co_return cf::error(-r);
    co_return cf::attr{to_stat(x)};
  }

  cf::task<cf::result<struct ::statx>> statx(cf::context& c, cf::ino i, const cf::file_info*, int flags, unsigned mask) {
    inode_ref in = find(i);
    if (!in.fd_ok()) co_return cf::error(in.error());
    struct ::statx x {};
    int r = co_await statx_of(c, in.fd, in.on_source, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW | (flags & AT_STATX_SYNC_TYPE), mask, x);
    if (r < 0) co_return cf::error(-r);
    co_return x;
  }

  // statx of a backing inode. io_uring always punts STATX to an io-wq worker: on a backing store
  // in memory or on a local disk the system call on the queue thread is cheaper than that hop;
  // only a remote one (which may stall for seconds) goes to the ring.
  cf::task<int> statx_of(cf::context& c, int fd, bool on_source, int flags, unsigned mask, struct ::statx& x) {
    if (!on_source || speed_ == cf::backing_speed::remote) co_return co_await cf::io::statx(c.ring(), fd, "", flags, mask, &x);
    co_return ::statx(fd, "", flags, mask, &x) == 0 ? 0 : -errno;
  }

  cf::result<cf::attr> setattr(cf::context& c, cf::ino i, const cf::set_attr& s, const cf::file_info* fi) {
    inode_ref in = find(i);
    if (!in.fd_ok()) return cf::error(in.error());
    const bool is_link = S_ISLNK(in.type);
    const int handle_fd = fi ? file_fd(fi->fh) : -1;
    if (s.has_size()) {
      if (!S_ISREG(in.type)) return cf::error(S_ISDIR(in.type) ? EISDIR : EINVAL);
      int r = handle_fd >= 0 ? ::ftruncate(handle_fd, s.size) : ::truncate(proc_fd_path(in.fd).c_str(), s.size);
      if (r != 0) return errno_error();
      // A truncation by a caller without CAP_FSETID (a chown's drop is the backing chown's own).
      if (s.kill_suidgid() && !s.has_uid() && !s.has_gid()) drop_suidgid(in.fd, c);
    }
    if (s.has_uid() || s.has_gid()) {
      uid_t u = s.has_uid() ? s.uid : static_cast<uid_t>(-1);
      gid_t g = s.has_gid() ? s.gid : static_cast<gid_t>(-1);
      if (::fchownat(in.fd, "", u, g, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) return errno_error();
    }
    // After chown, which clears setuid/setgid: a mode in the same request is the one wanted.
    if (s.has_mode()) {
      if (is_link) return cf::error(EOPNOTSUPP);
      if (::chmod(proc_fd_path(in.fd).c_str(), s.mode & 07777) != 0) return errno_error();
    }
    if (s.has_atime() || s.has_mtime()) {
      timespec ts[2];
      ts[0] = s.has_atime() ? s.atime : timespec{0, UTIME_OMIT};
      ts[1] = s.has_mtime() ? s.mtime : timespec{0, UTIME_OMIT};
      if (::utimensat(in.fd, "", ts, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) return errno_error();
    }
    return stat_attr(in.fd);
  }

  cf::result<std::string> readlink(cf::context&, cf::ino i) {
    inode_ref fd_ref = find(i);
    if (!fd_ref.fd_ok()) return cf::error(fd_ref.error());
    const int fd = fd_ref.fd;
    char buf[PATH_MAX];
    ssize_t n = ::readlinkat(fd, "", buf, sizeof buf);
    if (n < 0) return errno_error();
    return std::string(buf, static_cast<std::size_t>(n));
  }

  cf::result<cf::entry> mknod(cf::context& c, cf::ino parent, std::string_view name, mode_t mode, dev_t rdev, mode_t) {
    return make(c, parent, name, mode, [&](int dirfd, const char* n, mode_t m) { return ::mknodat(dirfd, n, m, rdev); });
  }

  cf::result<cf::entry> mkdir(cf::context& c, cf::ino parent, std::string_view name, mode_t mode, mode_t) {
    return make(c, parent, name, S_IFDIR | (mode & 07777),
                [](int dirfd, const char* n, mode_t m) { return ::mkdirat(dirfd, n, m & 07777); });
  }

  cf::result<cf::entry> symlink(cf::context& c, cf::ino parent, std::string_view name, std::string_view target) {
    if (target.size() >= PATH_MAX) return cf::error(ENAMETOOLONG);
    std::string t(target);
    return make(c, parent, name, S_IFLNK | 0777, [&](int dirfd, const char* n, mode_t) { return ::symlinkat(t.c_str(), dirfd, n); });
  }

  cf::result<> unlink(cf::context&, cf::ino parent, std::string_view name) { return remove(parent, name, 0); }
  cf::result<> rmdir(cf::context&, cf::ino parent, std::string_view name) { return remove(parent, name, AT_REMOVEDIR); }

  cf::result<> rename(cf::context&, cf::ino parent, std::string_view name, cf::ino newparent, std::string_view newname, unsigned flags) {
    component from(name), to(newname);
    if (from.error || to.error) return cf::error(from.error ? from.error : to.error);
    inode_ref a = find(parent), b = find(newparent);
    if (!a.fd_ok() || !b.fd_ok()) return cf::error(a.fd_ok() ? b.error() : a.error());
    if (::renameat2(a.fd, from.c_str(), b.fd, to.c_str(), flags) != 0) return errno_error();
    return cf::ok();
  }

  cf::result<cf::entry> link(cf::context&, cf::ino i, cf::ino newparent, std::string_view newname) {
    component n(newname);
    if (n.error) return cf::error(n.error);
    inode_ref node = find(i), dir = find(newparent);
    if (!node.fd_ok() || !dir.fd_ok()) return cf::error(node.fd_ok() ? dir.error() : node.error());
    const int fd = node.fd, dirfd = dir.fd;
    // AT_EMPTY_PATH links the handle's inode itself (it needs CAP_DAC_READ_SEARCH); without it,
    // the magic link names the same inode.
    if (::linkat(fd, "", dirfd, n.c_str(), AT_EMPTY_PATH) != 0) {
      if (errno != ENOENT && errno != EPERM) return errno_error();
      if (::linkat(AT_FDCWD, proc_fd_path(fd).c_str(), dirfd, n.c_str(), AT_SYMLINK_FOLLOW) != 0) return errno_error();
    }
    int again = ::openat(dirfd, n.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (again < 0) return errno_error();
    return adopt(again);
  }

  // ---- files --------------------------------------------------------------------------------

  cf::result<cf::open_reply> open(cf::context& c, cf::ino i, int flags) {
    inode_ref in = find(i);
    if (!in.fd_ok()) return cf::error(in.error());
    if (S_ISLNK(in.type)) return cf::error(ELOOP);
    int fd = ::open(proc_fd_path(in.fd).c_str(), backing_flags(flags));
    if (fd < 0) return errno_error();
    if ((flags & O_TRUNC) && c.kill_suidgid()) drop_suidgid(fd, c);
    return opened(fd, i, S_ISREG(in.type), in.on_source);
  }

  cf::result<cf::created> create(cf::context& c, cf::ino parent, std::string_view name, mode_t mode, mode_t, int flags) {
    component n(name);
    if (n.error) return cf::error(n.error);
    inode_ref dirfd_ref = find(parent);
    if (!dirfd_ref.fd_ok()) return cf::error(dirfd_ref.error());
    const int dirfd = dirfd_ref.fd;
    mode = creation_mode(c, dirfd, S_IFREG | (mode & 07777)) & 07777;
    int fd;
    bool made = true;  // O_EXCL first: only an object made here takes the security context
    {
      cf::caller_credentials as_caller(c.uid(), c.gid());
      // Made here, or opened as it was (without O_EXCL); a name removed in between is tried again.
      for (int attempt = 0; attempt < 8; ++attempt) {
        made = true;
        fd = ::openat(dirfd, n.c_str(), backing_flags(flags) | O_EXCL | O_CREAT | O_NOFOLLOW, mode);
        if (fd >= 0 || errno != EEXIST || (flags & O_EXCL)) break;
        made = false;
        fd = ::openat(dirfd, n.c_str(), backing_flags(flags) | O_NOFOLLOW);
        if (fd >= 0 || errno != ENOENT) break;
      }
    }
    if (fd < 0) return errno_error();
    if (made) {
      if (int e = label(c, proc_fd_path(fd).c_str()); e != 0) {
        ::close(fd);
        ::unlinkat(dirfd, n.c_str(), 0);
        return cf::error(e);
      }
    } else if ((flags & O_TRUNC) && c.kill_suidgid()) {
      drop_suidgid(fd, c);  // it existed: truncated
    }
    return finish_created(fd);
  }

  cf::result<cf::created> tmpfile(cf::context& c, cf::ino parent, mode_t mode, mode_t, int flags) {
    inode_ref dirfd_ref = find(parent);
    if (!dirfd_ref.fd_ok()) return cf::error(dirfd_ref.error());
    const int dirfd = dirfd_ref.fd;
    mode = creation_mode(c, dirfd, S_IFREG | (mode & 07777)) & 07777;
    int fd;
    {
      cf::caller_credentials as_caller(c.uid(), c.gid());
      fd = ::openat(dirfd, ".", (backing_flags(flags) & ~(O_CREAT | O_DIRECTORY)) | O_TMPFILE, mode);
    }
    if (fd < 0) return errno_error();
    if (int e = label(c, proc_fd_path(fd).c_str()); e != 0) {
      ::close(fd);  // nameless: gone with its descriptor
      return cf::error(e);
    }
    return finish_created(fd);
  }

  // The transport reads the backing file straight into the reply (linked to the commit on the ring).
  cf::result<cf::file_slice> read(cf::context&, cf::ino, cf::file_info& fi, std::span<std::byte> out, off_t off) {
    open_file* f = file(fi.fh);
    if (!f || f->fd < 0) return cf::error(EBADF);
    return cf::file_slice{f->fd, off, out.size(), f->speed};
  }

  cf::task<cf::result<std::size_t>> write(cf::context& c, cf::ino, cf::file_info& fi, std::span<const std::byte> in, off_t off) {
    open_file* f = file(fi.fh);
    if (!f || f->fd < 0) co_return cf::error(EBADF);
    const int fd = f->fd;
    if (c.kill_suidgid()) drop_suidgid(fd, c);
    int n = co_await c.write_fixed(fd, in, off, f->speed);
    if (n < 0) co_return cf::error(-n);
    co_return static_cast<std::size_t>(n);
  }

  // close(2) of a duplicate: what a backing filesystem that reports errors at close (NFS) needs.
  // On the ring where that close may wait for the store; inline for a file in memory or on a local
  // disk, whose close returns at once: a ring operation costs the queue one more turn of its loop
  // (an io_uring_enter) per FLUSH.
  cf::task<cf::result<>> flush(cf::context& c, cf::ino, cf::file_info& fi) {
    open_file* f = file(fi.fh);
    if (!f || f->fd < 0) co_return cf::error(EBADF);
    int dup = ::fcntl(f->fd, F_DUPFD_CLOEXEC, 0);
    if (dup < 0) co_return errno_error();
    int r = f->speed == cf::backing_speed::remote ? co_await cf::io::close(c.ring(), dup) : (::close(dup) == 0 ? 0 : -errno);
    if (r < 0) co_return cf::error(-r);
    co_return cf::ok();
  }

  cf::result<> release(cf::context&, cf::ino, cf::file_info& fi) {
    std::unique_ptr<open_file> f = take_file(fi.fh);
    if (!f) return cf::error(EBADF);
    close_file(*f);
    recycle(std::move(f));
    return cf::ok();
  }

  cf::task<cf::result<>> fsync(cf::context& c, cf::ino, cf::file_info& fi, bool datasync) {
    int fd = file_fd(fi.fh);
    if (fd < 0) co_return cf::error(EBADF);
    int r = co_await cf::io::fsync(c.ring(), fd, datasync);
    if (r < 0) co_return cf::error(-r);
    co_return cf::ok();
  }

  cf::task<cf::result<>> fallocate(cf::context& c, cf::ino, cf::file_info& fi, int mode, off_t off, off_t len) {
    int fd = file_fd(fi.fh);
    if (fd < 0) co_return cf::error(EBADF);
    if (off < 0 || len <= 0) co_return cf::error(EINVAL);
    int r = co_await cf::io::fallocate(c.ring(), fd, mode, static_cast<std::uint64_t>(off), static_cast<std::uint64_t>(len));
    if (r < 0) co_return cf::error(-r);
    co_return cf::ok();
  }

  cf::result<off_t> lseek(cf::context&, cf::ino, cf::file_info& fi, off_t off, int whence) {
    int fd = file_fd(fi.fh);
    if (fd < 0) return cf::error(EBADF);
    off_t r = ::lseek(fd, off, whence);
    if (r < 0) return errno_error();
    return r;
  }

  // One bounded piece per request: copy_file_range may answer short, and a queue thread must not
  // spend seconds copying gigabytes while other requests wait. Callers loop (cp does).
  cf::result<std::size_t> copy_file_range(cf::context&, cf::ino, cf::file_info& fi_in, off_t off_in, cf::ino, cf::file_info& fi_out,
                                          off_t off_out, std::size_t len, int flags) {
    int in = file_fd(fi_in.fh), out = file_fd(fi_out.fh);
    if (in < 0 || out < 0) return cf::error(EBADF);
    loff_t a = off_in, b = off_out;
    ssize_t n = ::copy_file_range(in, &a, out, &b, std::min<std::size_t>(len, copy_piece), static_cast<unsigned>(flags));
    if (n < 0) return errno_error();
    return static_cast<std::size_t>(n);
  }

  // ---- directories --------------------------------------------------------------------------

  cf::result<cf::open_reply> opendir(cf::context&, cf::ino i, int) {
    inode_ref fd_ref = find(i);
    if (!fd_ref.fd_ok()) return cf::error(fd_ref.error());
    const int fd = fd_ref.fd;
    int dfd = ::openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return errno_error();
    auto f = new_file();
    f->fd = dfd;
    f->open_listing();
    cf::open_reply r;
    r.fh = keep_file(std::move(f));
    return r;
  }

  cf::result<> releasedir(cf::context& c, cf::ino i, cf::file_info& fi) { return release(c, i, fi); }

  cf::task<cf::result<>> fsyncdir(cf::context& c, cf::ino i, cf::file_info& fi, bool datasync) { return fsync(c, i, fi, datasync); }

  // The listing is read from the directory stream as the framework packs the reply; entries that
  // did not fit are read again from the offset of the last one sent. With READDIRPLUS, each entry
  // sent is looked up (its inode adopted and counted).
  cf::result<dir_stream_listing> readdir(cf::context&, cf::ino, cf::file_info& fi, off_t off) {
    open_file* f = file(fi.fh);
    if (!f || !f->is_dir) return cf::error(EBADF);
    // Entries are opened relative to the listing's own descriptor (the directory's inode, opened
    // at OPENDIR): it lives as long as the open directory, whatever the descriptor cache does.
    dir_stream_listing listing(*this, *f, off);
    if (listing.error()) return cf::error(listing.error());  // the first entry failed: nothing to send
    return listing;
  }

  // READDIRPLUS: the entry's lookup (counted), or no attributes when the name went away since it
  // was listed.
  cf::entry lookup_listed(int dirfd, const char* name) {
    int fd = ::openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    cf::result<cf::entry> found = fd >= 0 ? adopt(fd) : cf::result<cf::entry>(cf::error(errno));
    return found ? *found : cf::entry{};
  }

  // ---- the rest -----------------------------------------------------------------------------

  // The ioctls that are safe to pass on: the inode flags chattr/lsattr use, and the extended
  // attributes of FS_IOC_FSGETXATTR. The kernel has checked the caller's right to set them
  // (owner, CAP_LINUX_IMMUTABLE for append-only and immutable); anything else is ENOTTY.
  cf::result<cf::ioctl_reply> ioctl(cf::context&, cf::ino, cf::file_info& fi, unsigned cmd, std::uint64_t, std::span<const std::byte> in,
                                    std::span<std::byte> out, bool) {
    int fd = file_fd(fi.fh);
    if (fd < 0) return cf::error(EBADF);
    auto pass = [&](auto value, bool sets) -> cf::result<cf::ioctl_reply> {
      if (sets) {
        if (in.size() < sizeof value) return cf::error(EINVAL);
        std::memcpy(&value, in.data(), sizeof value);
      }
      if (::ioctl(fd, cmd, &value) != 0) return errno_error();
      const std::size_t n = std::min(out.size(), sizeof value);
      std::memcpy(out.data(), &value, n);
      return cf::ioctl_reply{0, n};
    };
    switch (cmd) {
      case FS_IOC_GETFLAGS: return pass(int{}, false);  // an int, whatever the command's encoding says
      case FS_IOC_SETFLAGS: return pass(int{}, true);
      case FS_IOC_FSGETXATTR: return pass(fsxattr{}, false);
      case FS_IOC_FSSETXATTR: return pass(fsxattr{}, true);
      default: return cf::error(ENOTTY);
    }
  }

  cf::result<struct statvfs> statfs(cf::context&, cf::ino i) {
    inode_ref fd_ref = find(i);
    if (!fd_ref.fd_ok()) return cf::error(fd_ref.error());
    const int fd = fd_ref.fd;
    struct statvfs v {};
    if (::fstatvfs(fd, &v) != 0) return errno_error();
    return v;
  }

  // Only asked with no_default_permissions, which passthrough refuses; answered from the mode
  // bits all the same (supplementary groups are not known here).
  cf::result<> access(cf::context& c, cf::ino i, int mask) {
    auto a = stat_attr(find(i).fd);
    if (!a) return cf::error(a.error_code());
    const struct stat& st = a->st;
    if (mask == F_OK) return cf::ok();
    if (c.uid() == 0) {
      if ((mask & X_OK) && !S_ISDIR(st.st_mode) && !(st.st_mode & 0111)) return cf::error(EACCES);
      return cf::ok();
    }
    unsigned bits = c.uid() == st.st_uid ? (st.st_mode >> 6) : c.gid() == st.st_gid ? (st.st_mode >> 3) : st.st_mode;
    if ((static_cast<unsigned>(mask) & ~bits & 7u) != 0) return cf::error(EACCES);
    return cf::ok();
  }

  cf::result<std::size_t> getxattr(cf::context&, cf::ino i, std::string_view name, std::span<std::byte> out) {
    inode_ref in = find(i);
    if (!in.fd_ok()) return cf::error(in.error());
    const xattr_name n(name);
    if (n.too_long) return cf::error(ERANGE);
    ssize_t r = ::getxattr(proc_fd_path(in.fd).c_str(), n.c_str(), out.data(), out.size());
    if (r < 0) return errno_error();
    return static_cast<std::size_t>(r);
  }

  // trusted.* names are listed to CAP_SYS_ADMIN only (as tmpfs and ext4 do); the kernel leaves
  // the filtering to the filesystem, and the server lists as root. The caller's capabilities are
  // not known here: root (uid 0) stands for them.
  cf::result<std::size_t> listxattr(cf::context& c, cf::ino i, std::span<std::byte> out) {
    inode_ref in = find(i);
    if (!in.fd_ok()) return cf::error(in.error());
    const proc_fd_path path(in.fd);
    if (c.uid() == 0) {
      ssize_t r = ::listxattr(path.c_str(), reinterpret_cast<char*>(out.data()), out.size());
      if (r < 0) return errno_error();
      return static_cast<std::size_t>(r);
    }
    std::vector<char> all;
    ssize_t r;
    do {  // the list may grow between the size query and the read
      r = ::listxattr(path.c_str(), nullptr, 0);
      if (r < 0) return errno_error();
      all.resize(static_cast<std::size_t>(r));
      r = ::listxattr(path.c_str(), all.data(), all.size());
    } while (r < 0 && errno == ERANGE);
    if (r < 0) return errno_error();
    std::string shown;
    for (std::size_t at = 0; at < static_cast<std::size_t>(r);) {
      std::string_view name(all.data() + at);
      if (name.substr(0, 8) != "trusted.") shown.append(name).push_back('\0');
      at += name.size() + 1;
    }
    if (out.empty()) return shown.size();
    if (shown.size() > out.size()) return cf::error(ERANGE);
    std::memcpy(out.data(), shown.data(), shown.size());
    return shown.size();
  }

  cf::result<> setxattr(cf::context&, cf::ino i, std::string_view name, std::span<const std::byte> value, int flags) {
    inode_ref in = find(i);
    if (!in.fd_ok()) return cf::error(in.error());
    const xattr_name n(name);
    if (n.too_long) return cf::error(ERANGE);
    int r = ::setxattr(proc_fd_path(in.fd).c_str(), n.c_str(), value.data(), value.size(), flags);
    if (r != 0) return errno_error();
    return cf::ok();
  }

  cf::result<> removexattr(cf::context&, cf::ino i, std::string_view name) {
    inode_ref in = find(i);
    if (!in.fd_ok()) return cf::error(in.error());
    const xattr_name n(name);
    if (n.too_long) return cf::error(ERANGE);
    int r = ::removexattr(proc_fd_path(in.fd).c_str(), n.c_str());
    if (r != 0) return errno_error();
    return cf::ok();
  }

 private:
  static constexpr std::size_t copy_piece = 64u << 20;

  // A backing inode the kernel knows. Recorded as a file handle (the bytes name_to_handle_at(2)
  // gives, reopened with open_by_handle_at(2) when a request needs a descriptor) or, when its
  // handle cannot be opened through SOURCE's mount (handles off or unavailable, a filesystem
  // without them, another mount under SOURCE), as an O_PATH descriptor held for the node's life.
  struct inode {
    cf::ino id = 0;
    dev_t dev = 0;
    ino_t ino = 0;
    mode_t type = 0;  // S_IFMT bits: fixed for an inode's life
    std::uint64_t lookups = 0;
    std::int32_t backing_id = 0;  // --passthrough: registered while the inode has open files
    std::uint32_t backing_refs = 0;
    // The handle's bytes, kept whenever the filesystem gives one (also for pinned nodes: it tells
    // an inode from a later one with the same number); empty when it gives none.
    std::string handle;
    int handle_type = 0;
    int pinned_fd = -1;  // O_PATH | O_NOFOLLOW, for the node's life: nodes without a usable handle
    // The descriptor cache (nodes with a handle): the descriptor open now, the requests using it
    // (never closed under them), CLOCK's reference bit, and its slot in the shard's clock.
    int cached_fd = -1;
    std::uint32_t users = 0;
    bool recent = false;
    std::ptrdiff_t slot = -1;
  };

  // The nodes, sharded by node id: each shard has its own lock, its nodes, and its part of the
  // descriptor cache (a CLOCK over `clock`, the nodes whose descriptor is open; nullptr: free).
  // Keeping a node's cached descriptor under its own shard's lock means eviction never takes a
  // second lock.
  struct node_shard {
    std::mutex mutex;
    std::unordered_map<cf::ino, std::unique_ptr<inode>> nodes;
    std::vector<inode*> clock;
    std::size_t hand = 0;
  };

  // The (st_dev, st_ino) -> node id index, sharded by key. Lock order: a key shard, then a node
  // shard; never the other way (drop_lookups lets go of the node shard before it unindexes).
  using inode_key = std::pair<dev_t, ino_t>;
  struct key_hash {
    std::size_t operator()(const inode_key& k) const noexcept {
      return std::hash<std::uint64_t>{}(static_cast<std::uint64_t>(k.second) * 0x9e3779b97f4a7c15ull ^ static_cast<std::uint64_t>(k.first));
    }
  };
  struct key_shard {
    std::mutex mutex;
    std::unordered_map<inode_key, cf::ino, key_hash> ids;
  };

  static constexpr std::size_t shard_count = 16;

  node_shard& shard_of(cf::ino i) noexcept { return node_shards_[i % shard_count]; }
  key_shard& shard_of(const inode_key& k) noexcept { return key_shards_[key_hash{}(k) % shard_count]; }

  // A descriptor of a node's inode for the length of a request: the node's own (pinned), one of
  // the cache's (counted as in use, so the cache does not close it meanwhile, even across a
  // co_await), or, when every slot of the shard is in use, one opened for this request alone.
  // Pinned descriptors need no count: the kernel sends no FORGET for an inode while a request on
  // it is in flight.
  class inode_ref {
   public:
    inode_ref() = default;  // no such node: ESTALE
    static inode_ref failed(int error) {
      inode_ref r;
      r.fd = -error;
      return r;
    }
    inode_ref(int held, mode_t t, bool source) : fd(held), type(t), on_source(source) {}
    inode_ref(passthrough* owner, cf::ino id, int held, mode_t t, bool source, bool cached)
        : fd(held), type(t), on_source(source), owner_(owner), id_(id), cached_(cached) {}
    inode_ref(inode_ref&& o) noexcept
        : fd(std::exchange(o.fd, -ESTALE)),
          type(o.type),
          on_source(o.on_source),
          owner_(std::exchange(o.owner_, nullptr)),
          id_(o.id_),
          cached_(o.cached_) {}
    inode_ref& operator=(inode_ref&&) = delete;
    ~inode_ref() {
      if (owner_ && fd >= 0) owner_->give_back(id_, fd, cached_);
    }

    int fd = -ESTALE;
    mode_t type = 0;
    bool on_source = false;  // on SOURCE's own filesystem (not one mounted under it)
    bool fd_ok() const noexcept { return fd >= 0; }
    int error() const noexcept { return -fd; }

   private:
    passthrough* owner_ = nullptr;  // set when the descriptor must be given back (or closed)
    cf::ino id_ = 0;
    bool cached_ = false;
  };

  inode_ref find(cf::ino i) {
    node_shard& s = shard_of(i);
    handle_buffer h;
    {
      std::lock_guard lock(s.mutex);
      auto it = s.nodes.find(i);
      if (it == s.nodes.end()) return {};
      inode& in = *it->second;
      if (in.pinned_fd >= 0) return inode_ref(in.pinned_fd, in.type, in.dev == source_dev_);
      if (in.cached_fd >= 0) return use_cached(in);
      if (!h.set(in.handle, in.handle_type)) return inode_ref::failed(ESTALE);
    }
    // Opened outside the lock: the shard's other nodes are not held up by this system call.
    int fd = ::open_by_handle_at(handles_.mount_fd, h.get(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return inode_ref::failed(errno == ENOENT ? ESTALE : errno);  // ESTALE: the inode is gone
    std::lock_guard lock(s.mutex);
    auto it = s.nodes.find(i);
    if (it == s.nodes.end()) {
      ::close(fd);
      return {};
    }
    inode& in = *it->second;
    if (in.cached_fd >= 0) {  // another request opened it meanwhile
      ::close(fd);
      return use_cached(in);
    }
    if (cache_insert(s, in, fd)) return use_cached(in);
    return inode_ref(this, i, fd, in.type, in.dev == source_dev_, false);
  }

  inode_ref use_cached(inode& in) {
    in.users++;
    in.recent = true;
    return inode_ref(this, in.id, in.cached_fd, in.type, in.dev == source_dev_, true);
  }

  // The end of a request's use of a descriptor from find().
  void give_back(cf::ino id, int fd, bool cached) {
    if (cached) {
      node_shard& s = shard_of(id);
      std::lock_guard lock(s.mutex);
      auto it = s.nodes.find(id);
      if (it != s.nodes.end() && it->second->cached_fd == fd && it->second->users > 0) {
        it->second->users--;
        return;
      }
      // Its node was forgotten while the descriptor was in use: it was left to this request.
    }
    ::close(fd);
  }

  // Gives `in` (which has no descriptor open) the slot of a node not used since the hand last
  // passed it (CLOCK), closing that node's descriptor. False when every slot is in use by a
  // request: the caller keeps the descriptor to itself.
  static bool cache_insert(node_shard& s, inode& in, int fd) {
    const std::size_t n = s.clock.size();
    if (n == 0) return false;  // no cache: descriptors per inode
    for (std::size_t step = 0; step < 2 * n + 1; ++step) {
      const std::size_t at = s.hand;
      s.hand = (s.hand + 1) % n;
      if (inode* old = s.clock[at]) {
        if (old->users > 0) continue;
        if (old->recent) {
          old->recent = false;
          continue;
        }
        ::close(old->cached_fd);
        old->cached_fd = -1;
        old->slot = -1;
      }
      s.clock[at] = &in;
      in.slot = static_cast<std::ptrdiff_t>(at);
      in.cached_fd = fd;
      in.recent = true;
      return true;
    }
    return false;
  }

  static cf::result<cf::attr> stat_attr(int fd) {
    if (fd < 0) return cf::error(-fd);
    cf::attr a;
    if (::fstatat(fd, "", &a.st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) return errno_error();
    return a;
  }

  // Two records of the same (st_dev, st_ino) name the same inode unless both have handles and
  // they differ: the number was freed and reused (a pinned node's inode cannot be freed, and a
  // filesystem gives handles to all its inodes or none).
  static bool same_inode(const inode& in, const handle_buffer& h) {
    if (in.handle.empty() || !h.valid()) return true;
    return h.get()->handle_type == in.handle_type && h.bytes() == in.handle;
  }

  // Takes an O_PATH descriptor just opened on a name: the inode's entry, counting one lookup. An
  // inode already known keeps its node id (hard links, a name looked up again).
  //
  // The stat and the handle are both taken from that one descriptor, not from the name twice:
  // the name may be replaced in between (rename over it, unlink and create), and a stat of one
  // inode beside the handle of another would index a node under the wrong key. The descriptor
  // holds the inode meanwhile, so its number cannot be reused either. A fresh descriptor is
  // offered to the cache: the next request on a node just looked up (create then write, lookup
  // then getattr) finds it open.
  cf::result<cf::entry> adopt(int fd) {
    cf::entry e;
    if (::fstatat(fd, "", &e.attr, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) {
      int err = errno;
      ::close(fd);
      return cf::error(err);
    }
    handle_buffer h;
    int mount_id = -1;
    if (handles_.on) h.take(fd, mount_id);
    const bool reopenable = h.valid() && mount_id == handles_.mount_id;
    const inode_key key{e.attr.st_dev, e.attr.st_ino};
    key_shard& k = shard_of(key);
    std::lock_guard key_lock(k.mutex);
    if (auto found = k.ids.find(key); found != k.ids.end()) {
      node_shard& s = shard_of(found->second);
      std::lock_guard lock(s.mutex);
      auto it = s.nodes.find(found->second);
      // Not there: forgotten, its index entry about to go. Another inode: this node's was deleted
      // behind the mount's back and its number reused; the node stays (stale: ESTALE) while the
      // kernel knows it, and the number now indexes a new node.
      if (it != s.nodes.end() && same_inode(*it->second, h)) {
        inode& in = *it->second;
        in.lookups++;
        e.ino = in.id;
        if (in.pinned_fd >= 0 || in.cached_fd >= 0 || !cache_insert(s, in, fd)) ::close(fd);
        return e;
      }
    }
    auto in = std::make_unique<inode>();
    in->id = next_id_.fetch_add(1, std::memory_order_relaxed);
    in->dev = e.attr.st_dev;
    in->ino = e.attr.st_ino;
    in->type = e.attr.st_mode & S_IFMT;
    in->lookups = 1;
    if (h.valid()) {
      in->handle = h.bytes();
      in->handle_type = h.get()->handle_type;
    }
    if (!reopenable) in->pinned_fd = std::exchange(fd, -1);
    e.ino = in->id;
    {
      node_shard& s = shard_of(in->id);
      std::lock_guard lock(s.mutex);
      inode& placed = *s.nodes.emplace(in->id, std::move(in)).first->second;
      if (fd >= 0 && !cache_insert(s, placed, fd)) ::close(fd);
    }
    k.ids.insert_or_assign(key, e.ino);
    return e;
  }

  // The kernel forgot a node: its descriptors are closed and its index entry removed (unless the
  // number indexes a newer node by now).
  void drop_node(node_shard& s, std::unordered_map<cf::ino, std::unique_ptr<inode>>::iterator it) {
    inode& in = *it->second;
    if (in.pinned_fd >= 0) ::close(in.pinned_fd);
    if (in.slot >= 0) s.clock[static_cast<std::size_t>(in.slot)] = nullptr;
    if (in.cached_fd >= 0 && in.users == 0) ::close(in.cached_fd);  // in use: closed by give_back()
    s.nodes.erase(it);
  }

  void unindex(const inode_key& key, cf::ino id) {
    key_shard& k = shard_of(key);
    std::lock_guard lock(k.mutex);
    if (auto it = k.ids.find(key); it != k.ids.end() && it->second == id) k.ids.erase(it);
  }
  // The root: SOURCE's own descriptor, pinned for the mount's lifetime.
  void place_root(int source_fd, const struct stat& st) {
    auto root = std::make_unique<inode>();
    root->pinned_fd = source_fd;
    root->dev = st.st_dev;
    root->ino = st.st_ino;
    root->type = S_IFDIR;
    root->id = cf::root_ino;
    root->lookups = 1;  // the kernel holds the root for the mount's lifetime
    shard_of(inode_key{root->dev, root->ino}).ids[{root->dev, root->ino}] = cf::root_ino;
    shard_of(cf::root_ino).nodes.emplace(cf::root_ino, std::move(root));
  }

  // Closes every node's descriptors and empties the tables (the caller holds every lock, or is
  // the destructor).
  void clear_nodes() {
    for (auto& s : node_shards_) {
      for (auto& [id, in] : s.nodes) {
        if (in->pinned_fd >= 0) ::close(in->pinned_fd);
        if (in->cached_fd >= 0) ::close(in->cached_fd);
      }
      s.nodes.clear();
      std::fill(s.clock.begin(), s.clock.end(), nullptr);
    }
    for (auto& k : key_shards_) k.ids.clear();
  }

  // Every lock of the tables, in their order (key shards, node shards, open files): for handing
  // the state over, when nothing else runs.
  std::vector<std::unique_lock<std::mutex>> lock_everything() {
    std::vector<std::unique_lock<std::mutex>> locks;
    for (auto& k : key_shards_) locks.emplace_back(k.mutex);
    for (auto& s : node_shards_) locks.emplace_back(s.mutex);
    locks.emplace_back(files_mutex_);
    return locks;
  }

  // Whether the index names this node (a stale node's number may index a newer one). Under the
  // locks of lock_everything().
  bool is_indexed(const inode& in) {
    const key_shard& k = shard_of(inode_key{in.dev, in.ino});
    auto it = k.ids.find({in.dev, in.ino});
    return it != k.ids.end() && it->second == in.id;
  }

  // A descriptor received in a handed-over state: closed unless adopted, so that a refusal leaks
  // nothing.
  struct owned_fd {
    int fd;
    ~owned_fd() {
      if (fd >= 0) ::close(fd);
    }
    int release() { return std::exchange(fd, -1); }
  };

  // The nodes of a handed-over state as they are read; their descriptors are closed if the state
  // is refused.
  struct restored_nodes {
    std::unordered_map<cf::ino, std::unique_ptr<inode>> nodes;
    std::unordered_map<inode_key, cf::ino, key_hash> index;
    bool done = false;
    ~restored_nodes() {
      if (done) return;
      for (auto& [id, in] : nodes)
        if (in->pinned_fd >= 0) ::close(in->pinned_fd);
    }
  };

  // Marks a state of this format (file handles); the older one began with the node counter,
  // which never comes near this value.
  static constexpr std::uint64_t state_format_handles = 0xfffffffe'00000002ull;

  // One node of a handed-over state, checked against the backing inode it claims to be.
  void read_node(cf::session::handoff_reader& r, bool with_handles, cf::ino next_id, restored_nodes& got) {
    using cf::session::handoff_error;
    auto in = std::make_unique<inode>();
    in->id = static_cast<cf::ino>(r.get<std::uint64_t>());
    in->dev = static_cast<dev_t>(r.get<std::uint64_t>());
    in->ino = static_cast<ino_t>(r.get<std::uint64_t>());
    in->type = static_cast<mode_t>(r.get<std::uint32_t>());
    in->lookups = r.get<std::uint64_t>();
    in->backing_id = r.get<std::int32_t>();
    in->backing_refs = 0;  // recounted from the open files
    (void)r.get<std::uint32_t>();
    bool indexed = true, pinned = true;
    if (with_handles) {
      indexed = r.get<std::uint8_t>() != 0;
      in->handle = r.get_string(MAX_HANDLE_SZ);
      in->handle_type = r.get<std::int32_t>();
      pinned = r.get<std::uint8_t>() != 0;
    }
    owned_fd fd{pinned ? r.take_fd() : -1};
    if (in->id == 0 || (in->id >= next_id && in->id != cf::root_ino) || got.nodes.count(in->id) ||
        (indexed && got.index.count({in->dev, in->ino})))
      throw handoff_error("passthrough: a node id or inode that is out of range or repeated");
    if (pinned) {
      struct stat st {};
      if (::fstatat(fd.fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0 || st.st_dev != in->dev || st.st_ino != in->ino ||
          (st.st_mode & S_IFMT) != in->type)
        throw handoff_error("passthrough: a handle that is not the inode it claims to be");
      in->pinned_fd = fd.release();
    } else {
      check_handle(*in);
    }
    if (indexed) got.index.emplace(inode_key{in->dev, in->ino}, in->id);
    const cf::ino id = in->id;
    got.nodes.emplace(id, std::move(in));
  }

  // A handed-over node recorded by its file handle: opened once to see that it is the inode it
  // claims to be. A handle of an inode deleted meanwhile (ESTALE) is a stale node, as it was in
  // the predecessor: it answers ESTALE. Anything else is refused.
  void check_handle(const inode& in) {
    using cf::session::handoff_error;
    if (!handles_.on) throw handoff_error("passthrough: the state records inodes as file handles, which this server cannot open");
    handle_buffer h;
    if (!h.set(in.handle, in.handle_type)) throw handoff_error("passthrough: a node with neither a file handle nor a descriptor");
    owned_fd fd{::open_by_handle_at(handles_.mount_fd, h.get(), O_PATH | O_NOFOLLOW | O_CLOEXEC)};
    if (fd.fd < 0) {
      if (errno == ESTALE || errno == ENOENT) return;
      throw handoff_error(std::string("passthrough: a file handle that does not open: ") + std::strerror(errno));
    }
    struct stat st {};
    if (::fstatat(fd.fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0 || st.st_dev != in.dev || st.st_ino != in.ino ||
        (st.st_mode & S_IFMT) != in.type)
      throw handoff_error("passthrough: a file handle that is not the inode it claims to be");
  }


  // The mode a new object gets. setgid on a new non-directory survives only for a caller in the
  // group the object will have (the parent's, when the parent is setgid): the kernel's rule,
  // which the server's own CAP_FSETID would otherwise bypass. The kernel names the parent's group
  // when the caller is in it through a supplementary group (FUSE_CREATE_SUPP_GROUP).
  static mode_t creation_mode(const cf::context& c, int dirfd, mode_t mode) {
    if (S_ISDIR(mode) || !(mode & S_ISGID) || c.uid() == 0) return mode;
    struct stat dir {};
    if (::fstatat(dirfd, "", &dir, AT_EMPTY_PATH) != 0) return mode & ~S_ISGID;
    const gid_t group = (dir.st_mode & S_ISGID) ? dir.st_gid : c.gid();
    return c.caller_in_group(group) ? mode : (mode & ~S_ISGID);
  }

  template <typename MakeAt>
  cf::result<cf::entry> make(cf::context& c, cf::ino parent, std::string_view name, mode_t mode, MakeAt&& make_at) {
    component n(name);
    if (n.error) return cf::error(n.error);
    inode_ref dirfd_ref = find(parent);
    if (!dirfd_ref.fd_ok()) return cf::error(dirfd_ref.error());
    const int dirfd = dirfd_ref.fd;
    mode = creation_mode(c, dirfd, mode);
    {
      cf::caller_credentials as_caller(c.uid(), c.gid());
      if (make_at(dirfd, n.c_str(), mode) != 0) return errno_error();
    }
    int fd = ::openat(dirfd, n.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return errno_error();
    if (int e = label(c, proc_fd_path(fd).c_str()); e != 0) {
      ::close(fd);
      ::unlinkat(dirfd, n.c_str(), S_ISDIR(mode) ? AT_REMOVEDIR : 0);  // not left half made
      return cf::error(e);
    }
    return adopt(fd);
  }

  // Writes the security context of a creating request to the new object (`path`, a /proc/self/fd
  // link, reaches a symlink itself). 0, or the errno that made it fail. A backing filesystem
  // without security xattrs (EOPNOTSUPP) is not a failure: the kernel's own filesystems ignore
  // that from their LSM hook too.
  static int label(const cf::context& c, const char* path) {
    if (c.security_context_name().empty()) return 0;
    const xattr_name name(c.security_context_name());
    if (name.too_long) return ERANGE;
    const auto v = c.security_context_value();
    if (::setxattr(path, name.c_str(), v.data(), v.size(), 0) == 0 || errno == EOPNOTSUPP) return 0;
    return errno;
  }

  cf::result<> remove(cf::ino parent, std::string_view name, int flags) {
    component n(name);
    if (n.error) return cf::error(n.error);
    inode_ref dirfd_ref = find(parent);
    if (!dirfd_ref.fd_ok()) return cf::error(dirfd_ref.error());
    const int dirfd = dirfd_ref.fd;
    if (::unlinkat(dirfd, n.c_str(), flags) != 0) return errno_error();
    return cf::ok();
  }

  // open(2) flags for the backing file. O_NOFOLLOW is dropped: the kernel resolved the path, and
  // the magic link in /proc must be followed to reach the inode. O_DIRECT is dropped: the kernel's FUSE layer already
  // skipped its own cache, and the backing filesystem would impose its alignment on requests the
  // client aligned for FUSE. With writeback caching the kernel reads around partial writes and
  // does O_APPEND itself.
  int backing_flags(int flags) const {
    flags &= ~(O_CREAT | O_EXCL | O_NOCTTY | O_DIRECT | O_NOFOLLOW);
    if (opts_.writeback) {
      flags &= ~O_APPEND;
      if ((flags & O_ACCMODE) == O_WRONLY) flags = (flags & ~O_ACCMODE) | O_RDWR;
    }
    return flags | O_CLOEXEC;
  }

  cf::result<cf::created> finish_created(int fd) {
    int path_fd = ::open(proc_fd_path(fd).c_str(), O_PATH | O_CLOEXEC);
    if (path_fd < 0) {
      int e = errno;
      ::close(fd);
      return cf::error(e);
    }
    auto e = adopt(path_fd);
    if (!e) {
      ::close(fd);
      return cf::error(e.error_code());
    }
    auto o = opened(fd, e->ino, true, e->attr.st_dev == source_dev_);
    if (!o) {
      drop_lookups(e->ino, 1);
      return cf::error(o.error_code());
    }
    return cf::created{*e, *o};
  }

  // Where an opened file's data lives: forced by --backing, else SOURCE's class for a file on
  // SOURCE's filesystem (no fstatfs per open), else its own filesystem's.
  cf::backing_speed speed_of(int fd, bool on_source) const noexcept {
    if (opts_.backing) return *opts_.backing;
    return on_source ? speed_ : cf::classify_backing(fd);
  }

  // Files the kernel opened: a slot per handle. With --passthrough, the inode's backing id: the
  // kernel takes one backing file per inode while it is open (a second id for the same inode is
  // refused), so the first open registers it and the last release closes it. A file whose backing
  // id is refused is served by this process (the reason is logged once).
  cf::result<cf::open_reply> opened(int fd, cf::ino node, bool regular, bool on_source) {
    auto f = new_file();
    f->fd = fd;
    f->node = node;
    f->speed = speed_of(fd, on_source);
    cf::open_reply r;
    r.direct_io = opts_.direct_io;
    // On a zero-copy queue (Linux 7.3, --zero-copy auto) READ and WRITE then move the client's own
    // pages: the handlers only ever hand their buffers to io_uring (file slice, write_fixed). Not
    // said to older kernels, and not beside kernel passthrough (6.18 fails such an open with EIO).
    r.zero_copy = regular && conn_.protocol_minor() >= cf::abi::minor_with_bufpool && !opts_.kernel_passthrough;
    if (opts_.kernel_passthrough && regular) {
      node_shard& s = shard_of(node);
      std::lock_guard lock(s.mutex);
      auto it = s.nodes.find(node);
      if (it != s.nodes.end()) {
        inode& in = *it->second;
        if (in.backing_refs == 0) {
          // The kernel writes through the backing file with the creds of this moment: without
          // CAP_FSETID, so that writes clear setuid/setgid (the server never sees them to do it).
          cf::without_capability no_fsetid(CAP_FSETID);
          auto id = conn_.open_backing(fd);
          if (id) {
            in.backing_id = *id;
          } else if (!passthrough_refused_.exchange(true)) {
            std::fprintf(stderr, "passthrough: the kernel refused a backing file (%s): such files are served by this process\n",
                         std::strerror(id.error_code()));
          }
        }
        if (in.backing_id) {
          in.backing_refs++;
          f->backing_id = in.backing_id;
          r.passthrough = true;
          r.backing_id = in.backing_id;
          r.direct_io = false;  // the kernel's passthrough decides caching
        }
      }
    }
    r.fh = keep_file(std::move(f));
    return r;
  }

  void close_file(open_file& f) {
    if (f.backing_id) {
      node_shard& s = shard_of(f.node);
      std::lock_guard lock(s.mutex);
      auto it = s.nodes.find(f.node);
      if (it != s.nodes.end() && it->second->backing_id == f.backing_id && --it->second->backing_refs == 0) {
        (void)conn_.close_backing(f.backing_id);
        it->second->backing_id = 0;
      }
    }
    if (f.fd >= 0) ::close(f.fd);
    f.fd = -1;
    f.is_dir = false;
  }

  // setuid always; setgid when group-execute is set or the caller is outside the file's group
  // (tmpfs's rule; only the caller's primary group is known here).
  static void drop_suidgid(int fd, const cf::context& c) {
    struct stat st {};
    if (::fstatat(fd, "", &st, AT_EMPTY_PATH) != 0 || !S_ISREG(st.st_mode)) return;
    mode_t kill = S_ISUID;
    if ((st.st_mode & S_ISGID) && ((st.st_mode & S_IXGRP) || c.gid() != st.st_gid)) kill |= S_ISGID;
    if (st.st_mode & kill) (void)::chmod(proc_fd_path(fd).c_str(), st.st_mode & 07777 & ~kill);
  }

  // Handles are recycled, so that opening a file does not allocate once the server is warm.
  std::unique_ptr<open_file> new_file() {
    {
      std::lock_guard lock(files_mutex_);
      if (!spare_files_.empty()) {
        std::unique_ptr<open_file> f = std::move(spare_files_.back());
        spare_files_.pop_back();
        f->fd = -1;
        f->node = 0;
        f->backing_id = 0;
        f->is_dir = false;
        f->dir_offset = 0;
        return f;
      }
    }
    return std::make_unique<open_file>();
  }

  void recycle(std::unique_ptr<open_file> f) {
    std::lock_guard lock(files_mutex_);
    if (spare_files_.size() < max_spare_files) spare_files_.push_back(std::move(f));
  }

  // fh = slot index + 1, with the slot's generation in the high half.
  std::uint64_t keep_file(std::unique_ptr<open_file> f) {
    std::lock_guard lock(files_mutex_);
    std::size_t slot;
    if (!free_slots_.empty()) {
      slot = free_slots_.back();
      free_slots_.pop_back();
    } else {
      slot = files_.size();
      files_.emplace_back();
      generations_.push_back(0);
    }
    files_[slot] = std::move(f);
    return (static_cast<std::uint64_t>(generations_[slot]) << 32) | (slot + 1);
  }

  open_file* file(std::uint64_t fh) {
    std::lock_guard lock(files_mutex_);
    const std::size_t slot = (fh & 0xffffffffu) - 1;
    if (slot >= files_.size() || generations_[slot] != (fh >> 32) || !files_[slot]) return nullptr;
    return files_[slot].get();
  }

  int file_fd(std::uint64_t fh) {
    open_file* f = file(fh);
    return f ? f->fd : -1;
  }

  std::unique_ptr<open_file> take_file(std::uint64_t fh) {
    std::lock_guard lock(files_mutex_);
    const std::size_t slot = (fh & 0xffffffffu) - 1;
    if (slot >= files_.size() || generations_[slot] != (fh >> 32) || !files_[slot]) return nullptr;
    generations_[slot]++;
    free_slots_.push_back(slot);
    return std::move(files_[slot]);
  }

  options opts_;
  // Where SOURCE's filesystem keeps its data: in memory or on a local disk, stats of its inodes
  // run on the queue thread (fs/backing.hpp); inodes of filesystems mounted under SOURCE go to the
  // ring.
  dev_t source_dev_;
  cf::backing_speed speed_;
  cf::connection conn_;
  std::atomic<bool> passthrough_refused_{false};
  std::string note_when_serving_;

  handle_config handles_;
  std::array<node_shard, shard_count> node_shards_;
  std::array<key_shard, shard_count> key_shards_;
  std::atomic<cf::ino> next_id_{cf::root_ino + 1};

  std::mutex files_mutex_;  // the open-file slots
  std::vector<std::unique_ptr<open_file>> files_;
  std::vector<std::uint32_t> generations_;
  std::vector<std::size_t> free_slots_;
  std::vector<std::unique_ptr<open_file>> spare_files_;
  static constexpr std::size_t max_spare_files = 1024;
};

cf::entry dir_stream_listing::entry::lookup() const { return fs->lookup_listed(dirfd, c_name); }

namespace {

constexpr std::string_view about =
    "passthrough: mirrors the directory SOURCE at MOUNTPOINT. Reads and writes of the backing files\n"
    "run on each queue's io_uring; permissions are checked by the kernel (default_permissions), and\n"
    "new files belong to the user who created them (when run as root).";

constexpr std::string_view extra_usage =
    "  SOURCE                 the directory to mirror (a symlink is resolved once, at start)\n"
    "  --direct-io            open files with direct_io: no kernel page cache for file data\n"
    "  --passthrough          kernel FUSE passthrough: READ and WRITE go from the kernel to the\n"
    "                         backing file without reaching this process (Linux 6.9+, needs\n"
    "                         CAP_SYS_ADMIN; not with -o writeback_cache)\n"
    "  --backing SPEED        how backing files are read and written: memory (system calls on the\n"
    "                         queue thread: tmpfs), local (cached data inline, the rest on\n"
    "                         io_uring: a local disk), remote (everything on io_uring, so a slow\n"
    "                         store never stalls a queue), or auto (the default: from the\n"
    "                         filesystem's type; unknown types are remote)\n"
    "  --inode-handles MODE   how the inodes the kernel knows are recorded: auto (the default: as\n"
    "                         file handles, reopened when a request needs one, with a bounded\n"
    "                         cache of open descriptors; needs CAP_DAC_READ_SEARCH and a\n"
    "                         filesystem that gives handles, else as off) or off (one open\n"
    "                         descriptor per inode: the open-file limit bounds the tree)\n";

// Takes the first positional argument (SOURCE) and passthrough's own options out of argv.
struct own_arguments {
  std::string source;
  options fs;
  std::vector<char*> rest;
};

bool split_arguments(int argc, char** argv, own_arguments& out) {
  out.rest.push_back(argv[0]);
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--direct-io") {
      out.fs.direct_io = true;
    } else if (a == "--passthrough") {
      out.fs.kernel_passthrough = true;
    } else if (a == "--backing" || a.starts_with("--backing=")) {
      std::string_view v;
      if (a == "--backing") {
        if (i + 1 >= argc) {
          std::fprintf(stderr, "%s: --backing needs a value: memory, local, remote or auto (try --help)\n", argv[0]);
          return false;
        }
        v = argv[++i];
      } else {
        v = a.substr(std::string_view("--backing=").size());
      }
      if (v == "memory") out.fs.backing = cf::backing_speed::memory;
      else if (v == "local") out.fs.backing = cf::backing_speed::local;
      else if (v == "remote") out.fs.backing = cf::backing_speed::remote;
      else if (v == "auto") out.fs.backing.reset();
      else {
        std::fprintf(stderr, "%s: --backing %.*s: expected memory, local, remote or auto (try --help)\n", argv[0],
                     static_cast<int>(v.size()), v.data());
        return false;
      }
    } else if (a == "--inode-handles" || a.starts_with("--inode-handles=")) {
      std::string_view v;
      if (a == "--inode-handles") {
        if (i + 1 >= argc) {
          std::fprintf(stderr, "%s: --inode-handles needs a value: auto or off (try --help)\n", argv[0]);
          return false;
        }
        v = argv[++i];
      } else {
        v = a.substr(std::string_view("--inode-handles=").size());
      }
      if (v == "auto") out.fs.inode_handles = true;
      else if (v == "off") out.fs.inode_handles = false;
      else {
        std::fprintf(stderr, "%s: --inode-handles %.*s: expected auto or off (try --help)\n", argv[0], static_cast<int>(v.size()),
                     v.data());
        return false;
      }
    } else if (cf::session::option_takes_value(a) && i + 1 < argc) {
      out.rest.push_back(argv[i]);
      out.rest.push_back(argv[++i]);
    } else if (out.source.empty() && !a.empty() && a[0] != '-') {
      out.source = std::string(a);
    } else {
      out.rest.push_back(argv[i]);
    }
  }
  out.rest.push_back(nullptr);
  return true;
}

// Whether inodes can be recorded as file handles: SOURCE's filesystem gives handles, and this
// process may open them (CAP_DAC_READ_SEARCH), tried on SOURCE itself. The mount descriptor is
// SOURCE's O_PATH descriptor when the kernel takes one, else SOURCE opened for reading. Empty
// `why` when they can; the config's mount descriptor is then the caller's.
handle_config probe_handles(int source_fd, const struct stat& st, std::string& why) {
  handle_config c;
  handle_buffer h;
  int mount_id = -1;
  if (!h.take(source_fd, mount_id)) {
    why = std::string("name_to_handle_at: ") + std::strerror(errno);
    return c;
  }
  int error = EBADF;
  for (int attempt = 0; attempt < 2 && !c.on; ++attempt) {
    int mount_fd = attempt == 0 ? ::fcntl(source_fd, F_DUPFD_CLOEXEC, 0) : ::openat(source_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (mount_fd < 0) {
      error = errno;
      continue;
    }
    int fd = ::open_by_handle_at(mount_fd, h.get(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
    struct stat back {};
    if (fd < 0) {
      error = errno;
    } else if (::fstat(fd, &back) == 0 && back.st_dev == st.st_dev && back.st_ino == st.st_ino) {
      c = {true, mount_fd, mount_id, 0};
    } else {
      error = EXDEV;  // the handle opened something else: not to be trusted
    }
    if (fd >= 0) ::close(fd);
    if (!c.on) ::close(mount_fd);
  }
  if (!c.on) why = std::string("open_by_handle_at: ") + std::strerror(error);
  return c;
}

// The descriptors the cache keeps open: a quarter of the open-file limit (256 of the usual 1024),
// so that files the kernel opens, the rings and the pinned inodes of other mounts have the rest.
std::size_t cache_capacity() {
  struct rlimit nofile {};
  if (::getrlimit(RLIMIT_NOFILE, &nofile) != 0 || nofile.rlim_cur == RLIM_INFINITY) return 256;
  return std::clamp<std::size_t>(static_cast<std::size_t>(nofile.rlim_cur / 4), 16, 4096);
}

// One descriptor per inode the kernel knows: the soft limit on open files (often 1024) would cap
// the tree at that. Raise it to the hard limit, and as root the hard limit to fs.nr_open (the most
// the kernel allows a process); libfuse's passthrough_hp raises the soft one. With file handles
// only the soft limit is raised: the descriptors held then do not grow with the tree.
void raise_open_file_limit(const char* name, bool beyond_hard) {
  struct rlimit nofile {};
  if (::getrlimit(RLIMIT_NOFILE, &nofile) != 0) return;
  rlim_t most = nofile.rlim_max;
  std::FILE* f = beyond_hard && cf::can_act_as_caller() ? std::fopen("/proc/sys/fs/nr_open", "r") : nullptr;
  if (f) {
    unsigned long nr_open = 0;
    if (std::fscanf(f, "%lu", &nr_open) == 1 && nr_open > most) most = nr_open;
    std::fclose(f);
  }
  if (nofile.rlim_cur >= most) return;
  rlimit raised{most, most};
  if (::setrlimit(RLIMIT_NOFILE, &raised) != 0) {
    raised = {nofile.rlim_cur < nofile.rlim_max ? nofile.rlim_max : nofile.rlim_cur, nofile.rlim_max};
    if (::setrlimit(RLIMIT_NOFILE, &raised) != 0)
      std::fprintf(stderr, "%s: cannot raise the open-file limit: %s\n", name, std::strerror(errno));
  }
}

bool is_inside(const std::string& path, const std::string& dir) {
  if (dir == "/") return true;
  return path == dir || (path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 && path[dir.size()] == '/');
}

std::string real_path(const std::string& p) {
  char* r = ::realpath(p.c_str(), nullptr);
  if (!r) return {};
  std::string s(r);
  std::free(r);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  own_arguments args;
  if (!split_arguments(argc, argv, args)) return 2;
  cf::session::options o;
  int status = cf::session::parse_main_options(static_cast<int>(args.rest.size() - 1), args.rest.data(), about, extra_usage, o,
                                               "SOURCE MOUNTPOINT");
  if (status >= 0) return status;
  const char* name = argv[0];
  // parse_main_options took the first positional as the mount point: with SOURCE given first,
  // that was the second one.
  if (args.source.empty()) {
    std::fprintf(stderr, "%s: missing SOURCE and MOUNTPOINT (try --help)\n", name);
    return 2;
  }
  if (!o.mount.default_permissions) {
    std::fprintf(stderr,
                 "%s: -o no_default_permissions is not supported: passthrough relies on the kernel's permission "
                 "checks (try --help)\n",
                 name);
    return 2;
  }
  if (args.fs.kernel_passthrough && o.writeback_cache) {
    std::fprintf(stderr, "%s: --passthrough and -o writeback_cache exclude each other (the kernel allows one) (try --help)\n", name);
    return 2;
  }
  args.fs.writeback = o.writeback_cache;

  const std::string source = real_path(args.source);
  if (source.empty()) {
    std::fprintf(stderr, "%s: SOURCE %s: %s\n", name, args.source.c_str(), std::strerror(errno));
    return 1;
  }
  struct stat lst {};
  if (::lstat(args.source.c_str(), &lst) == 0 && S_ISLNK(lst.st_mode))
    std::fprintf(stderr, "%s: SOURCE %s is a symlink: serving %s\n", name, args.source.c_str(), source.c_str());
  int source_fd = ::open(source.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (source_fd < 0) {
    std::fprintf(stderr, "%s: SOURCE %s: %s\n", name, source.c_str(), std::strerror(errno));
    return 1;
  }
  struct stat st {};
  if (::fstat(source_fd, &st) != 0 || !S_ISDIR(st.st_mode)) {
    std::fprintf(stderr, "%s: SOURCE %s is not a directory\n", name, source.c_str());
    return 1;
  }
  // Serving a mount inside its own source would make the server wait on itself.
  const std::string mountpoint = real_path(o.mountpoint);
  if (!mountpoint.empty() && is_inside(mountpoint, source)) {
    std::fprintf(stderr, "%s: MOUNTPOINT %s lies inside SOURCE %s: the server would wait on itself\n", name, mountpoint.c_str(),
                 source.c_str());
    return 1;
  }
  // Files are opened again through /proc/self/fd (there is no other way from an O_PATH handle).
  {
    proc_fd_path probe(source_fd);
    struct stat via_proc {};
    if (::stat(probe.c_str(), &via_proc) != 0 || via_proc.st_ino != st.st_ino) {
      std::fprintf(stderr, "%s: /proc is not mounted (passthrough reopens files through /proc/self/fd)\n", name);
      return 1;
    }
  }
  std::string no_handles;
  handle_config handles;
  if (args.fs.inode_handles) handles = probe_handles(source_fd, st, no_handles);
  else no_handles = "--inode-handles off";
  raise_open_file_limit(name, !handles.on);
  if (handles.on) handles.cache_capacity = cache_capacity();
  // Modes come from the kernel with the caller's umask applied; ours must not apply again.
  ::umask(0);
  if (cf::can_act_as_caller() && !cf::keep_capabilities_across_fsuid())
    std::fprintf(stderr,
                 "%s: cannot keep capabilities while acting as a caller (%s): the backing filesystem checks "
                 "permissions again, without the caller's supplementary groups\n",
                 name, std::strerror(errno));
  if (o.mount.fsname.empty()) o.mount.fsname = source;
  passthrough fs(source_fd, st, args.fs, handles);
  // Said once mounted (a command line that fails says one thing: why).
  if (!handles.on)
    fs.note_when_serving("inodes recorded as one open descriptor each (" + no_handles + "): the open-file limit bounds the tree");
  return cf::session::serve(fs, o);
}
