// Acting with the caller's uid and gid for the system calls of one request, so that what a
// filesystem creates on a real disk belongs to the process that asked for it.
//
// setfsuid/setfsgid change only the calling thread (the queue thread serving the request), so
// queues never see each other's identity. Keep the guard around plain system calls only: never
// co_await while it is held (the coroutine may resume with another request's identity, and io_uring
// operations are submitted later, under the thread's identity of that moment).
//
// keep_capabilities_across_fsuid() (once, before the serving threads start) makes a root server
// keep its capabilities while acting as a caller: the kernel has already checked the caller's
// permission (default_permissions) with all its groups, which setfsgid cannot express; the guard
// then only decides ownership. Without it, a change of fsuid drops CAP_DAC_OVERRIDE and friends
// and the backing filesystem checks again with the caller's uid and primary gid alone.
#pragma once

#include <sys/fsuid.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <unistd.h>

#include <linux/capability.h>
#include <linux/securebits.h>
#include <sys/syscall.h>

namespace corofuse {

// True when the process may act as others (it runs as root). Asks the kernel once.
inline bool can_act_as_caller() noexcept {
  static const bool root = ::geteuid() == 0;
  return root;
}

// SECBIT_NO_SETUID_FIXUP for the calling thread and the threads it starts later. False (errno
// set) when the process lacks CAP_SETPCAP.
inline bool keep_capabilities_across_fsuid() noexcept {
  int bits = ::prctl(PR_GET_SECUREBITS);
  if (bits < 0) return false;
  return ::prctl(PR_SET_SECUREBITS, static_cast<unsigned long>(bits) | SECBIT_NO_SETUID_FIXUP) == 0;
}

class caller_credentials {
 public:
  caller_credentials(uid_t uid, gid_t gid) noexcept {
    if (!can_act_as_caller()) return;
    old_gid_ = static_cast<gid_t>(::setfsgid(gid));
    old_uid_ = static_cast<uid_t>(::setfsuid(uid));
    active_ = true;
  }
  ~caller_credentials() {
    if (!active_) return;
    ::setfsuid(old_uid_);
    ::setfsgid(old_gid_);
  }
  caller_credentials(const caller_credentials&) = delete;
  caller_credentials& operator=(const caller_credentials&) = delete;

 private:
  uid_t old_uid_ = 0;
  gid_t old_gid_ = 0;
  bool active_ = false;
};

// Drops one capability from the calling thread's effective set for the guard's lifetime (no-op
// when it is not there). For credentials the kernel snapshots: a backing file registered for
// kernel passthrough writes with the creds of the thread that registered it, and without
// CAP_FSETID those writes clear setuid/setgid as a plain user's would.
class without_capability {
 public:
  explicit without_capability(int cap) noexcept : cap_(cap) {
    if (!get(data_)) return;
    const unsigned word = static_cast<unsigned>(cap_) / 32, bit = 1u << (static_cast<unsigned>(cap_) % 32);
    if (word >= 2 || !(data_[word].effective & bit)) return;
    __user_cap_data_struct lowered[2] = {data_[0], data_[1]};
    lowered[word].effective &= ~bit;
    active_ = set(lowered);
  }
  ~without_capability() {
    if (active_) set(data_);
  }
  without_capability(const without_capability&) = delete;
  without_capability& operator=(const without_capability&) = delete;

 private:
  static bool get(__user_cap_data_struct (&d)[2]) noexcept {
    __user_cap_header_struct h{_LINUX_CAPABILITY_VERSION_3, 0};
    return ::syscall(SYS_capget, &h, d) == 0;
  }
  static bool set(__user_cap_data_struct (&d)[2]) noexcept {
    __user_cap_header_struct h{_LINUX_CAPABILITY_VERSION_3, 0};
    return ::syscall(SYS_capset, &h, d) == 0;
  }
  int cap_;
  __user_cap_data_struct data_[2]{};
  bool active_ = false;
};

}  // namespace corofuse
