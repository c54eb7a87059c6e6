// The classic transport: requests read from /dev/fuse, replies written back, all through the
// queue's io_uring. Every kernel has it, and a server always keeps one reader on it (FORGET,
// INTERRUPT and requests made before the ring is ready arrive there).
//
// A reader is a coroutine with its own request and reply buffers; several readers on one ring
// keep several requests in service at once, so a handler waiting for I/O does not hold up the
// others.
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
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <span>
#include <vector>

#include "corofuse/abi/ioctl.hpp"
#include "corofuse/abi/protocol.hpp"
#include "corofuse/abi/structs.hpp"
#include "corofuse/fs/context.hpp"
#include "corofuse/fs/dispatch.hpp"
#include "corofuse/fs/interrupts.hpp"
#include "corofuse/fs/notify_replies.hpp"
#include "corofuse/io/operations.hpp"
#include "corofuse/io/ring.hpp"
#include "corofuse/io/scope.hpp"
#include "corofuse/io/task.hpp"
#include "corofuse/proto/reply.hpp"
#include "corofuse/proto/request.hpp"
#include "corofuse/session/counters.hpp"
#include "corofuse/transport/kernel_order.hpp"
#include "corofuse/transport/page_buffer.hpp"

namespace corofuse::transport {

// Buffers of one /dev/fuse reader: a request (header + the largest WRITE) and a reply (the largest
// READ), page-aligned and uninitialised (page_buffer.hpp).
class dev_buffers {
 public:
  explicit dev_buffers(std::size_t max_payload)
      : request_size_(max_payload + 4096), reply_size_(max_payload + 4096),
        request_(make_page_buffer(request_size_)), reply_(make_page_buffer(reply_size_)) {}
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

// Writes one reply (out_header + args) to /dev/fuse with writev(2), directly. A /dev/fuse write
// never waits (it hands the reply to the waiting client and returns); through io_uring it would
// be punted to an io-wq worker (the device has no non-blocking mode), a thread hop for nothing,
// and under load replies queued there behind blocked reads stalled the connection (measured:
// --depth 16 hung after 27 creates). ENOENT means the kernel no longer waits for this request
// (interrupted, or the connection is going away): not an error.
inline int send_dev_reply(int fd, std::uint64_t unique, int error, std::span<const std::byte> args) noexcept {
  reply_leaving();
  abi::out_header h{};
  h.len = static_cast<std::uint32_t>(sizeof h + (error ? 0 : args.size()));
  h.error = -error;
  h.unique = unique;
  iovec iov[2] = {{&h, sizeof h}, {const_cast<std::byte*>(args.data()), error ? 0 : args.size()}};
  ssize_t n;
  do {
    n = ::writev(fd, iov, error || args.empty() ? 1 : 2);
  } while (n < 0 && errno == EINTR);
  int res = n < 0 ? -errno : static_cast<int>(n);
  if (res < 0 && res != -ENOENT && res != -ENODEV)
    std::fprintf(stderr, "corofuse: writing the reply to request %llu failed: %s\n", static_cast<unsigned long long>(unique),
                 std::strerror(-res));
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

// Serves requests from `fd` until the connection ends. `layout` carries negotiated details
// (setxattr_ext) the parser needs.
// `first_fixed_index` >= 0: the request and reply buffers are registered on `r` at that index and
// the next, so handlers' ctx.read_fixed/write_fixed use fixed-buffer I/O.
// `router` and `box` (both or neither): INTERRUPT is routed to the request it names, and this
// reader's requests can be interrupted through its thread's mailbox.
template <typename Fs>
io::task<reader_end> serve_dev_fuse(Fs& fs, io::ring& r, int fd, const cache_defaults& defaults, dev_buffers& buf,
                                    session::counters& stats, proto::layout_options layout = {}, int first_fixed_index = -1,
                                    interrupt_router* router = nullptr, mailbox* box = nullptr,
                                    notify_replies* replies = nullptr) {
  // With a mailbox, a handoff stops the reader between requests (mailbox::stop_reading).
  auto told_to_stop = [box] { return box && box->stop_reading.load(std::memory_order_acquire); };
  context ctx(&r, defaults);
  mailbox_attachment attached(router, box, ctx);
  if (first_fixed_index >= 0) {
    ctx.set_registered_buffer(0, buf.request(), first_fixed_index);
    ctx.set_registered_buffer(1, buf.reply(), first_fixed_index + 1);
  }
  for (;;) {
    if (told_to_stop()) {
      // Between requests: wait for the handoff's outcome; end if the successor took over.
      if (!box->gate || co_await box->gate->wait(r)) co_return reader_end::stopped;
      continue;
    }
    int n = read_request(fd, buf.request());
    if (n == -EAGAIN) {
      // Nothing queued: wait on the ring until the device is readable. Polls wake every waiter;
      // the readers that lose the race read EAGAIN and wait again. (A blocking READ through
      // io_uring would park in an io-wq worker in the device's exclusive wait, where a wake-up
      // can be lost: measured, a create/unlink loop hung with 6+ readers.)
      int ev = co_await io::poll(r, fd, POLLIN);
      if (ev < 0 && ev != -EINTR && ev != -ECANCELED) {
        std::fprintf(stderr, "corofuse: polling /dev/fuse failed: %s\n", std::strerror(-ev));
        co_return reader_end::read_failed;
      }
      continue;
    }
    // ENODEV: the connection is over. ECONNABORTED: the same, for a read that picked a request up
    // as the connection was shut down (an umount racing a client), or after a fusectl abort.
    if (n == -ENODEV || n == -ECONNABORTED) co_return reader_end::connection_gone;
    if (n == -EINTR || n == -ENOENT) continue;  // ENOENT: the request was interrupted before we read it
    if (n < 0) {
      std::fprintf(stderr, "corofuse: reading /dev/fuse failed: %s\n", std::strerror(-n));
      co_return reader_end::read_failed;
    }
    request_arrived();
    auto msg = buf.request().first(static_cast<std::size_t>(n));
    proto::request req;
    proto::parse_error e = proto::parse_message(msg, req, layout);
    if (e != proto::parse_error::none) {
      stats.malformed();
      abi::in_header h{};
      if (msg.size() >= sizeof h) std::memcpy(&h, msg.data(), sizeof h);
      std::fprintf(stderr, "corofuse: malformed request (opcode %u, unique %llu): %.*s\n", h.opcode,
                   static_cast<unsigned long long>(h.unique), static_cast<int>(proto::describe(e).size()), proto::describe(e).data());
      if (h.unique != 0 && !abi::opcode_has_no_reply(static_cast<abi::opcode>(h.opcode)))
        send_dev_reply(fd, h.unique, proto::errno_for(e), {});
      continue;
    }
    stats.request(req.opcode(), session::counters::path::dev_fuse);
    if (req.opcode() == abi::opcode::interrupt) {  // never answered
      if (router) router->interrupt(req.op<abi::interrupt_in>().unique);
      continue;
    }
    if (req.opcode() == abi::opcode::notify_reply) {  // a RETRIEVE's data, for the coroutine that asked; never answered
      if (!replies || !replies->complete(req.unique(), req.data()))
        std::fprintf(stderr, "corofuse: NOTIFY_REPLY %llu that nobody waits for\n", static_cast<unsigned long long>(req.unique()));
      continue;
    }
    proto::reply_buffer out(buf.reply());
    attached.start(req.unique());
    reply_status st = co_await dispatch(fs, ctx, req, out);
    st.error = interrupted_error(ctx, st.error);
    ctx.end();
    if (st.no_reply) continue;
    if (st.read_from_file) {  // the READ's data comes from a file, read straight into the reply
      int got = co_await ctx.read_fixed(st.data_from.fd, out.tail().first(st.data_from.size), st.data_from.offset);
      if (got < 0) st.error = -got;
      else out.commit(static_cast<std::size_t>(got));
    }
    if (st.error) stats.error(req.opcode());
    send_dev_reply(fd, req.unique(), st.error, out.written());
  }
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

// What the extra /dev/fuse threads share.
struct dev_threads_setup {
  const cache_defaults* cache = nullptr;
  session::counters* stats = nullptr;
  proto::layout_options layout;
  unsigned depth = 4;
  std::size_t max_payload = 0;
  std::atomic<int> running{0};
  interrupt_router* router = nullptr;
  notify_replies* replies = nullptr;
  handoff_gate* gate = nullptr;  // a handoff to a successor stops the readers there
};

// One extra thread serving /dev/fuse on its cloned descriptor `fd` (closed when it ends), with
// its own ring, buffers and readers, until the connection ends.
template <typename Fs>
void run_dev_thread(Fs& fs, int fd, unsigned index, dev_threads_setup& setup) {
  try {
    std::vector<std::unique_ptr<dev_buffers>> buffers;  // before the ring: they outlive it
    std::vector<iovec> iov;
    for (unsigned i = 0; i < setup.depth; ++i) {
      buffers.push_back(std::make_unique<dev_buffers>(setup.max_payload));
      iov.push_back({buffers.back()->request().data(), buffers.back()->request().size()});
      iov.push_back({buffers.back()->reply().data(), buffers.back()->reply().size()});
    }
    io::ring_options ro;
    ro.entries = std::max(64u, 4 * setup.depth + 8);
    io::ring r(ro);
    bool fixed = true;
    try {
      r.register_buffers(iov);
    } catch (const std::exception&) {
      fixed = false;  // the main thread already said why (the same limit applies)
    }
    mailbox box;
    box.reading_fd = fd;
    box.gate = setup.gate;
    if (setup.router) setup.router->add(box);
    struct leave_router {
      interrupt_router* router;
      mailbox& box;
      ~leave_router() {
        if (router) router->remove(box);
      }
    } leave{setup.router, box};
    io::scope s;
    io::scope watcher;
    watcher.spawn(watch_mailbox(r, box, [&] { return s.active() == 0; }));
    for (unsigned i = 0; i < setup.depth; ++i) {
      auto reader = [](Fs& f, io::ring& rr, int dfd, dev_threads_setup& su, dev_buffers& b, int first, mailbox* mb) -> io::task<void> {
        reader_end end = co_await serve_dev_fuse(f, rr, dfd, *su.cache, b, *su.stats, su.layout, first, su.router, mb, su.replies);
        if (end == reader_end::read_failed) std::fprintf(stderr, "corofuse: a /dev/fuse reader stopped on an error\n");
        // The connection is over: no handler's reply can reach anyone; none may keep the process
        // alive (the main thread's readers may all be waiting in handlers).
        if (end == reader_end::connection_gone && su.router) su.router->stop_all();
      };
      s.spawn(reader(fs, r, fd, setup, *buffers[i], fixed ? static_cast<int>(2 * i) : -1, &box));
    }
    r.run_until([&] { return s.active() == 0; });
    box.wake();
    r.run_until([&] { return watcher.active() == 0; });
  } catch (const std::exception& e) {
    std::fprintf(stderr, "corofuse: /dev/fuse thread %u failed: %s\n", index, e.what());
  }
  ::close(fd);
  setup.running.fetch_sub(1);
}

}  // namespace corofuse::transport
