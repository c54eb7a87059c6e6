// Restart without unmount, the successor's side: it connects to the running server's
// --handoff-socket, maps the ring memory at the predecessor's address, receives /dev/fuse, the
// held ring entries and the filesystem's state, sets everything up without touching the
// connection, says READY, and serves only on the predecessor's GO (until then the predecessor
// may take everything back). The predecessor's side is handoff_server.hpp.
#pragma once

#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "corofuse/abi/flags.hpp"
#include "corofuse/base/log.hpp"
#include "corofuse/session/fault_points.hpp"
#include "corofuse/session/handoff.hpp"
#include "corofuse/session/handoff_server.hpp"
#include "corofuse/session/init.hpp"
#include "corofuse/session/mount.hpp"
#include "corofuse/transport/shared_arena.hpp"
#include "corofuse/transport/uring.hpp"

namespace corofuse::session {

// A filesystem that can hand its state to a successor process (restart without unmount): what
// save_state() writes (values, descriptors), restore_state() reads back in the successor.
template <typename Fs> concept hands_over_state = requires(Fs& fs, handoff_writer& w, handoff_reader& r) {
  fs.save_state(w);
  fs.restore_state(r);
};

// The successor's side of a handoff, up to the state: the predecessor's ring memory mapped at its
// address, then everything it sent.
struct taken_over_mount {
  transport::shared_arena arena;
  handoff_geometry geometry;
  std::optional<handoff_reader> state;  // positioned at the held entries
  int sock = -1;
  // The predecessor process, held from the moment it accepted us (a pidfd names that process and
  // no later one with its pid): how a successor tells "it died" from "it said no".
  int predecessor = -1;
  ~taken_over_mount() {
    if (sock >= 0) ::close(sock);
    if (predecessor >= 0) ::close(predecessor);
  }

  // Tells the predecessor that this successor gives up (`why`): it serves on.
  void refuse(const std::string& why) const noexcept {
    try {
      handoff_writer no;
      no.put<std::uint8_t>(0);
      no.put_string(why);
      send_blob(sock, no);
    } catch (...) {  // the predecessor is gone or not listening: nothing more to tell
    }
  }

  // READY, then the predecessor's answer: true on its GO (the mount is this process's now).
  // A predecessor that died after it sent its state, before GO or its "no", can serve no more:
  // everything was frozen and handed over, so the mount is taken as on GO (otherwise it would be
  // left without a server). One that said no, or lives on, keeps the mount.
  bool ready_and_wait_for_go() const {
    try {
      handoff_writer ready;
      ready.put<std::uint8_t>(1);
      ready.put_string("");
      send_blob(sock, ready);
      handoff_reader answer = receive_blob(sock);
      if (answer.get<std::uint64_t>() == handoff_magic) return true;
      log_message("--take-over: the predecessor keeps the mount: %s", answer.get_string().c_str());
      return false;
    } catch (const std::exception& e) {
      if (predecessor_died()) {
        log_message("--take-over: the predecessor died after handing over its state, before GO (%s): taking the mount", e.what());
        return true;
      }
      log_message("--take-over: %s: the predecessor keeps the mount", e.what());
      return false;
    }
  }

  // Whether the predecessor process has ended (within a moment: its socket closes as it dies).
  bool predecessor_died() const noexcept {
    if (predecessor < 0) return false;
    pollfd p{predecessor, POLLIN, 0};
    return ::poll(&p, 1, 2000) == 1 && (p.revents & POLLIN);
  }
};

// Connects to `path`, unless `t` holds a connected socket already (tests/fuzz hands one end of a
// socketpair in; the server's own taken_over_mount never does).
inline void take_over_from(const std::string& path, taken_over_mount& t) {
  if (t.sock < 0) t.sock = connect_to_predecessor(path, 30);
  ucred peer{};
  socklen_t len = sizeof peer;
  if (::getsockopt(t.sock, SOL_SOCKET, SO_PEERCRED, &peer, &len) == 0 && peer.pid > 0)
    t.predecessor = static_cast<int>(::syscall(SYS_pidfd_open, peer.pid, 0));  // -1 on a kernel without pidfds: never taken
  handoff_writer hello;
  hello.put(handoff_magic);
  hello.put(handoff_version);
  hello.put(static_cast<std::int32_t>(::getpid()));
  send_blob(t.sock, hello);
  handoff_reader offer = receive_blob(t.sock);
  if (offer.get<std::uint64_t>() != handoff_magic) throw handoff_error("--take-over " + path + ": not a corofuse handoff socket");
  const bool ok = offer.get<std::uint8_t>() != 0;
  const std::string why = offer.get_string();
  if (!ok) throw handoff_error("--take-over " + path + ": the running server refused: " + why);
  const bool has_arena = offer.get<std::uint8_t>() != 0;
  t.geometry = offer.get<handoff_geometry>();
  std::string map_error;
  if (has_arena) {
    try {
      t.arena = transport::shared_arena::map_at(offer.take_fd(), t.geometry.arena_address, t.geometry.arena_size);
    } catch (const std::exception& e) {
      map_error = e.what();
    }
  }
  if (map_error.empty() && fault_at("successor.map")) map_error = "injected fault (successor.map)";
  handoff_writer mapped;
  mapped.put<std::uint8_t>(map_error.empty());
  mapped.put_string(map_error);
  send_blob(t.sock, mapped);
  if (!map_error.empty()) throw handoff_error("--take-over " + path + ": " + map_error);
  t.state.emplace(receive_blob(t.sock));
  if (t.state->get<std::uint64_t>() != handoff_magic) throw handoff_error("--take-over " + path + ": a malformed state");
}

// Takes the mount over from the server listening at `path`: its terms and its /dev/fuse, as a
// fuse_mount. Throws handoff_error (or mount_error) with the reason.
inline std::unique_ptr<fuse_mount> take_over_mount(const std::string& path, const std::string& asked_mountpoint, taken_over_mount& t,
                                                   init_terms& terms) {
  take_over_from(path, t);
  handoff_reader& in = *t.state;
  terms = get_terms(in);
  const std::string mountpoint = in.get_string();
  const bool unprivileged = in.get<std::uint8_t>() != 0;
  auto m = std::make_unique<fuse_mount>(fuse_mount::taken_over_t{}, in.take_fd(), mountpoint, unprivileged);
  char resolved[PATH_MAX];
  if (!::realpath(asked_mountpoint.c_str(), resolved) || mountpoint != resolved)
    log_message("--take-over: serving %s, where the predecessor mounted (not %s)", mountpoint.c_str(), asked_mountpoint.c_str());
  return m;
}

// The rest of the state: the held entries (one per queue entry), how each queue was set up, and
// the filesystem's own state. Throws handoff_error when anything does not fit.
template <typename Fs>
void restore_held_state(Fs& fs, handoff_reader& in, const init_terms& terms, unsigned queues, unsigned depth, transport::entry_slot* slots,
                        std::vector<transport::queue_mode>& modes) {
  const auto n = in.get<std::uint32_t>();
  if (n != std::uint64_t{queues} * depth) throw handoff_error("--take-over: the held entries do not match the ring geometry");
  for (std::uint32_t i = 0; i < n; ++i) {
    const auto state = static_cast<transport::entry_state>(in.get<std::uint8_t>());
    slots[i].commit_id = in.get<std::uint64_t>();
    if (!transport::is_held(state)) throw handoff_error("--take-over: an entry the predecessor did not hold");
    slots[i].state.store(state);
  }
  for (auto& qm : modes) {
    qm = in.get<transport::queue_mode>();
    // The tables pool.hpp and uring.hpp make: sparse (the pool at `depth`, or none), or the pool
    // or payload block alone at 0, or nothing registered.
    const bool known = qm.sparse_table ? (qm.pool_index == -1 || qm.pool_index == static_cast<std::int32_t>(depth))
                                       : (qm.pool_index == -1 || qm.pool_index == 0);
    if (!known || (qm.zero_copy && !qm.sparse_table)) throw handoff_error("--take-over: a queue's buffer table makes no sense");
  }
  if (terms.has(abi::init_flag::allow_idmap) && !requires { requires Fs::supports_idmapped_mounts; })
    throw handoff_error("--take-over: the mount allows idmapped mounts, which this filesystem does not support");
  if constexpr (hands_over_state<Fs>) fs.restore_state(in);
  if (!in.at_end()) throw handoff_error("--take-over: more state than the filesystem read");
}

}  // namespace corofuse::session
