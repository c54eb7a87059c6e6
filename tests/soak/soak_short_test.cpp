// The soak's short run, part of `bazel test //...` (and so of CI): both examples over both
// transports, SOAK_SECONDS (default 15) of load each, through the same engine as the long soak
// (tests/soak/soak.hpp). Every run must end with 0 errors and have done operations of every kind.
#include <catch2/catch.hpp>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>

#include "tests/soak/soak.hpp"

namespace soak = corofuse::soak;

namespace {

double soak_seconds() {
  const char* env = std::getenv("SOAK_SECONDS");
  const double v = env ? std::atof(env) : 15;
  return v > 0 ? v : 15;
}

}  // namespace

TEST_CASE("soak: memfs and passthrough, ring and /dev/fuse, under concurrent load") {
  REQUIRE(::geteuid() == 0);
  REQUIRE(soak::uring_enabled());
  const std::uint64_t seed = std::random_device{}();
  std::uint64_t errors = 0;
  for (const std::string fs : {"memfs", "passthrough"}) {
    const std::string binary = soak::find_example(fs);
    REQUIRE_FALSE(binary.empty());
    for (const std::string transport : {"ring", "dev"}) {
      const soak::run_result r = soak::run_one({fs, transport, binary, soak_seconds(), 2, seed});
      // The result line in the test log, pass or fail.
      std::printf("%s\n", r.line().c_str());
      std::fflush(stdout);
      std::string messages;
      for (const auto& m : r.messages) messages += m + "\n";
      INFO(r.line() << " (seed " << seed << ")\n"
                    << messages << (r.server_log_tail.empty() ? "" : "the server's log ends:\n" + r.server_log_tail));
      CHECK(r.errors == 0);
      CHECK(r.reads > 0);
      CHECK(r.writes > 0);
      CHECK(r.meta > 0);
      CHECK(r.mmaps > 0);
      errors += r.errors;
    }
  }
  REQUIRE(errors == 0);
}
