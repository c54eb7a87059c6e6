// Awaiting several tasks at once: all are started together and the awaiter resumes when the last
// one ends. Results come back in order; the first exception (after all have ended) is rethrown.
#pragma once

#include <array>
#include <coroutine>
#include <cstddef>
#include <exception>
#include <optional>
#include <span>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "corofuse/io/frame_pool.hpp"
#include "corofuse/io/task.hpp"

namespace corofuse::io {

namespace detail {

struct when_all_counter {
  std::size_t remaining = 0;
  std::coroutine_handle<> parent;
  std::exception_ptr error;
};

// One awaited task's driver. Started by the parent; on finishing, the last one resumes the parent.
struct when_all_part {
  struct promise_type : frame_pool::allocated {
    when_all_counter* counter = nullptr;
    when_all_part get_return_object() noexcept { return when_all_part{std::coroutine_handle<promise_type>::from_promise(*this)}; }
    std::suspend_always initial_suspend() const noexcept { return {}; }
    auto final_suspend() const noexcept {
      struct last_resumes_parent {
        bool await_ready() const noexcept { return false; }
        std::coroutine_handle<> await_suspend(std::coroutine_handle<promise_type> h) noexcept {
          when_all_counter* c = h.promise().counter;
          if (--c->remaining == 0) return c->parent;
          return std::noop_coroutine();
        }
        void await_resume() const noexcept {}
      };
      return last_resumes_parent{};
    }
    void return_void() noexcept {}
    void unhandled_exception() noexcept { std::terminate(); }  // parts catch everything
  };

  explicit when_all_part(std::coroutine_handle<promise_type> h) noexcept : h(h) {}
  when_all_part(when_all_part&& o) noexcept : h(std::exchange(o.h, {})) {}
  when_all_part(const when_all_part&) = delete;
  ~when_all_part() {
    if (h) h.destroy();
  }
  std::coroutine_handle<promise_type> h;
};

template <typename T>
using when_all_value_t = std::conditional_t<std::is_void_v<T>, std::monostate, T>;

template <typename T>
when_all_part run_part(task<T>& t, std::optional<when_all_value_t<T>>& slot, when_all_counter& c) {
  try {
    if constexpr (std::is_void_v<T>) {
      co_await std::move(t);
      slot.emplace();
    } else {
      slot.emplace(co_await std::move(t));
    }
  } catch (...) {
    if (!c.error) c.error = std::current_exception();
  }
}

// Starts every part; suspends the parent unless they all finished synchronously.
struct start_parts {
  when_all_counter& c;
  std::span<when_all_part> parts;
  bool await_ready() const noexcept { return parts.empty(); }
  bool await_suspend(std::coroutine_handle<> parent) noexcept {
    c.parent = parent;
    c.remaining = parts.size() + 1;  // +1: no part may resume the parent while we are starting them
    for (auto& p : parts) {
      p.h.promise().counter = &c;
      p.h.resume();
    }
    return --c.remaining != 0;
  }
  void await_resume() const noexcept {}
};

}  // namespace detail

// co_await when_all(a(), b()) -> std::tuple of the results (std::monostate for task<void>).
template <typename... T>
task<std::tuple<detail::when_all_value_t<T>...>> when_all(task<T>... tasks) {
  std::tuple<std::optional<detail::when_all_value_t<T>>...> slots;
  detail::when_all_counter counter;
  std::array<detail::when_all_part, sizeof...(T)> parts =
      std::apply([&](auto&... slot) { return std::array<detail::when_all_part, sizeof...(T)>{detail::run_part(tasks, slot, counter)...}; },
                 slots);
  co_await detail::start_parts{counter, parts};
  if (counter.error) std::rethrow_exception(counter.error);
  co_return std::apply([](auto&... slot) { return std::tuple<detail::when_all_value_t<T>...>{std::move(*slot)...}; }, slots);
}

// co_await when_all(std::move(vector_of_tasks)) -> std::vector of the results, in order.
template <typename T>
task<std::vector<detail::when_all_value_t<T>>> when_all(std::vector<task<T>> tasks) {
  std::vector<std::optional<detail::when_all_value_t<T>>> slots(tasks.size());
  detail::when_all_counter counter;
  std::vector<detail::when_all_part> parts;
  parts.reserve(tasks.size());
  for (std::size_t i = 0; i < tasks.size(); ++i) parts.push_back(detail::run_part(tasks[i], slots[i], counter));
  co_await detail::start_parts{counter, parts};
  if (counter.error) std::rethrow_exception(counter.error);
  std::vector<detail::when_all_value_t<T>> out;
  out.reserve(slots.size());
  for (auto& s : slots) out.push_back(std::move(*s));
  co_return out;
}

}  // namespace corofuse::io
