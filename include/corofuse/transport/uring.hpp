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
#include <new>
#include <span>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "corofuse/abi/structs.hpp"
#include "corofuse/abi/uring.hpp"
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
#include "corofuse/transport/pool.hpp"
#include "corofuse/transport/shared_arena.hpp"

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
  iovec iov[2]{};  // REGISTER's argument: header, payload (empty with a buffer pool)
};
static_assert(std::is_trivially_copyable_v<ring_entry_buffers>, "lives in shared memory, handed to a successor as bytes");

// Where one queue's entries live in the arena: `depth` entry headers, then the payload block.
struct queue_layout {
  std::size_t headers_bytes = 0;  // page-rounded
  std::size_t block_bytes = 0;    // page-rounded
  std::size_t per_queue() const noexcept { return headers_bytes + block_bytes; }
};

inline queue_layout layout_of_queue(unsigned depth, std::size_t payload_size) noexcept {
  queue_layout l;
  l.headers_bytes = shared_arena::round_up(std::size_t{depth} * sizeof(ring_entry_buffers));
  l.block_bytes = shared_arena::round_up(std::size_t{depth} * payload_size);
  return l;
}

// Where an entry's requests put their payload: its own buffer (7.42, or a pool the kernel
// refused), or the queue's pool; plus, on a zero-copy queue, its slot and the window standing for it.
struct entry_payload {
  std::span<std::byte> own;      // per-entry payload; empty with a pool
  int own_index = -1;            // its fixed-buffer slot (-1: not registered)
  std::span<std::byte> pool;     // the queue's pool; empty without one
  std::size_t buf_size = 0;      // one pool buffer
  int pool_index = -1;           // the pool's fixed-buffer slot (-1: not registered)
  int zero_copy_slot = -1;       // the entry's slot for the client's pages (-1: not zero-copy)
  std::span<std::byte> window;   // never-mapped stand-in for that slot
};

// Where each entry stands, for a handoff to a successor process (restart without unmount). Once
// `ring_setup::freezing` is set, an entry that gets a request keeps it unserved, and a handler
// that finishes leaves its reply in place uncommitted: the entry is then held, in the kernel's
// eyes a request in service, and the successor commits it from its own ring.
enum class entry_state : std::uint8_t {
  waiting,       // REGISTER or COMMIT_AND_FETCH outstanding: the kernel may hand it a request
  serving,       // a handler runs
  held_request,  // frozen with an unserved request in it
  held_reply,    // frozen with a reply written in place, not committed
  ended,         // completed with an error (unmount, abort)
};
struct entry_slot {
  std::atomic<entry_state> state{entry_state::waiting};
  std::uint64_t commit_id = 0;  // of the held request (written before state, read after it)
};
constexpr bool is_held(entry_state s) noexcept { return s == entry_state::held_request || s == entry_state::held_reply; }

// How a queue was set up (pool.hpp), which a successor must repeat in its own ring: the kernel
// checks the pool's fixed-buffer index on every command and registers zero-copy pages at the
// entries' slots of the committing ring.
struct queue_mode {
  std::uint8_t pool = 0;          // entries take their payload from the queue's pool
  std::uint8_t zero_copy = 0;     // a zero-copy queue
  std::uint8_t sparse_table = 0;  // depth zero-copy slots, then the pool
  std::int32_t pool_index = -1;   // the pool's (or the payload block's) slot; -1: not registered
};

// Shared, read-only configuration of the queues plus the cross-thread outcome.
struct ring_setup {
  int fuse_fd = -1;
  unsigned depth = 4;
  std::size_t payload_size = 0;
  bool use_pool = false;   // 7.46 buffer pools (the kernel offered them and the options allow)
  bool zero_copy = false;  // ask for zero-copy queues
  proto::layout_options layout;
  const cache_defaults* cache = nullptr;
  session::counters* stats = nullptr;
  std::atomic<int> queues_failed{0};
  std::atomic<int> register_error{0};  // the first REGISTER failure (negative errno)
  std::atomic<int> queues_running{0};
  std::atomic<int> pool_queues{0};       // queues serving from a buffer pool
  std::atomic<int> zero_copy_queues{0};  // of which zero-copy
  // Set once any part of the server sees the connection end (an entry's -ENOTCONN/-ECONNABORTED,
  // the /dev/fuse reader's ENODEV): from then on no operation touches a zero-copy slot.
  std::atomic<bool> connection_lost{false};
  interrupt_router* router = nullptr;  // INTERRUPT and shutdown reach the queues' mailboxes through it
  notify_replies* replies = nullptr;   // RETRIEVE's answers (NOTIFY_REPLY) may come over the ring too

  // Restart without unmount. The entries' headers and payloads live in `arena` (queue q at
  // q * arena_layout.per_queue()); `slots` has one entry_slot per entry (queue-major).
  shared_arena* arena = nullptr;
  queue_layout arena_layout;
  entry_slot* slots = nullptr;
  queue_mode* modes = nullptr;  // one per queue: written by each queue, or the predecessor's when adopting
  std::atomic<bool> freezing{false};
  handoff_gate* gate = nullptr;  // where frozen entries wait for the outcome (set when freezing can happen)
  // A successor's start: every entry is taken over as it was held (no REGISTER); its state is in
  // `slots` (held_request or held_reply, with the commit id).
  bool adopt = false;
};

inline bool connection_ended(int res) noexcept { return res == -ENOTCONN || res == -ECONNABORTED || res == -ENODEV; }

template <typename Fs>
io::task<void> serve_ring_entry(Fs& fs, io::ring& r, ring_setup& setup, ring_entry_buffers& e, entry_payload where,
                                std::uint16_t qid, std::atomic<std::uint64_t>& queue_requests, mailbox* box, entry_slot& slot) {
  context ctx(&r, *setup.cache);
  mailbox_attachment attached(setup.router, box, ctx);
  ctx.set_connection_lost_flag(&setup.connection_lost);
  const bool pooled = !where.pool.empty();
  const int cmd_buf_index = pooled ? where.pool_index : -1;  // a registered pool rides on every command
  if (pooled) {
    ctx.set_registered_buffer(0, where.pool, where.pool_index);
  } else {
    ctx.set_registered_buffer(0, where.own, where.own_index);  // -1 when registration failed
  }
  e.iov[0] = {&e.header, sizeof e.header};
  e.iov[1] = pooled ? iovec{nullptr, 0} : iovec{where.own.data(), where.own.size()};
  abi::uring_cmd_req cmd{};
  auto commit_of = [&](std::uint64_t id) {
    reply_leaving();
    cmd = abi::uring_cmd_req{};
    cmd.commit_id = id;
    cmd.qid = qid;
    return io::uring_cmd(r, setup.fuse_fd, static_cast<std::uint32_t>(abi::uring_cmd::commit_and_fetch), &cmd, sizeof cmd, 0, 0,
                         cmd_buf_index);
  };
  int res = 0;
  const entry_state taken_over = setup.adopt ? slot.state.load(std::memory_order_acquire) : entry_state::waiting;
  // The predecessor's entry is touched only on its go (until then it may take everything back).
  if (is_held(taken_over) && co_await setup.gate->wait(r)) co_return;
  if (taken_over == entry_state::held_request) {
    slot.state.store(entry_state::serving, std::memory_order_release);  // served below like any request
  } else if (taken_over == entry_state::held_reply) {
    slot.state.store(entry_state::waiting, std::memory_order_release);  // the predecessor's reply, committed from here
    res = co_await commit_of(slot.commit_id);
  } else {
    cmd.qid = qid;
    if (where.zero_copy_slot >= 0) cmd.ent_zero_copy_buf_index = static_cast<std::uint16_t>(where.zero_copy_slot);
    res = co_await io::uring_cmd(r, setup.fuse_fd, static_cast<std::uint32_t>(abi::uring_cmd::register_entry), &cmd, sizeof cmd,
                                 reinterpret_cast<std::uintptr_t>(e.iov), 2, cmd_buf_index);
    if (res < 0 && !connection_ended(res)) {
      int expected = 0;
      if (setup.register_error.compare_exchange_strong(expected, res))
        std::fprintf(stderr, "corofuse: REGISTER on queue %u failed: %s; the kernel falls back to /dev/fuse\n", qid, std::strerror(-res));
    }
  }
  // Frozen for a successor: the entry keeps what it has (the request, or the reply in place).
  auto hold = [&](entry_state what, std::uint64_t id) {
    slot.commit_id = id;
    slot.state.store(what, std::memory_order_release);
  };
  bool held = false;
  for (;;) {
    if (res < 0) {
      if (connection_ended(res) || res == -ECANCELED) {  // ECANCELED: cancelled at shutdown
        // Operations still in flight on a zero-copy slot would write into pages the client may
        // already own again (Linux 7.3 leaves them registered after an abort): stop them.
        if (!setup.connection_lost.exchange(true) && setup.router) setup.router->connection_lost();
      } else {
        std::fprintf(stderr, "corofuse: queue %u: an entry ended on %s; the queue serves on with its other entries\n", qid,
                     std::strerror(-res));
      }
      break;
    }
    // A request is in the entry. With a pool, its buffer is the one the kernel picked (if the
    // request has anything to copy: a request without gets none, and the reply writes nothing).
    request_arrived();
    std::span<std::byte> payload = where.own;
    const std::uint64_t commit_id = e.header.ring_ent_in_out.commit_id;
    const bool zero_copy = (e.header.ring_ent_in_out.flags & abi::uring_ent_zero_copy) && where.zero_copy_slot >= 0;
    // Frozen, a request is held for the successor, except a zero-copy one: the client's pages are
    // registered in this ring's table, which the successor does not have. It is served here, and
    // its reply held.
    if (setup.freezing.load(std::memory_order_seq_cst) && !zero_copy) {
      hold(entry_state::held_request, commit_id);
      if (co_await setup.gate->wait(r)) {  // the successor serves it
        held = true;
        break;
      }
    }
    slot.state.store(entry_state::serving, std::memory_order_seq_cst);
    proto::parse_error pe = proto::parse_error::none;
    if (pooled) {
      const std::size_t offset = e.header.ring_ent_in_out.offset;
      if (offset % where.buf_size != 0 || offset >= where.pool.size() || where.pool.size() - offset < where.buf_size)
        pe = proto::parse_error::payload_overflow;
      else
        payload = where.pool.subspan(offset, where.buf_size);
    }
    proto::request req;
    if (pe == proto::parse_error::none)
      pe = proto::parse_ring_entry(e.header, payload, payload.size(), req, setup.layout, zero_copy ? where.window : std::span<std::byte>{});
    ctx.set_registered_buffer(1, zero_copy ? where.window : std::span<std::byte>{}, zero_copy ? where.zero_copy_slot : -1,
                              /*offset_addressed=*/true);
    // A zero-copy READ's data goes to the client's pages: the handler's buffer is the window.
    const bool read_to_pages = zero_copy && pe == proto::parse_error::none && req.opcode() == abi::opcode::read;
    proto::reply_buffer out(read_to_pages ? where.window : payload);
    reply_status st;
    if (pe != proto::parse_error::none) {
      setup.stats->malformed();
      std::fprintf(stderr, "corofuse: malformed ring request (queue %u, unique %llu): %.*s\n", qid,
                   static_cast<unsigned long long>(commit_id), static_cast<int>(proto::describe(pe).size()),
                   proto::describe(pe).data());
      st.error = proto::errno_for(pe);
    } else {
      setup.stats->request(req.opcode(), session::counters::path::ring);
      if (zero_copy) setup.stats->zero_copy();
      queue_requests.fetch_add(1, std::memory_order_relaxed);
      attached.start(req.unique());
      if (req.opcode() == abi::opcode::notify_reply && setup.replies) setup.replies->complete(req.unique(), req.data());
      st = co_await dispatch(fs, ctx, req, out);
      st.error = interrupted_error(ctx, st.error);
      if (st.error) setup.stats->error(req.opcode());
      if (st.no_reply) st = reply_status{};  // every ring request must be committed to fetch the next
    }
    // The reply, in place: out_header in in_out, the arguments already in the payload (or, for a
    // zero-copy READ, in the client's pages: payload_sz is then the bytes placed there).
    auto set_reply = [&](int error, std::size_t payload_bytes) {
      abi::out_header oh{};
      oh.len = static_cast<std::uint32_t>(sizeof oh + (error ? 0 : payload_bytes));
      oh.error = -error;
      oh.unique = commit_id;
      std::memcpy(e.header.in_out, &oh, sizeof oh);
      e.header.ring_ent_in_out.payload_sz = error ? 0 : static_cast<std::uint32_t>(payload_bytes);
    };
    auto commit = [&] {
      slot.state.store(entry_state::waiting, std::memory_order_release);
      return commit_of(commit_id);
    };
    if (st.read_from_file && !st.error && setup.freezing.load(std::memory_order_seq_cst)) {
      // Frozen: no commit linked to the read. The data goes into the reply, which is held.
      ctx.end();
      int got = co_await ctx.read_fixed(st.data_from.fd, out.tail().first(st.data_from.size), st.data_from.offset);
      if (got < 0) set_reply(-got, 0);
      else set_reply(0, static_cast<std::size_t>(got));
      hold(entry_state::held_reply, commit_id);
      if (co_await setup.gate->wait(r)) {  // the successor commits it
        held = true;
        break;
      }
      res = co_await commit();
      continue;
    }
    if (st.read_from_file && !st.error) {
      ctx.end();
      // READ from a file: the read into the reply (payload or client pages) and the commit (reply
      // preset for the full size) go out together, linked; one completion when the read is complete.
      std::span<std::byte> dst = out.tail().first(st.data_from.size);
      auto read = ctx.read_fixed(st.data_from.fd, dst, st.data_from.offset);
      if (read.is_immediate()) {  // refused: the connection is gone
        set_reply(ECONNABORTED, 0);
        res = co_await commit();
        continue;
      }
      set_reply(0, st.data_from.size);
      io::link_result lr = co_await io::link(std::move(read), commit());
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
    ctx.end();
    set_reply(st.error, out.size());
    if (setup.freezing.load(std::memory_order_seq_cst)) {
      hold(entry_state::held_reply, commit_id);
      if (co_await setup.gate->wait(r)) {  // the successor commits it
        held = true;
        break;
      }
    }
    res = co_await commit();
  }
  if (!held) slot.state.store(entry_state::ended, std::memory_order_release);
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

    // The buffers outlive the ring (declared first): the kernel may use them until the ring is
    // gone. One block of depth payloads: the pool, or each entry's own payload when there is no
    // pool.
    // They live in the shared arena, which outlives every queue (a successor may take them over).
    std::byte* queue_base = setup.arena->bytes().data() + qid * setup.arena_layout.per_queue();
    std::vector<ring_entry_buffers*> entries;
    for (unsigned i = 0; i < setup.depth; ++i) {
      auto* e = reinterpret_cast<ring_entry_buffers*>(queue_base) + i;
      if (!setup.adopt) new (e) ring_entry_buffers{};  // a successor finds them as they were left
      entries.push_back(e);
    }
    const std::size_t block_size = setup.payload_size * setup.depth;
    std::span<std::byte> all(queue_base + setup.arena_layout.headers_bytes, block_size);
    std::vector<reserved_window> windows;
    io::ring_options ro;
    ro.entries = std::max(64u, 2 * setup.depth + 8);
    io::ring r(ro);  // created here: SINGLE_ISSUER makes this thread the ring's only submitter

    pool_outcome pool;
    if (setup.adopt) {
      // The predecessor's queue as it left it (ADD_QUEUE and ADD_BUFPOOL are the kernel's
      // already): the same fixed-buffer table in this ring.
      const queue_mode& m = setup.modes[qid];
      pool.pool = m.pool;
      pool.zero_copy = m.zero_copy;
      pool.pool_index = m.pool_index;
      pool.sparse_table = m.sparse_table;
      const iovec whole{all.data(), all.size()};
      if (m.sparse_table) {
        r.register_buffers_sparse(setup.depth + 1);
        if (m.pool_index >= 0) r.update_buffers(static_cast<unsigned>(m.pool_index), std::span<const iovec>(&whole, 1));
      } else if (m.pool_index == 0) {
        r.register_buffers(std::span<const iovec>(&whole, 1));
      }
      if (pool.pool) setup.pool_queues.fetch_add(1);
      if (pool.zero_copy) {
        setup.zero_copy_queues.fetch_add(1);
        for (unsigned i = 0; i < setup.depth; ++i) windows.emplace_back(setup.payload_size);
      }
    } else if (setup.use_pool) {
      pool = set_up_pool_queue(r, setup.fuse_fd, qid, all, setup.depth, setup.zero_copy);
      if (!pool.note.empty()) std::fprintf(stderr, "corofuse: queue %u: %s\n", qid, pool.note.c_str());
      if (pool.pool) setup.pool_queues.fetch_add(1);
      if (pool.zero_copy) {
        setup.zero_copy_queues.fetch_add(1);
        for (unsigned i = 0; i < setup.depth; ++i) windows.emplace_back(setup.payload_size);
      }
    } else {
      // Payloads as fixed buffers: handlers can READ_FIXED from a backing file straight into them.
      try {
        const iovec whole{all.data(), all.size()};
        r.register_buffers(std::span<const iovec>(&whole, 1));
        pool.pool_index = 0;
      } catch (const std::exception& ex) {
        std::fprintf(stderr, "corofuse: queue %u: payload buffers not registered (%s); handlers use plain reads\n", qid, ex.what());
      }
    }
    if (setup.modes && !setup.adopt)
      setup.modes[qid] = {static_cast<std::uint8_t>(pool.pool), static_cast<std::uint8_t>(pool.zero_copy),
                          static_cast<std::uint8_t>(pool.sparse_table), pool.pool_index};
    mailbox box;
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
    for (std::size_t i = 0; i < entries.size(); ++i) {
      entry_payload where;
      if (pool.pool) {
        where.pool = all;
        where.buf_size = setup.payload_size;
        where.pool_index = pool.pool_index;
        if (pool.zero_copy) {
          where.zero_copy_slot = static_cast<int>(i);
          where.window = windows[i].bytes();
        }
      } else {
        where.own = all.subspan(i * setup.payload_size, setup.payload_size);
        where.own_index = pool.pool_index;  // the whole block is one fixed buffer
      }
      s.spawn(serve_ring_entry(fs, r, setup, *entries[i], where, qid, queue_requests, &box, setup.slots[qid * setup.depth + i]));
    }
    r.submit();  // the REGISTERs (or a successor's commits) go out now, before the session is told this queue is set up
    started.count_down();
    counted_down = true;
    r.run_until([&] { return s.active() == 0; });
    box.wake();  // the mailbox's watcher sees the entries gone and ends
    r.run_until([&] { return watcher.active() == 0; });
    setup.queues_running.fetch_sub(1);
  } catch (const std::exception& ex) {
    setup.queues_running.fetch_sub(1);
    std::fprintf(stderr, "corofuse: queue %u failed: %s\n", qid, ex.what());
    setup.queues_failed.fetch_add(1);
    if (!counted_down) started.count_down();
  }
}

}  // namespace corofuse::transport
