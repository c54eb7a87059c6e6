// A filesystem written outside corofuse's tree, the way a user starts one: /greeting, read-only.
// tests/consumers/run builds it against an installed corofuse with a plain compiler, pkg-config
// and CMake, mounts each build and reads the file back.
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <string_view>

#include <corofuse/corofuse.hpp>

namespace cf = corofuse;

class greeting_fs {
 public:
  static constexpr cf::ino greeting_ino = 2;
  static constexpr std::string_view text = "hello from outside\n";

  cf::result<cf::entry> lookup(cf::context&, cf::ino parent, std::string_view name) {
    if (parent != cf::root_ino || name != "greeting") return cf::error(ENOENT);
    cf::entry e;
    e.ino = greeting_ino;
    e.attr = stat_of(greeting_ino);
    return e;
  }

  cf::result<cf::attr> getattr(cf::context&, cf::ino i, const cf::file_info*) {
    if (i != cf::root_ino && i != greeting_ino) return cf::error(ENOENT);
    return cf::attr{stat_of(i)};
  }

  cf::result<cf::open_reply> open(cf::context&, cf::ino i, int) {
    if (i != greeting_ino) return cf::error(EISDIR);
    return cf::open_reply{};
  }

  cf::result<std::size_t> read(cf::context&, cf::ino, cf::file_info&, std::span<std::byte> out, off_t off) {
    if (off < 0 || static_cast<std::size_t>(off) >= text.size()) return std::size_t{0};
    const std::size_t n = std::min(out.size(), text.size() - static_cast<std::size_t>(off));
    std::copy_n(reinterpret_cast<const std::byte*>(text.data()) + off, n, out.data());
    return n;
  }

 private:
  static struct stat stat_of(cf::ino i) {
    struct stat st {};
    st.st_ino = i;
    st.st_nlink = i == cf::root_ino ? 2 : 1;
    st.st_mode = i == cf::root_ino ? (S_IFDIR | 0755) : (S_IFREG | 0444);
    st.st_size = i == cf::root_ino ? 0 : static_cast<off_t>(text.size());
    return st;
  }
};

int main(int argc, char** argv) {
  greeting_fs fs;
  return cf::session::main(fs, argc, argv, "greeting_fs: one read-only file, /greeting");
}
