// What the kernel orders, told to ThreadSanitizer.
//
// A FUSE server's threads hand state to each other through the kernel: a request the kernel
// delivers may depend on every reply it received before (a RELEASE comes only after the FLUSH and
// the READs of that file were answered, whichever threads answered them). ThreadSanitizer sees
// none of that, and reports the handler of the later request racing with the earlier one. So each
// reply releases, and each request received acquires, one token: a request then happens after
// every reply sent before it arrived, which is what the kernel guarantees, and no more (two
// requests in service at once stay unordered, so a real race between them is still reported).
// Without ThreadSanitizer these are empty.
#pragma once

#if defined(__SANITIZE_THREAD__)
#define COROFUSE_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define COROFUSE_TSAN 1
#endif
#endif

#ifdef COROFUSE_TSAN
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
#endif

namespace corofuse::transport {

#ifdef COROFUSE_TSAN
inline char kernel_order_token;
inline void request_arrived() noexcept { __tsan_acquire(&kernel_order_token); }
inline void reply_leaving() noexcept { __tsan_release(&kernel_order_token); }
#else
inline void request_arrived() noexcept {}
inline void reply_leaving() noexcept {}
#endif

}  // namespace corofuse::transport
