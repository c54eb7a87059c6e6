// Fault injection for the failure paths of restart without unmount, for tests only.
//
// Compiled in only where COROFUSE_FAULT_INJECTION is defined (tests/mount builds a passthrough
// with it: //tests/mount:passthrough_faults); in every other build fault_at() is a constant false
// and each call site folds away. A test names one step in the environment:
//
//   COROFUSE_FAULT=STEP        that step fails, along the path a real failure there takes
//   COROFUSE_FAULT=STEP:die    the process kills itself (SIGKILL) at that step
//
// The steps, in the order a handoff takes them (docs/failure-paths.md says what each shows):
//   predecessor.offer     before the OFFER (the ring memory)          successor.map      mapping that memory
//   predecessor.freeze    after the freeze began                      successor.restore  restoring the state
//   predecessor.state     before the STATE is sent                    successor.queues   setting up the rings
//   predecessor.ready     after the STATE, before READY is read       successor.ready    before READY is sent
//   predecessor.go        before GO is sent                           successor.go       after GO arrived
#pragma once

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <string_view>

#include "corofuse/base/log.hpp"

namespace corofuse::session {

#ifdef COROFUSE_FAULT_INJECTION
inline constexpr bool fault_injection_built = true;

// True when the test asked for `step` to fail; never returns when it asked the process to die there.
inline bool fault_at(std::string_view step) {
  const char* env = std::getenv("COROFUSE_FAULT");
  if (!env) return false;
  std::string_view want(env);
  const bool die = want.size() > 4 && want.substr(want.size() - 4) == ":die";
  if (die) want.remove_suffix(4);
  if (want != step) return false;
  // Once per process: a predecessor whose handoff failed takes the next successor, which must not
  // fail the same way.
  static std::atomic<bool> fired{false};
  if (fired.exchange(true)) return false;
  log_message("fault injection: %s at %.*s", die ? "dying" : "failing", static_cast<int>(step.size()), step.data());
  if (die) {
    ::kill(::getpid(), SIGKILL);
    for (;;) ::pause();
  }
  return true;
}
#else
inline constexpr bool fault_injection_built = false;
constexpr bool fault_at(std::string_view) noexcept { return false; }
#endif

}  // namespace corofuse::session
