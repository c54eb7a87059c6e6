// Restart without unmount: the wire between a running server (the predecessor, --handoff-socket)
// and its successor (--take-over), over a unix SEQPACKET socket.
//
//   successor                                  predecessor
//   HELLO {magic, version}               ->
//                                        <-    OFFER {ok | reason; the ring geometry} + arena memfd
//   maps the arena at the same address
//   MAPPED {ok | reason}                 ->
//                                              freezes: readers stop, handlers finish, every ring
//                                              entry ends up holding a request or a reply
//                                        <-    STATE {terms, mount, held entries, queue set-ups,
//                                                    filesystem state} + /dev/fuse + descriptors
//   restores the state, sets its rings up, touches nothing of the connection yet
//   READY {ok | reason}                  ->    (not ok, or silence: serves on, as before)
//                                        <-    GO  (from here the predecessor never serves again)
//   commits the held entries from its own rings, starts its readers; without GO it gives up,
//   leaving the connection untouched
//                                              exits 0 without unmounting
//
// Each message is a blob: a leading datagram {length, descriptor count}, then the bytes in pieces
// that carry the descriptors (SCM_RIGHTS, at most 250 per piece). handoff_writer and handoff_reader
// build and read a blob's bytes: fixed-size values, strings, and descriptors by index; a reader
// checks every length and throws handoff_error on anything malformed.
#pragma once

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace corofuse::session {

class handoff_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

inline constexpr std::uint64_t handoff_magic = 0x31666f646e616863ull;  // "chandof1"
inline constexpr std::uint32_t handoff_version = 1;

// A blob's bytes and descriptors, as a filesystem's save_state() writes them.
class handoff_writer {
 public:
  template <typename T>
  void put(const T& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    put_bytes(std::as_bytes(std::span(&v, 1)));
  }
  void put_bytes(std::span<const std::byte> b) { bytes_.insert(bytes_.end(), b.begin(), b.end()); }
  void put_string(std::string_view s) {
    put(static_cast<std::uint32_t>(s.size()));
    put_bytes(std::as_bytes(std::span(s.data(), s.size())));
  }
  // Sends a copy of `fd` (the caller keeps its own); the reader gets it back with take_fd().
  void put_fd(int fd) {
    put(static_cast<std::uint32_t>(fds_.size()));
    fds_.push_back(fd);
  }
  const std::vector<std::byte>& bytes() const noexcept { return bytes_; }
  const std::vector<int>& fds() const noexcept { return fds_; }

 private:
  std::vector<std::byte> bytes_;
  std::vector<int> fds_;
};

// Reads what a handoff_writer wrote. Owns the descriptors received: those not taken are closed
// with it.
class handoff_reader {
 public:
  handoff_reader(std::vector<std::byte> bytes, std::vector<int> fds) : bytes_(std::move(bytes)), fds_(std::move(fds)) {}
  handoff_reader(handoff_reader&& o) noexcept : bytes_(std::move(o.bytes_)), fds_(std::move(o.fds_)), at_(o.at_) { o.fds_.clear(); }
  handoff_reader(const handoff_reader&) = delete;
  handoff_reader& operator=(const handoff_reader&) = delete;
  ~handoff_reader() {
    for (int fd : fds_)
      if (fd >= 0) ::close(fd);
  }

  template <typename T>
  T get() {
    static_assert(std::is_trivially_copyable_v<T>);
    T v;
    std::memcpy(&v, take(sizeof v).data(), sizeof v);
    return v;
  }
  std::string get_string(std::size_t max = 1u << 20) {
    const auto n = get<std::uint32_t>();
    if (n > max) throw handoff_error("handoff: a string longer than " + std::to_string(max) + " bytes");
    auto b = take(n);
    return std::string(reinterpret_cast<const char*>(b.data()), b.size());
  }
  // The descriptor put_fd() sent; the caller owns it. Each can be taken once.
  int take_fd() {
    const auto i = get<std::uint32_t>();
    if (i >= fds_.size() || fds_[i] < 0) throw handoff_error("handoff: a descriptor index that was not sent");
    int fd = fds_[i];
    fds_[i] = -1;
    return fd;
  }
  std::span<const std::byte> take(std::size_t n) {
    if (n > bytes_.size() - at_) throw handoff_error("handoff: the state ends early");
    auto b = std::span<const std::byte>(bytes_).subspan(at_, n);
    at_ += n;
    return b;
  }
  bool at_end() const noexcept { return at_ == bytes_.size(); }

 private:
  std::vector<std::byte> bytes_;
  std::vector<int> fds_;
  std::size_t at_ = 0;
};

namespace handoff_wire {

inline constexpr std::size_t piece_bytes = 32 * 1024;
inline constexpr std::size_t piece_fds = 250;  // SCM_MAX_FD is 253
inline constexpr std::size_t max_blob = std::size_t{1} << 30;
inline constexpr std::size_t max_fds = std::size_t{1} << 20;

struct blob_head {
  std::uint64_t bytes;
  std::uint64_t fds;
};
static_assert(sizeof(blob_head) == 16, "the wire between two versions of a server: a change needs a new handoff_version");

inline void send_piece(int sock, std::span<const std::byte> data, std::span<const int> fds) {
  iovec iov{const_cast<std::byte*>(data.data()), data.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control;
  if (!fds.empty()) {
    control.resize(CMSG_SPACE(fds.size() * sizeof(int)));
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(fds.size() * sizeof(int));
    std::memcpy(CMSG_DATA(c), fds.data(), fds.size() * sizeof(int));
  }
  ssize_t n;
  do {
    n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n < 0) throw handoff_error(std::string("handoff: sending: ") + std::strerror(errno));
  if (static_cast<std::size_t>(n) != data.size()) throw handoff_error("handoff: a message was cut short");
}

// One datagram into `buf`; the descriptors it carried are appended to `fds`. Its size.
inline std::size_t receive_piece(int sock, std::span<std::byte> buf, std::vector<int>& fds) {
  iovec iov{buf.data(), buf.size()};
  std::vector<char> control(CMSG_SPACE(piece_fds * sizeof(int)));
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  ssize_t n;
  do {
    n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) throw handoff_error("handoff: the other side did not answer in time");
    throw handoff_error(std::string("handoff: receiving: ") + std::strerror(errno));
  }
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      fds.push_back(fd);
    }
  }
  if (n == 0) throw handoff_error("handoff: the other side closed the connection");
  if (msg.msg_flags & MSG_CTRUNC)
    throw handoff_error("handoff: not every descriptor sent could be received (is the open-file limit, RLIMIT_NOFILE, too low?)");
  if (msg.msg_flags & MSG_TRUNC) throw handoff_error("handoff: a message larger than expected");
  return static_cast<std::size_t>(n);
}

}  // namespace handoff_wire

inline void send_blob(int sock, const handoff_writer& w) {
  const handoff_wire::blob_head head{w.bytes().size(), w.fds().size()};
  handoff_wire::send_piece(sock, std::as_bytes(std::span(&head, 1)), {});
  std::span<const std::byte> data(w.bytes());
  std::span<const int> fds(w.fds());
  while (!data.empty() || !fds.empty()) {
    auto d = data.first(std::min(data.size(), handoff_wire::piece_bytes));
    auto f = fds.first(std::min(fds.size(), handoff_wire::piece_fds));
    // A datagram must carry a byte for its descriptors to travel.
    static const std::byte filler{0};
    handoff_wire::send_piece(sock, d.empty() ? std::span<const std::byte>(&filler, 1) : d, f);
    data = data.subspan(d.size());
    fds = fds.subspan(f.size());
  }
}

inline handoff_reader receive_blob(int sock) {
  std::vector<int> fds;
  try {
    handoff_wire::blob_head head{};
    std::byte first[sizeof head + 1];
    if (handoff_wire::receive_piece(sock, first, fds) != sizeof head) throw handoff_error("handoff: a malformed message head");
    std::memcpy(&head, first, sizeof head);
    if (head.bytes > handoff_wire::max_blob || head.fds > handoff_wire::max_fds)
      throw handoff_error("handoff: an implausibly large message");
    // Grown as the bytes arrive: what the other side announces is not taken (up to max_blob) before
    // it has sent anything.
    std::vector<std::byte> bytes;
    bytes.reserve(std::min<std::size_t>(head.bytes, handoff_wire::piece_bytes));
    std::vector<std::byte> piece(handoff_wire::piece_bytes);
    while (bytes.size() < head.bytes || fds.size() < head.fds) {
      const std::size_t n = handoff_wire::receive_piece(sock, piece, fds);
      if (bytes.size() < head.bytes) {
        if (n > head.bytes - bytes.size()) throw handoff_error("handoff: more bytes than announced");
        bytes.insert(bytes.end(), piece.begin(), piece.begin() + static_cast<std::ptrdiff_t>(n));
      }
      if (fds.size() > head.fds) throw handoff_error("handoff: more descriptors than announced");
    }
    return handoff_reader(std::move(bytes), std::move(fds));
  } catch (...) {
    for (int fd : fds) ::close(fd);
    throw;
  }
}

// Both ends of the socket. The predecessor's listening socket is owner-only (mode 0600, set before
// listen(2), so nobody can connect in between; not through the umask, which is the whole
// process's and a filesystem's handlers may rely on theirs): whoever connects gets the mount and
// every file the server holds.
// Neither side waits for ever on the other: a peer that stops reading or answering is an error.
inline void set_handoff_timeouts(int sock, int seconds) {
  timeval tv{seconds, 0};
  ::setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

inline sockaddr_un unix_address(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof a.sun_path) throw handoff_error("handoff: socket path too long: " + path);
  std::memcpy(a.sun_path, path.data(), path.size());
  return a;
}

inline int listen_for_successor(const std::string& path) {
  sockaddr_un a = unix_address(path);
  int s = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (s < 0) throw handoff_error(std::string("handoff: socket: ") + std::strerror(errno));
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ::unlink(path.c_str());  // a stale one from an earlier run
  if (::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::chmod(path.c_str(), 0600) != 0 || ::listen(s, 1) != 0) {
    const int e = errno;
    ::close(s);
    throw handoff_error("--handoff-socket " + path + ": " + std::strerror(e));
  }
  return s;
}

inline int connect_to_predecessor(const std::string& path, int timeout_seconds) {
  sockaddr_un a = unix_address(path);
  int s = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (s < 0) throw handoff_error(std::string("handoff: socket: ") + std::strerror(errno));
  if (::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    const int e = errno;
    ::close(s);
    throw handoff_error("--take-over " + path + ": " + std::strerror(e) + " (is a server listening there with --handoff-socket?)");
  }
  set_handoff_timeouts(s, timeout_seconds);
  return s;
}

}  // namespace corofuse::session
