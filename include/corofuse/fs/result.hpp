// result<T>: what a handler returns: a T, or a positive errno. Errors are values; nothing throws.
//
//   cf::result<cf::attr> getattr(cf::context&, cf::ino i) {
//     if (!exists(i)) return cf::error(ENOENT);
//     return attr_of(i);
//   }
#pragma once

#include <cassert>
#include <cerrno>
#include <type_traits>
#include <utility>
#include <variant>

namespace corofuse {

// A positive errno, as a value a result<T> converts from. Anything the kernel would not take as an
// errno (zero, negative, 512 or more: /dev/fuse rejects such a reply and the client would wait
// forever) is turned into EIO, so the kernel is never told "success" or left without an answer.
struct error {
  int code;
  constexpr explicit error(int errno_value) noexcept : code(errno_value > 0 && errno_value < 512 ? errno_value : EIO) {}
};

template <typename T = void>
class [[nodiscard]] result {
 public:
  using value_type = T;

  // clang-format off: clang-format 14 cannot lay out a requires clause before a constructor
  template <typename U = T>
  requires std::is_constructible_v<T, U&&> &&
      (!std::is_same_v<std::remove_cvref_t<U>, result>)&&(!std::is_same_v<std::remove_cvref_t<U>, error>)constexpr result(U&& v) noexcept(
          std::is_nothrow_constructible_v<T, U&&>)  // NOLINT: implicit by design
      : v_(std::in_place_index<0>, std::forward<U>(v)) {}
  // clang-format on
  constexpr result(error e) noexcept : v_(std::in_place_index<1>, e.code) {}  // NOLINT

  constexpr bool ok() const noexcept { return v_.index() == 0; }
  constexpr explicit operator bool() const noexcept { return ok(); }
  // The errno (> 0) of a failed result; 0 for a successful one.
  constexpr int error_code() const noexcept { return ok() ? 0 : std::get<1>(v_); }

  constexpr T& value() & noexcept {
    assert(ok());
    return std::get<0>(v_);
  }
  constexpr const T& value() const& noexcept {
    assert(ok());
    return std::get<0>(v_);
  }
  constexpr T&& value() && noexcept {
    assert(ok());
    return std::get<0>(std::move(v_));
  }
  constexpr T* operator->() noexcept { return &value(); }
  constexpr const T* operator->() const noexcept { return &value(); }
  constexpr T& operator*() & noexcept { return value(); }
  constexpr const T& operator*() const& noexcept { return value(); }

 private:
  std::variant<T, int> v_;
};

template <>
class [[nodiscard]] result<void> {
 public:
  using value_type = void;
  constexpr result() noexcept = default;
  constexpr result(error e) noexcept : code_(e.code) {}  // NOLINT
  constexpr bool ok() const noexcept { return code_ == 0; }
  constexpr explicit operator bool() const noexcept { return ok(); }
  constexpr int error_code() const noexcept { return code_; }

 private:
  int code_ = 0;
};

// The conventional success of a result<void>.
inline constexpr result<void> ok() noexcept { return {}; }

}  // namespace corofuse
