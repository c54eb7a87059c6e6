// Mounting a FUSE filesystem, with mount(2) as root or through the setuid fusermount3 helper
// without root, and taking it down again without ever leaving a hung mount: detach (umount2
// MNT_DETACH, or fusermount3 -u -z, neither of which stats the mount point and so cannot block on
// an unanswered request) and, if the kernel keeps the connection alive, abort it through fusectl
// (its abort file belongs to the mounting user, so this works with fusermount3 mounts too).
#pragma once

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/wait.h>
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
#include <vector>

#include "corofuse/base/log.hpp"

namespace corofuse::session {

struct mount_options {
  std::string fsname = "corofuse";  // shown in /proc/mounts as the source
  std::string subtype;              // the type becomes fuse.<subtype>
  bool allow_other = false;
  bool default_permissions = true;  // permission checks done by the kernel
  bool read_only = false;
  unsigned rootmode = S_IFDIR | 0755;
};

// what() is the message as given, one line that names the cause (std::system_error's own what()
// would append strerror again to messages that already say it).
class mount_error : public std::system_error {
 public:
  mount_error(int err, const std::string& what) : std::system_error(err, std::generic_category(), what), message_(what) {}
  const char* what() const noexcept override { return message_.c_str(); }

 private:
  std::string message_;
};

// mountinfo writes space, tab, newline and backslash in paths as octal escapes (\040 ...).
inline std::string unescape_mountinfo(const std::string& field) {
  std::string out;
  for (std::size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && i + 3 < field.size() && field[i + 1] >= '0' && field[i + 1] <= '3' && field[i + 2] >= '0' &&
        field[i + 2] <= '7' && field[i + 3] >= '0' && field[i + 3] <= '7') {
      out.push_back(static_cast<char>((field[i + 1] - '0') * 64 + (field[i + 2] - '0') * 8 + (field[i + 3] - '0')));
      i += 3;
    } else {
      out.push_back(field[i]);
    }
  }
  return out;
}

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
    if (unescape_mountinfo(point) != mountpoint) continue;
    unsigned maj = 0, min = 0;
    if (std::sscanf(majmin.c_str(), "%u:%u", &maj, &min) == 2) found = makedev(maj, min);  // the last one wins
  }
  return found;
}

// The type of the topmost mount on `mountpoint` ("fuse.memfs", "tmpfs"), from /proc/self/mountinfo;
// empty when nothing is mounted there.
inline std::string mounted_type(const std::string& mountpoint) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line, found;
  while (std::getline(in, line)) {
    // "36 35 0:52 / /mnt/x rw,... [optional fields] - fuse.name source opts"
    std::istringstream f(line);
    std::string id, parent, majmin, root, point;
    if (!(f >> id >> parent >> majmin >> root >> point)) continue;
    if (unescape_mountinfo(point) != mountpoint) continue;
    for (std::string field; f >> field;) {
      if (field == "-") {
        f >> found;  // the last one wins
        break;
      }
    }
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

namespace detail {

// fusermount3 from $PATH or the usual places; empty when it is not installed.
inline std::string find_fusermount() {
  std::string path = std::getenv("PATH") ? std::getenv("PATH") : "";
  path += ":/usr/bin:/bin:/usr/local/bin";
  std::size_t start = 0;
  while (start <= path.size()) {
    std::size_t colon = path.find(':', start);
    std::string dir = path.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
    if (!dir.empty()) {
      std::string candidate = dir + "/fusermount3";
      if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    }
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  return {};
}

// Receives one descriptor sent with SCM_RIGHTS; -1 when none came.
inline int receive_fd(int sock) {
  char byte = 0;
  iovec iov{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do {
    n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n <= 0) return -1;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
      return fd;
    }
  }
  return -1;
}

// Runs fusermount3 with `args`; returns its exit status (or -1 when it could not be run). With
// `errors`, what the helper prints on stderr is collected there instead of going to ours.
inline int run_fusermount(const std::string& binary, const std::vector<std::string>& args, int pass_fd = -1,
                          std::string* errors = nullptr) {
  int err_pipe[2] = {-1, -1};
  if (errors && ::pipe2(err_pipe, O_CLOEXEC) != 0) err_pipe[0] = err_pipe[1] = -1;
  pid_t pid = ::fork();
  if (pid < 0) {
    if (err_pipe[0] >= 0) ::close(err_pipe[0]), ::close(err_pipe[1]);
    return -1;
  }
  if (pid == 0) {
    if (err_pipe[1] >= 0) ::dup2(err_pipe[1], 2);  // the copy on 2 is not close-on-exec
    if (pass_fd >= 0) {
      ::fcntl(pass_fd, F_SETFD, 0);  // the helper inherits this end of the socket
      ::setenv("_FUSE_COMMFD", std::to_string(pass_fd).c_str(), 1);
    }
    std::vector<char*> argv;
    std::vector<std::string> all{"fusermount3"};
    all.insert(all.end(), args.begin(), args.end());
    for (auto& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(binary.c_str(), argv.data());
    ::_exit(127);
  }
  if (err_pipe[0] >= 0) {
    ::close(err_pipe[1]);
    char buf[512];
    for (;;) {
      ssize_t n = ::read(err_pipe[0], buf, sizeof buf);
      if (n > 0) errors->append(buf, static_cast<std::size_t>(n));
      else if (n == 0 || errno != EINTR) break;
    }
    ::close(err_pipe[0]);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace detail

class fuse_mount {
 public:
  // Opens /dev/fuse and mounts it on `mountpoint` (an absolute path). Throws mount_error with the
  // cause and remedy.
  fuse_mount(const std::string& mountpoint, const mount_options& opt) {
    // A second server on a live FUSE mount would stack over the first and hide it: refuse, before
    // anything touches the path (a stat of a mount whose server hangs would block), and again by
    // the canonical name.
    refuse_fuse_mount_on(mountpoint);
    // mountinfo names the canonical path; resolving it now also rejects a missing mount point.
    char resolved[PATH_MAX];
    if (!::realpath(mountpoint.c_str(), resolved)) {
      const int e = errno;
      throw mount_error(e, "mount point " + mountpoint + ": " + std::strerror(e));
    }
    mountpoint_ = resolved;
    refuse_fuse_mount_on(mountpoint_);
    struct stat st {};
    if (::stat(mountpoint_.c_str(), &st) != 0) {
      const int e = errno;
      throw mount_error(e, "mount point " + mountpoint_ + ": " + std::strerror(e));
    }
    if (!S_ISDIR(st.st_mode)) throw mount_error(ENOTDIR, "mount point " + mountpoint_ + " is not a directory");
    if (::geteuid() == 0) {
      mount_directly(opt);
    } else {
      mount_with_fusermount(opt);
    }
    mounted_ = true;
    dev_ = mounted_device(mountpoint_);
  }

  // A mount taken over from a predecessor process (restart without unmount): its /dev/fuse
  // descriptor, received over the handoff socket; nothing is mounted here. It stays the
  // predecessor's (this object neither unmounts nor aborts it) until claim().
  struct taken_over_t {};
  fuse_mount(taken_over_t, int fd, const std::string& mountpoint, bool unprivileged)
      : mountpoint_(mountpoint), fd_(fd), mounted_(true), owned_(false) {
    if (unprivileged) fusermount_ = detail::find_fusermount();
    dev_ = mounted_device(mountpoint_);
  }
  // The predecessor let go: the mount is this process's to serve, unmount and abort.
  void claim() noexcept { owned_ = true; }
  // The mount now belongs to a successor process: neither unmount it nor abort it here.
  void hand_over() noexcept { owned_ = false; }

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
    if (!mounted_ || !owned_) return;
    if (!fusermount_.empty()) {
      try {
        if (detail::run_fusermount(fusermount_, {"-u", "-q", "-z", "--", mountpoint_}) == 0 || mounted_device(mountpoint_) == 0)
          mounted_ = false;
      } catch (...) {
      }
      return;
    }
    if (::umount2(mountpoint_.c_str(), MNT_DETACH) == 0 || errno == EINVAL || errno == ENOENT) mounted_ = false;
  }

  // True when mounted through fusermount3 (no root): fusectl abort is then not available.
  bool unprivileged() const noexcept { return !fusermount_.empty(); }

  // Ends the connection at once: every waiting client gets ECONNABORTED. Not a mount this process
  // does not own (handed over, or not yet claimed from a predecessor).
  bool abort() noexcept { return owned_ && abort_connection(dev_); }

 private:
  // Only FUSE mounts are refused: mounting over another filesystem's mount point is ordinary.
  static void refuse_fuse_mount_on(const std::string& path) {
    const std::string type = mounted_type(path);
    if (type == "fuse" || type == "fuseblk" || type.rfind("fuse.", 0) == 0)
      throw mount_error(EBUSY, "mount point " + path + " is already a FUSE mount (" + type + "): unmount it first");
  }

  static std::string octal(unsigned v) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "%o", v);
    return buf;
  }

  void mount_directly(const mount_options& opt) {
    fd_ = ::open("/dev/fuse", O_RDWR | O_CLOEXEC);
    if (fd_ < 0) {
      int e = errno;
      throw mount_error(e, std::string("cannot open /dev/fuse: ") + std::strerror(e) +
                               (e == ENOENT || e == ENODEV ? " (load the fuse module: modprobe fuse)" : ""));
    }
    std::string data = "fd=" + std::to_string(fd_) + ",rootmode=" + octal(opt.rootmode) + ",user_id=" + std::to_string(::getuid()) +
                       ",group_id=" + std::to_string(::getgid());
    if (opt.allow_other) data += ",allow_other";
    if (opt.default_permissions) data += ",default_permissions";
    std::string type = opt.subtype.empty() ? "fuse" : "fuse." + opt.subtype;
    unsigned long flags = MS_NOSUID | MS_NODEV | (opt.read_only ? MS_RDONLY : 0);
    if (::mount(opt.fsname.c_str(), mountpoint_.c_str(), type.c_str(), flags, data.c_str()) != 0) {
      int e = errno;
      ::close(fd_);
      fd_ = -1;
      std::string msg = "mount " + mountpoint_ + ": " + std::strerror(e);
      if (e == ENODEV) msg += " (the kernel has no FUSE: modprobe fuse)";
      throw mount_error(e, msg);
    }
  }

  // The setuid helper opens /dev/fuse, mounts, and sends the descriptor back over a socket named
  // in $_FUSE_COMMFD; it prints its own reason when it refuses.
  void mount_with_fusermount(const mount_options& opt) {
    std::string helper = detail::find_fusermount();
    if (helper.empty())
      throw mount_error(EPERM, "mount " + mountpoint_ + ": not root, and fusermount3 is not installed (apt-get install fuse3)");
    std::string opts = std::string(opt.read_only ? "ro" : "rw") + ",nosuid,nodev,fsname=" + opt.fsname;
    if (!opt.subtype.empty()) opts += ",subtype=" + opt.subtype;
    if (opt.allow_other) opts += ",allow_other";
    if (opt.default_permissions) opts += ",default_permissions";
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) throw mount_error(errno, "socketpair for fusermount3");
    std::string said;
    int status = detail::run_fusermount(helper, {"-o", opts, "--", mountpoint_}, sv[1], &said);
    ::close(sv[1]);
    int fd = status == 0 ? detail::receive_fd(sv[0]) : -1;
    ::close(sv[0]);
    // The helper's own words, as one line (it says why it refused).
    while (!said.empty() && (said.back() == '\n' || said.back() == ' ')) said.pop_back();
    for (std::size_t nl; (nl = said.find('\n')) != std::string::npos;) said.replace(nl, 1, "; ");
    if (fd < 0)
      throw mount_error(EPERM, "mount " + mountpoint_ + ": " +
                                   (said.empty() ? "fusermount3 failed (exit status " + std::to_string(status) + ")" : said));
    if (!said.empty()) log_to(log_kind::report, "%s", said.c_str());  // fusermount3's warning on success stays visible
    fd_ = fd;
    fusermount_ = helper;
  }

  std::string mountpoint_;
  std::string fusermount_;  // set when mounted through fusermount3
  int fd_ = -1;
  dev_t dev_ = 0;
  bool mounted_ = false;
  bool owned_ = true;  // this process's to unmount and abort (not a predecessor's, nor a successor's)
};

}  // namespace corofuse::session
