// Shared by handoff_successor_fuzz, handoff_predecessor_fuzz and the seed generator: the input's
// messages (what one side of a handoff sends the other), the descriptors an input may pass, how a
// message goes onto the socket (the blob framing of session/handoff.hpp, or a malformed one), and
// the descriptor count the runs compare before and after.
//
// A message in the input:
//   [u8 framing][u16 length][length bytes][u8 descriptor count][count x u8 descriptor kind]
//   framing % 4 == 1 (raw) adds: [u64 announced bytes][u64 announced descriptors][u8 pieces]
//                                [pieces x u16 piece size]
// framing % 4: 0 blob: as send_blob sends it (a head datagram {bytes, descriptors}, then the bytes
//                in pieces of at most 32 KiB carrying at most 250 descriptors each);
//              1 raw: the head as given, then pieces of the sizes given (the descriptors ride on the
//                first piece), whatever the head announced;
//              2 datagram: the bytes as one datagram with the descriptors, no head;
//              3 stop: nothing more is sent (the other side then reads the end of the stream).
// Descriptor kinds: fd_kind below. Counts and sizes are bounded (max_fds_per_message,
// max_pieces); what is not in the input reads as zeros.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "corofuse/base/log.hpp"
#include "corofuse/session/handoff.hpp"
#include "tests/fuzz/fuzz_input.hpp"

namespace corofuse::fuzz::handoff {

inline constexpr std::size_t max_messages = 6;
inline constexpr std::size_t max_fds_per_message = 16;
inline constexpr std::size_t max_pieces = 8;

// handoff_successor_fuzz's placeholders: an 8-byte value placeholder_base | code in a message's
// bytes stands for something only the running process knows (see that target).
inline constexpr std::uint64_t placeholder_base = 0xc0f0f02200000000ull;
constexpr std::uint64_t placeholder(unsigned code) { return placeholder_base | code; }

enum class framing : std::uint8_t { blob = 0, raw = 1, datagram = 2, stop = 3 };

struct message {
  framing how = framing::blob;
  std::vector<std::uint8_t> bytes;
  std::vector<std::uint8_t> fds;  // fd kinds
  std::uint64_t head_bytes = 0, head_fds = 0;
  std::vector<std::uint16_t> pieces;
};

inline message read_message(reader& in) {
  message m;
  m.how = static_cast<framing>(in.get<std::uint8_t>() % 4);
  const auto n = in.get<std::uint16_t>();
  auto b = in.take(n);
  m.bytes.assign(b.begin(), b.end());
  const std::size_t nfds = in.get<std::uint8_t>() % (max_fds_per_message + 1);
  for (std::size_t i = 0; i < nfds && !in.empty(); ++i) m.fds.push_back(in.get<std::uint8_t>());
  if (m.how == framing::raw) {
    m.head_bytes = in.get<std::uint64_t>();
    m.head_fds = in.get<std::uint64_t>();
    const std::size_t pieces = in.get<std::uint8_t>() % (max_pieces + 1);
    for (std::size_t i = 0; i < pieces && !in.empty(); ++i) m.pieces.push_back(in.get<std::uint16_t>());
  }
  return m;
}

template <typename T>
void put_le(std::vector<std::uint8_t>& out, T v) {
  const auto* p = reinterpret_cast<const std::uint8_t*>(&v);
  out.insert(out.end(), p, p + sizeof v);
}

inline void append_message(std::vector<std::uint8_t>& out, const message& m) {
  out.push_back(static_cast<std::uint8_t>(m.how));
  put_le<std::uint16_t>(out, static_cast<std::uint16_t>(m.bytes.size()));
  out.insert(out.end(), m.bytes.begin(), m.bytes.end());
  out.push_back(static_cast<std::uint8_t>(m.fds.size()));
  out.insert(out.end(), m.fds.begin(), m.fds.end());
  if (m.how == framing::raw) {
    put_le(out, m.head_bytes);
    put_le(out, m.head_fds);
    out.push_back(static_cast<std::uint8_t>(m.pieces.size()));
    for (auto p : m.pieces) put_le(out, p);
  }
}

// A message built the way the real side builds its blob: `w`'s bytes; each put_fd(i) of `w`
// stands for the descriptor kind kinds[i].
inline message blob_message(const session::handoff_writer& w, std::vector<std::uint8_t> kinds = {}) {
  message m;
  const auto& b = w.bytes();
  m.bytes.assign(reinterpret_cast<const std::uint8_t*>(b.data()), reinterpret_cast<const std::uint8_t*>(b.data()) + b.size());
  m.fds = std::move(kinds);
  return m;
}

// ---- descriptors ------------------------------------------------------------------------------
// kind % 10: 0 a memfd (size: memfd_sizes[kind / 10 % 8]), 1 /dev/null, 2 a pipe's read end,
// 3 the scratch directory (O_PATH), 4 its regular file "file" (read-write), 5 its directory "dir",
// 6 its symlink "link" (O_PATH | O_NOFOLLOW), 7 "file" (O_PATH), 8 an eventfd, 9 the scratch
// directory (O_RDONLY).
inline constexpr std::uint64_t memfd_sizes[8] = {0, 4096, 8192, 12288, 65536, 1u << 20, std::uint64_t{1} << 40, 4097};

// The scratch directory every kind but the memfd, /dev/null, pipe and eventfd lives in: made once
// per process (mkdtemp under TMPDIR), with "file" (12 bytes), "dir/" and "link" -> "file".
class scratch {
 public:
  static scratch& get() {
    static scratch s;
    return s;
  }
  const std::string& path() const { return path_; }
  std::string at(const char* name) const { return path_ + "/" + name; }

  int open_kind(std::uint8_t kind) const {
    switch (kind % 10) {
      case 0: {
        int fd = ::memfd_create("fuzz-arena", MFD_CLOEXEC);
        if (fd >= 0 && ::ftruncate(fd, static_cast<off_t>(memfd_sizes[kind / 10 % 8])) != 0) {
          ::close(fd);
          return -1;
        }
        return fd;
      }
      case 1: return ::open("/dev/null", O_RDWR | O_CLOEXEC);
      case 2: {
        int p[2];
        if (::pipe2(p, O_CLOEXEC) != 0) return -1;
        ::close(p[1]);
        return p[0];
      }
      case 3: return ::open(path_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
      case 4: return ::open(at("file").c_str(), O_RDWR | O_CLOEXEC);
      case 5: return ::open(at("dir").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      case 6: return ::open(at("link").c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
      case 7: return ::open(at("file").c_str(), O_PATH | O_CLOEXEC);
      case 8: return ::eventfd(0, EFD_CLOEXEC);
      default: return ::open(path_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    }
  }

 private:
  scratch() {
    const char* tmp = std::getenv("TEST_TMPDIR");
    if (!tmp) tmp = std::getenv("TMPDIR");
    std::string templ = std::string(tmp ? tmp : "/tmp") + "/corofuse-handoff-fuzz.XXXXXX";
    FUZZ_CHECK(::mkdtemp(templ.data()) != nullptr);
    path_ = templ;
    int fd = ::open(at("file").c_str(), O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0644);
    FUZZ_CHECK(fd >= 0);
    FUZZ_CHECK(::write(fd, "hello world\n", 12) == 12);
    ::close(fd);
    FUZZ_CHECK(::mkdir(at("dir").c_str(), 0755) == 0);
    FUZZ_CHECK(::symlink("file", at("link").c_str()) == 0);
  }
  std::string path_;
};

// Opens each kind; -1 where one could not be opened (it is then not sent).
inline std::vector<int> open_kinds(const std::vector<std::uint8_t>& kinds) {
  std::vector<int> fds;
  for (auto k : kinds) {
    int fd = scratch::get().open_kind(k);
    if (fd >= 0) fds.push_back(fd);
  }
  return fds;
}
inline void close_all(std::vector<int>& fds) {
  for (int fd : fds) ::close(fd);
  fds.clear();
}

// ---- onto the socket --------------------------------------------------------------------------
// Sends `m` (its bytes: `bytes`, after any substitution) on `sock`, this side's non-blocking end.
// The descriptors are opened here and closed once sent (the receiver has its copies). False when
// the socket would not take it (full, or the other side gone): nothing more is sent then.
inline bool send_message(int sock, const message& m, std::span<const std::byte> bytes) {
  namespace wire = session::handoff_wire;
  std::vector<int> fds = open_kinds(m.fds);
  bool ok = true;
  try {
    switch (m.how) {
      case framing::blob: {
        // send_blob's framing, with descriptors that no put_fd() index in the bytes names (the
        // indices, if any, are in the input's bytes).
        const wire::blob_head head{bytes.size(), fds.size()};
        wire::send_piece(sock, std::as_bytes(std::span(&head, 1)), {});
        std::span<const std::byte> data = bytes;
        std::span<const int> f(fds);
        while (!data.empty() || !f.empty()) {
          auto d = data.first(std::min(data.size(), wire::piece_bytes));
          auto g = f.first(std::min(f.size(), wire::piece_fds));
          static const std::byte filler{0};
          wire::send_piece(sock, d.empty() ? std::span<const std::byte>(&filler, 1) : d, g);
          data = data.subspan(d.size());
          f = f.subspan(g.size());
        }
        break;
      }
      case framing::raw: {
        const wire::blob_head head{m.head_bytes, m.head_fds};
        wire::send_piece(sock, std::as_bytes(std::span(&head, 1)), {});
        std::span<const std::byte> data = bytes;
        bool first = true;
        for (auto size : m.pieces) {
          auto d = data.first(std::min<std::size_t>(data.size(), size));
          wire::send_piece(sock, d, first ? std::span<const int>(fds) : std::span<const int>{});
          first = false;
          data = data.subspan(d.size());
        }
        break;
      }
      case framing::datagram: wire::send_piece(sock, bytes, fds); break;
      case framing::stop: ok = false; break;
    }
  } catch (const session::handoff_error&) {
    ok = false;  // EAGAIN (the socket is full) or EPIPE: the rest is not sent
  }
  close_all(fds);
  return ok;
}

// The other side's blobs, as this side receives them (its end non-blocking: an empty queue ends
// the list, as does anything malformed).
inline std::vector<session::handoff_reader> receive_all(int sock) {
  std::vector<session::handoff_reader> got;
  for (int i = 0; i < 16; ++i) {
    try {
      got.push_back(session::receive_blob(sock));
    } catch (const session::handoff_error& e) {
      if (std::getenv("FUZZ_VERBOSE")) std::fprintf(stderr, "  (this side's receive: %s)\n", e.what());
      break;
    }
  }
  return got;
}

// The framework's log lines (a refused handoff logs why) are dropped unless FUZZ_VERBOSE is set:
// a line per run would flood the fuzzer's log. Sanitizer reports and FUZZ_CHECK go to stderr.
inline bool quiet_logs() {
  if (!std::getenv("FUZZ_VERBOSE")) set_log_sink([](void*, log_kind, std::string_view) {});
  return true;
}

// Open descriptors of this process (the listing's own included, before and after alike).
inline int open_fd_count() {
  int n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  FUZZ_CHECK(d != nullptr);
  while (::readdir(d)) ++n;
  ::closedir(d);
  return n;
}

// A SOCK_SEQPACKET pair: [0] the side under test's end (blocking, with the real timeouts), [1]
// the fuzz input's end (non-blocking, with room for what an input can send).
struct socket_pair {
  int fd[2] = {-1, -1};
  socket_pair() {
    FUZZ_CHECK(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fd) == 0);
    session::set_handoff_timeouts(fd[0], 30);
    FUZZ_CHECK(::fcntl(fd[1], F_SETFL, O_NONBLOCK) == 0);
    int size = 1 << 20;
    ::setsockopt(fd[1], SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    ::setsockopt(fd[0], SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  }
  ~socket_pair() {
    for (int f : fd)
      if (f >= 0) ::close(f);
  }
  // The input's side is done sending: the side under test reads the end of the stream once the
  // queue is empty (and may still send: its messages queue up here).
  void done_sending() { ::shutdown(fd[1], SHUT_WR); }
  socket_pair(const socket_pair&) = delete;
  socket_pair& operator=(const socket_pair&) = delete;
};

}  // namespace corofuse::fuzz::handoff
