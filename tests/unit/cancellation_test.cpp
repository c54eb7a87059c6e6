// The request's stop token: INTERRUPT cancels every operation a handler tracks, however many are
// in flight (io::cancellation), on the io runtime alone and through the serving threads' routing
// of an INTERRUPT to the context that serves the request.
#include <catch2/catch.hpp>

#include <cerrno>
#include <chrono>
#include <vector>

#include "corofuse/corofuse.hpp"
#include "corofuse/transport/request_path.hpp"
#include "corofuse/transport/serving_threads.hpp"

namespace cf = corofuse;
namespace io = corofuse::io;
using namespace std::chrono_literals;

namespace {

constexpr int tracked = 16;

// `tracked` timeouts of 30 s, each tracked on `stop`, started at once; their results in `res`.
io::task<void> wait_all(io::ring& r, io::cancellation& stop, std::vector<int>& res, int& done) {
  auto one = [](io::ring& rr, io::cancellation& s, int& out, int& d) -> io::task<void> {
    out = co_await io::timeout(rr, 30s).track(s);
    ++d;
  };
  io::scope s;
  for (int i = 0; i < tracked; ++i) s.spawn(one(r, stop, res[i], done));
  while (s.active() > 0) (void)co_await io::timeout(r, 1ms);
}

}  // namespace

TEST_CASE("a cancellation cancels every operation tracked on it, however many", "[cancellation]") {
  io::ring r;
  io::cancellation stop;
  std::vector<int> res(tracked, 1);
  int done = 0;
  io::scope s;
  s.spawn(wait_all(r, stop, res, done));
  r.run_once(false);  // all 16 submitted
  REQUIRE_FALSE(stop.empty());
  stop.request();
  s.spawn(io::cancel_tracked(r, stop));
  r.run_until([&] { return s.active() == 0; });
  CHECK(done == tracked);
  for (int v : res) CHECK(v == -ECANCELED);
  CHECK(stop.empty());
}

TEST_CASE("an operation tracked on a requested cancellation never reaches the kernel", "[cancellation]") {
  io::ring r;
  io::cancellation stop;
  stop.request();
  int res = 1;
  auto t = [&]() -> io::task<void> { res = co_await io::timeout(r, 30s).track(stop); };
  io::sync_wait(r, t());
  CHECK(res == -ECANCELED);
  CHECK(r.in_flight() == 0);
  stop.reset();  // the next request in the same context starts clean
  auto u = [&]() -> io::task<void> { res = co_await io::timeout(r, 1ms).track(stop); };
  io::sync_wait(r, u());
  CHECK(res == -ETIME);
}

TEST_CASE("INTERRUPT of a request cancels all 16 operations its handler tracks", "[cancellation][interrupt]") {
  io::ring r;
  cf::cache_defaults defaults;
  cf::transport::serving_threads threads;
  std::vector<int> res(tracked, 1);
  int done = 0;
  bool interrupted_seen = false;
  int answered = 0;
  {
    cf::transport::serving_thread thread(r, threads);
    cf::context ctx(&r, defaults);
    cf::transport::mailbox_attachment attached(threads, thread.box(), ctx);
    constexpr std::uint64_t unique = 4242;
    // The handler: 16 tracked waits at once, as a handler with many reads in flight would have.
    auto handler = [&]() -> io::task<void> {
      attached.start(unique);
      auto one = [](cf::context& c, int& out, int& d) -> io::task<void> {
        out = co_await c.track(io::timeout(c.ring(), 30s));
        ++d;
      };
      io::scope s;
      for (int i = 0; i < tracked; ++i) s.spawn(one(ctx, res[i], done));
      while (s.active() > 0) (void)co_await io::timeout(r, 1ms);
      interrupted_seen = ctx.interrupted();
      answered = cf::transport::interrupted_error(ctx, ECANCELED);
      attached.end();
    };
    // INTERRUPT arrives (on another reader, in a real server) once the handler waits.
    auto interrupter = [&]() -> io::task<void> {
      (void)co_await io::timeout(r, 20ms);
      threads.interrupt(unique);
    };
    thread.spawn(handler());
    thread.spawn(interrupter());
    thread.run();
  }
  CHECK(done == tracked);
  for (int v : res) CHECK(v == -ECANCELED);
  CHECK(interrupted_seen);
  CHECK(answered == EINTR);
}
