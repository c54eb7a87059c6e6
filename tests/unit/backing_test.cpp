// Where a backing file's data lives decides where its reads and writes run: inline on the queue
// thread for a file in memory (io_uring would hand them to a worker), inline when cached for a
// local disk, on the ring otherwise (fs/backing.hpp, context::read_fixed/write_fixed).
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "corofuse/corofuse.hpp"

namespace cf = corofuse;
namespace io = corofuse::io;

namespace {

struct memfd {
  int fd = ::memfd_create("corofuse-backing-test", MFD_CLOEXEC);
  ~memfd() { ::close(fd); }
};

std::vector<std::byte> bytes_of(const std::string& s) {
  std::vector<std::byte> v(s.size());
  std::memcpy(v.data(), s.data(), s.size());
  return v;
}

}  // namespace

TEST_CASE("classify_backing: memfds are in memory, /proc is not known to be local", "[backing]") {
  memfd m;
  REQUIRE(m.fd >= 0);
  CHECK(cf::classify_backing(m.fd) == cf::backing_speed::memory);
  int proc = ::open("/proc/self/status", O_RDONLY | O_CLOEXEC);
  REQUIRE(proc >= 0);
  CHECK(cf::classify_backing(proc) == cf::backing_speed::remote);
  ::close(proc);
  CHECK(cf::classify_backing(-1) == cf::backing_speed::remote);
}

TEST_CASE("a file in memory is read and written on the calling thread, the rest on the ring", "[backing]") {
  io::ring r;
  cf::cache_defaults defaults;
  cf::context ctx(&r, defaults);
  memfd m;
  REQUIRE(m.fd >= 0);
  const auto data = bytes_of("the quick brown fox jumps over the lazy dog");
  REQUIRE(::pwrite(m.fd, data.data(), data.size(), 0) == static_cast<ssize_t>(data.size()));

  SECTION("memory: done before it is awaited, no operation reaches the ring") {
    std::vector<std::byte> buf(data.size());
    auto read = ctx.read_fixed(m.fd, buf, 0, cf::backing_speed::memory);
    CHECK(read.is_immediate());
    auto t = [&]() -> io::task<int> { co_return co_await std::move(read); };
    CHECK(io::sync_wait(r, t()) == static_cast<int>(data.size()));
    CHECK(buf == data);
    const auto more = bytes_of("!");
    auto write = ctx.write_fixed(m.fd, more, static_cast<off_t>(data.size()), cf::backing_speed::memory);
    CHECK(write.is_immediate());
    auto w = [&]() -> io::task<int> { co_return co_await std::move(write); };
    CHECK(io::sync_wait(r, w()) == 1);
    char last = 0;
    CHECK(::pread(m.fd, &last, 1, static_cast<off_t>(data.size())) == 1);
    CHECK(last == '!');
  }
  SECTION("memory: the end of the file and errors come back as a read's would") {
    std::vector<std::byte> buf(100);
    auto t = [&]() -> io::task<int> { co_return co_await ctx.read_fixed(m.fd, buf, 40, cf::backing_speed::memory); };
    CHECK(io::sync_wait(r, t()) == static_cast<int>(data.size()) - 40);
    auto bad = [&]() -> io::task<int> { co_return co_await ctx.read_fixed(-1, buf, 0, cf::backing_speed::memory); };
    CHECK(io::sync_wait(r, bad()) == -EBADF);
  }
  SECTION("local: a file that cannot read without blocking (shmem: EOPNOTSUPP) goes to the ring") {
    std::vector<std::byte> buf(data.size());
    auto read = ctx.read_fixed(m.fd, buf, 0, cf::backing_speed::local);
    CHECK_FALSE(read.is_immediate());
    auto t = [&]() -> io::task<int> { co_return co_await std::move(read); };
    CHECK(io::sync_wait(r, t()) == static_cast<int>(data.size()));
    CHECK(buf == data);
  }
  SECTION("remote: always the ring") {
    std::vector<std::byte> buf(data.size());
    auto read = ctx.read_fixed(m.fd, buf, 0);
    CHECK_FALSE(read.is_immediate());
    auto t = [&]() -> io::task<int> { co_return co_await std::move(read); };
    CHECK(io::sync_wait(r, t()) == static_cast<int>(data.size()));
    CHECK(buf == data);
    auto write = ctx.write_fixed(m.fd, data, 0, cf::backing_speed::local);  // writes inline only in memory
    CHECK_FALSE(write.is_immediate());
    auto w = [&]() -> io::task<int> { co_return co_await std::move(write); };
    CHECK(io::sync_wait(r, w()) == static_cast<int>(data.size()));
  }
}
