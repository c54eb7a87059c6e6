// Restart without unmount with every step failed on purpose, on either side, while two clients
// stream reads and writes through the mount (passthrough built with the fault points compiled in:
// session/fault_points.hpp, COROFUSE_FAULT=STEP or STEP:die). For each step the test shows who
// serves the mount afterwards and what the clients saw:
//   - a step that fails before GO: the predecessor serves on; the clients see no error, no byte is
//     lost, and a successor without the fault takes the mount over afterwards;
//   - the successor dying before GO: the same (the predecessor has the kernel resend what the
//     successor may have read);
//   - the predecessor dying after it sent its state, before GO: the successor takes the mount
//     (everything was frozen and handed over); the clients see no error;
//   - the predecessor dying before its state left: nobody can serve; the connection ends with the
//     last /dev/fuse descriptor and the clients get an error at once (ENOTCONN), never a hang;
//   - the successor dying after GO (the documented window): the same, and writing 1 to the
//     connection's fusectl abort frees whatever is left.
// docs/failure-paths.md lists these with the rest of the session's failure paths.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "tests/mount/handoff_harness.hpp"
#include "tests/mount/server_harness.hpp"

using corofuse::testing::in_client;
using corofuse::testing::is_mounted;
using corofuse::testing::read_file;
using corofuse::testing::runfile;
using corofuse::testing::start_client;
using namespace corofuse::testing::handoff;

namespace {

const std::string faults_bin = runfile("tests/mount/passthrough_faults");

enum class after { predecessor_serves, successor_serves, nobody };

struct fault_case {
  std::string fault;  // COROFUSE_FAULT's value
  bool in_predecessor;
  after expect;
};

std::vector<std::string> server_args(const handoff_dirs& d, const std::string& transport, const std::string& fault,
                                     std::vector<std::string> extra = {}) {
  std::vector<std::string> a;
  if (!fault.empty()) a = {"/usr/bin/env", "COROFUSE_FAULT=" + fault};
  a.insert(a.end(), {faults_bin, d.src(), d.mnt(), "--transport", transport, "--handoff-socket", d.sock()});
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

// An operation that must reach the server (a new name: nothing cached can answer it, where a stat
// may be answered from attributes the kernel still holds): 0, or its errno.
int probe(const std::string& mnt) {
  return in_client([&] { return ::mkdir((mnt + "/probe-after").c_str(), 0755) == 0 ? 0 : errno; }, 20);
}

// The servers' logs, read when a check fails (Catch's INFO would read them too early).
struct logs {
  std::vector<std::pair<std::string, const server_process*>> of;
  std::string text() const {
    std::string out;
    for (const auto& [name, p] : of) out += "--- " + name + ":\n" + p->log();
    return out;
  }
};
#define CHECK_LOGGED(cond, l)                          \
  do {                                                 \
    const bool ok_ = (cond);                           \
    if (!ok_) FAIL_CHECK(#cond << "\n" << (l).text()); \
  } while (0)

void run_case(const std::string& transport, const fault_case& c) {
  INFO("transport " << transport << ", COROFUSE_FAULT=" << c.fault);
  handoff_dirs d;
  server_process first(d.log("first"), server_args(d, transport, c.in_predecessor ? c.fault : ""));
  logs l{{{"first", &first}}};
  REQUIRE(wait_mounted(d.mnt(), 10));
  const dev_t dev = corofuse::session::mounted_device(d.mnt());

  const double stream_seconds = c.expect == after::nobody ? 3.0 : 5.0;
  std::vector<pid_t> clients;
  for (int id = 0; id < 2; ++id) clients.push_back(start_client([&, id] { return stream(d.mnt(), id, stream_seconds); }, 90));
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));

  server_process second(d.log("second"), server_args(d, transport, c.in_predecessor ? "" : c.fault, {"--take-over", d.sock()}));
  l.of.push_back({"second", &second});
  const server_process& injected = c.in_predecessor ? first : second;
  auto same_data = [&] {
    for (int id = 0; id < 2; ++id)
      if (!same_bytes(d.mnt() + "/stream-" + std::to_string(id), d.src() + "/stream-" + std::to_string(id))) return false;
    return true;
  };

  switch (c.expect) {
    case after::predecessor_serves: {
      CHECK_LOGGED(second.wait_exit(30), l);
      CHECK_LOGGED(second.exit_status() != 0, l);
      CHECK_LOGGED(!first.exited(), l);
      CHECK_LOGGED(first.logged("handoff"), l);  // why it failed, in the predecessor's log
      // The predecessor is whole again: a successor without the fault takes the mount over.
      server_process third(d.log("third"), server_args(d, transport, "", {"--take-over", d.sock()}));
      l.of.push_back({"third", &third});
      CHECK_LOGGED(first.wait_exit(30), l);
      CHECK_LOGGED(first.exit_status() == 0, l);
      for (pid_t p : clients) CHECK_LOGGED(exit_status(p) == 0, l);
      CHECK(corofuse::session::mounted_device(d.mnt()) == dev);
      CHECK_LOGGED(third.logged("took the mount"), l);
      CHECK_LOGGED(same_data(), l);
      third.signal(SIGTERM);
      CHECK_LOGGED(third.wait_exit(20), l);
      CHECK_LOGGED(third.exit_status() == 0, l);
      l.of.pop_back();
      break;
    }
    case after::successor_serves: {
      CHECK_LOGGED(first.wait_exit(30), l);
      CHECK_LOGGED(first.exit_status() == 128 + SIGKILL, l);
      for (pid_t p : clients) CHECK_LOGGED(exit_status(p) == 0, l);
      CHECK_LOGGED(!second.exited(), l);
      CHECK_LOGGED(second.logged("the predecessor died after handing over its state"), l);
      CHECK(corofuse::session::mounted_device(d.mnt()) == dev);
      CHECK_LOGGED(same_data(), l);
      second.signal(SIGTERM);
      CHECK_LOGGED(second.wait_exit(20), l);
      CHECK_LOGGED(second.exit_status() == 0, l);
      break;
    }
    case after::nobody: {
      // Whoever was to serve is gone: both processes end, and the clients end too, with an error,
      // within their time limit (start_client's), never hanging.
      CHECK_LOGGED(first.wait_exit(30), l);
      CHECK_LOGGED(second.wait_exit(30), l);
      for (pid_t p : clients) {
        const int st = exit_status(p);
        CHECK_LOGGED(st != 0 && st < 128, l);  // an error they saw, not the time limit's SIGKILL
      }
      const int e = probe(d.mnt());
      CHECK_LOGGED((e == ENOTCONN || e == ECONNABORTED), l);
      // What is left of the connection is freed by an abort through fusectl (a no-op when the
      // kernel already ended it), and the mount point by a lazy unmount.
      corofuse::testing::detach_and_abort(d.mnt());
      CHECK_FALSE(is_mounted(d.mnt()));
      break;
    }
  }
  CHECK_LOGGED(injected.logged("fault injection"), l);  // the step was reached
}

}  // namespace

TEST_CASE("handoff: a step that fails before GO leaves the predecessor serving; no client error, no byte lost",
          "[mount][handoff][faults]") {
  REQUIRE(::geteuid() == 0);
  const std::string transport = GENERATE(as<std::string>{}, "ring", "dev");
  if (transport == "ring") REQUIRE(corofuse::testing::uring_enabled());
  std::vector<fault_case> cases = {
      {"predecessor.offer", true, after::predecessor_serves},  {"predecessor.freeze", true, after::predecessor_serves},
      {"predecessor.state", true, after::predecessor_serves},  {"predecessor.ready", true, after::predecessor_serves},
      {"predecessor.go", true, after::predecessor_serves},     {"successor.map", false, after::predecessor_serves},
      {"successor.restore", false, after::predecessor_serves}, {"successor.ready", false, after::predecessor_serves},
  };
  // Only the ring has queues to set up.
  if (transport == "ring") cases.push_back({"successor.queues", false, after::predecessor_serves});
  for (const auto& c : cases) {
    SECTION(c.fault) { run_case(transport, c); }
  }
}

TEST_CASE("handoff: the successor dying before GO leaves the predecessor serving; no client error, no byte lost",
          "[mount][handoff][faults]") {
  REQUIRE(::geteuid() == 0);
  const std::string transport = GENERATE(as<std::string>{}, "ring", "dev");
  if (transport == "ring") REQUIRE(corofuse::testing::uring_enabled());
  for (const char* f : {"successor.map:die", "successor.restore:die", "successor.ready:die"}) {
    SECTION(f) { run_case(transport, {f, false, after::predecessor_serves}); }
  }
}

TEST_CASE("handoff: the predecessor dying after its state left, before GO: the successor takes the mount; no client error",
          "[mount][handoff][faults]") {
  REQUIRE(::geteuid() == 0);
  const std::string transport = GENERATE(as<std::string>{}, "ring", "dev");
  if (transport == "ring") REQUIRE(corofuse::testing::uring_enabled());
  for (const char* f : {"predecessor.ready:die", "predecessor.go:die"}) {
    SECTION(f) { run_case(transport, {f, true, after::successor_serves}); }
  }
}

TEST_CASE(
    "handoff: nobody left to serve (the predecessor dying before its state left, the successor after GO): clients get "
    "ENOTCONN at once, never hang; fusectl's abort frees the rest",
    "[mount][handoff][faults]") {
  REQUIRE(::geteuid() == 0);
  const std::string transport = GENERATE(as<std::string>{}, "ring", "dev");
  if (transport == "ring") REQUIRE(corofuse::testing::uring_enabled());
  SECTION("predecessor.state:die") { run_case(transport, {"predecessor.state:die", true, after::nobody}); }
  SECTION("successor.go:die") { run_case(transport, {"successor.go:die", false, after::nobody}); }
}
