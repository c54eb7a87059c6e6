// Routing the kernel's NOTIFY_REPLY (the answer to a RETRIEVE notification) back to the coroutine
// that asked. The reply arrives on /dev/fuse, on whichever reader, named by the notify_unique the
// server chose; the asker waits on its own ring for an eventfd that the reader writes once the
// data is in the asker's buffer.
#pragma once

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <span>
#include <vector>

namespace corofuse {

class notify_replies {
 public:
  // One awaited RETRIEVE: the asker's buffer, how much the kernel sent, and its wake-up.
  struct slot {
    std::uint64_t unique = 0;
    std::span<std::byte> buffer;
    std::size_t received = 0;
    int efd = -1;
  };

  // A fresh notify_unique (never 0, never a request's: the kernel does not check, but a log reads better).
  std::uint64_t next_unique() noexcept { return next_.fetch_add(1, std::memory_order_relaxed); }

  void expect(slot& s) {
    std::lock_guard lock(mutex_);
    waiting_.push_back(&s);
  }
  void forget(slot& s) {
    std::lock_guard lock(mutex_);
    waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), &s), waiting_.end());
  }

  // A NOTIFY_REPLY: `data` is what the kernel sent. False when nobody waits for `unique`.
  bool complete(std::uint64_t unique, std::span<const std::byte> data) {
    std::lock_guard lock(mutex_);
    for (auto it = waiting_.begin(); it != waiting_.end(); ++it) {
      slot* s = *it;
      if (s->unique != unique) continue;
      s->received = std::min(data.size(), s->buffer.size());
      if (s->received) std::memcpy(s->buffer.data(), data.data(), s->received);
      waiting_.erase(it);
      std::uint64_t one = 1;
      (void)!::write(s->efd, &one, sizeof one);
      return true;
    }
    return false;
  }

 private:
  std::mutex mutex_;
  std::vector<slot*> waiting_;
  std::atomic<std::uint64_t> next_{std::uint64_t{1} << 62};
};

}  // namespace corofuse
