// Who creates what, on memfs and passthrough, against the kernel's own tmpfs:
//  - idmapped mounts (-o allow_idmap, FUSE_ALLOW_IDMAP): a view of the mount made with
//    mount_setattr(MOUNT_ATTR_IDMAP) creates objects owned by the caller's id mapped through the
//    view, and shows owners mapped back, exactly as a view of tmpfs does;
//  - the supplementary-group extension (FUSE_CREATE_SUPP_GROUP): a caller who is in a setgid
//    directory's group through a supplementary group only keeps setgid on what it creates there.
// Root, the host kernel (6.18), both transports.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <grp.h>
#include <linux/mount.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "tests/mount/server_harness.hpp"

using corofuse::testing::in_client;
using corofuse::testing::read_file;
using corofuse::testing::runfile;
using corofuse::testing::server;

namespace {

const std::string memfs_bin = runfile("examples/memfs/memfs");
const std::string passthrough_bin = runfile("examples/passthrough/passthrough");
const std::string hello_bin = runfile("examples/hello/hello");

std::string make_temp_dir(const char* tag) {
  std::string tmpl = std::string("/tmp/corofuse-idmap-") + tag + "-XXXXXX";
  if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  return tmpl;
}

// A tmpfs on a fresh directory; detached and removed whatever happens.
class tmpfs_dir {
 public:
  tmpfs_dir() : dir_(make_temp_dir("tmpfs")) {
    if (::mount("corofuse-idmap", dir_.c_str(), "tmpfs", 0, "mode=0777,size=64m") != 0) {
      ::rmdir(dir_.c_str());
      throw std::runtime_error("tmpfs mount failed: " + std::string(std::strerror(errno)));
    }
  }
  ~tmpfs_dir() {
    ::umount2(dir_.c_str(), MNT_DETACH);
    ::rmdir(dir_.c_str());
  }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
};

// A user namespace whose ids 0..999 are the host's 10000..10999, held by a child that waits; its
// namespace file descriptor is what mount_setattr takes.
class mapping_namespace {
 public:
  mapping_namespace() {
    int p[2];
    if (::pipe(p) != 0) throw std::runtime_error("pipe failed");
    child_ = ::fork();
    if (child_ == 0) {
      ::close(p[0]);
      char ok = ::unshare(CLONE_NEWUSER) == 0 ? 'y' : 'n';
      (void)!::write(p[1], &ok, 1);
      ::alarm(120);  // never outlives a hung test by long
      ::pause();
      ::_exit(0);
    }
    ::close(p[1]);
    char ok = 'n';
    (void)!::read(p[0], &ok, 1);
    ::close(p[0]);
    if (ok != 'y' || !write_map("uid_map") || !write_map("gid_map")) throw std::runtime_error("user namespace setup failed");
    fd_ = ::open(("/proc/" + std::to_string(child_) + "/ns/user").c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) throw std::runtime_error("cannot open the user namespace");
  }
  ~mapping_namespace() {
    if (fd_ >= 0) ::close(fd_);
    if (child_ > 0) {
      ::kill(child_, SIGKILL);
      ::waitpid(child_, nullptr, 0);
    }
  }
  int fd() const { return fd_; }

 private:
  bool write_map(const char* file) {
    const std::string map = "0 10000 1000";
    int fd = ::open(("/proc/" + std::to_string(child_) + "/" + file).c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) return false;
    bool ok = ::write(fd, map.data(), map.size()) == static_cast<ssize_t>(map.size());
    ::close(fd);
    return ok;
  }
  pid_t child_ = -1;
  int fd_ = -1;
};

// An idmapped view of `source` on a fresh directory (open_tree + mount_setattr + move_mount).
// error() is the errno of the step that failed, 0 when the view is there.
class idmapped_view {
 public:
  idmapped_view(const std::string& source, const mapping_namespace& ns) : dir_(make_temp_dir("view")) {
    int tree = static_cast<int>(::syscall(SYS_open_tree, AT_FDCWD, source.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC));
    if (tree < 0) {
      error_ = errno;
      return;
    }
    mount_attr a{};
    a.attr_set = MOUNT_ATTR_IDMAP;
    a.userns_fd = static_cast<std::uint64_t>(ns.fd());
    if (::syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH, &a, sizeof a) != 0 ||
        ::syscall(SYS_move_mount, tree, "", AT_FDCWD, dir_.c_str(), MOVE_MOUNT_F_EMPTY_PATH) != 0) {
      error_ = errno;
    } else {
      mounted_ = true;
    }
    ::close(tree);
  }
  ~idmapped_view() {
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
    ::rmdir(dir_.c_str());
  }
  int error() const { return error_; }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }

 private:
  std::string dir_;
  int error_ = 0;
  bool mounted_ = false;
};

// Runs `fn` in a client child as uid:gid with `groups` and umask 0; its exit status.
int as_user(uid_t uid, gid_t gid, std::vector<gid_t> groups, const std::function<int()>& fn) {
  return in_client([&] {
    if (::setgroups(groups.size(), groups.data()) != 0 || ::setresgid(gid, gid, gid) != 0 || ::setresuid(uid, uid, uid) != 0) return 90;
    ::umask(0);
    return fn();
  });
}

// "uid:gid:mode" of `path` (lstat), or "errno N".
std::string owner(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return "errno " + std::to_string(errno);
  std::ostringstream s;
  s << st.st_uid << ":" << st.st_gid << ":" << std::oct << (st.st_mode & 07777);
  return s.str();
}

// Creates a file, a directory, a symlink and a fifo under `dir` (`tag` prefixes the names); the
// exit status says which step failed (its errno in the low bits).
int create_four(const std::string& dir, const std::string& tag) {
  int fd = ::open((dir + "/" + tag + "file").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0640);
  if (fd < 0) return 10;
  ::close(fd);
  if (::mkdir((dir + "/" + tag + "dir").c_str(), 0750) != 0) return 11;
  if (::symlink("target", (dir + "/" + tag + "link").c_str()) != 0) return 12;
  if (::mknod((dir + "/" + tag + "fifo").c_str(), S_IFIFO | 0600, 0) != 0) return 13;
  return 0;
}

// A subject: memfs, or passthrough over a fresh tmpfs, with extra arguments.
struct subject {
  std::string name;
  std::unique_ptr<tmpfs_dir> backing;
  std::unique_ptr<server> srv;
  subject(const std::string& fs, const std::string& transport, std::vector<std::string> args) : name(fs) {
    // allow_other: the clients are other users than the server's.
    args.insert(args.end(), {"--transport", transport, "-o", "allow_other,attr_timeout=0,entry_timeout=0"});
    if (fs == "passthrough") {
      backing = std::make_unique<tmpfs_dir>();
      srv = std::make_unique<server>(passthrough_bin, args, -1, -1, std::vector<std::string>{backing->dir()});
    } else {
      srv = std::make_unique<server>(memfs_bin, args);
    }
  }
  std::string backing_path(const std::string& n) const { return backing ? backing->dir() + "/" + n : std::string(); }
};

}  // namespace

TEST_CASE("-o allow_idmap: an idmapped view creates objects owned by the mapped caller and shows owners mapped, as tmpfs",
          "[mount][idmap]") {
  REQUIRE(::geteuid() == 0);
  const std::string fs = GENERATE(as<std::string>{}, "memfs", "passthrough");
  const std::string transport = GENERATE(as<std::string>{}, "ring", "dev");
  INFO(fs << " over " << transport);
  if (transport == "ring") REQUIRE(corofuse::testing::uring_enabled());

  mapping_namespace ns;
  tmpfs_dir ref;
  subject sub(fs, transport, {"-o", "allow_idmap"});
  INFO("server log:\n" << sub.srv->log());
  REQUIRE(sub.srv->mounted());
  REQUIRE(::chmod(sub.srv->dir().c_str(), 0777) == 0);
  idmapped_view ref_view(ref.dir(), ns), sub_view(sub.srv->dir(), ns);
  REQUIRE(ref_view.error() == 0);
  REQUIRE(sub_view.error() == 0);

  // Caller 10005 through the views is id 5 of the filesystems.
  CHECK(as_user(10005, 10006, {}, [&] { return create_four(ref_view.path(""), "v"); }) == 0);
  CHECK(as_user(10005, 10006, {}, [&] { return create_four(sub_view.path(""), "v"); }) == 0);
  // A caller the view cannot map creates nothing (EOVERFLOW), on both.
  auto unmapped = [](const std::string& dir) {
    return as_user(5, 5, {}, [&] {
      int fd = ::open((dir + "/unmapped").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0600);
      return fd < 0 ? (errno == EOVERFLOW ? 0 : 20) : 21;
    });
  };
  CHECK(unmapped(ref_view.path("")) == 0);
  CHECK(unmapped(sub_view.path("")) == 0);
  // Plain access to the same mounts, as a user: that user's own ids.
  CHECK(as_user(1000, 1001, {}, [&] { return create_four(ref.dir(), "p"); }) == 0);
  CHECK(as_user(1000, 1001, {}, [&] { return create_four(sub.srv->dir(), "p"); }) == 0);
  // chown through the view: the new owner goes down mapped.
  CHECK(::lchown(ref_view.path("vfile").c_str(), 10007, 10008) == 0);
  CHECK(::lchown(sub_view.path("vfile").c_str(), 10007, 10008) == 0);

  for (const char* n : {"vfile", "vdir", "vlink", "vfifo", "pfile", "pdir", "plink", "pfifo", "unmapped"}) {
    INFO(n);
    const std::string want_raw = owner(ref.dir() + "/" + n), want_view = owner(ref_view.path(n));
    CHECK(owner(sub.srv->dir() + "/" + n) == want_raw);
    CHECK(owner(sub_view.path(n)) == want_view);
    if (sub.backing) CHECK(owner(sub.backing_path(n)) == want_raw);
  }
  // What tmpfs showed is what the mapping means (so the comparison above is of something).
  CHECK(owner(ref.dir() + "/vdir") == "5:6:750");
  CHECK(owner(ref_view.path("vdir")) == "10005:10006:750");
  CHECK(owner(ref.dir() + "/vfile") == "7:8:640");
  CHECK(owner(ref.dir() + "/pfile") == "1000:1001:640");
  CHECK(owner(ref_view.path("pfile")) == "65534:65534:640");  // 1000 is outside the view's range
}

TEST_CASE("without -o allow_idmap the kernel refuses an idmapped view; filesystems that do not declare support refuse the option",
          "[mount][idmap]") {
  REQUIRE(::geteuid() == 0);
  mapping_namespace ns;
  {
    server s(memfs_bin, {"--transport", "dev"});
    INFO("server log:\n" << s.log());
    REQUIRE(s.mounted());
    idmapped_view v(s.dir(), ns);
    CHECK(v.error() == EINVAL);
  }
  // hello declares no support: one line, exit 2, nothing mounted.
  const std::string dir = make_temp_dir("hello");
  const std::string log = dir + ".log";
  int rc = std::system(("timeout -k 5 20 " + hello_bin + " " + dir + " -o allow_idmap > " + log + " 2>&1").c_str());
  const std::string out = read_file(log);
  ::unlink(log.c_str());
  INFO("output: " << out);
  CHECK(WIFEXITED(rc));
  CHECK(WEXITSTATUS(rc) == 2);
  CHECK(out.find("does not support idmapped mounts") != std::string::npos);
  CHECK(std::count(out.begin(), out.end(), '\n') == 1);
  CHECK_FALSE(corofuse::testing::is_mounted(dir));
  ::rmdir(dir.c_str());
}

TEST_CASE("a creator in a setgid directory's group through a supplementary group keeps setgid, as on tmpfs", "[mount][idmap][groups]") {
  REQUIRE(::geteuid() == 0);
  const std::string fs = GENERATE(as<std::string>{}, "memfs", "passthrough");
  const std::string transport = GENERATE(as<std::string>{}, "ring", "dev");
  INFO(fs << " over " << transport);
  if (transport == "ring") REQUIRE(corofuse::testing::uring_enabled());

  tmpfs_dir ref;
  subject sub(fs, transport, {});
  INFO("server log:\n" << sub.srv->log());
  REQUIRE(sub.srv->mounted());
  for (const std::string& root : {ref.dir(), sub.srv->dir()}) {
    REQUIRE(::chmod(root.c_str(), 0777) == 0);
    REQUIRE(::mkdir((root + "/sg").c_str(), 0777) == 0);
    REQUIRE(::chown((root + "/sg").c_str(), 0, 2000) == 0);
    REQUIRE(::chmod((root + "/sg").c_str(), 02777) == 0);
    REQUIRE(::mkdir((root + "/plain").c_str(), 0777) == 0);
    REQUIRE(::chown((root + "/plain").c_str(), 0, 2000) == 0);
    REQUIRE(::chmod((root + "/plain").c_str(), 0777) == 0);
  }
  auto make = [](const std::string& root, const std::string& name, bool dir) {
    const std::string p = root + "/" + name;
    if (dir) return ::mkdir(p.c_str(), 02775) == 0 ? 0 : 30;
    int fd = ::open(p.c_str(), O_CREAT | O_EXCL | O_WRONLY, 02775);
    if (fd < 0) return 31;
    ::close(fd);
    return 0;
  };
  for (const std::string& root : {ref.dir(), sub.srv->dir()}) {
    INFO(root);
    // 1000 is in 2000 through a supplementary group only: the kernel names 2000 to the server.
    CHECK(as_user(1000, 1000, {2000}, [&] { return make(root, "sg/member-file", false) + make(root, "sg/member-dir", true); }) == 0);
    CHECK(as_user(1000, 1000, {2000}, [&] { return make(root, "plain/member-file", false); }) == 0);
    // 1001 is not in 2000.
    CHECK(as_user(1001, 1001, {}, [&] { return make(root, "sg/other-file", false) + make(root, "sg/other-dir", true); }) == 0);
  }
  for (const char* n : {"sg/member-file", "sg/member-dir", "plain/member-file", "sg/other-file", "sg/other-dir"}) {
    INFO(n);
    const std::string want = owner(ref.dir() + "/" + n);
    CHECK(owner(sub.srv->dir() + "/" + n) == want);
    if (sub.backing) CHECK(owner(sub.backing_path(n)) == want);
  }
  // tmpfs's answers, so that the comparison is of the case that matters.
  CHECK(owner(ref.dir() + "/sg/member-file") == "1000:2000:2775");
  CHECK(owner(ref.dir() + "/sg/other-file") == "1001:2000:775");
}
