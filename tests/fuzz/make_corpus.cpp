// Writes the fuzz targets' seed corpora: one valid request per opcode (and a few variants) for
// request_parser_fuzz, and for dispatch_memfs_fuzz (and dispatch_memtree_fuzz) one record per
// opcode plus request sequences that build a small tree in memfs and use it (both arrival forms). The files are checked in under
// tests/fuzz/corpus/; rerun after changing the input formats:
//   bazel run //tests/fuzz:make_corpus -- "$PWD/tests/fuzz/corpus"
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "corofuse/abi.hpp"
#include "tests/fuzz/fuzz_input.hpp"

namespace abi = corofuse::abi;
namespace fz = corofuse::fuzz;
using abi::opcode;

namespace {

// A valid body (per-op struct and arguments) for each opcode; `a`, `b` are names to use.
std::vector<std::byte> body_for(opcode op, const std::string& a = "a", const std::string& b = "b") {
  fz::body_builder x;
  switch (op) {
    case opcode::lookup:
    case opcode::unlink:
    case opcode::rmdir: x.str(a); break;
    case opcode::forget: x.put(abi::forget_in{1}); break;
    case opcode::getattr: x.put(abi::getattr_in{}); break;
    case opcode::setattr: {
      abi::setattr_in s{};
      s.valid = abi::fattr::size | abi::fattr::mode | abi::fattr::mtime_now;
      s.size = 10000;
      s.mode = 0600;
      x.put(s);
      break;
    }
    case opcode::readlink:
    case opcode::statfs:
    case opcode::destroy: break;
    case opcode::symlink: x.str(a).str("target/" + b); break;
    case opcode::mknod: x.put(abi::mknod_in{S_IFIFO | 0644, 0, 022, 0}).str(a); break;
    case opcode::mkdir: x.put(abi::mkdir_in{0755, 022}).str(a); break;
    case opcode::rename: x.put(abi::rename_in{1}).str(a).str(b); break;
    case opcode::rename2: x.put(abi::rename2_in{1, RENAME_NOREPLACE, 0}).str(a).str(b); break;
    case opcode::link: x.put(abi::link_in{2}).str(a); break;
    case opcode::open:
    case opcode::opendir: x.put(abi::open_in{op == opcode::open ? static_cast<abi::u32>(O_RDWR) : 0u, 0}); break;
    case opcode::read:
    case opcode::readdir:
    case opcode::readdirplus: {
      abi::read_in r{};
      r.size = 4096;
      x.put(r);
      break;
    }
    case opcode::write: {
      abi::write_in w{};
      w.size = 11;
      w.offset = 4090;
      x.put(w).str("hello world", false);
      break;
    }
    case opcode::release:
    case opcode::releasedir: x.put(abi::release_in{}); break;
    case opcode::fsync:
    case opcode::fsyncdir: x.put(abi::fsync_in{}); break;
    case opcode::setxattr: x.put(abi::setxattr_in{3, 0, 0, 0}).str("user." + a).str("abc", false); break;
    case opcode::getxattr: x.put(abi::getxattr_in{64, 0}).str("user." + a); break;
    case opcode::listxattr: x.put(abi::getxattr_in{256, 0}); break;
    case opcode::removexattr: x.str("user." + a); break;
    case opcode::flush: x.put(abi::flush_in{}); break;
    case opcode::init: {
      abi::init_in i{};
      i.major = 7;
      i.minor = 46;
      i.max_readahead = 131072;
      x.put(i);
      break;
    }
    case opcode::getlk:
    case opcode::setlk:
    case opcode::setlkw: x.put(abi::lk_in{}); break;
    case opcode::access: x.put(abi::access_in{R_OK, 0}); break;
    case opcode::create: x.put(abi::create_in{O_RDWR | O_CREAT, 0644, 022, 0}).str(a); break;
    case opcode::tmpfile: x.put(abi::create_in{O_RDWR | O_TMPFILE, 0600, 022, 0}).str("/"); break;
    case opcode::interrupt: x.put(abi::interrupt_in{41}); break;
    case opcode::bmap: x.put(abi::bmap_in{1, 4096, 0}); break;
    case opcode::ioctl: x.put(abi::ioctl_in{0, 0, 0x80086601u, 0, 4, 8}).str("abcd", false); break;
    case opcode::poll: x.put(abi::poll_in{}); break;
    case opcode::notify_reply: {
      abi::notify_retrieve_in n{};
      n.size = 4;
      x.put(n).str("data", false);
      break;
    }
    case opcode::batch_forget: x.put(abi::batch_forget_in{2, 0}).put(abi::forget_one{2, 1}).put(abi::forget_one{3, 1}); break;
    case opcode::fallocate: x.put(abi::fallocate_in{0, 0, 8192, 0, 0}); break;
    case opcode::lseek: x.put(abi::lseek_in{0, 0, SEEK_DATA, 0}); break;
    case opcode::copy_file_range:
    case opcode::copy_file_range_64: {
      abi::copy_file_range_in c{};
      c.nodeid_out = 2;
      c.off_out = 100;
      c.len = 5000;
      x.put(c);
      break;
    }
    case opcode::setupmapping: x.put(abi::setupmapping_in{}); break;
    case opcode::removemapping: x.put(abi::removemapping_in{1}).put(abi::removemapping_one{0, 4096}); break;
    case opcode::syncfs: x.put(abi::syncfs_in{}); break;
    case opcode::statx: {
      abi::statx_in s{};
      s.sx_mask = 0x7ff;
      x.put(s);
      break;
    }
    default: break;
  }
  return x.bytes;
}

const opcode all_opcodes[] = {
    opcode::lookup,       opcode::forget,        opcode::getattr,
    opcode::setattr,      opcode::readlink,      opcode::symlink,
    opcode::mknod,        opcode::mkdir,         opcode::unlink,
    opcode::rmdir,        opcode::rename,        opcode::link,
    opcode::open,         opcode::read,          opcode::write,
    opcode::statfs,       opcode::release,       opcode::fsync,
    opcode::setxattr,     opcode::getxattr,      opcode::listxattr,
    opcode::removexattr,  opcode::flush,         opcode::init,
    opcode::opendir,      opcode::readdir,       opcode::releasedir,
    opcode::fsyncdir,     opcode::getlk,         opcode::setlk,
    opcode::setlkw,       opcode::access,        opcode::create,
    opcode::interrupt,    opcode::bmap,          opcode::destroy,
    opcode::ioctl,        opcode::poll,          opcode::notify_reply,
    opcode::batch_forget, opcode::fallocate,     opcode::readdirplus,
    opcode::rename2,      opcode::lseek,         opcode::copy_file_range,
    opcode::setupmapping, opcode::removemapping, opcode::syncfs,
    opcode::tmpfile,      opcode::statx,         opcode::copy_file_range_64,
};

void write_file(const std::filesystem::path& p, const std::vector<std::uint8_t>& bytes) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!f) {
    std::fprintf(stderr, "make_corpus: cannot write %s\n", p.c_str());
    std::exit(1);
  }
}

// request_parser_fuzz: prefix + message.
std::vector<std::uint8_t> parser_input(const std::vector<std::byte>& msg, std::uint8_t flags = 0, std::uint32_t payload_sz = 0,
                                       std::uint16_t window = 0, std::uint8_t cut = 0) {
  std::vector<std::uint8_t> out(fz::parser_prefix_size);
  out[0] = flags;
  std::memcpy(&out[1], &payload_sz, 4);
  std::memcpy(&out[5], &window, 2);
  out[7] = cut;
  for (std::byte b : msg) out.push_back(static_cast<std::uint8_t>(b));
  return out;
}

std::string name_of(opcode op) { return std::string(abi::opcode_name(op)); }

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr,
                 "usage: make_corpus OUTPUT_DIR (writes OUTPUT_DIR/request_parser, OUTPUT_DIR/dispatch_memfs and "
                 "OUTPUT_DIR/dispatch_memtree)\n");
    return 2;
  }
  namespace fs = std::filesystem;
  const fs::path root = argv[1];
  const fs::path parser = root / "request_parser", dispatch = root / "dispatch_memfs";
  fs::create_directories(parser);
  fs::create_directories(dispatch);
  int files = 0;

  // ---- request_parser ----
  for (opcode op : all_opcodes) {
    write_file(parser / name_of(op), parser_input(fz::make_message(op, 7, body_for(op))));
    ++files;
  }
  // Variants: extensions; the compat SETXATTR layout; an old 16-byte INIT; zero-copy READ and
  // WRITE with a window (the WRITE's data then lives in the window, not the payload).
  write_file(parser / "LOOKUP-extensions", parser_input(fz::make_message(opcode::lookup, 1, body_for(opcode::lookup), 16)));
  {
    fz::body_builder x;
    x.put(abi::getxattr_in{3, 0}).str("user.a").str("abc", false);  // an 8-byte setxattr_in
    write_file(parser / "SETXATTR-compat", parser_input(fz::make_message(opcode::setxattr, 7, x.bytes)));
  }
  {
    auto init = body_for(opcode::init);
    init.resize(16);
    write_file(parser / "INIT-7.35", parser_input(fz::make_message(opcode::init, 0, init)));
  }
  {
    abi::write_in w{};
    w.size = 4096;
    fz::body_builder x;
    x.put(w);
    write_file(parser / "WRITE-zero-copy", parser_input(fz::make_message(opcode::write, 7, x.bytes), 1, 4096, 8192));
    write_file(parser / "READ-zero-copy", parser_input(fz::make_message(opcode::read, 7, body_for(opcode::read)), 1, 0, 4096));
  }
  files += 5;

  // ---- dispatch_memfs ----
  // One record per opcode, at the root.
  for (opcode op : all_opcodes) {
    std::vector<std::uint8_t> in;
    fz::append_record(in, {static_cast<std::uint8_t>(static_cast<std::uint32_t>(op) % 64), 0, 0, body_for(op)});
    write_file(dispatch / name_of(op), in);
    ++files;
  }
  // A session: nodes are named by their index among those seen (0: root, 1: dir "d", 2: file "f").
  auto session = [&](std::uint8_t mode) {
    std::vector<std::uint8_t> in;
    auto rec = [&](opcode op, std::uint8_t node, std::vector<std::byte> body) {
      fz::append_record(in, {static_cast<std::uint8_t>(op), mode, node, std::move(body)});
    };
    rec(opcode::mkdir, 0, body_for(opcode::mkdir, "d"));
    rec(opcode::create, 1, body_for(opcode::create, "f"));
    rec(opcode::write, 2, body_for(opcode::write));
    rec(opcode::read, 2, body_for(opcode::read));
    rec(opcode::setxattr, 2, body_for(opcode::setxattr, "x"));
    rec(opcode::getxattr, 2, body_for(opcode::getxattr, "x"));
    rec(opcode::listxattr, 2, body_for(opcode::listxattr));
    rec(opcode::lseek, 2, body_for(opcode::lseek));
    rec(opcode::fallocate, 2, body_for(opcode::fallocate));
    rec(opcode::copy_file_range, 2, body_for(opcode::copy_file_range));  // nodeid_out 2: the file itself
    rec(opcode::setattr, 2, body_for(opcode::setattr));
    rec(opcode::link, 0, body_for(opcode::link, "hard"));  // oldnodeid 2: the file
    rec(opcode::symlink, 1, body_for(opcode::symlink, "sym"));
    rec(opcode::mknod, 1, body_for(opcode::mknod, "fifo"));
    rec(opcode::opendir, 1, body_for(opcode::opendir));
    rec(opcode::readdir, 1, body_for(opcode::readdir));
    rec(opcode::readdirplus, 1, body_for(opcode::readdirplus));
    rec(opcode::rename, 1, body_for(opcode::rename, "f", "moved"));        // newdir 1: "d" (small nodeids name known nodes)
    rec(opcode::rename2, 1, body_for(opcode::rename2, "moved", "again"));  // newdir 1: "d"
    rec(opcode::lookup, 1, body_for(opcode::lookup, "again"));
    rec(opcode::tmpfile, 1, body_for(opcode::tmpfile));
    rec(opcode::statx, 2, body_for(opcode::statx));
    rec(opcode::statfs, 0, {});
    rec(opcode::unlink, 1, body_for(opcode::unlink, "again"));
    rec(opcode::unlink, 0, body_for(opcode::unlink, "hard"));
    rec(opcode::release, 2, body_for(opcode::release));
    rec(opcode::releasedir, 1, body_for(opcode::releasedir));
    rec(opcode::unlink, 1, body_for(opcode::unlink, "sym"));
    rec(opcode::unlink, 1, body_for(opcode::unlink, "fifo"));
    rec(opcode::rmdir, 0, body_for(opcode::rmdir, "d"));
    rec(opcode::batch_forget, 0, body_for(opcode::batch_forget));
    rec(opcode::forget, 2, body_for(opcode::forget));
    return in;
  };
  write_file(dispatch / "session-dev", session(0));
  write_file(dispatch / "session-ring", session(1));
  write_file(dispatch / "session-ring-root-ext", session(1 | 2 | 8));
  files += 3;
  // dispatch_memtree takes the same records (the same requests, into memtree).
  const fs::path memtree = root / "dispatch_memtree";
  fs::create_directories(memtree);
  for (const auto& f : fs::directory_iterator(dispatch))
    fs::copy_file(f.path(), memtree / f.path().filename(), fs::copy_options::overwrite_existing);
  std::printf("make_corpus: %d files in %s (and the dispatch files again for memtree)\n", files, root.c_str());
  return 0;
}
