// Runs a task to completion on a ring from ordinary code (tests, tools, set-up): the calling
// thread turns the ring's loop until the task ends, then returns its value or rethrows.
#pragma once

#include <cstdio>
#include <exception>
#include <optional>
#include <type_traits>
#include <utility>

#include "corofuse/base/log.hpp"
#include "corofuse/io/ring.hpp"
#include "corofuse/io/scope.hpp"
#include "corofuse/io/task.hpp"

namespace corofuse::io {

namespace detail {
template <typename T>
task<void> store_result(task<T> t, std::optional<T>& out) {
  out.emplace(co_await std::move(t));
}
}  // namespace detail

// Turns the loop until `s` is empty. If the loop itself fails, the coroutines cannot be freed
// (the kernel may still write into their frames): say why, then terminate.
inline void run_scope(ring& r, scope& s) noexcept {
  try {
    r.run_until([&] { return s.active() == 0; });
  } catch (const std::exception& e) {
    log_message("io::sync_wait: the event loop failed with coroutines in flight: %s", e.what());
    std::terminate();
  }
}

template <typename T>
T sync_wait(ring& r, task<T> t) {
  scope s;
  if constexpr (std::is_void_v<T>) {
    s.spawn(std::move(t));
    run_scope(r, s);
    s.rethrow_if_failed();
  } else {
    std::optional<T> out;
    s.spawn(detail::store_result(std::move(t), out));
    run_scope(r, s);
    s.rethrow_if_failed();
    return std::move(*out);
  }
}

}  // namespace corofuse::io
