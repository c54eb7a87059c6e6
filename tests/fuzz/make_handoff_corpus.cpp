// Writes the seed corpora of handoff_successor_fuzz, handoff_predecessor_fuzz and control_fuzz:
// each side's well-formed conversation (so coverage starts deep), then variants that take the
// other ways out. The files are checked in under tests/fuzz/corpus/; rerun after changing an
// input format:
//   bazel run //tests/fuzz:make_handoff_corpus -- "$PWD/tests/fuzz/corpus"
#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "corofuse/session/handoff.hpp"
#include "corofuse/session/handoff_server.hpp"
#include "corofuse/transport/uring.hpp"
#include "tests/fuzz/handoff_fuzz_input.hpp"

namespace session = corofuse::session;
namespace hf = corofuse::fuzz::handoff;
using hf::placeholder;
namespace fs = std::filesystem;

namespace {

int files = 0;

void write_file(const fs::path& p, const std::vector<std::uint8_t>& bytes) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!f) {
    std::fprintf(stderr, "make_handoff_corpus: cannot write %s\n", p.c_str());
    std::exit(1);
  }
  ++files;
}

std::vector<std::uint8_t> input(std::uint8_t mode, const std::vector<hf::message>& messages) {
  std::vector<std::uint8_t> out{mode};
  for (const auto& m : messages) hf::append_message(out, m);
  return out;
}

// A writer's message: put_fd(k) in `w` names descriptor kind k (handoff_fuzz_input.hpp).
hf::message msg(const session::handoff_writer& w) {
  std::vector<std::uint8_t> kinds;
  for (int k : w.fds()) kinds.push_back(static_cast<std::uint8_t>(k));
  return hf::blob_message(w, kinds);
}

// ---- the predecessor's messages (handoff_successor) --------------------------------------------
constexpr int memfd_64k = 0 + 10 * 4;  // a memfd of 65536 bytes
constexpr int dev_null = 1, scratch_dir_path = 3, file_rw = 4, dir_ro = 5, link_path = 6, file_path = 7, scratch_dir_ro = 9;

session::handoff_writer offer(bool arena, std::uint64_t address = placeholder(0x20)) {
  session::handoff_writer w;
  w.put(session::handoff_magic);
  w.put<std::uint8_t>(1);
  w.put_string("");
  w.put<std::uint8_t>(arena ? 1 : 0);
  if (arena) {
    w.put<std::uint64_t>(placeholder(0x26));  // queues: this machine's CPUs; depth 1
    w.put<std::uint64_t>(4096);               // payload size
    w.put<std::uint64_t>(address);
    w.put<std::uint64_t>(65536);
    w.put_fd(memfd_64k);
  } else {
    w.put(session::handoff_geometry{});
  }
  return w;
}

enum class nodes { pinned, handles, old_format };

// The STATE: terms, mount, /dev/fuse, the held entries, passthrough's state (four nodes: the
// scratch directory as the root, "file", "dir", "link"; two open files: "file" and a listing).
session::handoff_writer state(bool arena, nodes how = nodes::pinned) {
  session::handoff_writer w;
  w.put(session::handoff_magic);
  session::init_terms t;
  t.kernel_major = 7;
  t.kernel_minor = 45;
  t.minor = 45;
  t.max_write = 1 << 20;
  t.max_pages = 256;
  t.max_readahead = 128 << 10;
  session::put_terms(w, t);
  w.put_string("/mnt/fuzz");
  w.put<std::uint8_t>(0);
  w.put_fd(dev_null);  // /dev/fuse
  if (arena) w.put<std::uint64_t>(placeholder(0x27));
  else w.put<std::uint32_t>(0);
  // passthrough's save_state
  if (how != nodes::old_format) w.put<std::uint64_t>(0xfffffffe'00000002ull);
  w.put<std::uint64_t>(5);  // the next node id
  w.put<std::uint64_t>(4);
  const struct {
    std::uint64_t id;
    unsigned object;
    std::uint32_t type;
    int kind;
  } all[] = {{1, 0, S_IFDIR, scratch_dir_path}, {2, 1, S_IFREG, file_path}, {3, 2, S_IFDIR, dir_ro}, {4, 3, S_IFLNK, link_path}};
  for (const auto& n : all) {
    w.put<std::uint64_t>(n.id);
    w.put<std::uint64_t>(placeholder(n.object));
    w.put<std::uint64_t>(placeholder(0x10 + n.object));
    w.put<std::uint32_t>(n.type);
    w.put<std::uint64_t>(1);                                 // lookups
    w.put<std::int32_t>(0);                                  // backing id
    w.put<std::uint32_t>(0);                                 // backing refs
    const bool pinned = how != nodes::handles || n.id == 1;  // the root is always pinned
    if (how != nodes::old_format) {
      w.put<std::uint8_t>(1);                              // indexed
      w.put<std::uint64_t>(placeholder(0x30 + n.object));  // handle, handle type
      w.put<std::uint8_t>(pinned ? 1 : 0);
    }
    if (pinned) w.put_fd(n.kind);
  }
  w.put<std::uint64_t>(2);  // open file slots
  w.put<std::uint32_t>(1);  // generation
  w.put<std::uint8_t>(1);
  w.put<std::uint64_t>(2);  // "file"
  w.put<std::int32_t>(0);
  w.put<std::uint8_t>(0);
  w.put_fd(file_rw);
  w.put<std::uint32_t>(1);
  w.put<std::uint8_t>(1);
  w.put<std::uint64_t>(0);  // a listing
  w.put<std::int32_t>(0);
  w.put<std::uint8_t>(1);
  w.put_fd(scratch_dir_ro);
  return w;
}

session::handoff_writer go() {
  session::handoff_writer w;
  w.put(session::handoff_magic);
  return w;
}

// ---- the successor's messages (handoff_predecessor) --------------------------------------------
session::handoff_writer hello(std::uint32_t version = session::handoff_version) {
  session::handoff_writer w;
  w.put(session::handoff_magic);
  w.put(version);
  w.put<std::int32_t>(4242);
  return w;
}
session::handoff_writer answer(bool ok, const std::string& why = "") {
  session::handoff_writer w;
  w.put<std::uint8_t>(ok ? 1 : 0);
  w.put_string(why);
  return w;
}

hf::message raw(const session::handoff_writer& w, std::vector<std::uint16_t> pieces, std::uint64_t extra_fds = 0) {
  hf::message m = msg(w);
  m.how = hf::framing::raw;
  m.head_bytes = m.bytes.size();
  m.head_fds = m.fds.size() + extra_fds;
  m.pieces = std::move(pieces);
  return m;
}

// ---- control ------------------------------------------------------------------------------------
std::vector<std::uint8_t> control(std::uint8_t flags, std::uint8_t reply, const std::string& lines) {
  std::vector<std::uint8_t> out{flags, reply};
  out.insert(out.end(), lines.begin(), lines.end());
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_handoff_corpus OUTPUT_DIR (writes OUTPUT_DIR/handoff_successor, handoff_predecessor, control)\n");
    return 2;
  }
  const fs::path root = argv[1];
  const fs::path succ = root / "handoff_successor", pred = root / "handoff_predecessor", ctl = root / "control";
  for (const auto& d : {succ, pred, ctl}) fs::create_directories(d);

  // ---- handoff_successor: mode bit 0 take_over_from only, bit 1 file handles, bit 2 serve after.
  write_file(succ / "valid-no-ring", input(4, {msg(offer(false)), msg(state(false)), msg(go())}));
  write_file(succ / "valid-ring-arena", input(4, {msg(offer(true)), msg(state(true)), msg(go())}));
  write_file(succ / "valid-file-handles", input(2 | 4, {msg(offer(false)), msg(state(false, nodes::handles)), msg(go())}));
  write_file(succ / "valid-old-format", input(4, {msg(offer(false)), msg(state(false, nodes::old_format)), msg(go())}));
  write_file(succ / "valid-no-go", input(4, {msg(offer(false)), msg(state(false))}));
  write_file(succ / "take-over-from-only", input(1, {msg(offer(true)), msg(state(true))}));
  const char* places[] = {"canary", "before-canary", "heap", "stack", "code"};
  for (unsigned i = 0; i < 5; ++i)
    write_file(succ / ("arena-over-" + std::string(places[i])), input(0, {msg(offer(true, placeholder(0x21 + i))), msg(state(true))}));
  {
    session::handoff_writer no;
    no.put(session::handoff_magic);
    no.put<std::uint8_t>(0);
    no.put_string("an earlier handoff has not settled");
    write_file(succ / "offer-refused", input(0, {msg(no)}));
  }
  write_file(succ / "offer-in-pieces", input(0, {raw(offer(true), {7, 1, 30, 1000}), msg(state(true)), msg(go())}));
  write_file(succ / "offer-more-fds-announced", input(0, {raw(offer(true), {1000}, 3), msg(state(true))}));
  {
    hf::message d = msg(offer(false));
    d.how = hf::framing::datagram;
    write_file(succ / "offer-as-datagram", input(0, {d}));
  }
  {
    hf::message stop;
    stop.how = hf::framing::stop;
    write_file(succ / "stop-after-offer", input(0, {msg(offer(false)), stop}));
  }

  // ---- handoff_predecessor: mode % 4 the site's /dev/fuse (0 a pipe, 1 /dev/null, 2 gone).
  const auto valid = std::vector<hf::message>{msg(hello()), msg(answer(true)), msg(answer(true))};
  write_file(pred / "valid", input(0, valid));
  write_file(pred / "valid-dev-null", input(1, valid));
  write_file(pred / "valid-connection-gone", input(2, valid));
  write_file(pred / "not-mapped", input(0, {msg(hello()), msg(answer(false, "cannot map the predecessor's ring memory"))}));
  write_file(pred / "not-ready", input(0, {msg(hello()), msg(answer(true)), msg(answer(false, "restore failed"))}));
  write_file(pred / "no-ready", input(0, {msg(hello()), msg(answer(true))}));
  write_file(pred / "hello-only", input(0, {msg(hello())}));
  write_file(pred / "other-version", input(0, {msg(hello(2)), msg(answer(true)), msg(answer(true))}));
  {
    session::handoff_writer h = hello();
    h.put_fd(memfd_64k);
    h.put_fd(dev_null);
    write_file(pred / "hello-with-descriptors", input(0, {msg(h), msg(answer(true)), msg(answer(true))}));
    write_file(pred / "hello-in-pieces", input(0, {raw(h, {3, 5, 100}), msg(answer(true)), msg(answer(true))}));
  }
  {
    hf::message d = msg(answer(true));
    d.how = hf::framing::datagram;
    write_file(pred / "ready-as-datagram", input(0, {msg(hello()), msg(answer(true)), d}));
  }

  // ---- control: [u8 flags][u8 retrieve reply] then the FIFO's bytes. flags bit 0: protocol 7.45
  // (else 7.31: no epoch); bit 1: RETRIEVE answered (else no reply routing: ENOSYS).
  const char* commands[] = {
      "set a new contents\n",
      "store d/f stored text\n",
      "set-unnotified a quiet\n",
      "rm a\n",
      "rm d\n",
      "mv d/f g\n",
      "mv d d/e/x\n",
      "retrieve d/f\n",
      "epoch\n",
      "frobnicate\n",
      "set missing text\n",
      "mv a d/e/a\n",
      "rm d/e\n",
      "store a \n",
      "mv l d/l2\n",
  };
  int i = 0;
  for (const char* c : commands) write_file(ctl / ("command-" + std::to_string(i++)), control(3, 200, c));
  write_file(ctl / "session",
             control(3, 5,
                     "set a hello\nstore d/f world\nretrieve a\nmv a d/e/b\nmv d/e/b a\nset-unnotified a again\nepoch\nrm d/f\n"
                     "retrieve d/f\nmv d x\nmv x d\nrm l\nnonsense here\n"));
  write_file(ctl / "session-old-protocol", control(0, 0, "epoch\nretrieve a\nset a x\n"));
  write_file(ctl / "no-final-newline", control(3, 1, "set a x\nrm a"));
  write_file(ctl / "empty-lines", control(3, 1, "\n\n  \nset   a    spaced   words\n"));
  std::printf("make_handoff_corpus: %d files in %s\n", files, root.c_str());
  return 0;
}
