// A ring that cannot be created is a clear error naming the cause. The kernel's refusals are
// produced in a forked child by a seccomp filter that makes io_uring_setup fail with a chosen
// errno, so the test changes nothing system-wide (kernel.io_uring_disabled stays as it is).
#include <catch2/catch.hpp>

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <string>

#include "corofuse/io/ring.hpp"

namespace io = corofuse::io;

namespace {

// Makes io_uring_setup(2) fail with `err` for this process.
bool refuse_io_uring_setup(int err) {
  sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (static_cast<unsigned>(err) & SECCOMP_RET_DATA)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog prog{static_cast<unsigned short>(sizeof filter / sizeof filter[0]), filter};
  return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 && prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0;
}

struct outcome {
  bool threw = false;
  int code = 0;
  std::string message;
};

// Creates a ring in a child whose io_uring_setup fails with `err`; reports what was thrown.
outcome create_ring_refused_with(int err) {
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    close(fds[0]);
    std::string report = "none";
    if (!refuse_io_uring_setup(err)) {
      report = "seccomp";
    } else {
      try {
        io::ring r;
        report = "created";
      } catch (const io::ring_error& e) {
        report = "threw " + std::to_string(e.code().value()) + " " + e.what();
      } catch (...) {
        report = "other exception";
      }
    }
    ssize_t n = write(fds[1], report.data(), report.size());
    _exit(n == static_cast<ssize_t>(report.size()) ? 0 : 1);
  }
  close(fds[1]);
  std::string got;
  char buf[512];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) got.append(buf, static_cast<std::size_t>(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  REQUIRE(got != "seccomp");
  outcome o;
  if (got.rfind("threw ", 0) == 0) {
    o.threw = true;
    std::size_t sp = got.find(' ', 6);
    o.code = std::stoi(got.substr(6, sp - 6));
    o.message = got.substr(sp + 1);
  } else {
    o.message = got;
  }
  return o;
}

}  // namespace

TEST_CASE("no io_uring in the kernel: the error says so", "[io][ring]") {
  outcome o = create_ring_refused_with(ENOSYS);
  REQUIRE(o.threw);
  CHECK(o.code == ENOSYS);
  CHECK_THAT(o.message, Catch::Contains("no io_uring") && Catch::Contains("CONFIG_IO_URING"));
}

TEST_CASE("io_uring disabled by policy: the error names the sysctl and seccomp", "[io][ring]") {
  outcome o = create_ring_refused_with(EPERM);
  REQUIRE(o.threw);
  CHECK(o.code == EPERM);
  CHECK_THAT(o.message, Catch::Contains("disabled") && Catch::Contains("seccomp"));
}

TEST_CASE("not enough locked memory: the error names RLIMIT_MEMLOCK", "[io][ring]") {
  outcome o = create_ring_refused_with(ENOMEM);
  REQUIRE(o.threw);
  CHECK(o.code == ENOMEM);
  CHECK_THAT(o.message, Catch::Contains("RLIMIT_MEMLOCK"));
}

TEST_CASE("EINVAL on every flag set: the error mentions 128-byte SQEs", "[io][ring]") {
  // Every attempt (with fewer and fewer flags) is refused, as an old kernel would.
  outcome o = create_ring_refused_with(EINVAL);
  REQUIRE(o.threw);
  CHECK(o.code == EINVAL);
  CHECK_THAT(o.message, Catch::Contains("128-byte SQEs"));
}
