// hello: the smallest useful corofuse filesystem.
//
//   /hello   read-only, "Hello, World!\n"
//   /notes   readable and writable, kept in memory (up to 1 MiB)
//
// Each handler is an ordinary member function; the dispatcher finds them at compile time. A READ
// of /notes fills the reply buffer the transport hands it, in place; a READ of /hello names a slice
// of a file (a memfd holding the greeting) and the transport reads it into the reply itself: on
// the io_uring ring, that read and the reply's commit go out linked, in one submission. Handlers run on every CPU's queue
// thread at once (and on the /dev/fuse reader), so the state is behind a mutex.
#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <time.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "corofuse/corofuse.hpp"

namespace cf = corofuse;

class hello_fs {
 public:
  static constexpr cf::ino hello_ino = 2;
  static constexpr cf::ino notes_ino = 3;
  static constexpr std::size_t notes_limit = 1 << 20;

  hello_fs() {
    greeting_fd_ = memfd_create("hello", MFD_CLOEXEC);
    if (greeting_fd_ < 0 || pwrite(greeting_fd_, greeting.data(), greeting.size(), 0) != static_cast<ssize_t>(greeting.size()))
      throw std::runtime_error(std::string("hello: cannot create the greeting's memfd: ") + std::strerror(errno));
    clock_gettime(CLOCK_REALTIME, &start_);
    notes_mode_ = S_IFREG | 0644;
    notes_mtime_ = start_;
  }

  cf::result<cf::entry> lookup(cf::context&, cf::ino parent, std::string_view name) {
    std::lock_guard lock(mutex_);
    if (parent != cf::root_ino) return cf::error(ENOTDIR);
    cf::entry e;
    if (name == "hello") e.ino = hello_ino;
    else if (name == "notes") e.ino = notes_ino;
    else return cf::error(ENOENT);
    e.attr = stat_of(e.ino);
    return e;
  }

  cf::result<cf::attr> getattr(cf::context&, cf::ino i, const cf::file_info*) {
    std::lock_guard lock(mutex_);
    if (i != cf::root_ino && i != hello_ino && i != notes_ino) return cf::error(ENOENT);
    return cf::attr{stat_of(i)};
  }

  // Only /notes changes: its size (truncate) and mode; its times follow.
  cf::result<cf::attr> setattr(cf::context&, cf::ino i, const cf::set_attr& s, const cf::file_info*) {
    std::lock_guard lock(mutex_);
    if (i != notes_ino) return cf::error(EPERM);
    if (s.has_uid() || s.has_gid()) return cf::error(EPERM);
    if (s.has_size()) {
      if (s.size < 0) return cf::error(EINVAL);
      if (static_cast<std::size_t>(s.size) > notes_limit) return cf::error(EFBIG);
      notes_.resize(static_cast<std::size_t>(s.size));
      touch();
    }
    if (s.has_mode()) notes_mode_ = S_IFREG | (s.mode & 07777);
    if (s.has_mtime()) notes_mtime_ = s.mtime.tv_nsec == UTIME_NOW ? now() : s.mtime;
    return cf::attr{stat_of(i)};
  }

  cf::result<cf::open_reply> open(cf::context&, cf::ino i, int flags) {
    std::lock_guard lock(mutex_);
    if (i == hello_ino && (flags & O_ACCMODE) != O_RDONLY) return cf::error(EACCES);
    if (i != hello_ino && i != notes_ino) return cf::error(EISDIR);
    if (i == notes_ino && (flags & O_TRUNC)) {
      notes_.clear();
      touch();
    }
    cf::open_reply r;
    // /hello bypasses the page cache, so each READ arrives with the client's own size and offset
    // (and a read that fits the file completes the linked read-and-commit in one go).
    r.direct_io = i == hello_ino;
    return r;
  }

  // Two ways to answer a READ: a slice of a file for /hello (the transport reads it; past the
  // end of the file the read is simply short), bytes copied in place for /notes.
  cf::result<cf::read_reply> read(cf::context&, cf::ino i, cf::file_info&, std::span<std::byte> out, off_t off) {
    if (off < 0) return cf::error(EINVAL);
    if (i == hello_ino) return cf::read_reply::from(cf::file_slice{greeting_fd_, off, out.size()});
    std::lock_guard lock(mutex_);
    if (i != notes_ino) return cf::error(EISDIR);
    return cf::read_reply::bytes_copied(copy_notes(out, off));
  }

  std::size_t copy_notes(std::span<std::byte> out, off_t off) const {
    std::string_view data(notes_.data(), notes_.size());
    if (static_cast<std::size_t>(off) >= data.size()) return 0;
    std::size_t n = std::min(out.size(), data.size() - static_cast<std::size_t>(off));
    std::memcpy(out.data(), data.data() + off, n);
    return n;
  }

  cf::result<std::size_t> write(cf::context&, cf::ino i, cf::file_info& fi, std::span<const std::byte> in, off_t off) {
    std::lock_guard lock(mutex_);
    if (i != notes_ino) return cf::error(EBADF);
    if (fi.flags & O_APPEND) off = static_cast<off_t>(notes_.size());
    if (off < 0) return cf::error(EINVAL);
    std::size_t end = static_cast<std::size_t>(off) + in.size();
    if (end > notes_limit) return cf::error(EFBIG);
    if (end > notes_.size()) notes_.resize(end);
    std::memcpy(notes_.data() + off, in.data(), in.size());
    touch();
    return in.size();
  }

  // The root's listing from offset `off`: a view of a fixed table, nothing copied. Each entry can
  // give its attributes (lookup), so `ls -l` gets them with the names (READDIRPLUS) instead of a
  // LOOKUP per name. hello's inodes are fixed and never forgotten, so no lookup counts are kept.
  struct listed {
    std::string_view name;
    cf::ino ino;
    std::uint32_t type;
    std::uint64_t next_offset;
    hello_fs* fs;
    cf::entry lookup() const {
      std::lock_guard lock(fs->mutex_);
      cf::entry e;
      e.ino = ino;
      e.attr = fs->stat_of(ino);
      return e;
    }
  };
  cf::result<std::span<const listed>> readdir(cf::context&, cf::ino i, cf::file_info&, off_t off) {
    if (i != cf::root_ino) return cf::error(ENOTDIR);
    const auto from = std::min<std::size_t>(static_cast<std::size_t>(std::max<off_t>(off, 0)), listing_.size());
    return std::span<const listed>(listing_).subspan(from);
  }

 private:
  static constexpr std::string_view greeting = "Hello, World!\n";

  static timespec now() {
    timespec t{};
    clock_gettime(CLOCK_REALTIME, &t);
    return t;
  }
  void touch() { notes_mtime_ = now(); }

  struct stat stat_of(cf::ino i) const {
    struct stat st {};
    st.st_ino = i;
    // Owned by whoever serves it: mounted without root (fusermount3), the user can write /notes.
    st.st_uid = ::getuid();
    st.st_gid = ::getgid();
    st.st_atim = st.st_mtim = st.st_ctim = start_;
    st.st_blksize = 4096;
    if (i == cf::root_ino) {
      st.st_mode = S_IFDIR | 0755;
      st.st_nlink = 2;
    } else if (i == hello_ino) {
      st.st_mode = S_IFREG | 0444;
      st.st_nlink = 1;
      st.st_size = static_cast<off_t>(greeting.size());
    } else {
      st.st_mode = notes_mode_;
      st.st_nlink = 1;
      st.st_size = static_cast<off_t>(notes_.size());
      st.st_mtim = st.st_ctim = notes_mtime_;
    }
    st.st_blocks = (st.st_size + 511) / 512;
    return st;
  }

  std::mutex mutex_;
  const std::array<listed, 4> listing_ = {{
      {".", cf::root_ino, DT_DIR, 1, this},
      {"..", cf::root_ino, DT_DIR, 2, this},
      {"hello", hello_ino, DT_REG, 3, this},
      {"notes", notes_ino, DT_REG, 4, this},
  }};
  int greeting_fd_ = -1;  // a memfd holding the greeting; lives as long as the process
  timespec start_{};
  mode_t notes_mode_;
  timespec notes_mtime_{};
  std::vector<char> notes_;
};

int main(int argc, char** argv) {
  hello_fs fs;
  return corofuse::session::main(fs, argc, argv,
                                 "hello: a corofuse example filesystem with a read-only /hello and a writable "
                                 "in-memory /notes (up to 1 MiB)");
}
