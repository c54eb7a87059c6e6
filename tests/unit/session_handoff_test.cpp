// The handoff wire (session/handoff.hpp): blobs of values, strings and descriptors over a unix
// SEQPACKET socket pair, in pieces; malformed or short input is an error, never a crash; received
// descriptors are owned and closed. And the shared arena a successor maps at the same address.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "corofuse/session/handoff.hpp"
#include "corofuse/transport/shared_arena.hpp"

namespace cs = corofuse::session;
namespace ct = corofuse::transport;

namespace {

struct socket_pair {
  int a = -1, b = -1;
  socket_pair() {
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
    a = sv[0];
    b = sv[1];
    timeval tv{5, 0};
    ::setsockopt(b, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~socket_pair() {
    ::close(a);
    ::close(b);
  }
};

int open_fds() {
  int n = 0;
  for (int fd = 0; fd < 4096; ++fd) n += ::fcntl(fd, F_GETFD) >= 0 ? 1 : 0;
  return n;
}

}  // namespace

TEST_CASE("handoff blobs: values, strings and 600 descriptors arrive whole, in pieces", "[session][handoff]") {
  socket_pair p;
  const int before = open_fds();
  std::vector<int> sent;
  cs::handoff_writer w;
  w.put<std::uint64_t>(0x1122334455667788ull);
  w.put_string("a mount point");
  for (int i = 0; i < 600; ++i) {  // more than one piece can carry (250)
    int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    sent.push_back(fd);
    w.put_fd(fd);
  }
  std::string big(200 * 1024, 'x');  // more bytes than one piece (32 KiB)
  big[12345] = 'y';
  w.put_string(big);
  std::thread sender([&] { cs::send_blob(p.a, w); });
  {
    cs::handoff_reader r = cs::receive_blob(p.b);
    sender.join();
    CHECK(r.get<std::uint64_t>() == 0x1122334455667788ull);
    CHECK(r.get_string() == "a mount point");
    for (int i = 0; i < 600; ++i) {
      int taken = r.take_fd();
      struct stat st {};
      CHECK(::fstat(taken, &st) == 0);
      CHECK(S_ISCHR(st.st_mode));  // /dev/null
      ::close(taken);
    }
    CHECK(r.get_string() == big);
    CHECK(r.at_end());
    CHECK_THROWS_AS(r.get<std::uint8_t>(), cs::handoff_error);  // past the end
  }
  for (int fd : sent) ::close(fd);
  CHECK(open_fds() == before);
}

TEST_CASE("handoff blobs: descriptors not taken are closed with the reader; a descriptor is taken once", "[session][handoff]") {
  socket_pair p;
  const int before = open_fds();
  {
    cs::handoff_writer w;
    int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    w.put_fd(fd);
    w.put_fd(fd);
    cs::send_blob(p.a, w);
    ::close(fd);
    cs::handoff_reader r = cs::receive_blob(p.b);
    CHECK(open_fds() == before + 2);  // two copies received
    int first = r.take_fd();
    CHECK(first >= 0);
    ::close(first);
  }
  CHECK(open_fds() == before);  // the one not taken went with the reader
  {
    cs::handoff_writer w;
    w.put<std::uint32_t>(0);
    w.put<std::uint32_t>(0);  // index 0 again
    cs::handoff_reader r(w.bytes(), {::open("/dev/null", O_RDONLY | O_CLOEXEC)});
    ::close(r.take_fd());
    CHECK_THROWS_AS(r.take_fd(), cs::handoff_error);
  }
  CHECK(open_fds() == before);
}

TEST_CASE("handoff readers refuse what does not add up", "[session][handoff]") {
  // A string longer than the blob, a descriptor index never sent, a value cut short.
  {
    cs::handoff_writer w;
    w.put<std::uint32_t>(1000);  // a string length with no bytes after it
    cs::handoff_reader r(w.bytes(), {});
    CHECK_THROWS_AS(r.get_string(), cs::handoff_error);
  }
  {
    cs::handoff_writer w;
    w.put<std::uint32_t>(3);  // descriptor index 3 of none
    cs::handoff_reader r(w.bytes(), {});
    CHECK_THROWS_AS(r.take_fd(), cs::handoff_error);
  }
  {
    std::vector<std::byte> two(2);
    cs::handoff_reader r(two, {});
    CHECK_THROWS_AS(r.get<std::uint64_t>(), cs::handoff_error);
  }
  {
    cs::handoff_writer w;
    w.put<std::uint32_t>(5);
    w.put_bytes(std::as_bytes(std::span("abcde", 5)));
    cs::handoff_reader r(w.bytes(), {});
    CHECK_THROWS_AS(r.get_string(4), cs::handoff_error);  // over the caller's limit
  }
}

TEST_CASE("handoff wire: a malformed head, a peer that closes, a peer that says nothing", "[session][handoff]") {
  {
    socket_pair p;
    const char junk[3] = {1, 2, 3};
    REQUIRE(::send(p.a, junk, sizeof junk, 0) == 3);
    CHECK_THROWS_AS(cs::receive_blob(p.b), cs::handoff_error);
  }
  {
    socket_pair p;
    std::uint64_t head[2] = {std::uint64_t{1} << 40, 0};  // a terabyte announced
    REQUIRE(::send(p.a, head, sizeof head, 0) == sizeof head);
    CHECK_THROWS_AS(cs::receive_blob(p.b), cs::handoff_error);
  }
  {
    socket_pair p;
    std::uint64_t head[2] = {100, 0};  // 100 bytes announced, then the peer goes away
    REQUIRE(::send(p.a, head, sizeof head, 0) == sizeof head);
    ::shutdown(p.a, SHUT_WR);
    CHECK_THROWS_AS(cs::receive_blob(p.b), cs::handoff_error);
  }
  {
    socket_pair p;
    timeval tv{0, 200 * 1000};
    ::setsockopt(p.b, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    CHECK_THROWS_WITH(cs::receive_blob(p.b), Catch::Contains("in time"));
  }
}

TEST_CASE("handoff sockets: the listener is owner-only; a stale socket file is replaced; a missing one is named", "[session][handoff]") {
  char dir[] = "/tmp/corofuse-handoff-unit-XXXXXX";
  REQUIRE(::mkdtemp(dir));
  const std::string path = std::string(dir) + "/s";
  int l1 = cs::listen_for_successor(path);
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 077) == 0);  // no access for anyone else
  ::close(l1);                     // the file stays: a stale socket
  int l2 = cs::listen_for_successor(path);
  int c = cs::connect_to_predecessor(path, 1);
  CHECK(c >= 0);
  ::close(c);
  ::close(l2);
  ::unlink(path.c_str());
  CHECK_THROWS_WITH(cs::connect_to_predecessor(path, 1), Catch::Contains("--take-over"));
  CHECK_THROWS_AS(cs::listen_for_successor(std::string(200, 'x')), cs::handoff_error);
  ::rmdir(dir);
}

TEST_CASE("shared arena: a second mapping at the same address sees the same bytes; a taken address is refused", "[session][handoff]") {
  ct::shared_arena a = ct::shared_arena::create(3 * 4096 + 1);
  CHECK(a.size() == 4 * 4096);
  std::memcpy(a.bytes().data() + 5000, "held", 4);
  // The successor's view, simulated in this process: the address is taken (by `a`), so mapping
  // there must fail rather than replace it.
  int dup = ::dup(a.fd());
  CHECK_THROWS_WITH(ct::shared_arena::map_at(dup, a.address(), a.size()), Catch::Contains("its address"));
  // In a child (a copy of this address space without `a`'s mapping) it maps there and reads it.
  const std::uintptr_t where = a.address();
  const std::size_t size = a.size();
  const int fd = a.fd();
  pid_t child = ::fork();
  if (child == 0) {
    ::munmap(reinterpret_cast<void*>(where), size);
    int mine = ::dup(fd);
    try {
      ct::shared_arena b = ct::shared_arena::map_at(mine, where, size);
      ::_exit(std::memcmp(b.bytes().data() + 5000, "held", 4) == 0 && b.address() == where ? 0 : 1);
    } catch (...) {
      ::_exit(2);
    }
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK_THROWS_AS(ct::shared_arena::map_at(::dup(fd), where + 1, size), std::runtime_error);  // not page-aligned
}
