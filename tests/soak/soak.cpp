// The long soak (issue 8): concurrent readers, writers, mmap users and metadata churn on memfs and
// passthrough over the ring and /dev/fuse, then every file and directory verified against the
// models (tests/soak/soak.hpp says how). Root only: it mounts.
//
//   bazel run //tests/soak:soak -- [--fs memfs|passthrough|both] [--transport ring|dev|both|pool|pool-copy]
//                                   [--seconds N] [--workers N] [--seed N]
//
// One line per example and transport, then a closing line; exit status 0 only when every run had
// 0 errors (a failed operation, a verification mismatch, a server exit status other than 0, a mount
// left behind, a client that had to be killed all count).
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "tests/soak/soak.hpp"

namespace {

int usage(const char* argv0, const std::string& why) {
  if (!why.empty()) std::fprintf(stderr, "%s: %s\n", argv0, why.c_str());
  std::fprintf(stderr,
               "usage: %s [--fs memfs|passthrough|both] [--transport ring|dev|both|pool|pool-copy] [--seconds N] [--workers N] [--seed N]\n"
               "  defaults: both, both, 30 s per example and transport, 4 workers of each kind, a random seed\n",
               argv0);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  namespace soak = corofuse::soak;
  std::vector<std::string> filesystems{"memfs", "passthrough"};
  std::vector<std::string> transports{"ring", "dev"};
  double seconds = 30;
  int workers = 4;
  std::uint64_t seed = std::random_device{}();
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "-h" || a == "--help") {
      usage(argv[0], "");
      return 0;
    }
    if (i + 1 >= argc) return usage(argv[0], std::string(a) + " needs a value");
    const std::string v = argv[++i];
    char* end = nullptr;
    if (a == "--fs") {
      if (v == "both") filesystems = {"memfs", "passthrough"};
      else if (v == "memfs" || v == "passthrough") filesystems = {v};
      else return usage(argv[0], "--fs takes memfs, passthrough or both, not '" + v + "'");
    } else if (a == "--transport") {
      if (v == "both") transports = {"ring", "dev"};
      else if (v == "ring" || v == "dev" || v == "pool" || v == "pool-copy") transports = {v};
      else return usage(argv[0], "--transport takes ring, dev, both, pool or pool-copy, not '" + v + "'");
    } else if (a == "--seconds") {
      seconds = std::strtod(v.c_str(), &end);
      if (*end || !(seconds > 0 && seconds <= 86400)) return usage(argv[0], "--seconds takes a number from 0 to 86400, not '" + v + "'");
    } else if (a == "--workers") {
      const long n = std::strtol(v.c_str(), &end, 10);
      if (*end || n < 1 || n > 64) return usage(argv[0], "--workers takes a number from 1 to 64, not '" + v + "'");
      workers = static_cast<int>(n);
    } else if (a == "--seed") {
      seed = std::strtoull(v.c_str(), &end, 10);
      if (*end) return usage(argv[0], "--seed takes a number, not '" + v + "'");
    } else {
      return usage(argv[0], "unknown option '" + std::string(a) + "'");
    }
  }
  if (::geteuid() != 0) {
    std::fprintf(stderr, "%s: must run as root (it mounts FUSE and tmpfs file systems)\n", argv[0]);
    return 2;
  }

  std::printf("soak: %zu example(s) x %zu transport(s), %.0f s each, %d workers of each kind, seed %llu\n", filesystems.size(),
              transports.size(), seconds, workers, static_cast<unsigned long long>(seed));
  std::fflush(stdout);
  std::uint64_t ops = 0, errors = 0;
  double total = 0;
  int runs = 0, failed = 0;
  for (const auto& fs : filesystems) {
    const std::string binary = soak::find_example(fs);
    for (const auto& transport : transports) {
      soak::run_result r;
      if (binary.empty()) {
        r.fs = fs;
        r.transport = transport;
        r.errors = 1;
        r.messages.push_back("examples/" + fs + "/" + fs + " is not in this binary's runfiles (run it with bazel run)");
      } else if (transport != "dev" && !soak::uring_enabled()) {
        r.fs = fs;
        r.transport = transport;
        r.errors = 1;
        r.messages.push_back("FUSE-over-io_uring is off: echo Y > /sys/module/fuse/parameters/enable_uring");
      } else {
        r = soak::run_one({fs, transport, binary, seconds, workers, seed});
      }
      for (const auto& m : r.messages) std::fprintf(stderr, "soak: %s %s: %s\n", fs.c_str(), transport.c_str(), m.c_str());
      if (r.errors > r.messages.size())
        std::fprintf(stderr, "soak: %s %s: ... and %llu more\n", fs.c_str(), transport.c_str(),
                     static_cast<unsigned long long>(r.errors - r.messages.size()));
      if (!r.server_log_tail.empty())
        std::fprintf(stderr, "soak: %s %s: the server's log ends:\n%s\n", fs.c_str(), transport.c_str(), r.server_log_tail.c_str());
      std::printf("%s\n", r.line().c_str());
      std::fflush(stdout);
      ops += r.ops();
      errors += r.errors;
      total += r.total_seconds;
      ++runs;
      if (!r.passed()) ++failed;
    }
  }
  std::printf("soak: %s: %d run(s), %d failed, %llu ops, %llu errors, %.1f s in all\n", failed ? "FAIL" : "PASS", runs, failed,
              static_cast<unsigned long long>(ops), static_cast<unsigned long long>(errors), total);
  return failed ? 1 : 0;
}
