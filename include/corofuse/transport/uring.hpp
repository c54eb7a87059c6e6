// The io_uring ring transport of protocol 7.42 (Linux 6.14+).
//
// One queue per possible CPU (the kernel picks the queue by the client's CPU), each served by a
// thread pinned to that CPU with its own ring. A queue has `depth` entries; each entry is a
// coroutine that lives as long as the mount:
//
//   REGISTER(header, payload) -> [a request is in the entry] -> dispatch -> reply written in
//   place (out_header in the header's in_out, arguments in the payload) -> COMMIT_AND_FETCH
//   -> [the next request] -> ...
//
// until the kernel completes the command with an error (-ENOTCONN at unmount or abort).
// Rules from KERNEL.md: register only after the INIT reply; every possible CPU's queue must get
// entries (else every client blocks): a queue that cannot be set up makes the caller abort the
// connection; payload buffers >= max_payload_sz; SQE128 rings.
#pragma once

#include <pthread.h>
#include <sched.h>
#include <sys/uio.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <latch>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "corofuse/abi/structs.hpp"
#include "corofuse/abi/uring.hpp"
#include "corofuse/fs/context.hpp"
#include "corofuse/fs/dispatch.hpp"
#include "corofuse/io/operations.hpp"
#include "corofuse/io/ring.hpp"
#include "corofuse/io/scope.hpp"
#include "corofuse/io/task.hpp"
#include "corofuse/proto/reply.hpp"
#include "corofuse/proto/request.hpp"
#include "corofuse/session/counters.hpp"
#include "corofuse/transport/page_buffer.hpp"

namespace corofuse::transport {

// Number of possible CPUs (/sys/devices/system/cpu/possible, e.g. "0-1"): the queues the kernel
// expects, whether or not each CPU is online.
inline unsigned possible_cpus() {
  std::ifstream f("/sys/devices/system/cpu/possible");
  std::string s;
  unsigned highest = 0;
  bool any = false;
  if (f >> s) {
    std::size_t pos = 0;
    while (pos < s.size()) {
      std::size_t comma = s.find(',', pos);
      std::string part = s.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
      std::size_t dash = part.find('-');
      unsigned last = static_cast<unsigned>(std::stoul(dash == std::string::npos ? part : part.substr(dash + 1)));
      highest = std::max(highest, last);
      any = true;
      if (comma == std::string::npos) break;
      pos = comma + 1;
    }
  }
  if (!any) return std::max(1u, std::thread::hardware_concurrency());
  return highest + 1;
}

// The payload size the kernel requires of every entry (KERNEL.md): one byte less is -EINVAL.
inline std::size_t ring_payload_size(std::uint32_t max_write, std::uint32_t max_pages) {
  unsigned limit = 256;
  std::ifstream f("/proc/sys/fs/fuse/max_pages_limit");
  if (unsigned v = 0; f >> v && v > 0) limit = v;
  std::size_t pages = std::min<std::size_t>(max_pages, limit);
  return std::max<std::size_t>({8192, max_write, pages * 4096});
}

// One entry's buffers. The header is what the kernel reads and writes (288 bytes).
struct ring_entry_buffers {
  alignas(64) abi::uring_req_header header{};
  page_buffer payload;
  std::size_t payload_size = 0;
  iovec iov[2]{};  // REGISTER's argument: header, payload
};

// Shared, read-only configuration of the queues plus the cross-thread outcome.
struct ring_setup {
  int fuse_fd = -1;
  unsigned depth = 4;
  std::size_t payload_size = 0;
  proto::layout_options layout;
  const cache_defaults* cache = nullptr;
  session::counters* stats = nullptr;
  std::atomic<int> queues_failed{0};
  std::atomic<int> register_error{0};  // the first REGISTER failure (negative errno)
  std::atomic<int> queues_running{0};
};

template <typename Fs>
io::task<void> serve_ring_entry(Fs& fs, io::ring& r, ring_setup& setup, ring_entry_buffers& e, std::uint16_t qid,
                                std::atomic<std::uint64_t>& queue_requests, int fixed_index) {
  context ctx(&r, *setup.cache);
  std::span<std::byte> payload(e.payload.get(), e.payload_size);
  ctx.set_registered_buffer(0, payload, fixed_index);  // -1 when registration failed
  e.iov[0] = {&e.header, sizeof e.header};
  e.iov[1] = {e.payload.get(), e.payload_size};
  abi::uring_cmd_req cmd{};
  cmd.qid = qid;
  int res = co_await io::uring_cmd(r, setup.fuse_fd, static_cast<std::uint32_t>(abi::uring_cmd::register_entry), &cmd,
                                   sizeof cmd, reinterpret_cast<std::uintptr_t>(e.iov), 2);
  if (res < 0 && res != -ENOTCONN && res != -ECONNABORTED) {
    int expected = 0;
    if (setup.register_error.compare_exchange_strong(expected, res))
      std::fprintf(stderr, "corofuse: REGISTER on queue %u failed: %s; the kernel falls back to /dev/fuse\n", qid, std::strerror(-res));
  }
  for (;;) {
    if (res < 0) {
      if (res != -ENOTCONN && res != -ECONNABORTED && res != -ENODEV)
        std::fprintf(stderr, "corofuse: queue %u: an entry ended on %s; the queue serves on with its other entries\n", qid,
                     std::strerror(-res));
      break;
    }
    // A request is in the entry.
    proto::request req;
    proto::parse_error pe = proto::parse_ring_entry(e.header, payload, e.payload_size, req, setup.layout);
    proto::reply_buffer out(payload);
    reply_status st;
    const std::uint64_t commit_id = e.header.ring_ent_in_out.commit_id;
    if (pe != proto::parse_error::none) {
      setup.stats->malformed();
      std::fprintf(stderr, "corofuse: malformed ring request (queue %u, unique %llu): %.*s\n", qid,
                   static_cast<unsigned long long>(commit_id), static_cast<int>(proto::describe(pe).size()),
                   proto::describe(pe).data());
      st.error = proto::errno_for(pe);
    } else {
      setup.stats->request(req.opcode(), session::counters::path::ring);
      queue_requests.fetch_add(1, std::memory_order_relaxed);
      st = co_await dispatch(fs, ctx, req, out);
      if (st.error) setup.stats->error(req.opcode());
      if (st.no_reply) st = reply_status{};  // every ring request must be committed to fetch the next
    }
    // The reply, in place: out_header in in_out, the arguments already in the payload.
    auto set_reply = [&](int error, std::size_t payload_bytes) {
      abi::out_header oh{};
      oh.len = static_cast<std::uint32_t>(sizeof oh + (error ? 0 : payload_bytes));
      oh.error = -error;
      oh.unique = commit_id;
      std::memcpy(e.header.in_out, &oh, sizeof oh);
      e.header.ring_ent_in_out.payload_sz = error ? 0 : static_cast<std::uint32_t>(payload_bytes);
    };
    auto commit = [&] {
      cmd = abi::uring_cmd_req{};
      cmd.commit_id = commit_id;
      cmd.qid = qid;
      return io::uring_cmd(r, setup.fuse_fd, static_cast<std::uint32_t>(abi::uring_cmd::commit_and_fetch), &cmd, sizeof cmd);
    };
    if (st.read_from_file && !st.error) {
      // READ from a file: the read into the payload and the commit (reply preset for the full
      // size) go out together, linked; one completion when the read is complete.
      set_reply(0, st.data_from.size);
      io::link_result lr =
          co_await io::link(ctx.read_fixed(st.data_from.fd, payload.first(st.data_from.size), st.data_from.offset), commit());
      if (!lr.first_reported) {
        res = lr.second;  // the next request, or the end
        continue;
      }
      // Short (end of file) or failed: the commit was not sent. Reply with what the read gave.
      if (lr.first < 0) set_reply(-lr.first, 0);
      else set_reply(0, static_cast<std::size_t>(lr.first));
      res = co_await commit();
      continue;
    }
    set_reply(st.error, out.size());
    res = co_await commit();
  }
}

// One queue: its thread, pinned to CPU `qid`, runs its ring until every entry has ended.
template <typename Fs>
void run_ring_queue(Fs& fs, ring_setup& setup, std::uint16_t qid, std::latch& started, std::atomic<std::uint64_t>& queue_requests) {
  bool counted_down = false;
  try {
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    CPU_SET(qid, &cpus);
    if (pthread_setaffinity_np(pthread_self(), sizeof cpus, &cpus) != 0)
      std::fprintf(stderr, "corofuse: cannot pin queue %u's thread to CPU %u (offline or not allowed); serving it unpinned\n", qid, qid);

    // The entries' buffers outlive the ring (declared first): the kernel may use them until the
    // ring is gone.
    std::vector<std::unique_ptr<ring_entry_buffers>> entries;
    std::vector<iovec> fixed;
    for (unsigned i = 0; i < setup.depth; ++i) {
      auto e = std::make_unique<ring_entry_buffers>();
      e->payload_size = setup.payload_size;
      e->payload = make_page_buffer(setup.payload_size);
      fixed.push_back({e->payload.get(), e->payload_size});
      entries.push_back(std::move(e));
    }
    io::ring_options ro;
    ro.entries = std::max(64u, 2 * setup.depth + 8);
    io::ring r(ro);  // created here: SINGLE_ISSUER makes this thread the ring's only submitter
    // Payloads as fixed buffers: handlers can READ_FIXED from a backing file straight into them.
    bool registered = true;
    try {
      r.register_buffers(fixed);
    } catch (const std::exception& ex) {
      registered = false;
      std::fprintf(stderr, "corofuse: queue %u: payload buffers not registered (%s); handlers use plain reads\n", qid, ex.what());
    }
    io::scope s;
    for (std::size_t i = 0; i < entries.size(); ++i)
      s.spawn(serve_ring_entry(fs, r, setup, *entries[i], qid, queue_requests, registered ? static_cast<int>(i) : -1));
    r.submit();  // the REGISTERs go out now, before the session is told this queue is set up
    started.count_down();
    counted_down = true;
    r.run_until([&] { return s.active() == 0; });
    setup.queues_running.fetch_sub(1);
  } catch (const std::exception& ex) {
    setup.queues_running.fetch_sub(1);
    std::fprintf(stderr, "corofuse: queue %u failed: %s\n", qid, ex.what());
    setup.queues_failed.fetch_add(1);
    if (!counted_down) started.count_down();
  }
}

}  // namespace corofuse::transport
