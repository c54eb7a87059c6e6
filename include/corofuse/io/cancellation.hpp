// A stop token for io_uring operations: any number of them, tracked while in flight.
//
//   io::cancellation stop;
//   int n = co_await io::read(r, fd, buf, 0).track(stop);   // in flight: on stop's list
//   ...elsewhere, on the same thread:  stop.request(); co_await io::cancel_tracked(r, stop);
//
// An operation tracked on a token links a node that lives inside the operation (so in the
// awaiting coroutine's frame: nothing is allocated) into the token's list when it is submitted,
// and unlinks it when it completes. request() may be called from any thread; the list is only
// touched by the thread that owns the ring, which is where cancel_tracked runs. An operation
// tracked on a token that was already requested completes at once with -ECANCELED, without
// reaching the kernel.
#pragma once

#include <atomic>
#include <cstdint>

namespace corofuse::io {

class cancellation {
 public:
  // One operation in flight; part of the operation object.
  struct node {
    node* prev = nullptr;
    node* next = nullptr;
    std::uint64_t user_data = 0;  // the operation's SQE, for IORING_OP_ASYNC_CANCEL
    bool cancel_sent = false;
  };

  cancellation() noexcept { head_.prev = head_.next = &head_; }
  cancellation(const cancellation&) = delete;
  cancellation& operator=(const cancellation&) = delete;

  // Any thread: from now on the tracked operations are to be cancelled.
  void request() noexcept { requested_.store(true, std::memory_order_release); }
  bool requested() const noexcept { return requested_.load(std::memory_order_acquire); }
  // The owner, between two uses (a request served in the same context after another).
  void reset() noexcept { requested_.store(false, std::memory_order_relaxed); }

  bool empty() const noexcept { return head_.next == &head_; }

  // The owning thread.
  void link(node& n, std::uint64_t user_data) noexcept {
    n.user_data = user_data;
    n.cancel_sent = false;
    n.prev = head_.prev;
    n.next = &head_;
    head_.prev->next = &n;
    head_.prev = &n;
  }
  static void unlink(node& n) noexcept {
    if (!n.next) return;
    n.prev->next = n.next;
    n.next->prev = n.prev;
    n.prev = n.next = nullptr;
  }

  // The first operation in flight not yet sent a cancellation (marked as sent), or 0. The
  // caller cancels it and asks again: the list may change while the cancellation is awaited.
  std::uint64_t next_to_cancel() noexcept {
    for (node* n = head_.next; n != &head_; n = n->next) {
      if (n->cancel_sent) continue;
      n->cancel_sent = true;
      return n->user_data;
    }
    return 0;
  }

 private:
  node head_;
  std::atomic<bool> requested_{false};
};

}  // namespace corofuse::io
