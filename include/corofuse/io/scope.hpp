// Detached root coroutines: started now, owned by nobody, counted by a scope.
//
// A FUSE ring entry is such a root: it lives as long as the mount, and the session waits for all
// of them to end at shutdown. A scope counts its live roots and keeps the first exception that
// escaped one of them (the rest are counted), so that nothing fails silently.
#pragma once

#include <coroutine>
#include <cstdio>
#include <cstddef>
#include <exception>
#include <utility>

#include "corofuse/base/log.hpp"
#include "corofuse/io/frame_pool.hpp"
#include "corofuse/io/task.hpp"

namespace corofuse::io {

class scope {
 public:
  scope() = default;
  scope(const scope&) = delete;
  scope& operator=(const scope&) = delete;
  // Destroying a scope with live roots would leave them pointing at it.
  ~scope() {
    if (active_ != 0) {
      log_message("io::scope destroyed while coroutines it started are still running");
      std::terminate();
    }
  }

  // Starts `t` at once; it runs until its first suspension before spawn returns.
  void spawn(task<void> t) {
    ++active_;  // before starting: the root may finish (and count down) before run_root returns
    ++spawned_;
    try {
      run_root(this, std::move(t));
    } catch (...) {  // the root's frame could not be allocated: it never started
      --active_;
      --spawned_;
      throw;
    }
  }

  std::size_t active() const noexcept { return active_; }
  std::size_t spawned() const noexcept { return spawned_; }
  std::size_t failed() const noexcept { return failed_; }
  std::exception_ptr first_error() const noexcept { return first_error_; }
  void rethrow_if_failed() const {
    if (first_error_) std::rethrow_exception(first_error_);
  }

  // Resumes the awaiter once no root is left (at once when none is).
  auto join() noexcept {
    struct awaiter {
      scope* s;
      bool await_ready() const noexcept { return s->active_ == 0; }
      void await_suspend(std::coroutine_handle<> h) noexcept { s->joiner_ = h; }
      void await_resume() const noexcept {}
    };
    return awaiter{this};
  }

 private:
  struct root {
    struct promise_type : frame_pool::allocated {
      root get_return_object() noexcept { return {}; }
      std::suspend_never initial_suspend() const noexcept { return {}; }
      std::suspend_never final_suspend() const noexcept { return {}; }  // the frame frees itself
      void return_void() noexcept {}
      void unhandled_exception() noexcept { std::terminate(); }  // run_root catches everything
    };
  };

  static root run_root(scope* s, task<void> t) {
    try {
      co_await std::move(t);
    } catch (...) {
      if (!s->first_error_) s->first_error_ = std::current_exception();
      ++s->failed_;
    }
    s->finished();
  }

  void finished() noexcept {
    if (--active_ == 0 && joiner_) std::exchange(joiner_, {}).resume();
  }

  std::size_t active_ = 0;
  std::size_t spawned_ = 0;
  std::size_t failed_ = 0;
  std::exception_ptr first_error_;
  std::coroutine_handle<> joiner_;
};

}  // namespace corofuse::io
