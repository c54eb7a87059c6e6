// The examples under pressure, through live mounts on both transports (the ring only when
// /sys/module/fuse/parameters/enable_uring is Y):
//   - memory: the server alone in a memory cgroup of its own (a child of this process's cgroup, v1
//     memory.limit_in_bytes or v2 memory.max, whichever has a writable memory controller; the test
//     says why in a WARN line and runs nothing when neither has), created for the test and removed
//     at its end. The server's pid goes into it between fork and exec (a shell that writes $$ to
//     cgroup.procs and execs the binary: the pid stays the same).
//       * memfs --size 1G in a 96 MiB cgroup: memfs holds it to what the cgroup leaves (96 - 32 =
//         64 MiB, said in one line); 4 writers, each on its own file until an error, must get
//         ENOSPC (the error memfs has for "full"), not an OOM kill (which is what the asked 1 GiB
//         used to end in); what was written reads back, memfs serves on, and space freed is usable
//         again.
//       * memfs without --size in a 128 MiB cgroup: its default limit is a quarter of the cgroup's
//         (32 MiB in statfs, not a quarter of RAM), and the same 4 writers end with ENOSPC there.
//       * passthrough in a cgroup of its resident size after mount + 48 MiB: 4 clients doing 4 MiB
//         buffered and O_DIRECT writes and reads for 4 s over files on a tmpfs the test mounted and
//         filled beforehand (so that the tmpfs pages are charged to the test, not to the server):
//         no error, the data right through the mount and in the backing files, no OOM kill.
//   - space: passthrough over a 16 MiB tmpfs and memfs --size 16M, 4 writers in 1 MiB writes until
//     each gets ENOSPC (exactly that, and nothing else anywhere): every byte acknowledged reads
//     back (and for passthrough is in the backing file), the server serves on while full, statfs
//     shows the space used, and once the writers delete their files a new 4 MiB file fits.
// Every client runs in a child under an alarm; every mount, tmpfs and cgroup is undone by a guard
// even when the test fails.
#include <catch2/catch.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "tests/mount/server_harness.hpp"

using corofuse::testing::clients;
using corofuse::testing::in_client;
using corofuse::testing::read_file;
using corofuse::testing::runfile;
using corofuse::testing::server;
using corofuse::testing::start_client;
using corofuse::testing::tail;
using corofuse::testing::uring_enabled;

namespace {

// A sanitizer's shadow memory and quarantine of freed blocks are charged to the server's cgroup
// too (ASan keeps up to 256 MiB of freed memory unreused): a limit near the working set then
// measures the sanitizer, not the server. The memory cases run in the plain builds only; the
// space cases run everywhere.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool sanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
constexpr bool sanitized = true;
#else
constexpr bool sanitized = false;
#endif
#else
constexpr bool sanitized = false;
#endif

const std::string memfs_bin = runfile("examples/memfs/memfs");
const std::string passthrough_bin = runfile("examples/passthrough/passthrough");
constexpr std::uint64_t KiB = 1 << 10;
constexpr std::uint64_t MiB = 1 << 20;
constexpr std::uint64_t GiB = 1 << 30;
constexpr int writers = 4;

std::string err_name(int e) {
  if (e == 0) return "no error";
  if (e < 0) return "a write of 0 bytes";
  const char* name = ::strerrordesc_np(e);
  const char* abbrev = ::strerrorname_np(e);
  return std::string(abbrev ? abbrev : "?") + " (" + (name ? name : "?") + ")";
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string w; std::getline(in, w, sep);) out.push_back(w);
  return out;
}

// The number after `key` on the line of `text` that starts with it ("oom_kill 0", "VmRSS:  1 kB"); 0
// when no line does.
std::uint64_t number_in(const std::string& text, const std::string& key) {
  for (const auto& line : split(text, '\n'))
    if (line.compare(0, key.size(), key) == 0 && line.size() > key.size() && (line[key.size()] == ' ' || line[key.size()] == '\t'))
      return std::strtoull(line.c_str() + key.size(), nullptr, 10);
  return 0;
}

bool write_text(const std::string& path, const std::string& text) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ok = ::close(fd) == 0 && ok;
  return ok;
}

bool has_word(std::string_view list, std::string_view word, char sep) {
  for (;;) {
    const auto at = list.find(sep);
    if (list.substr(0, at) == word) return true;
    if (at == std::string_view::npos) return false;
    list.remove_prefix(at + 1);
  }
}

// ---- a memory cgroup of the test's own ---------------------------------------------------------

// A child of this process's memory cgroup, made for one server and removed when the guard goes
// (after killing, by pid, whatever of ours is still in it). v1 when the memory controller is
// mounted as a v1 hierarchy and writable, else v2 when its memory controller is enabled for
// children of this process's cgroup.
class memory_cgroup {
 public:
  // The cgroup, or nullptr with `why` saying why neither version can give one.
  static std::unique_ptr<memory_cgroup> make(std::string& why) {
    std::string v1_path, v2_path;  // this process's cgroups (/proc/self/cgroup)
    for (const auto& line : split(read_file("/proc/self/cgroup"), '\n')) {
      const auto c1 = line.find(':'), c2 = c1 == std::string::npos ? c1 : line.find(':', c1 + 1);
      if (c2 == std::string::npos) continue;
      const std::string controllers = line.substr(c1 + 1, c2 - c1 - 1);
      if (line.substr(0, c1) == "0" && controllers.empty()) v2_path = line.substr(c2 + 1);
      else if (has_word(controllers, "memory", ',')) v1_path = line.substr(c2 + 1);
    }
    std::string v1_dir, v2_dir, v2_mount;  // this process's cgroup directories
    for (const auto& line : split(read_file("/proc/self/mountinfo"), '\n')) {
      const auto dash = line.find(" - ");
      if (dash == std::string::npos) continue;
      const auto left = split(line.substr(0, dash), ' '), right = split(line.substr(dash + 3), ' ');
      if (left.size() < 5 || right.size() < 3) continue;
      const bool v1 = right[0] == "cgroup" && has_word(right[2], "memory", ',') && !v1_path.empty();
      const bool v2 = right[0] == "cgroup2" && !v2_path.empty();
      if (!v1 && !v2) continue;
      const std::string root = left[3] == "/" ? "" : left[3], path = v1 ? v1_path : v2_path;
      if (path.compare(0, root.size(), root) != 0) continue;
      std::string dir = left[4] + path.substr(root.size());
      while (dir.size() > left[4].size() && dir.back() == '/') dir.pop_back();
      if (v1 && v1_dir.empty()) v1_dir = dir;
      if (v2 && v2_dir.empty()) v2_dir = dir, v2_mount = left[4];
    }
    static std::atomic<unsigned> serial{0};
    const std::string name = "corofuse-pressure-" + std::to_string(::getpid()) + "-" + std::to_string(serial++);
    std::string why_v1 = "no v1 hierarchy with the memory controller is mounted", why_v2 = "no cgroup2 mount";
    if (!v1_dir.empty()) {
      const std::string dir = v1_dir + "/" + name;
      if (::mkdir(dir.c_str(), 0755) == 0) return std::unique_ptr<memory_cgroup>(new memory_cgroup(1, dir));
      why_v1 = "mkdir in " + v1_dir + ": " + err_name(errno);
    }
    if (!v2_dir.empty()) {
      const std::string controllers = read_file(v2_mount + "/cgroup.controllers");
      const std::string enabled = read_file(v2_dir + "/cgroup.subtree_control");
      auto words = [](std::string s) {
        s.erase(std::remove(s.begin(), s.end(), '\n'), s.end());
        return s;
      };
      if (!has_word(words(controllers), "memory", ' ')) {
        why_v2 = "cgroup v2 at " + v2_mount + " has no memory controller (cgroup.controllers: \"" + words(controllers) + "\")";
      } else if (!has_word(words(enabled), "memory", ' ')) {
        why_v2 = "memory is not enabled for the children of " + v2_dir + " (cgroup.subtree_control: \"" + words(enabled) + "\")";
      } else {
        const std::string dir = v2_dir + "/" + name;
        if (::mkdir(dir.c_str(), 0755) == 0) return std::unique_ptr<memory_cgroup>(new memory_cgroup(2, dir));
        why_v2 = "mkdir in " + v2_dir + ": " + err_name(errno);
      }
    }
    why = "no writable memory cgroup: v1: " + why_v1 + "; v2: " + why_v2;
    return nullptr;
  }

  ~memory_cgroup() {
    // Only servers this test started are ever in it: kill what is left of them by pid.
    for (int i = 0; i < 100; ++i) {
      for (pid_t p : pids()) ::kill(p, SIGKILL);
      if (::rmdir(dir_.c_str()) == 0 || errno == ENOENT) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    std::fprintf(stderr, "could not remove the cgroup %s: %s\n", dir_.c_str(), err_name(errno).c_str());
  }
  memory_cgroup(const memory_cgroup&) = delete;
  memory_cgroup& operator=(const memory_cgroup&) = delete;

  int version() const { return version_; }
  const std::string& dir() const { return dir_; }
  bool set_limit(std::uint64_t bytes) const {
    return write_text(dir_ + (version_ == 1 ? "/memory.limit_in_bytes" : "/memory.max"), std::to_string(bytes));
  }
  std::uint64_t limit() const { return std::strtoull(file(version_ == 1 ? "memory.limit_in_bytes" : "memory.max").c_str(), nullptr, 10); }
  std::uint64_t usage() const {
    return std::strtoull(file(version_ == 1 ? "memory.usage_in_bytes" : "memory.current").c_str(), nullptr, 10);
  }
  // The most it held (v2 without memory.peak: 0).
  std::uint64_t peak() const {
    return std::strtoull(file(version_ == 1 ? "memory.max_usage_in_bytes" : "memory.peak").c_str(), nullptr, 10);
  }
  // Processes the OOM killer ended in it (the "oom_kill" of memory.oom_control or memory.events).
  std::uint64_t oom_kills() const { return number_in(file(version_ == 1 ? "memory.oom_control" : "memory.events"), "oom_kill"); }
  // Its memory events, for a failure message.
  std::string events() const {
    if (version_ == 1)
      return "v1 " + dir_ + ": memory.oom_control: " + file("memory.oom_control") + "memory.failcnt " + file("memory.failcnt");
    return "v2 " + dir_ + ": memory.events: " + file("memory.events");
  }
  std::vector<pid_t> pids() const {
    std::vector<pid_t> out;
    for (const auto& w : split(file("cgroup.procs"), '\n'))
      if (!w.empty()) out.push_back(static_cast<pid_t>(std::stol(w)));
    return out;
  }
  // The leading arguments that make the server harness start `binary` (then `extra`, then the
  // mount point and the options) through a shell that moves itself into this cgroup and execs it.
  std::vector<std::string> wrap(const std::string& binary, std::vector<std::string> extra = {}) const {
    std::vector<std::string> out = {"-c", "echo $$ > \"" + dir_ + "/cgroup.procs\" && exec \"$0\" \"$@\"", binary};
    out.insert(out.end(), extra.begin(), extra.end());
    return out;
  }

 private:
  memory_cgroup(int version, std::string dir) : version_(version), dir_(std::move(dir)) {}
  std::string file(const std::string& name) const { return read_file(dir_ + "/" + name); }
  int version_;
  std::string dir_;
};

// ---- other guards --------------------------------------------------------------------------------

// A tmpfs of `options` on a fresh directory, unmounted (lazily) and removed at the end.
class scratch_tmpfs {
 public:
  explicit scratch_tmpfs(const std::string& options) {
    char tmpl[] = "/tmp/corofuse-pressure-XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
    if (::mount("tmpfs", path_.c_str(), "tmpfs", 0, options.c_str()) != 0) {
      const int e = errno;
      ::rmdir(path_.c_str());
      throw std::runtime_error("mounting a tmpfs failed: " + err_name(e));
    }
  }
  ~scratch_tmpfs() {
    ::umount2(path_.c_str(), MNT_DETACH);
    ::rmdir(path_.c_str());
  }
  scratch_tmpfs(const scratch_tmpfs&) = delete;
  scratch_tmpfs& operator=(const scratch_tmpfs&) = delete;
  const std::string& path() const { return path_; }
  std::string path(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// `n` objects of a plain type in memory shared with the client children (zeroed).
template <typename T>
class shared {
 public:
  explicit shared(std::size_t n = 1) : n_(n) {
    void* p = ::mmap(nullptr, sizeof(T) * n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap failed");
    p_ = static_cast<T*>(p);
  }
  ~shared() { ::munmap(p_, sizeof(T) * n_); }
  shared(const shared&) = delete;
  shared& operator=(const shared&) = delete;
  T& operator[](std::size_t i) { return p_[i]; }
  T* operator->() { return p_; }

 private:
  std::size_t n_;
  T* p_;
};

// ---- data ------------------------------------------------------------------------------------

// The bytes of file `seed` at [off, off + out.size()): different for every seed and every 8-byte
// word, so a chunk in the wrong place or from another file shows.
void fill(std::uint64_t seed, std::uint64_t off, char* out, std::size_t n) {
  for (std::size_t i = 0; i < n;) {
    const std::uint64_t pos = off + i, word = pos >> 3;
    std::uint64_t x = word * 0x9E3779B97F4A7C15ull ^ (seed + 1) * 0xD1B54A32D192ED03ull;
    x ^= x >> 29;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 32;
    for (std::size_t b = pos & 7; b < 8 && i < n; ++b, ++i) out[i] = static_cast<char>(x >> (b * 8));
  }
}

// A file's bytes against fill(seed) for its first `len` bytes, read through `fd` in 1 MiB reads:
// "" when they match and the file ends there, else what is wrong.
std::string check_fd(int fd, std::uint64_t seed, std::uint64_t len) {
  std::vector<char> got(MiB), want(MiB);
  std::uint64_t off = 0;
  for (;;) {
    ssize_t n = ::pread(fd, got.data(), MiB, static_cast<off_t>(off));
    if (n < 0) return "read at " + std::to_string(off) + ": " + err_name(errno);
    if (n == 0) break;
    if (off + static_cast<std::uint64_t>(n) > len) return "more than " + std::to_string(len) + " bytes";
    fill(seed, off, want.data(), static_cast<std::size_t>(n));
    if (std::memcmp(got.data(), want.data(), static_cast<std::size_t>(n)) != 0) {
      std::size_t i = 0;
      while (got[i] == want[i]) ++i;
      return "wrong data at " + std::to_string(off + i);
    }
    off += static_cast<std::uint64_t>(n);
  }
  return off == len ? "" : "only " + std::to_string(off) + " of " + std::to_string(len) + " bytes";
}

std::string check_file(const std::string& path, std::uint64_t seed, std::uint64_t len) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "open: " + err_name(errno);
  std::string r = check_fd(fd, seed, len);
  ::close(fd);
  return r;
}

// check_file in a client (a path on a FUSE mount): "" or what is wrong.
std::string check_file_in_client(const std::string& path, std::uint64_t seed, std::uint64_t len) {
  shared<char> msg(256);
  const int rc = in_client(
      [&] {
        std::string r = check_file(path, seed, len);
        std::snprintf(&msg[0], 256, "%s", r.c_str());
        return r.empty() ? 0 : 1;
      },
      60);
  if (rc == 0) return "";
  return rc == 1 ? std::string(&msg[0]) : "the reading client ended with status " + std::to_string(rc);
}

// ---- writers until an error -----------------------------------------------------------------

struct writer_result {
  std::uint64_t acked;  // bytes write(2) said it wrote
  int err;              // the errno that ended the writes (0: the cap was reached first)
  int close_err;        // close(2)'s errno (0: it succeeded)
  int open_err;
};

// `writers` clients, client i writing fill(i) to `dir`/wI in 1 MiB write(2)s (a short one
// continues where it stopped) until one fails or `cap` bytes are in; then it closes the file.
std::vector<writer_result> write_until_error(const std::string& dir, std::uint64_t cap, int seconds) {
  shared<writer_result> res(writers);
  clients cl;
  for (int i = 0; i < writers; ++i) {
    const std::string path = dir + "/w" + std::to_string(i);
    writer_result* r = &res[static_cast<std::size_t>(i)];
    cl.add(start_client(
        [path, r, i, cap] {
          std::vector<char> buf(MiB);
          int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0644);
          if (fd < 0) {
            r->open_err = errno;
            return 1;
          }
          while (r->acked < cap) {
            fill(static_cast<std::uint64_t>(i), r->acked, buf.data(), MiB);
            ssize_t n = ::write(fd, buf.data(), MiB);
            if (n <= 0) {
              r->err = n < 0 ? errno : -1;
              break;
            }
            r->acked += static_cast<std::uint64_t>(n);
          }
          r->close_err = ::close(fd) == 0 ? 0 : errno;
          return 0;
        },
        seconds));
  }
  const std::vector<int> status = cl.wait_all();
  std::vector<writer_result> out;
  for (int i = 0; i < writers; ++i) {
    INFO("writer " << i << " ended with status " << status[static_cast<std::size_t>(i)]);
    CHECK(status[static_cast<std::size_t>(i)] == 0);
    out.push_back(res[static_cast<std::size_t>(i)]);
  }
  return out;
}

std::string describe(const std::vector<writer_result>& res) {
  std::string s;
  for (std::size_t i = 0; i < res.size(); ++i)
    s += "w" + std::to_string(i) + ": " + std::to_string(res[i].acked) + " bytes, then " + err_name(res[i].err) +
         (res[i].open_err ? ", open: " + err_name(res[i].open_err) : "") +
         (res[i].close_err ? ", close: " + err_name(res[i].close_err) : "") + "\n";
  return s;
}

std::uint64_t total(const std::vector<writer_result>& res) {
  std::uint64_t t = 0;
  for (const auto& r : res) t += r.acked;
  return t;
}

// statvfs of a FUSE mount, in a client (false when it failed).
bool statfs_in_client(const std::string& dir, struct statvfs& out) {
  shared<struct statvfs> v;
  const int rc = in_client([&] { return ::statvfs(dir.c_str(), &v[0]) == 0 ? 0 : 1; });
  out = v[0];
  return rc == 0;
}

// The mount serves while full: a directory and an empty file are made, both stat, the listing
// holds them and `names`. 0, or the step that failed.
int still_serving(const std::string& dir, std::set<std::string> names) {
  return in_client([&] {
    if (::mkdir((dir + "/made-while-full").c_str(), 0755) != 0) return 1;
    int fd = ::open((dir + "/empty-while-full").c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0) return 2;
    if (::close(fd) != 0) return 3;
    struct stat st {};
    if (::stat((dir + "/empty-while-full").c_str(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size != 0) return 4;
    if (::stat((dir + "/made-while-full").c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return 5;
    names.insert("made-while-full");
    names.insert("empty-while-full");
    DIR* d = ::opendir(dir.c_str());
    if (!d) return 6;
    std::set<std::string> seen;
    while (dirent* e = ::readdir(d))
      if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) seen.insert(e->d_name);
    ::closedir(d);
    if (seen != names) return 7;
    if (::rmdir((dir + "/made-while-full").c_str()) != 0 || ::unlink((dir + "/empty-while-full").c_str()) != 0) return 8;
    return 0;
  });
}

// Each writer deletes its file (4 clients at once). 0, or the first failure's status.
int writers_delete(const std::string& dir) {
  clients cl;
  for (int i = 0; i < writers; ++i) {
    const std::string path = dir + "/w" + std::to_string(i);
    cl.add(start_client([path] { return ::unlink(path.c_str()) == 0 ? 0 : 1; }, 20));
  }
  for (int s : cl.wait_all())
    if (s != 0) return s;
  return 0;
}

// A new 4 MiB file ("again", fill(99)) written and read back through the mount: "" or what failed.
std::string write_4mib_again(const std::string& dir) {
  const int rc = in_client([&] {
    std::vector<char> buf(4 * MiB);
    fill(99, 0, buf.data(), buf.size());
    int fd = ::open((dir + "/again").c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0644);
    if (fd < 0) return 1;
    std::size_t done = 0;
    while (done < buf.size()) {
      ssize_t n = ::write(fd, buf.data() + done, buf.size() - done);
      if (n <= 0) return n < 0 && errno == ENOSPC ? 2 : 3;
      done += static_cast<std::size_t>(n);
    }
    if (::close(fd) != 0) return 4;
    return check_file(dir + "/again", 99, 4 * MiB).empty() ? 0 : 5;
  });
  static const char* what[] = {"", "create failed", "ENOSPC", "another write error", "close failed", "read back wrong"};
  return rc >= 0 && rc <= 5 ? what[rc] : "the client ended with status " + std::to_string(rc);
}

// Free space (statfs) once it has come back to `want` or more, within 5 s; what there was then.
std::uint64_t free_after_release(const std::string& dir, std::uint64_t want) {
  std::uint64_t free = 0;
  for (int i = 0; i < 100; ++i) {
    struct statvfs v {};
    if (statfs_in_client(dir, v)) free = v.f_bfree * v.f_frsize;
    if (free >= want) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return free;
}

// The transport from the generator, or "" (with a WARN) for the ring where the kernel has it off.
std::string usable(const std::string& transport) {
  if (transport == "ring" && !uring_enabled()) {
    WARN("FUSE-over-io_uring is off (/sys/module/fuse/parameters/enable_uring is not Y): the ring case is not run");
    return "";
  }
  return transport;
}

// ---- memfs under a memory cgroup -------------------------------------------------------------

// memfs (with `size_args`) alone in a cgroup of `limit` bytes; 4 writers until an error.
// `expect_limit`: the limit statfs must show (0: not checked).
void memfs_in_cgroup(const std::string& transport, std::uint64_t limit, std::vector<std::string> size_args, std::uint64_t expect_limit,
                     bool expect_held = false) {
  std::string why;
  if (sanitized) {
    WARN("memory limits are not tested under a sanitizer: its shadow memory and quarantine count against the cgroup's limit");
    return;
  }
  auto cg = memory_cgroup::make(why);
  if (!cg) {
    WARN("memfs under a memory limit is not tested: " << why);
    return;
  }
  REQUIRE(cg->set_limit(limit));
  INFO("cgroup v" << cg->version() << " " << cg->dir() << ", limit " << cg->limit());
  std::vector<std::string> args = {"--transport", transport};
  args.insert(args.end(), size_args.begin(), size_args.end());
  server s("/bin/sh", args, -1, -1, cg->wrap(memfs_bin));
  INFO("memfs log:\n" << tail(s.log()));
  REQUIRE(s.mounted());
  REQUIRE(cg->pids() == std::vector<pid_t>{s.pid()});  // memfs alone in it
  const std::uint64_t start_usage = cg->usage();

  struct statvfs v {};
  REQUIRE(statfs_in_client(s.dir(), v));
  const std::uint64_t fs_limit = v.f_blocks * v.f_frsize;
  INFO("memfs's limit in statfs: " << fs_limit << " bytes; the cgroup's usage after mount: " << start_usage);
  if (expect_limit) {
    CHECK(fs_limit >= expect_limit - MiB);
    CHECK(fs_limit <= expect_limit + MiB);
  }
  // A --size the cgroup cannot hold is held to what it can, in one line of memfs's own.
  CHECK((s.log().find("more than this process's memory cgroup allows") != std::string::npos) == expect_held);

  const auto res = write_until_error(s.dir(), 4 * GiB, 90);
  const bool alive = !s.exited();
  const std::uint64_t kills = cg->oom_kills();
  UNSCOPED_INFO("writers:\n" << describe(res) << "in all " << total(res) << " bytes");
  UNSCOPED_INFO("memfs log after the writers:\n" << tail(s.log()));
  UNSCOPED_INFO("memfs " << (alive ? "alive" : "ended with status " + std::to_string(s.exit_status())) << "; cgroup peak " << cg->peak()
                         << " of " << cg->limit() << "; " << cg->events());
  // The finding this test is for: a full memfs must say so (ENOSPC), not be OOM-killed.
  CHECK(kills == 0);
  REQUIRE(alive);  // killed, the writers' errors are in the messages above
  REQUIRE(kills == 0);
  for (const auto& r : res) {
    CHECK(r.open_err == 0);
    CHECK(r.err == ENOSPC);
    CHECK(r.close_err == 0);
  }
  CHECK(total(res) <= fs_limit);
  CHECK(total(res) + writers * MiB >= fs_limit);  // full, to a write each

  for (int i = 0; i < writers; ++i) {
    INFO("w" << i);
    CHECK(check_file_in_client(s.path("w" + std::to_string(i)), static_cast<std::uint64_t>(i), res[static_cast<std::size_t>(i)].acked) ==
          "");
  }
  CHECK(still_serving(s.dir(), {"w0", "w1", "w2", "w3"}) == 0);
  REQUIRE(writers_delete(s.dir()) == 0);
  CHECK(free_after_release(s.dir(), fs_limit) >= fs_limit);
  CHECK(write_4mib_again(s.dir()) == "");
  CHECK(!s.exited());
  CHECK(cg->oom_kills() == 0);
  s.stop_and_clean();
  CHECK(s.exit_status() == 0);
}

// ---- passthrough under a memory cgroup -------------------------------------------------------

constexpr std::uint64_t pt_file = 32 * MiB;
constexpr std::uint64_t pt_io = 4 * MiB;

struct io_result {
  std::uint64_t rounds;  // rounds completed (the last one's data is in the file)
  int err;               // errno of a failed call (0: none)
  int step;              // what failed: 1 open, 2 write, 3 short write, 4 read, 5 wrong data, 6 close
  std::uint64_t at;
};

// The seed of client `c`'s data in round `r`.
std::uint64_t round_seed(int c, std::uint64_t r) { return 1000 + static_cast<std::uint64_t>(c) * 100000 + r; }

// Client `c`: rounds of rewriting its file (never growing it: the tmpfs pages are already there)
// in 4 MiB pwrites, then reading it all back in 4 MiB preads, O_DIRECT in every other round,
// until `seconds` have gone.
int io_client(const std::string& path, int c, io_result* r, int seconds) {
  void* mem = nullptr;
  if (::posix_memalign(&mem, 4096, 2 * pt_io) != 0) return 2;
  char* out = static_cast<char*>(mem);
  char* in = out + pt_io;
  std::vector<char> want(pt_io);
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  for (std::uint64_t round = 1; std::chrono::steady_clock::now() < until; ++round) {
    const bool direct = (round + static_cast<std::uint64_t>(c)) % 2 == 0;
    const std::uint64_t seed = round_seed(c, round);
    int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | (direct ? O_DIRECT : 0));
    auto fail = [&](int step, std::uint64_t at) {
      r->err = errno;
      r->step = step;
      r->at = at;
      return 1;
    };
    if (fd < 0) return fail(1, 0);
    for (std::uint64_t off = 0; off < pt_file; off += pt_io) {
      fill(seed, off, out, pt_io);
      ssize_t n = ::pwrite(fd, out, pt_io, static_cast<off_t>(off));
      if (n < 0) return fail(2, off);
      if (static_cast<std::uint64_t>(n) != pt_io) {
        errno = 0;
        return fail(3, off);
      }
    }
    for (std::uint64_t off = 0; off < pt_file; off += pt_io) {
      ssize_t n = ::pread(fd, in, pt_io, static_cast<off_t>(off));
      if (n < 0) return fail(4, off);
      fill(seed, off, want.data(), pt_io);
      if (static_cast<std::uint64_t>(n) != pt_io || std::memcmp(in, want.data(), pt_io) != 0) {
        errno = 0;
        return fail(5, off);
      }
    }
    if (::close(fd) != 0) return fail(6, 0);
    r->rounds = round;
  }
  std::free(mem);
  return 0;
}

// ---- a full backing store --------------------------------------------------------------------

constexpr std::uint64_t store_bytes = 16 * MiB;

// `s` serving a 16 MiB store (the tmpfs `backing` under passthrough, else memfs --size 16M): 4
// writers until ENOSPC, and everything after.
void fill_the_store(server& s, const scratch_tmpfs* backing) {
  INFO("server log:\n" << tail(s.log()));
  REQUIRE(s.mounted());
  struct statvfs before {};
  REQUIRE(statfs_in_client(s.dir(), before));
  const std::uint64_t size = before.f_blocks * before.f_frsize;
  INFO("statfs before: " << size << " bytes, " << before.f_bfree * before.f_frsize << " free");
  CHECK(size == store_bytes);

  const auto res = write_until_error(s.dir(), 64 * MiB, 60);
  INFO("writers:\n" << describe(res) << "in all " << total(res) << " bytes");
  INFO("server log after the writers:\n" << tail(s.log()));
  REQUIRE(!s.exited());
  for (const auto& r : res) {
    CHECK(r.open_err == 0);
    CHECK(r.err == ENOSPC);
    CHECK(r.close_err == 0);
    CHECK(r.acked % 4096 == 0);  // whole pages: nothing half-written
  }
  CHECK(total(res) <= store_bytes);
  CHECK(total(res) >= store_bytes - MiB);

  for (int i = 0; i < writers; ++i) {
    const std::string name = "w" + std::to_string(i);
    const auto acked = res[static_cast<std::size_t>(i)].acked;
    INFO(name);
    CHECK(check_file_in_client(s.path(name), static_cast<std::uint64_t>(i), acked) == "");
    if (backing) CHECK(check_file(backing->path(name), static_cast<std::uint64_t>(i), acked) == "");
  }
  struct statvfs full {};
  REQUIRE(statfs_in_client(s.dir(), full));
  const std::uint64_t used = (full.f_blocks - full.f_bfree) * full.f_frsize;
  INFO("statfs when full: " << used << " bytes used, " << full.f_bfree * full.f_frsize << " free, " << full.f_bavail * full.f_frsize
                            << " available");
  CHECK(used >= total(res));
  CHECK(full.f_bfree * full.f_frsize < MiB);
  CHECK(full.f_bavail <= full.f_bfree);

  CHECK(still_serving(s.dir(), {"w0", "w1", "w2", "w3"}) == 0);
  REQUIRE(writers_delete(s.dir()) == 0);
  const std::uint64_t free = free_after_release(s.dir(), store_bytes - MiB);
  INFO("free after the writers deleted their files: " << free);
  CHECK(free >= store_bytes - MiB);
  CHECK(write_4mib_again(s.dir()) == "");
  if (backing) CHECK(check_file(backing->path("again"), 99, 4 * MiB) == "");
  CHECK(!s.exited());
  s.stop_and_clean();
  CHECK(s.exit_status() == 0);
}

}  // namespace

TEST_CASE("memfs --size 1G in a 96 MiB memory cgroup: held to 64 MiB (said in one line); 4 writers get ENOSPC, not an OOM kill",
          "[pressure][memory][memfs]") {
  REQUIRE(::geteuid() == 0);
  const std::string transport = usable(GENERATE(as<std::string>{}, "ring", "dev"));
  if (transport.empty()) return;
  INFO("transport: " << transport);
  memfs_in_cgroup(transport, 96 * MiB, {"--size", "1G"}, 64 * MiB, true);
}

TEST_CASE("memfs without --size in a 128 MiB memory cgroup: a quarter of the cgroup's limit (32 MiB), then ENOSPC",
          "[pressure][memory][memfs]") {
  REQUIRE(::geteuid() == 0);
  const std::string transport = usable(GENERATE(as<std::string>{}, "ring", "dev"));
  if (transport.empty()) return;
  INFO("transport: " << transport);
  memfs_in_cgroup(transport, 128 * MiB, {}, 32 * MiB);
}

TEST_CASE("passthrough in a memory cgroup of its working set + 48 MiB: 4 clients of buffered and O_DIRECT I/O",
          "[pressure][memory][passthrough]") {
  REQUIRE(::geteuid() == 0);
  const std::string transport = usable(GENERATE(as<std::string>{}, "ring", "dev"));
  if (transport.empty()) return;
  INFO("transport: " << transport);
  std::string why;
  if (sanitized) {
    WARN("memory limits are not tested under a sanitizer: its shadow memory and quarantine count against the cgroup's limit");
    return;
  }
  auto cg = memory_cgroup::make(why);
  if (!cg) {
    WARN("passthrough under a memory limit is not tested: " << why);
    return;
  }
  INFO("cgroup v" << cg->version() << " " << cg->dir());
  // The backing files are made here, outside the cgroup: their tmpfs pages are charged to the
  // test, and the clients only ever rewrite them.
  scratch_tmpfs backing("size=" + std::to_string(writers * pt_file + 16 * MiB));
  for (int i = 0; i < writers; ++i) {
    const std::string path = backing.path("f" + std::to_string(i));
    int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    REQUIRE(fd >= 0);
    std::vector<char> buf(pt_io);
    for (std::uint64_t off = 0; off < pt_file; off += pt_io) {
      fill(round_seed(i, 0), off, buf.data(), pt_io);
      REQUIRE(::pwrite(fd, buf.data(), pt_io, static_cast<off_t>(off)) == static_cast<ssize_t>(pt_io));
    }
    ::close(fd);
  }
  server s("/bin/sh", {"--transport", transport}, -1, -1, cg->wrap(passthrough_bin, {backing.path()}));
  INFO("passthrough log:\n" << tail(s.log()));
  REQUIRE(s.mounted());
  REQUIRE(cg->pids() == std::vector<pid_t>{s.pid()});
  // Its working set: the resident size after mount, or what the cgroup holds, the larger.
  const std::string status = read_file("/proc/" + std::to_string(s.pid()) + "/status");
  const std::uint64_t rss = number_in(status, "VmRSS:") * KiB;
  const std::uint64_t usage = cg->usage();
  const std::uint64_t limit = std::max(rss, usage) + 48 * MiB;
  REQUIRE(cg->set_limit(limit));
  INFO("passthrough's RSS after mount " << rss << ", the cgroup's usage " << usage << ", the limit set " << cg->limit());

  shared<io_result> res(writers);
  clients cl;
  for (int i = 0; i < writers; ++i) {
    const std::string path = s.path("f" + std::to_string(i));
    io_result* r = &res[static_cast<std::size_t>(i)];
    cl.add(start_client([path, i, r] { return io_client(path, i, r, 4); }, 60));
  }
  const std::vector<int> status_of = cl.wait_all();
  const bool alive = !s.exited();
  UNSCOPED_INFO("passthrough log after the clients:\n" << tail(s.log()));
  UNSCOPED_INFO("passthrough " << (alive ? "alive" : "ended with status " + std::to_string(s.exit_status())) << "; cgroup peak "
                               << cg->peak() << " of " << cg->limit() << "; " << cg->events());
  for (int i = 0; i < writers; ++i) {
    const io_result& r = res[static_cast<std::size_t>(i)];
    INFO("client " << i << ": status " << status_of[static_cast<std::size_t>(i)] << ", " << r.rounds << " rounds, step " << r.step << " at "
                   << r.at << ": " << err_name(r.err));
    CHECK(status_of[static_cast<std::size_t>(i)] == 0);
    CHECK(r.rounds >= 2);  // a buffered round and an O_DIRECT one at least
    CHECK(check_file(backing.path("f" + std::to_string(i)), round_seed(i, r.rounds), pt_file) == "");
  }
  CHECK(alive);
  CHECK(cg->oom_kills() == 0);
  s.stop_and_clean();
  CHECK(s.exit_status() == 0);
}

TEST_CASE("passthrough over a 16 MiB tmpfs: 4 writers until ENOSPC, the data intact, the space reusable",
          "[pressure][space][passthrough]") {
  REQUIRE(::geteuid() == 0);
  const std::string transport = usable(GENERATE(as<std::string>{}, "ring", "dev"));
  if (transport.empty()) return;
  INFO("transport: " << transport);
  scratch_tmpfs backing("size=16m");
  server s(passthrough_bin, {"--transport", transport}, -1, -1, {backing.path()});
  fill_the_store(s, &backing);
}

TEST_CASE("memfs --size 16M: 4 writers until ENOSPC, the data intact, the space reusable", "[pressure][space][memfs]") {
  REQUIRE(::geteuid() == 0);
  const std::string transport = usable(GENERATE(as<std::string>{}, "ring", "dev"));
  if (transport.empty()) return;
  INFO("transport: " << transport);
  server s(memfs_bin, {"--transport", transport, "--size", "16M"});
  fill_the_store(s, nullptr);
}
