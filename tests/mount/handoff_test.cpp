// Restart without unmount: passthrough hands its mount to a successor process (--handoff-socket,
// --take-over) while clients stream reads and writes through it. The clients see no error, their
// open files and a directory listing opened before survive, the data is right (through the mount
// and in the backing files), and the mount is the same one throughout. Both transports; root, on
// the host kernel.
#include <catch2/catch.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/mount/handoff_harness.hpp"
#include "tests/mount/server_harness.hpp"

using corofuse::testing::is_mounted;
using corofuse::testing::read_file;
using corofuse::testing::runfile;
using corofuse::testing::start_client;
using namespace corofuse::testing::handoff;

namespace {
const std::string passthrough_bin = runfile("examples/passthrough/passthrough");
const std::string memfs_bin = runfile("examples/memfs/memfs");
}  // namespace

TEST_CASE("passthrough handed over twice while two clients stream: no client error, open files survive, data right", "[mount][handoff]") {
  REQUIRE(::geteuid() == 0);
  const std::string transport = GENERATE(as<std::string>{}, "ring", "dev");
  INFO("transport " << transport);
  if (transport == "ring") REQUIRE(corofuse::testing::uring_enabled());
  handoff_dirs d;
  auto args = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = {passthrough_bin, d.src(), d.mnt(), "--transport", transport, "--handoff-socket", d.sock()};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  server_process first(d.log("first"), args({}));
  REQUIRE(wait_mounted(d.mnt(), 10));
  const dev_t dev = corofuse::session::mounted_device(d.mnt());
  INFO("first server:\n" << first.log());

  std::vector<pid_t> clients;
  for (int id = 0; id < 2; ++id) clients.push_back(start_client([&, id] { return stream(d.mnt(), id, 8.0); }, 90));
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));

  server_process second(d.log("second"), args({"--take-over", d.sock()}));
  CHECK(first.wait_exit(20));
  CHECK(first.exit_status() == 0);
  INFO("second server:\n" << second.log());
  std::this_thread::sleep_for(std::chrono::milliseconds(2000));
  server_process third(d.log("third"), args({"--take-over", d.sock()}));
  CHECK(second.wait_exit(20));
  CHECK(second.exit_status() == 0);
  INFO("third server:\n" << third.log());

  for (pid_t c : clients) CHECK(exit_status(c) == 0);
  // What the ring entries held at each freeze (requests and replies in flight are the hard case).
  for (const std::string& log : {first.log(), second.log()}) {
    auto at = log.find("handed the mount over");
    if (at != std::string::npos) WARN(transport << ": " << log.substr(at, log.find('\n', at) - at));
  }
  CHECK(corofuse::session::mounted_device(d.mnt()) == dev);  // the same mount, never remounted
  CHECK(first.logged("handed the mount over"));
  CHECK(second.logged("took the mount"));
  CHECK(second.logged("handed the mount over"));
  CHECK(third.logged("took the mount"));
  for (int id = 0; id < 2; ++id) {
    const std::string n = "/stream-" + std::to_string(id);
    CHECK(same_bytes(d.mnt() + n, d.src() + n));
  }
  // The last one serves on, and stops as any server does.
  third.signal(SIGTERM);
  CHECK(third.wait_exit(20));
  CHECK(third.exit_status() == 0);
  CHECK_FALSE(is_mounted(d.mnt()));
}

TEST_CASE("a takeover that cannot happen says why in one line and leaves the running server serving", "[mount][handoff]") {
  REQUIRE(::geteuid() == 0);
  handoff_dirs d;
  server_process first(d.log("first"), {passthrough_bin, d.src(), d.mnt(), "--handoff-socket", d.sock()});
  REQUIRE(wait_mounted(d.mnt(), 10));
  INFO("first server:\n" << first.log());
  auto run = [&](const std::string& cmd, std::string& out) {
    const std::string log = d.log("cli");
    int rc = std::system(("timeout -k 5 30 " + cmd + " > " + log + " 2>&1").c_str());
    out = read_file(log);
    ::unlink(log.c_str());
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  };
  std::string out;
  // Nobody listens there.
  CHECK(run(passthrough_bin + " " + d.src() + " " + d.mnt() + " --take-over " + d.sock() + ".none", out) == 1);
  CHECK(out.find("--take-over") != std::string::npos);
  CHECK(std::count(out.begin(), out.end(), '\n') == 1);
  // memfs keeps its files in memory and cannot hand them over: refused before anything happens.
  CHECK(run(memfs_bin + " " + d.mnt() + " --take-over " + d.sock(), out) == 2);
  CHECK(out.find("cannot hand its state") != std::string::npos);
  CHECK(run(memfs_bin + " /tmp --handoff-socket " + d.sock() + ".memfs", out) == 2);
  CHECK(std::count(out.begin(), out.end(), '\n') == 1);
  // A successor that fails after the freeze: it cannot receive the state's descriptors (a client
  // holds 64 files open; the successor may open 32). The first server takes everything back, the
  // client holding the files open through all of it sees nothing, and the log says why.
  pid_t holder = start_client(
      [&] {
        std::vector<int> fds;
        for (int i = 0; i < 64; ++i) {
          const std::string p = d.mnt() + "/held-" + std::to_string(i);
          int fd = ::open(p.c_str(), O_CREAT | O_RDWR, 0644);
          if (fd < 0 || ::pwrite(fd, p.data(), p.size(), 0) != static_cast<ssize_t>(p.size())) return 1;
          fds.push_back(fd);
        }
        std::this_thread::sleep_for(std::chrono::seconds(4));  // the failed takeover happens now
        for (int i = 0; i < 64; ++i) {
          const std::string p = d.mnt() + "/held-" + std::to_string(i);
          std::string back(p.size(), '\0');
          if (::pread(fds[i], back.data(), back.size(), 0) != static_cast<ssize_t>(p.size()) || back != p) return 2;
          if (::close(fds[i]) != 0) return 3;
        }
        return 0;
      },
      60);
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  CHECK(run("prlimit --nofile=32:32 " + passthrough_bin + " " + d.src() + " " + d.mnt() + " --take-over " + d.sock(), out) == 1);
  CHECK(out.find("--take-over") != std::string::npos);
  CHECK(out.find("RLIMIT_NOFILE") != std::string::npos);
  CHECK(std::count(out.begin(), out.end(), '\n') == 1);
  CHECK(exit_status(holder) == 0);
  CHECK(first.logged("failed"));  // "handoff to pid N failed (...): serving on"
  // The first server still serves, and still takes a real successor afterwards.
  CHECK(corofuse::testing::in_client([&] {
          int fd = ::open((d.mnt() + "/after").c_str(), O_CREAT | O_WRONLY, 0644);
          return fd >= 0 && ::write(fd, "ok", 2) == 2 && ::close(fd) == 0 ? 0 : 1;
        }) == 0);
  server_process second(d.log("second"), {passthrough_bin, d.src(), d.mnt(), "--take-over", d.sock()});
  CHECK(first.wait_exit(20));
  CHECK(first.exit_status() == 0);
  INFO("second server:\n" << second.log());
  CHECK(read_file(d.mnt() + "/after") == "ok");
  second.signal(SIGTERM);
  CHECK(second.wait_exit(20));
  CHECK(second.exit_status() == 0);
}

TEST_CASE("passthrough handed over between its inode schemes: descriptors to handles works, handles to descriptors is refused",
          "[mount][handoff]") {
  REQUIRE(::geteuid() == 0);
  handoff_dirs d;
  auto args = [&](const std::string& handles, std::vector<std::string> extra) {
    std::vector<std::string> a = {passthrough_bin, d.src(), d.mnt(), "--inode-handles", handles, "--handoff-socket", d.sock()};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  server_process first(d.log("first"), args("off", {}));
  REQUIRE(wait_mounted(d.mnt(), 10));
  INFO("first server:\n" << first.log());
  // A client keeps a file open and a node known (by an O_PATH descriptor) through every handover.
  int holder_pipe[2];
  REQUIRE(::pipe(holder_pipe) == 0);
  pid_t holder = start_client(
      [&] {
        ::close(holder_pipe[1]);
        const std::string f = d.mnt() + "/held", n = d.mnt() + "/known";
        int fd = ::open(f.c_str(), O_CREAT | O_RDWR, 0644);
        int known = ::open(n.c_str(), O_CREAT | O_WRONLY, 0644);
        if (fd < 0 || known < 0 || ::write(fd, "one", 3) != 3 || ::write(known, "known", 5) != 5 || ::close(known) != 0) return 1;
        known = ::open(n.c_str(), O_PATH);
        if (known < 0) return 2;
        char go;
        if (::read(holder_pipe[0], &go, 1) != 1) return 3;  // the handovers happen now
        if (::pwrite(fd, "two", 3, 3) != 3) return 4;
        char back[8] = {};
        if (::pread(fd, back, sizeof back, 0) != 6 || std::string(back, 6) != "onetwo") return 5;
        struct stat st {};
        if (::fstat(known, &st) != 0 || st.st_size != 5) return 6;
        return ::close(fd) == 0 && ::close(known) == 0 ? 0 : 7;
      },
      90);
  ::close(holder_pipe[0]);
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));

  // Descriptors per inode to file handles: each handed-over node keeps its descriptor.
  server_process second(d.log("second"), args("auto", {"--take-over", d.sock()}));
  CHECK(first.wait_exit(20));
  CHECK(first.exit_status() == 0);
  INFO("second server:\n" << second.log());
  CHECK(second.logged("took the mount"));
  // Back to descriptors: nodes recorded as handles cannot be served without them (a state this
  // server cannot take); the second serves on.
  CHECK(corofuse::testing::in_client([&] { return ::open((d.mnt() + "/new").c_str(), O_CREAT | O_WRONLY, 0644) >= 0 ? 0 : 1; }) == 0);
  const std::string log = d.log("cli");
  int rc = std::system(("timeout -k 5 30 " + passthrough_bin + " " + d.src() + " " + d.mnt() + " --inode-handles off --take-over " +
                        d.sock() + " > " + log + " 2>&1")
                           .c_str());
  const std::string out = read_file(log);
  ::unlink(log.c_str());
  INFO("third server:\n" << out);
  CHECK(WIFEXITED(rc));
  CHECK(WEXITSTATUS(rc) == 1);
  CHECK(out.find("file handles") != std::string::npos);
  CHECK(second.logged("failed"));

  CHECK(::write(holder_pipe[1], "g", 1) == 1);
  ::close(holder_pipe[1]);
  CHECK(exit_status(holder) == 0);
  CHECK(read_file(d.src() + "/held") == "onetwo");
  CHECK(read_file(d.mnt() + "/known") == "known");
  second.signal(SIGTERM);
  CHECK(second.wait_exit(20));
  CHECK(second.exit_status() == 0);
  CHECK_FALSE(is_mounted(d.mnt()));
}
