// What a handler knows about the request it serves: who asked, and the queue's ring for I/O.
#pragma once

#include <sys/types.h>

#include <cstdint>

#include "corofuse/abi/protocol.hpp"
#include "corofuse/fs/types.hpp"
#include "corofuse/io/ring.hpp"

namespace corofuse {

class context {
 public:
  context(io::ring* ring, const cache_defaults& defaults) noexcept : ring_(ring), defaults_(&defaults) {}

  uid_t uid() const noexcept { return uid_; }
  gid_t gid() const noexcept { return gid_; }
  pid_t pid() const noexcept { return pid_; }
  std::uint64_t unique() const noexcept { return unique_; }
  abi::opcode opcode() const noexcept { return op_; }

  // The ring of the queue this request arrived on: handlers co_await I/O on it.
  io::ring& ring() const noexcept { return *ring_; }
  const cache_defaults& defaults() const noexcept { return *defaults_; }

  // Set by the transport for each request.
  void begin(const abi::in_header& h) noexcept {
    uid_ = h.uid;
    gid_ = h.gid;
    pid_ = static_cast<pid_t>(h.pid);
    unique_ = h.unique;
    op_ = static_cast<abi::opcode>(h.opcode);
  }

 private:
  io::ring* ring_;
  const cache_defaults* defaults_;
  uid_t uid_ = 0;
  gid_t gid_ = 0;
  pid_t pid_ = 0;
  std::uint64_t unique_ = 0;
  abi::opcode op_ = abi::opcode::lookup;
};

}  // namespace corofuse
