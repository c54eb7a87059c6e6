// Where the framework's messages go. An application routes them (to syslog, its own logger, a
// test's buffer) with set_log_sink; by default they go to stderr, one line each, prefixed
// "corofuse: ". Nothing else in the headers writes to stderr.
#pragma once

#include <unistd.h>

#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <string_view>

namespace corofuse {

enum class log_kind {
  message,  // a diagnostic of the framework's (errors, fallbacks, what it serves)
  report,   // output meant to be read as it is (-d's counters at exit, a bad command line)
  trace,    // -d's line per request (unique, opcode, node, arguments, outcome, time), as it is
};

// A sink gets one line at a time, without the trailing newline. It may be called from any
// serving thread at once, and must not call back into the framework.
using log_sink = void (*)(void* user, log_kind kind, std::string_view line);

namespace detail {
inline void stderr_sink(void*, log_kind kind, std::string_view line) {
  // One write per line, so that lines from several threads do not interleave.
  char buf[1200];
  std::size_t n = 0;
  auto put = [&](std::string_view s) {
    const std::size_t room = sizeof buf - 1 - n;
    const std::size_t k = s.size() < room ? s.size() : room;
    for (std::size_t i = 0; i < k; ++i) buf[n++] = s[i];
  };
  if (kind == log_kind::message) put("corofuse: ");
  put(line);
  buf[n++] = '\n';
  (void)!::write(STDERR_FILENO, buf, n);
}

inline std::atomic<log_sink> current_sink{nullptr};
inline std::atomic<void*> current_user{nullptr};

inline void vlog(log_kind kind, const char* fmt, va_list ap) {
  char buf[1024];
  int n = std::vsnprintf(buf, sizeof buf, fmt, ap);
  if (n < 0) return;
  std::size_t len = static_cast<std::size_t>(n) < sizeof buf ? static_cast<std::size_t>(n) : sizeof buf - 1;
  while (len > 0 && buf[len - 1] == '\n') --len;
  const log_sink sink = current_sink.load(std::memory_order_acquire);
  if (sink) sink(current_user.load(std::memory_order_acquire), kind, std::string_view(buf, len));
  else stderr_sink(nullptr, kind, std::string_view(buf, len));
}
}  // namespace detail

// Sends every later line to `sink` (nullptr: back to stderr), with `user` passed through. Set it
// before serving starts: a line logged while it changes may reach the old sink.
inline void set_log_sink(log_sink sink, void* user = nullptr) noexcept {
  detail::current_user.store(user, std::memory_order_release);
  detail::current_sink.store(sink, std::memory_order_release);
}

// One line as it is.
inline void log_line(log_kind kind, std::string_view line) {
  const log_sink sink = detail::current_sink.load(std::memory_order_acquire);
  if (sink) sink(detail::current_user.load(std::memory_order_acquire), kind, line);
  else detail::stderr_sink(nullptr, kind, line);
}

// printf-style; a line longer than 1 KiB is cut, a trailing newline dropped.
[[gnu::format(printf, 2, 3)]] inline void log_to(log_kind kind, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  detail::vlog(kind, fmt, ap);
  va_end(ap);
}

// The framework's diagnostics: log_message("queue %u failed: %s", q, why).
[[gnu::format(printf, 1, 2)]] inline void log_message(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  detail::vlog(log_kind::message, fmt, ap);
  va_end(ap);
}

}  // namespace corofuse
