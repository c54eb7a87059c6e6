// Mounting a FUSE filesystem with mount(2) (as root), and taking it down again without ever
// leaving a hung mount: detach (umount2 MNT_DETACH, which does not stat the mount point and so
// cannot block on an unanswered request) and, if the kernel keeps the connection alive, abort it
// through fusectl.
#pragma once

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>

namespace corofuse::session {

struct mount_options {
  std::string fsname = "corofuse";  // shown in /proc/mounts as the source
  std::string subtype;              // the type becomes fuse.<subtype>
  bool allow_other = false;
  bool default_permissions = true;  // permission checks done by the kernel
  bool read_only = false;
  unsigned rootmode = S_IFDIR | 0755;
};

class mount_error : public std::system_error {
 public:
  mount_error(int err, const std::string& what) : std::system_error(err, std::generic_category(), what) {}
};

// The connection's device number, read from /proc/self/mountinfo (a stat of the mount point
// could block before INIT is answered). 0 when the mount is not found.
inline dev_t mounted_device(const std::string& mountpoint) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  dev_t found = 0;
  while (std::getline(in, line)) {
    // "36 35 0:52 / /mnt/x rw,... - fuse.name source opts"
    std::istringstream f(line);
    std::string id, parent, majmin, root, point;
    if (!(f >> id >> parent >> majmin >> root >> point)) continue;
    if (point != mountpoint) continue;
    unsigned maj = 0, min = 0;
    if (std::sscanf(majmin.c_str(), "%u:%u", &maj, &min) == 2) found = makedev(maj, min);  // the last one wins
  }
  return found;
}

// Writes 1 to /sys/fs/fuse/connections/<minor>/abort. True when written.
inline bool abort_connection(dev_t dev) {
  if (dev == 0) return false;
  std::string path = "/sys/fs/fuse/connections/" + std::to_string(minor(dev)) + "/abort";
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = ::write(fd, "1", 1) == 1;
  ::close(fd);
  return ok;
}

class fuse_mount {
 public:
  // Opens /dev/fuse and mounts it on `mountpoint` (an absolute path). Throws mount_error with the
  // cause and remedy.
  fuse_mount(const std::string& mountpoint, const mount_options& opt) {
    // mountinfo names the canonical path; resolving it now also rejects a missing mount point.
    char resolved[PATH_MAX];
    if (!::realpath(mountpoint.c_str(), resolved)) throw mount_error(errno, "mount point " + mountpoint + ": " + std::strerror(errno));
    mountpoint_ = resolved;
    struct stat st{};
    if (::stat(mountpoint_.c_str(), &st) != 0) throw mount_error(errno, "mount point " + mountpoint_ + ": " + std::strerror(errno));
    if (!S_ISDIR(st.st_mode)) throw mount_error(ENOTDIR, "mount point " + mountpoint_ + " is not a directory");
    fd_ = ::open("/dev/fuse", O_RDWR | O_CLOEXEC);
    if (fd_ < 0) {
      int e = errno;
      throw mount_error(e, std::string("cannot open /dev/fuse: ") + std::strerror(e) +
                               (e == ENOENT || e == ENODEV ? " (load the fuse module: modprobe fuse)" : ""));
    }
    std::string data = "fd=" + std::to_string(fd_) + ",rootmode=" + octal(opt.rootmode) +
                       ",user_id=" + std::to_string(::getuid()) + ",group_id=" + std::to_string(::getgid());
    if (opt.allow_other) data += ",allow_other";
    if (opt.default_permissions) data += ",default_permissions";
    std::string type = opt.subtype.empty() ? "fuse" : "fuse." + opt.subtype;
    unsigned long flags = MS_NOSUID | MS_NODEV | (opt.read_only ? MS_RDONLY : 0);
    if (::mount(opt.fsname.c_str(), mountpoint_.c_str(), type.c_str(), flags, data.c_str()) != 0) {
      int e = errno;
      ::close(fd_);
      fd_ = -1;
      std::string msg = "mount " + mountpoint_ + ": " + std::strerror(e);
      if (e == EPERM) msg += " (mounting needs root: this version mounts with mount(2) only, fusermount3 support comes later)";
      if (e == ENODEV) msg += " (the kernel has no FUSE: modprobe fuse)";
      throw mount_error(e, msg);
    }
    mounted_ = true;
    dev_ = mounted_device(mountpoint_);
  }

  fuse_mount(const fuse_mount&) = delete;
  fuse_mount& operator=(const fuse_mount&) = delete;
  ~fuse_mount() {
    detach();
    if (fd_ >= 0) ::close(fd_);
  }

  int fd() const noexcept { return fd_; }
  const std::string& mountpoint() const noexcept { return mountpoint_; }
  dev_t device() const noexcept { return dev_; }
  bool mounted() const noexcept { return mounted_; }

  // Lazy unmount: the mount disappears from the namespace now; the connection ends when the last
  // user lets go of the superblock. Never blocks on the server.
  void detach() noexcept {
    if (!mounted_) return;
    if (::umount2(mountpoint_.c_str(), MNT_DETACH) == 0 || errno == EINVAL || errno == ENOENT) mounted_ = false;
  }

  // Ends the connection at once: every waiting client gets ECONNABORTED.
  bool abort() noexcept { return abort_connection(dev_); }

 private:
  static std::string octal(unsigned v) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "%o", v);
    return buf;
  }

  std::string mountpoint_;
  int fd_ = -1;
  dev_t dev_ = 0;
  bool mounted_ = false;
};

}  // namespace corofuse::session
