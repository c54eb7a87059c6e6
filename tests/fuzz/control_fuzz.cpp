// libFuzzer target: bytes written to memfs's --control FIFO (examples/memfs/control_channel.hpp
// splits them into lines on its thread; memfs.cpp's control() parses each: set, store,
// set-unnotified, rm, mv, retrieve, epoch, with paths and text).
//
// Each run: a memfs (16 MiB) with a small tree made through dispatch (d/, d/f "hello", d/e/, a
// "abc", l -> a, and a FIFO p), its connection a socket whose other end a thread reads as the
// kernel would (each notification must be well-formed: its length, its code, a name with its NUL;
// a RETRIEVE is answered with a NOTIFY_REPLY of the input's length, through notify_replies), and a
// real control_channel on a FIFO. The input's bytes are written to the FIFO; the lines the channel
// hands memfs must be exactly the input's complete non-empty lines (a last line without its newline
// waits for more). Then the tree is walked through dispatch and must be consistent: every name
// valid (no "." or ".." or '/' or NUL, at most 255 bytes) and found again by LOOKUP with the inode
// its listing gave, directories' link counts, files readable to their size, and the space memfs
// counts as used exactly the pages its reachable files hold. Every descriptor is closed again.
//
// Input: [u8 flags][u8 retrieve reply length] then the FIFO's bytes (at most 16 KiB are written).
// flags bit 0: the connection speaks 7.45 (else 7.31: no epoch); bit 1: RETRIEVE's replies are
// routed (else retrieve answers ENOSYS).
// memfs logs a line per command on stderr (the FILE*): this harness reads those lines through a
// pipe (shown with FUZZ_VERBOSE); sanitizer reports write to file descriptor 2 and still reach
// stderr, as FUZZ_CHECK does once the run's stderr is back.
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

// The filesystem itself, its main renamed (the example's source is not changed).
#define main example_main
#include "examples/memfs/memfs.cpp"
#undef main

#include "corofuse/fs/dispatch.hpp"
#include "corofuse/io/sync_wait.hpp"
#include "tests/fuzz/fuzz_input.hpp"

// stderr (the FILE*) is memfs's log pipe during a run: a failed check writes to descriptor 2.
#undef FUZZ_CHECK
#define FUZZ_CHECK(cond) ((cond) ? (void)0 : control_check_failed(#cond, __LINE__))
[[noreturn]] static void control_check_failed(const char* what, int line) {
  ::dprintf(STDERR_FILENO, "fuzz invariant violated (line %d): %s\n", line, what);
  std::abort();
}

namespace abi = corofuse::abi;
namespace io = corofuse::io;
namespace proto = corofuse::proto;
using corofuse::fuzz::body_builder;
using corofuse::fuzz::reader;

namespace {

constexpr std::uint64_t size_limit = 16u << 20;
constexpr std::size_t max_fifo_bytes = 16 * 1024;

io::ring& shared_ring() {
  static io::ring r;
  return r;
}

// The FIFO, made once per process in a directory of its own.
const std::string& fifo_path() {
  static const std::string path = [] {
    const char* tmp = std::getenv("TEST_TMPDIR");
    if (!tmp) tmp = std::getenv("TMPDIR");
    std::string dir = std::string(tmp ? tmp : "/tmp") + "/corofuse-control-fuzz.XXXXXX";
    FUZZ_CHECK(::mkdtemp(dir.data()) != nullptr);
    const std::string p = dir + "/control";
    FUZZ_CHECK(control_channel::prepare(p).empty());
    return p;
  }();
  return path;
}

// The kernel's side of memfs's connection: reads each notification, checks it, answers RETRIEVE.
class kernel_side {
 public:
  kernel_side(bool route_replies, std::size_t reply_len) : route_(route_replies), reply_len_(reply_len) {
    FUZZ_CHECK(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fd_) == 0);
    thread_ = std::thread([this] { run(); });
  }
  ~kernel_side() {
    ::shutdown(fd_[0], SHUT_WR);  // the thread reads the end
    thread_.join();
    ::close(fd_[0]);
    ::close(fd_[1]);
  }
  int device_fd() const { return fd_[0]; }
  cf::notify_replies* replies() { return route_ ? &replies_ : nullptr; }

 private:
  void run() {
    std::vector<std::byte> buf(256 * 1024);
    for (;;) {
      const ssize_t n = ::recv(fd_[1], buf.data(), buf.size(), 0);
      if (n <= 0) return;
      check(std::span(buf.data(), static_cast<std::size_t>(n)));
    }
  }
  template <typename T>
  static T at(std::span<const std::byte> m, std::size_t off = sizeof(abi::out_header)) {
    T v{};
    FUZZ_CHECK(m.size() >= off + sizeof v);
    std::memcpy(&v, m.data() + off, sizeof v);
    return v;
  }
  // A name after `head` bytes: namelen bytes then its NUL, the message's end; a valid name.
  static void check_name(std::span<const std::byte> m, std::size_t head, std::uint32_t namelen) {
    FUZZ_CHECK(m.size() == sizeof(abi::out_header) + head + namelen + 1);
    FUZZ_CHECK(m.back() == std::byte{0});
    const std::string_view name(reinterpret_cast<const char*>(m.data()) + sizeof(abi::out_header) + head, namelen);
    FUZZ_CHECK(!name.empty() && name.size() <= 255 && name.find('/') == name.npos && name.find('\0') == name.npos);
  }
  void check(std::span<const std::byte> m) {
    const auto h = at<abi::out_header>(m, 0);
    FUZZ_CHECK(h.len == m.size() && h.unique == 0);
    using abi::notify_code;
    switch (static_cast<notify_code>(h.error)) {
      case notify_code::inval_inode: FUZZ_CHECK(m.size() == sizeof h + sizeof(abi::notify_inval_inode_out)); break;
      case notify_code::inval_entry: check_name(m, sizeof(abi::notify_inval_entry_out), at<abi::notify_inval_entry_out>(m).namelen); break;
      case notify_code::delete_entry: check_name(m, sizeof(abi::notify_delete_out), at<abi::notify_delete_out>(m).namelen); break;
      case notify_code::store: FUZZ_CHECK(m.size() == sizeof h + sizeof(abi::notify_store_out) + at<abi::notify_store_out>(m).size); break;
      case notify_code::inc_epoch: FUZZ_CHECK(m.size() == sizeof h); break;
      case notify_code::retrieve: {
        FUZZ_CHECK(m.size() == sizeof h + sizeof(abi::notify_retrieve_out));
        FUZZ_CHECK(route_);  // without reply routing, retrieve never asks
        const auto r = at<abi::notify_retrieve_out>(m);
        std::vector<std::byte> data(std::min<std::size_t>(r.size, reply_len_), std::byte{'k'});
        FUZZ_CHECK(replies_.complete(r.notify_unique, data));
        break;
      }
      default: FUZZ_CHECK(!"a notification control() never sends");
    }
  }

  bool route_;
  std::size_t reply_len_;
  cf::notify_replies replies_;
  int fd_[2] = {-1, -1};
  std::thread thread_;
};

// Requests into memfs, as the kernel would send them.
struct client {
  memfs& fs;
  cf::cache_defaults defaults;
  cf::context ctx{&shared_ring(), defaults};
  std::vector<std::byte> reply = std::vector<std::byte>(128 * 1024);
  std::size_t reply_size = 0;

  int call(abi::opcode op, std::uint64_t nodeid, const std::vector<std::byte>& body) {
    const auto msg = corofuse::fuzz::make_message(op, nodeid, body);
    proto::request req;
    FUZZ_CHECK(proto::parse_message(msg, req) == proto::parse_error::none);
    proto::reply_buffer out(reply);
    const cf::reply_status st = io::sync_wait(shared_ring(), cf::dispatch(fs, ctx, req, out));
    FUZZ_CHECK(st.error >= 0 && st.error < 4096);
    reply_size = out.size();
    return st.error;
  }
  template <typename T>
  T answer() const {
    T v{};
    FUZZ_CHECK(reply_size >= sizeof v);
    std::memcpy(&v, reply.data(), sizeof v);
    return v;
  }
  abi::entry_out make(abi::opcode op, std::uint64_t parent, body_builder b) {
    FUZZ_CHECK(call(op, parent, b.bytes) == 0);
    const auto e = answer<abi::entry_out>();
    if (op == abi::opcode::create) {
      body_builder rel;
      abi::release_in r{};
      r.fh = answer<abi::open_out>(sizeof(abi::entry_out)).fh;
      rel.put(r);
      FUZZ_CHECK(call(abi::opcode::release, e.nodeid, rel.bytes) == 0);
    }
    return e;
  }
  template <typename T>
  T answer(std::size_t off) const {
    T v{};
    FUZZ_CHECK(reply_size >= off + sizeof v);
    std::memcpy(&v, reply.data() + off, sizeof v);
    return v;
  }
  void write(std::uint64_t node, const std::string& text) {
    body_builder open;
    open.put(abi::open_in{static_cast<abi::u32>(O_RDWR), 0});
    FUZZ_CHECK(call(abi::opcode::open, node, open.bytes) == 0);
    const auto fh = answer<abi::open_out>().fh;
    abi::write_in w{};
    w.fh = fh;
    w.size = static_cast<std::uint32_t>(text.size());
    body_builder b;
    b.put(w).str(text, false);
    FUZZ_CHECK(call(abi::opcode::write, node, b.bytes) == 0);
    abi::release_in r{};
    r.fh = fh;
    body_builder rel;
    rel.put(r);
    FUZZ_CHECK(call(abi::opcode::release, node, rel.bytes) == 0);
  }
  void forget(std::uint64_t node) {
    body_builder f;
    f.put(abi::forget_in{1});
    call(abi::opcode::forget, node, f.bytes);
  }
};

// d/, d/f "hello", d/e/, a "abc", l -> a, p (a FIFO); the kernel's lookups of them dropped again.
void populate(client& c) {
  const auto d = c.make(abi::opcode::mkdir, cf::root_ino, body_builder{}.put(abi::mkdir_in{0755, 022}).str("d")).nodeid;
  abi::create_in ci{};
  ci.flags = O_RDWR;
  ci.mode = S_IFREG | 0644;
  const auto f = c.make(abi::opcode::create, d, body_builder{}.put(ci).str("f")).nodeid;
  c.write(f, "hello");
  const auto e = c.make(abi::opcode::mkdir, d, body_builder{}.put(abi::mkdir_in{0755, 022}).str("e")).nodeid;
  const auto a = c.make(abi::opcode::create, cf::root_ino, body_builder{}.put(ci).str("a")).nodeid;
  c.write(a, "abc");
  const auto l = c.make(abi::opcode::symlink, cf::root_ino, body_builder{}.str("l").str("a")).nodeid;
  const auto p = c.make(abi::opcode::mknod, cf::root_ino, body_builder{}.put(abi::mknod_in{S_IFIFO | 0644, 0, 022, 0}).str("p")).nodeid;
  for (auto n : {d, f, e, a, l, p}) c.forget(n);
}

// The lines control_channel must hand on: the complete ones (up to a newline), empty ones skipped.
std::vector<std::string> lines_of(std::string_view bytes) {
  std::vector<std::string> out;
  for (std::size_t nl; (nl = bytes.find('\n')) != std::string_view::npos;) {
    if (nl) out.emplace_back(bytes.substr(0, nl));
    bytes.remove_prefix(nl + 1);
  }
  return out;
}

bool valid_name(std::string_view n) {
  return !n.empty() && n.size() <= 255 && n != "." && n != ".." && n.find('/') == n.npos && n.find('\0') == n.npos;
}

// Walks the tree from `dir` (nodeid, its depth); adds each regular file's bytes in pages to
// `file_bytes` (once per inode).
void walk(client& c, std::uint64_t dir, int depth, std::map<std::uint64_t, std::uint64_t>& file_bytes, int& nodes) {
  FUZZ_CHECK(depth < 32 && ++nodes < 1024);
  // "." and ".." are never entries of a directory (the kernel never asks for them).
  for (const char* dot : {".", ".."}) FUZZ_CHECK(c.call(abi::opcode::lookup, dir, body_builder{}.str(dot).bytes) != 0);
  FUZZ_CHECK(c.call(abi::opcode::opendir, dir, body_builder{}.put(abi::open_in{0, 0}).bytes) == 0);
  const auto fh = c.answer<abi::open_out>().fh;
  std::vector<std::pair<std::string, std::uint64_t>> entries;
  for (std::uint64_t offset = 0;;) {
    abi::read_in r{};
    r.fh = fh;
    r.offset = offset;
    r.size = 64 * 1024;
    FUZZ_CHECK(c.call(abi::opcode::readdir, dir, body_builder{}.put(r).bytes) == 0);
    if (c.reply_size == 0) break;
    for (std::size_t at = 0; at < c.reply_size;) {
      const auto d = c.answer<abi::dirent>(at);
      FUZZ_CHECK(abi::dirent_size(d.namelen) <= c.reply_size - at);
      entries.emplace_back(std::string(reinterpret_cast<const char*>(c.reply.data()) + at + sizeof(abi::dirent), d.namelen), d.ino);
      offset = d.off;
      at += abi::dirent_size(d.namelen);
    }
    FUZZ_CHECK(entries.size() < 4096);
  }
  abi::release_in rel{};
  rel.fh = fh;
  FUZZ_CHECK(c.call(abi::opcode::releasedir, dir, body_builder{}.put(rel).bytes) == 0);

  std::set<std::string> seen;
  std::uint32_t subdirs = 0;
  for (const auto& [name, ino] : entries) {
    if (name == "." || name == "..") {
      FUZZ_CHECK(seen.insert(name).second);  // each once
      continue;
    }
    FUZZ_CHECK(valid_name(name));
    FUZZ_CHECK(seen.insert(name).second);
    FUZZ_CHECK(c.call(abi::opcode::lookup, dir, body_builder{}.str(name).bytes) == 0);
    const auto e = c.answer<abi::entry_out>();
    FUZZ_CHECK(e.nodeid == ino && e.attr.ino == ino);
    if (S_ISDIR(e.attr.mode)) {
      ++subdirs;
      walk(c, e.nodeid, depth + 1, file_bytes, nodes);
    } else if (S_ISREG(e.attr.mode)) {
      file_bytes[e.nodeid] = e.attr.blocks * 512;
      abi::read_in r{};
      r.size = 64 * 1024;
      FUZZ_CHECK(c.call(abi::opcode::open, e.nodeid, body_builder{}.put(abi::open_in{static_cast<abi::u32>(O_RDONLY), 0}).bytes) == 0);
      r.fh = c.answer<abi::open_out>().fh;
      FUZZ_CHECK(c.call(abi::opcode::read, e.nodeid, body_builder{}.put(r).bytes) == 0);
      FUZZ_CHECK(c.reply_size == std::min<std::uint64_t>(e.attr.size, r.size));
      abi::release_in fr{};
      fr.fh = r.fh;
      FUZZ_CHECK(c.call(abi::opcode::release, e.nodeid, body_builder{}.put(fr).bytes) == 0);
    }
    c.forget(e.nodeid);
  }
  FUZZ_CHECK(c.call(abi::opcode::getattr, dir, body_builder{}.put(abi::getattr_in{}).bytes) == 0);
  FUZZ_CHECK(c.answer<abi::attr_out>().attr.nlink == 2 + subdirs);
}

// Open descriptors of this process (the listing's own included, before and after alike).
int open_fd_count() {
  int n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  FUZZ_CHECK(d != nullptr);
  while (::readdir(d)) ++n;
  ::closedir(d);
  return n;
}

// Writes `bytes` into the FIFO (non-blocking: waits for room while the channel drains it).
template <typename WhileWaiting>
void write_fifo(std::string_view bytes, WhileWaiting&& while_waiting) {
  const int fd = ::open(fifo_path().c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  FUZZ_CHECK(fd >= 0);
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n > 0) {
      bytes.remove_prefix(static_cast<std::size_t>(n));
      continue;
    }
    FUZZ_CHECK(n < 0 && errno == EAGAIN);
    while_waiting();
    pollfd p{fd, POLLOUT, 0};
    FUZZ_CHECK(::poll(&p, 1, 10000) == 1);  // the channel reads on
  }
  ::close(fd);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const bool verbose = std::getenv("FUZZ_VERBOSE") != nullptr;
  shared_ring();
  fifo_path();
  const int fds_before = open_fd_count();
  {
    reader in(data, size);
    const auto flags = in.get<std::uint8_t>();
    const std::size_t reply_len = in.get<std::uint8_t>() * 64u;
    const auto rest = in.take(max_fifo_bytes);
    const std::string_view bytes(reinterpret_cast<const char*>(rest.data()), rest.size());

    auto fs = std::make_unique<memfs>(size_limit);
    kernel_side kernel((flags & 2) != 0, reply_len);
    client c{*fs};
    const std::vector<std::string> expected = lines_of(bytes);

    // memfs's log line per command ("memfs control: LINE: RESULT", LINE up to a NUL) is how this
    // run sees the commands done: stderr (the FILE*) is a pipe's, read here, while the channel runs.
    int log_pipe[2];
    FUZZ_CHECK(::pipe2(log_pipe, O_CLOEXEC) == 0);
    FILE* log = ::fdopen(log_pipe[1], "w");
    FUZZ_CHECK(log != nullptr);
    std::setvbuf(log, nullptr, _IOLBF, 0);
    FILE* const real_stderr = stderr;
    stderr = log;  // before the channel's thread exists
    std::string said;
    auto read_log = [&](int timeout_ms) {
      pollfd p{log_pipe[0], POLLIN, 0};
      if (::poll(&p, 1, timeout_ms) != 1) return false;
      char buf[4096];
      const ssize_t n = ::read(log_pipe[0], buf, sizeof buf);
      if (n <= 0) return false;
      said.append(buf, static_cast<std::size_t>(n));
      return true;
    };
    auto said_lines = [&] { return static_cast<std::size_t>(std::count(said.begin(), said.end(), '\n')); };

    fs->set_control_path(fifo_path());
    fs->init(cf::connection(kernel.device_fd(), 0, (flags & 1) ? 45 : 31, 1 << 20, kernel.replies()));  // starts the channel
    populate(c);
    write_fifo(bytes, [&] { read_log(0); });
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (said_lines() < expected.size() && std::chrono::steady_clock::now() < until) read_log(100);
    const bool all = said_lines() >= expected.size();

    std::map<std::uint64_t, std::uint64_t> file_bytes;
    int nodes = 0;
    if (all) walk(c, cf::root_ino, 0, file_bytes, nodes);
    std::uint64_t held = 0;
    for (const auto& [ino, b] : file_bytes) held += b;
    abi::statfs_out st{};
    if (all) {
      FUZZ_CHECK(c.call(abi::opcode::statfs, cf::root_ino, {}) == 0);
      st = c.answer<abi::statfs_out>();
    }
    fs.reset();  // the channel's thread ends first
    stderr = real_stderr;
    std::fclose(log);
    while (read_log(0)) {
    }
    ::close(log_pipe[0]);
    if (verbose) std::fprintf(stderr, "%s", said.c_str());
    FUZZ_CHECK(all);  // the channel handed on every complete line within 10 s
    // Exactly the input's complete lines, in order, each once.
    std::vector<std::string_view> logged;
    for (std::string_view rest = said; !rest.empty();) {
      const std::size_t nl = rest.find('\n');
      logged.push_back(rest.substr(0, nl));
      rest.remove_prefix(nl + 1);
    }
    FUZZ_CHECK(logged.size() == expected.size());
    for (std::size_t i = 0; i < logged.size(); ++i) {
      const std::string line = "memfs control: " + expected[i].substr(0, expected[i].find('\0')) + ": ";
      FUZZ_CHECK(logged[i].substr(0, line.size()) == line);
      // rm and mv say what they did, or why not (never "ok" for nothing done).
      const std::string_view result = logged[i].substr(std::min(line.size(), logged[i].size()));
      std::string_view cmd = expected[i];
      cmd.remove_prefix(std::min(cmd.find_first_not_of(' '), cmd.size()));
      cmd = cmd.substr(0, cmd.find(' '));
      if (cmd == "rm") FUZZ_CHECK(result.rfind("unlinked, ", 0) == 0 || result.rfind("error ", 0) == 0);
      if (cmd == "mv") FUZZ_CHECK(result.rfind("renamed, ", 0) == 0 || result.rfind("error ", 0) == 0);
    }
    FUZZ_CHECK((st.st.blocks - st.st.bfree) * 4096 == held);
  }
  FUZZ_CHECK(open_fd_count() == fds_before);
  return 0;
}
