// An io_uring owned by one thread, under coroutines.
//
// Every awaited operation queues an SQE whose user_data points at a `completion` in the awaiting
// coroutine's frame; the loop (`run_once`) submits everything queued and waits in ONE
// io_uring_enter, then drains the completions and resumes their coroutines. Nothing is allocated
// per operation.
#pragma once

#include <liburing.h>
#include <sched.h>

#include <algorithm>
#include <cerrno>
#include <coroutine>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <span>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>

namespace corofuse::io {

// Where a CQE goes: the frame-resident record of one submitted operation.
struct completion {
  std::coroutine_handle<> waiter;  // resumed when the CQE arrives; null: only record the result
  std::int32_t res = 0;
  std::uint32_t flags = 0;
  bool done = false;
  // Whether this record's CQE ends an in-flight count (see ring::track and io::linked).
  bool counted = true;
};

// A ring that could not be created or configured; what() names the cause and the remedy.
class ring_error : public std::system_error {
 public:
  ring_error(int err, const std::string& what) : std::system_error(err, std::generic_category(), what) {}
};

struct ring_options {
  unsigned entries = 256;     // submission queue size
  unsigned cq_entries = 0;    // 0: enough for every SQE in flight plus one failed link head each
  bool sqe128 = true;         // FUSE uring_cmd needs 128-byte SQEs
  bool single_issuer = true;  // only the creating thread submits
  bool defer_taskrun = true;  // completions run only when this thread enters: best latency
  bool coop_taskrun = true;   // used when defer_taskrun is refused
};

class ring {
 public:
  explicit ring(const ring_options& opt = {}) { setup(opt); }
  ring(const ring&) = delete;
  ring& operator=(const ring&) = delete;
  ~ring() { io_uring_queue_exit(&ring_); }

  io_uring* native() noexcept { return &ring_; }
  int fd() const noexcept { return ring_.ring_fd; }
  unsigned setup_flags() const noexcept { return ring_.flags; }
  unsigned features() const noexcept { return features_; }
  unsigned sq_entries() const noexcept { return ring_.sq.ring_entries; }
  unsigned cq_entries() const noexcept { return ring_.cq.ring_entries; }
  bool has_sqe128() const noexcept { return ring_.flags & IORING_SETUP_SQE128; }
  // Why a requested setup flag was dropped (empty when none was).
  const std::string& fallback_reason() const noexcept { return fallback_reason_; }

  // Operations whose CQE is still expected.
  std::size_t in_flight() const noexcept { return in_flight_; }

  // A cleared SQE (all 128 bytes on an SQE128 ring: the FUSE command area must start zeroed).
  // When the queue is full, what is queued is submitted first to make room.
  io_uring_sqe* get_sqe() { return get_sqes(1); }

  // `n` consecutive SQEs (for a link, which must not be split by a submit); returns the first.
  io_uring_sqe* get_sqes(unsigned n) {
    if (n > sq_entries()) throw std::invalid_argument("corofuse::io::ring: more SQEs requested than the ring holds");
    // Only a full submission queue gets here; submitting empties it. -EAGAIN/-EBUSY are transient
    // (kernel memory, CQ overflow backlog): a few retries, then a clear error.
    for (int attempt = 0; io_uring_sq_space_left(&ring_) < n; ++attempt) {
      int r = io_uring_submit(&ring_);
      if (r >= 0) continue;
      if ((r != -EAGAIN && r != -EBUSY && r != -EINTR) || attempt > 1000)
        throw ring_error(-r, "io_uring_submit failed while making room for new SQEs");
      sched_yield();
    }
    io_uring_sqe* first = nullptr;
    for (unsigned i = 0; i < n; ++i) {
      io_uring_sqe* s = io_uring_get_sqe(&ring_);
      std::memset(static_cast<void*>(s), 0, sqe_size());
      if (i == 0) first = s;
    }
    return first;
  }

  // The i-th SQE after `first` (SQE128 rings have a 128-byte stride, which SQE arithmetic misses).
  io_uring_sqe* next_sqe(io_uring_sqe* first, unsigned i) noexcept {
    auto* base = reinterpret_cast<unsigned char*>(first);
    auto* sqes = reinterpret_cast<unsigned char*>(ring_.sq.sqes);
    std::size_t index = (static_cast<std::size_t>(base - sqes) / sqe_size() + i) & ring_.sq.ring_mask;
    return reinterpret_cast<io_uring_sqe*>(sqes + index * sqe_size());
  }

  std::size_t sqe_size() const noexcept { return has_sqe128() ? 128 : 64; }

  // Ties an SQE to its completion record; `count`: one more CQE is now expected. Returns the
  // SQE's user_data: the record's address tagged with a generation in the top 16 bits, so that a
  // record reused at the same address (frames are recycled) never matches an old cancellation.
  std::uint64_t track(io_uring_sqe* s, completion& c, bool count = true) noexcept {
    c.done = false;
    std::uint64_t tag = static_cast<std::uint64_t>(++generation_ ? generation_ : ++generation_) << address_bits;
    std::uint64_t user_data = reinterpret_cast<std::uintptr_t>(&c) | tag;
    io_uring_sqe_set_data64(s, user_data);
    if (count) ++in_flight_;
    return user_data;
  }

  // user-space addresses fit in 48 bits on x86-64 and arm64 (4-level and 48-bit VA)
  static constexpr unsigned address_bits = 48;
  static constexpr std::uint64_t address_mask = (std::uint64_t{1} << address_bits) - 1;

  // Submits everything queued without waiting.
  int submit() {
    int r = io_uring_submit(&ring_);
    if (r < 0 && r != -EAGAIN && r != -EBUSY && r != -EINTR) throw ring_error(-r, "io_uring_submit failed");
    return r;
  }

  // One loop turn: submit all queued SQEs and, if `wait`, wait for at least one completion, in
  // one io_uring_enter; then resume every coroutine whose operation completed. Returns the number
  // of completions handled. Waiting with nothing in flight would never return: that is a logic
  // error and throws.
  std::size_t run_once(bool wait = true) {
    if (wait && in_flight_ == 0 && io_uring_sq_ready(&ring_) == 0 && io_uring_cq_ready(&ring_) == 0)
      throw std::logic_error("corofuse::io::ring::run_once: waiting with no operation in flight would hang");
    int r = wait && io_uring_cq_ready(&ring_) == 0 ? io_uring_submit_and_wait(&ring_, 1) : io_uring_submit_and_get_events(&ring_);
    if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY && r != -ETIME) throw ring_error(-r, "io_uring_enter failed in the event loop");
    return drain();
  }

  // Runs loop turns until `done()` is true.
  template <typename Pred>
  void run_until(Pred&& done) {
    while (!done()) run_once(true);
  }

  // ---- registered files and buffers ----------------------------------------------------------

  void register_files(std::span<const int> fds) {
    check(io_uring_register_files(&ring_, fds.data(), static_cast<unsigned>(fds.size())), "register files");
  }
  void register_files_sparse(unsigned n) { check(io_uring_register_files_sparse(&ring_, n), "register a sparse file table"); }
  void update_files(unsigned offset, std::span<const int> fds) {
    int r = io_uring_register_files_update(&ring_, offset, const_cast<int*>(fds.data()), static_cast<unsigned>(fds.size()));
    check(r < 0 ? r : 0, "update registered files");
  }
  void unregister_files() { check(io_uring_unregister_files(&ring_), "unregister files"); }

  void register_buffers(std::span<const iovec> bufs) {
    check(io_uring_register_buffers(&ring_, bufs.data(), static_cast<unsigned>(bufs.size())), "register buffers");
  }
  // A table of `n` empty slots, filled later by update_buffers (FUSE zero-copy uses the slots).
  void register_buffers_sparse(unsigned n) { check(io_uring_register_buffers_sparse(&ring_, n), "register a sparse buffer table"); }
  void update_buffers(unsigned offset, std::span<const iovec> bufs) {
    int r = io_uring_register_buffers_update_tag(&ring_, offset, bufs.data(), nullptr, static_cast<unsigned>(bufs.size()));
    check(r < 0 ? r : 0, "update registered buffers");
  }
  void unregister_buffers() { check(io_uring_unregister_buffers(&ring_), "unregister buffers"); }

 private:
  static void check(int r, const char* what) {
    if (r < 0) {
      std::string msg = std::string("io_uring: cannot ") + what;
      if (r == -ENOMEM) msg += " (locked memory limit: raise RLIMIT_MEMLOCK, ulimit -l)";
      throw ring_error(-r, msg);
    }
  }

  void setup(const ring_options& opt) {
    if (opt.entries == 0) throw std::invalid_argument("corofuse::io::ring: entries must be > 0");
    unsigned base = IORING_SETUP_CLAMP | IORING_SETUP_CQSIZE;
    if (opt.sqe128) base |= IORING_SETUP_SQE128;
    unsigned cq = opt.cq_entries ? opt.cq_entries : 2 * opt.entries;
    cq = std::max(cq, opt.entries);

    // From the best set of flags down to the plainest; each refusal is remembered for the log.
    unsigned tries[4];
    int n = 0;
    if (opt.single_issuer && opt.defer_taskrun) tries[n++] = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    if (opt.single_issuer && opt.coop_taskrun)
      tries[n++] = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
    if (opt.coop_taskrun) tries[n++] = IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
    tries[n++] = 0;

    int r = -EINVAL;
    for (int i = 0; i < n; ++i) {
      io_uring_params p{};
      p.flags = base | tries[i];
      p.cq_entries = cq;
      r = io_uring_queue_init_params(opt.entries, &ring_, &p);
      if (r == 0) {
        features_ = p.features;
        if (i > 0) {
          char buf[160];
          std::snprintf(buf, sizeof buf, "io_uring setup flags 0x%x refused (%s); using 0x%x", tries[0], std::strerror(-first_error_),
                        tries[i]);
          fallback_reason_ = buf;
        }
        return;
      }
      if (i == 0) first_error_ = r;
      if (r != -EINVAL) break;  // not a flag problem: no point trying fewer flags
    }
    throw ring_error(-r, explain_setup_error(r, opt));
  }

  static std::string explain_setup_error(int r, const ring_options& opt) {
    std::string msg = "cannot create an io_uring: ";
    switch (-r) {
      case ENOSYS: return msg + "the kernel has no io_uring (too old, or built without CONFIG_IO_URING)";
      case EPERM: {
        msg += "io_uring is disabled for this process";
        if (FILE* f = std::fopen("/proc/sys/kernel/io_uring_disabled", "r")) {
          int v = -1;
          if (std::fscanf(f, "%d", &v) == 1 && v != 0) msg += " (sysctl kernel.io_uring_disabled = " + std::to_string(v) + ")";
          std::fclose(f);
        }
        return msg + " or blocked by a seccomp policy";
      }
      case ENOMEM: return msg + "not enough locked memory for the rings (raise RLIMIT_MEMLOCK, ulimit -l)";
      case EMFILE:
      case ENFILE: return msg + "too many open files";
      case EINVAL:
        if (opt.sqe128) return msg + "the kernel refused the parameters (128-byte SQEs need Linux 5.19+)";
        return msg + "the kernel refused the parameters";
      default: return msg + std::strerror(-r);
    }
  }

  // Copies out a batch of CQEs and releases their slots before resuming any waiter: a resumed
  // coroutine may queue SQEs and even submit, and the CQ ring is consistent by then.
  std::size_t drain() {
    std::size_t handled = 0;
    for (;;) {
      io_uring_cqe* cqes[64];
      unsigned n = io_uring_peek_batch_cqe(&ring_, cqes, 64);
      if (n == 0) return handled;
      completion* ready[64];
      unsigned nready = 0;
      for (unsigned i = 0; i < n; ++i) {
        auto* c = reinterpret_cast<completion*>(static_cast<std::uintptr_t>(cqes[i]->user_data & address_mask));
        if (!c) continue;  // fire-and-forget operations carry no record
        c->res = cqes[i]->res;
        c->flags = cqes[i]->flags;
        c->done = true;
        if (c->counted) --in_flight_;
        if (c->waiter) ready[nready++] = c;
      }
      io_uring_cq_advance(&ring_, n);
      handled += n;
      for (unsigned i = 0; i < nready; ++i) ready[i]->waiter.resume();
    }
  }

  io_uring ring_{};
  unsigned features_ = 0;
  int first_error_ = 0;
  std::string fallback_reason_;
  std::size_t in_flight_ = 0;
  std::uint16_t generation_ = 0;
};

}  // namespace corofuse::io
