// libFuzzer target: a malicious successor. The input is what a process that connected to a
// running server's --handoff-socket sends it (HELLO, MAPPED, READY; in the blob framing of
// session/handoff.hpp or a malformed one, with descriptors of the input's choosing), and the
// predecessor's side, session/handoff_server.hpp's hand_over, answers it as run_handoff_listener
// does for each connection.
//
// The server is a handoff_site without a mount or a ring: no queues (rs null), no /dev/fuse
// readers, the mount point a scratch directory (its device the site's), /dev/fuse a pipe (or
// /dev/null, or a socket whose peer is gone: a connection that ended), and a save_state that
// writes a few values and a descriptor. Everything hand_over parses from the successor, and every
// way it refuses or resumes, runs as in a server; what needs a mount (the RELEASEDIR plugs, ring
// entries reaching the gate) needs queues, which this site has none of.
//
// Every run must end in a refusal or a resume (serving on), or a handoff only after a READY that
// said yes; never a crash or a hang. Checked after each run: what the predecessor sent is
// well-formed (OFFER or a refusal; the STATE; GO or "no"), handed_off is set exactly when GO was
// sent, nothing is in progress, the readers are let go again when it failed, /dev/fuse got a
// NOTIFY_RESEND exactly when the state had gone out and no GO followed; every descriptor received
// is closed again. After a failure, a well-formed successor connects and must get the mount
// (the server served on, ready for the next one).
//
// Input: [u8 mode] then up to 6 messages (handoff_fuzz_input.hpp), the successor's in order.
// mode % 4: /dev/fuse is 0, 3 a pipe's write end, 1 /dev/null, 2 a socket whose peer is closed.
#include <poll.h>
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "corofuse/abi.hpp"
#include "corofuse/session/handoff.hpp"
#include "corofuse/session/handoff_server.hpp"
#include "tests/fuzz/fuzz_input.hpp"
#include "tests/fuzz/handoff_fuzz_input.hpp"

namespace abi = corofuse::abi;
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

bool is_handoff_error(const std::exception& e) { return dynamic_cast<const session::handoff_error*>(&e) != nullptr; }

struct fake_server {
  int fuse_fd = -1;      // the site's /dev/fuse
  int fuse_reader = -1;  // what was written to it (a pipe's read end), or -1
  int state_fd = -1;     // a descriptor the filesystem's state carries
  transport::serving_threads threads;
  transport::mailbox reader_box;  // a /dev/fuse reader's, that the pause stops and the resume lets go
  transport::pause_gate gate;
  session::handoff_site site;

  explicit fake_server(unsigned fuse_kind) {
    if (fuse_kind == 1) {
      fuse_fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    } else if (fuse_kind == 2) {
      int s[2];
      FUZZ_CHECK(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, s) == 0);
      ::close(s[1]);  // the other end gone: polls POLLHUP, as an ended connection's /dev/fuse polls POLLERR
      fuse_fd = s[0];
    } else {
      int p[2];
      FUZZ_CHECK(::pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0);
      fuse_reader = p[0];
      fuse_fd = p[1];
    }
    FUZZ_CHECK(fuse_fd >= 0);
    state_fd = hf::scratch::get().open_kind(0);
    FUZZ_CHECK(state_fd >= 0);
    threads.add(reader_box);
    struct stat st {};
    FUZZ_CHECK(::stat(hf::scratch::get().path().c_str(), &st) == 0);
    site.mountpoint = hf::scratch::get().path();
    site.device = st.st_dev;
    site.fuse_fd = fuse_fd;
    site.terms.kernel_major = 7;
    site.terms.kernel_minor = 45;
    site.terms.minor = 45;
    site.terms.max_write = 1 << 20;
    site.terms.max_pages = 256;
    site.threads = &threads;
    site.gate = &gate;
    site.readers = 0;
    site.save_state = [this](session::handoff_writer& w) {
      w.put<std::uint64_t>(42);
      w.put_string("fuzz state");
      w.put_fd(state_fd);
    };
  }
  ~fake_server() {
    threads.remove(reader_box);
    for (int fd : {fuse_fd, fuse_reader, state_fd})
      if (fd >= 0) ::close(fd);
  }
  // NOTIFY_RESEND headers written to /dev/fuse since the last call (the pipe drained).
  int resends() {
    if (fuse_reader < 0) return -1;
    int n = 0;
    abi::out_header h;
    for (;;) {
      const ssize_t got = ::read(fuse_reader, &h, sizeof h);
      if (got <= 0) break;
      FUZZ_CHECK(got == sizeof h);
      FUZZ_CHECK(h.len == sizeof h && h.unique == 0 && h.error == static_cast<std::int32_t>(abi::notify_code::resend));
      ++n;
    }
    return n;
  }
};

// What the predecessor sent, checked; true when it sent GO.
bool check_answers(fake_server& s, std::vector<session::handoff_reader>& said, bool& state_sent) {
  state_sent = false;
  if (said.empty()) return false;  // a HELLO it could not read: it said nothing
  // OFFER, or the refusal in its place.
  auto& offer = said[0];
  FUZZ_CHECK(offer.get<std::uint64_t>() == session::handoff_magic);
  const bool ok = offer.get<std::uint8_t>() != 0;
  const std::string why = offer.get_string();
  if (!ok) {
    FUZZ_CHECK(!why.empty() && offer.at_end());
    FUZZ_CHECK(said.size() == 1);
    return false;
  }
  FUZZ_CHECK(why.empty());
  FUZZ_CHECK(offer.get<std::uint8_t>() == 0);  // no queues: no arena
  const auto g = offer.get<session::handoff_geometry>();
  FUZZ_CHECK(g.queues == 0 && g.arena_address == 0 && g.arena_size == 0);
  FUZZ_CHECK(offer.at_end());
  if (said.size() < 2) return false;
  // STATE.
  auto& st = said[1];
  FUZZ_CHECK(st.get<std::uint64_t>() == session::handoff_magic);
  const auto terms = session::get_terms(st);
  FUZZ_CHECK(terms.minor == s.site.terms.minor && terms.max_write == s.site.terms.max_write);
  FUZZ_CHECK(st.get_string() == s.site.mountpoint);
  FUZZ_CHECK(st.get<std::uint8_t>() == 0);
  {
    const int fuse = st.take_fd();
    struct stat a {
    }, b{};
    FUZZ_CHECK(::fstat(fuse, &a) == 0 && ::fstat(s.fuse_fd, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev);
    ::close(fuse);
  }
  FUZZ_CHECK(st.get<std::uint32_t>() == 0);  // no held entries
  FUZZ_CHECK(st.get<std::uint64_t>() == 42);
  FUZZ_CHECK(st.get_string() == "fuzz state");
  ::close(st.take_fd());
  FUZZ_CHECK(st.at_end());
  state_sent = true;
  if (said.size() < 3) return false;
  // GO, or "no" (the failure after the state, told before it serves again).
  FUZZ_CHECK(said.size() == 3);
  const auto word = said[2].get<std::uint64_t>();
  if (word == session::handoff_magic) {
    FUZZ_CHECK(said[2].at_end());
    return true;
  }
  FUZZ_CHECK(word == 0);
  FUZZ_CHECK(!said[2].get_string().empty());
  FUZZ_CHECK(said[2].at_end());
  return false;
}

// One connection: `messages` sent (then the end of the stream), hand_over as the listener runs it.
// True when the mount was handed off.
bool one_handoff(fake_server& s, const std::vector<hf::message>& messages) {
  hf::socket_pair sp;
  for (const auto& m : messages) {
    const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(m.bytes.data()), m.bytes.size());
    if (!hf::send_message(sp.fd[1], m, bytes)) break;
  }
  sp.done_sending();
  try {
    session::hand_over(sp.fd[0], s.site);
  } catch (const std::exception& e) {
    FUZZ_CHECK(is_handoff_error(e));
  }
  // Read before the predecessor's end closes (as run_handoff_listener closes it): a unix socket
  // closed with messages unread makes its peer's next receive fail (ECONNRESET), queue or not.
  auto said = hf::receive_all(sp.fd[1]);
  ::close(std::exchange(sp.fd[0], -1));
  bool state_sent = false;
  const bool go = check_answers(s, said, state_sent);
  FUZZ_CHECK(s.site.handed_off.load() == go);
  FUZZ_CHECK(!s.site.in_progress.load());
  FUZZ_CHECK(s.gate.arrived() == 0);
  // A handed-off server's readers stay stopped (they end at the gate's verdict); otherwise they
  // read again.
  FUZZ_CHECK(s.reader_box.pause_reading.load() == go);
  const int resends = s.resends();
  if (std::getenv("FUZZ_VERBOSE")) std::fprintf(stderr, "  said %zu, state %d, go %d, resends %d\n", said.size(), state_sent, go, resends);
  if (resends >= 0) FUZZ_CHECK(resends == (state_sent && !go ? 1 : 0));
  return go;
}

// The conversation of a successor that takes the mount.
std::vector<hf::message> well_formed_successor() {
  session::handoff_writer hello, mapped, ready;
  hello.put(session::handoff_magic);
  hello.put(session::handoff_version);
  hello.put<std::int32_t>(4242);
  mapped.put<std::uint8_t>(1);
  mapped.put_string("");
  ready.put<std::uint8_t>(1);
  ready.put_string("");
  return {hf::blob_message(hello), hf::blob_message(mapped), hf::blob_message(ready)};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const bool quiet = hf::quiet_logs();
  (void)quiet;
  hf::scratch::get();
  const int fds_before = hf::open_fd_count();
  {
    reader in(data, size);
    const unsigned fuse_kind = in.get<std::uint8_t>() % 4;
    std::vector<hf::message> messages;
    for (std::size_t i = 0; i < hf::max_messages && !in.empty(); ++i) messages.push_back(hf::read_message(in));

    fake_server s(fuse_kind);
    const bool gone = one_handoff(s, messages);
    if (!gone && fuse_kind != 2) {
      // It served on: the next successor gets the mount.
      FUZZ_CHECK(one_handoff(s, well_formed_successor()));
    }
  }
  FUZZ_CHECK(hf::open_fd_count() == fds_before);
  return 0;
}
