// libFuzzer target: arbitrary bytes into the request parser, in both arrival forms.
//
// The input is a prefix (fuzz_input.hpp: parser_prefix_size bytes) and a /dev/fuse message. Every
// input is parsed with both layout options (setxattr_ext on and off):
//   - as a /dev/fuse message (parse_message);
//   - as an io_uring entry (parse_ring_entry): the message's in_header in the header buffer's
//     in_out, the next op_size bytes in op_in, the rest as the payload, with the natural payload_sz
//     and (prefix flag) the prefix's explicit one, a payload capacity possibly cut short; then
//     again flagged zero-copy, with and without a window of the prefix's size.
// After each successful parse every view is read byte by byte (ASan sees any out-of-bounds view)
// and checked to lie where it must: the op struct, arguments and extensions inside the buffer they
// came from, disjoint, the names NUL-free and inside the arguments, the data inside the arguments
// (or the zero-copy window). A message that parses must parse the same way as a ring entry.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string_view>
#include <vector>

#include "corofuse/abi.hpp"
#include "corofuse/proto/op_layout.hpp"
#include "corofuse/proto/request.hpp"
#include "tests/fuzz/fuzz_input.hpp"

namespace abi = corofuse::abi;
namespace proto = corofuse::proto;
using corofuse::fuzz::reader;

namespace {

volatile std::uint8_t sink;

std::uint8_t sum(proto::bytes b) {
  std::uint8_t s = 0;
  for (std::byte x : b) s = static_cast<std::uint8_t>(s + static_cast<std::uint8_t>(x));
  return s;
}
std::uint8_t sum(std::string_view v) { return sum(proto::bytes(reinterpret_cast<const std::byte*>(v.data()), v.size())); }

bool inside(proto::bytes part, const std::byte* lo, const std::byte* hi) {
  if (part.empty()) return true;
  return part.data() >= lo && part.data() + part.size() <= hi;
}
bool inside(std::string_view v, proto::bytes whole) {
  return inside(proto::bytes(reinterpret_cast<const std::byte*>(v.data()), v.size()), whole.data(), whole.data() + whole.size());
}
bool inside(proto::bytes part, proto::bytes whole) { return inside(part, whole.data(), whole.data() + whole.size()); }
bool disjoint(proto::bytes a, proto::bytes b) {
  if (a.empty() || b.empty()) return true;
  return a.data() + a.size() <= b.data() || b.data() + b.size() <= a.data();
}

// op<T>() for the opcode's own struct: copies what the parser said is there.
template <typename T>
std::uint8_t op_sum(const proto::request& r) {
  T v = r.op<T>();
  return sum(proto::bytes(reinterpret_cast<const std::byte*>(&v), sizeof v));
}

std::uint8_t touch_op(const proto::request& r) {
  using abi::opcode;
  switch (r.opcode()) {
    case opcode::forget: return op_sum<abi::forget_in>(r);
    case opcode::getattr: return op_sum<abi::getattr_in>(r);
    case opcode::setattr: return op_sum<abi::setattr_in>(r);
    case opcode::mknod: return op_sum<abi::mknod_in>(r);
    case opcode::mkdir: return op_sum<abi::mkdir_in>(r);
    case opcode::rename: return op_sum<abi::rename_in>(r);
    case opcode::rename2: return op_sum<abi::rename2_in>(r);
    case opcode::link: return op_sum<abi::link_in>(r);
    case opcode::open:
    case opcode::opendir: return op_sum<abi::open_in>(r);
    case opcode::read:
    case opcode::readdir:
    case opcode::readdirplus: return op_sum<abi::read_in>(r);
    case opcode::write: return op_sum<abi::write_in>(r);
    case opcode::release:
    case opcode::releasedir: return op_sum<abi::release_in>(r);
    case opcode::fsync:
    case opcode::fsyncdir: return op_sum<abi::fsync_in>(r);
    case opcode::setxattr: return op_sum<abi::setxattr_in>(r);
    case opcode::getxattr:
    case opcode::listxattr: return op_sum<abi::getxattr_in>(r);
    case opcode::flush: return op_sum<abi::flush_in>(r);
    case opcode::init: return op_sum<abi::init_in>(r);
    case opcode::getlk:
    case opcode::setlk:
    case opcode::setlkw: return op_sum<abi::lk_in>(r);
    case opcode::access: return op_sum<abi::access_in>(r);
    case opcode::create:
    case opcode::tmpfile: return op_sum<abi::create_in>(r);
    case opcode::interrupt: return op_sum<abi::interrupt_in>(r);
    case opcode::bmap: return op_sum<abi::bmap_in>(r);
    case opcode::ioctl: return op_sum<abi::ioctl_in>(r);
    case opcode::poll: return op_sum<abi::poll_in>(r);
    case opcode::notify_reply: return op_sum<abi::notify_retrieve_in>(r);
    case opcode::batch_forget: return op_sum<abi::batch_forget_in>(r);
    case opcode::fallocate: return op_sum<abi::fallocate_in>(r);
    case opcode::lseek: return op_sum<abi::lseek_in>(r);
    case opcode::copy_file_range:
    case opcode::copy_file_range_64: return op_sum<abi::copy_file_range_in>(r);
    case opcode::setupmapping: return op_sum<abi::setupmapping_in>(r);
    case opcode::removemapping: return op_sum<abi::removemapping_in>(r);
    case opcode::syncfs: return op_sum<abi::syncfs_in>(r);
    case opcode::statx: return op_sum<abi::statx_in>(r);
    default: return 0;
  }
}

// Reads every view and checks where the views point. `args_area` is where arguments and
// extensions must lie (the message body, or the payload's first payload_sz bytes); `window` the
// zero-copy window (may be empty).
void check_views(const proto::request& r, proto::bytes op_area, proto::bytes args_area, proto::bytes window, bool zero_copy) {
  sink = static_cast<std::uint8_t>(sum(r.op_bytes()) + sum(r.args()) + sum(r.extensions()) + sum(r.name()) + sum(r.second_name()) +
                                   sum(r.data()) + touch_op(r));
  const proto::op_layout l = proto::layout_of(r.opcode());
  FUZZ_CHECK(l.known);
  FUZZ_CHECK(inside(r.op_bytes(), op_area));
  FUZZ_CHECK(inside(r.args(), args_area));
  FUZZ_CHECK(inside(r.extensions(), args_area));
  FUZZ_CHECK(disjoint(r.args(), r.extensions()));
  FUZZ_CHECK(r.extensions().size() == std::size_t{r.header().total_extlen} * 8);
  FUZZ_CHECK(r.name().find('\0') == std::string_view::npos);
  FUZZ_CHECK(r.second_name().find('\0') == std::string_view::npos);
  FUZZ_CHECK(inside(r.name(), r.args()));
  FUZZ_CHECK(inside(r.second_name(), r.args()));
  if (zero_copy) {
    FUZZ_CHECK(r.opcode() == abi::opcode::read || r.opcode() == abi::opcode::write);
    FUZZ_CHECK(r.args().empty());
    FUZZ_CHECK(inside(r.data(), window));
    if (r.opcode() == abi::opcode::write) FUZZ_CHECK(r.data().size() == r.op<abi::write_in>().size);
  } else {
    FUZZ_CHECK(inside(r.data(), r.args()));
  }
  // The sizes the op struct declares are the sizes of the views the handlers get.
  if (r.opcode() == abi::opcode::write) FUZZ_CHECK(r.data().size() == r.op<abi::write_in>().size);
  if (r.opcode() == abi::opcode::ioctl) FUZZ_CHECK(r.data().size() == r.op<abi::ioctl_in>().in_size);
  if (r.opcode() == abi::opcode::setxattr) FUZZ_CHECK(r.data().size() == r.op<abi::setxattr_in>().size);
  if (r.opcode() == abi::opcode::batch_forget)
    FUZZ_CHECK(r.data().size() == std::size_t{r.op<abi::batch_forget_in>().count} * sizeof(abi::forget_one));
}

bool same(proto::bytes a, proto::bytes b) { return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size()) == 0); }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  reader in(data, size);
  const auto flags = in.get<std::uint8_t>();
  const auto explicit_payload_sz = in.get<std::uint32_t>();
  const auto window_size = in.get<std::uint16_t>();
  const auto capacity_cut = in.get<std::uint8_t>();
  auto rest = in.take(in.left());
  // An exact-size heap copy: one byte past it is a heap overflow ASan reports.
  std::unique_ptr<std::byte[]> msg_store(new std::byte[rest.size() + 1]);
  std::memcpy(msg_store.get(), rest.data(), rest.size());
  const proto::bytes msg(msg_store.get(), rest.size());
  std::unique_ptr<std::byte[]> window_store(new std::byte[window_size + 1]);
  std::memset(window_store.get(), 0x5a, window_size);
  const proto::bytes window(window_store.get(), window_size);

  for (bool ext : {true, false}) {
    proto::layout_options o;
    o.setxattr_ext = ext;

    // /dev/fuse.
    proto::request dev;
    const proto::parse_error dev_err = proto::parse_message(msg, dev, o);
    (void)proto::describe(dev_err);
    FUZZ_CHECK(proto::errno_for(dev_err) == 22 || proto::errno_for(dev_err) == 38);
    if (dev_err == proto::parse_error::none) {
      FUZZ_CHECK(dev.header().len == msg.size());
      check_views(dev, msg.subspan(sizeof(abi::in_header)), msg.subspan(sizeof(abi::in_header)), {}, false);
    }

    // io_uring: header buffer and payload.
    abi::uring_req_header hdr{};
    std::memcpy(hdr.in_out, msg.data(), std::min(msg.size(), sizeof(abi::in_header)));
    abi::in_header h{};
    std::memcpy(&h, hdr.in_out, sizeof h);
    const proto::op_layout l = proto::layout_of(static_cast<abi::opcode>(h.opcode), o);
    const std::size_t op_size = std::min<std::size_t>(l.op_size, abi::uring_op_in_out_size);
    const std::size_t after_header = msg.size() > sizeof(abi::in_header) ? msg.size() - sizeof(abi::in_header) : 0;
    // NOTIFY_REPLY and REMOVEMAPPING have an empty first argument on the ring: their struct leads
    // the payload (the kernel's fuse_set_zero_arg0).
    const auto opc = static_cast<abi::opcode>(h.opcode);
    const bool op_leads_payload = opc == abi::opcode::notify_reply || opc == abi::opcode::removemapping;
    const std::size_t op_bytes = op_leads_payload ? 0 : std::min(op_size, after_header);
    if (op_bytes) std::memcpy(hdr.op_in, msg.data() + sizeof(abi::in_header), op_bytes);
    const std::size_t payload_len = after_header - op_bytes;
    std::unique_ptr<std::byte[]> payload_store(new std::byte[payload_len + 1]);
    if (payload_len) std::memcpy(payload_store.get(), msg.data() + sizeof(abi::in_header) + op_bytes, payload_len);
    const proto::bytes payload(payload_store.get(), payload_len);
    const std::size_t capacity = payload_len - std::min<std::size_t>(capacity_cut, payload_len);

    std::uint32_t sizes[2] = {static_cast<std::uint32_t>(payload_len), explicit_payload_sz};
    for (int s = 0; s < ((flags & 1) ? 2 : 1); ++s) {
      for (int zc = 0; zc < 3; ++zc) {  // 0: copying; 1: zero-copy, no window; 2: zero-copy with the window
        hdr.ring_ent_in_out.flags = zc ? abi::uring_ent_zero_copy : 0;
        std::uint32_t payload_sz = sizes[s];
        // A zero-copy WRITE counts its page bytes in payload_sz.
        if (zc && s == 0 && h.opcode == static_cast<std::uint32_t>(abi::opcode::write)) {
          abi::write_in w{};
          std::memcpy(&w, hdr.op_in, sizeof w);
          payload_sz += w.size;
        }
        hdr.ring_ent_in_out.payload_sz = payload_sz;
        for (std::size_t cap : {payload_len, capacity}) {
          proto::request ring;
          const proto::bytes win = zc == 2 ? window : proto::bytes{};
          const proto::parse_error ring_err = proto::parse_ring_entry(hdr, payload, cap, ring, o, win);
          (void)proto::describe(ring_err);
          if (zc == 1) FUZZ_CHECK(ring_err != proto::parse_error::none);
          if (ring_err != proto::parse_error::none) continue;
          // The arguments and extensions lie in the payload's first payload_sz bytes (less a
          // zero-copy WRITE's page bytes, which are in the window).
          std::size_t used = payload_sz;
          if (zc && ring.opcode() == abi::opcode::write) used -= ring.op<abi::write_in>().size;
          FUZZ_CHECK(used <= payload.size() && used <= cap);
          check_views(ring,
                      op_leads_payload ? payload.first(used)
                                       : proto::bytes(reinterpret_cast<const std::byte*>(hdr.op_in), sizeof hdr.op_in),
                      payload.first(used), win, zc != 0);
          FUZZ_CHECK(ring.op_bytes().size() == l.op_size);
          // Differential: a message that parsed, given as a copying entry with its natural size,
          // parses to the same views (unless it was an old short INIT, whose op struct the ring
          // form cannot have).
          if (zc == 0 && s == 0 && cap == payload_len && dev_err == proto::parse_error::none && dev.op_bytes().size() == l.op_size) {
            FUZZ_CHECK(same(dev.op_bytes(), ring.op_bytes()));
            FUZZ_CHECK(same(dev.args(), ring.args()));
            FUZZ_CHECK(same(dev.extensions(), ring.extensions()));
            FUZZ_CHECK(dev.name() == ring.name());
            FUZZ_CHECK(dev.second_name() == ring.second_name());
            FUZZ_CHECK(same(dev.data(), ring.data()));
          }
        }
      }
    }
    // And the other way: a copying entry with its natural size that fails to parse must fail as a
    // message too (unless the message's own length field is what differs).
    if (dev_err == proto::parse_error::none && dev.op_bytes().size() == l.op_size) {
      hdr.ring_ent_in_out.flags = 0;
      hdr.ring_ent_in_out.payload_sz = static_cast<std::uint32_t>(payload_len);
      proto::request ring;
      FUZZ_CHECK(proto::parse_ring_entry(hdr, payload, payload_len, ring, o) == proto::parse_error::none);
    }
  }
  return 0;
}
