// The one path a request takes through the server, whichever transport carried it.
//
//   transport: request received (parsed into a view)  ->  request_path::serve  ->  reply_plan
//   ->  transport: carries the reply (writev on /dev/fuse; in place + COMMIT_AND_FETCH on a ring)
//
// serve() answers a malformed request, routes INTERRUPT and NOTIFY_REPLY (never answered),
// counts, runs the filesystem's handler through dispatch, maps an interrupted handler's
// ECANCELED to EINTR, and says what the reply is: an error, arguments already in the reply
// buffer, or (a READ answered with a file slice) data still to be read from a file into the
// reply, which the transport reads (the ring links that read to its commit) and then settles
// with settle_file_read. A transport only carries.
#pragma once

#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <cstddef>
#include <coroutine>
#include <cstdint>
#include <span>

#include "corofuse/abi/protocol.hpp"
#include "corofuse/abi/structs.hpp"
#include "corofuse/base/log.hpp"
#include "corofuse/fs/context.hpp"
#include "corofuse/fs/dispatch.hpp"
#include "corofuse/fs/notify_replies.hpp"
#include "corofuse/fs/types.hpp"
#include "corofuse/io/ring.hpp"
#include "corofuse/io/task.hpp"
#include "corofuse/proto/reply.hpp"
#include "corofuse/proto/request.hpp"
#include "corofuse/transport/counters.hpp"
#include "corofuse/transport/kernel_order.hpp"
#include "corofuse/transport/serving_threads.hpp"

namespace corofuse::transport {

// What the transport sends back for one request.
struct reply_plan {
  bool expected = true;      // false: the kernel waits for no reply (FORGET, INTERRUPT, ...)
  std::uint64_t unique = 0;  // the request's
  int error = 0;             // positive errno; 0: success
  std::size_t bytes = 0;     // the reply's arguments, already in the reply buffer
  // A READ answered from a file: `slice` is to be read into `into` (right after the arguments
  // in the reply buffer, or the client's pages on a zero-copy READ) before the reply goes out.
  bool from_file = false;
  file_slice slice{};
  std::span<std::byte> into;
};

// The out_header of a reply: what the kernel checks before it takes the arguments.
inline abi::out_header reply_header(std::uint64_t unique, int error, std::size_t bytes) noexcept {
  abi::out_header h{};
  h.len = static_cast<std::uint32_t>(sizeof h + (error ? 0 : bytes));
  h.error = -error;
  h.unique = unique;
  return h;
}

// The outcome of reading a plan's file slice (res: the read's result, bytes or -errno): the
// reply carries what was read, or the read's error.
inline void settle_file_read(reply_plan& p, int res) noexcept {
  p.from_file = false;
  if (res < 0) {
    p.error = -res;
    p.bytes = 0;
  } else {
    p.bytes += static_cast<std::size_t>(res);
  }
}

// A handler cancelled by an INTERRUPT of its request answers EINTR, what the client's system call
// then returns.
inline int interrupted_error(const context& ctx, int error) noexcept { return ctx.interrupted() && error == ECANCELED ? EINTR : error; }

// -d's trace: what a request asked, noted when it arrives, and one line when its reply is ready:
//   unique 42 LOOKUP node 1 name "notes" -> OK 144 bytes, 9 us
//   unique 43 READ node 3 fh 1 offset 0 size 4096 -> OK from a file, 4 us
//   unique 44 GETATTR node 9 -> ENOENT, 3 us
// Formatted only when tracing; the time is the handler's (a READ's file data is read after it).
struct trace_note {
  std::uint64_t unique = 0;
  std::uint64_t node = 0;
  abi::opcode op = abi::opcode::lookup;
  char args[160];  // left unwritten unless traced: no cost per request otherwise
};

inline std::uint64_t monotonic_ns() noexcept {
  timespec t{};
  ::clock_gettime(CLOCK_MONOTONIC, &t);
  return static_cast<std::uint64_t>(t.tv_sec) * 1000000000u + static_cast<std::uint64_t>(t.tv_nsec);
}

inline void note_request(trace_note& n, const proto::request& req) noexcept {
  n.unique = req.unique();
  n.node = req.nodeid();
  n.op = req.opcode();
  n.args[0] = '\0';
  int at = 0;
  auto add = [&](const char* fmt, auto... a) {
    if (at < 0 || static_cast<std::size_t>(at) >= sizeof n.args) return;
    const int k = std::snprintf(n.args + at, sizeof n.args - static_cast<std::size_t>(at), fmt, a...);
    if (k > 0) at += k;
  };
  using abi::opcode;
  switch (req.opcode()) {
    case opcode::read:
    case opcode::readdir:
    case opcode::readdirplus: {
      const auto r = req.op<abi::read_in>();
      add(" fh %llu offset %llu size %u", static_cast<unsigned long long>(r.fh), static_cast<unsigned long long>(r.offset), r.size);
      break;
    }
    case opcode::write: {
      const auto w = req.op<abi::write_in>();
      add(" fh %llu offset %llu size %u", static_cast<unsigned long long>(w.fh), static_cast<unsigned long long>(w.offset), w.size);
      break;
    }
    case opcode::open:
    case opcode::opendir: add(" flags 0%o", req.op<abi::open_in>().flags); break;
    case opcode::create: {
      const auto c = req.op<abi::create_in>();
      add(" flags 0%o mode 0%o", c.flags, c.mode);
      break;
    }
    case opcode::mkdir: add(" mode 0%o", req.op<abi::mkdir_in>().mode); break;
    case opcode::release:
    case opcode::releasedir: add(" fh %llu", static_cast<unsigned long long>(req.op<abi::release_in>().fh)); break;
    case opcode::flush: add(" fh %llu", static_cast<unsigned long long>(req.op<abi::flush_in>().fh)); break;
    case opcode::forget: add(" lookups %llu", static_cast<unsigned long long>(req.op<abi::forget_in>().nlookup)); break;
    case opcode::setattr: add(" valid 0x%x", req.op<abi::setattr_in>().valid); break;
    case opcode::interrupt: add(" of unique %llu", static_cast<unsigned long long>(req.op<abi::interrupt_in>().unique)); break;
    default: break;
  }
  if (!req.name().empty()) add(" name \"%.*s\"", static_cast<int>(std::min<std::size_t>(req.name().size(), 64)), req.name().data());
  if (!req.second_name().empty())
    add(" to \"%.*s\"", static_cast<int>(std::min<std::size_t>(req.second_name().size(), 64)), req.second_name().data());
}

inline void trace_reply(const trace_note& n, const reply_plan& p, std::uint64_t ns) noexcept {
  const std::string_view name = abi::opcode_name(n.op);
  char outcome[64];
  if (!p.expected) std::snprintf(outcome, sizeof outcome, "no reply");
  else if (p.error) std::snprintf(outcome, sizeof outcome, "%s", ::strerrorname_np(p.error) ? ::strerrorname_np(p.error) : "error");
  else if (p.from_file) std::snprintf(outcome, sizeof outcome, "OK %zu bytes and up to %zu from a file", p.bytes, p.slice.size);
  else std::snprintf(outcome, sizeof outcome, "OK %zu bytes", p.bytes);
  log_to(log_kind::trace, "unique %llu %.*s node %llu%s -> %s, %llu us", static_cast<unsigned long long>(n.unique),
         static_cast<int>(name.size()), name.data(), static_cast<unsigned long long>(n.node), n.args, outcome,
         static_cast<unsigned long long>(ns / 1000));
}

// The request path of one serving coroutine (a ring entry, a /dev/fuse reader): its context,
// attached to its thread's mailbox, and what it counts into.
template <typename Fs>
class request_path {
 public:
  request_path(Fs& fs, io::ring& r, const cache_defaults& defaults, serving_thread& thread, counter_shard& counts, notify_replies* replies,
               arrival via, unsigned queue, unsigned queues)
      : fs_(fs),
        ctx_(&r, defaults),
        attached_(thread.threads(), thread.box(), ctx_),
        threads_(thread.threads()),
        counts_(counts),
        replies_(replies),
        via_(via) {
    context_access::set_queue(ctx_, queue, queues);
  }
  request_path(const request_path&) = delete;
  request_path& operator=(const request_path&) = delete;

  context& ctx() noexcept { return ctx_; }

  class serving;

  // Serves one received request: `pe` is how parsing went (none: `req` is valid), `out` the
  // reply buffer (arguments are written at its start). `zero_copy`: the request's data is in the
  // client's pages (counted). co_await it for the reply_plan.
  serving serve(proto::parse_error pe, const proto::request& req, proto::reply_buffer& out, bool zero_copy = false) {
    request_arrived();
    reply_plan p;
    p.unique = req.unique();
    if (pe != proto::parse_error::none) {
      counts_.malformed();
      const std::string_view why = proto::describe(pe);
      log_message("malformed request (opcode %u, unique %llu): %.*s", req.header().opcode, static_cast<unsigned long long>(p.unique),
                  static_cast<int>(why.size()), why.data());
      p.expected = p.unique != 0 && !abi::opcode_has_no_reply(req.opcode());
      p.error = proto::errno_for(pe);
      return serving(*this, p);
    }
    counts_.request(req.opcode(), via_);
    if (zero_copy) counts_.zero_copy();
    if (req.opcode() == abi::opcode::interrupt) {
      threads_.interrupt(req.op<abi::interrupt_in>().unique);
      p.expected = false;
      if (counts_.traced()) [[unlikely]]
        trace_now(req, p);
      return serving(*this, p);
    }
    if (req.opcode() == abi::opcode::notify_reply) {  // a RETRIEVE's data, for the coroutine that asked
      if (!replies_ || !replies_->complete(req.unique(), req.data()))
        log_message("NOTIFY_REPLY %llu that nobody waits for", static_cast<unsigned long long>(req.unique()));
      p.expected = false;
      if (counts_.traced()) [[unlikely]]
        trace_now(req, p);
      return serving(*this, p);
    }
    attached_.start(req.unique());
    // --stats, -d: the handler is timed (and with -d traced)
    const std::uint64_t started = counts_.timed() ? monotonic_ns() : 0;
    return serving(*this, p, dispatch(fs_, ctx_, req, out), out, req.opcode(), started, counts_.traced() ? &req : nullptr);
  }

  // What serve() gives: the plan at once, or, for a request dispatched to a handler, the handler's
  // task, awaited in place (no coroutine frame of its own), and the plan made from its status.
  class serving {
   public:
    bool await_ready() const noexcept { return !handler_.valid(); }
    std::coroutine_handle<> await_suspend(std::coroutine_handle<> waiting) noexcept {
      return std::move(handler_).operator co_await().await_suspend(waiting);
    }
    reply_plan await_resume() {
      if (handler_.valid()) {
        path_.finish(plan_, std::move(handler_).operator co_await().await_resume(), *out_, op_);
        if (started_) [[unlikely]]
          path_.record(op_, plan_, *this);
      }
      return plan_;
    }

   private:
    friend class request_path;
    serving(request_path& path, const reply_plan& plan) : path_(path), plan_(plan) {}
    serving(request_path& path, const reply_plan& plan, io::task<reply_status> handler, proto::reply_buffer& out, abi::opcode op,
            std::uint64_t started, const proto::request* traced)
        : path_(path), plan_(plan), handler_(std::move(handler)), out_(&out), op_(op), started_(started) {
      if (traced) [[unlikely]]
        note_request(note_, *traced);
    }
    request_path& path_;
    reply_plan plan_;
    io::task<reply_status> handler_;
    proto::reply_buffer* out_ = nullptr;
    abi::opcode op_ = abi::opcode::lookup;
    std::uint64_t started_ = 0;  // timed: when the request arrived
    trace_note note_;            // traced: what it asked
  };

  // After the handler: EINTR for an interrupted one, the request's end in the context, errors
  // counted, and what the reply carries.
  void finish(reply_plan& p, reply_status st, proto::reply_buffer& out, abi::opcode op) {
    st.error = interrupted_error(ctx_, st.error);
    attached_.end();
    if (st.error) counts_.error(op);
    p.expected = !st.no_reply;
    p.error = st.error;
    p.bytes = st.error ? 0 : out.size();
    if (st.read_from_file && !st.error) {
      p.from_file = true;
      p.slice = st.data_from;
      p.into = out.tail().first(std::min(st.data_from.size, out.room()));
    }
  }

  // A timed request's latency into its opcode's histogram, and with -d its trace line.
  void record(abi::opcode op, const reply_plan& p, const serving& s) noexcept {
    const std::uint64_t ns = monotonic_ns() - s.started_;
    counts_.latency(op, ns);
    if (counts_.traced()) trace_reply(s.note_, p, ns);
  }

  // An untimed request's trace line (INTERRUPT, NOTIFY_REPLY: never answered).
  static void trace_now(const proto::request& req, const reply_plan& p) noexcept {
    trace_note n;
    note_request(n, req);
    trace_reply(n, p, 0);
  }

  // The plan's file read, on its own (not linked to anything): co_await, then reply.
  io::task<void> read_file(reply_plan& p) {
    settle_file_read(p, co_await ctx_.read_fixed(p.slice.fd, p.into, p.slice.offset, p.slice.speed));
  }

 private:
  Fs& fs_;
  context ctx_;
  mailbox_attachment attached_;
  serving_threads& threads_;
  counter_shard& counts_;
  notify_replies* replies_;
  arrival via_;
};

}  // namespace corofuse::transport
