// libFuzzer target: a malicious predecessor. The input is what a running server sends a successor
// that takes its mount over (session/successor.hpp): OFFER, STATE and GO, in the blob framing of
// session/handoff.hpp or a malformed one, with descriptors of the input's choosing. The successor's
// code takes it as serve.hpp does: take_over_mount (take_over_from: HELLO, the OFFER, the arena
// mapped at the offered address, MAPPED, the STATE), the ring geometry checked as plan_ring checks
// it, restore_held_state with passthrough's restore_state (examples/passthrough, its main renamed:
// node handles and descriptors, open files), then READY and the wait for GO, or a refusal.
//
// Every run must end in a handoff_error or a refusal, or a restored passthrough that serves a few
// requests; never a crash or a hang. Checked after each run: every descriptor received is closed
// again (the process's count is what it was), the arena is unmapped again, no mapping that was
// there was replaced (a canary page, the heap, the stack and the code are offered as arena
// addresses: the successor must refuse them), and what the successor sent (HELLO, MAPPED, READY or
// a refusal) is well-formed and says what happened.
//
// Input: [u8 mode] then up to 6 messages (handoff_fuzz_input.hpp), the predecessor's in order.
// mode bit 0: take_over_from only (no fuse_mount, no restore); bit 1: passthrough records inodes
// as file handles (open_by_handle_at; needs CAP_DAC_READ_SEARCH, else off); bit 2: after a
// restore, serve a few requests from the restored state.
// The predecessor's values that only this process knows are written as 8-byte placeholders in the
// messages' bytes (the u64 placeholder_base | code), replaced before sending:
//   0x00+k / 0x10+k   st_dev / st_ino of object k (0 the scratch directory, 1 "file", 2 "dir",
//                     3 "link": the descriptor kinds of handoff_fuzz_input.hpp name them)
//   0x20              a free address (a range of 1 GiB was free there a moment before)
//   0x21, 0x22        the canary page; the page before it
//   0x23, 0x24, 0x25  a heap block's page, the stack's page, this function's code page
//   0x26              {u32 possible CPUs, u32 depth 1} (the ring geometry's queues and depth)
//   0x27              the held entries and queue modes for that geometry: u32 count, then per
//                     entry {u8 held_reply, u64 commit id}, then per queue a queue_mode (no pool)
//   0x30+k            object k's file handle as passthrough writes it: string, then i32 type
#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

// The filesystem itself, its main renamed (the example's source is not changed). Included, its
// classes with members of its anonymous namespace look to g++ like a header's (-Wsubobject-linkage).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wsubobject-linkage"
#endif
#define main passthrough_main
#include "examples/passthrough/passthrough.cpp"
#undef main
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#include "corofuse/io/sync_wait.hpp"
#include "corofuse/session/successor.hpp"
#include "tests/fuzz/fuzz_input.hpp"
#include "tests/fuzz/handoff_fuzz_input.hpp"

namespace abi = corofuse::abi;
namespace io = corofuse::io;
namespace session = corofuse::session;
namespace transport = corofuse::transport;
namespace hf = corofuse::fuzz::handoff;
using corofuse::fuzz::reader;

// Under ASan (the fuzz build): one allocation over 256 MiB is a failure. A blob's head announces
// up to 1 GiB; the receiver must not take that before the bytes arrive (handoff.hpp's receive_blob).
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
extern "C" const char* __asan_default_options() { return "max_allocation_size_mb=256"; }
#endif
#endif

namespace {

using hf::placeholder_base;
constexpr std::size_t max_held_entries = 4096;  // this harness's bound on queues x depth (see plan below)

alignas(4096) std::uint8_t canary[2 * 4096];  // an existing mapping (.bss) offered as the arena's place

io::ring& shared_ring() {
  static io::ring r;
  return r;
}

// What this process knows of the scratch objects: stat, and file handle where one is given.
struct object {
  struct stat st {};
  std::string handle;
  int handle_type = 0;
};
const std::vector<object>& objects() {
  static const std::vector<object> all = [] {
    std::vector<object> v;
    const auto& s = hf::scratch::get();
    for (const std::string& p : {s.path(), s.at("file"), s.at("dir"), s.at("link")}) {
      object o;
      FUZZ_CHECK(::lstat(p.c_str(), &o.st) == 0);
      handle_buffer h;
      int mount_id;
      h.get()->handle_bytes = MAX_HANDLE_SZ;
      if (::name_to_handle_at(AT_FDCWD, p.c_str(), h.get(), &mount_id, 0) == 0) {
        o.handle.assign(reinterpret_cast<const char*>(h.get()->f_handle), h.get()->handle_bytes);
        o.handle_type = h.get()->handle_type;
      }
      v.push_back(o);
    }
    return v;
  }();
  return all;
}

template <typename T>
void append(std::vector<std::byte>& out, const T& v) {
  const auto* p = reinterpret_cast<const std::byte*>(&v);
  out.insert(out.end(), p, p + sizeof v);
}

// The places a run may name (placeholders 0x20..0x25).
struct places {
  std::uintptr_t free_range = 0;
  std::uintptr_t heap = 0;
  std::uintptr_t stack = 0;
};

std::vector<std::byte> substitute(std::span<const std::uint8_t> in, const places& at) {
  std::vector<std::byte> out;
  out.reserve(in.size());
  const unsigned cpus = transport::possible_cpus();
  constexpr std::uintptr_t page = 4096;
  for (std::size_t i = 0; i < in.size();) {
    std::uint64_t v = 0;
    if (in.size() - i >= 8) std::memcpy(&v, in.data() + i, 8);
    if (in.size() - i < 8 || (v & ~std::uint64_t{0xff}) != placeholder_base) {
      out.push_back(static_cast<std::byte>(in[i++]));
      continue;
    }
    i += 8;
    const unsigned code = v & 0xff;
    const auto& objs = objects();
    if (code < 0x04) {
      append<std::uint64_t>(out, objs[code].st.st_dev);
    } else if (code >= 0x10 && code < 0x14) {
      append<std::uint64_t>(out, objs[code - 0x10].st.st_ino);
    } else if (code == 0x20) {
      append<std::uint64_t>(out, at.free_range);
    } else if (code == 0x21 || code == 0x22) {
      append<std::uint64_t>(out, reinterpret_cast<std::uintptr_t>(canary) - (code == 0x22 ? page : 0));
    } else if (code == 0x23) {
      append<std::uint64_t>(out, at.heap);
    } else if (code == 0x24) {
      append<std::uint64_t>(out, at.stack);
    } else if (code == 0x25) {
      append<std::uint64_t>(out, reinterpret_cast<std::uintptr_t>(&shared_ring) / page * page);
    } else if (code == 0x26) {
      append<std::uint32_t>(out, cpus);
      append<std::uint32_t>(out, 1);
    } else if (code == 0x27) {
      append<std::uint32_t>(out, cpus);
      for (unsigned q = 0; q < cpus; ++q) {
        append(out, transport::entry_state::held_reply);
        append<std::uint64_t>(out, 100 + q);
      }
      for (unsigned q = 0; q < cpus; ++q) append(out, transport::queue_mode{0, 0, 0, -1});
    } else if (code >= 0x30 && code < 0x34) {
      const object& o = objs[code - 0x30];
      append<std::uint32_t>(out, static_cast<std::uint32_t>(o.handle.size()));
      for (char c : o.handle) out.push_back(static_cast<std::byte>(c));
      append<std::int32_t>(out, o.handle_type);
    } else {
      append(out, v);  // not a placeholder after all
    }
  }
  return out;
}

// A free range of `size` bytes: reserved and released at once (nothing else maps in between: the
// run is single-threaded, and a sanitizer's own mappings would be refused by the successor too).
std::uintptr_t free_range(std::size_t size) {
  void* p = ::mmap(nullptr, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  FUZZ_CHECK(p != MAP_FAILED);
  ::munmap(p, size);
  return reinterpret_cast<std::uintptr_t>(p);
}

// Nothing mapped at [address, address + size): msync fails with ENOMEM on an unmapped range.
bool unmapped(std::uintptr_t address, std::size_t size) {
  for (std::size_t at = 0; at < size && at < (std::size_t{64} << 20); at += 4096)
    if (::msync(reinterpret_cast<void*>(address + at), 4096, MS_ASYNC) == 0 || errno != ENOMEM) return false;
  return true;
}

bool is_handoff_error(const std::exception& e) { return dynamic_cast<const session::handoff_error*>(&e) != nullptr; }

// A few requests into the restored passthrough: it must answer them (with errors where nodes are
// stale), whatever the predecessor claimed.
void serve_a_little(passthrough& fs) {
  io::ring& ring = shared_ring();
  cf::cache_defaults defaults;
  cf::context ctx{&ring, defaults};
  std::vector<std::byte> reply(64 * 1024);
  auto call = [&](abi::opcode op, std::uint64_t nodeid, std::span<const std::byte> body) {
    const auto msg = corofuse::fuzz::make_message(op, nodeid, body);
    corofuse::proto::request req;
    FUZZ_CHECK(corofuse::proto::parse_message(msg, req) == corofuse::proto::parse_error::none);
    corofuse::proto::reply_buffer out(reply);
    const cf::reply_status st = io::sync_wait(ring, cf::dispatch(fs, ctx, req, out));
    FUZZ_CHECK(st.error >= 0 && st.error < 4096);
    FUZZ_CHECK(out.size() <= out.capacity());
    return st;
  };
  corofuse::fuzz::body_builder getattr;
  getattr.put(abi::getattr_in{});
  for (std::uint64_t id = 1; id <= 6; ++id) call(abi::opcode::getattr, id, getattr.bytes);
  corofuse::fuzz::body_builder lookup;
  lookup.str("file");
  call(abi::opcode::lookup, 1, lookup.bytes);
  corofuse::fuzz::body_builder read;
  abi::read_in r{};
  r.size = 4096;
  for (std::uint64_t fh = 0; fh < 3; ++fh) {
    r.fh = fh;
    read.bytes.clear();
    read.put(r);
    call(abi::opcode::read, 2, read.bytes);
    call(abi::opcode::readdir, 1, read.bytes);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const bool quiet = corofuse::fuzz::handoff::quiet_logs();
  (void)quiet;
  // Everything opened once per process, before the count.
  hf::scratch::get();
  objects();
  shared_ring();
  std::memset(canary, 0x5a, sizeof canary);
  const int fds_before = hf::open_fd_count();

  std::uintptr_t mapped_at = 0;
  std::size_t mapped_size = 0;
  {
    reader in(data, size);
    const auto mode = in.get<std::uint8_t>();
    std::vector<hf::message> messages;
    for (std::size_t i = 0; i < hf::max_messages && !in.empty(); ++i) messages.push_back(hf::read_message(in));

    std::unique_ptr<std::byte[]> heap_block(new std::byte[64 * 1024]);
    places at;
    at.free_range = free_range(std::size_t{1} << 30);
    at.heap = (reinterpret_cast<std::uintptr_t>(heap_block.get()) + 4095) / 4096 * 4096;
    int local = 0;
    at.stack = reinterpret_cast<std::uintptr_t>(&local) / 4096 * 4096;

    hf::socket_pair sp;
    for (const auto& m : messages) {
      const auto bytes = substitute(m.bytes, at);
      if (!hf::send_message(sp.fd[1], m, bytes)) break;
    }
    sp.done_sending();

    session::taken_over_mount t;
    t.sock = std::exchange(sp.fd[0], -1);  // connected already: take_over_from does not connect
    session::init_terms terms;
    std::unique_ptr<session::fuse_mount> mount;
    bool took = false, restored = false, refused = false, went = false;
    std::string outcome;
    try {
      if (mode & 1) session::take_over_from("fuzz", t);
      else mount = session::take_over_mount("fuzz", hf::scratch::get().path(), t, terms);
      took = true;
    } catch (const std::exception& e) {
      FUZZ_CHECK(is_handoff_error(e));
      outcome = e.what();
    }
    // The predecessor here is this process: a successor that hears no GO must not wait to see it
    // die (successor.hpp's predecessor_died polls a pidfd of the peer for 2 s).
    [](auto& tt) {
      if constexpr (requires { tt.predecessor; }) {
        if (tt.predecessor >= 0) ::close(std::exchange(tt.predecessor, -1));
      }
    }(t);
    if (t.arena) {
      // Mapped where the predecessor has it, and only over a range that was free.
      FUZZ_CHECK(t.arena.address() == t.geometry.arena_address && t.arena.size() == t.geometry.arena_size);
      const auto a = t.arena.address(), end = a + t.arena.size();
      const auto c = reinterpret_cast<std::uintptr_t>(canary);
      FUZZ_CHECK(end <= c || a >= c + sizeof canary);
      FUZZ_CHECK(end <= at.heap || a >= at.heap + 4096);
      FUZZ_CHECK(end <= at.stack || a >= at.stack + 4096);
      mapped_at = a;
      mapped_size = t.arena.size();
    }
    if (took && mount) {
      // serve.hpp's plan_ring: the geometry is the predecessor's, its queues this machine's CPUs,
      // the arena large enough for it.
      const unsigned queues = t.geometry.queues, depth = t.geometry.depth;
      const auto layout = transport::layout_of_queue(depth, t.geometry.payload_size);
      std::string why;
      if (queues && queues != transport::possible_cpus()) why = "the predecessor served another number of ring queues";
      else if (queues && t.arena.size() < queues * layout.per_queue()) why = "the ring memory is smaller than its geometry says";
      // (serve.hpp allocates queues x depth slots here, unbounded: this harness does not.)
      else if (std::size_t{queues} * depth > max_held_entries) why = "more held entries than this harness allocates";
      if (why.empty()) {
        std::unique_ptr<transport::entry_slot[]> slots(new transport::entry_slot[std::size_t{queues} * depth]);
        std::vector<transport::queue_mode> modes(queues);
        const int source_fd = ::open(hf::scratch::get().path().c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        FUZZ_CHECK(source_fd >= 0);
        struct stat st {};
        FUZZ_CHECK(::fstat(source_fd, &st) == 0);
        handle_config handles;
        std::string no_handles;
        if (mode & 2) handles = probe_handles(source_fd, st, no_handles);
        {
          passthrough fs(source_fd, st, options{}, handles);
          try {
            session::restore_held_state(fs, *t.state, terms, queues, depth, slots.get(), modes);
            restored = true;
          } catch (const std::exception& e) {
            FUZZ_CHECK(is_handoff_error(e));
            why = e.what();
          }
          if (restored) {
            for (std::size_t i = 0; i < std::size_t{queues} * depth; ++i) FUZZ_CHECK(transport::is_held(slots[i].state.load()));
            went = t.ready_and_wait_for_go();
            if (mode & 4) serve_a_little(fs);
          }
        }
      }
      if (!restored) {
        outcome = why;
        t.refuse(why);
        refused = true;
      }
    }

    // What the successor said: HELLO; MAPPED once it had the OFFER; READY or a refusal at the end.
    auto said = hf::receive_all(sp.fd[1]);
    FUZZ_CHECK(!said.empty());  // HELLO goes first, whatever comes
    FUZZ_CHECK(said[0].get<std::uint64_t>() == session::handoff_magic);
    FUZZ_CHECK(said[0].get<std::uint32_t>() == session::handoff_version);
    FUZZ_CHECK(said[0].get<std::int32_t>() == ::getpid());
    FUZZ_CHECK(said[0].at_end());
    if (said.size() >= 2) {
      const bool mapped_ok = said[1].get<std::uint8_t>() != 0;
      const std::string reason = said[1].get_string();
      FUZZ_CHECK(said[1].at_end());
      FUZZ_CHECK(mapped_ok == reason.empty());
      if (!mapped_ok) FUZZ_CHECK(!took && !t.arena);
    }
    if (took) FUZZ_CHECK(said.size() >= 2);
    if (restored) {
      FUZZ_CHECK(said.size() == 3);
      FUZZ_CHECK(said[2].get<std::uint8_t>() == 1);  // READY
    }
    if (refused) {
      FUZZ_CHECK(said.size() == 3);
      FUZZ_CHECK(said[2].get<std::uint8_t>() == 0);
      (void)said[2].get_string();
    }
    static const bool verbose = std::getenv("FUZZ_VERBOSE") != nullptr;
    if (verbose)
      std::fprintf(stderr, "  took %d, arena %d, restored %d, refused %d (%s), GO %d\n", took, mapped_size != 0, restored, refused,
                   outcome.c_str(), went);
  }
  // Everything let go: the arena unmapped, the canary as it was, no descriptor left open.
  if (mapped_size) FUZZ_CHECK(unmapped(mapped_at, mapped_size));
  for (std::uint8_t b : canary) FUZZ_CHECK(b == 0x5a);
  FUZZ_CHECK(hf::open_fd_count() == fds_before);
  return 0;
}
