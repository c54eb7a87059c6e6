// A temporary file for tests (under $TEST_TMPDIR when Bazel gives one), removed when it goes.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <string>

namespace corofuse::testing {

struct temp_file {
  std::string path;
  int fd = -1;

  explicit temp_file(const std::string& stem = "corofuse-test") {
    const char* dir = std::getenv("TEST_TMPDIR");
    path = std::string(dir && *dir ? dir : "/tmp") + "/" + stem + "-XXXXXX";
    fd = ::mkstemp(path.data());
    REQUIRE(fd >= 0);
  }
  temp_file(const temp_file&) = delete;
  temp_file& operator=(const temp_file&) = delete;
  ~temp_file() {
    ::close(fd);
    ::unlink(path.c_str());
  }
  // Replaces the start of the file with `s`.
  void fill(const std::string& s) const { REQUIRE(::pwrite(fd, s.data(), s.size(), 0) == static_cast<ssize_t>(s.size())); }
  // The first 4 KiB of the file.
  std::string contents() const {
    std::string s(4096, '\0');
    ssize_t n = ::pread(fd, s.data(), s.size(), 0);
    REQUIRE(n >= 0);
    s.resize(static_cast<std::size_t>(n));
    return s;
  }
  struct stat st() const {
    struct stat s {};
    REQUIRE(::fstat(fd, &s) == 0);
    return s;
  }
};

}  // namespace corofuse::testing
