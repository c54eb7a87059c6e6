// nullfs: a filesystem that answers from memory and does no work, to measure what the framework
// and the kernel cost by themselves. One directory (the root) with one file, /f, of 64 GiB.
//
// READ replies with as many bytes as asked without writing them: the data is whatever the reply
// buffer held (this is a benchmark, not a filesystem to keep anything in). GETATTR answers a fixed
// stat. Run it with -o attr_timeout=0 to make every stat(2) a GETATTR round trip.
//
// --read-delay-us N makes every READ wait N microseconds before it answers (an io_uring timeout:
// the queue keeps serving meanwhile): a slow backing store, such as a remote one, for a
// passthrough server mounted over this one (bench/run's "slow backing" figures).
#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <span>
#include <string_view>
#include <vector>

#include "corofuse/corofuse.hpp"

namespace cf = corofuse;

class nullfs {
 public:
  static constexpr cf::ino file_ino = 2;
  static constexpr std::uint64_t file_size = std::uint64_t{64} << 30;

  cf::result<cf::entry> lookup(cf::context&, cf::ino parent, std::string_view name) {
    if (parent != cf::root_ino || name != "f") return cf::error(ENOENT);
    cf::entry e;
    e.ino = file_ino;
    e.attr = stat_of(file_ino);
    return e;
  }

  cf::result<cf::attr> getattr(cf::context&, cf::ino i, const cf::file_info*) {
    if (i != cf::root_ino && i != file_ino) return cf::error(ENOENT);
    return cf::attr{stat_of(i)};
  }

  cf::result<cf::open_reply> open(cf::context&, cf::ino i, int) {
    if (i != file_ino) return cf::error(EISDIR);
    return cf::open_reply{};
  }

  explicit nullfs(std::chrono::microseconds read_delay) : read_delay_(read_delay) {}

  cf::task<cf::result<std::size_t>> read(cf::context& c, cf::ino, cf::file_info&, std::span<std::byte> out, off_t off) {
    if (read_delay_.count() > 0) (void)co_await cf::io::timeout(c.ring(), read_delay_);
    if (off < 0 || static_cast<std::uint64_t>(off) >= file_size) co_return std::size_t{0};
    co_return std::min<std::size_t>(out.size(), file_size - static_cast<std::uint64_t>(off));
  }

  cf::result<std::size_t> write(cf::context&, cf::ino, cf::file_info&, std::span<const std::byte> in, off_t) { return in.size(); }

  cf::result<std::span<const cf::dir_entry>> readdir(cf::context&, cf::ino i, cf::file_info&, off_t off) {
    if (i != cf::root_ino) return cf::error(ENOTDIR);
    static constexpr std::array<cf::dir_entry, 3> all = {
        {{".", cf::root_ino, DT_DIR, 1}, {"..", cf::root_ino, DT_DIR, 2}, {"f", file_ino, DT_REG, 3}}};
    return std::span<const cf::dir_entry>(all).subspan(
        std::min<std::size_t>(static_cast<std::size_t>(std::max<off_t>(off, 0)), all.size()));
  }

 private:
  static struct stat stat_of(cf::ino i) {
    struct stat st {};
    st.st_ino = i;
    st.st_nlink = i == cf::root_ino ? 2 : 1;
    st.st_mode = i == cf::root_ino ? (S_IFDIR | 0755) : (S_IFREG | 0644);
    st.st_size = i == cf::root_ino ? 0 : static_cast<off_t>(file_size);
    st.st_blksize = 4096;
    return st;
  }

  std::chrono::microseconds read_delay_;
};

int main(int argc, char** argv) {
  // Take --read-delay-us out of argv; the session parses the rest.
  std::vector<char*> rest{argv[0]};
  long delay_us = 0;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a != "--read-delay-us") {
      rest.push_back(argv[i]);
      continue;
    }
    std::string_view v = i + 1 < argc ? argv[++i] : "";
    auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), delay_us);
    if (v.empty() || ec != std::errc{} || end != v.data() + v.size() || delay_us < 0 || delay_us > 10'000'000) {
      std::fprintf(stderr, "%s: --read-delay-us needs microseconds, 0 to 10000000 (try --help)\n", argv[0]);
      return 2;
    }
  }
  rest.push_back(nullptr);
  nullfs fs{std::chrono::microseconds(delay_us)};
  return cf::session::main(fs, static_cast<int>(rest.size() - 1), rest.data(),
                           "nullfs: answers from memory and does no work (a benchmark of the framework and the kernel);\n"
                           "/f is 64 GiB, and READ returns whatever the reply buffer holds",
                           "  --read-delay-us N      every READ waits N microseconds before it answers (a slow store;\n"
                           "                         the queue serves other requests meanwhile)\n");
}
