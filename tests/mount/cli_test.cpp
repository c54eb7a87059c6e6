// The command line of every example (hello, memfs, memtree, passthrough SOURCE MOUNTPOINT): what a user
// gets wrong must end in exactly one line that says what, a non-zero exit (2 for a bad command
// line, 1 when the mount point or the mount fails), and nothing mounted. Covered: unknown options,
// bad numbers, a missing mount point argument, a mount point that is not a directory or does not
// exist, a mount point another server of the same example already serves (refused: no stacked
// mount, the first one undisturbed), a mount point the user may not write (uid 65534, through
// fusermount3), and memfs's own --size and --control.
//
// hello_test and passthrough_test have their own [cli] cases (--help, options peculiar to each);
// this file runs the same list over all three examples.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/mount/server_harness.hpp"

using corofuse::testing::in_client;
using corofuse::testing::is_mounted;
using corofuse::testing::read_file;
using corofuse::testing::runfile;
using corofuse::testing::server;
using corofuse::testing::sh;

namespace {

struct example {
  std::string name;
  std::string bin;
  bool takes_source;  // passthrough: SOURCE comes before MOUNTPOINT
};

const std::vector<example>& examples() {
  static const std::vector<example> all = {
      {"hello", runfile("examples/hello/hello"), false},
      {"memfs", runfile("examples/memfs/memfs"), false},
      {"memtree", runfile("examples/memtree/memtree"), false},
      {"passthrough", runfile("examples/passthrough/passthrough"), true},
  };
  return all;
}

// Detaches whatever is mounted on `dir` (a failed case's leftovers, stacked ones too) and aborts
// those connections, so that the next case starts clean.
void detach_all(const std::string& dir) {
  for (int i = 0; i < 8 && is_mounted(dir); ++i) corofuse::testing::detach_and_abort(dir);
}

// A fresh directory (mode 0755, root's), removed at the end; whatever a failing case left
// mounted on it is detached first (and its connection aborted).
class temp_dir {
 public:
  explicit temp_dir(const std::string& what) {
    std::string tmpl = "/tmp/corofuse-cli-" + what + "-XXXXXX";
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
    ::chmod(path_.c_str(), 0755);
  }
  ~temp_dir() {
    detach_all(path_);
    for (const auto& f : files_) ::unlink(f.c_str());
    ::rmdir(path_.c_str());
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  const std::string& path() const { return path_; }
  // A file inside (removed at the end), readable by everyone.
  std::string add_file(const std::string& name, const std::string& text) {
    const std::string f = path_ + "/" + name;
    std::ofstream(f) << text;
    ::chmod(f.c_str(), 0755);
    files_.push_back(f);
    return f;
  }

 private:
  std::string path_;
  std::vector<std::string> files_;
};

// How many mounts sit on `dir` (read from mountinfo, never by touching the path).
int mounts_on(const std::string& dir) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string id, parent, majmin, root, point;
    if (f >> id >> parent >> majmin >> root >> point && corofuse::session::unescape_mountinfo(point) == dir) ++n;
  }
  return n;
}

struct outcome {
  int status = -1;  // the exit status; -1 when killed by a signal
  std::string output;
  int lines() const { return static_cast<int>(std::count(output.begin(), output.end(), '\n')); }
};

// Runs `command` with stdout and stderr to one file, under a timeout (a server that wrongly
// starts serving is stopped by it: exit 124, which no case accepts).
outcome run(const std::string& command) {
  char tmpl[] = "/tmp/corofuse-cli-out-XXXXXX";
  int fd = ::mkstemp(tmpl);
  if (fd < 0) throw std::runtime_error("mkstemp failed");
  ::close(fd);
  const int rc = std::system(("timeout -k 5 20 " + command + " > " + tmpl + " 2>&1 < /dev/null").c_str());
  outcome o;
  o.output = read_file(tmpl);
  ::unlink(tmpl);
  o.status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  return o;
}

// The example's command with `source` first when it takes one.
std::string command_of(const example& e, const std::string& source, const std::string& rest) {
  return e.bin + (e.takes_source ? " " + source : "") + (rest.empty() ? "" : " " + rest);
}

const example& example_under_test() {
  const auto& all = examples();
  const std::size_t i = GENERATE(0u, 1u, 2u);
  return all[i];
}

}  // namespace

TEST_CASE("Every example: bad options and numbers give one line, exit 2, and mount nothing", "[mount][cli]") {
  REQUIRE(::geteuid() == 0);
  const example& e = example_under_test();
  temp_dir source("src"), mnt("mnt");
  source.add_file("file", "x");
  const std::string M = mnt.path();
  struct bad {
    std::string args;
    std::string says;  // a piece of the one line
  };
  const std::vector<bad> cases = {
      {M + " --bogus", "unknown option --bogus"},
      {M + " -o max_write=abc", "max_write"},
      {M + " -o max_write=", "max_write"},
      {M + " --depth 0", "--depth"},
      {M + " --depth -1", "--depth"},
      {M + " --depth 99999999999", "--depth"},
      {M + " --depth 12abc", "--depth"},
      {M + " --depth", "--depth"},
      {M + " --shutdown-grace -3", "--shutdown-grace"},
      {M + " -o request_timeout=0", "request_timeout"},
      {"", "missing"},
  };
  for (const auto& c : cases) {
    const std::string cmd = command_of(e, source.path(), c.args);
    INFO(cmd);
    const outcome o = run(cmd);
    INFO("exit status " << o.status << ", output:\n" << o.output);
    CHECK(o.status == 2);
    CHECK(o.lines() == 1);
    CHECK(o.output.find(c.says) != std::string::npos);
    CHECK_FALSE(is_mounted(M));
    detach_all(M);
  }
}

TEST_CASE("Every example: a mount point that is not a directory or does not exist: one line, exit 1", "[mount][cli]") {
  REQUIRE(::geteuid() == 0);
  const example& e = example_under_test();
  temp_dir source("src"), other("other");
  source.add_file("file", "x");
  const std::string not_a_dir = other.add_file("plain-file", "not a directory\n");
  const std::string missing = other.path() + "/missing/dir";
  struct bad {
    std::string mountpoint;
    std::string says;
  };
  for (const bad& c : {bad{not_a_dir, "not a directory"}, bad{missing, "No such file or directory"}}) {
    const std::string cmd = command_of(e, source.path(), c.mountpoint);
    INFO(cmd);
    const outcome o = run(cmd);
    INFO("exit status " << o.status << ", output:\n" << o.output);
    CHECK(o.status == 1);
    CHECK(o.lines() == 1);
    CHECK(o.output.find(c.says) != std::string::npos);
    CHECK(mounts_on(c.mountpoint) == 0);
  }
  CHECK(mounts_on(other.path()) == 0);
}

TEST_CASE("Every example: a mount point already served is refused in one line; the first mount still serves", "[mount][cli]") {
  REQUIRE(::geteuid() == 0);
  const example& e = example_under_test();
  temp_dir source("src");
  source.add_file("file", "from the source\n");
  std::vector<std::string> leading;
  if (e.takes_source) leading.push_back(source.path());
  server first(e.bin, {}, -1, -1, leading);
  INFO("first server's log:\n" << first.log());
  REQUIRE(first.mounted());
  const dev_t dev = first.device();

  const std::string cmd = command_of(e, source.path(), first.dir());
  INFO(cmd);
  const outcome o = run(cmd);
  INFO("exit status " << o.status << ", output:\n" << o.output);
  CHECK(o.status == 1);
  CHECK(o.lines() == 1);
  CHECK(o.output.find("already") != std::string::npos);
  // No second mount on top, and the first one is the same, and serves.
  CHECK(mounts_on(first.dir()) == 1);
  CHECK(first.device() == dev);
  CHECK_FALSE(first.exited());
  if (e.name == "hello") {
    CHECK(in_client([&] { return read_file(first.path("hello")) == "Hello, World!\n" ? 0 : 1; }) == 0);
  } else if (e.name == "memfs" || e.name == "memtree") {
    CHECK(sh("printf still > " + first.path("f") + " && test \"$(cat " + first.path("f") + ")\" = still") == 0);
  } else {
    CHECK(in_client([&] { return read_file(first.path("file")) == "from the source\n" ? 0 : 1; }) == 0);
  }
  first.signal(SIGTERM);
  REQUIRE(first.wait_exit(30));
  CHECK(first.exit_status() == 0);
  CHECK(mounts_on(first.dir()) == 0);
}

TEST_CASE("Every example: a mount point the user may not write (uid 65534): one line, exit 1, nothing mounted",
          "[mount][cli][fusermount]") {
  REQUIRE(::geteuid() == 0);
  REQUIRE(::access("/usr/bin/fusermount3", X_OK) == 0);  // without root, mounting goes through it
  REQUIRE(::access("/usr/bin/setpriv", X_OK) == 0);
  const example& e = example_under_test();
  // The binary must be reachable by uid 65534: runfiles live under root's home.
  temp_dir bin_dir("bin");
  const std::string bin = bin_dir.path() + "/" + e.name;
  REQUIRE(sh("cp " + e.bin + " " + bin + " && chmod 755 " + bin) == 0);
  struct remove_bin {
    std::string file;
    ~remove_bin() { ::unlink(file.c_str()); }
  } cleanup{bin};
  temp_dir source("src"), mnt("mnt");  // both root's, mode 0755: readable, not writable
  source.add_file("file", "x");

  const std::string cmd = "/usr/bin/setpriv --reuid=65534 --regid=65534 --clear-groups " +
                          command_of(example{e.name, bin, e.takes_source}, source.path(), mnt.path());
  INFO(cmd);
  const outcome o = run(cmd);
  INFO("exit status " << o.status << ", output:\n" << o.output);
  CHECK(o.status == 1);
  CHECK(o.lines() == 1);
  CHECK(o.output.find(mnt.path()) != std::string::npos);  // it names the mount point
  CHECK(mounts_on(mnt.path()) == 0);
}

TEST_CASE("memfs: bad --size and --control give one line, a non-zero exit, and mount nothing", "[mount][cli][memfs]") {
  REQUIRE(::geteuid() == 0);
  const std::string memfs = runfile("examples/memfs/memfs");
  temp_dir mnt("mnt"), other("other");
  const std::string M = mnt.path();
  const std::string plain_file = other.add_file("plain-file", "not a FIFO\n");

  SECTION("--help names both options") {
    const outcome o = run(memfs + " --help");
    CHECK(o.status == 0);
    CHECK(o.output.find("--size") != std::string::npos);
    CHECK(o.output.find("--control") != std::string::npos);
    CHECK(o.output.find("uid=N") != std::string::npos);
    CHECK(o.output.find("gid=N") != std::string::npos);
    CHECK(o.output.find("mode=OCTAL") != std::string::npos);
    CHECK(o.output.find("allow_other") != std::string::npos);  // the common options follow
  }
  SECTION("a bad -o uid=, gid= or mode= is a bad command line: exit 2") {
    for (const std::string& opt :
         {"uid", "uid=", "uid=x", "uid=-1", "uid=4294967295", "gid=1.5", "mode=8", "mode=10000", "mode=", "mode=rwx"}) {
      const std::string args = M + " -o " + opt;
      INFO("memfs " << args);
      const outcome o = run(memfs + " " + args);
      INFO("exit status " << o.status << ", output:\n" << o.output);
      CHECK(o.status == 2);
      CHECK(o.lines() == 1);
      CHECK(o.output.find("-o " + opt.substr(0, opt.find('='))) != std::string::npos);
      CHECK(mounts_on(M) == 0);
      detach_all(M);
    }
  }
  SECTION("a bad --size is a bad command line: exit 2") {
    for (const std::string& args :
         {M + " --size abc", M + " --size 0", M + " --size 4095", M + " --size 0%", M + " --size 101%", M + " --size 12Q", M + " --size -5",
          M + " --size=", M + " --size 99999999999999999T", M + " --size", M + " --control"}) {
      INFO("memfs " << args);
      const outcome o = run(memfs + " " + args);
      INFO("exit status " << o.status << ", output:\n" << o.output);
      CHECK(o.status == 2);
      CHECK(o.lines() == 1);
      CHECK(o.output.find(args.find("--control") != std::string::npos ? "--control" : "--size") != std::string::npos);
      CHECK(mounts_on(M) == 0);
      detach_all(M);
    }
  }
  SECTION("--control on a path that cannot be a FIFO: one line, non-zero, nothing mounted") {
    for (const std::string& fifo : {other.path() + "/missing/dir/fifo", plain_file}) {
      const std::string cmd = memfs + " " + M + " --control " + fifo;
      INFO(cmd);
      const outcome o = run(cmd);
      INFO("exit status " << o.status << ", output:\n" << o.output);
      CHECK((o.status == 1 || o.status == 2));
      CHECK(o.lines() == 1);
      CHECK(o.output.find(fifo) != std::string::npos);
      CHECK(mounts_on(M) == 0);
      detach_all(M);
    }
    CHECK(read_file(plain_file) == "not a FIFO\n");  // left alone
  }
}

TEST_CASE("memfs: its root belongs to the user who runs it, who can write there at once; -o uid=,gid=,mode= choose",
          "[mount][cli][memfs][fusermount]") {
  REQUIRE(::geteuid() == 0);                             // to become nobody and to clean up
  REQUIRE(::access("/usr/bin/fusermount3", X_OK) == 0);  // without root, mounting goes through it
  const std::string memfs = runfile("examples/memfs/memfs");
  SECTION("an ordinary user (uid 65534, through fusermount3)") {
    temp_dir bin_dir("bin");
    const std::string bin = bin_dir.path() + "/memfs";  // reachable by nobody: runfiles are under root's home
    REQUIRE(sh("cp " + memfs + " " + bin + " && chmod 755 " + bin) == 0);
    struct remove_bin {
      std::string file;
      ~remove_bin() { ::unlink(file.c_str()); }
    } cleanup{bin};
    server s(bin, {"--size", "16M"}, 65534, 65534);
    INFO(s.log());
    REQUIRE(s.mounted());
    auto as_nobody = [&](const std::string& cmd) { return sh("setpriv --reuid=65534 --regid=65534 --clear-groups sh -c \"" + cmd + "\""); };
    // Without allow_other only the mounting user may look inside: ask as that user.
    CHECK(as_nobody("stat -c %u:%g:%a " + s.dir() + " | grep -qx 65534:65534:755") == 0);
    CHECK(as_nobody("echo hello > " + s.path("mine") + " && mkdir " + s.path("dir") + " && grep -qx hello " + s.path("mine")) == 0);
    CHECK(as_nobody("stat -c %u:%g " + s.path("mine") + " | grep -qx 65534:65534") == 0);
    s.signal(SIGTERM);
    REQUIRE(s.wait_exit(20));
    CHECK_FALSE(s.mounted());
  }
  SECTION("root, with -o uid=,gid=,mode=") {
    server s(memfs, {"-o", "uid=4321,gid=8765,mode=1770,allow_other", "--size", "16M"});
    INFO(s.log());
    REQUIRE(s.mounted());
    struct stat st {};
    REQUIRE(::stat(s.dir().c_str(), &st) == 0);
    CHECK(st.st_uid == 4321u);
    CHECK(st.st_gid == 8765u);
    CHECK((st.st_mode & 07777) == 01770u);
    CHECK(S_ISDIR(st.st_mode));
  }
  SECTION("root, by default: root's, 0755, as before") {
    server s(memfs, {"--size", "16M"});
    INFO(s.log());
    REQUIRE(s.mounted());
    struct stat st {};
    REQUIRE(::stat(s.dir().c_str(), &st) == 0);
    CHECK(st.st_uid == 0u);
    CHECK(st.st_gid == 0u);
    CHECK((st.st_mode & 07777) == 0755u);
  }
}
