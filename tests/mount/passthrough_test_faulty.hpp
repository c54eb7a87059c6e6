// A tiny faulty FUSE filesystem for passthrough_test: a backing store whose I/O fails, served by
// corofuse itself in a forked child on a temporary directory. passthrough then mirrors that mount,
// and a client compares the errors it gets through passthrough with the ones it gets directly.
//
//   /rfail   1 MiB; bytes readable before 512 KiB; a READ touching [512 KiB, 1 MiB) fails with EIO
//   /weio    4 KiB, readable; every WRITE fails with EIO
//   /wnospc  4 KiB, readable; every WRITE fails with ENOSPC
//
// Files are opened with direct_io, so each READ and WRITE carries the client's own offset and size
// (the faulty filesystem's page cache never hides or shifts a failure). Nothing ever changes:
// SETATTR answers the unchanged attributes.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "corofuse/corofuse.hpp"
#include "corofuse/session/serve.hpp"
#include "tests/mount/server_harness.hpp"

namespace corofuse::testing::faulty {

namespace cf = corofuse;

inline constexpr cf::ino rfail_ino = 2;
inline constexpr cf::ino weio_ino = 3;
inline constexpr cf::ino wnospc_ino = 4;
inline constexpr off_t rfail_size = 1 << 20;
inline constexpr off_t rfail_bad_from = 512 << 10;
inline constexpr off_t small_size = 4096;

// The byte at `off` of every file.
inline char pattern(off_t off) { return static_cast<char>((off * 131 + 7 + off / 4096) & 0xff); }

class faulty_fs {
 public:
  cf::result<cf::entry> lookup(cf::context&, cf::ino parent, std::string_view name) {
    if (parent != cf::root_ino) return cf::error(ENOTDIR);
    cf::entry e;
    if (name == "rfail") e.ino = rfail_ino;
    else if (name == "weio") e.ino = weio_ino;
    else if (name == "wnospc") e.ino = wnospc_ino;
    else return cf::error(ENOENT);
    e.attr = stat_of(e.ino);
    return e;
  }

  cf::result<cf::attr> getattr(cf::context&, cf::ino i, const cf::file_info*) {
    if (i < cf::root_ino || i > wnospc_ino) return cf::error(ENOENT);
    return cf::attr{stat_of(i)};
  }

  cf::result<cf::attr> setattr(cf::context&, cf::ino i, const cf::set_attr&, const cf::file_info*) {
    if (i < cf::root_ino || i > wnospc_ino) return cf::error(ENOENT);
    return cf::attr{stat_of(i)};
  }

  cf::result<cf::open_reply> open(cf::context&, cf::ino i, int) {
    if (i == cf::root_ino) return cf::error(EISDIR);
    if (i > wnospc_ino) return cf::error(ENOENT);
    cf::open_reply r;
    r.direct_io = true;
    return r;
  }

  cf::result<std::size_t> read(cf::context&, cf::ino i, cf::file_info&, std::span<std::byte> out, off_t off) {
    if (off < 0) return cf::error(EINVAL);
    const off_t size = i == rfail_ino ? rfail_size : small_size;
    if (off >= size) return std::size_t{0};
    const std::size_t n = std::min<std::size_t>(out.size(), static_cast<std::size_t>(size - off));
    if (i == rfail_ino && off + static_cast<off_t>(n) > rfail_bad_from) return cf::error(EIO);
    for (std::size_t k = 0; k < n; ++k) out[k] = static_cast<std::byte>(pattern(off + static_cast<off_t>(k)));
    return n;
  }

  cf::result<std::size_t> write(cf::context&, cf::ino i, cf::file_info&, std::span<const std::byte>, off_t) {
    if (i == wnospc_ino) return cf::error(ENOSPC);
    return cf::error(EIO);
  }

  cf::result<std::vector<cf::dir_entry>> readdir(cf::context&, cf::ino i, cf::file_info&, off_t off) {
    if (i != cf::root_ino) return cf::error(ENOTDIR);
    static constexpr std::array<cf::dir_entry, 5> all = {{
        {".", cf::root_ino, DT_DIR, 1},
        {"..", cf::root_ino, DT_DIR, 2},
        {"rfail", rfail_ino, DT_REG, 3},
        {"weio", weio_ino, DT_REG, 4},
        {"wnospc", wnospc_ino, DT_REG, 5},
    }};
    std::vector<cf::dir_entry> out;
    for (std::size_t k = static_cast<std::size_t>(std::max<off_t>(off, 0)); k < all.size(); ++k) out.push_back(all[k]);
    return out;
  }

 private:
  static struct stat stat_of(cf::ino i) {
    struct stat st {};
    st.st_ino = i;
    st.st_uid = 0;
    st.st_gid = 0;
    st.st_blksize = 4096;
    st.st_atim.tv_sec = st.st_mtim.tv_sec = st.st_ctim.tv_sec = 1700000000;
    if (i == cf::root_ino) {
      st.st_mode = S_IFDIR | 0755;
      st.st_nlink = 2;
    } else {
      st.st_mode = S_IFREG | 0666;
      st.st_nlink = 1;
      st.st_size = i == rfail_ino ? rfail_size : small_size;
    }
    st.st_blocks = (st.st_size + 511) / 512;
    return st;
  }
};

// faulty_fs served over /dev/fuse by a forked child on a fresh temporary directory. The guard
// stops that child (its own PID only), detaches the mount, aborts the connection if the kernel
// still holds it, and removes the directory, whatever happened.
class faulty_mount {
 public:
  faulty_mount() {
    char tmpl[] = "/tmp/corofuse-faulty-XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    log_ = dir_ + ".log";
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      int fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      int rc = 1;
      try {
        faulty_fs fs;
        cf::session::options o;
        o.mountpoint = dir_;
        o.mount.fsname = "faultyfs";
        o.transport = cf::session::transport_choice::dev_fuse;
        o.shutdown_grace = 1;
        rc = cf::session::serve(fs, o);
      } catch (...) {
        rc = 97;
      }
      ::_exit(rc);
    }
    for (int i = 0; i < 200 && !is_mounted(dir_); ++i) {
      if (exited()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  ~faulty_mount() { stop_and_clean(); }
  faulty_mount(const faulty_mount&) = delete;
  faulty_mount& operator=(const faulty_mount&) = delete;

  const std::string& dir() const { return dir_; }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  bool mounted() const { return is_mounted(dir_); }
  dev_t device() const { return corofuse::session::mounted_device(dir_); }
  std::string log() const { return read_file(log_); }
  bool exited() {
    if (pid_ <= 0) return true;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return true;
    }
    return false;
  }

  void stop_and_clean() {
    dev_t dev = device();
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      for (int i = 0; i < 200 && !exited(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      if (pid_ > 0) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
        pid_ = -1;
      }
    }
    if (!dir_.empty() && is_mounted(dir_)) {
      if (dev == 0) dev = device();
      ::umount2(dir_.c_str(), MNT_DETACH);
      corofuse::session::abort_connection(dev);
    }
    if (!dir_.empty()) ::rmdir(dir_.c_str());
    if (!log_.empty()) ::unlink(log_.c_str());
    dir_.clear();
    log_.clear();
  }

 private:
  std::string dir_;
  std::string log_;
  pid_t pid_ = -1;
};

}  // namespace corofuse::testing::faulty
