// result<T>: values, errors, and the guard against "errors" that would read as success.
#include <catch2/catch.hpp>

#include <memory>
#include <string>

#include "corofuse/fs/result.hpp"

namespace cf = corofuse;

namespace {
cf::result<std::string> find(bool present) {
  if (!present) return cf::error(ENOENT);
  return std::string("found");
}
}  // namespace

TEST_CASE("result<T> holds a value or a positive errno", "[fs]") {
  auto a = find(true);
  REQUIRE(a.ok());
  CHECK(a.error_code() == 0);
  CHECK(*a == "found");
  CHECK(a->size() == 5);
  auto b = find(false);
  CHECK_FALSE(b.ok());
  CHECK_FALSE(static_cast<bool>(b));
  CHECK(b.error_code() == ENOENT);
}

TEST_CASE("result<T> takes move-only values", "[fs]") {
  cf::result<std::unique_ptr<int>> r = std::make_unique<int>(7);
  REQUIRE(r.ok());
  std::unique_ptr<int> p = std::move(r).value();
  CHECK(*p == 7);
}

TEST_CASE("an error code that is not a positive errno becomes EIO", "[fs]") {
  // A handler returning error(0) or error(-ENOENT) must not make the kernel see success or an
  // out-of-range code (which the kernel turns into EINVAL for the client).
  CHECK(cf::result<int>(cf::error(0)).error_code() == EIO);
  CHECK(cf::result<int>(cf::error(-ENOENT)).error_code() == EIO);
  CHECK(cf::result<int>(cf::error(4096)).error_code() == EIO);
  CHECK(cf::result<int>(cf::error(512)).error_code() == EIO);  // the kernel rejects 512 and up
  CHECK(cf::result<int>(cf::error(511)).error_code() == 511);
  CHECK(cf::result<int>(cf::error(ENOSPC)).error_code() == ENOSPC);
  CHECK_FALSE(cf::result<>(cf::error(0)).ok());
}

TEST_CASE("result<void>", "[fs]") {
  cf::result<> good = cf::ok();
  CHECK(good.ok());
  CHECK(good.error_code() == 0);
  cf::result<> bad = cf::error(EACCES);
  CHECK_FALSE(bad.ok());
  CHECK(bad.error_code() == EACCES);
}

TEST_CASE("result<int> keeps an int value apart from an errno", "[fs]") {
  cf::result<int> v = 5;  // a value of 5, not errno 5
  CHECK(v.ok());
  CHECK(*v == 5);
  cf::result<int> e = cf::error(5);
  CHECK_FALSE(e.ok());
  CHECK(e.error_code() == 5);
}
