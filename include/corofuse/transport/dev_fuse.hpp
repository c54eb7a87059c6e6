// The classic transport: requests read from /dev/fuse, replies written back with writev(2).
// Every kernel has it, and a server always keeps readers on it beside a ring (FORGET, INTERRUPT,
// NOTIFY_REPLY and requests made before the ring is ready arrive there: docs/kernel.md, "What
// stays on /dev/fuse").
//
// A reader is a coroutine with its own request and reply buffers; several readers on one thread's
// ring keep several requests in service at once, so a handler waiting for I/O does not hold up
// the others. The readers wait for the device on the ring (a poll) and read it directly: the
// device has no non-blocking mode io_uring could use, so a READ through the ring would park in an
// io-wq worker (measured: a wake-up lost there hung a create/unlink loop with 6+ readers).
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "corofuse/abi/ioctl.hpp"
#include "corofuse/abi/protocol.hpp"
#include "corofuse/abi/structs.hpp"
#include "corofuse/base/log.hpp"
#include "corofuse/fs/notify_replies.hpp"
#include "corofuse/io/operations.hpp"
#include "corofuse/io/ring.hpp"
#include "corofuse/io/task.hpp"
#include "corofuse/proto/reply.hpp"
#include "corofuse/proto/request.hpp"
#include "corofuse/transport/counters.hpp"
#include "corofuse/transport/kernel_order.hpp"
#include "corofuse/transport/page_buffer.hpp"
#include "corofuse/transport/pause_gate.hpp"
#include "corofuse/transport/request_path.hpp"
#include "corofuse/transport/serving_threads.hpp"

namespace corofuse::transport {

// Buffers of one /dev/fuse reader: a request (header + the largest WRITE) and a reply (the largest
// READ), page-aligned and uninitialised (page_buffer.hpp).
class dev_buffers {
 public:
  explicit dev_buffers(std::size_t max_payload)
      : request_size_(max_payload + 4096),
        reply_size_(max_payload + 4096),
        request_(make_page_buffer(request_size_)),
        reply_(make_page_buffer(reply_size_)) {}
  std::span<std::byte> request() noexcept { return {request_.get(), request_size_}; }
  std::span<std::byte> reply() noexcept { return {reply_.get(), reply_size_}; }

 private:
  std::size_t request_size_;
  std::size_t reply_size_;
  page_buffer request_;
  page_buffer reply_;
};

// Why a reader stopped.
enum class reader_end {
  connection_gone,  // ENODEV: unmounted or aborted (the normal end)
  read_failed,      // an unexpected read error (logged)
  stopped,          // told to stop reading (a handoff to a successor process)
};

// Writes one reply to /dev/fuse with writev(2), directly. A /dev/fuse write never waits (it
// hands the reply to the waiting client and returns); through io_uring it would be punted to an
// io-wq worker, a thread hop for nothing, and under load replies queued there behind blocked
// reads stalled the connection (measured: --depth 16 hung after 27 creates). ENOENT means the
// kernel no longer waits for this request (interrupted, or the connection is going away): not
// an error.
inline int send_dev_reply(int fd, std::uint64_t unique, int error, std::span<const std::byte> args) noexcept {
  reply_leaving();
  abi::out_header h = reply_header(unique, error, args.size());
  iovec iov[2] = {{&h, sizeof h}, {const_cast<std::byte*>(args.data()), error ? 0 : args.size()}};
  ssize_t n;
  do {
    n = ::writev(fd, iov, error || args.empty() ? 1 : 2);
  } while (n < 0 && errno == EINTR);
  int res = n < 0 ? -errno : static_cast<int>(n);
  if (res < 0 && res != -ENOENT && res != -ENODEV)
    log_message("writing the reply to request %llu failed: %s", static_cast<unsigned long long>(unique), std::strerror(-res));
  return res;
}

// One non-blocking read of a request (the descriptor is O_NONBLOCK): its size, or -errno.
inline int read_request(int fd, std::span<std::byte> buf) noexcept {
  ssize_t n = ::read(fd, buf.data(), buf.size());
  return n < 0 ? -errno : static_cast<int>(n);
}

// Makes a /dev/fuse descriptor non-blocking (the readers poll on the ring, then read).
inline bool set_nonblocking(int fd) noexcept {
  int fl = ::fcntl(fd, F_GETFL);
  return fl >= 0 && ::fcntl(fd, F_SETFL, fl | O_NONBLOCK) == 0;
}

// What the readers of every /dev/fuse thread share.
struct dev_setup {
  const cache_defaults* cache = nullptr;
  counters* stats = nullptr;
  proto::layout_options layout;  // negotiated details the parser needs (setxattr_ext)
  unsigned depth = 4;            // readers per thread
  std::size_t max_payload = 0;   // the largest WRITE or READ
  serving_threads* threads = nullptr;
  notify_replies* replies = nullptr;
  pause_gate* gate = nullptr;  // where paused readers wait
  unsigned thread_count = 1;   // /dev/fuse threads in all (context::queue_count)
};

// The readers' buffers of one thread, registered as fixed buffers of its ring (request 2i, reply
// 2i+1) so that handlers' read_fixed/write_fixed use fixed-buffer I/O. False (and a log line from
// the first thread only) when the locked-memory limit refuses them: handlers then use plain I/O.
inline bool register_dev_buffers(io::ring& r, const std::vector<std::unique_ptr<dev_buffers>>& buffers, bool say_why) {
  std::vector<iovec> iov;
  for (const auto& b : buffers) {
    iov.push_back({b->request().data(), b->request().size()});
    iov.push_back({b->reply().data(), b->reply().size()});
  }
  try {
    r.register_buffers(iov);
    return true;
  } catch (const std::exception& e) {
    if (say_why) log_message("/dev/fuse reader buffers not registered (%s); handlers use plain reads", e.what());
    return false;
  }
}

// One reader: serves requests from `fd` until the connection ends or the thread is told to stop.
// `first_fixed_index` >= 0: its request and reply buffers are registered on the thread's ring at
// that index and the next. When the connection ends, every thread hears of it.
template <typename Fs>
io::task<reader_end> serve_dev_fuse(Fs& fs, io::ring& r, int fd, dev_buffers& buf, int first_fixed_index, serving_thread& thread,
                                    counter_shard& counts, const dev_setup& setup, unsigned thread_index) {
  request_path<Fs> path(fs, r, *setup.cache, thread, counts, setup.replies, arrival::dev_fuse, thread_index, setup.thread_count);
  if (first_fixed_index >= 0) {
    context_access::set_registered_buffer(path.ctx(), 0, buf.request(), first_fixed_index);
    context_access::set_registered_buffer(path.ctx(), 1, buf.reply(), first_fixed_index + 1);
  }
  mailbox& box = thread.box();
  reader_end end = reader_end::connection_gone;
  for (;;) {
    if (box.pause_reading.load(std::memory_order_acquire)) {
      // Between requests: wait for the pause to end; end if the connection was handed off.
      if (!box.gate || co_await box.gate->wait(r)) {
        end = reader_end::stopped;
        break;
      }
      continue;
    }
    int n = read_request(fd, buf.request());
    if (n == -EAGAIN) {
      // Nothing queued: wait on the ring until the device is readable. Polls wake every waiter;
      // the readers that lose the race read EAGAIN and wait again.
      int ev = co_await io::poll(r, fd, POLLIN);
      if (ev < 0 && ev != -EINTR && ev != -ECANCELED) {
        log_message("polling /dev/fuse failed: %s", std::strerror(-ev));
        end = reader_end::read_failed;
        break;
      }
      continue;
    }
    // ENODEV: the connection is over. ECONNABORTED: the same, for a read that picked a request up
    // as the connection was shut down (an umount racing a client), or after a fusectl abort.
    if (n == -ENODEV || n == -ECONNABORTED) break;
    if (n == -EINTR || n == -ENOENT) continue;  // ENOENT: the request was interrupted before we read it
    if (n < 0) {
      log_message("reading /dev/fuse failed: %s", std::strerror(-n));
      end = reader_end::read_failed;
      break;
    }
    proto::request req;
    const proto::parse_error pe = proto::parse_message(buf.request().first(static_cast<std::size_t>(n)), req, setup.layout);
    proto::reply_buffer out(buf.reply());
    reply_plan p = co_await path.serve(pe, req, out);
    if (!p.expected) continue;
    if (p.from_file) co_await path.read_file(p);
    send_dev_reply(fd, p.unique, p.error, out.written().first(p.bytes));
  }
  // Handed off: the connection lives on in the successor. Otherwise it is over (or this reader
  // failed): zero-copy entries stop touching client pages, and when it is gone for good every
  // thread cancels what its handlers wait for, so that none keeps the process alive.
  if (end != reader_end::stopped) setup.threads->connection_over(end == reader_end::connection_gone);
  co_return end;
}

// A second descriptor on the same connection (FUSE_DEV_IOC_CLONE), so that another thread reads
// requests with its own ring. Returns the descriptor, or -errno.
inline int clone_dev_fd(int session_fd) {
  int fd = ::open("/dev/fuse", O_RDWR | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return -errno;
  std::uint32_t source = static_cast<std::uint32_t>(session_fd);
  if (::ioctl(fd, abi::dev_ioc_clone, &source) != 0) {
    int e = errno;
    ::close(fd);
    return -e;
  }
  return fd;
}

// One extra thread serving /dev/fuse on its cloned descriptor `fd` (closed when it ends), with
// its own ring, buffers and readers, until the connection ends. `running` counts it down.
template <typename Fs>
void run_dev_thread(Fs& fs, int fd, unsigned index, const dev_setup& setup, std::atomic<int>& running) {
  try {
    std::vector<std::unique_ptr<dev_buffers>> buffers;  // before the ring: they outlive it
    for (unsigned i = 0; i < setup.depth; ++i) buffers.push_back(std::make_unique<dev_buffers>(setup.max_payload));
    io::ring_options ro;
    ro.entries = std::max(64u, 4 * setup.depth + 8);
    io::ring r(ro);
    const bool fixed = register_dev_buffers(r, buffers, /*say_why=*/false);  // the main thread said why
    serving_thread thread(r, *setup.threads);
    thread.box().reading_fd = fd;
    thread.box().gate = setup.gate;
    counter_shard& counts = setup.stats->add_shard("dev " + std::to_string(index));
    for (unsigned i = 0; i < setup.depth; ++i) {
      auto reader = [](Fs& f, io::ring& rr, int dfd, dev_buffers& b, int first, serving_thread& t, counter_shard& c, const dev_setup& su,
                       unsigned ti) -> io::task<void> {
        if (co_await serve_dev_fuse(f, rr, dfd, b, first, t, c, su, ti) == reader_end::read_failed)
          log_message("a /dev/fuse reader stopped on an error");
      };
      thread.spawn(reader(fs, r, fd, *buffers[i], fixed ? static_cast<int>(2 * i) : -1, thread, counts, setup, index));
    }
    thread.run();
  } catch (const std::exception& e) {
    log_message("/dev/fuse thread %u failed: %s", index, e.what());
  }
  ::close(fd);
  running.fetch_sub(1);
}

}  // namespace corofuse::transport
