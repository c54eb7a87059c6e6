// Drives a filesystem object in-process, with real request bytes and no mount, no root and no
// kernel: a unit test of a filesystem's handlers as the kernel would call them.
//
//   my_fs fs;
//   corofuse::testing::driver<my_fs> d(fs);
//   auto e = d.send(corofuse::testing::request::lookup(corofuse::root_ino, "file"));
//   REQUIRE(e.error == 0);
//   CHECK(e.as<corofuse::abi::entry_out>().attr.size == 5);
//
// send() parses the bytes as the transport would (as a /dev/fuse message, or laid out as an
// io_uring ring entry: `arrival::ring`), runs the request through the same dispatch as a served
// request (each handler may co_await I/O on the driver's own ring, which runs until it is done),
// reads a READ answered with a file slice into the reply as the transport does, and returns the
// reply decoded: whether one is sent, the error, and the argument bytes. A malformed request is
// answered as the server answers it (the parse error's errno). Not thread-safe: one test thread.
#pragma once

#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <span>
#include <algorithm>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "corofuse/abi.hpp"
#include "corofuse/fs/context.hpp"
#include "corofuse/fs/dispatch.hpp"
#include "corofuse/io/ring.hpp"
#include "corofuse/io/sync_wait.hpp"
#include "corofuse/proto/op_layout.hpp"
#include "corofuse/proto/reply.hpp"
#include "corofuse/proto/request.hpp"
#include "corofuse/testing/requests.hpp"

namespace corofuse::testing {

// How a request reached the server: read from /dev/fuse, or in an io_uring ring entry.
enum class arrival { dev_fuse, ring };

// One decoded reply.
struct reply {
  bool answered = true;          // false: the kernel waits for no reply (FORGET, ...)
  int error = 0;                 // positive errno; 0: success
  std::vector<std::byte> bytes;  // the reply's arguments (empty on an error)

  // The arguments as a struct of the protocol (entry_out, attr_out, open_out, ...); throws
  // std::length_error when the reply is shorter.
  template <typename T>
  T as() const {
    if (bytes.size() < sizeof(T))
      throw std::length_error("corofuse::testing::reply::as: the reply has " + std::to_string(bytes.size()) + " bytes, fewer than the " +
                              std::to_string(sizeof(T)) + " asked for");
    T v;
    std::memcpy(&v, bytes.data(), sizeof v);
    return v;
  }
  // The arguments as text (a READ's data, a READLINK's target).
  std::string text() const { return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()); }

  // A READDIR reply's records (names, inodes, types, and the offset each continues from).
  struct entry {
    std::string name;
    std::uint64_t ino = 0;
    std::uint64_t next_offset = 0;
    std::uint32_t type = 0;
  };
  std::vector<entry> entries() const {
    std::vector<entry> out;
    std::size_t at = 0;
    while (at + sizeof(abi::dirent) <= bytes.size()) {
      abi::dirent d;
      std::memcpy(&d, bytes.data() + at, sizeof d);
      const std::size_t whole = abi::dirent_size(d.namelen);
      if (at + whole > bytes.size()) throw std::length_error("corofuse::testing::reply::entries: a record runs past the reply");
      out.push_back({std::string(reinterpret_cast<const char*>(bytes.data()) + at + sizeof d, d.namelen), d.ino, d.off, d.type});
      at += whole;
    }
    return out;
  }

  // A READDIRPLUS reply's records: each entry with its lookup reply (nodeid 0: no attributes, no
  // lookup counted).
  struct plus_entry : entry {
    abi::entry_out lookup{};
  };
  std::vector<plus_entry> plus_entries() const {
    std::vector<plus_entry> out;
    std::size_t at = 0;
    while (at + sizeof(abi::direntplus) <= bytes.size()) {
      abi::direntplus d;
      std::memcpy(&d, bytes.data() + at, sizeof d);
      const std::size_t whole = abi::direntplus_size(d.dirent.namelen);
      if (at + whole > bytes.size()) throw std::length_error("corofuse::testing::reply::plus_entries: a record runs past the reply");
      plus_entry e;
      e.name = std::string(reinterpret_cast<const char*>(bytes.data()) + at + sizeof d, d.dirent.namelen);
      e.ino = d.dirent.ino;
      e.next_offset = d.dirent.off;
      e.type = d.dirent.type;
      e.lookup = d.entry;
      out.push_back(std::move(e));
      at += whole;
    }
    return out;
  }
};

template <typename Fs>
class driver {
 public:
  explicit driver(Fs& fs, cache_defaults defaults = {}, std::size_t reply_room = 1 << 20)
      : fs_(fs), defaults_(defaults), ctx_(&ring_, defaults_), space_(reply_room) {}
  driver(const driver&) = delete;
  driver& operator=(const driver&) = delete;

  // Who the following requests come from (the header's uid, gid, pid).
  void set_caller(std::uint32_t uid, std::uint32_t gid, std::uint32_t pid = 1234) {
    uid_ = uid;
    gid_ = gid;
    pid_ = pid;
  }
  io::ring& ring() noexcept { return ring_; }
  context& ctx() noexcept { return ctx_; }

  // Serves one request (its unique numbered by the driver, its caller the one set) and returns
  // the reply.
  reply send(message m, arrival via = arrival::dev_fuse) {
    m.header().unique = next_unique_++;
    m.header().uid = uid_;
    m.header().gid = gid_;
    m.header().pid = pid_;
    proto::request req;
    proto::parse_error pe;
    if (via == arrival::ring) {
      ring_entry e(m, op_size(m));
      entry_ = e;
      pe = entry_.parse(req);
    } else {
      message_ = std::move(m);
      pe = message_.parse(req);
    }
    reply r;
    if (pe != proto::parse_error::none) {
      r.answered = req.unique() != 0 && !abi::opcode_has_no_reply(req.opcode());
      r.error = proto::errno_for(pe);
      return r;
    }
    proto::reply_buffer out{std::span<std::byte>(space_)};
    const reply_status st = io::sync_wait(ring_, dispatch(fs_, ctx_, req, out));
    r.answered = !st.no_reply;
    r.error = st.error;
    if (st.error) return r;
    std::size_t size = out.size();
    if (st.read_from_file) {  // what the transport does with a file slice: read it into the reply
      const std::size_t n = std::min(st.data_from.size, out.room());
      const ssize_t got = ::pread(st.data_from.fd, out.tail().data(), n, st.data_from.offset);
      if (got < 0) {
        r.error = errno;
        return r;
      }
      size += static_cast<std::size_t>(got);
    }
    r.bytes.assign(space_.begin(), space_.begin() + static_cast<std::ptrdiff_t>(size));
    return r;
  }

 private:
  // The size of the op struct a message carries, as the kernel splits it into a ring entry: the
  // header's opcode decides (proto's layout table: the op's fixed first argument).
  static std::size_t op_size(const message& m) {
    abi::in_header h;
    std::memcpy(&h, m.bytes.data(), sizeof h);
    const std::size_t body = m.bytes.size() - sizeof h;
    const std::size_t fixed = proto::layout_of(static_cast<abi::opcode>(h.opcode)).op_size;
    return fixed < body ? fixed : body;
  }

  Fs& fs_;
  cache_defaults defaults_;
  io::ring ring_;
  context ctx_;
  std::vector<std::byte> space_;
  message message_{abi::opcode::statfs, nullptr, 0};
  ring_entry entry_{message_, 0};
  std::uint64_t next_unique_ = 1;
  std::uint32_t uid_ = 0, gid_ = 0, pid_ = 1234;
};

}  // namespace corofuse::testing
