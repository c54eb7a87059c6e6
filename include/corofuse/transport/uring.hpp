// The io_uring ring transport of protocol 7.42 (Linux 6.14+), and its 7.46 buffer pools and
// zero-copy (pool.hpp).
//
// One queue per possible CPU (the kernel picks the queue by the client's CPU), each served by a
// thread pinned to that CPU with its own ring. A queue has `depth` entries; each entry is a
// coroutine that lives as long as the mount and only carries requests:
//
//   REGISTER -> [a request is in the entry] -> request_path::serve -> the reply written in place
//   (out_header in the header's in_out, arguments in the payload) -> COMMIT_AND_FETCH -> ...
//
// until the kernel completes the command with an error (-ENOTCONN at unmount or abort). The rules
// (docs/kernel.md, "The 7.42 ring"): register only after the INIT reply; every possible CPU's
// queue must get entries, or every client blocks, so a queue that cannot be set up makes the
// session abort the connection; payload buffers of at least max_payload_sz; SQE128 rings.
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
#include "corofuse/transport/pool.hpp"
#include "corofuse/transport/request_path.hpp"
#include "corofuse/transport/serving_threads.hpp"
#include "corofuse/transport/shared_arena.hpp"

namespace corofuse::transport {

// Number of possible CPUs (/sys/devices/system/cpu/possible, e.g. "0-1"): the queues the kernel
// expects, whether or not each CPU is online. Read once: the set is fixed at boot.
inline unsigned possible_cpus() {
  static const unsigned count = [] {
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
        try {
          highest = std::max(highest, static_cast<unsigned>(std::stoul(dash == std::string::npos ? part : part.substr(dash + 1))));
          any = true;
        } catch (const std::exception&) {
          break;  // unreadable: fall back below
        }
        if (comma == std::string::npos) break;
        pos = comma + 1;
      }
    }
    return any ? highest + 1 : std::max(1u, std::thread::hardware_concurrency());
  }();
  return count;
}

// The payload size the kernel requires of every entry (docs/kernel.md, "The 7.42 ring"): one
// byte less is -EINVAL.
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
  std::span<std::byte> own;     // per-entry payload; empty with a pool
  int own_index = -1;           // its fixed-buffer slot (-1: not registered)
  std::span<std::byte> pool;    // the queue's pool; empty without one
  std::size_t buf_size = 0;     // one pool buffer
  int pool_index = -1;          // the pool's fixed-buffer slot (-1: not registered)
  int zero_copy_slot = -1;      // the entry's slot for the client's pages (-1: not zero-copy)
  std::span<std::byte> window;  // never-mapped stand-in for that slot
};

// Where each entry stands, for a pause of the ring (a handoff to a successor process: restart
// without unmount). Once `ring_pause::freezing` is set, an entry that gets a request keeps it
// unserved, and a handler that finishes leaves its reply in place uncommitted: the entry is then
// held, in the kernel's eyes a request in service, and the successor commits it from its own ring.
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

// Pausing the ring. Only a server that may hand its connection over (--handoff-socket, or a
// successor) pays for it: then every request stores its entry's state and checks `freezing`
// (sequentially consistent, against the session's store of `freezing` and its count of the
// states); otherwise the entries touch neither.
struct ring_pause {
  bool possible = false;
  std::atomic<bool> freezing{false};
  pause_gate* gate = nullptr;  // where frozen entries wait for the outcome

  bool frozen() const noexcept { return possible && freezing.load(std::memory_order_seq_cst); }
  // An entry starts serving a request (sequentially consistent: the session reads the states
  // after its store of `freezing`), or waits for the next one.
  void serving(entry_slot& s) const noexcept {
    if (possible) s.state.store(entry_state::serving, std::memory_order_seq_cst);
  }
  void waiting(entry_slot& s) const noexcept {
    if (possible) s.state.store(entry_state::waiting, std::memory_order_release);
  }
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
  counters* stats = nullptr;
  std::atomic<int> queues_failed{0};
  std::atomic<int> register_error{0};  // the first REGISTER failure (negative errno)
  std::atomic<int> queues_running{0};
  std::atomic<int> pool_queues{0};       // queues serving from a buffer pool
  std::atomic<int> zero_copy_queues{0};  // of which zero-copy
  serving_threads* threads = nullptr;    // INTERRUPT, the connection's end and shutdown reach the queues through it
  notify_replies* replies = nullptr;     // RETRIEVE's answers (NOTIFY_REPLY) may come over the ring too

  // Restart without unmount. The entries' headers and payloads live in `arena` (queue q at
  // q * arena_layout.per_queue()); `slots` has one entry_slot per entry (queue-major).
  shared_arena* arena = nullptr;
  queue_layout arena_layout;
  entry_slot* slots = nullptr;
  queue_mode* modes = nullptr;  // one per queue: written by each queue, or the predecessor's when adopting
  ring_pause pause;
  // A successor's start: every entry is taken over as it was held (no REGISTER); its state is in
  // `slots` (held_request or held_reply, with the commit id).
  bool adopt = false;
};

inline bool connection_ended(int res) noexcept { return res == -ENOTCONN || res == -ECONNABORTED || res == -ENODEV; }

// What a queue's entries need to know of it.
struct queue_site {
  std::uint16_t qid = 0;
  serving_thread* thread = nullptr;
  counter_shard* counts = nullptr;
};

// The first command of an entry: REGISTER, or for a successor the predecessor's held entry taken
// over (its request served below, or its reply committed from here). Its result is what a
// COMMIT_AND_FETCH would give: 0 with a request in the entry, or the end.
template <typename Commit>
io::task<int> start_entry(io::ring& r, ring_setup& setup, ring_entry_buffers& e, const entry_payload& where, std::uint16_t qid,
                          entry_slot& slot, int cmd_buf_index, Commit& commit_of, bool& handed_off) {
  const entry_state taken_over = setup.adopt ? slot.state.load(std::memory_order_acquire) : entry_state::waiting;
  // The predecessor's entry is touched only on its go (until then it may take everything back).
  if (is_held(taken_over) && co_await setup.pause.gate->wait(r)) {
    handed_off = true;
    co_return -ECANCELED;
  }
  if (taken_over == entry_state::held_request) {
    slot.state.store(entry_state::serving, std::memory_order_release);  // served like any request
    co_return 0;
  }
  if (taken_over == entry_state::held_reply) {
    slot.state.store(entry_state::waiting, std::memory_order_release);  // the predecessor's reply
    co_return co_await commit_of(slot.commit_id);
  }
  abi::uring_cmd_req cmd{};
  cmd.qid = qid;
  if (where.zero_copy_slot >= 0) cmd.ent_zero_copy_buf_index = static_cast<std::uint16_t>(where.zero_copy_slot);
  int res = co_await io::uring_cmd(r, setup.fuse_fd, static_cast<std::uint32_t>(abi::uring_cmd::register_entry), &cmd, sizeof cmd,
                                   reinterpret_cast<std::uintptr_t>(e.iov), 2, cmd_buf_index);
  if (res < 0 && !connection_ended(res)) {
    int expected = 0;
    if (setup.register_error.compare_exchange_strong(expected, res))
      log_message("REGISTER on queue %u failed: %s; the kernel falls back to /dev/fuse", qid, std::strerror(-res));
  }
  co_return res;
}

// One ring entry, for as long as the mount lives: fetch -> serve -> commit.
template <typename Fs>
io::task<void> serve_ring_entry(Fs& fs, io::ring& r, ring_setup& setup, ring_entry_buffers& e, entry_payload where, const queue_site& q,
                                entry_slot& slot) {
  request_path<Fs> path(fs, r, *setup.cache, *q.thread, *q.counts, setup.replies, arrival::ring, q.qid, possible_cpus());
  context& ctx = path.ctx();
  const bool pooled = !where.pool.empty();
  const int cmd_buf_index = pooled ? where.pool_index : -1;  // a registered pool rides on every command
  context_access::set_registered_buffer(ctx, 0, pooled ? where.pool : where.own, pooled ? where.pool_index : where.own_index);
  e.iov[0] = {&e.header, sizeof e.header};
  e.iov[1] = pooled ? iovec{nullptr, 0} : iovec{where.own.data(), where.own.size()};
  abi::uring_cmd_req cmd{};
  auto commit_of = [&](std::uint64_t id) {
    reply_leaving();
    cmd = abi::uring_cmd_req{};
    cmd.commit_id = id;
    cmd.qid = q.qid;
    return io::uring_cmd(r, setup.fuse_fd, static_cast<std::uint32_t>(abi::uring_cmd::commit_and_fetch), &cmd, sizeof cmd, 0, 0,
                         cmd_buf_index);
  };
  // The reply, in place: out_header in in_out, the arguments already in the payload (or, for a
  // zero-copy READ, in the client's pages: payload_sz is then the bytes placed there).
  auto set_reply = [&](std::uint64_t commit_id, int error, std::size_t bytes) {
    const abi::out_header oh = reply_header(commit_id, error, bytes);
    std::memcpy(e.header.in_out, &oh, sizeof oh);
    e.header.ring_ent_in_out.payload_sz = error ? 0 : static_cast<std::uint32_t>(bytes);
  };
  // The freeze point of a paused ring (called only when setup.pause.frozen(): a coroutine frame
  // is not worth making per request): the entry keeps what it has (`what`: the request, or the
  // reply in place) and waits for the outcome. True when the connection was handed off.
  auto held_for_successor = [&](entry_state what, std::uint64_t commit_id) -> io::task<bool> {
    slot.commit_id = commit_id;
    slot.state.store(what, std::memory_order_release);
    co_return co_await setup.pause.gate->wait(r);
  };

  auto commit = [&](std::uint64_t commit_id) {
    setup.pause.waiting(slot);
    return commit_of(commit_id);
  };

  bool handed_off = false;
  int res = co_await start_entry(r, setup, e, where, q.qid, slot, cmd_buf_index, commit_of, handed_off);
  while (!handed_off) {
    if (res < 0) {
      // ECANCELED: cancelled at shutdown. Operations still in flight on a zero-copy slot would
      // write into pages the client may already own again (Linux 7.3 leaves them registered after
      // an abort): every thread stops them.
      if (connection_ended(res) || res == -ECANCELED) setup.threads->connection_over(false);
      else log_message("queue %u: an entry ended on %s; the queue serves on with its other entries", q.qid, std::strerror(-res));
      break;
    }
    // Fetched: a request is in the entry.
    const std::uint64_t commit_id = e.header.ring_ent_in_out.commit_id;
    const bool zero_copy = (e.header.ring_ent_in_out.flags & abi::uring_ent_zero_copy) && where.zero_copy_slot >= 0;
    // Paused, a request is held unserved for the successor, except a zero-copy one: the client's
    // pages are registered in this ring's table, which the successor does not have. It is served
    // here, and its reply held.
    if (!zero_copy && setup.pause.frozen() && co_await held_for_successor(entry_state::held_request, commit_id)) {
      handed_off = true;
      break;
    }
    setup.pause.serving(slot);

    // Serve. With a pool, the request's payload is in the buffer the kernel picked.
    std::span<std::byte> payload = where.own;
    proto::parse_error pe = proto::parse_error::none;
    if (pooled) {
      const std::size_t offset = e.header.ring_ent_in_out.offset;
      if (offset % where.buf_size != 0 || offset >= where.pool.size() || where.pool.size() - offset < where.buf_size)
        pe = proto::parse_error::payload_overflow;
      else payload = where.pool.subspan(offset, where.buf_size);
    }
    proto::request req;
    if (pe == proto::parse_error::none)
      pe = proto::parse_ring_entry(e.header, payload, payload.size(), req, setup.layout, zero_copy ? where.window : std::span<std::byte>{});
    context_access::set_registered_buffer(ctx, 1, zero_copy ? where.window : std::span<std::byte>{}, zero_copy ? where.zero_copy_slot : -1,
                                          /*offset_addressed=*/true);
    // A zero-copy READ's data goes to the client's pages: the handler's buffer is the window.
    const bool read_to_pages = zero_copy && pe == proto::parse_error::none && req.opcode() == abi::opcode::read;
    proto::reply_buffer out(read_to_pages ? where.window : payload);
    reply_plan p = co_await path.serve(pe, req, out, zero_copy);
    if (!p.expected) p = reply_plan{};  // every ring request is committed, or the entry fetches nothing more

    // Commit. A READ from a file, unpaused: the read into the reply and the commit (the reply
    // preset for the full size) go out together, linked: one completion when the read is complete.
    if (p.from_file && !setup.pause.frozen()) {
      auto read = ctx.read_fixed(p.slice.fd, p.into, p.slice.offset, p.slice.speed);
      if (read.is_immediate()) {
        // Done already: read inline (a file in memory, or cached), or refused (the connection is
        // gone). The reply goes out with the commit below.
        settle_file_read(p, co_await std::move(read));
      } else {
        set_reply(commit_id, 0, p.bytes + p.into.size());
        const std::size_t wanted = p.into.size();
        io::link_result lr = co_await io::link(std::move(read), commit(commit_id));
        // Read in full, the commit went out: its result is the next request, or the end. (Only
        // a ring without IORING_FEAT_CQE_SKIP reports a full read's completion too.)
        if (!lr.first_reported || (lr.first >= 0 && static_cast<std::size_t>(lr.first) == wanted)) {
          res = lr.second;
          continue;
        }
        settle_file_read(p, lr.first);  // short (end of file) or failed: the commit was not sent
      }
    }
    if (p.from_file) co_await path.read_file(p);  // paused: the data goes into the reply, which is held
    set_reply(commit_id, p.error, p.bytes);
    if (setup.pause.frozen() && co_await held_for_successor(entry_state::held_reply, commit_id)) {
      handed_off = true;
      break;
    }
    res = co_await commit(commit_id);
  }
  if (!handed_off) slot.state.store(entry_state::ended, std::memory_order_release);
}

// The buffers of queue `qid` (in the shared arena, which outlives every queue: a successor may
// take them over) and how the kernel takes its payloads: per entry (7.42, payloads registered as
// one fixed buffer so that handlers can READ_FIXED straight into them), or from a buffer pool,
// with zero-copy slots (7.46); a successor repeats the predecessor's table.
struct queue_buffers {
  std::vector<ring_entry_buffers*> entries;
  std::span<std::byte> block;  // depth payloads: the pool, or the entries' own payloads
  pool_outcome pool;
  std::vector<reserved_window> windows;  // zero-copy: one never-mapped stand-in per entry's slot

  entry_payload payload_of(unsigned i, std::size_t payload_size) const {
    entry_payload where;
    if (pool.pool) {
      where.pool = block;
      where.buf_size = payload_size;
      where.pool_index = pool.pool_index;
      if (pool.zero_copy) {
        where.zero_copy_slot = static_cast<int>(i);
        where.window = windows[i].bytes();
      }
    } else {
      where.own = block.subspan(i * payload_size, payload_size);
      where.own_index = pool.pool_index;  // the whole block is one fixed buffer
    }
    return where;
  }
};

inline void set_up_queue_buffers(io::ring& r, ring_setup& setup, std::uint16_t qid, queue_buffers& b) {
  std::byte* queue_base = setup.arena->bytes().data() + qid * setup.arena_layout.per_queue();
  for (unsigned i = 0; i < setup.depth; ++i) {
    auto* e = reinterpret_cast<ring_entry_buffers*>(queue_base) + i;
    if (!setup.adopt) new (e) ring_entry_buffers{};  // a successor finds them as they were left
    b.entries.push_back(e);
  }
  b.block = std::span<std::byte>(queue_base + setup.arena_layout.headers_bytes, setup.payload_size * setup.depth);
  const iovec whole{b.block.data(), b.block.size()};
  if (setup.adopt) {
    // The predecessor's queue as it left it (ADD_QUEUE and ADD_BUFPOOL are the kernel's
    // already): the same fixed-buffer table in this ring.
    const queue_mode& m = setup.modes[qid];
    b.pool.pool = m.pool;
    b.pool.zero_copy = m.zero_copy;
    b.pool.pool_index = m.pool_index;
    b.pool.sparse_table = m.sparse_table;
    if (m.sparse_table) {
      r.register_buffers_sparse(setup.depth + 1);
      if (m.pool_index >= 0) r.update_buffers(static_cast<unsigned>(m.pool_index), std::span<const iovec>(&whole, 1));
    } else if (m.pool_index == 0) {
      r.register_buffers(std::span<const iovec>(&whole, 1));
    }
  } else if (setup.use_pool) {
    b.pool = set_up_pool_queue(r, setup.fuse_fd, qid, b.block, setup.depth, setup.zero_copy);
    if (!b.pool.note.empty()) log_message("queue %u: %s", qid, b.pool.note.c_str());
  } else {
    try {
      r.register_buffers(std::span<const iovec>(&whole, 1));
      b.pool.pool_index = 0;
    } catch (const std::exception& ex) {
      log_message("queue %u: payload buffers not registered (%s); handlers use plain reads", qid, ex.what());
    }
  }
  if (b.pool.pool) setup.pool_queues.fetch_add(1);
  if (b.pool.zero_copy) {
    setup.zero_copy_queues.fetch_add(1);
    for (unsigned i = 0; i < setup.depth; ++i) b.windows.emplace_back(setup.payload_size);
  }
  if (setup.modes && !setup.adopt)
    setup.modes[qid] = {static_cast<std::uint8_t>(b.pool.pool), static_cast<std::uint8_t>(b.pool.zero_copy),
                        static_cast<std::uint8_t>(b.pool.sparse_table), b.pool.pool_index};
}

// One queue: its thread, pinned to CPU `qid`, runs its ring until every entry has ended.
template <typename Fs>
void run_ring_queue(Fs& fs, ring_setup& setup, std::uint16_t qid, std::latch& started) {
  bool counted_down = false;
  try {
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    CPU_SET(qid, &cpus);
    if (pthread_setaffinity_np(pthread_self(), sizeof cpus, &cpus) != 0)
      log_message("cannot pin queue %u's thread to CPU %u (offline or not allowed); serving it unpinned", qid, qid);
    queue_buffers b;  // before the ring: the kernel may use the buffers until the ring is gone
    io::ring_options ro;
    ro.entries = std::max(64u, 2 * setup.depth + 8);
    io::ring r(ro);  // created here: SINGLE_ISSUER makes this thread the ring's only submitter
    set_up_queue_buffers(r, setup, qid, b);
    serving_thread thread(r, *setup.threads);
    const queue_site site{qid, &thread, &setup.stats->add_shard("queue " + std::to_string(qid))};
    for (unsigned i = 0; i < setup.depth; ++i)
      thread.spawn(
          serve_ring_entry(fs, r, setup, *b.entries[i], b.payload_of(i, setup.payload_size), site, setup.slots[qid * setup.depth + i]));
    r.submit();  // the REGISTERs (or a successor's commits) go out now, before the session is told this queue is set up
    started.count_down();
    counted_down = true;
    thread.run();
    setup.queues_running.fetch_sub(1);
  } catch (const std::exception& ex) {
    setup.queues_running.fetch_sub(1);
    log_message("queue %u failed: %s", qid, ex.what());
    setup.queues_failed.fetch_add(1);
    if (!counted_down) started.count_down();
  }
}

}  // namespace corofuse::transport
