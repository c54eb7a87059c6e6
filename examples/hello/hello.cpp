// hello: the smallest useful corofuse filesystem, on the node layer (corofuse/node.hpp).
//   /hello   read-only, "Hello, World!\n"
//   /notes   readable and writable, kept in memory (up to 1 MiB)
// The tree keeps the names, node ids, lookup counts, attributes and the listing; a file only says
// how its bytes are read and written. Requests arrive on every CPU's queue at once, so each file
// guards its bytes with a mutex of its own.
#include <cstring>
#include <mutex>

#include "corofuse/corofuse.hpp"

namespace cf = corofuse;

struct file : cf::node::inode<file> {
  explicit file(mode_t mode, std::string_view text = {}, std::size_t limit = 0) : inode(mode), data(text), limit(limit) {}

  off_t size() const {
    std::lock_guard lock(mutex);
    return static_cast<off_t>(data.size());
  }
  cf::result<cf::open_reply> open(cf::context&, int flags) {  // root may write anything: say no ourselves
    if (limit == 0 && (flags & (O_ACCMODE | O_TRUNC)) != O_RDONLY) return cf::error(EACCES);
    return cf::open_reply{};
  }
  cf::result<std::size_t> read(cf::context&, cf::file_info&, std::span<std::byte> out, off_t off) {
    std::lock_guard lock(mutex);
    const std::size_t from = std::min(static_cast<std::size_t>(std::max<off_t>(off, 0)), data.size());
    const std::size_t n = std::min(out.size(), data.size() - from);
    std::memcpy(out.data(), data.data() + from, n);
    return n;
  }
  cf::result<std::size_t> write(cf::context&, cf::file_info& fi, std::span<const std::byte> in, off_t off) {
    std::lock_guard lock(mutex);
    const std::size_t at = (fi.flags & O_APPEND) ? data.size() : static_cast<std::size_t>(std::max<off_t>(off, 0));
    if (at + in.size() > limit) return cf::error(EFBIG);
    if (at + in.size() > data.size()) data.resize(at + in.size());
    std::memcpy(data.data() + at, in.data(), in.size());
    return in.size();
  }
  cf::result<> truncate(cf::context&, off_t size) {
    std::lock_guard lock(mutex);
    if (static_cast<std::size_t>(size) > limit) return cf::error(limit ? EFBIG : EPERM);
    data.resize(static_cast<std::size_t>(size));
    return cf::ok();
  }

  mutable std::mutex mutex;
  std::string data;
  const std::size_t limit;  // the largest size a write may reach; 0: read-only
};

int main(int argc, char** argv) {
  cf::node::tree<file> fs(std::make_shared<file>(S_IFDIR | 0755));
  (void)fs.add(fs.root(), "hello", std::make_shared<file>(S_IFREG | 0444, "Hello, World!\n"));
  (void)fs.add(fs.root(), "notes", std::make_shared<file>(S_IFREG | 0644, "", 1 << 20));
  return cf::session::main(fs, argc, argv,
                           "hello: a corofuse example filesystem with a read-only /hello and a writable in-memory /notes (up to 1 MiB)");
}
