// One suite for the example file systems: the one under test (memfs, or passthrough over a
// directory) mounted on the host kernel and compared with the kernel's own tmpfs. The same source
// builds three tests: memfs_test, memtree_test (memfs's behaviour on the node layer,
// FS_SUITE_MEMTREE defined) and passthrough_suite_test (FS_SUITE_PASSTHROUGH defined).
//
// Every test runs over both transports (the io_uring ring and classic /dev/fuse). Each mounts a
// fresh tmpfs as the reference next to a fresh mount of the file system under test and runs the
// same scenario on both, each in a client child (a broken server fails the test instead of hanging
// it). A scenario records every system call's outcome (its value or errno's name) and what it read
// back; the parent compares the two records line by line, so a failure names the operation and
// shows tmpfs's answer next to the file system's. Lines a scenario marks with `want` are the test's
// own expectations: tmpfs must meet them too (or the test is wrong). Lines starting with '~' are
// informative and not compared.
//
// passthrough mirrors a second fresh tmpfs (the backing directory, mounted with the reference's
// options: where memfs gets --size, the backing tmpfs gets size=). After each scenario, the tools
// test and the random test, the tree seen through the mount must be the backing directory's
// (names, types, modes, owners, link counts, sizes, contents, symlink targets, xattrs).
//
// At the end of each test the server gets SIGTERM: it must exit 0 and leave nothing mounted; on
// the ring its log must say it served there. The random model-based test prints its seed
// (override it with FS_SUITE_SEED, or its old name MEMFS_TEST_SEED). FS_SUITE_SERVER_ARGS adds
// server options to every mount (e.g. passthrough's --passthrough or --direct-io).
#include <catch2/catch.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/falloc.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "tests/mount/server_harness.hpp"

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

using corofuse::testing::counter_line;
using corofuse::testing::read_file;
using corofuse::testing::requests;
using corofuse::testing::runfile;
using corofuse::testing::server;
using corofuse::testing::tail;
using corofuse::testing::uring_enabled;

namespace {

#ifdef FS_SUITE_PASSTHROUGH
#define FS_NAME "passthrough"
constexpr bool passthrough = true;
const std::string fs_bin = runfile("examples/passthrough/passthrough");
#elif defined(FS_SUITE_MEMTREE)
#define FS_NAME "memtree"
constexpr bool passthrough = false;
const std::string fs_bin = runfile("examples/memtree/memtree");
#else
#define FS_NAME "memfs"
constexpr bool passthrough = false;
const std::string fs_bin = runfile("examples/memfs/memfs");
#endif
const std::string fs_name = FS_NAME;
// How the tests that limit the space say so: memfs takes --size; passthrough reports and enforces
// its backing directory's, a tmpfs mounted with size=.
#ifdef FS_SUITE_PASSTHROUGH
#define STATFS_LIMIT "of a 64 MiB backing tmpfs"
#define SIZE_LIMIT "an 8 MiB backing tmpfs (its ENOSPC reaches the client unchanged)"
#else
#define STATFS_LIMIT "with --size"
#define SIZE_LIMIT "--size 8 MiB"
#endif

constexpr off_t KiB = 1024;
constexpr off_t MiB = 1024 * KiB;
constexpr off_t GiB = 1024 * MiB;
constexpr uid_t nobody = 65534;
constexpr gid_t nogroup = 65534;

// ---------------------------------------------------------------------------------------------
// Formatting what a scenario saw.

std::string errname(int e) {
  const char* n = ::strerrorname_np(e);
  return n ? n : "errno" + std::to_string(e);
}

std::uint64_t fnv(const std::string& s) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

bool all_zero(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c == 0; });
}

// Short contents verbatim (escaped), long ones as length and hash.
std::string show(const std::string& s) {
  if (s.size() > 64) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "len=%zu fnv=%016llx%s", s.size(), static_cast<unsigned long long>(fnv(s)),
                  all_zero(s) ? " (zeros)" : "");
    return buf;
  }
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c >= 32 && c < 127) {
      out += static_cast<char>(c);
    } else {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", c);
      out += b;
    }
  }
  return out + "\"";
}

std::string oct(unsigned v) {
  char b[16];
  std::snprintf(b, sizeof b, "%04o", v);
  return b;
}

std::string err_str(int e) { return "ERR " + errname(e); }

// What two file systems must agree on in a stat: not inode numbers, times, blocks or a directory's size.
std::string describe(const struct stat& st) {
  const char* t = S_ISREG(st.st_mode)    ? "reg"
                  : S_ISDIR(st.st_mode)  ? "dir"
                  : S_ISLNK(st.st_mode)  ? "lnk"
                  : S_ISFIFO(st.st_mode) ? "fifo"
                  : S_ISCHR(st.st_mode)  ? "chr"
                  : S_ISBLK(st.st_mode)  ? "blk"
                  : S_ISSOCK(st.st_mode) ? "sock"
                                         : "?";
  std::ostringstream o;
  o << t << " mode=" << oct(st.st_mode & 07777) << " nlink=" << st.st_nlink << " uid=" << st.st_uid << " gid=" << st.st_gid;
  if (!S_ISDIR(st.st_mode)) o << " size=" << st.st_size;
  if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) o << " rdev=" << major(st.st_rdev) << ":" << minor(st.st_rdev);
  return o.str();
}

std::string stat_of(const std::string& p) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0) return err_str(errno);
  return describe(st);
}
std::string lstat_of(const std::string& p) {
  struct stat st {};
  if (::lstat(p.c_str(), &st) != 0) return err_str(errno);
  return describe(st);
}
std::string fstat_of(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return err_str(errno);
  return describe(st);
}

// The whole content of a file; 0 or errno.
int slurp(const std::string& path, std::string& out) {
  out.clear();
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      int e = errno;
      ::close(fd);
      return e;
    }
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return 0;
}
std::string content(const std::string& path) {
  std::string s;
  int e = slurp(path, s);
  return e ? err_str(e) : show(s);
}
// pread of up to n bytes at off, raw; -errno on failure in `err`.
std::string pread_raw(int fd, std::size_t n, off_t off, int& err) {
  std::string s(n, '\0');
  ssize_t got = ::pread(fd, s.data(), n, off);
  err = got < 0 ? errno : 0;
  s.resize(got < 0 ? 0 : static_cast<std::size_t>(got));
  return s;
}
std::string pread_str(int fd, std::size_t n, off_t off) {
  int e = 0;
  std::string s = pread_raw(fd, n, off, e);
  return e ? err_str(e) : show(s);
}
std::string readlink_of(const std::string& p) {
  char buf[8192];
  ssize_t n = ::readlink(p.c_str(), buf, sizeof buf);
  if (n < 0) return err_str(errno);
  return show(std::string(buf, static_cast<std::size_t>(n)));
}

char type_letter(unsigned char t) {
  switch (t) {
    case DT_REG: return 'f';
    case DT_DIR: return 'd';
    case DT_LNK: return 'l';
    case DT_FIFO: return 'p';
    case DT_CHR: return 'c';
    case DT_BLK: return 'b';
    case DT_SOCK: return 's';
    default: return '?';
  }
}

struct dent {
  std::string name;
  ino_t ino;
  unsigned char type;
};
int read_dir(const std::string& path, std::vector<dent>& out) {
  out.clear();
  DIR* d = ::opendir(path.c_str());
  if (!d) return errno;
  errno = 0;
  while (dirent* e = ::readdir(d)) out.push_back({e->d_name, e->d_ino, e->d_type});
  int e = errno;
  ::closedir(d);
  return e;
}
// The sorted listing with each entry's type: "., .., a:f, sub:d".
std::string listing(const std::string& path) {
  std::vector<dent> v;
  if (int e = read_dir(path, v)) return err_str(e);
  std::vector<std::string> names;
  for (auto& d : v) names.push_back(d.name + ":" + type_letter(d.type));
  std::sort(names.begin(), names.end());
  std::string out;
  for (auto& n : names) out += (out.empty() ? "" : " ") + n;
  return out;
}
// Whether "." and ".." of a (non-root) directory carry the inode numbers stat reports.
std::string dot_inodes(const std::string& dir) {
  std::vector<dent> v;
  if (int e = read_dir(dir, v)) return err_str(e);
  struct stat self {};
  struct stat parent {};
  if (::stat(dir.c_str(), &self) != 0 || ::stat((dir + "/..").c_str(), &parent) != 0) return "stat failed";
  std::string out;
  for (auto& d : v) {
    if (d.name == ".") out += std::string(" .=") + (d.ino == self.st_ino ? "ok" : "WRONG");
    if (d.name == "..") out += std::string(" ..=") + (d.ino == parent.st_ino ? "ok" : "WRONG");
  }
  return out;
}

// The xattr names of a file, sorted; false (with errno set) when listing fails.
bool sorted_xattr_names(const std::string& p, std::vector<std::string>& names) {
  std::vector<char> buf(1 << 16);
  ssize_t n = ::llistxattr(p.c_str(), buf.data(), buf.size());
  if (n < 0) return false;
  names.clear();
  for (ssize_t i = 0; i < n;) {
    std::string name(buf.data() + i);
    names.push_back(name);
    i += static_cast<ssize_t>(name.size()) + 1;
  }
  std::sort(names.begin(), names.end());
  return true;
}

std::string xattr_names(const std::string& p) {
  std::vector<std::string> names;
  if (!sorted_xattr_names(p, names)) return err_str(errno);
  std::string out = "[";
  for (auto& s : names) out += (out.size() > 1 ? " " : "") + s;
  return out + "]";
}
// Names and values of the xattrs of a file, sorted.
std::string xattrs_of(const std::string& p) {
  std::vector<std::string> names;
  if (!sorted_xattr_names(p, names)) return err_str(errno);
  std::string out;
  for (auto& name : names) {
    std::vector<char> v(1 << 16);
    ssize_t m = ::lgetxattr(p.c_str(), name.c_str(), v.data(), v.size());
    out += name + "=" + (m < 0 ? err_str(errno) : show(std::string(v.data(), static_cast<std::size_t>(m)))) + " ";
  }
  return out;
}

int close_now(int fd) {
  if (fd < 0) return -1;
  ::close(fd);
  return 0;
}

timespec now_ts() {
  timespec t{};
  ::clock_gettime(CLOCK_REALTIME, &t);
  return t;
}
bool ts_less(const timespec& a, const timespec& b) { return a.tv_sec < b.tv_sec || (a.tv_sec == b.tv_sec && a.tv_nsec < b.tv_nsec); }
bool ts_equal(const timespec& a, const timespec& b) { return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec; }
double ts_sec(const timespec& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) / 1e9; }
void sleep_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

// Free bytes of the file system under `root`, once `pred` holds for them or after 3 s: the kernel
// sends RELEASE and FORGET after close and unlink have returned, so space comes back a little later.
std::uint64_t free_bytes_once(const std::string& root, const std::function<bool(std::uint64_t)>& pred) {
  std::uint64_t free = 0;
  for (int i = 0; i < 150; ++i) {
    struct statvfs v {};
    if (::statvfs(root.c_str(), &v) != 0) return 0;
    free = v.f_bfree * v.f_frsize;
    if (pred(free)) break;
    sleep_ms(20);
  }
  return free;
}

// ---------------------------------------------------------------------------------------------
// A scenario's record: one line per observation, written to a memfd the parent reads afterwards
// (the child, and any grandchild that changed its user, append to the same open file).

class rec {
 public:
  explicit rec(int fd) : fd_(fd) {}
  // A system call's outcome: "ok" (or its value, for val) or "ERR <errno name>".
  template <class F>
  long ok(const std::string& label, F&& fn) {
    return run(label, fn, false);
  }
  template <class F>
  long val(const std::string& label, F&& fn) {
    return run(label, fn, true);
  }
  void note(const std::string& label, const std::string& value) { put(label + ": " + value); }
  // Shown with a failure, never compared (values that may legitimately differ).
  void info(const std::string& label, const std::string& value) { put("~" + label + ": " + value); }
  // One of the test's own expectations: tmpfs must meet it as well.
  bool want(const std::string& label, bool cond) {
    put(label + ": " + (cond ? "yes" : "NO"));
    return cond;
  }
  void put(std::string line) {
    for (auto& c : line)
      if (c == '\n') c = ' ';
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

 private:
  template <class F>
  long run(const std::string& label, F& fn, bool value) {
    errno = 0;
    long v = static_cast<long>(fn());
    int e = errno;
    put(label + ": " + (v < 0 ? err_str(e) : value ? std::to_string(v) : std::string("ok")));
    errno = e;
    return v;
  }
  int fd_;
};

#define OK(label, ...) r.ok((label), [&] { return (__VA_ARGS__); })
#define VAL(label, ...) r.val((label), [&] { return (__VA_ARGS__); })

// Runs `fn` as another user (a grandchild with the given uid and gid, no supplementary groups).
void as_user(rec& r, uid_t uid, gid_t gid, const std::function<void()>& fn) {
  pid_t pid = ::fork();
  if (pid == 0) {
    ::alarm(30);
    if (::setgroups(0, nullptr) != 0 || ::setresgid(gid, gid, gid) != 0 || ::setresuid(uid, uid, uid) != 0) {
      r.put("drop privileges: failed");
      ::_exit(1);
    }
    try {
      fn();
    } catch (...) {
      ::_exit(98);
    }
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  r.note("as uid " + std::to_string(uid) + " ended",
         WIFEXITED(status) ? "exit " + std::to_string(WEXITSTATUS(status)) : "signal " + std::to_string(WTERMSIG(status)));
}

// Like the harness's in_client, but a client stuck in a FUSE request the server never answers
// cannot hang the test: such a wait is uninterruptible once the server has read the request (the
// alarm, even SIGKILL, cannot end it), so after the deadline the FUSE connection `fuse_dev` is
// aborted, which ends the wait, and the child is killed. `hung` tells that this happened.
// Client deadlines are multiplied by FS_SUITE_TIME_SCALE (default 1): under software emulation
// (the Linux 7.3 VM) the same work takes 10-50 times longer.
int time_scale() {
  static const int scale = [] {
    const char* env = std::getenv("FS_SUITE_TIME_SCALE");
    int v = env ? std::atoi(env) : 1;
    return v >= 1 && v <= 100 ? v : 1;
  }();
  return scale;
}

int guarded_client(const std::function<int()>& fn, int seconds, dev_t fuse_dev, bool* hung = nullptr) {
  if (hung) *hung = false;
  seconds *= time_scale();
  pid_t pid = corofuse::testing::start_client(fn, seconds);
  if (pid < 0) return -1;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds + 3);
  int status = 0;
  for (;;) {
    pid_t w = ::waitpid(pid, &status, WNOHANG);
    if (w == pid || w < 0) break;
    if (std::chrono::steady_clock::now() > deadline) {
      if (hung) *hung = true;
      corofuse::session::abort_connection(fuse_dev);
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      break;
    }
    sleep_ms(20);
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// A shell command as a client (the harness's sh() with the guard): its exit status.
int guarded_sh(const std::string& cmd, int seconds, dev_t fuse_dev, bool* hung = nullptr) {
  return guarded_client([&] { return std::system(("timeout -k 5 " + std::to_string(seconds) + " sh -c '" + cmd + "'").c_str()) >> 8; },
                        seconds + 10, fuse_dev, hung);
}

using scenario = std::function<void(rec&, const std::string& root)>;

std::vector<std::string> read_lines(int fd) {
  std::string all;
  char buf[1 << 16];
  ::lseek(fd, 0, SEEK_SET);
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    all.append(buf, static_cast<std::size_t>(n));
  }
  std::vector<std::string> lines;
  std::size_t at = 0;
  while (at < all.size()) {
    std::size_t nl = all.find('\n', at);
    if (nl == std::string::npos) nl = all.size();
    lines.push_back(all.substr(at, nl - at));
    at = nl + 1;
  }
  return lines;
}

// Runs a scenario on `root` in a client child (umask 022); its record, ending in "end: ok" when it
// ran to its end.
std::vector<std::string> run_scenario(const std::string& root, const scenario& fn, int seconds, dev_t fuse_dev) {
  int fd = ::memfd_create("fs-suite-record", MFD_CLOEXEC);
  if (fd < 0) return {"memfd_create failed"};
  bool hung = false;
  int rc = guarded_client(
      [&] {
        ::umask(022);
        rec r(fd);
        try {
          // The roots' modes differ (tmpfs: 0755 as mounted); the scenarios start from the same.
          OK("chmod root 0755", ::chmod(root.c_str(), 0755));
          fn(r, root);
        } catch (const std::exception& e) {
          r.put(std::string("exception: ") + e.what());
          return 3;
        }
        r.put("end: ok");
        return 0;
      },
      seconds, fuse_dev, &hung);
  std::vector<std::string> lines = read_lines(fd);
  ::close(fd);
  if (rc != 0)
    lines.push_back("client ended with status " + std::to_string(rc) +
                    (hung                  ? " (hung in a FUSE request " + fs_name + " never answered: connection aborted)"
                     : rc == 128 + SIGALRM ? " (timed out)"
                                           : ""));
  return lines;
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// Compares the two records: tmpfs's must meet the test's expectations and end normally; the file
// system's must be the same, line by line.
void check_records(const std::vector<std::string>& want_all, const std::vector<std::string>& got_all) {
  std::vector<std::string> want, got;
  std::string notes;
  for (auto& l : want_all) {
    if (l.rfind("~", 0) == 0) notes += "tmpfs " + l.substr(1) + "\n";
    else want.push_back(l);
  }
  for (auto& l : got_all) {
    if (l.rfind("~", 0) == 0) notes += fs_name + " " + l.substr(1) + "\n";
    else got.push_back(l);
  }
  INFO("informative values (not compared):\n" << notes);
  for (auto& l : want)
    if (ends_with(l, ": NO")) FAIL_CHECK("tmpfs does not meet the test's own expectation (a test bug?): " << l);
  CHECK((!want.empty() && want.back() == "end: ok"));
  int shown = 0;
  for (std::size_t i = 0; i < std::max(want.size(), got.size()); ++i) {
    const std::string w = i < want.size() ? want[i] : "<nothing>";
    const std::string g = i < got.size() ? got[i] : "<nothing>";
    if (w == g) continue;
    INFO("record line " << i << ": " << fs_name << " (left) vs tmpfs (right)");
    CHECK(g == w);
    if (++shown == 25) {
      FAIL_CHECK("more differences not shown");
      break;
    }
  }
}


// ---------------------------------------------------------------------------------------------
// Comparing trees: the random test compares tmpfs's with the file system's; for passthrough every
// test also compares the backing directory with the tree seen through the mount.

int sorted_names(const std::string& dir, std::vector<std::string>& out) {
  std::vector<dent> v;
  out.clear();
  if (int e = read_dir(dir, v)) return e;
  for (auto& d : v)
    if (d.name != "." && d.name != "..") out.push_back(d.name);
  std::sort(out.begin(), out.end());
  return 0;
}
std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (auto& x : v) s += (s.empty() ? "" : " ") + x;
  return s;
}

// Where two regular files of the same size `size` first differ ("" when they agree), read in 1 MiB
// pieces. `a` must be on a tmpfs (which reports its holes exactly). A file over 64 MiB (the sparse
// ones of the regular-files test, up to 8 GiB) is compared in full only where `a` has data; in
// `a`'s holes `b` is sampled (64 KiB at each hole's start and end and every 64 MiB), not read whole:
// reading 8 GiB of zeros through FUSE would take minutes.
std::string contents_diff(const std::string& a, const std::string& b, off_t size, const std::string& la, const std::string& lb) {
  int fa = ::open(a.c_str(), O_RDONLY | O_CLOEXEC);
  int ea = fa < 0 ? errno : 0;
  int fb = ::open(b.c_str(), O_RDONLY | O_CLOEXEC);
  int eb = fb < 0 ? errno : 0;
  std::string out;
  if (ea || eb) out = "open failed: " + la + " " + (ea ? errname(ea) : "ok") + ", " + lb + " " + (eb ? errname(eb) : "ok");
  // Compares [from, to) of both.
  auto range = [&](off_t from, off_t to) {
    std::string ba, bb;
    for (off_t at = from; at < to && out.empty();) {
      const std::size_t n = static_cast<std::size_t>(std::min<off_t>(MiB, to - at));
      int e1 = 0, e2 = 0;
      ba = pread_raw(fa, n, at, e1);
      bb = pread_raw(fb, n, at, e2);
      if (e1 || e2) {
        out = "read at " + std::to_string(at) + " failed: " + la + " " + (e1 ? errname(e1) : "ok") + ", " + lb + " " +
              (e2 ? errname(e2) : "ok");
      } else if (ba != bb) {
        std::size_t i = 0;
        while (i < ba.size() && i < bb.size() && ba[i] == bb[i]) ++i;
        out = "contents differ from byte " + std::to_string(at + static_cast<off_t>(i)) + " (" + la + " read " + std::to_string(ba.size()) +
              " bytes there, " + lb + " " + std::to_string(bb.size()) + ")";
      } else if (ba.size() < n) {
        out = "both read short at " + std::to_string(at) + " of " + std::to_string(size) + " bytes";
      }
      at += static_cast<off_t>(n);
    }
  };
  if (out.empty() && size <= 64 * MiB) {
    range(0, size);
  } else if (out.empty()) {
    for (off_t at = 0; at < size && out.empty();) {
      off_t data = ::lseek(fa, at, SEEK_DATA);
      if (data < 0) data = size;  // ENXIO: a hole up to the end
      // The hole [at, data): only samples of b, which must be zeros.
      for (off_t s = at; s < data && out.empty();) {
        const off_t n = std::min<off_t>(64 * KiB, data - s);
        int e = 0;
        std::string z = pread_raw(fb, static_cast<std::size_t>(n), s, e);
        if (e || z.size() != static_cast<std::size_t>(n) || !all_zero(z))
          out = "in " + la + "'s hole at " + std::to_string(s) + ", " + lb + " reads " + (e ? err_str(e) : show(z));
        const off_t last = data - std::min<off_t>(64 * KiB, data - at);
        s = s == last ? data : std::min(s + 64 * MiB, last);
      }
      if (data >= size || !out.empty()) break;
      off_t hole = ::lseek(fa, data, SEEK_HOLE);
      if (hole < 0) hole = size;
      range(data, hole);
      at = hole;
    }
  }
  if (fa >= 0) ::close(fa);
  if (fb >= 0) ::close(fb);
  return out;
}

// The first difference between two trees (names, types, modes, owners, link counts, sizes,
// contents, symlink targets, xattrs); empty when identical. `ta` is a tmpfs (see contents_diff).
std::string tree_diff(const std::string& ta, const std::string& tb, const std::string& la = "tmpfs", const std::string& lb = fs_name,
                      const std::string& rel = "") {
  std::vector<std::string> na, nb;
  int ea = sorted_names(ta + rel, na), eb = sorted_names(tb + rel, nb);
  if (ea || eb) return (rel.empty() ? "/" : rel) + ": listing failed: " + la + " " + errname(ea) + ", " + lb + " " + errname(eb);
  if (na != nb) return (rel.empty() ? "/" : rel) + ": entries differ: " + la + " [" + join(na) + "] " + lb + " [" + join(nb) + "]";
  for (auto& n : na) {
    const std::string r = rel + "/" + n;
    struct stat sa {};
    struct stat sb {};
    if (::lstat((ta + r).c_str(), &sa) != 0 || ::lstat((tb + r).c_str(), &sb) != 0) return r + ": lstat failed";
    if (describe(sa) != describe(sb)) return r + ": " + la + " " + describe(sa) + " | " + lb + " " + describe(sb);
    if (S_ISREG(sa.st_mode)) {
      std::string d = contents_diff(ta + r, tb + r, sa.st_size, la, lb);
      if (!d.empty()) return r + ": " + d;
    }
    if (S_ISLNK(sa.st_mode) && readlink_of(ta + r) != readlink_of(tb + r))
      return r + ": symlink targets: " + la + " " + readlink_of(ta + r) + " | " + lb + " " + readlink_of(tb + r);
    if (xattrs_of(ta + r) != xattrs_of(tb + r))
      return r + ": xattrs: " + la + " " + xattrs_of(ta + r) + " | " + lb + " " + xattrs_of(tb + r);
    if (S_ISDIR(sa.st_mode)) {
      std::string d = tree_diff(ta, tb, la, lb, r);
      if (!d.empty()) return d;
    }
  }
  return "";
}

// ---------------------------------------------------------------------------------------------
// The mounts.

// A tmpfs on a fresh temporary directory, mounted nosuid,nodev like the FUSE mount; always
// detached and removed.
class tmpfs_ref {
 public:
  explicit tmpfs_ref(const std::string& extra_opts = "") {
    char tmpl[] = "/tmp/fs-suite-tmpfs-XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    std::string opts = "mode=0755" + (extra_opts.empty() ? "" : "," + extra_opts);
    if (::mount("tmpfs", dir_.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, opts.c_str()) != 0) {
      int e = errno;
      ::rmdir(dir_.c_str());
      throw std::runtime_error("mounting a tmpfs failed: " + std::string(std::strerror(e)));
    }
  }
  ~tmpfs_ref() {
    ::umount2(dir_.c_str(), MNT_DETACH);
    ::rmdir(dir_.c_str());
  }
  tmpfs_ref(const tmpfs_ref&) = delete;
  tmpfs_ref& operator=(const tmpfs_ref&) = delete;
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
};

std::string size_opt(off_t size) { return size > 0 ? "size=" + std::to_string(size) : ""; }

// The file system under test next to its tmpfs reference. allow_other: some scenarios act as
// nobody. `size` (bytes; 0: none) limits the space: the reference tmpfs gets size=, memfs --size;
// passthrough has no such option, its backing tmpfs gets the reference's size= instead.
struct mounts {
  std::string transport;
  tmpfs_ref ref;
  // passthrough's SOURCE: a fresh tmpfs mounted like the reference. Declared before fs, so it is
  // detached only after the server has stopped (and is there before it starts).
  std::unique_ptr<tmpfs_ref> backing;
  std::vector<std::string> server_args;
  server fs;
  dev_t dev = 0;  // the FUSE connection, to abort if a client hangs
  explicit mounts(const std::string& t, off_t size = 0)
      : transport(t),
        ref(size_opt(size)),
        backing(passthrough ? std::make_unique<tmpfs_ref>(size_opt(size)) : nullptr),
        server_args(args(t, size)),
        fs(fs_bin, server_args, -1, -1, backing ? std::vector<std::string>{backing->dir()} : std::vector<std::string>{}) {}

  // "pool-copy" is the buffer-pool transport without zero-copy; the others are --transport values.
  static std::vector<std::string> args(const std::string& t, off_t size) {
    std::vector<std::string> a{"--stats", "-o", "allow_other", "--transport", t == "pool-copy" ? "pool" : t};
    if (t == "pool-copy") a.insert(a.end(), {"--zero-copy", "off"});
    if (size > 0 && !passthrough) a.insert(a.end(), {"--size", std::to_string(size)});
    // More server options for a whole run, e.g. --test_env=FS_SUITE_SERVER_ARGS=--passthrough.
    if (const char* more = std::getenv("FS_SUITE_SERVER_ARGS")) {
      std::istringstream in(more);
      for (std::string w; in >> w;) a.push_back(w);
    }
    return a;
  }

  // Stops the server with SIGTERM: it exits 0 and leaves nothing mounted; returns its log.
  std::string stop() {
    fs.signal(SIGTERM);
    bool ended = fs.wait_exit(30);
    std::string log = fs.log();
    INFO(fs_name << " log (tail):\n" << tail(log));
    CHECK(ended);
    if (ended) CHECK(fs.exit_status() == 0);
    CHECK_FALSE(fs.mounted());
    if (transport == "ring") CHECK(log.find("serving over FUSE-over-io_uring") != std::string::npos);
    if (transport == "pool" || transport == "pool-copy") {
      CHECK(log.find("serving over FUSE-over-io_uring with buffer pools") != std::string::npos);
      CHECK(log.find(" 0 queues pooled") == std::string::npos);
      // Zero-copy queues exactly when asked for (the suite runs as root: CAP_SYS_ADMIN).
      CHECK((log.find(" 0 zero-copy") == std::string::npos) == (transport == "pool"));
    }
    CHECK(log.find("counter ") != std::string::npos);
    return log;
  }
};

#define START_FS(m)                                                                                                       \
  do {                                                                                                                    \
    INFO(fs_name << " " << join((m).server_args) << " log:\n" << tail((m).fs.log()));                                     \
    INFO(((m).fs.exited() ? fs_name + " ended with status " + std::to_string((m).fs.exit_status()) : fs_name + " runs")); \
    REQUIRE((m).fs.mounted());                                                                                            \
    (m).dev = (m).fs.device();                                                                                            \
  } while (0)

// passthrough only: the tree seen through the mount must be the backing directory's, compared in a
// client (a hang in the mount fails the test instead of hanging it); the first difference is shown.
void check_backing(const mounts& m, const std::string& when) {
  if (!m.backing) return;
  int fd = ::memfd_create("fs-suite-backing-diff", MFD_CLOEXEC);
  REQUIRE(fd >= 0);
  bool hung = false;
  int rc = guarded_client(
      [&] {
        std::string d = tree_diff(m.backing->dir(), m.fs.dir(), "backing", fs_name);
        rec(fd).put(d.empty() ? "same" : d);
        return d.empty() ? 0 : 1;
      },
      120, m.dev, &hung);
  auto lines = read_lines(fd);
  ::close(fd);
  INFO("the backing directory vs the tree through the mount, " << when << ": " << (lines.empty() ? "<no report>" : lines[0])
                                                               << (hung ? " (hung: connection aborted)" : ""));
  CHECK(rc == 0);
  CHECK_FALSE(hung);
}

// The same scenario on the tmpfs reference and on the file system; the records must agree. For
// passthrough the backing directory must then hold what the mount shows.
void same_on_both(const mounts& m, const scenario& fn, int seconds = 30) {
  auto want = run_scenario(m.ref.dir(), fn, seconds, 0);
  auto got = run_scenario(m.fs.dir(), fn, seconds, m.dev);
  check_records(want, got);
  check_backing(m, "after the scenario");
}

// The transports each test runs over: ring and dev on the host; FS_SUITE_TRANSPORTS (comma-
// separated: ring, dev, pool, pool-copy) chooses others, e.g. pool and pool-copy on Linux 7.3.
std::vector<std::string> suite_transports() {
  std::vector<std::string> out;
  const char* env = std::getenv("FS_SUITE_TRANSPORTS");
  std::string list = env && *env ? env : "ring,dev";
  std::istringstream in(list);
  for (std::string t; std::getline(in, t, ',');)
    if (!t.empty()) out.push_back(t);
  return out;
}

#define TRANSPORT()                                                       \
  const std::string transport = GENERATE(from_range(suite_transports())); \
  INFO("transport: " << transport);                                       \
  REQUIRE(::geteuid() == 0);                                              \
  if (transport != "dev") REQUIRE(uring_enabled())

}  // namespace

// =============================================================================================
// 1. Regular files.

TEST_CASE(FS_NAME " vs tmpfs: regular files (O_EXCL, modes and umask, read/write, O_APPEND, O_TRUNC, sparse past 4 GiB, truncate)",
          "[mount][" FS_NAME "][files]") {
  TRANSPORT();
  mounts m(transport);
  START_FS(m);
  same_on_both(m, [](rec& r, const std::string& root) {
    auto P = [&](const std::string& n) { return root + "/" + n; };

    // Created once with O_EXCL; EEXIST the second time; the mode is the one passed less the umask.
    int fd = OK("open f O_CREAT|O_EXCL|O_RDWR 0666", ::open(P("f").c_str(), O_CREAT | O_EXCL | O_RDWR, 0666));
    r.note("stat f", stat_of(P("f")));
    OK("open f O_CREAT|O_EXCL again", ::open(P("f").c_str(), O_CREAT | O_EXCL | O_RDWR, 0666));
    OK("open f O_CREAT without O_EXCL (exists)", close_now(::open(P("f").c_str(), O_CREAT | O_RDWR, 0600)));
    r.note("stat f (mode unchanged)", stat_of(P("f")));
    VAL("write f", ::write(fd, "hello, world", 12));
    VAL("lseek f SEEK_CUR", ::lseek(fd, 0, SEEK_CUR));
    r.note("pread f 100@0", pread_str(fd, 100, 0));
    r.note("pread f 3@7", pread_str(fd, 3, 7));
    r.note("pread f at EOF", pread_str(fd, 10, 12));
    OK("close f", ::close(fd));
    r.note("content f", content(P("f")));
    r.note("stat f after write", stat_of(P("f")));

    for (mode_t mode : {0600, 0640, 0755, 0777, 04755, 02755, 01644, 0}) {
      const std::string n = "mode" + oct(mode);
      OK("create " + n, close_now(::open(P(n).c_str(), O_CREAT | O_EXCL | O_WRONLY, mode)));
      r.note("stat " + n, stat_of(P(n)));
    }
    for (mode_t mask : {0, 077, 0222, 0777}) {
      ::umask(mask);
      const std::string n = "umask" + oct(mask);
      OK("create " + n + " 0666", close_now(::open(P(n).c_str(), O_CREAT | O_EXCL | O_WRONLY, 0666)));
      r.note("stat " + n, stat_of(P(n)));
    }
    ::umask(022);

    // O_APPEND: every write lands at the end, even pwrite (Linux); two appenders interleave.
    fd = OK("open f O_WRONLY|O_APPEND", ::open(P("f").c_str(), O_WRONLY | O_APPEND));
    VAL("append ABC", ::write(fd, "ABC", 3));
    VAL("lseek SEEK_CUR after append", ::lseek(fd, 0, SEEK_CUR));
    VAL("pwrite Z at 0 with O_APPEND", ::pwrite(fd, "Z", 1, 0));
    int fd2 = OK("open f O_WRONLY|O_APPEND (second)", ::open(P("f").c_str(), O_WRONLY | O_APPEND));
    VAL("append 1", ::write(fd, "1", 1));
    VAL("append 2 (second fd)", ::write(fd2, "2", 1));
    VAL("append 3", ::write(fd, "3", 1));
    ::close(fd2);
    OK("close", ::close(fd));
    r.note("content f after appends", content(P("f")));

    // O_TRUNC empties the file, also with O_RDONLY (Linux).
    fd = OK("open f O_WRONLY|O_TRUNC", ::open(P("f").c_str(), O_WRONLY | O_TRUNC));
    r.note("fstat after O_TRUNC", fstat_of(fd));
    VAL("write new", ::write(fd, "new", 3));
    ::close(fd);
    r.note("content f after O_TRUNC", content(P("f")));
    OK("open f O_RDONLY|O_TRUNC", close_now(::open(P("f").c_str(), O_RDONLY | O_TRUNC)));
    r.note("stat f after O_RDONLY|O_TRUNC", stat_of(P("f")));
    OK("open O_TRUNC|O_CREAT of a new file", close_now(::open(P("g").c_str(), O_WRONLY | O_TRUNC | O_CREAT, 0644)));
    r.note("stat g", stat_of(P("g")));

    // Sparse: a byte at 1 MiB, then one past 4 GiB; the holes read as zeros.
    fd = OK("open sparse", ::open(P("sparse").c_str(), O_CREAT | O_EXCL | O_RDWR, 0644));
    VAL("pwrite A at 1 MiB", ::pwrite(fd, "A", 1, 1 * MiB));
    r.note("fstat sparse", fstat_of(fd));
    {
      int e = 0;
      r.want("the 1 MiB hole reads as zeros", all_zero(pread_raw(fd, 1 * MiB, 0, e)) && e == 0);
    }
    r.note("pread 8 bytes at 1 MiB-5", pread_str(fd, 8, 1 * MiB - 5));
    VAL("pwrite tail at 5 GiB", ::pwrite(fd, "tail", 4, 5 * GiB));
    r.note("fstat sparse after 5 GiB", fstat_of(fd));
    {
      int e = 0;
      std::string s = pread_raw(fd, 1 * MiB, 4 * GiB, e);
      r.want("pread 1 MiB at 4 GiB: full and zeros", e == 0 && s.size() == static_cast<std::size_t>(MiB) && all_zero(s));
      s = pread_raw(fd, 64 * KiB, 5 * GiB - 64 * KiB, e);
      r.want("pread 64 KiB just below 5 GiB: full and zeros", e == 0 && s.size() == 64 * KiB && all_zero(s));
      s = pread_raw(fd, 2 * MiB, 2 * GiB, e);
      r.want("pread 2 MiB at 2 GiB: full and zeros", e == 0 && s.size() == 2 * MiB && all_zero(s));
    }
    r.note("pread 16 at 5 GiB-4", pread_str(fd, 16, 5 * GiB - 4));
    {
      struct stat st {};
      ::fstat(fd, &st);
      r.info("sparse st_blocks", std::to_string(st.st_blocks));
      r.want("sparse file allocates little (st_blocks < 64 MiB)", st.st_blocks * 512 < 64 * MiB);
    }
    VAL("pwrite at 8 GiB - 1", ::pwrite(fd, "!", 1, 8 * GiB - 1));
    r.note("fstat sparse 8 GiB", fstat_of(fd));
    ::close(fd);

    // truncate and ftruncate, growing (zeros) and shrinking (what is cut is gone for good).
    fd = ::open(P("t").c_str(), O_CREAT | O_WRONLY, 0644);
    VAL("write t", ::write(fd, "0123456789", 10));
    ::close(fd);
    OK("truncate t 100000", ::truncate(P("t").c_str(), 100000));
    r.note("stat t", stat_of(P("t")));
    fd = ::open(P("t").c_str(), O_RDONLY);
    r.note("t 10@0", pread_str(fd, 10, 0));
    r.note("t 20@99990", pread_str(fd, 20, 99990));
    {
      int e = 0;
      std::string s = pread_raw(fd, 100000, 10, e);
      r.want("t grown part is zeros", e == 0 && s.size() == 99990 && all_zero(s));
    }
    ::close(fd);
    OK("truncate t 3", ::truncate(P("t").c_str(), 3));
    r.note("content t", content(P("t")));
    OK("truncate t 10", ::truncate(P("t").c_str(), 10));
    r.note("content t regrown", content(P("t")));
    fd = OK("open t O_RDWR", ::open(P("t").c_str(), O_RDWR));
    OK("ftruncate t 0", ::ftruncate(fd, 0));
    r.note("fstat t", fstat_of(fd));
    OK("ftruncate t 5000", ::ftruncate(fd, 5000));
    VAL("pwrite x at 4000", ::pwrite(fd, "x", 1, 4000));
    r.note("fstat t", fstat_of(fd));
    OK("ftruncate t 4001", ::ftruncate(fd, 4001));
    OK("ftruncate t 300000 (past a page)", ::ftruncate(fd, 300000));
    {
      int e = 0;
      std::string s = pread_raw(fd, 300000, 0, e);
      r.want("t: only the x at 4000 is nonzero",
             e == 0 && s.size() == 300000 && s[4000] == 'x' && all_zero(s.substr(0, 4000)) && all_zero(s.substr(4001)));
    }
    OK("ftruncate t -1", ::ftruncate(fd, -1));
    ::close(fd);
    fd = ::open(P("t").c_str(), O_RDONLY);
    OK("ftruncate on O_RDONLY fd", ::ftruncate(fd, 1));
    ::close(fd);
    OK("truncate t -1", ::truncate(P("t").c_str(), -1));
    OK("truncate missing", ::truncate(P("missing").c_str(), 1));
    OK("mkdir dir", ::mkdir(P("dir").c_str(), 0755));
    OK("truncate dir", ::truncate(P("dir").c_str(), 1));
    // A big regular write and read, through several requests.
    {
      std::string big(3 * MiB + 123, '\0');
      std::mt19937 g(7);
      for (auto& c : big) c = static_cast<char>(g());
      fd = ::open(P("big").c_str(), O_CREAT | O_RDWR, 0644);
      VAL("write 3 MiB", ::write(fd, big.data(), big.size()));
      int e = 0;
      r.want("read back 3 MiB", pread_raw(fd, big.size() + 10, 0, e) == big);
      ::close(fd);
    }
  });
  m.stop();
}

// =============================================================================================
// 2. Directories.

TEST_CASE(FS_NAME " vs tmpfs: directories (mkdir/rmdir, ENOTEMPTY, ENOTDIR, EISDIR, listings, nlink, setgid)",
          "[mount][" FS_NAME "][dirs]") {
  TRANSPORT();
  mounts m(transport);
  START_FS(m);
  same_on_both(m, [](rec& r, const std::string& root) {
    auto P = [&](const std::string& n) { return root + "/" + n; };
    OK("mkdir d 0777", ::mkdir(P("d").c_str(), 0777));
    r.note("stat d", stat_of(P("d")));
    OK("mkdir d again", ::mkdir(P("d").c_str(), 0755));
    OK("mkdir d/a", ::mkdir(P("d/a").c_str(), 0700));
    OK("mkdir d/b", ::mkdir(P("d/b").c_str(), 01777));
    r.note("stat d/a", stat_of(P("d/a")));
    r.note("stat d/b", stat_of(P("d/b")));
    r.note("stat d (nlink 2 + 2 subdirs)", stat_of(P("d")));
    r.note("stat root", stat_of(root));
    OK("create d/f1", close_now(::open(P("d/f1").c_str(), O_CREAT | O_WRONLY, 0644)));
    OK("create d/f2", close_now(::open(P("d/f2").c_str(), O_CREAT | O_WRONLY, 0644)));
    r.note("stat d (files do not count)", stat_of(P("d")));
    OK("mkdir d/a/deep", ::mkdir(P("d/a/deep").c_str(), 0755));
    r.note("stat d/a", stat_of(P("d/a")));
    r.note("stat d (grandchildren do not count)", stat_of(P("d")));

    OK("rmdir d (not empty)", ::rmdir(P("d").c_str()));
    OK("rmdir d/f1 (a file)", ::rmdir(P("d/f1").c_str()));
    OK("rmdir missing", ::rmdir(P("d/missing").c_str()));
    OK("rmdir d/a (not empty)", ::rmdir(P("d/a").c_str()));
    OK("rmdir d/.", ::rmdir(P("d/.").c_str()));
    OK("rmdir d/a/..", ::rmdir(P("d/a/..").c_str()));
    OK("open d/f1/x O_CREAT", ::open(P("d/f1/x").c_str(), O_CREAT | O_WRONLY, 0644));
    r.note("stat d/f1/x", stat_of(P("d/f1/x")));
    OK("mkdir d/f1/x", ::mkdir(P("d/f1/x").c_str(), 0755));
    OK("mkdir missing/x", ::mkdir(P("missing/x").c_str(), 0755));
    OK("open d O_WRONLY", ::open(P("d").c_str(), O_WRONLY));
    OK("open d O_RDWR", ::open(P("d").c_str(), O_RDWR));
    OK("open d O_CREAT", ::open(P("d").c_str(), O_CREAT | O_RDONLY, 0644));
    OK("open d O_RDONLY|O_DIRECTORY", close_now(::open(P("d").c_str(), O_RDONLY | O_DIRECTORY)));
    OK("open d/f1 O_DIRECTORY", ::open(P("d/f1").c_str(), O_RDONLY | O_DIRECTORY));
    OK("unlink d/a (a directory)", ::unlink(P("d/a").c_str()));
    OK("mkdir d/f1 (a file)", ::mkdir(P("d/f1").c_str(), 0755));
    {
      int fd = ::open(P("d").c_str(), O_RDONLY | O_DIRECTORY);
      char buf[16];
      OK("read on a directory fd", ::read(fd, buf, sizeof buf));
      ::close(fd);
    }

    r.note("listing d", listing(P("d")));
    r.note("dot entries of d", dot_inodes(P("d")));
    r.note("dot entries of d/a", dot_inodes(P("d/a")));
    r.note("dot entries of d/a/deep", dot_inodes(P("d/a/deep")));
    r.note("listing d/a/deep (empty)", listing(P("d/a/deep")));
    OK("rmdir d/a/deep", ::rmdir(P("d/a/deep").c_str()));
    OK("rmdir d/a", ::rmdir(P("d/a").c_str()));
    r.note("stat d after rmdir (nlink 3)", stat_of(P("d")));
    r.note("stat d/a after rmdir", stat_of(P("d/a")));
    r.note("listing d", listing(P("d")));

    // A bigger directory: 300 entries of every kind, then half removed.
    OK("mkdir many", ::mkdir(P("many").c_str(), 0755));
    bool all = true;
    for (int i = 0; i < 300; ++i) {
      std::string n = P("many/entry-" + std::to_string(i));
      if (i % 3 == 0) all &= ::mkdir(n.c_str(), 0755) == 0;
      else if (i % 3 == 1) all &= close_now(::open(n.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644)) == 0;
      else all &= ::symlink("target", n.c_str()) == 0;
    }
    r.want("300 entries created", all);
    r.note("listing many", listing(P("many")));
    r.note("stat many (nlink 102)", stat_of(P("many")));
    all = true;
    for (int i = 0; i < 300; i += 2) {
      std::string n = P("many/entry-" + std::to_string(i));
      all &= (i % 3 == 0 ? ::rmdir(n.c_str()) : ::unlink(n.c_str())) == 0;
    }
    r.want("150 entries removed", all);
    r.note("listing many after removals", listing(P("many")));
    r.note("stat many", stat_of(P("many")));

    // A long name: 255 bytes is fine, 256 is ENAMETOOLONG.
    OK("create a 255-byte name", close_now(::open(P(std::string(255, 'n')).c_str(), O_CREAT | O_WRONLY, 0644)));
    OK("create a 256-byte name", close_now(::open(P(std::string(256, 'n')).c_str(), O_CREAT | O_WRONLY, 0644)));
    r.note("stat the 255-byte name", stat_of(P(std::string(255, 'n'))));

    // A setgid directory passes its group on, and its setgid bit to subdirectories.
    OK("mkdir sg", ::mkdir(P("sg").c_str(), 0755));
    OK("chown sg :100", ::chown(P("sg").c_str(), 0, 100));
    OK("chmod sg 02775", ::chmod(P("sg").c_str(), 02775));
    r.note("stat sg", stat_of(P("sg")));
    OK("create sg/f", close_now(::open(P("sg/f").c_str(), O_CREAT | O_WRONLY, 0644)));
    r.note("stat sg/f (group 100)", stat_of(P("sg/f")));
    OK("mkdir sg/sub", ::mkdir(P("sg/sub").c_str(), 0755));
    r.note("stat sg/sub (group 100, setgid)", stat_of(P("sg/sub")));
    OK("mkfifo sg/p", ::mkfifo(P("sg/p").c_str(), 0644));
    r.note("stat sg/p", stat_of(P("sg/p")));
    OK("symlink sg/l", ::symlink("f", P("sg/l").c_str()));
    r.note("lstat sg/l", lstat_of(P("sg/l")));
    OK("create sg/sub/g", close_now(::open(P("sg/sub/g").c_str(), O_CREAT | O_WRONLY, 0644)));
    r.note("stat sg/sub/g", stat_of(P("sg/sub/g")));
    r.note("listing root", listing(root));
  });
  m.stop();
}

// =============================================================================================
// 3. Symbolic links, hard links, fifos and device nodes.

TEST_CASE(FS_NAME " vs tmpfs: symlinks, hard links, fifos and device nodes", "[mount][" FS_NAME "][links]") {
  TRANSPORT();
  mounts m(transport);
  START_FS(m);
  same_on_both(m, [](rec& r, const std::string& root) {
    auto P = [&](const std::string& n) { return root + "/" + n; };
    // Symlinks.
    OK("symlink dangling", ::symlink("no-such-target", P("dangling").c_str()));
    r.note("readlink dangling", readlink_of(P("dangling")));
    r.note("lstat dangling", lstat_of(P("dangling")));
    r.note("stat dangling", stat_of(P("dangling")));
    OK("open dangling O_RDONLY", ::open(P("dangling").c_str(), O_RDONLY));
    {
      int fd = ::open(P("t").c_str(), O_CREAT | O_WRONLY, 0640);
      VAL("write t", ::write(fd, "data", 4));
      ::close(fd);
    }
    OK("symlink s -> t", ::symlink("t", P("s").c_str()));
    r.note("stat s (follows)", stat_of(P("s")));
    r.note("lstat s", lstat_of(P("s")));
    r.note("content via s", content(P("s")));
    OK("open s O_NOFOLLOW", ::open(P("s").c_str(), O_RDONLY | O_NOFOLLOW));
    OK("open s O_PATH|O_NOFOLLOW", close_now(::open(P("s").c_str(), O_PATH | O_NOFOLLOW)));
    // O_NOFOLLOW on what is not a link is an ordinary open (tar, cp -a and mv open files so).
    OK("open t O_RDONLY|O_NOFOLLOW (not a link)", close_now(::open(P("t").c_str(), O_RDONLY | O_NOFOLLOW)));
    OK("open t O_WRONLY|O_NOFOLLOW (not a link)", close_now(::open(P("t").c_str(), O_WRONLY | O_NOFOLLOW)));
    OK("open t2 O_CREAT|O_EXCL|O_NOFOLLOW (new)", close_now(::open(P("t2").c_str(), O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW, 0644)));
    OK("unlink t2", ::unlink(P("t2").c_str()));
    OK("symlink s again", ::symlink("other", P("s").c_str()));
    {
      char buf[64];
      OK("readlink t (not a link, real buffer)", ::readlink(P("t").c_str(), buf, sizeof buf));
      VAL("readlink s into 1 byte", ::readlink(P("s").c_str(), buf, 1));
    }
    OK("mkdir d", ::mkdir(P("d").c_str(), 0755));
    OK("symlink d/up -> ../t", ::symlink("../t", P("d/up").c_str()));
    r.note("content via d/up", content(P("d/up")));
    OK("symlink sd -> d", ::symlink("d", P("sd").c_str()));
    r.note("stat sd/up via a dir symlink", stat_of(P("sd/up")));
    r.note("listing sd/", listing(P("sd/")));
    std::string long_target(1000, 'x');
    for (std::size_t i = 10; i < long_target.size(); i += 11) long_target[i] = '/';
    OK("symlink with a 1000-byte target", ::symlink(long_target.c_str(), P("long").c_str()));
    r.note("readlink long", readlink_of(P("long")));
    r.note("lstat long", lstat_of(P("long")));
    OK("symlink loop a -> b", ::symlink("loopb", P("loopa").c_str()));
    OK("symlink loop b -> a", ::symlink("loopa", P("loopb").c_str()));
    r.note("stat loopa", stat_of(P("loopa")));
    OK("open O_CREAT through dangling creates the target", close_now(::open(P("dangling").c_str(), O_CREAT | O_WRONLY, 0600)));
    r.note("stat no-such-target", stat_of(P("no-such-target")));
    OK("unlink s (the link, not t)", ::unlink(P("s").c_str()));
    r.note("stat t", stat_of(P("t")));
    OK("lchown the link", ::lchown(P("sd").c_str(), 7, 8));
    r.note("lstat sd after lchown", lstat_of(P("sd")));
    r.note("stat d (the target is not changed)", stat_of(P("d")));

    // Hard links.
    OK("link t h", ::link(P("t").c_str(), P("h").c_str()));
    r.note("stat t (nlink 2)", stat_of(P("t")));
    r.note("stat h", stat_of(P("h")));
    {
      struct stat a {};
      struct stat b {};
      ::stat(P("t").c_str(), &a);
      ::stat(P("h").c_str(), &b);
      r.want("t and h share st_ino", a.st_ino == b.st_ino);
    }
    OK("link t d/h2", ::link(P("t").c_str(), P("d/h2").c_str()));
    r.note("stat h (nlink 3)", stat_of(P("h")));
    OK("link t h (exists)", ::link(P("t").c_str(), P("h").c_str()));
    OK("link d dlink (a directory)", ::link(P("d").c_str(), P("dlink").c_str()));
    OK("link missing x", ::link(P("missing").c_str(), P("x").c_str()));
    OK("link t missing/x", ::link(P("t").c_str(), P("missing/x").c_str()));
    OK("link of a symlink (not followed)", ::link(P("dangling").c_str(), P("dangling2").c_str()));
    r.note("lstat dangling2", lstat_of(P("dangling2")));
    {
      int fd = ::open(P("h").c_str(), O_WRONLY | O_APPEND);
      VAL("append via h", ::write(fd, "+more", 5));
      ::close(fd);
    }
    r.note("content t (written via h)", content(P("t")));
    OK("unlink t", ::unlink(P("t").c_str()));
    r.note("stat h (nlink 2)", stat_of(P("h")));
    OK("unlink d/h2", ::unlink(P("d/h2").c_str()));
    r.note("stat h (nlink 1)", stat_of(P("h")));
    r.note("content h", content(P("h")));
    OK("chmod h 0600", ::chmod(P("h").c_str(), 0600));
    OK("link h t2", ::link(P("h").c_str(), P("t2").c_str()));
    r.note("stat t2 (mode shared)", stat_of(P("t2")));

    // Fifos and device nodes.
    OK("mknod fifo S_IFIFO 0644", ::mknod(P("fifo").c_str(), S_IFIFO | 0644, 0));
    r.note("stat fifo", stat_of(P("fifo")));
    OK("mkfifo fifo2 0666", ::mkfifo(P("fifo2").c_str(), 0666));
    r.note("stat fifo2", stat_of(P("fifo2")));
    OK("open fifo O_RDONLY|O_NONBLOCK", close_now(::open(P("fifo").c_str(), O_RDONLY | O_NONBLOCK)));
    OK("open fifo O_WRONLY|O_NONBLOCK (no reader)", ::open(P("fifo").c_str(), O_WRONLY | O_NONBLOCK));
    {
      int rd = ::open(P("fifo").c_str(), O_RDONLY | O_NONBLOCK);
      int wr = ::open(P("fifo").c_str(), O_WRONLY | O_NONBLOCK);
      VAL("write into the fifo", ::write(wr, "pipe", 4));
      char buf[8] = {};
      VAL("read from the fifo", ::read(rd, buf, sizeof buf));
      r.note("fifo carried", show(buf));
      ::close(rd);
      ::close(wr);
    }
    OK("mknod null S_IFCHR 1:3", ::mknod(P("null").c_str(), S_IFCHR | 0666, makedev(1, 3)));
    r.note("stat null", stat_of(P("null")));
    OK("mknod blk S_IFBLK 8:1", ::mknod(P("blk").c_str(), S_IFBLK | 0600, makedev(8, 1)));
    r.note("stat blk", stat_of(P("blk")));
    OK("mknod big S_IFCHR 300:70000", ::mknod(P("bigdev").c_str(), S_IFCHR | 0600, makedev(300, 70000)));
    r.note("stat bigdev", stat_of(P("bigdev")));
    OK("mknod sock S_IFSOCK", ::mknod(P("sock").c_str(), S_IFSOCK | 0755, 0));
    r.note("stat sock", stat_of(P("sock")));
    OK("mknod reg S_IFREG", ::mknod(P("reg").c_str(), S_IFREG | 0640, 0));
    r.note("stat reg", stat_of(P("reg")));
    OK("mknod fifo again", ::mknod(P("fifo").c_str(), S_IFIFO | 0644, 0));
    OK("open null (nodev mount)", ::open(P("null").c_str(), O_WRONLY));
    OK("link fifo fifo-link", ::link(P("fifo").c_str(), P("fifo-link").c_str()));
    r.note("stat fifo-link", stat_of(P("fifo-link")));
    r.note("listing root", listing(root));
  });
  m.stop();
}

// =============================================================================================
// 4. rename and renameat2.

namespace {
long renameat2(const std::string& from, const std::string& to, unsigned flags) {
  return ::syscall(SYS_renameat2, AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), flags);
}
void put_file(const std::string& path, const std::string& data) {
  int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0644);
  if (fd < 0) return;
  if (::write(fd, data.data(), data.size()) < 0) {
  }
  ::close(fd);
}
}  // namespace

TEST_CASE(FS_NAME " vs tmpfs: rename (plain, across directories, over files and directories, EINVAL, EISDIR, ENOTDIR, NOREPLACE, EXCHANGE)",
          "[mount][" FS_NAME "][rename]") {
  TRANSPORT();
  mounts m(transport);
  START_FS(m);
  same_on_both(m, [](rec& r, const std::string& root) {
    auto P = [&](const std::string& n) { return root + "/" + n; };
    put_file(P("a"), "A");
    put_file(P("b"), "B");
    ::mkdir(P("d1").c_str(), 0755);
    ::mkdir(P("d2").c_str(), 0755);
    ::mkdir(P("empty").c_str(), 0755);
    ::mkdir(P("full").c_str(), 0755);
    put_file(P("full/x"), "X");

    OK("rename a a2", ::rename(P("a").c_str(), P("a2").c_str()));
    r.note("stat a", stat_of(P("a")));
    r.note("content a2", content(P("a2")));
    OK("rename a2 d1/a3 (across dirs)", ::rename(P("a2").c_str(), P("d1/a3").c_str()));
    r.note("listing d1", listing(P("d1")));
    r.note("listing root", listing(root));
    OK("rename d1/a3 b (over an existing file)", ::rename(P("d1/a3").c_str(), P("b").c_str()));
    r.note("content b", content(P("b")));
    r.note("stat b", stat_of(P("b")));
    r.note("stat d1/a3", stat_of(P("d1/a3")));
    OK("rename b b (itself)", ::rename(P("b").c_str(), P("b").c_str()));
    r.note("content b", content(P("b")));
    OK("rename missing x", ::rename(P("missing").c_str(), P("x").c_str()));
    OK("rename b missing/x", ::rename(P("b").c_str(), P("missing/x").c_str()));

    // Hard links of one inode: rename is a no-op, both names stay.
    ::link(P("b").c_str(), P("b-link").c_str());
    OK("rename b b-link (same inode)", ::rename(P("b").c_str(), P("b-link").c_str()));
    r.note("stat b", stat_of(P("b")));
    r.note("stat b-link", stat_of(P("b-link")));

    // Directories.
    put_file(P("d2/inside"), "I");
    OK("rename d2 empty (over an empty dir)", ::rename(P("d2").c_str(), P("empty").c_str()));
    r.note("stat d2", stat_of(P("d2")));
    r.note("listing empty", listing(P("empty")));
    r.note("stat root (nlink)", stat_of(root));
    OK("mkdir d2 again", ::mkdir(P("d2").c_str(), 0755));
    OK("rename d2 full (not empty)", ::rename(P("d2").c_str(), P("full").c_str()));
    OK("mkdir d1/sub", ::mkdir(P("d1/sub").c_str(), 0755));
    OK("rename d1 d1/sub/x (into its own subtree)", ::rename(P("d1").c_str(), P("d1/sub/x").c_str()));
    OK("rename d1 d1/sub (onto its own child)", ::rename(P("d1").c_str(), P("d1/sub").c_str()));
    OK("rename d1/sub d1 (onto its parent)", ::rename(P("d1/sub").c_str(), P("d1").c_str()));
    OK("rename b d2 (file over dir)", ::rename(P("b").c_str(), P("d2").c_str()));
    OK("rename d2 b (dir over file)", ::rename(P("d2").c_str(), P("b").c_str()));
    OK("rename d2 d2/. ", ::rename(P("d2").c_str(), P("d2/.").c_str()));
    OK("rename . x", ::rename(P("d1/.").c_str(), P("x").c_str()));

    // Moving a directory changes both parents' link counts and its "..".
    OK("rename d1/sub d2/moved", ::rename(P("d1/sub").c_str(), P("d2/moved").c_str()));
    r.note("stat d1 (nlink 2)", stat_of(P("d1")));
    r.note("stat d2 (nlink 3)", stat_of(P("d2")));
    {
      struct stat up {};
      struct stat d2 {};
      ::stat(P("d2/moved/..").c_str(), &up);
      ::stat(P("d2").c_str(), &d2);
      r.want("d2/moved/.. is d2", up.st_ino == d2.st_ino);
    }
    r.note("dot entries of d2/moved", dot_inodes(P("d2/moved")));
    put_file(P("d2/moved/f"), "F");
    ::mkdir(P("d1/target").c_str(), 0755);
    OK("rename d2/moved d1/target (over an empty dir elsewhere)", ::rename(P("d2/moved").c_str(), P("d1/target").c_str()));
    r.note("stat d1", stat_of(P("d1")));
    r.note("stat d2", stat_of(P("d2")));
    r.note("content d1/target/f", content(P("d1/target/f")));
    r.note("dot entries of d1/target", dot_inodes(P("d1/target")));

    // renameat2 flags.
    put_file(P("p"), "P");
    put_file(P("q"), "Q");
    OK("RENAME_NOREPLACE p q (exists)", renameat2(P("p"), P("q"), RENAME_NOREPLACE));
    r.note("content q", content(P("q")));
    OK("RENAME_NOREPLACE p p2", renameat2(P("p"), P("p2"), RENAME_NOREPLACE));
    r.note("content p2", content(P("p2")));
    r.note("stat p", stat_of(P("p")));
    OK("RENAME_EXCHANGE p2 q", renameat2(P("p2"), P("q"), RENAME_EXCHANGE));
    r.note("content p2 (was Q)", content(P("p2")));
    r.note("content q (was P)", content(P("q")));
    OK("RENAME_EXCHANGE q missing", renameat2(P("q"), P("missing"), RENAME_EXCHANGE));
    OK("RENAME_EXCHANGE q d1/target (file and dir, across dirs)", renameat2(P("q"), P("d1/target"), RENAME_EXCHANGE));
    r.note("stat q (now the dir)", stat_of(P("q")));
    r.note("content q/f", content(P("q/f")));
    r.note("content d1/target (now the file)", content(P("d1/target")));
    r.note("stat root", stat_of(root));
    r.note("stat d1", stat_of(P("d1")));
    r.note("dot entries of q", dot_inodes(P("q")));
    OK("RENAME_EXCHANGE|RENAME_NOREPLACE", renameat2(P("q"), P("p2"), RENAME_EXCHANGE | RENAME_NOREPLACE));
    OK("renameat2 unknown flag", renameat2(P("q"), P("p3"), 1u << 20));
    OK("RENAME_EXCHANGE q q/f (into its own subtree)", renameat2(P("q"), P("q/f"), RENAME_EXCHANGE));
    OK("RENAME_NOREPLACE dir over empty dir", renameat2(P("q"), P("d2"), RENAME_NOREPLACE));

    // An open file renamed over keeps its data for its holder.
    put_file(P("victim"), "old data");
    put_file(P("newer"), "new data");
    {
      int fd = ::open(P("victim").c_str(), O_RDONLY);
      OK("rename newer victim (victim open)", ::rename(P("newer").c_str(), P("victim").c_str()));
      r.note("the open fd still reads", pread_str(fd, 100, 0));
      r.note("fstat of the replaced file (nlink 0)", fstat_of(fd));
      ::close(fd);
    }
    r.note("content victim", content(P("victim")));
    r.note("listing root", listing(root));
    r.note("listing d1", listing(P("d1")));
    r.note("listing d2", listing(P("d2")));
  });
  m.stop();
}

// =============================================================================================
// 5. Unlinking open files.

TEST_CASE(FS_NAME " vs tmpfs: an unlinked open file stays readable and writable until closed", "[mount][" FS_NAME "][unlink]") {
  TRANSPORT();
  mounts m(transport);
  START_FS(m);
  same_on_both(m, [](rec& r, const std::string& root) {
    auto P = [&](const std::string& n) { return root + "/" + n; };
    int fd = OK("open f", ::open(P("f").c_str(), O_CREAT | O_RDWR, 0644));
    VAL("write", ::write(fd, "persist", 7));
    int ro = OK("open f again O_RDONLY", ::open(P("f").c_str(), O_RDONLY));
    OK("unlink f", ::unlink(P("f").c_str()));
    r.note("stat f", stat_of(P("f")));
    r.note("listing root", listing(root));
    r.note("fstat (nlink 0)", fstat_of(fd));
    r.note("pread via the writer", pread_str(fd, 100, 0));
    r.note("pread via the reader", pread_str(ro, 100, 0));
    VAL("pwrite more", ::pwrite(fd, "-and-more", 9, 7));
    r.note("pread via the reader after more", pread_str(ro, 100, 0));
    OK("ftruncate 3", ::ftruncate(fd, 3));
    r.note("fstat after ftruncate", fstat_of(ro));
    OK("fchmod 0600", ::fchmod(fd, 0600));
    r.note("fstat after fchmod", fstat_of(ro));
    OK("fsetxattr", ::fsetxattr(fd, "user.k", "v", 1, 0));
    {
      char buf[8] = {};
      VAL("fgetxattr", ::fgetxattr(ro, "user.k", buf, sizeof buf));
    }
    {
      // A big write on the unlinked file, read back, then the name reused by a new file.
      std::string big(2 * MiB, 'z');
      VAL("pwrite 2 MiB", ::pwrite(fd, big.data(), big.size(), 4096));
      int e = 0;
      r.want("read back 2 MiB", pread_raw(ro, big.size(), 4096, e) == big);
    }
    int fresh = OK("create f anew", ::open(P("f").c_str(), O_CREAT | O_EXCL | O_RDWR, 0644));
    VAL("write the new f", ::write(fresh, "fresh", 5));
    {
      struct stat a {};
      struct stat b {};
      ::fstat(fd, &a);
      ::fstat(fresh, &b);
      r.want("the new f is another inode", a.st_ino != b.st_ino);
    }
    r.note("old fd still reads its own data", pread_str(fd, 3, 0));
    OK("close writer", ::close(fd));
    r.note("reader after the writer closed", pread_str(ro, 3, 0));
    OK("close reader", ::close(ro));
    ::close(fresh);
    r.note("content f (the new one)", content(P("f")));

    // Hard links: unlinking one name of an open file.
    int h = ::open(P("g").c_str(), O_CREAT | O_RDWR, 0644);
    VAL("write g", ::write(h, "gg", 2));
    OK("link g g2", ::link(P("g").c_str(), P("g2").c_str()));
    OK("unlink g", ::unlink(P("g").c_str()));
    r.note("fstat g (nlink 1)", fstat_of(h));
    OK("unlink g2", ::unlink(P("g2").c_str()));
    r.note("fstat g (nlink 0)", fstat_of(h));
    OK("linkat of an unlinked file (not O_TMPFILE)", ::linkat(h, "", AT_FDCWD, P("g3").c_str(), AT_EMPTY_PATH));
    ::close(h);

    // A removed directory that is still open lists nothing (ENOENT).
    ::mkdir(P("dir").c_str(), 0755);
    int dfd = ::open(P("dir").c_str(), O_RDONLY | O_DIRECTORY);
    OK("rmdir dir (open)", ::rmdir(P("dir").c_str()));
    {
      char buf[4096];
      OK("getdents64 of the removed dir", ::syscall(SYS_getdents64, dfd, buf, sizeof buf));
      r.note("fstat of the removed dir", fstat_of(dfd));
      OK("openat in the removed dir", ::openat(dfd, "x", O_CREAT | O_WRONLY, 0644));
    }
    ::close(dfd);

    // Many open-unlinked files at once, each with its own data.
    std::vector<int> fds;
    bool ok = true;
    for (int i = 0; i < 50; ++i) {
      std::string n = P("u" + std::to_string(i));
      int f = ::open(n.c_str(), O_CREAT | O_RDWR, 0644);
      std::string d = "data-" + std::to_string(i);
      ok &= f >= 0 && ::write(f, d.data(), d.size()) == static_cast<ssize_t>(d.size()) && ::unlink(n.c_str()) == 0;
      fds.push_back(f);
    }
    for (int i = 0; i < 50; ++i) {
      int e = 0;
      ok &= pread_raw(fds[static_cast<std::size_t>(i)], 64, 0, e) == "data-" + std::to_string(i);
      ::close(fds[static_cast<std::size_t>(i)]);
    }
    r.want("50 open-unlinked files keep their own data", ok);
    r.note("listing root", listing(root));
  });
  m.stop();
}

// =============================================================================================
// 6. fallocate, SEEK_DATA/SEEK_HOLE, copy_file_range.

TEST_CASE(FS_NAME " vs tmpfs: fallocate, punching holes, SEEK_DATA/SEEK_HOLE, copy_file_range", "[mount][" FS_NAME "][fallocate]") {
  TRANSPORT();
  mounts m(transport);
  START_FS(m);
  same_on_both(m, [](rec& r, const std::string& root) {
    auto P = [&](const std::string& n) { return root + "/" + n; };
    int fd = ::open(P("f").c_str(), O_CREAT | O_RDWR, 0644);
    OK("fallocate 0..1 MiB", ::fallocate(fd, 0, 0, MiB));
    r.note("fstat", fstat_of(fd));
    {
      int e = 0;
      std::string s = pread_raw(fd, 2 * MiB, 0, e);
      r.want("allocated range reads as 1 MiB of zeros", e == 0 && s.size() == static_cast<std::size_t>(MiB) && all_zero(s));
    }
    OK("fallocate KEEP_SIZE 1..2 MiB", ::fallocate(fd, FALLOC_FL_KEEP_SIZE, MiB, MiB));
    r.note("fstat (size unchanged)", fstat_of(fd));
    OK("fallocate 512 KiB..3 MiB (grows)", ::fallocate(fd, 0, 512 * KiB, 2 * MiB + 512 * KiB));
    r.note("fstat (3 MiB)", fstat_of(fd));
    OK("fallocate inside the file (no change)", ::fallocate(fd, 0, 100, 200));
    r.note("fstat", fstat_of(fd));
    OK("fallocate len 0", ::fallocate(fd, 0, 0, 0));
    OK("fallocate negative offset", ::fallocate(fd, 0, -1, 10));
    OK("fallocate PUNCH_HOLE without KEEP_SIZE", ::fallocate(fd, FALLOC_FL_PUNCH_HOLE, 0, 4096));

    // Punch a hole into written data: zeros there, the rest untouched, the size kept.
    std::string xs(64 * KiB, 'x');
    VAL("pwrite 64 KiB of x", ::pwrite(fd, xs.data(), xs.size(), 0));
    OK("PUNCH_HOLE|KEEP_SIZE 4096+8192", ::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096, 8192));
    r.note("fstat after punch", fstat_of(fd));
    {
      int e = 0;
      std::string s = pread_raw(fd, 64 * KiB, 0, e);
      r.want("punched page range is zeros, the rest x", s.size() == 64 * KiB && s.substr(0, 4096) == xs.substr(0, 4096) &&
                                                            all_zero(s.substr(4096, 8192)) && s.substr(12288) == xs.substr(12288));
    }
    OK("PUNCH_HOLE|KEEP_SIZE unaligned 100+50", ::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 100, 50));
    {
      int e = 0;
      std::string s = pread_raw(fd, 4096, 0, e);
      r.want("unaligned punch: bytes 100..149 zeros, around them x", s.size() == 4096 && s.substr(0, 100) == std::string(100, 'x') &&
                                                                         all_zero(s.substr(100, 50)) &&
                                                                         s.substr(150) == std::string(4096 - 150, 'x'));
    }
    OK("PUNCH_HOLE|KEEP_SIZE past EOF", ::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 10 * MiB, 4096));
    r.note("fstat", fstat_of(fd));
    ::close(fd);
    fd = ::open(P("f").c_str(), O_RDONLY);
    OK("fallocate on an O_RDONLY fd", ::fallocate(fd, 0, 0, 4096));
    ::close(fd);

    // SEEK_DATA / SEEK_HOLE on a sparse file: 2 MiB, one page of data at 1 MiB.
    fd = ::open(P("sparse").c_str(), O_CREAT | O_RDWR, 0644);
    OK("ftruncate sparse 2 MiB", ::ftruncate(fd, 2 * MiB));
    std::string page(4096, 'd');
    VAL("pwrite a page at 1 MiB", ::pwrite(fd, page.data(), page.size(), MiB));
    {
      const off_t size = 2 * MiB;
      errno = 0;
      off_t d0 = ::lseek(fd, 0, SEEK_DATA);
      off_t h0 = ::lseek(fd, 0, SEEK_HOLE);
      off_t h1 = ::lseek(fd, MiB, SEEK_HOLE);
      off_t d1 = ::lseek(fd, MiB + 100, SEEK_DATA);
      off_t h2 = ::lseek(fd, MiB + 100, SEEK_HOLE);
      errno = 0;
      off_t d2 = ::lseek(fd, MiB + 8192, SEEK_DATA);
      int d2_err = errno;
      r.info("SEEK_DATA(0) SEEK_HOLE(0) SEEK_HOLE(1M) SEEK_DATA(1M+100) SEEK_HOLE(1M+100) SEEK_DATA(1M+8K)",
             std::to_string(d0) + " " + std::to_string(h0) + " " + std::to_string(h1) + " " + std::to_string(d1) + " " +
                 std::to_string(h2) + " " + std::to_string(d2) + (d2 < 0 ? " " + errname(d2_err) : ""));
      r.want("SEEK_DATA(0) is 0 (all data) or 1 MiB (the data page)", d0 == 0 || d0 == MiB);
      r.want("SEEK_HOLE(0) is not inside the data", h0 >= 0 && h0 <= size && !(h0 >= MiB && h0 < MiB + 4096));
      r.want("SEEK_HOLE(1 MiB) at/after the data's end, at most the size", h1 >= MiB + 4096 && h1 <= size);
      r.want("SEEK_DATA inside data returns the offset", d1 == MiB + 100);
      r.want("SEEK_HOLE(1 MiB+100) at/after the data's end", h2 >= MiB + 4096 && h2 <= size);
      r.want("SEEK_DATA in the trailing hole: ENXIO or the offset", (d2 < 0 && d2_err == ENXIO) || d2 == MiB + 8192);
      r.want("a file system that reports holes reports these exactly",
             d0 == 0 || (h0 == 0 && h1 == MiB + 4096 && h2 == MiB + 4096 && d2 < 0));
    }
    OK("SEEK_DATA at EOF", ::lseek(fd, 2 * MiB, SEEK_DATA));
    OK("SEEK_HOLE at EOF", ::lseek(fd, 2 * MiB, SEEK_HOLE));
    OK("SEEK_DATA past EOF", ::lseek(fd, 3 * MiB, SEEK_DATA));
    OK("SEEK_HOLE past EOF", ::lseek(fd, 3 * MiB, SEEK_HOLE));
    OK("SEEK_DATA negative", ::lseek(fd, -1, SEEK_DATA));
    VAL("SEEK_END", ::lseek(fd, 0, SEEK_END));
    VAL("SEEK_END -10", ::lseek(fd, -10, SEEK_END));
    VAL("SEEK_SET past EOF (fine)", ::lseek(fd, 10 * MiB, SEEK_SET));
    ::close(fd);
    // A byte, not a page: SEEK_DATA lands at or before it, SEEK_HOLE after it.
    fd = ::open(P("sparse2").c_str(), O_CREAT | O_RDWR, 0644);
    ::ftruncate(fd, 4 * MiB);
    VAL("pwrite a byte at 3 MiB+10", ::pwrite(fd, "b", 1, 3 * MiB + 10));
    {
      off_t d = ::lseek(fd, 0, SEEK_DATA);
      off_t h = ::lseek(fd, 3 * MiB + 10, SEEK_HOLE);
      r.info("sparse2 SEEK_DATA(0) SEEK_HOLE(3M+10)", std::to_string(d) + " " + std::to_string(h));
      r.want("sparse2: SEEK_DATA(0) in [0, 3 MiB+10]", d >= 0 && d <= 3 * MiB + 10);
      r.want("sparse2: SEEK_HOLE(3 MiB+10) in [3 MiB+11, 4 MiB]", h >= 3 * MiB + 11 && h <= 4 * MiB);
    }
    ::close(fd);
    // An empty file: SEEK_DATA and SEEK_HOLE at 0 are ENXIO.
    fd = ::open(P("empty").c_str(), O_CREAT | O_RDWR, 0644);
    OK("SEEK_DATA on an empty file", ::lseek(fd, 0, SEEK_DATA));
    OK("SEEK_HOLE on an empty file", ::lseek(fd, 0, SEEK_HOLE));
    ::close(fd);

    // copy_file_range.
    std::string src_data(100 * KiB, '\0');
    std::mt19937 g(3);
    for (auto& c : src_data) c = static_cast<char>(g());
    int in = ::open(P("src").c_str(), O_CREAT | O_RDWR, 0644);
    VAL("write src", ::write(in, src_data.data(), src_data.size()));
    int out = ::open(P("dst").c_str(), O_CREAT | O_RDWR, 0644);
    auto copy = [&](off_t off_in, off_t off_out, std::size_t len) {
      long total = 0;
      for (;;) {
        loff_t i = off_in + total, o = off_out + total;
        ssize_t n = ::copy_file_range(in, &i, out, &o, len - static_cast<std::size_t>(total), 0);
        if (n < 0) return -1L;
        if (n == 0) break;
        total += n;
        if (static_cast<std::size_t>(total) == len) break;
      }
      return total;
    };
    VAL("copy_file_range 50000 bytes from 1000 to 0", copy(1000, 0, 50000));
    {
      int e = 0;
      r.want("dst holds src[1000..51000]", pread_raw(out, 60000, 0, e) == src_data.substr(1000, 50000));
    }
    VAL("copy_file_range to 200000 (past dst's end)", copy(0, 200000, 1000));
    r.note("fstat dst", fstat_of(out));
    {
      int e = 0;
      std::string s = pread_raw(out, 300000, 0, e);
      r.want("dst: the gap is zeros and the tail is src[0..1000]",
             s.size() == 201000 && all_zero(s.substr(50000, 150000)) && s.substr(200000) == src_data.substr(0, 1000));
    }
    VAL("copy_file_range past src's end (short)", copy(100 * KiB - 10, 0, 100));
    VAL("copy_file_range at src's end", copy(100 * KiB, 0, 100));
    {
      loff_t i = 0, o = 10;
      OK("copy_file_range overlapping in one file", ::copy_file_range(in, &i, in, &o, 100, 0));
      OK("copy_file_range with flags", ::copy_file_range(in, &i, out, &o, 100, 1));
    }
    int ro = ::open(P("dst").c_str(), O_RDONLY);
    {
      loff_t i = 0, o = 0;
      OK("copy_file_range into an O_RDONLY fd", ::copy_file_range(in, &i, ro, &o, 100, 0));
    }
    ::close(ro);
    ::close(in);
    ::close(out);
    r.note("content dst", content(P("dst")));
  });
  m.stop();
}

// =============================================================================================
// 7. Extended attributes.

TEST_CASE(FS_NAME " vs tmpfs: extended attributes (user. and trusted., CREATE/REPLACE, size queries, ERANGE, ENODATA)",
          "[mount][" FS_NAME "][xattr]") {
  TRANSPORT();
  mounts m(transport);
  START_FS(m);
  same_on_both(m, [](rec& r, const std::string& root) {
    auto P = [&](const std::string& n) { return root + "/" + n; };
    put_file(P("f"), "file");
    const std::string f = P("f");
    char buf[65536];
    auto get = [&](const std::string& path, const char* name, std::size_t size) {
      ssize_t n = ::getxattr(path.c_str(), name, size ? buf : nullptr, size);
      if (n < 0) return err_str(errno);
      return size ? show(std::string(buf, static_cast<std::size_t>(n))) : "size " + std::to_string(n);
    };
    r.note("listxattr of a new file", xattr_names(f));
    r.note("getxattr user.a (missing)", get(f, "user.a", sizeof buf));
    OK("setxattr user.a 1", ::setxattr(f.c_str(), "user.a", "1", 1, 0));
    r.note("getxattr user.a size query", get(f, "user.a", 0));
    r.note("getxattr user.a", get(f, "user.a", sizeof buf));
    OK("setxattr user.a XATTR_CREATE (exists)", ::setxattr(f.c_str(), "user.a", "2", 1, XATTR_CREATE));
    OK("setxattr user.b XATTR_REPLACE (missing)", ::setxattr(f.c_str(), "user.b", "2", 1, XATTR_REPLACE));
    OK("setxattr user.b XATTR_CREATE", ::setxattr(f.c_str(), "user.b", "hello", 5, XATTR_CREATE));
    OK("setxattr user.b XATTR_REPLACE", ::setxattr(f.c_str(), "user.b", "hello world", 11, XATTR_REPLACE));
    r.note("getxattr user.b", get(f, "user.b", sizeof buf));
    r.note("getxattr user.b into 2 bytes", get(f, "user.b", 2));
    r.note("getxattr user.b into exactly 11 bytes", get(f, "user.b", 11));
    OK("setxattr user.a shorter value", ::setxattr(f.c_str(), "user.a", "", 0, 0));
    r.note("getxattr user.a (empty)", get(f, "user.a", sizeof buf));
    r.note("getxattr user.a size query (0)", get(f, "user.a", 0));
    OK("setxattr trusted.t", ::setxattr(f.c_str(), "trusted.t", "T\0T", 3, 0));
    r.note("getxattr trusted.t", get(f, "trusted.t", sizeof buf));
    std::string binary;
    for (int i = 0; i < 256; ++i) binary += static_cast<char>(i);
    OK("setxattr user.bin (all bytes)", ::setxattr(f.c_str(), "user.bin", binary.data(), binary.size(), 0));
    {
      ssize_t n = ::getxattr(f.c_str(), "user.bin", buf, sizeof buf);
      r.want("user.bin reads back", n == 256 && std::string(buf, 256) == binary);
    }
    std::string big(32 * KiB, 'v');
    OK("setxattr user.big 32 KiB", ::setxattr(f.c_str(), "user.big", big.data(), big.size(), 0));
    r.note("getxattr user.big", get(f, "user.big", sizeof buf));
    r.note("listxattr", xattr_names(f));
    {
      ssize_t need = ::listxattr(f.c_str(), nullptr, 0);
      r.note("listxattr size query", std::to_string(need));
      char small[4];
      OK("listxattr into 4 bytes", ::listxattr(f.c_str(), small, sizeof small));
      std::vector<char> exact(static_cast<std::size_t>(need > 0 ? need : 1));
      VAL("listxattr into exactly the size", ::listxattr(f.c_str(), exact.data(), exact.size()));
    }
    OK("removexattr user.a", ::removexattr(f.c_str(), "user.a"));
    r.note("getxattr user.a after remove", get(f, "user.a", sizeof buf));
    OK("removexattr user.a again", ::removexattr(f.c_str(), "user.a"));
    OK("removexattr missing", ::removexattr(f.c_str(), "user.none"));
    OK("setxattr user.c XATTR_CREATE|XATTR_REPLACE", ::setxattr(f.c_str(), "user.c", "x", 1, XATTR_CREATE | XATTR_REPLACE));
    OK("setxattr unknown namespace", ::setxattr(f.c_str(), "bogus.x", "x", 1, 0));
    OK("setxattr a 256-byte name", ::setxattr(f.c_str(), ("user." + std::string(251, 'n')).c_str(), "x", 1, 0));
    OK("setxattr empty name", ::setxattr(f.c_str(), "", "x", 1, 0));
    OK("setxattr value too big (64 KiB + 1)", ::setxattr(f.c_str(), "user.huge", std::string(65537, 'h').data(), 65537, 0));
    OK("getxattr of a missing file", ::getxattr(P("missing").c_str(), "user.a", buf, sizeof buf));
    r.note("listxattr after removals", xattr_names(f));
    r.note("all values", xattrs_of(f));

    // On a directory, through an fd, on a hard link, after rename; on symlinks user.* is refused.
    ::mkdir(P("d").c_str(), 0755);
    OK("setxattr on a dir", ::setxattr(P("d").c_str(), "user.dir", "D", 1, 0));
    r.note("dir xattrs", xattrs_of(P("d")));
    int fd = ::open(f.c_str(), O_RDONLY);
    OK("fsetxattr user.fd", ::fsetxattr(fd, "user.fd", "via fd", 6, 0));
    VAL("fgetxattr user.fd size", ::fgetxattr(fd, "user.fd", nullptr, 0));
    OK("fremovexattr user.fd", ::fremovexattr(fd, "user.fd"));
    ::close(fd);
    ::link(f.c_str(), P("hard").c_str());
    r.note("xattrs via a hard link", xattrs_of(P("hard")));
    ::rename(f.c_str(), P("renamed").c_str());
    r.note("xattrs after rename", xattrs_of(P("renamed")));
    ::symlink("renamed", P("sym").c_str());
    OK("lsetxattr user.* on a symlink", ::lsetxattr(P("sym").c_str(), "user.l", "x", 1, 0));
    OK("setxattr through a symlink (follows)", ::setxattr(P("sym").c_str(), "user.follow", "y", 1, 0));
    r.note("xattrs of the target", xattrs_of(P("renamed")));
    OK("lgetxattr user.l on the symlink", ::lgetxattr(P("sym").c_str(), "user.l", buf, sizeof buf));
    ::mkfifo(P("fifo").c_str(), 0644);
    OK("setxattr user.* on a fifo", ::setxattr(P("fifo").c_str(), "user.x", "x", 1, 0));
    OK("setxattr trusted.* on a fifo", ::setxattr(P("fifo").c_str(), "trusted.x", "x", 1, 0));
    r.note("fifo xattrs", xattrs_of(P("fifo")));
    // Many attributes on one file.
    bool all = true;
    for (int i = 0; i < 100; ++i) {
      std::string n = "user.many" + std::to_string(i), v = std::string(static_cast<std::size_t>(i), 'm');
      all &= ::setxattr(P("renamed").c_str(), n.c_str(), v.data(), v.size(), XATTR_CREATE) == 0;
    }
    r.want("100 xattrs created", all);
    r.note("all values after 100 more", xattrs_of(P("renamed")));
    // Unlinking the file drops them: a new file with the name has none.
    ::unlink(P("renamed").c_str());
    ::unlink(P("hard").c_str());
    put_file(P("renamed"), "new");
    r.note("a new file has no xattrs", xattr_names(P("renamed")));
    // As nobody: user.* needs write permission; trusted.* needs CAP_SYS_ADMIN.
    ::chmod(root.c_str(), 0755);
    put_file(P("pub"), "p");
    ::chmod(P("pub").c_str(), 0666);
    put_file(P("priv"), "p");
    ::setxattr(P("priv").c_str(), "user.secret", "s", 1, 0);
    ::setxattr(P("pub").c_str(), "trusted.hidden", "h", 1, 0);
    as_user(r, nobody, nogroup, [&] {
      OK("nobody: setxattr user.* on a 0666 file", ::setxattr(P("pub").c_str(), "user.n", "n", 1, 0));
      OK("nobody: setxattr user.* on a 0644 file", ::setxattr(P("priv").c_str(), "user.n", "n", 1, 0));
      OK("nobody: getxattr user.* on a 0644 file", ::getxattr(P("priv").c_str(), "user.secret", buf, sizeof buf));
      OK("nobody: setxattr trusted.*", ::setxattr(P("pub").c_str(), "trusted.n", "n", 1, 0));
      r.note("nobody: listxattr (trusted.* hidden)", xattr_names(P("pub")));
    });
  });
  m.stop();
}

// =============================================================================================
// 8. Ownership, permissions and times.

TEST_CASE(FS_NAME " vs tmpfs: chmod, chown, setuid/setgid cleared on write, utimensat, mtime/ctime", "[mount][" FS_NAME "][attrs]") {
  TRANSPORT();
  mounts m(transport);
  START_FS(m);
  same_on_both(m, [](rec& r, const std::string& root) {
    auto P = [&](const std::string& n) { return root + "/" + n; };
    ::chmod(root.c_str(), 0755);
    const timespec t0 = now_ts();
    put_file(P("f"), "data");
    const timespec t1 = now_ts();
    struct stat st {};
    ::stat(P("f").c_str(), &st);
    auto sane = [&](const timespec& t) { return ts_sec(t) >= ts_sec(t0) - 2 && ts_sec(t) <= ts_sec(t1) + 2; };
    r.want("new file: atime, mtime and ctime are now", sane(st.st_atim) && sane(st.st_mtim) && sane(st.st_ctim));

    // chmod, including the special bits; ctime moves, mtime does not.
    OK("chmod f 0600", ::chmod(P("f").c_str(), 0600));
    r.note("stat f", stat_of(P("f")));
    sleep_ms(30);
    {
      struct stat before {};
      struct stat after {};
      ::stat(P("f").c_str(), &before);
      sleep_ms(30);
      OK("chmod f 04755", ::chmod(P("f").c_str(), 04755));
      ::stat(P("f").c_str(), &after);
      r.want("chmod moves ctime", ts_less(before.st_ctim, after.st_ctim));
      r.want("chmod keeps mtime", before.st_mtim.tv_sec == after.st_mtim.tv_sec && before.st_mtim.tv_nsec == after.st_mtim.tv_nsec);
    }
    r.note("stat f", stat_of(P("f")));
    OK("chmod f 07777", ::chmod(P("f").c_str(), 07777));
    r.note("stat f", stat_of(P("f")));
    OK("chmod f 0170644 (type bits ignored)", ::chmod(P("f").c_str(), 0170644));
    r.note("stat f", stat_of(P("f")));
    OK("chmod missing", ::chmod(P("missing").c_str(), 0644));
    {
      int fd = ::open(P("f").c_str(), O_RDONLY);
      OK("fchmod 0640", ::fchmod(fd, 0640));
      r.note("fstat", fstat_of(fd));
      ::close(fd);
    }

    // chown as root; a chown clears setuid, and setgid with group execute.
    OK("chown f 1000:1000", ::chown(P("f").c_str(), 1000, 1000));
    r.note("stat f", stat_of(P("f")));
    OK("chown f -1:-1", ::chown(P("f").c_str(), static_cast<uid_t>(-1), static_cast<gid_t>(-1)));
    r.note("stat f", stat_of(P("f")));
    OK("chown f -1:2000", ::chown(P("f").c_str(), static_cast<uid_t>(-1), 2000));
    r.note("stat f", stat_of(P("f")));
    put_file(P("s"), "s");
    ::chmod(P("s").c_str(), 06755);
    OK("chown s 5:5 (setuid file)", ::chown(P("s").c_str(), 5, 5));
    r.note("stat s (setuid and setgid cleared)", stat_of(P("s")));
    put_file(P("s2"), "s");
    ::chmod(P("s2").c_str(), 02745);
    OK("chown s2 5:5 (setgid without group x)", ::chown(P("s2").c_str(), 5, 5));
    r.note("stat s2 (setgid kept)", stat_of(P("s2")));
    ::mkdir(P("d").c_str(), 02755);
    ::chmod(P("d").c_str(), 06755);
    OK("chown d 5:5 (setgid dir)", ::chown(P("d").c_str(), 5, 5));
    r.note("stat d (dir bits kept)", stat_of(P("d")));

    // A write by a non-root user clears setuid and setgid (with group execute).
    put_file(P("sx"), "xxxx");
    ::chmod(P("sx").c_str(), 06777);
    put_file(P("sxt"), "xxxx");
    ::chmod(P("sxt").c_str(), 04777);
    put_file(P("sgnx"), "xxxx");
    ::chmod(P("sgnx").c_str(), 02767);
    put_file(P("pub"), "pub");
    ::chmod(P("pub").c_str(), 0666);
    put_file(P("mine"), "mine");
    ::chown(P("mine").c_str(), nobody, 0);
    put_file(P("notmine"), "theirs");
    ::chmod(P("notmine").c_str(), 0644);
    r.note("stat sx before", stat_of(P("sx")));
    as_user(r, nobody, nogroup, [&] {
      int fd = OK("nobody: open sx O_WRONLY", ::open(P("sx").c_str(), O_WRONLY));
      VAL("nobody: pwrite sx", ::pwrite(fd, "y", 1, 1));
      ::close(fd);
      OK("nobody: open sxt O_WRONLY|O_TRUNC", close_now(::open(P("sxt").c_str(), O_WRONLY | O_TRUNC)));
      fd = OK("nobody: open sgnx O_WRONLY", ::open(P("sgnx").c_str(), O_WRONLY));
      VAL("nobody: write sgnx", ::write(fd, "z", 1));
      ::close(fd);
      OK("nobody: truncate pub", ::truncate(P("pub").c_str(), 1));
      OK("nobody: utimensat pub NULL (write permission suffices)", ::utimensat(AT_FDCWD, P("pub").c_str(), nullptr, 0));
      timespec both_now[2] = {{0, UTIME_NOW}, {0, UTIME_NOW}};
      OK("nobody: utimensat pub UTIME_NOW", ::utimensat(AT_FDCWD, P("pub").c_str(), both_now, 0));
      timespec explicit_times[2] = {{1000, 0}, {2000, 0}};
      OK("nobody: utimensat pub explicit (not owner)", ::utimensat(AT_FDCWD, P("pub").c_str(), explicit_times, 0));
      OK("nobody: chmod pub (not owner)", ::chmod(P("pub").c_str(), 0777));
      OK("nobody: chown pub to self", ::chown(P("pub").c_str(), nobody, nogroup));
      OK("nobody: chmod mine 02755 (setgid of a foreign group dropped)", ::chmod(P("mine").c_str(), 02755));
      OK("nobody: chown mine to another group", ::chown(P("mine").c_str(), static_cast<uid_t>(-1), 100));
      OK("nobody: chown mine -1:-1", ::chown(P("mine").c_str(), static_cast<uid_t>(-1), static_cast<gid_t>(-1)));
      OK("nobody: utimensat mine explicit (owner)", ::utimensat(AT_FDCWD, P("mine").c_str(), explicit_times, 0));
      OK("nobody: open notmine O_WRONLY", ::open(P("notmine").c_str(), O_WRONLY));
      OK("nobody: truncate notmine", ::truncate(P("notmine").c_str(), 0));
      OK("nobody: create in root (0755)", ::open(P("new").c_str(), O_CREAT | O_WRONLY, 0644));
      OK("nobody: unlink in root", ::unlink(P("pub").c_str()));
    });
    r.note("stat sx after nobody's write", stat_of(P("sx")));
    r.note("content sx", content(P("sx")));
    r.note("stat sxt after nobody's O_TRUNC", stat_of(P("sxt")));
    r.note("stat sgnx after nobody's write (not in the file's group: setgid dropped even without group x)", stat_of(P("sgnx")));
    r.note("stat pub", stat_of(P("pub")));
    r.note("stat mine", stat_of(P("mine")));
    {
      struct stat ms {};
      ::stat(P("mine").c_str(), &ms);
      r.want("mine: times set by its owner", ms.st_atim.tv_sec == 1000 && ms.st_mtim.tv_sec == 2000);
    }
    // Root writing does not clear them.
    {
      int fd = ::open(P("sx").c_str(), O_WRONLY);
      ::fchmod(fd, 06777);
      VAL("root: pwrite sx", ::pwrite(fd, "r", 1, 0));
      ::close(fd);
      r.note("stat sx after root's write", stat_of(P("sx")));
    }

    // utimensat: explicit, UTIME_OMIT, UTIME_NOW, NULL; on a symlink without following.
    put_file(P("t"), "t");
    timespec set[2] = {{1000000000, 123456789}, {1100000000, 987654321}};
    OK("utimensat explicit", ::utimensat(AT_FDCWD, P("t").c_str(), set, 0));
    auto times = [&](const std::string& p, int flags = 0) {
      struct stat s {};
      if (::fstatat(AT_FDCWD, p.c_str(), &s, flags) != 0) return err_str(errno);
      return "atime=" + std::to_string(s.st_atim.tv_sec) + "." + std::to_string(s.st_atim.tv_nsec) +
             " mtime=" + std::to_string(s.st_mtim.tv_sec) + "." + std::to_string(s.st_mtim.tv_nsec);
    };
    r.note("times t", times(P("t")));
    timespec omit_atime[2] = {{0, UTIME_OMIT}, {1200000000, 5}};
    OK("utimensat atime OMIT, mtime explicit", ::utimensat(AT_FDCWD, P("t").c_str(), omit_atime, 0));
    r.note("times t", times(P("t")));
    {
      struct stat before {};
      ::stat(P("t").c_str(), &before);
      sleep_ms(30);
      const timespec a = now_ts();
      timespec now_mtime[2] = {{0, UTIME_OMIT}, {0, UTIME_NOW}};
      OK("utimensat atime OMIT, mtime NOW", ::utimensat(AT_FDCWD, P("t").c_str(), now_mtime, 0));
      const timespec b = now_ts();
      struct stat after {};
      ::stat(P("t").c_str(), &after);
      r.want("UTIME_OMIT kept atime", after.st_atim.tv_sec == 1000000000 && after.st_atim.tv_nsec == 123456789);
      r.want("UTIME_NOW set mtime to now", ts_sec(after.st_mtim) >= ts_sec(a) - 1 && ts_sec(after.st_mtim) <= ts_sec(b) + 1);
      r.want("utimensat moved ctime", ts_less(before.st_ctim, after.st_ctim));
      timespec now_atime[2] = {{0, UTIME_NOW}, {0, UTIME_OMIT}};
      OK("utimensat atime NOW, mtime OMIT", ::utimensat(AT_FDCWD, P("t").c_str(), now_atime, 0));
      struct stat again {};
      ::stat(P("t").c_str(), &again);
      r.want("UTIME_NOW set atime to now", ts_sec(again.st_atim) >= ts_sec(a) - 1 && ts_sec(again.st_atim) <= ts_sec(now_ts()) + 1);
      r.want("UTIME_OMIT kept mtime", ts_equal(again.st_mtim, after.st_mtim));
      timespec omit_both[2] = {{0, UTIME_OMIT}, {0, UTIME_OMIT}};
      OK("utimensat both OMIT", ::utimensat(AT_FDCWD, P("t").c_str(), omit_both, 0));
      OK("utimensat NULL", ::utimensat(AT_FDCWD, P("t").c_str(), nullptr, 0));
      ::stat(P("t").c_str(), &again);
      r.want("NULL set both to now", ts_sec(again.st_atim) >= ts_sec(a) - 1 && ts_sec(again.st_mtim) >= ts_sec(a) - 1);
      timespec bad[2] = {{0, 1000000000}, {0, 0}};
      OK("utimensat bad nsec", ::utimensat(AT_FDCWD, P("t").c_str(), bad, 0));
      timespec old[2] = {{-1, 0}, {0, 0}};
      OK("utimensat before 1970", ::utimensat(AT_FDCWD, P("t").c_str(), old, 0));
      r.note("times t", times(P("t")));
    }
    ::symlink("t", P("l").c_str());
    OK("utimensat on a symlink, AT_SYMLINK_NOFOLLOW", ::utimensat(AT_FDCWD, P("l").c_str(), set, AT_SYMLINK_NOFOLLOW));
    r.note("times l (the link)", times(P("l"), AT_SYMLINK_NOFOLLOW));
    {
      int fd = ::open(P("t").c_str(), O_RDONLY);
      OK("futimens", ::futimens(fd, set));
      ::close(fd);
      r.note("times t after futimens", times(P("t")));
    }

    // A write moves mtime and ctime; a read does not move them.
    {
      int fd = ::open(P("t").c_str(), O_RDWR);
      struct stat before {};
      struct stat after {};
      struct stat after_read {};
      ::fstat(fd, &before);
      sleep_ms(30);
      VAL("write t", ::write(fd, "more", 4));
      ::fstat(fd, &after);
      r.want("write moved mtime", ts_less(before.st_mtim, after.st_mtim));
      r.want("write moved ctime", ts_less(before.st_ctim, after.st_ctim));
      r.want("mtime after write is now", ts_sec(after.st_mtim) >= ts_sec(now_ts()) - 5);
      char b[4];
      sleep_ms(30);
      ::pread(fd, b, sizeof b, 0);
      ::fstat(fd, &after_read);
      r.want("read kept mtime", ts_equal(after_read.st_mtim, after.st_mtim));
      sleep_ms(30);
      OK("ftruncate t", ::ftruncate(fd, 1));
      struct stat after_trunc {};
      ::fstat(fd, &after_trunc);
      r.want("ftruncate moved mtime", ts_less(after.st_mtim, after_trunc.st_mtim));
      ::close(fd);
    }
    // Creating and removing entries moves the directory's mtime and ctime.
    {
      struct stat before {};
      struct stat after {};
      ::stat(P("d").c_str(), &before);
      sleep_ms(30);
      put_file(P("d/new"), "n");
      ::stat(P("d").c_str(), &after);
      r.want("create moved the dir's mtime", ts_less(before.st_mtim, after.st_mtim));
      sleep_ms(30);
      ::unlink(P("d/new").c_str());
      ::stat(P("d").c_str(), &before);
      r.want("unlink moved the dir's mtime", ts_less(after.st_mtim, before.st_mtim));
      sleep_ms(30);
      ::mkdir(P("d2").c_str(), 0755);
      ::stat(P("d").c_str(), &after);
      ::rename(P("d2").c_str(), P("d/d2").c_str());
      struct stat moved {};
      ::stat(P("d").c_str(), &moved);
      r.want("rename into the dir moved its mtime", ts_less(after.st_mtim, moved.st_mtim));
    }
    {
      struct stat a {};
      struct stat b {};
      ::stat(P("t").c_str(), &a);
      sleep_ms(30);
      ::link(P("t").c_str(), P("t-link").c_str());
      ::stat(P("t").c_str(), &b);
      r.want("link moved the file's ctime", ts_less(a.st_ctim, b.st_ctim));
    }
  });
  m.stop();
}

// =============================================================================================
// 9. statfs, statx, access, O_TMPFILE.

TEST_CASE(FS_NAME " vs tmpfs: statfs " STATFS_LIMIT ", statx, access() as a user, O_TMPFILE", "[mount][" FS_NAME "][statfs]") {
  TRANSPORT();
  mounts m(transport, 64 * MiB);
  START_FS(m);
  {
    struct statfs sf {};
    const long fuse_super_magic = 0x65735546;
    CHECK(guarded_client([&] { return ::statfs(m.fs.dir().c_str(), &sf) == 0 && sf.f_type == fuse_super_magic ? 0 : 1; }, 20, m.dev) == 0);
  }
  same_on_both(m, [](rec& r, const std::string& root) {
    auto P = [&](const std::string& n) { return root + "/" + n; };
    ::chmod(root.c_str(), 0755);
    struct statvfs v {};
    OK("statvfs", ::statvfs(root.c_str(), &v));
    r.info("statvfs bsize frsize blocks bfree bavail files ffree namemax",
           std::to_string(v.f_bsize) + " " + std::to_string(v.f_frsize) + " " + std::to_string(v.f_blocks) + " " +
               std::to_string(v.f_bfree) + " " + std::to_string(v.f_bavail) + " " + std::to_string(v.f_files) + " " +
               std::to_string(v.f_ffree) + " " + std::to_string(v.f_namemax));
    r.want("f_bsize and f_frsize nonzero", v.f_bsize > 0 && v.f_frsize > 0);
    // The limit: memfs's --size; passthrough reports its backing tmpfs's (mounted with size=64M).
    r.want("f_blocks * f_frsize is the 64 MiB limit", static_cast<off_t>(v.f_blocks * v.f_frsize) == 64 * MiB);
    r.want("f_bfree <= f_blocks, f_bavail <= f_bfree", v.f_bfree <= v.f_blocks && v.f_bavail <= v.f_bfree);
    r.want("f_namemax is 255", v.f_namemax == 255);
    const std::uint64_t free_before = v.f_bfree * v.f_frsize;
    {
      std::string mib(MiB, 'q');
      int fd = ::open(P("onemib").c_str(), O_CREAT | O_WRONLY, 0644);
      VAL("write 1 MiB", ::write(fd, mib.data(), mib.size()));
      ::close(fd);
    }
    ::statvfs(root.c_str(), &v);
    const std::uint64_t used = free_before - v.f_bfree * v.f_frsize;
    r.info("free space used by 1 MiB", std::to_string(used));
    r.want("writing 1 MiB uses 1 MiB (to 64 KiB)",
           used >= static_cast<std::uint64_t>(MiB) && used <= static_cast<std::uint64_t>(MiB + 64 * KiB));
    ::unlink(P("onemib").c_str());
    {
      std::uint64_t after = free_bytes_once(root, [&](std::uint64_t f) { return f == free_before; });
      r.info("free before writing 1 MiB, after unlinking it", std::to_string(free_before) + " " + std::to_string(after));
      r.want("unlink gives it back", after == free_before);
    }
    {
      struct statfs sf {};
      OK("statfs", ::statfs(root.c_str(), &sf));
      r.want("statfs f_bsize nonzero", sf.f_bsize > 0);
    }

    // statx.
    put_file(P("f"), "statx");
    const timespec t0 = now_ts();
    struct statx sx {};
    OK("statx f BASIC|BTIME", ::statx(AT_FDCWD, P("f").c_str(), 0, STATX_BASIC_STATS | STATX_BTIME, &sx));
    r.want("statx: all basic stats returned", (sx.stx_mask & STATX_BASIC_STATS) == STATX_BASIC_STATS);
    r.info("statx mask", std::to_string(sx.stx_mask));
    r.want("statx: btime, when given, is not in the future",
           !(sx.stx_mask & STATX_BTIME) || static_cast<double>(sx.stx_btime.tv_sec) <= ts_sec(t0) + 1);
    r.note("statx f: mode nlink size", oct(sx.stx_mode) + " " + std::to_string(sx.stx_nlink) + " " + std::to_string(sx.stx_size));
    {
      struct stat st {};
      ::stat(P("f").c_str(), &st);
      r.want("statx agrees with stat", sx.stx_ino == st.st_ino && sx.stx_size == static_cast<std::uint64_t>(st.st_size) &&
                                           sx.stx_mode == st.st_mode && sx.stx_mtime.tv_sec == st.st_mtim.tv_sec &&
                                           sx.stx_mtime.tv_nsec == static_cast<std::uint32_t>(st.st_mtim.tv_nsec));
    }
    OK("statx AT_STATX_FORCE_SYNC", ::statx(AT_FDCWD, P("f").c_str(), AT_STATX_FORCE_SYNC, STATX_BASIC_STATS, &sx));
    r.want("statx FORCE_SYNC: basic stats", (sx.stx_mask & STATX_BASIC_STATS) == STATX_BASIC_STATS);
    OK("statx AT_STATX_DONT_SYNC", ::statx(AT_FDCWD, P("f").c_str(), AT_STATX_DONT_SYNC, STATX_BASIC_STATS, &sx));
    r.want("statx DONT_SYNC: basic stats", (sx.stx_mask & STATX_BASIC_STATS) == STATX_BASIC_STATS);
    OK("statx size only", ::statx(AT_FDCWD, P("f").c_str(), 0, STATX_SIZE, &sx));
    r.want("statx STATX_SIZE: size given", (sx.stx_mask & STATX_SIZE) && sx.stx_size == 5);
    ::symlink("f", P("l").c_str());
    OK("statx l AT_SYMLINK_NOFOLLOW", ::statx(AT_FDCWD, P("l").c_str(), AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &sx));
    r.want("statx of the link is a link of size 1", S_ISLNK(sx.stx_mode) && sx.stx_size == 1);
    OK("statx l (follows)", ::statx(AT_FDCWD, P("l").c_str(), 0, STATX_BASIC_STATS, &sx));
    r.want("statx through the link is the file", S_ISREG(sx.stx_mode) && sx.stx_size == 5);
    OK("statx missing", ::statx(AT_FDCWD, P("missing").c_str(), 0, STATX_BASIC_STATS, &sx));
    {
      int fd = ::open(P("f").c_str(), O_RDONLY);
      OK("statx AT_EMPTY_PATH on an fd", ::statx(fd, "", AT_EMPTY_PATH, STATX_BASIC_STATS, &sx));
      r.want("statx via fd: basic stats", (sx.stx_mask & STATX_BASIC_STATS) == STATX_BASIC_STATS && sx.stx_size == 5);
      ::close(fd);
    }

    // access(): as root, and as nobody against the mode bits (default_permissions).
    put_file(P("m0600"), "x");
    ::chmod(P("m0600").c_str(), 0600);
    put_file(P("m0644"), "x");
    put_file(P("m0755"), "x");
    ::chmod(P("m0755").c_str(), 0755);
    put_file(P("m0000"), "x");
    ::chmod(P("m0000").c_str(), 0);
    put_file(P("m0606"), "x");
    ::chmod(P("m0606").c_str(), 0606);
    put_file(P("g0060"), "x");
    ::chown(P("g0060").c_str(), 0, nogroup);
    ::chmod(P("g0060").c_str(), 0060);
    ::mkdir(P("d0700").c_str(), 0700);
    put_file(P("d0700/inner"), "x");
    ::mkdir(P("d0711").c_str(), 0711);
    put_file(P("d0711/inner"), "x");
    ::chmod(P("d0711/inner").c_str(), 0644);
    OK("root: access m0000 R_OK|W_OK", ::access(P("m0000").c_str(), R_OK | W_OK));
    OK("root: access m0644 X_OK (no x bit at all)", ::access(P("m0644").c_str(), X_OK));
    OK("root: access m0755 X_OK", ::access(P("m0755").c_str(), X_OK));
    OK("root: access missing", ::access(P("missing").c_str(), F_OK));
    as_user(r, nobody, nogroup, [&] {
      for (const char* f : {"m0600", "m0644", "m0755", "m0000", "m0606", "g0060", "d0700", "d0711"}) {
        for (int mode : {F_OK, R_OK, W_OK, X_OK, R_OK | W_OK}) {
          OK(std::string("nobody: access ") + f + " mode " + std::to_string(mode), ::access(P(f).c_str(), mode));
        }
      }
      OK("nobody: access d0700/inner", ::access(P("d0700/inner").c_str(), F_OK));
      r.note("nobody: stat d0700/inner", stat_of(P("d0700/inner")));
      r.note("nobody: listing d0711 (no read)", listing(P("d0711")));
      r.note("nobody: content d0711/inner (search only)", content(P("d0711/inner")));
      r.note("nobody: content m0600", content(P("m0600")));
      r.note("nobody: content g0060 (group match)", content(P("g0060")));
      OK("nobody: open m0644 O_WRONLY", ::open(P("m0644").c_str(), O_WRONLY));
      OK("nobody: faccessat AT_EACCESS", ::faccessat(AT_FDCWD, P("m0644").c_str(), R_OK, AT_EACCESS));
    });

    // O_TMPFILE: an unnamed file, written, then given a name with linkat.
    ::mkdir(P("tmpdir").c_str(), 0755);
    int fd = OK("open O_TMPFILE|O_RDWR", ::open(P("tmpdir").c_str(), O_TMPFILE | O_RDWR, 0600));
    VAL("write to the tmpfile", ::write(fd, "tmp data", 8));
    r.note("fstat tmpfile", fstat_of(fd));
    r.note("listing tmpdir (no entry)", listing(P("tmpdir")));
    r.note("pread tmpfile", pread_str(fd, 100, 0));
    const std::string proc = "/proc/self/fd/" + std::to_string(fd);
    OK("linkat /proc/self/fd/N -> tmpdir/named", ::linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, P("tmpdir/named").c_str(), AT_SYMLINK_FOLLOW));
    r.note("stat tmpdir/named", stat_of(P("tmpdir/named")));
    r.note("fstat tmpfile (nlink 1)", fstat_of(fd));
    r.note("content tmpdir/named", content(P("tmpdir/named")));
    r.note("listing tmpdir", listing(P("tmpdir")));
    VAL("write more through the fd", ::pwrite(fd, "!", 1, 8));
    r.note("content tmpdir/named", content(P("tmpdir/named")));
    OK("linkat again to a second name", ::linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, P("tmpdir/second").c_str(), AT_SYMLINK_FOLLOW));
    r.note("stat tmpdir/second (nlink 2)", stat_of(P("tmpdir/second")));
    ::close(fd);
    fd = OK("open O_TMPFILE|O_EXCL", ::open(P("tmpdir").c_str(), O_TMPFILE | O_RDWR | O_EXCL, 0600));
    const std::string proc2 = "/proc/self/fd/" + std::to_string(fd);
    OK("linkat of an O_EXCL tmpfile", ::linkat(AT_FDCWD, proc2.c_str(), AT_FDCWD, P("tmpdir/never").c_str(), AT_SYMLINK_FOLLOW));
    ::close(fd);
    fd = OK("open O_TMPFILE|O_RDWR with linkat AT_EMPTY_PATH", ::open(P("tmpdir").c_str(), O_TMPFILE | O_WRONLY, 0640));
    VAL("write", ::write(fd, "e", 1));
    OK("linkat AT_EMPTY_PATH", ::linkat(fd, "", AT_FDCWD, P("tmpdir/empty-path").c_str(), AT_EMPTY_PATH));
    r.note("stat tmpdir/empty-path", stat_of(P("tmpdir/empty-path")));
    ::close(fd);
    OK("open O_TMPFILE|O_RDONLY", ::open(P("tmpdir").c_str(), O_TMPFILE | O_RDONLY, 0600));
    OK("open O_TMPFILE on a file", ::open(P("f").c_str(), O_TMPFILE | O_RDWR, 0600));
    {
      // A tmpfile that is never linked disappears with its data; its space is given back.
      const std::uint64_t before = free_bytes_once(root, [](std::uint64_t) { return true; });
      fd = ::open(P("tmpdir").c_str(), O_TMPFILE | O_RDWR, 0600);
      std::string mib(MiB, 'w');
      VAL("write 1 MiB to an unlinked tmpfile", ::write(fd, mib.data(), mib.size()));
      r.want("the tmpfile's data takes space", free_bytes_once(root, [](std::uint64_t) { return true; }) < before);
      ::close(fd);
      const std::uint64_t after = free_bytes_once(root, [&](std::uint64_t f) { return f == before; });
      r.info("free before the tmpfile, after closing it", std::to_string(before) + " " + std::to_string(after));
      r.want("its space is given back on close", after == before);
    }
    as_user(r, nobody, nogroup,
            [&] { OK("nobody: O_TMPFILE in a 0755 root-owned dir", ::open(P("tmpdir").c_str(), O_TMPFILE | O_RDWR, 0600)); });
    r.note("listing tmpdir", listing(P("tmpdir")));
  });
  m.stop();
}

// =============================================================================================
// 10. Inode lifetime.

TEST_CASE(FS_NAME " vs tmpfs: thousands of files created and unlinked: live inode numbers are unique; drop_caches (FORGET)",
          "[mount][" FS_NAME "][inodes]") {
  TRANSPORT();
  mounts m(transport);
  START_FS(m);
  same_on_both(
      m,
      [](rec& r, const std::string& root) {
        const std::string d = root + "/many";
        OK("mkdir many", ::mkdir(d.c_str(), 0755));
        std::map<std::string, ino_t> live;
        int held = -1;
        ino_t held_ino = 0;
        bool created = true, removed = true, unique = true, distinct_from_held = true, stable = true, stat_ok = true;
        for (int round = 0; round < 3; ++round) {
          for (int i = 0; i < 1500; ++i) {
            const std::string n = "r" + std::to_string(round) + "-" + std::to_string(i);
            int fd = ::open((d + "/" + n).c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644);
            if (fd < 0) {
              created = false;
              continue;
            }
            struct stat st {};
            created &= ::write(fd, n.data(), n.size()) == static_cast<ssize_t>(n.size()) && ::fstat(fd, &st) == 0;
            ::close(fd);
            live[n] = st.st_ino;
          }
          if (round == 0) {
            held = ::open((d + "/r0-1").c_str(), O_RDWR);
            struct stat st {};
            ::fstat(held, &st);
            held_ino = st.st_ino;
            removed &= ::unlink((d + "/r0-1").c_str()) == 0;
            live.erase("r0-1");
          }
          for (int i = 0; i < 1500; i += 2) {
            const std::string n = "r" + std::to_string(round) + "-" + std::to_string(i);
            removed &= ::unlink((d + "/" + n).c_str()) == 0;
            live.erase(n);
          }
          std::set<ino_t> seen;
          for (auto& [n, ino] : live) {
            struct stat st {};
            if (::stat((d + "/" + n).c_str(), &st) != 0) {
              stat_ok = false;
              continue;
            }
            unique &= seen.insert(st.st_ino).second;
            distinct_from_held &= st.st_ino != held_ino;
            stable &= st.st_ino == ino;
          }
        }
        r.want("every create succeeded", created);
        r.want("every unlink succeeded", removed);
        r.want("every live file stats", stat_ok);
        r.want("live files have unique st_ino", unique);
        r.want("no live file shares st_ino with the open unlinked one", distinct_from_held);
        r.want("st_ino stays what it was at create", stable);
        r.note("live files", std::to_string(live.size()));
        r.note("listing size", [&] {
          std::vector<dent> v;
          return read_dir(d, v) ? std::string("ERR") : std::to_string(v.size());
        }());
        {
          int fd = ::open("/proc/sys/vm/drop_caches", O_WRONLY);
          OK("echo 2 > /proc/sys/vm/drop_caches", ::write(fd, "2\n", 2));
          ::close(fd);
        }
        bool after_ok = true, same_ino = true, intact = true;
        for (auto& [n, ino] : live) {
          struct stat st {};
          if (::stat((d + "/" + n).c_str(), &st) != 0) {
            after_ok = false;
            continue;
          }
          same_ino &= st.st_ino == ino;
          std::string s;
          intact &= slurp(d + "/" + n, s) == 0 && s == n;
        }
        r.want("after drop_caches every live file stats", after_ok);
        r.want("after drop_caches st_ino is unchanged", same_ino);
        r.want("after drop_caches every file's data is intact", intact);
        r.note("held file after drop_caches", fstat_of(held));
        r.note("held file's data", pread_str(held, 64, 0));
        {
          struct stat st {};
          ::fstat(held, &st);
          r.want("held file keeps its st_ino", st.st_ino == held_ino);
        }
        ::close(held);
        // Everything removed, the directory too; then once more a second time.
        bool gone = true;
        for (auto& [n, ino] : live) gone &= ::unlink((d + "/" + n).c_str()) == 0;
        r.want("all removed", gone);
        OK("rmdir many", ::rmdir(d.c_str()));
        {
          int fd = ::open("/proc/sys/vm/drop_caches", O_WRONLY);
          OK("drop_caches again", ::write(fd, "2\n", 2));
          ::close(fd);
        }
        r.note("listing root", listing(root));
        // Deep nesting survives a cache drop as well.
        std::string p = root;
        bool deep = true;
        for (int i = 0; i < 40; ++i) {
          p += "/n" + std::to_string(i);
          deep &= ::mkdir(p.c_str(), 0755) == 0;
        }
        put_file(p + "/leaf", "leaf");
        {
          int fd = ::open("/proc/sys/vm/drop_caches", O_WRONLY);
          OK("drop_caches with a deep tree", ::write(fd, "2\n", 2));
          ::close(fd);
        }
        r.want("40 nested dirs", deep);
        r.note("deep leaf", content(p + "/leaf"));
      },
      90);
  std::string log = m.stop();
  INFO(counter_line(log, "FORGET") << "\n" << counter_line(log, "BATCH_FORGET"));
  CHECK(requests(log, "FORGET") + requests(log, "BATCH_FORGET") > 0);
}

// =============================================================================================
// 11. readdir stability under concurrent changes.

namespace {
struct linux_dirent64 {
  ino64_t d_ino;
  off64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[];
};
// One getdents64 call: entries (name, d_off) or -errno.
long getdents(int fd, std::size_t bufsize, std::vector<std::pair<std::string, off_t>>& out) {
  out.clear();
  std::vector<char> buf(bufsize);
  long n = ::syscall(SYS_getdents64, fd, buf.data(), buf.size());
  if (n < 0) return -errno;
  for (long at = 0; at < n;) {
    auto* e = reinterpret_cast<linux_dirent64*>(buf.data() + at);
    out.emplace_back(e->d_name, e->d_off);
    at += e->d_reclen;
  }
  return n;
}
}  // namespace

TEST_CASE(FS_NAME " vs tmpfs: listing a 2000-entry directory in small pieces while entries come and go", "[mount][" FS_NAME "][readdir]") {
  TRANSPORT();
  mounts m(transport);
  START_FS(m);
  same_on_both(
      m,
      [](rec& r, const std::string& root) {
        const std::string d = root + "/big";
        ::mkdir(d.c_str(), 0755);
        std::set<std::string> keeps, victims;
        bool made = true;
        char name[64];
        for (int i = 0; i < 2000; ++i) {
          std::snprintf(name, sizeof name, "keep-%04d", i);
          keeps.insert(name);
          made &= close_now(::open((d + "/" + name).c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644)) == 0;
        }
        for (int i = 0; i < 200; ++i) {
          std::snprintf(name, sizeof name, "victim-%03d", i);
          victims.insert(name);
          made &= ::mkdir((d + "/" + name).c_str(), 0755) == 0;
        }
        r.want("2200 entries made", made);

        int fd = ::open(d.c_str(), O_RDONLY | O_DIRECTORY);
        std::map<std::string, int> seen;
        std::set<std::string> temps, removed_victims;
        int calls = 0;
        bool errors = false;
        std::vector<std::pair<std::string, off_t>> got;
        for (;;) {
          long n = getdents(fd, 512, got);
          if (n < 0) {
            errors = true;
            break;
          }
          if (n == 0) break;
          for (auto& [nm, off] : got) ++seen[nm];
          ++calls;
          // Changes behind the reader's back: a new entry, a victim removed, an older new one removed.
          std::snprintf(name, sizeof name, "temp-%05d", calls);
          temps.insert(name);
          made &= close_now(::open((d + "/" + name).c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644)) == 0;
          if (calls <= 200) {
            std::snprintf(name, sizeof name, "victim-%03d", calls - 1);
            made &= ::rmdir((d + "/" + name).c_str()) == 0;
            removed_victims.insert(name);
          }
          if (calls > 3 && calls % 2 == 0) {
            std::snprintf(name, sizeof name, "temp-%05d", calls - 3);
            made &= ::unlink((d + "/" + name).c_str()) == 0;
            temps.erase(name);
            temps.insert(std::string(name) + "(gone)");
          }
          if (calls > 5000) break;
        }
        ::close(fd);
        r.want("getdents64 never failed", !errors);
        r.want("the changes succeeded", made);
        r.info("getdents64 calls", std::to_string(calls));
        bool keeps_once = true, none_twice = true, none_unknown = true;
        std::string problems;
        for (auto& k : keeps)
          if (seen[k] != 1) keeps_once = false, problems += k + "x" + std::to_string(seen[k]) + " ";
        for (auto& [nm, count] : seen) {
          if (count > 1) none_twice = false, problems += nm + " twice ";
          bool known = nm == "." || nm == ".." || keeps.count(nm) || victims.count(nm) || nm.rfind("temp-", 0) == 0;
          if (!known) none_unknown = false, problems += "unknown " + nm + " ";
        }
        r.want("every entry that stayed throughout seen exactly once", keeps_once);
        r.want("no entry seen twice", none_twice);
        r.want("nothing unknown seen", none_unknown);
        r.want(". and .. seen once each", seen["."] == 1 && seen[".."] == 1);
        r.info("problems", problems.substr(0, 2000));

        // The directory, now still: a full pass in small pieces, then a seek back to a saved d_off
        // continues right after that entry.
        fd = ::open(d.c_str(), O_RDONLY | O_DIRECTORY);
        std::vector<std::pair<std::string, off_t>> all;
        for (;;) {
          long n = getdents(fd, 300, got);
          if (n <= 0) break;
          all.insert(all.end(), got.begin(), got.end());
        }
        std::size_t live_temps = 0;
        for (auto& t : temps)
          if (t.find("(gone)") == std::string::npos) ++live_temps;
        r.want("the full pass lists every entry once",
               all.size() == 2 + keeps.size() + live_temps + victims.size() - removed_victims.size());
        {
          std::set<std::string> names;
          for (auto& e : all) names.insert(e.first);
          r.want("the full pass has no duplicates", names.size() == all.size());
        }
        bool resumed = false, rewound = false;
        if (all.size() > 1000) {
          const std::size_t k = 1000;
          r.want("lseek to the d_off of entry 1000", ::lseek(fd, all[k].second, SEEK_SET) == all[k].second);
          std::vector<std::pair<std::string, off_t>> rest;
          for (;;) {
            long n = getdents(fd, 300, got);
            if (n <= 0) break;
            rest.insert(rest.end(), got.begin(), got.end());
          }
          resumed = rest.size() == all.size() - k - 1 && std::equal(rest.begin(), rest.end(), all.begin() + k + 1);
          ::lseek(fd, 0, SEEK_SET);
          std::size_t again = 0;
          for (;;) {
            long n = getdents(fd, 4096, got);
            if (n <= 0) break;
            again += got.size();
          }
          rewound = again == all.size();
        }
        r.want("seeking to a saved d_off resumes right after that entry", resumed);
        r.want("rewinding lists everything again", rewound);
        {
          std::vector<char> tiny(8);
          OK("getdents64 with a buffer too small for one entry", ::syscall(SYS_getdents64, fd, tiny.data(), tiny.size()));
        }
        ::close(fd);
        // The same with readdir(3) (libc's 32 KiB buffer) while deleting every other keep.
        DIR* dir = ::opendir(d.c_str());
        std::map<std::string, int> seen2;
        int i = 0;
        std::set<std::string> deleted;
        while (dirent* e = ::readdir(dir)) {
          ++seen2[e->d_name];
          if (++i % 2 == 0) {
            std::snprintf(name, sizeof name, "keep-%04d", 1999 - i);
            if (i < 2000 && ::unlink((d + "/" + name).c_str()) == 0) deleted.insert(name);
          }
        }
        ::closedir(dir);
        bool once = true;
        for (auto& k : keeps)
          if (!deleted.count(k) && seen2[k] != 1) once = false;
        for (auto& [nm, c] : seen2)
          if (c != 1) once = false;
        r.want("readdir(3) while deleting: the others seen exactly once", once);
      },
      90);
  m.stop();
}

// =============================================================================================
// 12. The --size limit.

TEST_CASE(FS_NAME " vs tmpfs: " SIZE_LIMIT ": ENOSPC, earlier data intact, statfs shows the limit, space reusable",
          "[mount][" FS_NAME "][size]") {
  TRANSPORT();
  mounts m(transport, 8 * MiB);
  START_FS(m);
  same_on_both(m, [](rec& r, const std::string& root) {
    auto P = [&](const std::string& n) { return root + "/" + n; };
    std::mt19937 g(11);
    std::string a(2 * MiB, '\0');
    for (auto& c : a) c = static_cast<char>(g());
    struct statvfs v {};
    ::statvfs(root.c_str(), &v);
    r.want("statfs: f_blocks * f_frsize is 8 MiB", static_cast<off_t>(v.f_blocks * v.f_frsize) == 8 * MiB);
    r.want("statfs: all free", v.f_bfree == v.f_blocks);
    r.info("statvfs frsize blocks bfree bavail", std::to_string(v.f_frsize) + " " + std::to_string(v.f_blocks) + " " +
                                                     std::to_string(v.f_bfree) + " " + std::to_string(v.f_bavail));
    int fd = ::open(P("a").c_str(), O_CREAT | O_WRONLY, 0644);
    VAL("write a (2 MiB)", ::write(fd, a.data(), a.size()));
    ::close(fd);
    ::statvfs(root.c_str(), &v);
    r.want("statfs: 6 MiB free (to 64 KiB)", v.f_bfree * v.f_frsize <= static_cast<std::uint64_t>(6 * MiB) &&
                                                 v.f_bfree * v.f_frsize >= static_cast<std::uint64_t>(6 * MiB - 64 * KiB));

    // 16 MiB into b, in 64 KiB writes, until the space runs out.
    std::string b(16 * MiB, '\0');
    for (auto& c : b) c = static_cast<char>(g());
    fd = ::open(P("b").c_str(), O_CREAT | O_WRONLY, 0644);
    off_t written = 0;
    int err = 0;
    while (written < static_cast<off_t>(b.size())) {
      ssize_t n = ::pwrite(fd, b.data() + written, 64 * KiB, written);
      if (n < 0) {
        err = errno;
        break;
      }
      if (n == 0) break;
      written += n;
    }
    r.note("writing 16 MiB ends with", err ? err_str(err) : "no error");
    r.info("b: bytes written", std::to_string(written));
    r.want("b: between 5 and 6 MiB written", written >= 5 * MiB && written <= 6 * MiB);
    OK("close b", ::close(fd));
    {
      struct stat st {};
      ::stat(P("b").c_str(), &st);
      r.want("b's size is what was written", st.st_size == written);
      std::string s;
      slurp(P("b"), s);
      r.want("b holds what was written", s == b.substr(0, static_cast<std::size_t>(written)));
    }
    {
      std::string s;
      r.want("a is intact", slurp(P("a"), s) == 0 && s == a);
    }
    ::statvfs(root.c_str(), &v);
    r.want("statfs: nearly nothing free (< 64 KiB)", v.f_bfree * v.f_frsize < static_cast<std::uint64_t>(64 * KiB));
    r.want("statfs: f_bavail <= f_bfree", v.f_bavail <= v.f_bfree);
    fd = ::open(P("c").c_str(), O_CREAT | O_WRONLY, 0644);
    OK("write 1 MiB more", ::write(fd, b.data(), MiB));
    ::close(fd);
    OK("fallocate 16 MiB", [&] {
      int f = ::open(P("e").c_str(), O_CREAT | O_WRONLY, 0644);
      int rc = ::fallocate(f, 0, 0, 16 * MiB);
      int e = errno;
      ::close(f);
      errno = e;
      return rc;
    }());
    // A sparse truncate needs no space.
    OK("truncate a sparse file to 1 GiB", ::truncate(P("e").c_str(), GiB));
    // Space comes back.
    r.info("free after the failed fallocate", std::to_string(free_bytes_once(root, [](std::uint64_t) { return true; })));
    r.want("a failed fallocate takes no space (nearly nothing free, as before)",
           free_bytes_once(root, [](std::uint64_t) { return true; }) < static_cast<std::uint64_t>(64 * KiB));
    OK("unlink b", ::unlink(P("b").c_str()));
    {
      auto about_6 = [](std::uint64_t f) {
        return f >= static_cast<std::uint64_t>(6 * MiB - 512 * KiB) && f <= static_cast<std::uint64_t>(6 * MiB + 64 * KiB);
      };
      std::uint64_t f = free_bytes_once(root, about_6);
      r.info("free after unlinking b", std::to_string(f));
      r.want("statfs after unlinking b: ~6 MiB free", about_6(f));
    }
    fd = ::open(P("c").c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
    VAL("write 5 MiB into c", ::write(fd, b.data(), 5 * MiB));
    ::close(fd);
    {
      std::string s;
      r.want("c holds its 5 MiB", slurp(P("c"), s) == 0 && s == b.substr(0, 5 * MiB));
    }
    OK("fallocate 512 KiB (fits)", [&] {
      int f = ::open(P("e").c_str(), O_WRONLY);
      int rc = ::fallocate(f, FALLOC_FL_KEEP_SIZE, 0, 512 * KiB);
      int e = errno;
      ::close(f);
      errno = e;
      return rc;
    }());
    // Shrinking gives space back as well.
    OK("truncate c to 1 MiB", ::truncate(P("c").c_str(), MiB));
    ::unlink(P("e").c_str());
    {
      auto about_5 = [](std::uint64_t f) {
        return f >= static_cast<std::uint64_t>(5 * MiB - 512 * KiB) && f <= static_cast<std::uint64_t>(5 * MiB + 64 * KiB);
      };
      std::uint64_t f = free_bytes_once(root, about_5);
      r.info("free after truncating c", std::to_string(f));
      r.want("statfs after truncating c: ~5 MiB free", about_5(f));
    }
    // Overwriting in place needs no more space.
    fd = ::open(P("a").c_str(), O_WRONLY);
    VAL("overwrite a in place", ::pwrite(fd, b.data(), 2 * MiB, 0));
    ::close(fd);
    ::unlink(P("a").c_str());
    ::unlink(P("c").c_str());
    {
      std::uint64_t f = free_bytes_once(root, [](std::uint64_t x) { return x == static_cast<std::uint64_t>(8 * MiB); });
      r.info("free with everything deleted", std::to_string(f));
      r.want("statfs with everything deleted: all free again", f == static_cast<std::uint64_t>(8 * MiB));
    }
    fd = ::open(P("full").c_str(), O_CREAT | O_WRONLY, 0644);
    VAL("write 7 MiB", ::write(fd, b.data(), 7 * MiB));
    ::close(fd);
    r.note("stat full", stat_of(P("full")));
  });
  m.stop();
}

// =============================================================================================
// 13. Real tools.

namespace {
void check_sh(const mounts& m, const std::string& what, const std::string& cmd, int seconds = 60) {
  INFO(what << ":\n" << cmd);
  bool hung = false;
  int rc = guarded_sh(cmd, seconds, m.dev, &hung);
  INFO((hung ? "hung in a FUSE request " + fs_name + " never answered: connection aborted" : std::string()));
  CHECK(rc == 0);
  CHECK_FALSE(hung);
}
}  // namespace

TEST_CASE(FS_NAME " with real tools: tar, cp -a, diff, dd of a 2 GiB sparse file, mv, ln -s, find, du, df, git",
          "[mount][" FS_NAME "][tools]") {
  TRANSPORT();
  mounts m(transport);
  START_FS(m);
  const std::string R = m.ref.dir(), M = m.fs.dir();
  const std::string meta =
      "find . ! -type d -printf \"%y %m %n %U %G %s %T@ %p %l\\n\"; find . -type d -printf \"%y %m %n %U %G %T@ %p\\n\"";
  check_sh(m, "the source tree on tmpfs",
           "set -e; cd " + R +
               " && mkdir -p src/dir/sub src/emptydir && printf hello > src/dir/file && : > src/empty && "
               "ln -s dir/file src/link && ln src/dir/file src/hard && mkfifo src/fifo && "
               "head -c 300000 /dev/urandom > src/dir/sub/big && chmod 0640 src/empty && chmod 0700 src/dir/sub && "
               "touch -h -d \"2020-01-02 03:04:05\" src/link");
  // tar: from tmpfs into the file system and back; the archives' listings and the archives themselves agree.
  check_sh(m, "tar cf on tmpfs", "set -e; cd " + R + "/src && tar --sort=name -cf " + R + "/a.tar .");
  check_sh(m, "tar xf into " + fs_name, "set -e; mkdir " + M + "/x && tar -xpf " + R + "/a.tar -C " + M + "/x");
  check_sh(m, "tar cf of the tree in " + fs_name, "set -e; cd " + M + "/x && tar --sort=name -cf " + R + "/b.tar .");
  check_sh(m, "diff -r of the trees", "diff -r --no-dereference -x fifo " + R + "/src " + M + "/x && test -p " + M + "/x/fifo");
  check_sh(m, "tar tvf listings agree",
           "set -e; tar --full-time -tvf " + R + "/a.tar > " + R + "/a.lst && tar --full-time -tvf " + R + "/b.tar > " + R +
               "/b.lst && diff " + R + "/a.lst " + R + "/b.lst");
  check_sh(m, "the archives are identical", "cmp " + R + "/a.tar " + R + "/b.tar");
  check_sh(m, "the hard link is one inode in " + fs_name,
           "test $(stat -c %i " + M + "/x/hard) = $(stat -c %i " + M + "/x/dir/file) && test $(stat -c %h " + M + "/x/hard) = 2");
  check_sh(m, fs_name + " holds the tree's metadata as extracted on tmpfs",
           "set -e; mkdir " + R + "/y && tar -xpf " + R + "/a.tar -C " + R + "/y && (cd " + R + "/y && " + meta + ") | sort > " + R +
               "/y.meta && (cd " + M + "/x && " + meta + ") | sort > " + R + "/x.meta && diff " + R + "/y.meta " + R + "/x.meta");
  // cp -a: everything preserved, to the nanosecond.
  check_sh(m, "cp -a into " + fs_name, "cp -a " + R + "/src " + M + "/cp");
  check_sh(m, "diff -r after cp -a", "diff -r --no-dereference -x fifo " + R + "/src " + M + "/cp && test -p " + M + "/cp/fifo");
  check_sh(m, "cp -a kept modes, owners, links, sizes and times",
           "set -e; (cd " + R + "/src && " + meta + ") | sort > " + R + "/src.meta && (cd " + M + "/cp && " + meta + ") | sort > " + R +
               "/cp.meta && diff " + R + "/src.meta " + R + "/cp.meta");
  check_sh(m, "cp -a back out of " + fs_name,
           "set -e; cp -a " + M + "/cp " + R + "/back && diff -r --no-dereference -x fifo " + R + "/src " + R + "/back");
  // dd: a 2 GiB sparse file.
  check_sh(m, "dd: a 2 GiB sparse file",
           "set -e; dd if=/dev/zero of=" + M + "/sparse bs=1 count=0 seek=2G status=none && test $(stat -c %s " + M +
               "/sparse) = 2147483648 && test $(du -k " + M + "/sparse | cut -f1) -lt 1024");
  check_sh(m, "dd: 4 MiB at its end",
           "set -e; head -c 4194304 /dev/urandom > " + R + "/tail && dd if=" + R + "/tail of=" + M +
               "/sparse bs=1M seek=2044 conv=notrunc status=none && test $(stat -c %s " + M + "/sparse) = 2147483648 && tail -c 4194304 " +
               M + "/sparse | cmp - " + R + "/tail && cmp -n 16777216 " + M + "/sparse /dev/zero && test $(du -k " + M +
               "/sparse | cut -f1) -lt 65536");
  check_sh(m, "dd: reading the whole 2 GiB file", "test $(dd if=" + M + "/sparse bs=4M status=none | wc -c) = 2147483648", 120);
  check_sh(m, "rm of the sparse file", "rm " + M + "/sparse");
  // mv, ln -s, find, du, df.
  check_sh(m, "mv across directories",
           "set -e; mkdir " + M + "/m1 " + M + "/m2 && echo x > " + M + "/m1/f && mkdir " + M + "/m1/d && echo y > " + M +
               "/m1/d/g && mv " + M + "/m1/f " + M + "/m2/g && mv " + M + "/m1/d " + M + "/m2/ && test ! -e " + M + "/m1/f && grep -qx x " +
               M + "/m2/g && grep -qx y " + M + "/m2/d/g && test -z \"$(ls -A " + M + "/m1)\"");
  check_sh(m, "mv out to tmpfs and back (copy and delete)",
           "set -e; mv " + M + "/m2 " + R + "/m2 && test ! -e " + M + "/m2 && mv " + R + "/m2 " + M + "/m3 && grep -qx y " + M + "/m3/d/g");
  check_sh(m, "ln -s",
           "set -e; ln -s some/target " + M + "/l && test \"$(readlink " + M + "/l)\" = some/target && ln -s x/dir/file " + M +
               "/l2 && test \"$(cat " + M + "/l2)\" = hello && ln -sf dir " + M + "/l && test \"$(readlink " + M + "/l)\" = dir");
  check_sh(m, "find | wc -l agrees", "test \"$(cd " + R + "/src && find . | wc -l)\" = \"$(cd " + M + "/x && find . | wc -l)\"");
  check_sh(m, "find -type counts agree",
           "set -e; for t in f d l p; do test \"$(cd " + R + "/src && find . -type $t | wc -l)\" = \"$(cd " + M +
               "/x && find . -type $t | wc -l)\"; done");
  check_sh(m, "du -s works and counts the data", "set -e; du -s " + M + "/x > /dev/null && test $(du -sk " + M + "/x | cut -f1) -ge 290");
  check_sh(m, "du -sb of files agrees",
           "test \"$(cd " + R + "/src && find . -type f -exec cat {} + | wc -c)\" = \"$(cd " + M +
               "/x && find . -type f -exec cat {} + | wc -c)\"");
  check_sh(m, "df",
           "set -e; df " + M + " > /dev/null && df -i " + M + " > /dev/null && df -B1 --output=size " + M +
               " | tail -n 1 | grep -q \"[0-9]\"");
  check_sh(m, "rm -rf", "set -e; rm -rf " + M + "/cp " + M + "/m3 && test ! -e " + M + "/cp");
  // git, when installed.
  if (std::system("command -v git > /dev/null") == 0) {
    check_sh(m, "git init, add, commit, gc, fsck inside the mount",
             "set -e; export HOME=" + R +
                 " GIT_CONFIG_NOSYSTEM=1 GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@example.com "
                 "GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@example.com; mkdir " +
                 M + "/repo && cd " + M +
                 "/repo && git init -q && "
                 "printf \"hello\\n\" > a.txt && mkdir sub && printf x > sub/b && cp " +
                 R +
                 "/tail sub/blob && git add . && "
                 "git commit -qm first && test -z \"$(git status --porcelain)\" && echo more >> a.txt && git commit -qam second && "
                 "test $(git log --oneline | wc -l) = 2 && git mv sub/b sub/c && git commit -qm third && git gc -q && git fsck "
                 "--no-progress && "
                 "git checkout -q HEAD~2 && test -f sub/b && git checkout -q - && test -f sub/c && test -z \"$(git status --porcelain)\"",
             120);
  } else {
    WARN("git is not installed: the git round trip is skipped");
  }
  check_backing(m, "after the tools ran");
  check_sh(m, "rm -rf of everything", "set -e; rm -rf " + M + "/* && test -z \"$(ls -A " + M + ")\"");
  check_backing(m, "after rm -rf of everything");
  m.stop();
}

// =============================================================================================
// 14. Random operations, the file system and tmpfs side by side.

namespace {

struct op {
  std::string kind, a, b, data, xname;
  off_t off = 0, len = 0;
  mode_t mode = 0;
  int flags = 0;
  std::string desc() const {
    std::string d = kind + " " + a;
    if (!b.empty()) d += " -> " + b;
    if (kind == "write" || kind == "read")
      d += " off=" + std::to_string(off) + " len=" + std::to_string(kind == "write" ? data.size() : static_cast<std::size_t>(len));
    if (kind == "truncate") d += " len=" + std::to_string(len);
    if (kind == "create" || kind == "mkdir" || kind == "chmod") d += " mode=" + oct(mode);
    if (kind == "create" || kind == "rename" || kind == "setxattr" || kind == "write") d += " flags=" + std::to_string(flags);
    if (!xname.empty()) d += " " + xname + "=" + show(data);
    return d;
  }
};

// What the reference tree holds now (relative paths, sorted, symlinks not followed): the random
// operations mostly name what exists, or a new name in an existing directory, so that most succeed.
struct tree_paths {
  std::vector<std::string> files, dirs{""}, all;
};
void collect_paths(const std::string& root, const std::string& rel, tree_paths& t) {
  std::vector<dent> v;
  if (read_dir(rel.empty() ? root : root + "/" + rel, v) != 0) return;
  std::vector<std::string> names;
  for (auto& d : v)
    if (d.name != "." && d.name != "..") names.push_back(d.name);
  std::sort(names.begin(), names.end());
  for (auto& n : names) {
    const std::string p = rel.empty() ? n : rel + "/" + n;
    struct stat st {};
    if (::lstat((root + "/" + p).c_str(), &st) != 0) continue;
    t.all.push_back(p);
    if (S_ISREG(st.st_mode)) t.files.push_back(p);
    if (S_ISDIR(st.st_mode)) {
      t.dirs.push_back(p);
      collect_paths(root, p, t);
    }
  }
}

const char* const model_names[] = {"a", "b", "c", "d", "e"};

// Any path of 1 to 3 names, existing or not.
std::string random_path(std::mt19937_64& g) {
  int depth = 1 + (g() % 100 < 50 ? 0 : g() % 100 < 70 ? 1 : 2);
  std::string p;
  for (int i = 0; i < depth; ++i) p += (i ? "/" : "") + std::string(model_names[g() % 5]);
  return p;
}
// Mostly one of `pool`, else any path.
std::string existing_path(std::mt19937_64& g, const std::vector<std::string>& pool) {
  if (!pool.empty() && g() % 100 < 85) return pool[g() % pool.size()];
  return random_path(g);
}
// Mostly a name in an existing directory, else any path.
std::string new_path(std::mt19937_64& g, const tree_paths& t) {
  if (g() % 100 < 80) {
    const std::string& dir = t.dirs[g() % t.dirs.size()];
    const std::string name = model_names[g() % 5];
    return dir.empty() ? name : dir + "/" + name;
  }
  return random_path(g);
}

op random_op(std::mt19937_64& g, const tree_paths& t) {
  static const std::vector<std::pair<const char*, int>> kinds = {{"create", 12}, {"write", 18},   {"read", 8},        {"truncate", 7},
                                                                 {"rename", 10}, {"link", 6},     {"unlink", 10},     {"mkdir", 9},
                                                                 {"rmdir", 6},   {"setxattr", 6}, {"removexattr", 2}, {"symlink", 3},
                                                                 {"stat", 2},    {"chmod", 1}};
  int total = 0;
  for (auto& k : kinds) total += k.second;
  int pick = static_cast<int>(g() % static_cast<unsigned>(total));
  op o;
  for (auto& k : kinds) {
    if (pick < k.second) {
      o.kind = k.first;
      break;
    }
    pick -= k.second;
  }
  std::vector<std::string> subdirs(t.dirs.begin() + 1, t.dirs.end());
  if (o.kind == "create") o.a = g() % 100 < 70 ? new_path(g, t) : existing_path(g, t.files);
  else if (o.kind == "write" || o.kind == "read" || o.kind == "truncate") o.a = existing_path(g, t.files);
  else if (o.kind == "rmdir") o.a = existing_path(g, subdirs);
  else if (o.kind == "mkdir" || o.kind == "symlink") o.a = new_path(g, t);
  else if (o.kind == "link") o.a = existing_path(g, t.files);
  else o.a = existing_path(g, t.all);
  static const mode_t modes[] = {0644, 0600, 0755, 0640};
  if (o.kind == "create") {
    o.mode = modes[g() % 4];
    o.flags = (g() % 3 == 0 ? O_EXCL : 0) | (g() % 4 == 0 ? O_TRUNC : 0);
  } else if (o.kind == "write") {
    o.off = static_cast<off_t>(g() % (MiB + 1));
    std::size_t len = g() % 4 == 0 ? 1 + g() % 100 : 1 + g() % (64 * KiB);
    o.data.resize(len);
    for (auto& c : o.data) c = static_cast<char>(g());
    o.flags = g() % 10 == 0 ? O_APPEND : 0;
  } else if (o.kind == "read") {
    o.off = static_cast<off_t>(g() % (MiB + 200 * KiB));
    o.len = static_cast<off_t>(1 + g() % (64 * KiB));
  } else if (o.kind == "truncate") {
    o.len = g() % 5 == 0 ? 0 : static_cast<off_t>(g() % (MiB + 200 * KiB));
  } else if (o.kind == "rename") {
    o.b = g() % 100 < 60 ? new_path(g, t) : existing_path(g, t.all);
    unsigned x = g() % 10;
    o.flags = x == 0 ? RENAME_NOREPLACE : x == 1 ? RENAME_EXCHANGE : 0;
  } else if (o.kind == "link") {
    o.b = new_path(g, t);
  } else if (o.kind == "mkdir") {
    o.mode = g() % 4 == 0 ? 0700 : 0755;
  } else if (o.kind == "setxattr" || o.kind == "removexattr") {
    o.xname = "user.k" + std::to_string(g() % 4);
    if (o.kind == "setxattr") {
      o.data.resize(g() % 40);
      for (auto& c : o.data) c = static_cast<char>('a' + g() % 26);
      unsigned x = g() % 4;
      o.flags = x == 0 ? XATTR_CREATE : x == 1 ? XATTR_REPLACE : 0;
    }
  } else if (o.kind == "symlink") {
    static const char* targets[] = {"a", "b", "c/d", "zz", ".", "e/a/b"};
    o.b = targets[g() % 6];
  } else if (o.kind == "chmod") {
    o.mode = modes[g() % 4];
  }
  return o;
}

std::string outcome(long v) {
  int e = errno;
  return v < 0 ? err_str(e) : std::to_string(v);
}

// Applies one operation under `root`; every system call's outcome, in order.
std::string apply_op(const std::string& root, const op& o) {
  const std::string a = root + "/" + o.a, b = root + "/" + o.b;
  std::string out;
  if (o.kind == "create") {
    int fd = ::open(a.c_str(), O_CREAT | O_WRONLY | o.flags, o.mode);
    out = "open=" + outcome(fd < 0 ? -1 : 0);
    if (fd >= 0) out += " close=" + outcome(::close(fd));
  } else if (o.kind == "write") {
    int fd = ::open(a.c_str(), O_WRONLY | o.flags);
    out = "open=" + outcome(fd < 0 ? -1 : 0);
    if (fd >= 0) {
      out += " pwrite=" + outcome(::pwrite(fd, o.data.data(), o.data.size(), o.off));
      out += " close=" + outcome(::close(fd));
    }
  } else if (o.kind == "read") {
    int fd = ::open(a.c_str(), O_RDONLY);
    out = "open=" + outcome(fd < 0 ? -1 : 0);
    if (fd >= 0) {
      int e = 0;
      std::string s = pread_raw(fd, static_cast<std::size_t>(o.len), o.off, e);
      out += " pread=" + (e ? err_str(e) : show(s));
      ::close(fd);
    }
  } else if (o.kind == "truncate") {
    out = outcome(::truncate(a.c_str(), o.len));
  } else if (o.kind == "rename") {
    out = outcome(::syscall(SYS_renameat2, AT_FDCWD, a.c_str(), AT_FDCWD, b.c_str(), o.flags));
  } else if (o.kind == "link") {
    out = outcome(::link(a.c_str(), b.c_str()));
  } else if (o.kind == "unlink") {
    out = outcome(::unlink(a.c_str()));
  } else if (o.kind == "mkdir") {
    out = outcome(::mkdir(a.c_str(), o.mode));
  } else if (o.kind == "rmdir") {
    out = outcome(::rmdir(a.c_str()));
  } else if (o.kind == "setxattr") {
    out = outcome(::setxattr(a.c_str(), o.xname.c_str(), o.data.data(), o.data.size(), o.flags));
  } else if (o.kind == "removexattr") {
    out = outcome(::removexattr(a.c_str(), o.xname.c_str()));
  } else if (o.kind == "symlink") {
    out = outcome(::symlink(o.b.c_str(), a.c_str()));
  } else if (o.kind == "stat") {
    out = lstat_of(a);
  } else if (o.kind == "chmod") {
    out = outcome(::chmod(a.c_str(), o.mode));
  }
  return out;
}

std::uint64_t model_seed() {
  static const std::uint64_t seed = [] {
    for (const char* name : {"FS_SUITE_SEED", "MEMFS_TEST_SEED"})
      if (const char* s = std::getenv(name)) return static_cast<std::uint64_t>(std::strtoull(s, nullptr, 0));
    return (static_cast<std::uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}();
  }();
  return seed;
}

}  // namespace

TEST_CASE(FS_NAME " vs tmpfs: 2000 random operations side by side agree step by step; the trees end identical",
          "[mount][" FS_NAME "][random]") {
  TRANSPORT();
  const std::uint64_t seed = model_seed();
  WARN("random model test seed: " << seed << " (set FS_SUITE_SEED to repeat)");
  mounts m(transport);
  START_FS(m);
  const std::string R = m.ref.dir(), M = m.fs.dir();
  int fd = ::memfd_create("fs-suite-model-report", MFD_CLOEXEC);
  int current = ::memfd_create("fs-suite-model-current-step", MFD_CLOEXEC);  // for a report if the fs hangs
  REQUIRE(fd >= 0);
  REQUIRE(current >= 0);
  const auto started = std::chrono::steady_clock::now();
  bool hung = false;
  int rc = guarded_client(
      [&] {
        ::umask(022);
        rec r(fd);
        std::mt19937_64 g(seed);
        std::map<std::string, int> ok_counts;
        for (int step = 1; step <= 2000; ++step) {
          tree_paths t;
          collect_paths(R, "", t);
          op o = random_op(g, t);
          const std::string now_doing = "step " + std::to_string(step) + ": " + o.desc();
          if (::ftruncate(current, 0) != 0 || ::pwrite(current, now_doing.data(), now_doing.size(), 0) < 0) return 4;
          std::string want = apply_op(R, o), got = apply_op(M, o);
          if (want != got) {
            r.put("step " + std::to_string(step) + ": " + o.desc() + ": tmpfs " + want + " | " + fs_name + " " + got);
            return 1;
          }
          if (want.find("ERR") == std::string::npos) ++ok_counts[o.kind];
          if (step % 250 == 0 || step == 2000) {
            std::string d = tree_diff(R, M);
            if (d.empty() && m.backing) d = tree_diff(m.backing->dir(), M, "backing", fs_name);
            if (!d.empty()) {
              r.put("after step " + std::to_string(step) + " (last: " + o.desc() + "): trees differ: " + d);
              return 2;
            }
          }
        }
        std::string summary;
        for (auto& [k, n] : ok_counts) summary += k + "=" + std::to_string(n) + " ";
        r.put("successful operations: " + summary);
        return 0;
      },
      120, m.dev, &hung);
  auto lines = read_lines(fd);
  ::close(fd);
  if (hung)
    lines.push_back("hung in a FUSE request " + fs_name + " never answered (connection aborted) at " + [&] {
      auto l = read_lines(current);
      return l.empty() ? std::string("?") : l[0];
    }());
  ::close(current);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::string report;
  for (auto& l : lines) report += l + "\n";
  INFO("seed " << seed << ", " << secs << " s\n" << report);
  CHECK(rc == 0);
  CHECK_FALSE(hung);  // a request the file system never answered (the connection was aborted)
  CHECK(secs < 90);
  m.stop();
}
