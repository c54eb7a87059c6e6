// examples/passthrough mounted on the host kernel, mirroring a backing directory.
//
// Every test runs over both transports (the io_uring ring and classic /dev/fuse). Clients run in
// child processes under a deadline (a client stuck in a request the server never answers gets the
// connection aborted, so no test hangs); each client writes what went wrong to a record the
// parent shows with the failure. What is checked:
//   - data: big and small, aligned and unaligned, buffered and O_DIRECT, written through the mount
//     and compared with the backing file byte for byte, and the other way; cp -a of a tree, diff -r;
//   - --direct-io: a change made in the backing file is seen at once through an open mount file;
//   - --passthrough: kernel passthrough (READ and WRITE never reach the server), compared with a
//     run without it;
//   - errors of the backing store reach the client unchanged: ENOSPC (a small tmpfs) and EIO (a
//     faulty corofuse filesystem built into this test, see passthrough_test_faulty.hpp);
//   - ownership and permissions: files created by a user belong to that user, the kernel's
//     default_permissions refusals;
//   - no escape from SOURCE: a directory swapped for a symlink to the outside while the mount holds
//     it, rename/link across file systems, SOURCE given as a symlink;
//   - the command line.
// The names test runs with inodes as file handles and with --inode-handles off (a descriptor per
// inode); tests/mount/passthrough_scale_test.cpp checks the inode table at scale.
// At the end of each test the server gets SIGTERM: it must exit 0 and leave nothing mounted; on
// the ring its log must say it served there.
#include <catch2/catch.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "tests/mount/passthrough_test_faulty.hpp"
#include "tests/mount/server_harness.hpp"

using corofuse::testing::read_file;
using corofuse::testing::requests;
using corofuse::testing::runfile;
using corofuse::testing::server;
using corofuse::testing::tail;
using corofuse::testing::uring_enabled;

namespace {

const std::string pt_bin = runfile("examples/passthrough/passthrough");

constexpr off_t KiB = 1024;
constexpr off_t MiB = 1024 * KiB;
constexpr uid_t nobody = 65534;
constexpr gid_t nogroup = 65534;

// ---------------------------------------------------------------------------------------------
// Small helpers.

std::string errname(int e) {
  const char* n = ::strerrorname_np(e);
  return n ? n : "errno" + std::to_string(e);
}
// A system call's value, or "ERR <errno name>" when it failed.
std::string what(long v) { return v < 0 ? "ERR " + errname(errno) : std::to_string(v); }

std::uint64_t fnv(const std::string& s) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

std::string random_bytes(std::mt19937_64& g, std::size_t n) {
  std::string s(n, '\0');
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    std::uint64_t v = g();
    std::memcpy(s.data() + i, &v, 8);
  }
  for (; i < n; ++i) s[i] = static_cast<char>(g());
  return s;
}
std::string random_bytes(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 g(seed);
  return random_bytes(g, n);
}

// The whole content of a file; 0 or errno.
int slurp(const std::string& path, std::string& out, int extra_flags = 0) {
  out.clear();
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | extra_flags);
  if (fd < 0) return errno;
  std::string buf(1 << 20, '\0');
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      int e = errno;
      ::close(fd);
      return e;
    }
    if (n == 0) break;
    out.append(buf.data(), static_cast<std::size_t>(n));
  }
  ::close(fd);
  return 0;
}

// Writes `data` to a new (or truncated) file; 0 or errno.
int write_file(const std::string& path, const std::string& data, mode_t mode = 0644) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return errno;
  std::size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      int e = errno;
      ::close(fd);
      return e;
    }
    done += static_cast<std::size_t>(n);
  }
  return ::close(fd) == 0 ? 0 : errno;
}

// Where two contents first differ, for a failure message.
std::string first_difference(const std::string& got, const std::string& want) {
  if (got == want) return "equal";
  std::size_t i = 0;
  while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
  return "sizes " + std::to_string(got.size()) + " (got) and " + std::to_string(want.size()) + " (want), first difference at byte " +
         std::to_string(i);
}

void sleep_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

// ---------------------------------------------------------------------------------------------
// Temporary directories and file systems, always removed.

class temp_dir {
 public:
  explicit temp_dir(const std::string& tag) {
    std::string tmpl = "/tmp/corofuse-pt-" + tag + "-XXXXXX";
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);  // never follows symlinks
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  const std::string& dir() const { return dir_; }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }

 private:
  std::string dir_;
};

// A tmpfs on a fresh temporary directory; always detached and removed.
class tmpfs_dir {
 public:
  explicit tmpfs_dir(const std::string& opts) {
    char tmpl[] = "/tmp/corofuse-pt-tmpfs-XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    if (::mount("tmpfs", dir_.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, opts.c_str()) != 0) {
      int e = errno;
      ::rmdir(dir_.c_str());
      throw std::runtime_error("mounting a tmpfs failed: " + std::string(std::strerror(e)));
    }
  }
  ~tmpfs_dir() {
    ::umount2(dir_.c_str(), MNT_DETACH);
    ::rmdir(dir_.c_str());
  }
  tmpfs_dir(const tmpfs_dir&) = delete;
  tmpfs_dir& operator=(const tmpfs_dir&) = delete;
  const std::string& dir() const { return dir_; }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }

 private:
  std::string dir_;
};

// ---------------------------------------------------------------------------------------------
// Clients.

// Like the harness's in_client, but a client stuck in a FUSE request the server never answers
// cannot hang the test: such a wait is uninterruptible once the server has read the request, so
// after the deadline every FUSE connection in `fuse_devs` is aborted, which ends the wait, and the
// child is killed. `hung` tells that this happened.
int guarded_client(const std::function<int()>& fn, int seconds, const std::vector<dev_t>& fuse_devs, bool* hung = nullptr) {
  if (hung) *hung = false;
  pid_t pid = corofuse::testing::start_client(fn, seconds);
  if (pid < 0) return -1;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds + 3);
  int status = 0;
  for (;;) {
    pid_t w = ::waitpid(pid, &status, WNOHANG);
    if (w == pid || w < 0) break;
    if (std::chrono::steady_clock::now() > deadline) {
      if (hung) *hung = true;
      for (dev_t d : fuse_devs) corofuse::session::abort_connection(d);
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      break;
    }
    sleep_ms(20);
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// A shell command as a guarded client (run by timeout(1), no quoting games): its exit status.
int shell(const std::string& cmd, int seconds, const std::vector<dev_t>& fuse_devs) {
  return guarded_client(
      [&] {
        const std::string secs = std::to_string(seconds);
        ::execl("/usr/bin/timeout", "timeout", "-k", "5", secs.c_str(), "/bin/sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
        return 127;
      },
      seconds + 10, fuse_devs);
}

// What a client saw: one line per failed expectation (and notes), written to a memfd the parent
// reads afterwards (grandchildren that changed their user append to the same open file).
class report {
 public:
  explicit report(int fd) : fd_(fd) {}
  void note(std::string line) {
    line += '\n';
    const char* p = line.data();
    std::size_t left = line.size();
    while (left > 0) {
      ssize_t n = ::write(fd_, p, left);
      if (n <= 0) return;
      p += n;
      left -= static_cast<std::size_t>(n);
    }
  }
  bool expect(bool cond, const std::string& what) {
    if (!cond) {
      note("FAILED: " + what);
      ++failed_;
    }
    return cond;
  }
  int failed() const { return failed_; }
  int fd() const { return fd_; }

 private:
  int fd_;
  int failed_ = 0;
};

struct outcome {
  int rc = -1;
  std::string text;
};

outcome run_client(const std::vector<dev_t>& fuse_devs, int seconds, const std::function<void(report&)>& fn) {
  outcome o;
  int fd = ::memfd_create("passthrough-test-record", MFD_CLOEXEC);
  if (fd < 0) {
    o.text = "memfd_create failed";
    return o;
  }
  bool hung = false;
  o.rc = guarded_client(
      [&] {
        ::umask(022);
        report r(fd);
        try {
          fn(r);
        } catch (const std::exception& e) {
          r.note(std::string("exception: ") + e.what());
          return 3;
        }
        return r.failed() ? 1 : 0;
      },
      seconds, fuse_devs, &hung);
  ::lseek(fd, 0, SEEK_SET);
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    o.text.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  if (o.rc != 0)
    o.text += "client ended with status " + std::to_string(o.rc) +
              (hung                    ? " (hung in a FUSE request never answered: connection aborted)"
               : o.rc == 128 + SIGALRM ? " (timed out)"
                                       : "") +
              "\n";
  return o;
}

// PT_TEST_VERBOSE=1 in the environment prints every client's record, failed or not.
#define CHECK_CLIENT(...)                                                                            \
  do {                                                                                               \
    outcome o_ = (__VA_ARGS__);                                                                      \
    if (std::getenv("PT_TEST_VERBOSE")) std::fprintf(stderr, "client record:\n%s", o_.text.c_str()); \
    INFO("client record:\n" << o_.text);                                                             \
    CHECK(o_.rc == 0);                                                                               \
  } while (0)

// Runs `fn` as another user (a grandchild with the given uid and gid, no supplementary groups).
void as_user(report& r, uid_t uid, gid_t gid, const std::function<void(report&)>& fn) {
  pid_t pid = ::fork();
  if (pid == 0) {
    ::alarm(30);
    report mine(r.fd());
    if (::setgroups(0, nullptr) != 0 || ::setresgid(gid, gid, gid) != 0 || ::setresuid(uid, uid, uid) != 0) {
      mine.note("drop privileges: failed");
      ::_exit(1);
    }
    try {
      fn(mine);
    } catch (...) {
      ::_exit(98);
    }
    ::_exit(mine.failed() ? 1 : 0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  r.expect(WIFEXITED(status) && WEXITSTATUS(status) == 0,
           "as uid " + std::to_string(uid) + ": " +
               (WIFEXITED(status) ? "exit " + std::to_string(WEXITSTATUS(status)) : "signal " + std::to_string(WTERMSIG(status))));
}

// ---------------------------------------------------------------------------------------------
// The server.

struct pt_mount {
  std::string transport;
  server fs;
  std::vector<dev_t> devs;  // the FUSE connections to abort if a client hangs

  pt_mount(const std::string& source, const std::string& t, const std::vector<std::string>& extra = {})
      : transport(t), fs(pt_bin, args(t, extra), -1, -1, {source}) {}

  static std::vector<std::string> args(const std::string& t, const std::vector<std::string>& extra) {
    std::vector<std::string> a{"--stats", "-o", "allow_other", "--transport", t};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }
  std::string P(const std::string& name) const { return fs.path(name); }

  // Stops the server with SIGTERM: it exits 0 and leaves nothing mounted; returns its log.
  std::string stop() {
    fs.signal(SIGTERM);
    bool ended = fs.wait_exit(30);
    std::string log = fs.log();
    INFO("passthrough log (tail):\n" << tail(log));
    CHECK(ended);
    if (ended) CHECK(fs.exit_status() == 0);
    CHECK_FALSE(fs.mounted());
    if (transport == "ring") CHECK(log.find("serving over FUSE-over-io_uring") != std::string::npos);
    CHECK(log.find("counter ") != std::string::npos);
    // Not a failure: a copy of the mount in another mount namespace (a build sandbox started
    // meanwhile on this shared machine) keeps the connection alive until the grace period ends.
    if (log.find("aborting") != std::string::npos) WARN("the server had to abort the connection at SIGTERM");
    return log;
  }
};

#define START_PT(m)                                                                                                         \
  do {                                                                                                                      \
    INFO("passthrough log:\n" << tail((m).fs.log()));                                                                       \
    INFO(((m).fs.exited() ? "passthrough ended with status " + std::to_string((m).fs.exit_status()) : "passthrough runs")); \
    REQUIRE((m).fs.mounted());                                                                                              \
    (m).devs.push_back((m).fs.device());                                                                                    \
  } while (0)

#define TRANSPORT()                                                         \
  const std::string transport = GENERATE(as<std::string>{}, "ring", "dev"); \
  INFO("transport: " << transport);                                         \
  REQUIRE(::geteuid() == 0);                                                \
  if (transport == "ring") REQUIRE(uring_enabled())

// ---------------------------------------------------------------------------------------------
// A tree's full state, for "nothing changed out there": every entry (not following symlinks)
// with its type, mode, owner, size, mtime, content (hash), link target and xattrs.

void snapshot_into(const std::string& root, const std::string& rel, std::string& out) {
  const std::string p = rel.empty() ? root : root + "/" + rel;
  struct stat st {};
  if (::lstat(p.c_str(), &st) != 0) {
    out += rel + " ERR " + errname(errno) + "\n";
    return;
  }
  std::ostringstream o;
  o << (rel.empty() ? "." : rel) << " mode=" << std::oct << st.st_mode << std::dec << " uid=" << st.st_uid << " gid=" << st.st_gid
    << " nlink=" << st.st_nlink << " mtime=" << st.st_mtim.tv_sec << "." << st.st_mtim.tv_nsec;
  if (S_ISREG(st.st_mode)) {
    std::string c;
    int e = slurp(p, c);
    o << " size=" << st.st_size << " content=" << (e ? "ERR " + errname(e) : std::to_string(fnv(c)));
  } else if (S_ISLNK(st.st_mode)) {
    char buf[4096];
    ssize_t n = ::readlink(p.c_str(), buf, sizeof buf);
    o << " target=" << (n < 0 ? "?" : std::string(buf, static_cast<std::size_t>(n)));
  }
  std::vector<char> names(1 << 16);
  ssize_t n = ::llistxattr(p.c_str(), names.data(), names.size());
  std::vector<std::string> sorted;
  for (ssize_t i = 0; i < n;) {
    sorted.emplace_back(names.data() + i);
    i += static_cast<ssize_t>(sorted.back().size()) + 1;
  }
  std::sort(sorted.begin(), sorted.end());
  for (auto& name : sorted) {
    std::vector<char> v(1 << 16);
    ssize_t m = ::lgetxattr(p.c_str(), name.c_str(), v.data(), v.size());
    o << " " << name << "=" << (m < 0 ? "?" : std::string(v.data(), static_cast<std::size_t>(m)));
  }
  out += o.str() + "\n";
  if (S_ISDIR(st.st_mode)) {
    std::vector<std::string> children;
    if (DIR* d = ::opendir(p.c_str())) {
      while (dirent* e = ::readdir(d)) {
        std::string name = e->d_name;
        if (name != "." && name != "..") children.push_back(name);
      }
      ::closedir(d);
    }
    std::sort(children.begin(), children.end());
    for (auto& c : children) snapshot_into(root, rel.empty() ? c : rel + "/" + c, out);
  }
}
std::string snapshot(const std::string& root) {
  std::string out;
  snapshot_into(root, "", out);
  return out;
}

// The names in a directory (without . and ..), sorted; errno on failure.
int names_in(const std::string& dir, std::set<std::string>& out) {
  out.clear();
  DIR* d = ::opendir(dir.c_str());
  if (!d) return errno;
  errno = 0;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") out.insert(n);
  }
  int e = errno;
  ::closedir(d);
  return e;
}
std::string join(const std::set<std::string>& s) {
  std::string out;
  for (auto& n : s) out += (out.empty() ? "" : " ") + n;
  return out;
}

// The first error of a write of `data` to `path` (opened O_WRONLY with `flags`), its fsync and
// its close: "ok" when there was none, else "<step> ERR <name>". Short writes continue.
std::string write_outcome(const std::string& path, const std::string& data, int flags = 0, std::size_t chunk = 1 << 16,
                          std::size_t* written = nullptr) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC | flags, 0644);
  if (fd < 0) return "open ERR " + errname(errno);
  std::string result = "ok";
  std::size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, std::min(chunk, data.size() - done));
    if (n < 0) {
      result = "write ERR " + errname(errno);
      break;
    }
    done += static_cast<std::size_t>(n);
  }
  if (written) *written = done;
  if (::fsync(fd) != 0 && result == "ok") result = "fsync ERR " + errname(errno);
  if (::close(fd) != 0 && result == "ok") result = "close ERR " + errname(errno);
  return result;
}

}  // namespace

// =============================================================================================
// Data.

TEST_CASE("passthrough: data written through the mount is in the backing files byte for byte, and back", "[mount][passthrough][data]") {
  TRANSPORT();
  temp_dir src("src"), work("work");
  const std::string rnd = work.path("rnd64");
  REQUIRE(write_file(rnd, random_bytes(64 * MiB, 1)) == 0);
  // Made in the backing directory before the mount: read through it.
  const std::string pre = random_bytes(5 * MiB + 123, 2);
  REQUIRE(write_file(src.path("pre"), pre) == 0);
  REQUIRE(shell("cd " + src.dir() +
                    " && mkdir -p pretree/a/b && head -c 300000 /dev/urandom > pretree/a/r && echo hi > pretree/a/b/t && "
                    "for i in $(seq 1 200); do echo $i > pretree/f$i; done",
                60, {}) == 0);

  pt_mount m(src.dir(), transport);
  START_PT(m);

  // 64 MiB with dd bs=1M, then with an odd block size; compared through the mount (cached and
  // O_DIRECT) and in the backing directory.
  CHECK(shell("dd if=" + rnd + " of=" + m.P("big") + " bs=1M status=none", 180, m.devs) == 0);
  CHECK(shell("cmp " + rnd + " " + src.path("big"), 120, m.devs) == 0);
  CHECK(shell("cmp " + rnd + " " + m.P("big"), 120, m.devs) == 0);
  CHECK(shell("dd if=" + m.P("big") + " bs=1M iflag=direct status=none | cmp - " + rnd, 120, m.devs) == 0);
  CHECK(shell("dd if=" + rnd + " of=" + m.P("big2") + " bs=4097 status=none && cmp " + rnd + " " + src.path("big2") + " && cmp " + rnd +
                  " " + m.P("big2"),
              240, m.devs) == 0);

  // Small unaligned writes, overwrites at random offsets (some past the end: holes), truncation
  // down and up, odd reads, against a model.
  CHECK_CLIENT(run_client(m.devs, 180, [&](report& r) {
    std::mt19937_64 g(3);
    std::string model;
    int fd = ::open(m.P("small").c_str(), O_CREAT | O_EXCL | O_RDWR, 0644);
    if (!r.expect(fd >= 0, "create small: " + what(fd))) return;
    while (model.size() < static_cast<std::size_t>(8 * MiB)) {
      std::string chunk = random_bytes(g, 1 + g() % 9973);
      ssize_t n = ::write(fd, chunk.data(), chunk.size());
      if (!r.expect(n == static_cast<ssize_t>(chunk.size()),
                    "write " + std::to_string(chunk.size()) + " at " + std::to_string(model.size()) + ": " + what(n)))
        return;
      model += chunk;
    }
    for (int i = 0; i < 3000; ++i) {
      std::size_t off = g() % (model.size() + 65536);
      std::string chunk = random_bytes(g, 1 + g() % 5000);
      ssize_t n = ::pwrite(fd, chunk.data(), chunk.size(), static_cast<off_t>(off));
      if (!r.expect(n == static_cast<ssize_t>(chunk.size()),
                    "pwrite " + std::to_string(chunk.size()) + " at " + std::to_string(off) + ": " + what(n)))
        return;
      if (off + chunk.size() > model.size()) model.resize(off + chunk.size(), '\0');
      std::memcpy(model.data() + off, chunk.data(), chunk.size());
    }
    r.expect(::ftruncate(fd, static_cast<off_t>(model.size() - 12345)) == 0, "ftruncate down: " + what(-1));
    model.resize(model.size() - 12345);
    r.expect(::ftruncate(fd, static_cast<off_t>(model.size() + 70000)) == 0, "ftruncate up: " + what(-1));
    model.resize(model.size() + 70000, '\0');
    ssize_t n = ::pwrite(fd, "tail", 4, static_cast<off_t>(model.size() + 100000));
    r.expect(n == 4, "pwrite past the end: " + what(n));
    model.resize(model.size() + 100000, '\0');
    model += "tail";
    for (int i = 0; i < 300; ++i) {
      std::size_t off = g() % (model.size() + 10);
      std::size_t len = 1 + g() % 70000;
      std::string buf(len, '\0');
      ssize_t got = ::pread(fd, buf.data(), len, static_cast<off_t>(off));
      std::string want = off < model.size() ? model.substr(off, len) : std::string();
      if (!r.expect(got == static_cast<ssize_t>(want.size()) && buf.substr(0, want.size()) == want,
                    "pread " + std::to_string(len) + " at " + std::to_string(off) + ": " + what(got)))
        break;
    }
    r.expect(::close(fd) == 0, "close small: " + what(-1));
    std::string c;
    int e = slurp(m.P("small"), c);
    r.expect(e == 0 && c == model, "small read through the mount: " + (e ? errname(e) : first_difference(c, model)));
    e = slurp(src.path("small"), c);
    r.expect(e == 0 && c == model, "small in the backing directory: " + (e ? errname(e) : first_difference(c, model)));
    struct stat st {};
    r.expect(::stat(m.P("small").c_str(), &st) == 0 && st.st_size == static_cast<off_t>(model.size()),
             "stat small through the mount: size " + std::to_string(st.st_size));
  }));

  // O_DIRECT through the mount: aligned writes and reads, a buffered write seen by an O_DIRECT
  // read of another descriptor.
  CHECK_CLIENT(run_client(m.devs, 120, [&](report& r) {
    void* mem = nullptr;
    if (!r.expect(::posix_memalign(&mem, 4096, MiB) == 0, "posix_memalign")) return;
    char* buf = static_cast<char*>(mem);
    std::mt19937_64 g(4);
    std::string model;
    int fd = ::open(m.P("direct").c_str(), O_CREAT | O_EXCL | O_RDWR | O_DIRECT, 0644);
    if (!r.expect(fd >= 0, "create direct with O_DIRECT: " + what(fd))) return;
    for (int i = 0; i < 16; ++i) {
      std::string chunk = random_bytes(g, MiB);
      std::memcpy(buf, chunk.data(), MiB);
      ssize_t n = ::pwrite(fd, buf, MiB, i * MiB);
      if (!r.expect(n == MiB, "O_DIRECT pwrite 1 MiB at " + std::to_string(i) + " MiB: " + what(n))) return;
      model += chunk;
    }
    {
      std::string chunk = random_bytes(g, 8192);
      std::memcpy(buf, chunk.data(), chunk.size());
      ssize_t n = ::pwrite(fd, buf, 8192, 3 * MiB + 4096);
      r.expect(n == 8192, "O_DIRECT pwrite 8 KiB at 3 MiB + 4 KiB: " + what(n));
      std::memcpy(model.data() + 3 * MiB + 4096, chunk.data(), chunk.size());
    }
    for (off_t off : {off_t{0}, 3 * MiB, 15 * MiB}) {
      ssize_t n = ::pread(fd, buf, MiB, off);
      r.expect(n == MiB && std::string(buf, MiB) == model.substr(static_cast<std::size_t>(off), MiB),
               "O_DIRECT pread 1 MiB at " + std::to_string(off) + ": " + what(n));
    }
    {
      ssize_t n = ::pread(fd, buf, 65536, 16 * MiB - 4096);
      r.expect(n == 4096 && std::string(buf, 4096) == model.substr(16 * MiB - 4096), "O_DIRECT pread across the end: " + what(n));
    }
    // A buffered write, then an O_DIRECT read of the same page through the other descriptor.
    int bfd = ::open(m.P("direct").c_str(), O_RDWR);
    r.expect(bfd >= 0 && ::pwrite(bfd, "buffered", 8, 100) == 8, "buffered pwrite: " + what(-1));
    std::memcpy(model.data() + 100, "buffered", 8);
    ::close(bfd);
    ssize_t n = ::pread(fd, buf, 4096, 0);
    r.expect(n == 4096 && std::string(buf, 4096) == model.substr(0, 4096), "O_DIRECT read after a buffered write: " + what(n));
    ::close(fd);
    std::string c;
    int e = slurp(src.path("direct"), c);
    r.expect(e == 0 && c == model, "direct in the backing directory: " + (e ? errname(e) : first_difference(c, model)));
    e = slurp(m.P("direct"), c);
    r.expect(e == 0 && c == model, "direct read through the mount (buffered): " + (e ? errname(e) : first_difference(c, model)));
    std::free(mem);
  }));

  // The other way: what was made in the backing directory reads right through the mount.
  CHECK_CLIENT(run_client(m.devs, 60, [&](report& r) {
    std::string c;
    int e = slurp(m.P("pre"), c);
    r.expect(e == 0 && c == pre, "pre through the mount: " + (e ? errname(e) : first_difference(c, pre)));
    e = slurp(m.P("pre"), c, O_DIRECT);
    r.expect(e == 0 && c == pre, "pre through the mount with O_DIRECT: " + (e ? errname(e) : first_difference(c, pre)));
    int fd = ::open(m.P("pre").c_str(), O_RDONLY);
    void* map = fd < 0 ? MAP_FAILED : ::mmap(nullptr, pre.size(), PROT_READ, MAP_SHARED, fd, 0);
    if (r.expect(map != MAP_FAILED, "mmap pre: " + what(-1))) {
      r.expect(std::memcmp(map, pre.data(), pre.size()) == 0, "mmap of pre: the bytes differ");
      ::munmap(map, pre.size());
    }
    if (fd >= 0) ::close(fd);
  }));
  CHECK(shell("diff -r " + src.path("pretree") + " " + m.P("pretree"), 60, m.devs) == 0);

  // cp -a of a tree into the mount: contents (diff -r) and metadata (modes, owners, link counts,
  // link targets, sizes, mtimes) equal to the original's, in the backing directory and through the
  // mount; an xattr carried over.
  REQUIRE(
      shell("cd " + work.dir() +
                " && mkdir -p tree/d1/d2 tree/empty tree/many && head -c 1000000 /dev/urandom > tree/d1/bin && "
                "echo hi > tree/d1/d2/txt && : > tree/emptyfile && ln -s d1/d2/txt tree/lnk && ln -s /nonexistent tree/dangling && "
                "chmod 0600 tree/d1/bin && chmod 0750 tree/d1 && chmod 4755 tree/emptyfile && chown 1000:1000 tree/d1/d2/txt && "
                "chown -h 65534:65534 tree/lnk && mkfifo tree/fifo && ln tree/d1/bin tree/hard && touch -d 2001-02-03 tree/d1/d2/txt && "
                "for i in $(seq 1 300); do echo $i > tree/many/f$i; done && head -c 70000 /dev/urandom > tree/many/big",
            60, {}) == 0);
  REQUIRE(::setxattr(work.path("tree/d1/bin").c_str(), "user.k", "value", 5, 0) == 0);
  CHECK(shell("cp -a " + work.path("tree") + " " + m.P("copy"), 120, m.devs) == 0);
  CHECK(shell("diff -r --no-dereference -x fifo " + work.path("tree") + " " + src.path("copy"), 60, m.devs) == 0);
  CHECK(shell("diff -r --no-dereference -x fifo " + work.path("tree") + " " + m.P("copy"), 60, m.devs) == 0);
  auto meta = [&](const std::string& dir, const std::string& out) {
    return shell("cd " + dir +
                     " && find . \\( -type d -printf \"%p %y %m %U %G %n %T@\\n\" \\) -o -printf \"%p %y %m %U %G %n %s %l %T@\\n\" "
                     "| sort > " +
                     out,
                 60, m.devs);
  };
  REQUIRE(meta(work.path("tree"), work.path("meta.tree")) == 0);
  REQUIRE(meta(src.path("copy"), work.path("meta.backing")) == 0);
  REQUIRE(meta(m.P("copy"), work.path("meta.mount")) == 0);
  {
    const std::string want = read_file(work.path("meta.tree"));
    CHECK(want.find("./fifo p") != std::string::npos);
    CHECK(read_file(work.path("meta.backing")) == want);
    CHECK(read_file(work.path("meta.mount")) == want);
  }
  CHECK_CLIENT(run_client(m.devs, 30, [&](report& r) {
    char v[64];
    ssize_t n = ::getxattr(src.path("copy/d1/bin").c_str(), "user.k", v, sizeof v);
    r.expect(n == 5 && std::string(v, 5) == "value", "user.k in the backing copy: " + what(n));
    n = ::getxattr(m.P("copy/d1/bin").c_str(), "user.k", v, sizeof v);
    r.expect(n == 5 && std::string(v, 5) == "value", "user.k through the mount: " + what(n));
  }));

  std::string log = m.stop();
  INFO(tail(log));
  CHECK(requests(log, "WRITE") > 0);
  CHECK(requests(log, "READ") > 0);
}

// =============================================================================================
// --direct-io.

TEST_CASE("passthrough --direct-io: a change made in the backing file is seen at once through an open mount file",
          "[mount][passthrough][direct-io]") {
  TRANSPORT();
  temp_dir src("src");
  REQUIRE(write_file(src.path("f"), std::string(8192, 'A')) == 0);
  pt_mount m(src.dir(), transport, {"--direct-io"});
  START_PT(m);
  CHECK_CLIENT(run_client(m.devs, 30, [&](report& r) {
    int fd = ::open(m.P("f").c_str(), O_RDWR);
    if (!r.expect(fd >= 0, "open f: " + what(fd))) return;
    std::string buf(8192, '\0');
    ssize_t n = ::pread(fd, buf.data(), 8192, 0);
    r.expect(n == 8192 && buf == std::string(8192, 'A'), "first read: " + what(n));
    // Changed directly in the backing file: the next read through the open file sees it.
    r.expect(write_file(src.path("f"), std::string(8192, 'B')) == 0, "rewrite the backing file");
    n = ::pread(fd, buf.data(), 8192, 0);
    r.expect(n == 8192 && buf == std::string(8192, 'B'), "read after the backing change: " + what(n) + " " + buf.substr(0, 8));
    int bfd = ::open(src.path("f").c_str(), O_WRONLY);
    r.expect(bfd >= 0 && ::pwrite(bfd, "CCCC", 4, 4096) == 4, "pwrite in the backing file");
    ::close(bfd);
    n = ::pread(fd, buf.data(), 8, 4094);
    r.expect(n == 8 && buf.substr(0, 8) == "BBCCCCBB", "read after a partial backing change: " + what(n) + " " + buf.substr(0, 8));
    // And the other way: a write through the mount is in the backing file when write returns.
    n = ::pwrite(fd, "DD", 2, 0);
    r.expect(n == 2, "pwrite through the mount: " + what(n));
    std::string c;
    r.expect(slurp(src.path("f"), c) == 0 && c.substr(0, 4) == "DDBB", "the backing file after the write: " + c.substr(0, 4));
    ::close(fd);
  }));
  m.stop();
}

// =============================================================================================
// Names, inodes, xattrs, listings.

TEST_CASE("passthrough: hard links are one inode; open files survive unlink and renames; xattrs and listings mirror the backing directory",
          "[mount][passthrough][names]") {
  TRANSPORT();
  // Inodes as file handles, and the fallback of a descriptor per inode.
  const std::string inodes = GENERATE(as<std::string>{}, "auto", "off");
  INFO("--inode-handles " << inodes);
  temp_dir src("src");
  REQUIRE(::mkdir(src.path("many").c_str(), 0755) == 0);
  bool made = true;
  for (int i = 0; i < 2000; ++i)
    made = made && write_file(src.path("many/file-with-a-longish-name-" + std::to_string(i)), std::to_string(i)) == 0;
  REQUIRE(made);
  REQUIRE(::mkdir(src.path("many/subdir").c_str(), 0755) == 0);
  REQUIRE(::symlink("file-with-a-longish-name-1", src.path("many/link").c_str()) == 0);
  REQUIRE(::mkfifo(src.path("many/fifo").c_str(), 0644) == 0);
  REQUIRE(write_file(src.path("a"), std::string(8192, 'a')) == 0);
  REQUIRE(::link(src.path("a").c_str(), src.path("b").c_str()) == 0);
  REQUIRE(::setxattr(src.path("a").c_str(), "user.pre", "1", 1, 0) == 0);
  REQUIRE(write_file(src.path("q"), "") == 0);
  pt_mount m(src.dir(), transport, {"--inode-handles", inodes});
  START_PT(m);
  CHECK_CLIENT(run_client(m.devs, 60, [&](report& r) {
    // Two names of one backing inode are one inode through the mount: same st_ino, and a write
    // through one name is seen at once through a file already open (and cached) under the other.
    struct stat sa {};
    struct stat sb {};
    r.expect(::stat(m.P("a").c_str(), &sa) == 0 && ::stat(m.P("b").c_str(), &sb) == 0 && sa.st_ino == sb.st_ino && sa.st_nlink == 2,
             "a and b: ino " + std::to_string(sa.st_ino) + " and " + std::to_string(sb.st_ino) + ", nlink " + std::to_string(sa.st_nlink));
    int fb = ::open(m.P("b").c_str(), O_RDONLY);
    std::string buf(8192, '\0');
    ssize_t n = ::pread(fb, buf.data(), 8192, 0);
    r.expect(n == 8192 && buf == std::string(8192, 'a'), "read b: " + what(n));
    int fa = ::open(m.P("a").c_str(), O_WRONLY);
    n = ::pwrite(fa, "XYZ", 3, 0);
    r.expect(n == 3, "write a: " + what(n));
    ::close(fa);
    n = ::pread(fb, buf.data(), 3, 0);
    r.expect(n == 3 && buf.substr(0, 3) == "XYZ", "read b after writing a: " + buf.substr(0, 3));
    ::close(fb);
    r.expect(::link(m.P("a").c_str(), m.P("c").c_str()) == 0, "link a c: " + what(-1));
    struct stat sc {};
    struct stat back {};
    r.expect(::stat(m.P("c").c_str(), &sc) == 0 && sc.st_ino == sa.st_ino && sc.st_nlink == 3, "c: nlink " + std::to_string(sc.st_nlink));
    r.expect(::stat(m.P("a").c_str(), &sa) == 0 && sa.st_nlink == 3, "a after the link: nlink " + std::to_string(sa.st_nlink));
    r.expect(::stat(src.path("c").c_str(), &back) == 0 && back.st_nlink == 3, "backing c: nlink " + std::to_string(back.st_nlink));

    // An open file unlinked: still readable, writable, truncatable; gone from the backing directory.
    int fd = ::open(m.P("u").c_str(), O_CREAT | O_EXCL | O_RDWR, 0644);
    r.expect(fd >= 0 && ::write(fd, "before", 6) == 6, "create and write u: " + what(fd));
    r.expect(::unlink(m.P("u").c_str()) == 0, "unlink u: " + what(-1));
    r.expect(::pwrite(fd, "after", 5, 6) == 5, "write u after unlink: " + what(-1));
    n = ::pread(fd, buf.data(), 100, 0);
    r.expect(n == 11 && buf.substr(0, 11) == "beforeafter", "read u after unlink: " + what(n));
    struct stat su {};
    r.expect(::fstat(fd, &su) == 0 && su.st_nlink == 0 && su.st_size == 11, "fstat u after unlink: nlink " + std::to_string(su.st_nlink));
    r.expect(::ftruncate(fd, 3) == 0 && ::fstat(fd, &su) == 0 && su.st_size == 3, "ftruncate u after unlink: " + what(-1));
    ::close(fd);
    r.expect(::lstat(src.path("u").c_str(), &su) != 0 && errno == ENOENT, "backing u after unlink: " + what(-1));

    // An open file renamed through the mount, and one renamed in the backing directory: writes
    // through the open file land in the renamed backing file.
    r.expect(::mkdir(m.P("sub").c_str(), 0755) == 0, "mkdir sub: " + what(-1));
    fd = ::open(m.P("r").c_str(), O_CREAT | O_EXCL | O_RDWR, 0644);
    r.expect(fd >= 0 && ::write(fd, "one", 3) == 3, "create and write r: " + what(fd));
    r.expect(::rename(m.P("r").c_str(), m.P("sub/r2").c_str()) == 0, "rename r sub/r2: " + what(-1));
    r.expect(::pwrite(fd, "two", 3, 3) == 3, "write r after its rename: " + what(-1));
    ::close(fd);
    std::string c;
    r.expect(slurp(src.path("sub/r2"), c) == 0 && c == "onetwo", "backing sub/r2: " + c);
    r.expect(::lstat(src.path("r").c_str(), &su) != 0, "backing r is gone");
    fd = ::open(m.P("q").c_str(), O_RDWR);
    r.expect(fd >= 0, "open q: " + what(fd));
    r.expect(::rename(src.path("q").c_str(), src.path("q2").c_str()) == 0, "rename backing q q2: " + what(-1));
    r.expect(::pwrite(fd, "data", 4, 0) == 4, "write q after the backing rename: " + what(-1));
    ::close(fd);
    r.expect(slurp(src.path("q2"), c) == 0 && c == "data", "backing q2: " + c);
    r.expect(::lstat(src.path("q").c_str(), &su) != 0, "no new backing q");

    // Extended attributes, both ways.
    char v[64];
    n = ::getxattr(m.P("a").c_str(), "user.pre", v, sizeof v);
    r.expect(n == 1 && v[0] == '1', "getxattr user.pre through the mount: " + what(n));
    r.expect(::setxattr(m.P("a").c_str(), "user.new", "vv", 2, 0) == 0, "setxattr user.new: " + what(-1));
    n = ::getxattr(src.path("a").c_str(), "user.new", v, sizeof v);
    r.expect(n == 2 && std::string(v, 2) == "vv", "backing user.new: " + what(n));
    r.expect(::setxattr(m.P("a").c_str(), "user.new", "w", 1, XATTR_CREATE) != 0 && errno == EEXIST,
             "XATTR_CREATE of an existing one: " + what(-1));
    std::vector<char> names(4096);
    n = ::listxattr(m.P("a").c_str(), names.data(), names.size());
    std::set<std::string> listed;
    for (ssize_t i = 0; i < n;) {
      listed.insert(names.data() + i);
      i += static_cast<ssize_t>(std::strlen(names.data() + i)) + 1;
    }
    r.expect(listed.count("user.pre") == 1 && listed.count("user.new") == 1, "listxattr: " + join(listed));
    r.expect(::removexattr(m.P("a").c_str(), "user.pre") == 0, "removexattr user.pre: " + what(-1));
    n = ::getxattr(src.path("a").c_str(), "user.pre", v, sizeof v);
    r.expect(n < 0 && errno == ENODATA, "backing user.pre after removexattr: " + what(n));
    n = ::getxattr(m.P("a").c_str(), "user.none", v, sizeof v);
    r.expect(n < 0 && errno == ENODATA, "getxattr of a missing one: " + what(n));

    // Symlinks and fifos made through the mount; a backing symlink read through it.
    r.expect(::symlink("../some/where", m.P("sl").c_str()) == 0, "symlink sl: " + what(-1));
    n = ::readlink(src.path("sl").c_str(), v, sizeof v);
    r.expect(n == 13 && std::string(v, 13) == "../some/where", "backing readlink sl: " + what(n));
    n = ::readlink(m.P("many/link").c_str(), v, sizeof v);
    r.expect(n == 26 && std::string(v, 26) == "file-with-a-longish-name-1", "readlink many/link: " + what(n));
    r.expect(::mkfifo(m.P("ff").c_str(), 0640) == 0 && ::lstat(src.path("ff").c_str(), &su) == 0 && S_ISFIFO(su.st_mode) &&
                 (su.st_mode & 07777) == 0640,
             "mkfifo ff: " + what(-1));

    // A 2003-entry listing: the same names and types as the backing directory's.
    auto typed_listing = [](const std::string& dir, std::set<std::string>& out) {
      out.clear();
      DIR* d = ::opendir(dir.c_str());
      if (!d) return errno;
      errno = 0;
      while (dirent* e = ::readdir(d)) out.insert(std::string(e->d_name) + ":" + std::to_string(e->d_type));
      int err = errno;
      ::closedir(d);
      return err;
    };
    std::set<std::string> through, direct;
    int e1 = typed_listing(m.P("many"), through), e2 = typed_listing(src.path("many"), direct);
    r.expect(e1 == 0 && e2 == 0 && through.size() == 2005 && through == direct,
             "listing of many: " + std::to_string(through.size()) + " entries through the mount, " + std::to_string(direct.size()) +
                 " in the backing directory");
    // stat of a few entries agrees with the backing directory.
    for (const char* name : {"many/file-with-a-longish-name-7", "many/subdir", "many/link", "many/fifo", "sub/r2"}) {
      struct stat x {};
      struct stat y {};
      bool ok = ::lstat(m.P(name).c_str(), &x) == 0 && ::lstat(src.path(name).c_str(), &y) == 0;
      r.expect(ok && x.st_mode == y.st_mode && x.st_uid == y.st_uid && x.st_gid == y.st_gid && x.st_size == y.st_size &&
                   x.st_nlink == y.st_nlink && x.st_mtim.tv_sec == y.st_mtim.tv_sec && x.st_mtim.tv_nsec == y.st_mtim.tv_nsec,
               std::string("lstat ") + name + " through the mount and in the backing directory differ");
    }
  }));
  m.stop();
}

// =============================================================================================
// Parallel clients.

TEST_CASE("passthrough: clients on both CPUs at once: every file's data right", "[mount][passthrough][parallel]") {
  TRANSPORT();
  temp_dir src("src"), work("work");
  const std::string rnd = work.path("rnd");
  REQUIRE(write_file(rnd, random_bytes(16 * MiB, 11)) == 0);
  REQUIRE(write_file(src.path("pre"), random_bytes(16 * MiB, 11)) == 0);
  pt_mount m(src.dir(), transport);
  START_PT(m);
  const std::string M = m.fs.dir();
  CHECK(shell("(for i in 1 2 3 4; do taskset -c 0 dd if=" + rnd + " of=" + M +
                  "/c0_$i bs=65536 status=none || exit 1; done) & p1=$!; "
                  "(for i in 1 2 3 4; do taskset -c 1 dd if=" +
                  rnd + " of=" + M +
                  "/c1_$i bs=100000 status=none || exit 1; done) & p2=$!; "
                  "(for i in 1 2 3 4; do taskset -c 0 cmp " +
                  rnd + " " + M +
                  "/pre || exit 1; done) & p3=$!; "
                  "(for i in 1 2 3 4; do taskset -c 1 dd if=" +
                  M + "/pre bs=1M iflag=direct status=none | cmp - " + rnd +
                  " || exit 1; done) & p4=$!; "
                  "wait $p1 && wait $p2 && wait $p3 && wait $p4",
              300, m.devs) == 0);
  CHECK(shell("for f in c0_1 c0_2 c0_3 c0_4 c1_1 c1_2 c1_3 c1_4; do cmp " + rnd + " " + src.path("$f") + " && cmp " + rnd + " " + M +
                  "/$f || exit 1; done",
              300, m.devs) == 0);
  m.stop();
}

// =============================================================================================
// Kernel passthrough.

TEST_CASE("passthrough --passthrough: READ and WRITE of open files go to the backing file in the kernel, never to the server",
          "[mount][passthrough][kernel-passthrough]") {
  TRANSPORT();
  temp_dir src("src");
  const std::string pre = random_bytes(3 * MiB + 17, 5);
  REQUIRE(write_file(src.path("pre"), pre) == 0);
  {
    pt_mount m(src.dir(), transport, {"--passthrough"});
    START_PT(m);
    CHECK_CLIENT(run_client(m.devs, 120, [&](report& r) {
      // Buffered writes of odd sizes into a new file, reads back.
      const std::string a = random_bytes(8 * MiB + 5, 6);
      std::string res = write_outcome(m.P("a"), a, O_CREAT | O_EXCL, 100000);
      r.expect(res == "ok", "buffered write of a: " + res);
      std::string c;
      int e = slurp(m.P("a"), c);
      r.expect(e == 0 && c == a, "a through the mount: " + (e ? errname(e) : first_difference(c, a)));
      e = slurp(src.path("a"), c);
      r.expect(e == 0 && c == a, "a in the backing directory: " + (e ? errname(e) : first_difference(c, a)));
      // O_DIRECT writes and reads.
      void* mem = nullptr;
      if (!r.expect(::posix_memalign(&mem, 4096, MiB) == 0, "posix_memalign")) return;
      char* buf = static_cast<char*>(mem);
      const std::string b = random_bytes(4 * MiB, 7);
      int fd = ::open(m.P("b").c_str(), O_CREAT | O_EXCL | O_RDWR | O_DIRECT, 0644);
      if (r.expect(fd >= 0, "create b O_DIRECT: " + what(fd))) {
        for (int i = 0; i < 4; ++i) {
          std::memcpy(buf, b.data() + i * MiB, MiB);
          ssize_t n = ::pwrite(fd, buf, MiB, i * MiB);
          r.expect(n == MiB, "O_DIRECT pwrite at " + std::to_string(i) + " MiB: " + what(n));
        }
        for (int i = 0; i < 4; ++i) {
          ssize_t n = ::pread(fd, buf, MiB, i * MiB);
          r.expect(n == MiB && std::memcmp(buf, b.data() + i * MiB, MiB) == 0,
                   "O_DIRECT pread at " + std::to_string(i) + " MiB: " + what(n));
        }
        ::close(fd);
      }
      std::free(mem);
      e = slurp(src.path("b"), c);
      r.expect(e == 0 && c == b, "b in the backing directory: " + (e ? errname(e) : first_difference(c, b)));
      e = slurp(m.P("b"), c);
      r.expect(e == 0 && c == b, "b through the mount: " + (e ? errname(e) : first_difference(c, b)));
      // A file that was there before: read, mapped, and appended to.
      e = slurp(m.P("pre"), c);
      r.expect(e == 0 && c == pre, "pre through the mount: " + (e ? errname(e) : first_difference(c, pre)));
      fd = ::open(m.P("pre").c_str(), O_RDONLY);
      void* map = fd < 0 ? MAP_FAILED : ::mmap(nullptr, pre.size(), PROT_READ, MAP_SHARED, fd, 0);
      if (r.expect(map != MAP_FAILED, "mmap pre: " + what(-1))) {
        r.expect(std::memcmp(map, pre.data(), pre.size()) == 0, "mmap of pre: the bytes differ");
        ::munmap(map, pre.size());
      }
      if (fd >= 0) ::close(fd);
      res = write_outcome(m.P("pre"), "appended", O_APPEND);
      r.expect(res == "ok", "append to pre: " + res);
      e = slurp(src.path("pre"), c);
      r.expect(e == 0 && c == pre + "appended",
               "pre in the backing directory after the append: " + (e ? errname(e) : first_difference(c, pre + "appended")));
    }));
    std::string log = m.stop();
    INFO(tail(log));
    CHECK(requests(log, "OPEN") > 0);
    CHECK(requests(log, "CREATE") > 0);
    CHECK(requests(log, "READ") == 0);
    CHECK(requests(log, "WRITE") == 0);
  }
  // The same reads without --passthrough reach the server.
  {
    pt_mount m(src.dir(), transport);
    START_PT(m);
    CHECK(shell("cat " + m.P("pre") + " " + m.P("a") + " > /dev/null && printf x >> " + m.P("a"), 60, m.devs) == 0);
    std::string log = m.stop();
    INFO(tail(log));
    CHECK(requests(log, "OPEN") > 0);
    CHECK(requests(log, "READ") > 0);
    CHECK(requests(log, "WRITE") > 0);
  }
}

// =============================================================================================
// Errors of the backing store.

TEST_CASE("passthrough: ENOSPC of a full backing tmpfs reaches the client; earlier files intact; space reusable",
          "[mount][passthrough][enospc]") {
  TRANSPORT();
  const std::string mode = GENERATE(as<std::string>{}, "plain", "--passthrough");
  INFO("mode: " << mode);
  tmpfs_dir backing("size=1M,mode=0755");
  std::vector<std::string> extra;
  if (mode != "plain") extra.push_back(mode);
  pt_mount m(backing.dir(), transport, extra);
  START_PT(m);
  CHECK_CLIENT(run_client(m.devs, 60, [&](report& r) {
    struct statvfs v {};
    struct statvfs b {};
    r.expect(::statvfs(m.P("").c_str(), &v) == 0 && ::statvfs(backing.dir().c_str(), &b) == 0, "statvfs: " + what(-1));
    r.expect(v.f_blocks * v.f_frsize == b.f_blocks * b.f_frsize, "statvfs size through the mount " +
                                                                     std::to_string(v.f_blocks * v.f_frsize) + " vs backing " +
                                                                     std::to_string(b.f_blocks * b.f_frsize));
    const std::string keep = random_bytes(200 * KiB, 8);
    std::string res = write_outcome(m.P("keep"), keep, O_CREAT | O_EXCL);
    r.expect(res == "ok", "write keep: " + res);
    std::size_t written = 0;
    res = write_outcome(m.P("big"), random_bytes(2 * MiB, 9), O_CREAT | O_EXCL, 64 * KiB, &written);
    r.expect(res == "write ERR ENOSPC" || res == "fsync ERR ENOSPC" || res == "close ERR ENOSPC", "write 2 MiB: " + res);
    r.expect(written < static_cast<std::size_t>(MiB), "written before ENOSPC: " + std::to_string(written));
    r.note("note: big: " + res + " after " + std::to_string(written) + " bytes");
    std::string c;
    int e = slurp(m.P("keep"), c);
    r.expect(e == 0 && c == keep, "keep through the mount: " + (e ? errname(e) : first_difference(c, keep)));
    e = slurp(backing.path("keep"), c);
    r.expect(e == 0 && c == keep, "keep in the backing tmpfs: " + (e ? errname(e) : first_difference(c, keep)));
    r.expect(::unlink(m.P("big").c_str()) == 0, "unlink big: " + what(-1));
    // Space comes back once the server has let go of the unlinked file (RELEASE, FORGET).
    for (int i = 0; i < 250; ++i) {
      struct statvfs now {};
      if (::statvfs(backing.dir().c_str(), &now) == 0 && now.f_bfree * now.f_frsize >= 700 * KiB) break;
      sleep_ms(20);
    }
    const std::string again = random_bytes(600 * KiB, 10);
    res = write_outcome(m.P("again"), again, O_CREAT | O_EXCL);
    r.expect(res == "ok", "write 600 KiB after freeing the space: " + res);
    e = slurp(backing.path("again"), c);
    r.expect(e == 0 && c == again, "again in the backing tmpfs: " + (e ? errname(e) : first_difference(c, again)));
  }));
  m.stop();
}

namespace {
namespace faulty = corofuse::testing::faulty;

// How reading a file in 64 KiB steps ends: the bytes read before the first error (hashed), where
// and how it failed.
std::string read_until_error(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return "open ERR " + errname(errno);
  std::string data;
  std::string buf(64 * KiB, '\0');
  std::string end;
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      end = "read at " + std::to_string(data.size()) + " ERR " + errname(errno);
      break;
    }
    if (n == 0) {
      end = "EOF at " + std::to_string(data.size());
      break;
    }
    data.append(buf.data(), static_cast<std::size_t>(n));
  }
  ::close(fd);
  bool pattern_ok = true;
  for (std::size_t i = 0; i < data.size() && pattern_ok; ++i) pattern_ok = data[i] == faulty::pattern(static_cast<off_t>(i));
  return end + (pattern_ok ? " (bytes before it right)" : " (bytes before it WRONG)");
}

std::string pread_outcome(const std::string& path, std::size_t n, off_t off) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return "open ERR " + errname(errno);
  std::string buf(n, '\0');
  ssize_t got = ::pread(fd, buf.data(), n, off);
  std::string out = got < 0 ? "ERR " + errname(errno) : std::to_string(got) + " bytes";
  if (got > 0) {
    bool ok = true;
    for (ssize_t i = 0; i < got && ok; ++i) ok = buf[static_cast<std::size_t>(i)] == faulty::pattern(off + i);
    out += ok ? " right" : " WRONG";
  }
  ::close(fd);
  return out;
}
}  // namespace

TEST_CASE("passthrough: EIO and ENOSPC from a faulty backing filesystem reach the client as they are", "[mount][passthrough][eio]") {
  TRANSPORT();
  const std::string mode = GENERATE(as<std::string>{}, "plain", "--passthrough");
  INFO("mode: " << mode);
  auto bad = faulty::mount_faulty_fs();
  {
    INFO("faulty fs log:\n" << bad.log());
    REQUIRE(bad.mounted());
  }
  std::vector<std::string> extra;
  if (mode != "plain") extra.push_back(mode);
  pt_mount m(bad.dir(), transport, extra);
  START_PT(m);
  m.devs.push_back(bad.device());
  CHECK_CLIENT(run_client(m.devs, 60, [&](report& r) {
    auto same = [&](const std::string& label, const std::function<std::string(const std::string& root)>& fn, const std::string& want) {
      const std::string direct = fn(bad.dir());
      const std::string through = fn(m.fs.dir());
      r.expect(direct == want, label + " on the faulty fs itself (a test bug?): " + direct + ", expected " + want);
      r.expect(through == direct, label + " through passthrough: " + through + ", directly: " + direct);
    };
    same(
        "stat rfail",
        [](const std::string& root) {
          struct stat st {};
          if (::stat((root + "/rfail").c_str(), &st) != 0) return "ERR " + errname(errno);
          return std::to_string(st.st_size) + " " + std::to_string(st.st_mode & 07777);
        },
        std::to_string(faulty::rfail_size) + " " + std::to_string(0666));
    same(
        "pread 4 KiB at 0 of rfail", [](const std::string& root) { return pread_outcome(root + "/rfail", 4096, 0); }, "4096 bytes right");
    same(
        "pread 4 KiB at 600 KiB of rfail", [](const std::string& root) { return pread_outcome(root + "/rfail", 4096, 600 * KiB); },
        "ERR EIO");
    same(
        "read rfail to the end", [](const std::string& root) { return read_until_error(root + "/rfail"); },
        "read at " + std::to_string(faulty::rfail_bad_from) + " ERR EIO (bytes before it right)");
    same(
        "pread 4 KiB at 0 of weio", [](const std::string& root) { return pread_outcome(root + "/weio", 4096, 0); }, "4096 bytes right");
    same(
        "write weio", [](const std::string& root) { return write_outcome(root + "/weio", std::string(4096, 'w')); }, "write ERR EIO");
    same(
        "write 1 byte at 100 to weio",
        [](const std::string& root) {
          int fd = ::open((root + "/weio").c_str(), O_WRONLY);
          if (fd < 0) return "open ERR " + errname(errno);
          std::string out = what(::pwrite(fd, "x", 1, 100));
          ::close(fd);
          return out;
        },
        "ERR EIO");
    same(
        "write wnospc", [](const std::string& root) { return write_outcome(root + "/wnospc", std::string(10000, 'n')); },
        "write ERR ENOSPC");
  }));
  std::string log = m.stop();
  INFO(tail(log));
  CHECK(requests(log, "OPEN") > 0);
  if (mode == "plain") {
    CHECK(requests(log, "READ") > 0);
    CHECK(requests(log, "WRITE") > 0);
  } else {
    // The backing files (on a FUSE mount of stacking depth 0) passed through in the kernel too.
    CHECK(requests(log, "READ") == 0);
    CHECK(requests(log, "WRITE") == 0);
  }
}

// =============================================================================================
// Ownership and permissions.

TEST_CASE("passthrough: files made by a user belong to that user; the kernel's permission checks hold", "[mount][passthrough][perm]") {
  TRANSPORT();
  temp_dir src("src");
  REQUIRE(::chmod(src.dir().c_str(), 0777) == 0);
  REQUIRE(write_file(src.path("rootfile"), "secret-root") == 0);
  REQUIRE(::chmod(src.path("rootfile").c_str(), 0644) == 0);
  REQUIRE(::mkdir(src.path("rootdir").c_str(), 0755) == 0);
  pt_mount m(src.dir(), transport);
  START_PT(m);
  CHECK_CLIENT(run_client(m.devs, 60, [&](report& r) {
    as_user(r, nobody, nogroup, [&](report& u) {
      int fd = ::open(m.P("nf").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0640);
      u.expect(fd >= 0, "nobody creates nf: " + what(fd));
      if (fd >= 0) {
        u.expect(::write(fd, "by nobody", 9) == 9, "nobody writes nf: " + what(-1));
        ::close(fd);
      }
      u.expect(::mkdir(m.P("nd").c_str(), 0750) == 0, "nobody mkdir nd: " + what(-1));
      u.expect(::symlink("some/target", m.P("nl").c_str()) == 0, "nobody symlink nl: " + what(-1));
      u.expect(::mkfifo(m.P("np").c_str(), 0600) == 0, "nobody mkfifo np: " + what(-1));
      fd = ::open(m.P("nd/inner").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0600);
      u.expect(fd >= 0, "nobody creates nd/inner: " + what(fd));
      if (fd >= 0) ::close(fd);
      u.expect(::link(m.P("nf").c_str(), m.P("nf.link").c_str()) == 0, "nobody links nf: " + what(-1));
      u.expect(::rename(m.P("nf.link").c_str(), m.P("nf.renamed").c_str()) == 0, "nobody renames the link: " + what(-1));
      // Refused by the kernel (default_permissions), whatever the server could do as root.
      errno = 0;
      fd = ::open(m.P("rootfile").c_str(), O_WRONLY);
      u.expect(fd < 0 && errno == EACCES, "nobody opens rootfile for writing: " + what(fd));
      if (fd >= 0) ::close(fd);
      std::string c;
      int e = slurp(m.P("rootfile"), c);
      u.expect(e == 0 && c == "secret-root", "nobody reads rootfile (0644): " + (e ? errname(e) : c));
      u.expect(::truncate(m.P("rootfile").c_str(), 0) != 0 && errno == EACCES, "nobody truncates rootfile: " + what(-1));
      u.expect(::chmod(m.P("rootfile").c_str(), 0666) != 0 && errno == EPERM, "nobody chmods rootfile: " + what(-1));
      u.expect(::chown(m.P("rootfile").c_str(), nobody, nogroup) != 0 && errno == EPERM, "nobody chowns rootfile to itself: " + what(-1));
      u.expect(::chown(m.P("nf").c_str(), 0, 0) != 0 && errno == EPERM, "nobody chowns nf to root: " + what(-1));
      u.expect(::chown(m.P("nf").c_str(), static_cast<uid_t>(-1), 0) != 0 && errno == EPERM, "nobody chgrps nf to root: " + what(-1));
      u.expect(::lchown(m.P("nl").c_str(), 0, 0) != 0 && errno == EPERM, "nobody chowns nl to root: " + what(-1));
      u.expect(::setxattr(m.P("rootfile").c_str(), "user.x", "v", 1, 0) != 0 && errno == EACCES,
               "nobody sets an xattr on rootfile: " + what(-1));
      u.expect(::utimensat(AT_FDCWD, m.P("rootfile").c_str(), nullptr, 0) != 0 && errno == EACCES, "nobody touches rootfile: " + what(-1));
      fd = ::open(m.P("rootdir/x").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644);
      u.expect(fd < 0 && errno == EACCES, "nobody creates in rootdir (0755 root): " + what(fd));
      if (fd >= 0) ::close(fd);
      u.expect(::mkdir(m.P("rootdir/y").c_str(), 0755) != 0 && errno == EACCES, "nobody mkdir in rootdir: " + what(-1));
      // What it may do to its own file.
      u.expect(::chmod(m.P("nf").c_str(), 0600) == 0, "nobody chmods nf: " + what(-1));
      struct stat st {};
      u.expect(::stat(m.P("nf").c_str(), &st) == 0 && st.st_uid == nobody && st.st_gid == nogroup && (st.st_mode & 07777) == 0600,
               "stat nf through the mount as nobody: uid " + std::to_string(st.st_uid) + " gid " + std::to_string(st.st_gid));
    });
    as_user(r, 1000, 1000, [&](report& u) {
      int fd = ::open(m.P("u1000").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644);
      u.expect(fd >= 0, "uid 1000 creates u1000: " + what(fd));
      if (fd >= 0) ::close(fd);
      u.expect(::mkdir(m.P("d1000").c_str(), 0755) == 0, "uid 1000 mkdir d1000: " + what(-1));
      // Another user's directory (nobody's nd, 0750): no way in.
      u.expect(::open(m.P("nd/inner").c_str(), O_RDONLY) < 0 && errno == EACCES, "uid 1000 opens nd/inner: " + what(-1));
    });
    // root chowns through the mount: the backing file follows.
    r.expect(::chown(m.P("u1000").c_str(), 1234, 5678) == 0, "root chowns u1000: " + what(-1));
  }));
  // The backing objects, as the kernel sees them there.
  auto owner = [&](const std::string& name) {
    struct stat st {};
    if (::lstat(src.path(name).c_str(), &st) != 0) return "ERR " + errname(errno);
    std::ostringstream o;
    o << st.st_uid << ":" << st.st_gid << " " << std::oct << (st.st_mode & 0177777);
    return o.str();
  };
  CHECK(owner("nf") == "65534:65534 100600");
  CHECK(owner("nf.renamed") == "65534:65534 100600");
  CHECK(owner("nd") == "65534:65534 40750");
  CHECK(owner("nd/inner") == "65534:65534 100600");
  CHECK(owner("nl") == "65534:65534 120777");
  CHECK(owner("np") == "65534:65534 10600");
  CHECK(owner("u1000") == "1234:5678 100644");
  CHECK(owner("d1000") == "1000:1000 40755");
  CHECK(owner("rootfile") == "0:0 100644");
  CHECK(read_file(src.path("rootfile")) == "secret-root");
  CHECK(read_file(src.path("nf")) == "by nobody");
  struct stat st {};
  CHECK(::lstat(src.path("rootdir/x").c_str(), &st) != 0);
  CHECK(::lstat(src.path("rootdir/y").c_str(), &st) != 0);
  m.stop();
}

// =============================================================================================
// No escape from SOURCE.

TEST_CASE("passthrough: symlinks and '..' resolve in the client's namespace; rename and link across file systems give EXDEV",
          "[mount][passthrough][escape]") {
  TRANSPORT();
  temp_dir src("src"), outside("outside");
  REQUIRE(::symlink("/etc", src.path("etc-link").c_str()) == 0);
  REQUIRE(write_file(src.path("a"), "a") == 0);
  REQUIRE(write_file(outside.path("y"), "y") == 0);
  pt_mount m(src.dir(), transport);
  START_PT(m);
  CHECK_CLIENT(run_client(m.devs, 30, [&](report& r) {
    char buf[256];
    ssize_t n = ::readlink(m.P("etc-link").c_str(), buf, sizeof buf);
    r.expect(n == 4 && std::string(buf, 4) == "/etc", "readlink etc-link: " + what(n));
    struct stat l {};
    struct stat t {};
    struct stat e {};
    r.expect(::lstat(m.P("etc-link").c_str(), &l) == 0 && S_ISLNK(l.st_mode), "lstat etc-link: a symlink");
    // Following it is the client's business: it lands on the real /etc.
    r.expect(::stat(m.P("etc-link").c_str(), &t) == 0 && ::stat("/etc", &e) == 0 && t.st_dev == e.st_dev && t.st_ino == e.st_ino,
             "stat etc-link is /etc");
    // '..' of the mount's root is the mount point's parent.
    struct stat up {};
    struct stat parent {};
    const std::string mp = m.fs.dir();
    r.expect(::stat((mp + "/..").c_str(), &up) == 0 && ::stat(mp.substr(0, mp.rfind('/')).c_str(), &parent) == 0 &&
                 up.st_dev == parent.st_dev && up.st_ino == parent.st_ino,
             "mount/.. is the mount point's parent");
    struct stat root {};
    r.expect(::stat((mp + "/../" + mp.substr(mp.rfind('/') + 1) + "/a").c_str(), &root) == 0, "mount/../<mount>/a");
    // A symlink made through the mount to an outside directory: mkdir through it is the client
    // following a link, as it would do in the backing directory itself.
    r.expect(::symlink(outside.dir().c_str(), m.P("s").c_str()) == 0, "symlink s -> outside: " + what(-1));
    r.expect(::mkdir(m.P("s/x").c_str(), 0755) == 0, "mkdir s/x: " + what(-1));
    r.expect(::mkdir(src.path("s/x2").c_str(), 0755) == 0, "mkdir backing s/x2: " + what(-1));
    struct stat sx {};
    r.expect(::stat(outside.path("x").c_str(), &sx) == 0 && ::stat(outside.path("x2").c_str(), &sx) == 0, "outside/x and outside/x2 exist");
    r.expect(::lstat(src.path("s").c_str(), &sx) == 0 && S_ISLNK(sx.st_mode), "the backing s is a symlink");
    // Across file systems.
    r.expect(::rename(m.P("a").c_str(), outside.path("a").c_str()) != 0 && errno == EXDEV, "rename mount -> outside: " + what(-1));
    r.expect(::link(m.P("a").c_str(), outside.path("a").c_str()) != 0 && errno == EXDEV, "link mount -> outside: " + what(-1));
    r.expect(::rename(outside.path("y").c_str(), m.P("y").c_str()) != 0 && errno == EXDEV, "rename outside -> mount: " + what(-1));
    r.expect(::link(outside.path("y").c_str(), m.P("y").c_str()) != 0 && errno == EXDEV, "link outside -> mount: " + what(-1));
  }));
  struct stat st {};
  CHECK(::lstat(outside.path("a").c_str(), &st) != 0);
  CHECK(::lstat(src.path("y").c_str(), &st) != 0);
  CHECK(read_file(src.path("a")) == "a");
  m.stop();
}

TEST_CASE("passthrough: a directory replaced by a symlink to the outside while the mount holds it: nothing outside is touched",
          "[mount][passthrough][escape]") {
  TRANSPORT();
  temp_dir src("src"), outside("outside");
  // The same names inside (src/d) and outside, with different contents; `secret` only outside.
  auto fill = [](const std::string& dir, const std::string& tag) {
    for (const char* n : {"f", "g", "h", "k", "t", "victim"}) REQUIRE(write_file(dir + "/" + n, tag + "-" + n) == 0);
    REQUIRE(::mkdir((dir + "/sub").c_str(), 0755) == 0);
    REQUIRE(::setxattr((dir + "/k").c_str(), "user.keep", tag.data(), tag.size(), 0) == 0);
  };
  REQUIRE(::mkdir(src.path("d").c_str(), 0755) == 0);
  fill(src.path("d"), "inside");
  fill(outside.dir(), "outside");
  REQUIRE(write_file(outside.path("secret"), "outside-secret") == 0);
  REQUIRE(write_file(src.path("e"), "inside-e") == 0);  // a file, replaced by a symlink to outside/f
  REQUIRE(write_file(src.path("r1"), "r1") == 0);       // renamed into the held directory
  REQUIRE(write_file(src.path("r2"), "r2") == 0);       // linked into it
  const std::string before = snapshot(outside.dir());

  pt_mount m(src.dir(), transport);
  START_PT(m);
  CHECK_CLIENT(run_client(m.devs, 60, [&](report& r) {
    // The client holds the directory (and a file in it, and src/e) through the mount...
    int dfd = ::open(m.P("d").c_str(), O_RDONLY | O_DIRECTORY);
    if (!r.expect(dfd >= 0, "open mount/d: " + what(dfd))) return;
    struct stat st {};
    r.expect(::fstatat(dfd, "f", &st, 0) == 0, "fstatat d/f before the swap: " + what(-1));
    int hfd = ::open(m.P("d/h").c_str(), O_PATH);
    r.expect(hfd >= 0, "O_PATH open mount/d/h: " + what(hfd));
    int efd = ::open(m.P("e").c_str(), O_PATH);
    r.expect(efd >= 0, "O_PATH open mount/e: " + what(efd));
    // ... while in the backing directory d becomes a symlink to the outside (and e one to outside/f).
    r.expect(::rename(src.path("d").c_str(), src.path("d.moved").c_str()) == 0, "move the backing d away: " + what(-1));
    r.expect(::symlink(outside.dir().c_str(), src.path("d").c_str()) == 0, "backing d -> outside: " + what(-1));
    r.expect(::rename(src.path("e").c_str(), src.path("e.moved").c_str()) == 0, "move the backing e away: " + what(-1));
    r.expect(::symlink(outside.path("f").c_str(), src.path("e").c_str()) == 0, "backing e -> outside/f: " + what(-1));

    // Operations on names in the held directory: each may act on the original directory (now
    // d.moved) or fail with ENOENT or ESTALE; nothing may reach the outside.
    auto acceptable = [&](const std::string& label, long v) {
      const int e = errno;
      r.note("note: " + label + ": " + what(v));
      errno = e;
      r.expect(v >= 0 || e == ENOENT || e == ESTALE, label + ": " + what(v) + " (only success, ENOENT or ESTALE are acceptable)");
      return v >= 0;
    };
    const std::string dpath = "/proc/self/fd/" + std::to_string(dfd);
    errno = 0;
    r.expect(::fstatat(dfd, "secret", &st, AT_SYMLINK_NOFOLLOW) != 0 && (errno == ENOENT || errno == ESTALE),
             "fstatat d/secret (only outside): " + what(-1));
    int fd = ::openat(dfd, "secret", O_RDONLY);
    r.expect(fd < 0 && (errno == ENOENT || errno == ESTALE), "openat d/secret: " + what(fd));
    if (fd >= 0) ::close(fd);
    fd = ::openat(dfd, "g", O_RDONLY);
    if (acceptable("openat d/g", fd)) {
      char buf[64];
      ssize_t n = ::read(fd, buf, sizeof buf);
      const std::string got = n < 0 ? what(n) : std::string(buf, static_cast<std::size_t>(n));
      r.expect(got == "inside-g" || (n < 0 && (errno == ENOENT || errno == ESTALE)), "read d/g: " + got);
      ::close(fd);
    }
    fd = ::openat(dfd, ".", O_RDONLY | O_DIRECTORY);
    if (acceptable("openat d/.", fd)) {
      ::close(fd);
      std::set<std::string> names;
      int e = names_in(dpath, names);
      r.note("note: listing of d: " + (e ? errname(e) : join(names)));
      r.expect(e == ENOENT || e == ESTALE || (e == 0 && names.count("secret") == 0), "the listing of d is the inside one: " + join(names));
    }
    fd = ::openat(dfd, "created", O_CREAT | O_EXCL | O_WRONLY, 0644);
    if (acceptable("create d/created", fd)) {
      r.expect(::write(fd, "new", 3) == 3, "write d/created");
      ::close(fd);
    }
    acceptable("unlink d/victim", ::unlinkat(dfd, "victim", 0));
    acceptable("rename d/f -> d/f2", ::renameat(dfd, "f", dfd, "f2"));
    fd = ::openat(dfd, "t", O_WRONLY | O_TRUNC);
    if (acceptable("open d/t O_TRUNC", fd)) {
      acceptable("write d/t", ::write(fd, "new-t", 5));
      ::close(fd);
    }
    acceptable("chmod d/h", ::fchmodat(dfd, "h", 0600, 0));
    acceptable("chown d/h", ::fchownat(dfd, "h", 1000, 1000, 0));
    const timespec times[2] = {{1, 0}, {1, 0}};
    acceptable("utimensat d/h", ::utimensat(dfd, "h", times, 0));
    acceptable("setxattr d/k", ::setxattr((dpath + "/k").c_str(), "user.new", "x", 1, 0));
    acceptable("removexattr d/k", ::removexattr((dpath + "/k").c_str(), "user.keep"));
    acceptable("truncate d/g", ::truncate((dpath + "/g").c_str(), 1));
    acceptable("mkdir d/newdir", ::mkdirat(dfd, "newdir", 0755));
    acceptable("rmdir d/sub", ::unlinkat(dfd, "sub", AT_REMOVEDIR));
    acceptable("symlink d/newlink", ::symlinkat("x", dfd, "newlink"));
    acceptable("mkfifo d/newfifo", ::mknodat(dfd, "newfifo", S_IFIFO | 0644, 0));
    acceptable("link d/g -> d/g_link", ::linkat(dfd, "g", dfd, "g_link", 0));
    acceptable("rename r1 -> d/from_root", ::renameat(AT_FDCWD, m.P("r1").c_str(), dfd, "from_root"));
    acceptable("link r2 -> d/linked_from_root", ::linkat(AT_FDCWD, m.P("r2").c_str(), dfd, "linked_from_root", 0));
    acceptable("rename d/g_link -> back_in_root", ::renameat(dfd, "g_link", AT_FDCWD, m.P("back_in_root").c_str()));
    // The held file in d, and the held e (now a symlink to outside/f in the backing directory).
    for (auto [label, held] : {std::pair<std::string, int>{"h", hfd}, {"e", efd}}) {
      const std::string p = "/proc/self/fd/" + std::to_string(held);
      acceptable("chmod held " + label, ::chmod(p.c_str(), 0640));
      acceptable("truncate held " + label, ::truncate(p.c_str(), 2));
      acceptable("setxattr held " + label, ::setxattr(p.c_str(), "user.held", "x", 1, 0));
      fd = ::open(p.c_str(), O_RDWR);
      if (acceptable("reopen held " + label + " O_RDWR", fd)) {
        char buf[64];
        ssize_t n = ::pread(fd, buf, sizeof buf, 0);
        const std::string got = n < 0 ? what(n) : std::string(buf, static_cast<std::size_t>(n));
        // Truncated to "in" when that truncate succeeded; in any case the original file's bytes.
        const std::string original = "inside-" + label;
        r.expect((n >= 2 && original.rfind(got, 0) == 0) || (n < 0 && (errno == ENOENT || errno == ESTALE)),
                 "read held " + label + ": " + got);
        acceptable("write held " + label, ::pwrite(fd, "W", 1, 0));
        ::close(fd);
      }
    }
    ::close(hfd);
    ::close(efd);
    ::close(dfd);
    // What succeeded acted on the original directory, now d.moved in the backing directory.
    auto in_moved = [&](const std::string& n) { return src.path("d.moved/" + n); };
    auto exists = [](const std::string& p) {
      struct stat s {};
      return ::lstat(p.c_str(), &s) == 0;
    };
    std::string c;
    if (exists(in_moved("created"))) r.expect(slurp(in_moved("created"), c) == 0 && c == "new", "d.moved/created: " + c);
    if (exists(in_moved("f2"))) r.expect(!exists(in_moved("f")), "d.moved has both f and f2");
    if (exists(in_moved("t")) && slurp(in_moved("t"), c) == 0) r.expect(c == "new-t" || c == "inside-t", "d.moved/t: " + c);
    r.note("note: d.moved now: created=" + std::to_string(exists(in_moved("created"))) +
           " victim=" + std::to_string(exists(in_moved("victim"))) + " f2=" + std::to_string(exists(in_moved("f2"))) +
           " newdir=" + std::to_string(exists(in_moved("newdir"))) + " sub=" + std::to_string(exists(in_moved("sub"))) +
           " g_link=" + std::to_string(exists(in_moved("g_link"))) + " from_root=" + std::to_string(exists(in_moved("from_root"))) +
           " back_in_root=" + std::to_string(exists(src.path("back_in_root"))));
    if (exists(in_moved("from_root"))) r.expect(!exists(src.path("r1")), "r1 both renamed and still there");
    r.expect(!exists(outside.path("created")) && !exists(outside.path("newdir")) && !exists(outside.path("f2")) &&
                 exists(outside.path("victim")) && exists(outside.path("sub")),
             "the outside directory is untouched (names)");
  }));
  const std::string after = snapshot(outside.dir());
  CHECK(after == before);
  INFO("d.moved: " << snapshot(src.path("d.moved")));
  m.stop();
}

TEST_CASE("passthrough: a SOURCE given as a symlink is resolved once; the mount keeps serving that directory",
          "[mount][passthrough][escape]") {
  TRANSPORT();
  temp_dir a("srcA"), b("srcB"), links("links");
  REQUIRE(write_file(a.path("in_a"), "a") == 0);
  REQUIRE(write_file(b.path("in_b"), "b") == 0);
  const std::string link = links.path("source");
  REQUIRE(::symlink(a.dir().c_str(), link.c_str()) == 0);
  pt_mount m(link, transport);
  START_PT(m);
  CHECK_CLIENT(run_client(m.devs, 30, [&](report& r) {
    std::set<std::string> names;
    int e = names_in(m.fs.dir(), names);
    r.expect(e == 0 && names == std::set<std::string>{"in_a"}, "listing before: " + (e ? errname(e) : join(names)));
    // The link now points to B (replaced atomically).
    r.expect(::symlink(b.dir().c_str(), links.path("tmp").c_str()) == 0 && ::rename(links.path("tmp").c_str(), link.c_str()) == 0,
             "repoint the link: " + what(-1));
    int fd = ::open(m.P("new").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644);
    r.expect(fd >= 0, "create new: " + what(fd));
    if (fd >= 0) ::close(fd);
    r.expect(::mkdir(m.P("newdir").c_str(), 0755) == 0, "mkdir newdir: " + what(-1));
    e = names_in(m.fs.dir(), names);
    r.expect(e == 0 && names == std::set<std::string>{"in_a", "new", "newdir"}, "listing after: " + (e ? errname(e) : join(names)));
    std::string c;
    e = slurp(m.P("in_a"), c);
    r.expect(e == 0 && c == "a", "in_a through the mount");
    struct stat st {};
    r.expect(::stat(m.P("in_b").c_str(), &st) != 0 && errno == ENOENT, "in_b through the mount: " + what(-1));
  }));
  struct stat st {};
  CHECK(::stat(a.path("new").c_str(), &st) == 0);
  CHECK(::stat(a.path("newdir").c_str(), &st) == 0);
  CHECK(::lstat(b.path("new").c_str(), &st) != 0);
  CHECK(::lstat(b.path("newdir").c_str(), &st) != 0);
  m.stop();
}

// =============================================================================================
// The command line.

TEST_CASE("passthrough: bad command lines give one line, exit 2 (1 for a bad SOURCE), and mount nothing", "[mount][passthrough][cli]") {
  REQUIRE(::geteuid() == 0);
  temp_dir src("src"), mnt("mnt");
  REQUIRE(write_file(src.path("file"), "x") == 0);
  auto run = [&](const std::string& args, std::string& out) {
    const std::string log = "/tmp/corofuse-pt-cli-" + std::to_string(::getpid()) + ".log";
    int rc = std::system(("timeout -k 5 20 " + pt_bin + " " + args + " > " + log + " 2>&1").c_str());
    out = read_file(log);
    ::unlink(log.c_str());
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  };
  std::string out;
  CHECK(run("--help", out) == 0);
  CHECK(out.find("usage") != std::string::npos);
  CHECK(out.find("--passthrough") != std::string::npos);
  CHECK(out.find("--direct-io") != std::string::npos);
  CHECK(out.find("--backing SPEED") != std::string::npos);
  CHECK_FALSE(corofuse::testing::is_mounted(mnt.dir()));

  const std::string S = src.dir(), M = mnt.dir();
  struct bad {
    std::string args;
    std::set<int> codes;
  };
  const std::vector<bad> cases = {
      {"", {2}},
      {S, {2}},
      {S + " " + M + " --bogus", {2}},
      {S + " " + M + " -o no_default_permissions", {2}},
      {S + " " + M + " -o default_permissions,no_default_permissions", {2}},
      {S + " " + M + " -o frobnicate", {2}},
      {S + " " + M + " -o max_write=abc", {2}},
      {S + " " + M + " --transport carrier-pigeon", {2}},
      {S + " " + M + " --transport", {2}},
      {S + " " + M + " --depth 0", {2}},
      {S + " " + M + " --shutdown-grace x", {2}},
      {S + " " + M + " --backing", {2}},
      {S + " " + M + " --backing fast", {2}},
      {S + " " + M + " --backing=", {2}},
      {S + " " + M + " " + M, {2}},
      {"/nonexistent/source " + M, {1, 2}},
      {src.path("file") + " " + M, {1, 2}},
  };
  for (const auto& c : cases) {
    INFO("passthrough " << c.args);
    int rc = run(c.args, out);
    INFO("output: " << out);
    CHECK(c.codes.count(rc) == 1);
    CHECK(std::count(out.begin(), out.end(), '\n') == 1);
    CHECK_FALSE(corofuse::testing::is_mounted(M));
  }
  // Whatever happened, nothing stays mounted on the mount point.
  if (corofuse::testing::is_mounted(M)) {
    dev_t dev = corofuse::session::mounted_device(M);
    ::umount2(M.c_str(), MNT_DETACH);
    corofuse::session::abort_connection(dev);
  }
}
