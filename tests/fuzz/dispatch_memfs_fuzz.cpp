// libFuzzer target: sequences of requests dispatched into memfs over the in-memory transport; built
// with FUZZ_MEMTREE, into memtree (the same behaviour on the node layer, corofuse/node.hpp).
//
// The input is a sequence of records (fuzz_input.hpp: dispatch_record): an opcode, a delivery
// mode, a nodeid selector and the request body (per-op struct and arguments, as the kernel lays
// them out). Each record becomes a request, delivered as a /dev/fuse message (reply into its own
// buffer) or as an io_uring entry (reply written over the payload the request came in, as
// transport/uring.hpp does), parsed, dispatched into one memfs (16 MiB size limit) with
// io::sync_wait on an io::ring, and the reply checked: an errno in range, the reply within its
// buffer, the size each opcode's reply must have, entries with a nodeid and a file type, directory
// listings made of whole records within the size asked, statfs's free space within its total.
// Nodeids from entry replies are remembered, so later records can name real nodes (and nodeid
// fields inside op structs below 32 are mapped to them too).
//
// What memfs would legitimately spend much time on is capped: COPY_FILE_RANGE lengths (1 MiB).
// Everything else is bounded by the size limit or the reply buffer.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

// The filesystem itself, its main renamed (the example's source is not changed).
#define main example_main
#ifdef FUZZ_MEMTREE
#include "examples/memtree/memtree.cpp"
#else
#include "examples/memfs/memfs.cpp"
#endif
#undef main

#include "corofuse/fs/dispatch.hpp"
#include "corofuse/io/sync_wait.hpp"
#include "tests/fuzz/fuzz_input.hpp"

namespace abi = corofuse::abi;
namespace io = corofuse::io;
namespace proto = corofuse::proto;
using corofuse::fuzz::reader;

namespace {

constexpr std::uint64_t size_limit = 16u << 20;
constexpr std::size_t buffer_size = 64 * 1024 + 4096;  // a ring entry's payload; a /dev/fuse reply buffer
constexpr std::size_t max_records = 512;

io::ring& shared_ring() {
  static io::ring r;  // one per process: setting up a ring per input would dominate the run time
  return r;
}

template <typename T>
T field(const std::vector<std::byte>& body, std::size_t at = 0) {
  T v{};
  if (body.size() >= at + sizeof(T)) std::memcpy(&v, body.data() + at, sizeof v);
  return v;
}
template <typename T>
void set_field(std::vector<std::byte>& body, std::size_t at, const T& v) {
  if (body.size() >= at + sizeof(T)) std::memcpy(body.data() + at, &v, sizeof v);
}

struct known_nodes {
  std::vector<std::uint64_t> ids{cf::root_ino};
  std::size_t next = 1;
  std::uint64_t pick(std::uint64_t i) const { return ids[i % ids.size()]; }
  void add(std::uint64_t id) {
    for (auto k : ids)
      if (k == id) return;
    if (ids.size() < 32) {
      ids.push_back(id);
    } else {
      ids[next] = id;  // the root (index 0) stays
      next = next % 31 + 1;
    }
  }
  // A nodeid inside an op struct: small values name known nodes.
  std::uint64_t map(std::uint64_t v) const { return v < 32 ? pick(v) : v; }
};

// Steers the op struct toward what the kernel would send, where the raw bytes would only make
// memfs do large, legitimate work, and maps small nodeids to known nodes.
void adjust(abi::opcode op, std::vector<std::byte>& body, const known_nodes& known) {
  using abi::opcode;
  switch (op) {
    case opcode::link:
      set_field(body, offsetof(abi::link_in, oldnodeid), known.map(field<std::uint64_t>(body, offsetof(abi::link_in, oldnodeid))));
      break;
    case opcode::rename:
      set_field(body, offsetof(abi::rename_in, newdir), known.map(field<std::uint64_t>(body, offsetof(abi::rename_in, newdir))));
      break;
    case opcode::rename2:
      set_field(body, offsetof(abi::rename2_in, newdir), known.map(field<std::uint64_t>(body, offsetof(abi::rename2_in, newdir))));
      break;
    case opcode::copy_file_range:
    case opcode::copy_file_range_64: {
      set_field(body, offsetof(abi::copy_file_range_in, nodeid_out),
                known.map(field<std::uint64_t>(body, offsetof(abi::copy_file_range_in, nodeid_out))));
      const auto len = field<std::uint64_t>(body, offsetof(abi::copy_file_range_in, len));
      set_field(body, offsetof(abi::copy_file_range_in, len), std::min<std::uint64_t>(len, 1u << 20));
      break;
    }
    case opcode::batch_forget:
      for (std::size_t at = sizeof(abi::batch_forget_in); at + sizeof(abi::forget_one) <= body.size(); at += sizeof(abi::forget_one))
        set_field(body, at + offsetof(abi::forget_one, nodeid),
                  known.map(field<std::uint64_t>(body, at + offsetof(abi::forget_one, nodeid))));
      break;
    default: break;
  }
}

template <typename T>
T reply_as(proto::bytes reply) {
  T v{};
  FUZZ_CHECK(reply.size() >= sizeof(T));
  std::memcpy(&v, reply.data(), sizeof v);
  return v;
}

void check_entry(const abi::entry_out& e, known_nodes& known) {
  FUZZ_CHECK(e.nodeid != 0);
  FUZZ_CHECK(e.attr.ino == e.nodeid);
  FUZZ_CHECK((e.attr.mode & S_IFMT) != 0);
  known.add(e.nodeid);
}

// READDIR / READDIRPLUS: whole records, each name within it, nothing past the size asked.
void check_listing(proto::bytes reply, std::size_t asked, bool plus, known_nodes& known) {
  FUZZ_CHECK(reply.size() <= asked);
  std::size_t at = 0;
  while (at < reply.size()) {
    abi::dirent d{};
    std::size_t record;
    if (plus) {
      FUZZ_CHECK(reply.size() - at >= sizeof(abi::direntplus));
      abi::direntplus p;
      std::memcpy(&p, reply.data() + at, sizeof p);
      d = p.dirent;
      record = abi::direntplus_size(d.namelen);
      if (p.entry.nodeid) check_entry(p.entry, known);
    } else {
      FUZZ_CHECK(reply.size() - at >= sizeof(abi::dirent));
      std::memcpy(&d, reply.data() + at, sizeof d);
      record = abi::dirent_size(d.namelen);
    }
    FUZZ_CHECK(d.namelen <= 255);
    FUZZ_CHECK(d.ino != 0);
    FUZZ_CHECK(record <= reply.size() - at);
    at += record;
  }
}

void check_reply(abi::opcode op, const proto::request& req, const cf::reply_status& st, proto::bytes reply, std::uint64_t nodeid,
                 known_nodes& known) {
  using abi::opcode;
  FUZZ_CHECK(st.error >= 0 && st.error < 4096);
  FUZZ_CHECK(!st.read_from_file);  // memfs answers READ from memory
  if (st.no_reply) FUZZ_CHECK(op == opcode::forget || op == opcode::batch_forget || op == opcode::interrupt || op == opcode::notify_reply);
  if (st.error || st.no_reply) return;
  switch (op) {
    case opcode::lookup:
    case opcode::mknod:
    case opcode::mkdir:
    case opcode::symlink:
    case opcode::link: {
      FUZZ_CHECK(reply.size() == sizeof(abi::entry_out));
      const auto e = reply_as<abi::entry_out>(reply);
      check_entry(e, known);
      if (op == opcode::mkdir) FUZZ_CHECK(S_ISDIR(e.attr.mode));
      if (op == opcode::symlink) FUZZ_CHECK(S_ISLNK(e.attr.mode));
      break;
    }
    case opcode::create:
    case opcode::tmpfile:
      FUZZ_CHECK(reply.size() == sizeof(abi::entry_out) + sizeof(abi::open_out));
      check_entry(reply_as<abi::entry_out>(reply), known);
      FUZZ_CHECK(S_ISREG(reply_as<abi::entry_out>(reply).attr.mode));
      break;
    case opcode::getattr:
    case opcode::setattr:
      FUZZ_CHECK(reply.size() == sizeof(abi::attr_out));
      FUZZ_CHECK(reply_as<abi::attr_out>(reply).attr.ino == nodeid);
      break;
    case opcode::open:
    case opcode::opendir: FUZZ_CHECK(reply.size() == sizeof(abi::open_out)); break;
    case opcode::read: FUZZ_CHECK(reply.size() <= req.op<abi::read_in>().size); break;
    case opcode::write:
      FUZZ_CHECK(reply.size() == sizeof(abi::write_out));
      FUZZ_CHECK(reply_as<abi::write_out>(reply).size <= req.op<abi::write_in>().size);
      break;
    case opcode::statfs: {
      FUZZ_CHECK(reply.size() == sizeof(abi::statfs_out));
      const auto s = reply_as<abi::statfs_out>(reply);
      FUZZ_CHECK(s.st.bfree <= s.st.blocks && s.st.bavail <= s.st.blocks);
      FUZZ_CHECK(s.st.blocks == size_limit / 4096);
      break;
    }
    case opcode::readdir:
    case opcode::readdirplus: check_listing(reply, req.op<abi::read_in>().size, op == opcode::readdirplus, known); break;
    case opcode::getxattr:
    case opcode::listxattr: {
      const auto size = req.op<abi::getxattr_in>().size;
      if (size == 0) {
        FUZZ_CHECK(reply.size() == sizeof(abi::getxattr_out));
      } else {
        FUZZ_CHECK(reply.size() <= size);
        if (op == opcode::listxattr && !reply.empty()) FUZZ_CHECK(reply.back() == std::byte{0});
      }
      break;
    }
    case opcode::lseek: FUZZ_CHECK(reply.size() == sizeof(abi::lseek_out)); break;
    case opcode::copy_file_range:
      FUZZ_CHECK(reply.size() == sizeof(abi::write_out));
      FUZZ_CHECK(reply_as<abi::write_out>(reply).size <= req.op<abi::copy_file_range_in>().len);
      break;
    case opcode::copy_file_range_64:
      FUZZ_CHECK(reply.size() == sizeof(abi::copy_file_range_out));
      FUZZ_CHECK(reply_as<abi::copy_file_range_out>(reply).bytes_copied <= req.op<abi::copy_file_range_in>().len);
      break;
    case opcode::statx: FUZZ_CHECK(reply.size() == sizeof(abi::statx_out)); break;
    case opcode::readlink:
      FUZZ_CHECK(reply.size() < 4096);  // PATH_MAX: symlink() refuses longer targets
      break;
    case opcode::unlink:
    case opcode::rmdir:
    case opcode::rename:
    case opcode::rename2:
    case opcode::release:
    case opcode::releasedir:
    case opcode::flush:
    case opcode::fsync:
    case opcode::fsyncdir:
    case opcode::setxattr:
    case opcode::removexattr:
    case opcode::fallocate:
    case opcode::destroy: FUZZ_CHECK(reply.empty()); break;
    default: break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  io::ring& ring = shared_ring();
  static const bool verbose = std::getenv("FUZZ_VERBOSE") != nullptr;  // each request and its answer
#ifdef FUZZ_MEMTREE
  mount_state state(size_limit);
  cf::node::tree<mem_node> fs(std::make_shared<mem_node>(cf::node::made{S_IFDIR | 0755, 0, 0, 0, {}, {}}, state));
#else
  memfs fs(size_limit);
#endif
  cf::cache_defaults defaults;
  cf::context ctx{&ring, defaults};
  known_nodes known;
  // Exact-size heap buffers: a byte past them is a heap overflow ASan reports.
  std::unique_ptr<std::byte[]> payload_store(new std::byte[buffer_size]);
  std::unique_ptr<std::byte[]> reply_store(new std::byte[buffer_size]);
  const std::span<std::byte> payload(payload_store.get(), buffer_size);
  const std::span<std::byte> reply_space(reply_store.get(), buffer_size);

  reader in(data, size);
  for (std::size_t n = 0; n < max_records && !in.empty(); ++n) {
    const auto op = static_cast<abi::opcode>(in.get<std::uint8_t>() % 64);
    const auto mode = in.get<std::uint8_t>();
    const auto node = in.get<std::uint8_t>();
    const auto len = in.get<std::uint16_t>();
    std::uint64_t nodeid = node < 32 ? known.pick(node) : node - 32u;
    if (node == 255) nodeid = in.get<std::uint64_t>();
    auto raw = in.take(len);
    std::vector<std::byte> body(reinterpret_cast<const std::byte*>(raw.data()),
                                reinterpret_cast<const std::byte*>(raw.data()) + raw.size());
    adjust(op, body, known);
    const std::size_t ext = ((mode >> 1) & 3) * 8;
    const std::vector<std::byte> msg = corofuse::fuzz::make_message(op, nodeid, body, ext, (mode & 8) ? 0 : 1000, 100);

    proto::request req;
    proto::parse_error pe;
    proto::reply_buffer out;
    abi::uring_req_header hdr{};  // the request's op struct lives here on the ring: kept to the end
    if (mode & 1) {
      // The ring: header buffer and payload; the reply goes over the payload.
      std::memcpy(hdr.in_out, msg.data(), sizeof(abi::in_header));
      const std::size_t op_size = std::min(proto::layout_of(op).op_size, body.size());
      if (op_size) std::memcpy(hdr.op_in, body.data(), std::min(op_size, abi::uring_op_in_out_size));
      const std::size_t args = msg.size() - sizeof(abi::in_header) - op_size;
      std::memset(payload.data(), 0xa5, payload.size());  // stale bytes of an "earlier request"
      std::memcpy(payload.data(), msg.data() + sizeof(abi::in_header) + op_size, std::min(args, payload.size()));
      hdr.ring_ent_in_out.payload_sz = static_cast<std::uint32_t>(args);
      pe = proto::parse_ring_entry(hdr, payload, payload.size(), req);
      out = proto::reply_buffer(payload);
    } else {
      pe = proto::parse_message(msg, req);
      out = proto::reply_buffer(reply_space);
    }
    if (pe != proto::parse_error::none) {
      if (verbose) std::fprintf(stderr, "  %s: %s\n", std::string(abi::opcode_name(op)).c_str(), std::string(proto::describe(pe)).c_str());
      FUZZ_CHECK(proto::errno_for(pe) == EINVAL || proto::errno_for(pe) == ENOSYS);
      continue;
    }
    const cf::reply_status st = io::sync_wait(ring, cf::dispatch(fs, ctx, req, out));
    if (verbose)
      std::fprintf(stderr, "  %s node %llu (%s): error %d, %zu bytes%s\n", std::string(abi::opcode_name(op)).c_str(),
                   static_cast<unsigned long long>(nodeid), (mode & 1) ? "ring" : "dev", st.error, out.size(),
                   st.no_reply ? ", no reply" : "");
    FUZZ_CHECK(out.size() <= out.capacity());
    check_reply(op, req, st, out.written(), nodeid, known);
  }
  return 0;
}
