// Recycled memory for coroutine frames.
//
// A handler's frame is allocated per request; the hot path must not hit malloc for it. Frames are
// served from per-thread free lists, one per 64-byte size class, so after warm-up a request's
// frames reuse the memory of the previous request's. A block freed on another thread than the one
// that allocated it simply joins that thread's lists (it is plain memory). Lists are bounded:
// beyond `max_cached_per_class` blocks, memory goes back to the system.
#pragma once

#include <cstddef>
#include <new>

namespace corofuse::io {

class frame_pool {
 public:
  static constexpr std::size_t granule = 64;
  // Bigger frames go to operator new. A dispatch frame holds every case's locals: several KiB, and
  // more than 8 KiB unoptimised (-O0), so the classes reach 64 KiB (16 KiB of list heads a thread).
  static constexpr std::size_t max_pooled_size = 65536;
  static constexpr std::size_t max_cached_per_class = 4096;

  static void* allocate(std::size_t n) {
    if (n > max_pooled_size || thread_exiting()) return ::operator new(n);
    auto& p = local();
    std::size_t c = size_class(n);
    if (block* b = p.free_[c]) {
      p.free_[c] = b->next;
      --p.count_[c];
      return b;
    }
    return ::operator new(class_bytes(c));  // a pooled block is always its class's full size
  }

  static void deallocate(void* ptr, std::size_t n) noexcept {
    if (!ptr) return;
    if (n > max_pooled_size) {
      ::operator delete(ptr);
      return;
    }
    if (thread_exiting()) {  // this thread's lists are gone (a frame destroyed during thread exit)
      ::operator delete(ptr);
      return;
    }
    auto& p = local();
    std::size_t c = size_class(n);
    if (p.count_[c] >= max_cached_per_class) {
      ::operator delete(ptr);
      return;
    }
    auto* b = static_cast<block*>(ptr);
    b->next = p.free_[c];
    p.free_[c] = b;
    ++p.count_[c];
  }

  // Blocks currently cached by this thread (for tests and memory reports).
  static std::size_t cached_blocks() noexcept {
    std::size_t total = 0;
    for (std::size_t c : local().count_) total += c;
    return total;
  }

 private:
  struct block {
    block* next;
  };
  static constexpr std::size_t classes = max_pooled_size / granule;

  static constexpr std::size_t size_class(std::size_t n) noexcept { return n == 0 ? 0 : (n - 1) / granule; }
  static constexpr std::size_t class_bytes(std::size_t c) noexcept { return (c + 1) * granule; }

  struct lists {
    block* free_[classes] = {};
    std::size_t count_[classes] = {};
    lists() = default;
    lists(const lists&) = delete;
    ~lists() {
      thread_exiting() = true;
      for (block*& head : free_) {
        while (head) {
          block* next = head->next;
          ::operator delete(head);
          head = next;
        }
      }
    }
  };

  static bool& thread_exiting() noexcept {
    thread_local bool exiting = false;  // trivially destructible: valid until the thread is gone
    return exiting;
  }

  static lists& local() noexcept {
    thread_local lists l;
    return l;
  }

 public:
  // Promise types derive from this to have their frames come from the pool.
  struct allocated {
    static void* operator new(std::size_t n) { return frame_pool::allocate(n); }
    static void operator delete(void* p, std::size_t n) noexcept { frame_pool::deallocate(p, n); }
  };
};

}  // namespace corofuse::io
