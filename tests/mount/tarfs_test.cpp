// examples/tarfs mounted on the host kernel: archives that GNU tar writes (its default format and
// --format=posix) served over /dev/fuse and the io_uring ring and compared with what tar itself
// extracts from them; the mount refuses every change; FORGET is harmless; edge cases of archives
// (a member twice, implied directories, an empty archive); malformed archives are refused at
// startup with one line and exit 2, nothing mounted.
#include <catch2/catch.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "tests/mount/server_harness.hpp"

using corofuse::testing::detach_and_abort;
using corofuse::testing::in_client;
using corofuse::testing::is_mounted;
using corofuse::testing::read_file;
using corofuse::testing::requests;
using corofuse::testing::runfile;
using corofuse::testing::server;
using corofuse::testing::sh;
using corofuse::testing::uring_enabled;

namespace {
const std::string tarfs_bin = runfile("examples/tarfs/tarfs");
const std::string long_name = std::string(146, 'n') + ".txt";  // 150 characters: GNU 'L' / pax path
constexpr off_t big_size = (4 << 20) + 123;                    // ends inside a 512-byte block

// A temporary directory, removed with everything in it (devices and fifos too) at the end.
struct scratch {
  std::string dir;
  scratch() {
    char tmpl[] = "/tmp/corofuse-tarfs-XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    dir = tmpl;
  }
  ~scratch() { (void)std::system(("rm -rf " + dir).c_str()); }
  std::string operator/(const std::string& name) const { return dir + "/" + name; }
};

// A tree with every kind of member, archived by GNU tar in both formats and extracted again by it
// (as root, with numeric owners): what the mount must show. Made once for all the tests.
struct fixture {
  scratch s;
  fixture() {
    const std::string src = s / "src";
    const std::string make =
        "set -e; cd " + src +
        " && mkdir -p dir/a/b/c private"
        " && head -c " +
        std::to_string(big_size) + " /dev/urandom > big.bin && : > empty && printf hello > " + long_name +
        " && ln -s big.bin link && ln -s ../../big.bin dir/a/up && ln -s /nowhere/at/all dangling"
        " && ln big.bin dir/hard && mkfifo fifo && mknod chr c 1 3 && mknod blk b 7 0"
        " && printf 600 > m600 && chmod 600 m600 && printf 755 > m755 && chmod 755 m755 && printf suid > suid && chmod 4755 suid"
        " && printf inside > private/secret && chmod 700 private"
        " && chown 1234:5678 m600 && chown -h 42:43 link"
        " && touch -d @1000000000 big.bin && touch -d @0 empty && touch -h -d @1100000000 link"
        " && touch -d @1200000000 dir/a/b/c && touch -d @1300000000 dir/a/b && touch -d @1400000000 dir && touch -d @1500000000 .";
    if (::mkdir(src.c_str(), 0755) != 0 || sh(make) != 0) throw std::runtime_error("making the source tree failed");
    for (const char* format : {"gnu", "posix"}) {
      const std::string archive = s / (std::string(format) + ".tar"), out = s / (std::string("x-") + format);
      if (sh("tar --format=" + std::string(format) + " -C " + src + " -cf " + archive + " . && mkdir " + out + " && tar -C " + out +
             " --numeric-owner -xpf " + archive) != 0)
        throw std::runtime_error("tar failed");
    }
  }
  std::string archive(const std::string& format) const { return s / (format + ".tar"); }
  std::string extracted(const std::string& format) const { return s / ("x-" + format); }
};
const fixture& tree() {
  static fixture f;
  return f;
}

std::set<std::string> names_in(const std::string& dir) {
  std::set<std::string> names;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) names.insert(e->d_name);
    ::closedir(d);
  }
  return names;
}

// Compares the tree at `want` (extracted by tar) with the mount at `got`, entry by entry: type and
// mode, link count, owner, group, size, mtime (seconds), symlink target, device number, the names
// each directory lists. Prints each difference on stderr (the test log); returns how many.
int compare_trees(const std::string& want, const std::string& got) {
  int bad = 0;
  auto differs = [&](const std::string& rel, const char* what, long long w, long long g) {
    std::fprintf(stderr, "'%s': %s %lld in the extracted tree, %lld in the mount\n", rel.c_str(), what, w, g);
    ++bad;
  };
  std::function<void(const std::string&)> walk = [&](const std::string& rel) {
    struct stat w {
    }, g{};
    if (::lstat((want + rel).c_str(), &w) != 0 || ::lstat((got + rel).c_str(), &g) != 0) return differs(rel, "lstat failed", 0, errno);
    if (w.st_mode != g.st_mode) differs(rel, "mode", w.st_mode, g.st_mode);
    if (w.st_nlink != g.st_nlink) differs(rel, "nlink", w.st_nlink, g.st_nlink);
    if (w.st_uid != g.st_uid) differs(rel, "uid", w.st_uid, g.st_uid);
    if (w.st_gid != g.st_gid) differs(rel, "gid", w.st_gid, g.st_gid);
    if (w.st_mtim.tv_sec != g.st_mtim.tv_sec) differs(rel, "mtime", w.st_mtim.tv_sec, g.st_mtim.tv_sec);
    if (w.st_rdev != g.st_rdev) differs(rel, "rdev", w.st_rdev, g.st_rdev);
    if (!S_ISDIR(w.st_mode) && w.st_size != g.st_size) differs(rel, "size", w.st_size, g.st_size);
    if (S_ISLNK(w.st_mode)) {
      char a[4096], b[4096];
      const ssize_t na = ::readlink((want + rel).c_str(), a, sizeof a), nb = ::readlink((got + rel).c_str(), b, sizeof b);
      if (na != nb || na < 0 || std::memcmp(a, b, static_cast<std::size_t>(na)) != 0) differs(rel, "symlink target (length)", na, nb);
    }
    if (!S_ISDIR(w.st_mode)) return;
    const auto names = names_in(want + rel);
    if (names != names_in(got + rel)) differs(rel, "listing (entries)", static_cast<long long>(names.size()), names_in(got + rel).size());
    for (const auto& n : names)
      if (n != "." && n != "..") walk(rel + "/" + n);
  };
  walk("");
  return bad;
}

// Reads big.bin of both trees at random offsets (and at and past the end): same bytes, same counts.
int compare_reads(const std::string& want, const std::string& got) {
  const int a = ::open(want.c_str(), O_RDONLY), b = ::open(got.c_str(), O_RDONLY);
  if (a < 0 || b < 0) return 1;
  std::mt19937_64 rng(42);
  std::vector<char> x(1 << 18), y(1 << 18);
  std::vector<std::pair<off_t, std::size_t>> reads{{0, 1},
                                                   {big_size - 1, 10},
                                                   {big_size, 10},
                                                   {big_size + 4096, 10},
                                                   {big_size - 100, 1 << 18}};
  for (int i = 0; i < 300; ++i) reads.emplace_back(rng() % (big_size + 8192), rng() % (1 << 18));
  for (auto [off, len] : reads) {
    const ssize_t na = ::pread(a, x.data(), len, off), nb = ::pread(b, y.data(), len, off);
    if (na != nb || na < 0 || std::memcmp(x.data(), y.data(), static_cast<std::size_t>(na)) != 0) {
      std::fprintf(stderr, "pread of %zu at %lld: %zd bytes extracted, %zd from the mount\n", len, static_cast<long long>(off), na, nb);
      return 2;
    }
  }
  ::close(a);
  ::close(b);
  return 0;
}

// Every change through the mount fails with EROFS (the mount is read-only: the kernel says so
// before asking the server). Returns 0, or the number of the first check that failed.
int changes_refused(const server& s) {
  const std::string big = s.path("big.bin"), fresh = s.path("fresh");
  const std::vector<std::function<int()>> tries = {
      [&] { return ::open(big.c_str(), O_WRONLY); },
      [&] { return ::open(big.c_str(), O_RDWR); },
      [&] { return ::open(big.c_str(), O_RDONLY | O_TRUNC); },
      [&] { return ::open(fresh.c_str(), O_WRONLY | O_CREAT, 0644); },
      [&] { return ::mkdir(fresh.c_str(), 0755); },
      [&] { return ::mknod(fresh.c_str(), S_IFIFO | 0644, 0); },
      [&] { return ::symlink("big.bin", fresh.c_str()); },
      [&] { return ::link(big.c_str(), fresh.c_str()); },
      [&] { return ::unlink(big.c_str()); },
      [&] { return ::rmdir(s.path("private").c_str()); },
      [&] { return ::rename(big.c_str(), fresh.c_str()); },
      [&] { return ::chmod(big.c_str(), 0777); },
      [&] { return ::chown(big.c_str(), 1, 1); },
      [&] { return ::truncate(big.c_str(), 0); },
      [&] { return ::utimensat(AT_FDCWD, big.c_str(), nullptr, 0); },
      [&] { return ::setxattr(big.c_str(), "user.x", "1", 1, 0); },
  };
  for (std::size_t i = 0; i < tries.size(); ++i) {
    errno = 0;
    const int r = tries[i]();
    if (r >= 0 || errno != EROFS) {
      std::fprintf(stderr, "change %zu: returned %d, errno %d (%s), not EROFS\n", i + 1, r, errno, std::strerror(errno));
      return static_cast<int>(i + 1);
    }
  }
  return 0;
}

// The mount's options in /proc/self/mounts start with "ro".
bool mounted_read_only(const std::string& dir) {
  std::ifstream f("/proc/self/mounts");
  for (std::string dev, at, type, opts, rest; f >> dev >> at >> type >> opts && std::getline(f, rest);)
    if (at == dir) return opts.starts_with("ro,") || opts == "ro";
  return false;
}

// Runs tarfs with `args` (a command that must not mount); its exit status and all it printed.
int run_tarfs(const std::string& args, std::string& out) {
  const std::string log = "/tmp/corofuse-tarfs-cli-" + std::to_string(::getpid()) + ".log";
  const int rc = std::system(("timeout -k 5 20 " + tarfs_bin + " " + args + " > " + log + " 2>&1").c_str());
  out = read_file(log);
  ::unlink(log.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

// A copy of `from` with `bytes` written at `at`, and the checksum of that header redone (or not).
void patched(const std::string& from, const std::string& to, std::size_t at, const std::string& bytes, bool redo_checksum = true) {
  std::string data = read_file(from);
  data.replace(at, bytes.size(), bytes);
  const std::size_t header = at / 512 * 512;
  unsigned sum = 0;
  for (std::size_t i = 0; i < 512; ++i) sum += (i >= 148 && i < 156) ? ' ' : static_cast<unsigned char>(data[header + i]);
  char field[8];
  std::snprintf(field, sizeof field, "%06o", sum);
  if (redo_checksum) data.replace(header + 148, 8, std::string(field, 7) + " ");
  std::ofstream(to, std::ios::binary) << data;
}
}  // namespace

TEST_CASE("tarfs serves what tar extracts, over both transports and in both formats; refuses changes; FORGET is harmless",
          "[mount][tarfs]") {
  REQUIRE(::geteuid() == 0);
  const std::string format = GENERATE(as<std::string>{}, "gnu", "posix");
  const std::string transport = GENERATE(as<std::string>{}, "dev", "ring");
  if (transport == "ring") REQUIRE(uring_enabled());
  INFO("format " << format << ", transport " << transport);
  const fixture& f = tree();
  const std::string want = f.extracted(format);

  server s(tarfs_bin, {"--stats", "--transport", transport}, -1, -1, {f.archive(format)});
  INFO(s.log());
  REQUIRE(s.mounted());
  CHECK(mounted_read_only(s.dir()));

  // The listing of the root is exactly the archive's names.
  CHECK(in_client([&] {
          const std::set<std::string> expected{".",    "..",  "big.bin", "empty", long_name, "link", "dangling", "dir",
                                               "fifo", "chr", "blk",     "m600",  "m755",    "suid", "private"};
          return names_in(s.dir()) == expected ? 0 : 1;
        }) == 0);
  for (int round = 0; round < 2; ++round) {
    INFO((round == 0 ? "first reading" : "after drop_caches (FORGET of every node)"));
    CHECK(sh("diff -r --no-dereference -x fifo -x chr -x blk " + want + " " + s.dir()) == 0);
    CHECK(in_client([&] { return compare_trees(want, s.dir()); }) == 0);
    CHECK(in_client([&] { return compare_reads(want + "/big.bin", s.path("big.bin")); }) == 0);
    CHECK(in_client([&] { return compare_reads(want + "/dir/hard", s.path("dir/hard")); }) == 0);
    CHECK(in_client([&] { return read_file(s.path(long_name)) == "hello" ? 0 : 1; }) == 0);
    CHECK(in_client([&] { return changes_refused(s); }) == 0);
    CHECK(sh("sync && echo 2 > /proc/sys/vm/drop_caches") == 0);
  }
  // The hard link is one node under two names.
  CHECK(in_client([&] {
          struct stat a {
          }, b{};
          return ::stat(s.path("big.bin").c_str(), &a) == 0 && ::stat(s.path("dir/hard").c_str(), &b) == 0 && a.st_ino == b.st_ino ? 0 : 1;
        }) == 0);

  s.signal(SIGTERM);
  REQUIRE(s.wait_exit(20));
  CHECK(s.exit_status() == 0);
  CHECK_FALSE(s.mounted());
  const std::string log = s.log();
  INFO(log);
  CHECK(requests(log, "FORGET") + requests(log, "BATCH_FORGET") > 0);
  CHECK(requests(log, "READ") > 0);
  CHECK(requests(log, "WRITE") == 0);
}

TEST_CASE("tarfs: a member twice (the later wins), implied directories, an empty archive", "[mount][tarfs]") {
  REQUIRE(::geteuid() == 0);
  scratch t;
  const std::string src = t / "src", archive = t / "edge.tar", empty = t / "empty.tar";
  // f twice (appended with -r, another mode and size), then x/y/z.txt without its directories.
  REQUIRE(sh("set -e; mkdir -p " + src + "/x/y && cd " + src + " && printf first > f && tar -cf " + archive +
             " f && printf second-version > f && chmod 600 f && tar -rf " + archive + " f && printf zed > x/y/z.txt && tar -rf " + archive +
             " x/y/z.txt && tar -cf " + empty + " -T /dev/null") == 0);
  {
    server s(tarfs_bin, {"--transport", "dev"}, -1, -1, {archive});
    INFO(s.log());
    REQUIRE(s.mounted());
    CHECK(in_client([&] { return read_file(s.path("f")) == "second-version" ? 0 : 1; }) == 0);
    CHECK(in_client([&] { return names_in(s.dir()) == std::set<std::string>{".", "..", "f", "x"} ? 0 : 1; }) == 0);
    CHECK(in_client([&] {
            struct stat f {
            }, x{}, y{};
            if (::stat(s.path("f").c_str(), &f) || ::stat(s.path("x").c_str(), &x) || ::stat(s.path("x/y").c_str(), &y)) return 1;
            if (f.st_mode != (S_IFREG | 0600) || f.st_size != 14) return 2;
            if (x.st_mode != (S_IFDIR | 0755) || y.st_mode != (S_IFDIR | 0755) || x.st_nlink != 3 || y.st_nlink != 2) return 3;
            return x.st_uid == ::getuid() ? 0 : 4;
          }) == 0);
    CHECK(in_client([&] { return read_file(s.path("x/y/z.txt")) == "zed" ? 0 : 1; }) == 0);
  }
  server s(tarfs_bin, {"--transport", "dev"}, -1, -1, {empty});
  INFO(s.log());
  REQUIRE(s.mounted());
  CHECK(in_client([&] { return names_in(s.dir()) == std::set<std::string>{".", ".."} ? 0 : 1; }) == 0);
}

TEST_CASE("tarfs: a malformed archive gives one line naming it and the offset, exit 2, nothing mounted", "[mount][tarfs][cli]") {
  REQUIRE(::geteuid() == 0);
  scratch t;
  // f (1000 bytes): header at 0, data from 512, padded to 1536; g (10 bytes): header at 1536, data
  // from 2048, padded to 2560; the end-of-archive blocks from 2560.
  const std::string good = t / "good.tar";
  REQUIRE(sh("set -e; mkdir " + t.dir + "/src && cd " + t.dir +
             "/src && head -c 1000 /dev/urandom > f && printf 0123456789 > g && tar -cf " + good + " f g") == 0);
  struct bad_case {
    std::string name;     // the archive's file name
    std::string prepare;  // a shell command making it from good.tar (empty: patched below)
    std::vector<std::string> said;
  };
  patched(good, t / "flipped.tar", 5, "X", false);          // a byte changed, the checksum not redone
  patched(good, t / "flipped2.tar", 1536 + 5, "X", false);  // the same in the second header
  patched(good, t / "sparse.tar", 156, "S");                // GNU sparse: not supported
  patched(good, t / "absolute.tar", 0, std::string("/etc/evil\0", 10));
  patched(good, t / "dotdot.tar", 0, std::string("a/../../evil\0", 13));
  patched(good, t / "dangling-link.tar", 156, std::string("1nothing\0", 9));  // a hard link to no member
  const std::vector<bad_case> cases = {
      {"missing.tar", "", {"No such file"}},
      {"dir.tar", "mkdir dir.tar", {"not a regular file"}},
      {"flipped.tar", "", {"offset 0", "checksum"}},
      {"flipped2.tar", "", {"offset 1536", "checksum"}},
      {"text.tar", "yes this-is-not-a-tar-archive | head -c 4096 > text.tar", {"offset 0", "checksum"}},
      {"zero.tar", ": > zero.tar", {"offset 0", "truncated"}},
      {"no-end.tar", "head -c 2560 good.tar > no-end.tar", {"offset 2560", "truncated"}},
      {"half-header.tar", "head -c 1600 good.tar > half-header.tar", {"offset 1536", "truncated"}},
      {"short-data.tar", "head -c 1000 good.tar > short-data.tar", {"offset 0", "runs past the end"}},
      {"sparse.tar", "", {"offset 0", "unsupported member type 'S'"}},
      {"absolute.tar", "", {"offset 0", "absolute path '/etc/evil' refused"}},
      {"dotdot.tar", "", {"offset 0", "'..' component refused"}},
      {"dangling-link.tar", "", {"offset 0", "hard link"}},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    if (!c.prepare.empty()) REQUIRE(sh("cd " + t.dir + " && " + c.prepare) == 0);
    char tmpl[] = "/tmp/corofuse-tarfs-mnt-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    const std::string mnt = tmpl;
    std::string out;
    const int rc = run_tarfs(t / c.name + " " + mnt + " --transport dev", out);
    INFO(out);
    CHECK(rc == 2);
    CHECK(std::count(out.begin(), out.end(), '\n') == 1);
    CHECK(out.find(t / c.name) != std::string::npos);
    for (const auto& s : c.said) CHECK(out.find(s) != std::string::npos);
    CHECK_FALSE(is_mounted(mnt));
    detach_and_abort(mnt);  // only if a broken tarfs mounted after all
    ::rmdir(mnt.c_str());
  }
}

TEST_CASE("tarfs: its command line", "[mount][tarfs][cli]") {
  REQUIRE(::geteuid() == 0);
  std::string out;
  CHECK(run_tarfs("--help", out) == 0);
  CHECK(out.find("ARCHIVE MOUNTPOINT") != std::string::npos);
  CHECK(out.find("read-only") != std::string::npos);
  CHECK(out.find("--transport") != std::string::npos);
  CHECK(run_tarfs("", out) == 2);
  CHECK(out.find("missing mount point") != std::string::npos);
  CHECK(run_tarfs("/tmp/some.tar /tmp -o rw", out) == 2);
  CHECK(out.find("-o rw") != std::string::npos);
  CHECK(std::count(out.begin(), out.end(), '\n') == 1);
  CHECK(run_tarfs("/tmp/some.tar /tmp --bogus", out) == 2);
  CHECK(out.find("unknown option --bogus") != std::string::npos);
}
