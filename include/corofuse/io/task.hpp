// task<T>: a lazily started coroutine that produces a T (or throws) for exactly one awaiter.
//
// Starting and finishing use symmetric transfer, so a chain of nested tasks resumes in constant
// stack depth. That needs the compiler to emit the transfer as a tail call: clang always does;
// g++ only with -foptimize-sibling-calls (on at -O2, off at -O0: .bazelrc adds it to every build;
// projects building with their own flags should too). Under AddressSanitizer it does not hold. An exception thrown inside travels to the awaiter. The frame comes from the
// per-thread frame_pool; nothing else is allocated.
#pragma once

#include <cassert>
#include <coroutine>
#include <exception>
#include <new>
#include <stdexcept>
#include <type_traits>
#include <utility>

#include "corofuse/io/frame_pool.hpp"

namespace corofuse::io {

template <typename T = void>
class task;

namespace detail {

// Resumes whoever awaited the task when it finishes.
struct task_final_awaiter {
  bool await_ready() const noexcept { return false; }
  template <typename Promise>
  std::coroutine_handle<> await_suspend(std::coroutine_handle<Promise> h) noexcept {
    auto next = h.promise().continuation;
    return next ? next : std::noop_coroutine();
  }
  void await_resume() const noexcept {}
};

struct task_promise_base : frame_pool::allocated {
  std::coroutine_handle<> continuation;
  std::exception_ptr error;

  std::suspend_always initial_suspend() const noexcept { return {}; }
  task_final_awaiter final_suspend() const noexcept { return {}; }
  void unhandled_exception() noexcept { error = std::current_exception(); }
  void rethrow_if_failed() {
    if (error) std::rethrow_exception(error);
  }
};

template <typename T>
struct task_promise final : task_promise_base {
  alignas(T) unsigned char storage[sizeof(T)];
  bool has_value = false;

  task<T> get_return_object() noexcept;
  template <typename U>
  requires std::is_convertible_v<U&&, T>
  void return_value(U&& v) noexcept(std::is_nothrow_constructible_v<T, U&&>) {
    ::new (static_cast<void*>(storage)) T(std::forward<U>(v));
    has_value = true;
  }
  T& value() noexcept { return *std::launder(reinterpret_cast<T*>(storage)); }
  T take() {
    rethrow_if_failed();
    assert(has_value);
    return std::move(value());
  }
  ~task_promise() {
    if (has_value) value().~T();
  }
};

template <>
struct task_promise<void> final : task_promise_base {
  task<void> get_return_object() noexcept;
  void return_void() noexcept {}
  void take() { rethrow_if_failed(); }
};

}  // namespace detail

template <typename T>
class [[nodiscard]] task {
 public:
  using promise_type = detail::task_promise<T>;
  using value_type = T;

  task() noexcept = default;
  explicit task(std::coroutine_handle<promise_type> h) noexcept : h_(h) {}
  task(task&& o) noexcept : h_(std::exchange(o.h_, {})) {}
  task& operator=(task&& o) noexcept {
    if (this != &o) {
      destroy();
      h_ = std::exchange(o.h_, {});
    }
    return *this;
  }
  task(const task&) = delete;
  task& operator=(const task&) = delete;
  ~task() { destroy(); }

  bool valid() const noexcept { return static_cast<bool>(h_); }
  bool done() const noexcept { return h_ && h_.done(); }

  // Awaiting starts the task; the awaiter resumes when it finishes (value or exception).
  auto operator co_await() && noexcept {
    struct awaiter {
      std::coroutine_handle<promise_type> h;
      bool await_ready() const noexcept { return !h || h.done(); }
      std::coroutine_handle<> await_suspend(std::coroutine_handle<> waiting) noexcept {
        h.promise().continuation = waiting;
        return h;
      }
      T await_resume() {
        if (!h) throw std::logic_error("corofuse::io::task: awaiting an empty task");
        return h.promise().take();
      }
    };
    return awaiter{h_};
  }

  // For the runtime's own drivers (spawn, when_all, sync_wait).
  std::coroutine_handle<promise_type> handle() const noexcept { return h_; }
  std::coroutine_handle<promise_type> release() noexcept { return std::exchange(h_, {}); }

 private:
  void destroy() noexcept {
    if (h_) h_.destroy();
    h_ = {};
  }
  std::coroutine_handle<promise_type> h_;
};

namespace detail {
template <typename T>
task<T> task_promise<T>::get_return_object() noexcept {
  return task<T>{std::coroutine_handle<task_promise<T>>::from_promise(*this)};
}
inline task<void> task_promise<void>::get_return_object() noexcept {
  return task<void>{std::coroutine_handle<task_promise<void>>::from_promise(*this)};
}
}  // namespace detail

}  // namespace corofuse::io
