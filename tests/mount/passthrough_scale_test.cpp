// examples/passthrough at scale: its inode table holds no descriptor per inode (file handles and a
// bounded descriptor cache), so a server whose open-file limit is 1024 serves trees far larger
// than that. What is checked:
//   - 200,000 files created, stated, renamed and unlinked through the mount (in a few
//     directories) with the server under RLIMIT_NOFILE 1024, soft and hard: no error, the data of
//     a sample of them right, and the server's open descriptors (/proc/PID/fd) bounded all along;
//     the same at a smaller count with --inode-handles off (a descriptor per inode, the fallback);
//   - a stale node: a file deleted in SOURCE behind the mount's back while the kernel still knows
//     it, and a new file made under its name: the old node answers ESTALE (or, with descriptors
//     per inode, is still the deleted file), never the new file's data;
//   - run by an ordinary user (no CAP_DAC_READ_SEARCH): the fallback, said once at start, serves;
//   - --inode-handles: a bad value is refused in one line.
// The backing store is a tmpfs mounted for each test. Every client runs in a child process with an
// alarm (a generous one: the counts are large; nothing is timed).
#include <catch2/catch.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/mount/server_harness.hpp"

using corofuse::testing::in_client;
using corofuse::testing::read_file;
using corofuse::testing::runfile;
using corofuse::testing::server;
using corofuse::testing::tail;

namespace {

const std::string pt_bin = runfile("examples/passthrough/passthrough");

constexpr int client_seconds = 1200;  // a safety net for a stuck server, not a time limit
constexpr int directories = 8;
constexpr int sampled = 997;  // every this-many-th file gets data, checked after each phase

// A tmpfs on a fresh temporary directory: the backing store (SOURCE); always detached and removed.
class backing_tmpfs {
 public:
  backing_tmpfs() {
    char tmpl[] = "/tmp/corofuse-scale-src-XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    if (::mount("corofuse-scale", dir_.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "size=512m,nr_inodes=0,mode=0755") != 0) {
      const int e = errno;
      ::rmdir(dir_.c_str());
      throw std::runtime_error(std::string("mounting a tmpfs failed: ") + std::strerror(e));
    }
  }
  ~backing_tmpfs() {
    ::umount2(dir_.c_str(), MNT_DETACH);
    ::rmdir(dir_.c_str());
  }
  backing_tmpfs(const backing_tmpfs&) = delete;
  backing_tmpfs& operator=(const backing_tmpfs&) = delete;
  const std::string& dir() const { return dir_; }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }

 private:
  std::string dir_;
};

// passthrough over `source`, its open-file limit set to 1024 (soft and hard) by prlimit(1), which
// then becomes the server (the same process: its pid is the server's).
std::unique_ptr<server> start_limited(const std::string& source, const std::string& handles, std::vector<std::string> extra = {}) {
  std::vector<std::string> args{"--stats", "--inode-handles", handles};
  args.insert(args.end(), extra.begin(), extra.end());
  return std::make_unique<server>("/usr/bin/prlimit", args, -1, -1, std::vector<std::string>{"--nofile=1024:1024", pt_bin, source});
}

// The server's open descriptors now.
int open_descriptors(pid_t pid) {
  DIR* d = ::opendir(("/proc/" + std::to_string(pid) + "/fd").c_str());
  if (!d) return -1;
  int n = 0;
  while (dirent* e = ::readdir(d))
    if (e->d_name[0] != '.') ++n;
  ::closedir(d);
  return n;
}

// The server's open-file limit (the soft one, from /proc/PID/limits), or -1.
long open_file_limit(pid_t pid) {
  const std::string limits = read_file("/proc/" + std::to_string(pid) + "/limits");
  const auto at = limits.find("Max open files");
  if (at == std::string::npos) return -1;
  return std::strtol(limits.c_str() + at + std::strlen("Max open files"), nullptr, 10);
}

std::string dir_name(int d) { return "d" + std::to_string(d); }
std::string file_name(const std::string& stem, int i) { return dir_name(i % directories) + "/" + stem + std::to_string(i); }
std::string content_of(int i) { return "file " + std::to_string(i) + "\n"; }

int write_all(int fd, const std::string& s) { return ::write(fd, s.data(), s.size()) == static_cast<ssize_t>(s.size()) ? 0 : -1; }

// The file's whole content (up to 256 bytes), or "" when it cannot be read.
std::string content(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  char buf[256];
  const ssize_t n = ::read(fd, buf, sizeof buf);
  ::close(fd);
  return n < 0 ? "" : std::string(buf, static_cast<std::size_t>(n));
}

// The phases, each a client; 0 or the step that failed.
int create_all(const std::string& mnt, int files) {
  for (int d = 0; d < directories; ++d)
    if (::mkdir((mnt + "/" + dir_name(d)).c_str(), 0755) != 0) return 1;
  for (int i = 0; i < files; ++i) {
    int fd = ::open((mnt + "/" + file_name("f", i)).c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0) return 2;
    if (i % sampled == 0 && write_all(fd, content_of(i)) != 0) return 3;
    if (::close(fd) != 0) return 4;
  }
  return 0;
}

int stat_all(const std::string& mnt, const std::string& stem, int files) {
  for (int i = 0; i < files; ++i) {
    struct stat st {};
    if (::stat((mnt + "/" + file_name(stem, i)).c_str(), &st) != 0) return 1;
    const off_t want = i % sampled == 0 ? static_cast<off_t>(content_of(i).size()) : 0;
    if (!S_ISREG(st.st_mode) || st.st_size != want || st.st_nlink != 1) return 2;
    if (i % sampled == 0 && content(mnt + "/" + file_name(stem, i)) != content_of(i)) return 3;
  }
  return 0;
}

// Each file moves to the next directory, under a new name.
int rename_all(const std::string& mnt, int files) {
  for (int i = 0; i < files; ++i) {
    const std::string to = dir_name((i + 1) % directories) + "/g" + std::to_string(i);
    if (::rename((mnt + "/" + file_name("f", i)).c_str(), (mnt + "/" + to).c_str()) != 0) return 1;
  }
  return 0;
}

std::string renamed(int i) { return dir_name((i + 1) % directories) + "/g" + std::to_string(i); }

int stat_renamed(const std::string& mnt, int files) {
  for (int i = 0; i < files; ++i) {
    struct stat st {};
    if (::stat((mnt + "/" + renamed(i)).c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return 1;
    if (::stat((mnt + "/" + file_name("f", i)).c_str(), &st) == 0 || errno != ENOENT) return 2;
    if (i % sampled == 0 && content(mnt + "/" + renamed(i)) != content_of(i)) return 3;
  }
  return 0;
}

int unlink_all(const std::string& mnt, int files) {
  for (int i = 0; i < files; ++i)
    if (::unlink((mnt + "/" + renamed(i)).c_str()) != 0) return 1;
  for (int d = 0; d < directories; ++d) {
    DIR* dir = ::opendir((mnt + "/" + dir_name(d)).c_str());
    if (!dir) return 2;
    int left = 0;
    while (dirent* e = ::readdir(dir))
      if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) ++left;
    ::closedir(dir);
    if (left != 0) return 3;
    if (::rmdir((mnt + "/" + dir_name(d)).c_str()) != 0) return 4;
  }
  return 0;
}

// Still serving: a file written and read back, a directory made and listed.
int still_serves(const std::string& mnt) {
  int fd = ::open((mnt + "/after").c_str(), O_CREAT | O_RDWR | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return 1;
  const bool wrote = write_all(fd, "after\n") == 0;
  if (::close(fd) != 0 || !wrote) return 2;
  if (content(mnt + "/after") != "after\n") return 3;
  if (::mkdir((mnt + "/after.d").c_str(), 0755) != 0) return 4;
  DIR* d = ::opendir((mnt + "/after.d").c_str());
  if (!d) return 5;
  ::closedir(d);
  return 0;
}

}  // namespace

TEST_CASE("passthrough under RLIMIT_NOFILE 1024: files created, stated, renamed and unlinked by the hundred thousand; descriptors bounded",
          "[mount][passthrough][scale]") {
  REQUIRE(::geteuid() == 0);
  // Handles: 200,000 files, far past the limit. Off (a descriptor per inode): a count the limit
  // allows, to exercise the fallback's bookkeeping through the same phases.
  const std::string handles = GENERATE(as<std::string>{}, "auto", "off");
  const int files = handles == "auto" ? 200000 : 600;
  INFO("--inode-handles " << handles << ", " << files << " files");
  backing_tmpfs src;
  auto s = start_limited(src.dir(), handles);
  INFO("passthrough log:\n" << tail(s->log()));
  REQUIRE(s->mounted());
  const pid_t pid = s->pid();
  REQUIRE(open_file_limit(pid) == 1024);  // the server did not raise it past the test's setting
  const bool fallback_logged = s->log().find("one open descriptor each") != std::string::npos;
  CHECK(fallback_logged == (handles == "off"));
  const std::string mnt = s->dir();
  // With handles, half the limit: the cache takes a quarter, the rest is the rings, /dev/fuse and
  // the files open. Off, a descriptor per node the kernel knows: at least one per file made.
  const bool bounded = handles == "auto";
  const int bound = 512;
  auto descriptors_bounded = [&] { return !bounded || open_descriptors(pid) <= bound; };

  CHECK(in_client([&] { return create_all(mnt, files); }, client_seconds) == 0);
  CHECK(descriptors_bounded());
  if (!bounded) CHECK(open_descriptors(pid) >= files);
  CHECK(in_client([&] { return stat_all(mnt, "f", files); }, client_seconds) == 0);
  CHECK(descriptors_bounded());
  CHECK(in_client([&] { return rename_all(mnt, files); }, client_seconds) == 0);
  CHECK(in_client([&] { return stat_renamed(mnt, files); }, client_seconds) == 0);
  CHECK(descriptors_bounded());
  CHECK(in_client([&] { return unlink_all(mnt, files); }, client_seconds) == 0);
  CHECK(in_client([&] { return still_serves(mnt); }) == 0);
  CHECK(descriptors_bounded());
  CHECK(content(src.path("after")) == "after\n");

  s->signal(SIGTERM);
  CHECK(s->wait_exit(30));
  CHECK(s->exit_status() == 0);
  const std::string log = s->log();
  INFO("passthrough log (end):\n" << tail(log));
  CHECK(log.find("Too many open files") == std::string::npos);
}

TEST_CASE("passthrough: a file deleted behind the mount's back and a new one made under its name: the old node never shows the new file",
          "[mount][passthrough][scale][stale]") {
  REQUIRE(::geteuid() == 0);
  const std::string handles = GENERATE(as<std::string>{}, "auto", "off");
  INFO("--inode-handles " << handles);
  backing_tmpfs src;
  // No caching in the kernel: every stat of the old node asks the server.
  auto s = start_limited(src.dir(), handles, {"-o", "attr_timeout=0,entry_timeout=0"});
  INFO("passthrough log:\n" << tail(s->log()));
  REQUIRE(s->mounted());
  const std::string mnt = s->dir();
  // More nodes than the descriptor cache holds (a quarter of 1024), looked up after the deletion:
  // the old node's cached descriptor, which would keep the deleted inode alive, is evicted. Off,
  // there is no cache (and each node the kernel knows holds a descriptor of the 1024).
  const int others = handles == "auto" ? 1200 : 100;
  REQUIRE(in_client([&] {
            for (int i = 0; i < others; ++i) {
              int fd = ::open((mnt + "/other" + std::to_string(i)).c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
              if (fd < 0 || ::close(fd) != 0) return 1;
            }
            return 0;
          }) == 0);

  // Exit codes: 0 the old node answered ESTALE (handles); 10 it is still the deleted file
  // (descriptor per inode, which keeps it alive); anything else is wrong.
  const int outcome = in_client(
      [&] {
        const std::string old_path = mnt + "/victim";
        int fd = ::open(old_path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
        if (fd < 0 || write_all(fd, "old data\n") != 0 || ::close(fd) != 0) return 1;
        int held = ::open(old_path.c_str(), O_PATH | O_CLOEXEC);  // the kernel keeps knowing the node
        struct stat before {};
        if (held < 0 || ::fstat(held, &before) != 0) return 2;
        if (::unlink(src.path("victim").c_str()) != 0) return 3;
        for (int i = 0; i < others; ++i) {
          struct stat st {};
          if (::stat((mnt + "/other" + std::to_string(i)).c_str(), &st) != 0) return 4;
        }
        fd = ::open(src.path("victim").c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
        if (fd < 0 || write_all(fd, "NEW data\n") != 0 || ::close(fd) != 0) return 5;
        // Through the name: the new file, as a new node.
        struct stat now {};
        if (::stat(old_path.c_str(), &now) != 0 || now.st_ino == before.st_ino || content(old_path) != "NEW data\n") return 6;
        // Through the old node: never the new file.
        struct stat st {};
        const int r = ::fstat(held, &st);
        const int stat_error = r == 0 ? 0 : errno;
        const std::string via_node = content("/proc/self/fd/" + std::to_string(held));
        if (via_node == "NEW data\n") return 7;
        if (r == 0 && (st.st_ino != before.st_ino || st.st_size != before.st_size)) return 8;
        if (r != 0 && stat_error != ESTALE && stat_error != ENOENT) return 9;
        if (r == 0 && via_node == "old data\n") return 10;
        return r != 0 && via_node.empty() ? 0 : 11;
      },
      120);
  CHECK(outcome == (handles == "auto" ? 0 : 10));

  s->signal(SIGTERM);
  CHECK(s->wait_exit(30));
  CHECK(s->exit_status() == 0);
}

TEST_CASE("passthrough run by an ordinary user (no CAP_DAC_READ_SEARCH): the fallback to a descriptor per inode, said once, and it serves",
          "[mount][passthrough][scale][fusermount]") {
  REQUIRE(::geteuid() == 0);                             // to become nobody and to clean up
  REQUIRE(::access("/usr/bin/fusermount3", X_OK) == 0);  // without root, mounting goes through it
  // The binary and SOURCE where nobody reaches them (runfiles are under root's home).
  char tmpl[] = "/tmp/corofuse-scale-user-XXXXXX";
  REQUIRE(::mkdtemp(tmpl));
  const std::string base = tmpl;
  struct remove_base {
    std::string dir;
    ~remove_base() { (void)std::system(("rm -rf '" + dir + "'").c_str()); }
  } cleanup{base};
  const std::string bin = base + "/passthrough", source = base + "/src";
  REQUIRE(std::system(
              ("cp " + pt_bin + " " + bin + " && chmod 755 " + base + " " + bin + " && mkdir " + source + " && chown 65534:65534 " + source)
                  .c_str()) == 0);
  server s(bin, {"--stats"}, 65534, 65534, {source});
  INFO("passthrough log:\n" << tail(s.log()));
  REQUIRE(s.mounted());
  const std::string log = s.log();
  CHECK(log.find("one open descriptor each (open_by_handle_at: Operation not permitted)") != std::string::npos);
  const std::string mnt = s.dir();
  CHECK(in_client([&] {
          if (::setgid(65534) != 0 || ::setuid(65534) != 0) return 1;
          if (::mkdir((mnt + "/d").c_str(), 0755) != 0) return 2;
          for (int i = 0; i < 100; ++i) {
            const std::string p = mnt + "/d/f" + std::to_string(i);
            int fd = ::open(p.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
            if (fd < 0 || write_all(fd, content_of(i)) != 0 || ::close(fd) != 0) return 3;
          }
          for (int i = 0; i < 100; ++i)
            if (content(mnt + "/d/f" + std::to_string(i)) != content_of(i)) return 4;
          return 0;
        }) == 0);
  CHECK(content(source + "/d/f7") == content_of(7));
  s.signal(SIGTERM);
  CHECK(s.wait_exit(20));
  CHECK_FALSE(s.mounted());
}

TEST_CASE("passthrough --inode-handles: a bad value gives one line and exit 2", "[mount][passthrough][scale][cli]") {
  for (const std::string bad : {"--inode-handles=sometimes", "--inode-handles"}) {
    const std::string cmd = "timeout -k 5 30 " + pt_bin + " /tmp /nonexistent-mountpoint " + bad + " 2>&1";
    std::FILE* p = ::popen(cmd.c_str(), "r");
    REQUIRE(p);
    std::string out;
    char buf[512];
    while (std::size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
    const int status = ::pclose(p);
    INFO(bad << ": " << out);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 2);
    CHECK(out.find("--inode-handles") != std::string::npos);
    CHECK(std::count(out.begin(), out.end(), '\n') == 1);
  }
}
