// The soak engine (issue 8), shared by the long soak (soak.cpp) and its short CI run
// (soak_short_test.cpp): one example server, one transport, a set time of concurrent load, then a
// complete verification against models the load kept.
//
// Process layout, so that nothing can hang the caller:
//   caller (soak / the test) ── server child (examples/memfs or examples/passthrough, under
//                               tests/mount/server_harness.hpp's guard)
//                            └─ client child with an alarm: every worker thread, the models, the
//                               verification
// The caller also keeps a deadline of its own: a client blocked in a FUSE request the server never
// answers cannot be killed (not even by SIGKILL) until the connection is aborted, so past the
// deadline it aborts this mount's connection and then kills the child.
//
// Counts and the first messages live in memory shared with the client child (mapped before the
// fork), so they survive a child that was killed.
//
// Phases of one run:
//   1. the child creates the tree, runs the workers for `seconds`, joins them, verifies the whole
//      tree through the mount (every file's bytes, every directory's listing, modes, link counts,
//      symlink targets, xattrs), closes everything it had open in the mount and says so;
//   2. the caller reads the server's peak RSS, stops it with SIGTERM and checks it exits 0 and
//      leaves no mount behind;
//   3. for passthrough the child then verifies the backing directory against the same models,
//      byte for byte (it still holds them: that is why it waits instead of exiting).
//
// Workers (threads of the client child), `workers` = N:
//   N writers     each owns files_per_writer files under data/: pwrite (1 B .. 1 MiB at random
//                 offsets, buffered or O_DIRECT), ftruncate, fallocate (allocate, keep-size, punch
//                 a hole), fsync/fdatasync, reopening its descriptors.
//   N readers     pread (buffered, O_DIRECT), short-lived mmap reads and fstat of any data file,
//                 compared with that file's model.
//   max(1, N/2)   mmap workers: each owns files_per_mmap_worker fixed-size files under mmap/, keeps
//                 them mapped shared and writable: stores through the mapping, reads through it,
//                 msync, and pwrite/pread through a descriptor on the same pages.
//   N metadata    each churns its own subtree meta-K: create, overwrite, rename (replacing files
//                 and empty directories, and the error cases), link, unlink, mkdir, rmdir, symlink,
//                 readlink, readdir, lstat, chmod, set/get/list/removexattr, each result (value or
//                 errno) checked against its own model.
//
// Why the data models are exact: every data file has a shadow copy (the bytes it must hold) and a
// reader-writer lock. Its owner (a writer or an mmap worker) holds the lock exclusively from before
// a change's system call until the shadow is updated; a reader holds it shared while it reads and
// compares. So whenever a reader looks, no change to that file is in flight and the file must equal
// its shadow exactly: the kernel's guarantee that a completed write is seen by every later read on
// the same mount (buffered, O_DIRECT or mapped: one page cache) is precisely what is tested. The
// same file is read by several readers at once (shared lock) while other files are written, so the
// server always has reads and writes of many files in flight. Every write's bytes are a function
// of (file id, generation, offset), a new generation per write, so stale data, a lost write, a write
// landing at the wrong offset or a torn page all show as a difference.
//
// After an unexpected result a model no longer knows what is there: the worker reloads it from the
// file system (the error is already counted), so one failure is reported once rather than
// cascading. Nothing is retried and no errno is ignored: every unexpected outcome counts.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "corofuse/session/mount.hpp"
#include "tests/mount/server_harness.hpp"

namespace corofuse::soak {

constexpr std::size_t KiB = 1024;
constexpr std::size_t MiB = 1024 * KiB;
constexpr std::size_t max_data_file = 4 * MiB;  // writers' files stay within this
constexpr std::size_t max_io = 1 * MiB;         // the largest single read or write
constexpr int files_per_writer = 4;
constexpr int files_per_mmap_worker = 2;
constexpr std::size_t meta_entries_cap = 250;  // past this a metadata worker mostly removes
constexpr int max_messages = 20;

inline std::string errname(int e) {
  const char* n = ::strerrorname_np(e);
  return n ? n : "errno " + std::to_string(e);
}

// The example server as a child process, stopped and cleaned up whatever happens.
using corofuse::testing::is_mounted;
using corofuse::testing::read_file;
using corofuse::testing::server;
using corofuse::testing::uring_enabled;

// ---------------------------------------------------------------------------------------------
// What the client child reports (in shared memory).

struct shared_report {
  std::atomic<std::uint64_t> reads{0}, writes{0}, meta{0}, mmaps{0};
  std::atomic<std::uint64_t> errors{0};
  std::atomic<std::uint64_t> load_ns{0};
  std::atomic<int> messages{0};
  char message[max_messages][400]{};

  // Counts one error; the first max_messages are kept word for word.
  void fail(const char* fmt, ...) __attribute__((format(printf, 2, 3))) {
    errors.fetch_add(1);
    const int slot = messages.fetch_add(1);
    if (slot >= max_messages) return;
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(message[slot], sizeof message[slot], fmt, ap);
    va_end(ap);
  }
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "counters shared across fork need lock-free atomics");

// ---------------------------------------------------------------------------------------------
// Randomness and data.

struct rng {
  std::mt19937_64 gen;
  explicit rng(std::uint64_t seed) : gen(seed) {}
  std::uint64_t below(std::uint64_t n) { return n ? gen() % n : 0; }
  bool percent(unsigned p) { return below(100) < p; }
  // 1..max, log-uniform: as many tiny requests as huge ones.
  std::size_t log_size(std::size_t max) {
    const double x = std::exp(std::uniform_real_distribution<double>(0, std::log(static_cast<double>(max) + 1))(gen));
    return std::clamp<std::size_t>(static_cast<std::size_t>(x), 1, max);
  }
};

inline std::uint64_t splitmix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// The bytes write generation `gen` of file `file_id` puts at [off, off+len): each 8-byte word of
// the file a function of the three, so the same byte at another offset or from another write differs.
inline void pattern(unsigned char* out, std::size_t len, std::uint64_t file_id, std::uint64_t gen, std::uint64_t off) {
  const std::uint64_t key = splitmix(file_id * 0x100000001b3ull ^ splitmix(gen));
  std::size_t i = 0;
  while (i < len) {
    const std::uint64_t o = off + i;
    const std::uint64_t w = splitmix(key ^ (o >> 3));
    for (unsigned b = static_cast<unsigned>(o & 7); b < 8 && i < len; ++b, ++i) out[i] = static_cast<unsigned char>(w >> (b * 8));
  }
}

// Reads up to len bytes at off, looping over short reads until EOF: the byte count, or -1 (errno).
inline ssize_t read_fully(int fd, unsigned char* buf, std::size_t len, off_t off) {
  std::size_t done = 0;
  while (done < len) {
    const ssize_t n = ::pread(fd, buf + done, len - done, off + static_cast<off_t>(done));
    if (n < 0) return -1;
    if (n == 0) break;
    done += static_cast<std::size_t>(n);
  }
  return static_cast<ssize_t>(done);
}

// A whole file's bytes by path, or nullopt (errno set).
inline std::optional<std::string> slurp(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return std::nullopt;
  std::string out;
  char buf[256 * 1024];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      const int e = errno;
      ::close(fd);
      errno = e;
      return std::nullopt;
    }
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return out;
}

// user.* attributes of a path (not following symlinks), or nullopt (errno set).
inline std::optional<std::map<std::string, std::string>> user_xattrs(const std::string& path) {
  std::vector<char> names(64 * 1024);
  const ssize_t n = ::llistxattr(path.c_str(), names.data(), names.size());
  if (n < 0) return std::nullopt;
  std::map<std::string, std::string> out;
  for (ssize_t i = 0; i < n;) {
    std::string name(names.data() + i);
    i += static_cast<ssize_t>(name.size()) + 1;
    if (name.rfind("user.", 0) != 0) continue;
    std::vector<char> value(64 * 1024);
    const ssize_t m = ::lgetxattr(path.c_str(), name.c_str(), value.data(), value.size());
    if (m < 0) return std::nullopt;
    out[name] = std::string(value.data(), static_cast<std::size_t>(m));
  }
  return out;
}

// Where two byte ranges first differ, for a message; "" when equal.
inline std::string first_difference(const unsigned char* got, const unsigned char* want, std::size_t n, std::uint64_t base) {
  for (std::size_t i = 0; i < n; ++i) {
    if (got[i] != want[i]) {
      std::size_t end = i;
      while (end < n && got[end] != want[end]) ++end;
      char buf[160];
      std::snprintf(buf, sizeof buf, "differs at offset %llu (got 0x%02x, want 0x%02x; %zu byte(s) differ from there%s)",
                    static_cast<unsigned long long>(base + i), got[i], want[i], end - i, end == n ? " to the end" : "");
      return buf;
    }
  }
  return {};
}

// ---------------------------------------------------------------------------------------------
// Models.

// A writer's or an mmap worker's file. See the top of this file for why `lock` makes the model exact.
struct data_file {
  std::uint64_t id = 0;
  std::string rel;                    // path under the root
  bool mapped = false;                // an mmap worker's: fixed size, never truncated (a mapping must not see SIGBUS)
  std::shared_mutex lock;             // exclusive: a change in flight; shared: a reader compares
  std::vector<unsigned char> shadow;  // the bytes the file must hold whenever `lock` is free
  std::uint64_t generation = 0;
  bool broken = false;  // reloading the shadow failed: skipped until the end (already an error)
};

// A metadata worker's inode: hard links share one.
struct meta_inode {
  char kind = 'f';   // 'f' regular, 'd' directory, 'l' symlink
  mode_t mode = 0;   // permission bits
  std::string data;  // a file's bytes, a symlink's target
  std::map<std::string, std::string> xattrs;
};

// What verification expects at one path.
struct expectation {
  char kind = 'f';
  mode_t mode = 0;
  const unsigned char* data = nullptr;
  std::size_t size = 0;
  std::map<std::string, std::string> xattrs;
  nlink_t nlink = 1;
  const void* inode = nullptr;  // entries sharing it are hard links of one inode
};

inline unsigned char dtype_of(char kind) { return kind == 'd' ? DT_DIR : kind == 'l' ? DT_LNK : DT_REG; }
inline char kind_of(mode_t m) { return S_ISDIR(m) ? 'd' : S_ISLNK(m) ? 'l' : S_ISREG(m) ? 'f' : '?'; }

// ---------------------------------------------------------------------------------------------
// The client side: runs inside the client child.

class client_load {
 public:
  client_load(std::string root, int workers, std::uint64_t seed, shared_report& rep)
      : root_(std::move(root)), workers_(std::max(1, workers)), seed_(seed), rep_(rep) {
    const int mmap_workers = std::max(1, workers_ / 2);
    std::uint64_t id = 1;
    for (int w = 0; w < workers_; ++w)
      for (int k = 0; k < files_per_writer; ++k) {
        auto f = std::make_unique<data_file>();
        f->id = id++;
        f->rel = "data/w" + std::to_string(w) + "-f" + std::to_string(k);
        files_.push_back(std::move(f));
      }
    for (int m = 0; m < mmap_workers; ++m)
      for (int k = 0; k < files_per_mmap_worker; ++k) {
        auto f = std::make_unique<data_file>();
        f->id = id++;
        f->rel = "mmap/m" + std::to_string(m) + "-f" + std::to_string(k);
        f->mapped = true;
        files_.push_back(std::move(f));
      }
    mmap_workers_ = mmap_workers;
    for (int k = 0; k < workers_; ++k) {
      auto m = std::make_unique<meta_model>();
      m->base = "meta-" + std::to_string(k);
      metas_.push_back(std::move(m));
    }
  }

  // The starting tree: data/, mmap/ (files of a fixed odd size), meta-K/.
  bool setup() {
    const auto before = rep_.errors.load();
    for (const char* d : {"data", "mmap"})
      if (::mkdir(path(d).c_str(), 0755) != 0) rep_.fail("setup: mkdir %s: %s", d, errname(errno).c_str());
    rng r(seed_ ^ 0x5e7u);
    for (auto& f : files_) {
      int fd = ::open(path(f->rel).c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
      if (fd < 0) {
        rep_.fail("setup: create %s: %s", f->rel.c_str(), errname(errno).c_str());
        continue;
      }
      if (f->mapped) {
        const std::size_t size = 256 * KiB + r.below(2 * MiB);  // rarely page-aligned: the last page is partial
        if (::ftruncate(fd, static_cast<off_t>(size)) != 0) rep_.fail("setup: ftruncate %s: %s", f->rel.c_str(), errname(errno).c_str());
        f->shadow.assign(size, 0);
      }
      ::close(fd);
    }
    for (auto& m : metas_) {
      if (::mkdir(path(m->base).c_str(), 0755) != 0) rep_.fail("setup: mkdir %s: %s", m->base.c_str(), errname(errno).c_str());
      auto root = std::make_shared<meta_inode>();
      root->kind = 'd';
      root->mode = 0755;
      m->at[m->base] = root;
    }
    return rep_.errors.load() == before;
  }

  // Every worker for `seconds`.
  void run(double seconds) {
    std::atomic<bool> stop{false};
    std::vector<std::thread> threads;
    const auto start = std::chrono::steady_clock::now();
    for (int w = 0; w < workers_; ++w) threads.emplace_back([this, w, &stop] { guarded("writer", [&] { writer(w, stop); }); });
    for (int i = 0; i < workers_; ++i) threads.emplace_back([this, i, &stop] { guarded("reader", [&] { reader(i, stop); }); });
    for (int m = 0; m < mmap_workers_; ++m) threads.emplace_back([this, m, &stop] { guarded("mmap", [&] { mmap_worker(m, stop); }); });
    for (int k = 0; k < workers_; ++k)
      threads.emplace_back([this, k, &stop] { guarded("meta", [&] { meta_worker(*metas_[k], k, stop); }); });
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    stop = true;
    for (auto& t : threads) t.join();
    rep_.load_ns = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count());
  }

  // The whole tree under `root` against the models: every path there and nothing else, each
  // entry's type, permission bits, link count and user xattrs, every file's bytes, every symlink's
  // target, hard links sharing one inode. `where` names the tree in messages.
  void verify_tree(const std::string& root, const char* where) {
    std::map<std::string, expectation> want = expectations();
    std::set<std::string> seen;
    std::map<const void*, ino_t> ino_of;
    std::map<ino_t, const void*> inode_of;
    std::function<void(const std::string&)> walk = [&](const std::string& rel) {
      const std::string dir = rel.empty() ? root : root + "/" + rel;
      DIR* d = ::opendir(dir.c_str());
      if (!d) {
        rep_.fail("verify %s: opendir %s: %s", where, rel.empty() ? "/" : rel.c_str(), errname(errno).c_str());
        return;
      }
      std::vector<std::pair<std::string, unsigned char>> names;
      errno = 0;
      while (dirent* e = ::readdir(d)) {
        if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) names.emplace_back(e->d_name, e->d_type);
        errno = 0;
      }
      if (errno != 0) rep_.fail("verify %s: readdir %s: %s", where, rel.c_str(), errname(errno).c_str());
      ::closedir(d);
      for (const auto& [name, dtype] : names) {
        const std::string r = rel.empty() ? name : rel + "/" + name;
        const std::string p = root + "/" + r;
        if (!seen.insert(r).second) {
          rep_.fail("verify %s: %s listed twice", where, r.c_str());
          continue;
        }
        auto it = want.find(r);
        if (it == want.end()) {
          rep_.fail("verify %s: unexpected entry %s", where, r.c_str());
          continue;
        }
        const expectation& x = it->second;
        struct stat st {};
        if (::lstat(p.c_str(), &st) != 0) {
          rep_.fail("verify %s: lstat %s: %s", where, r.c_str(), errname(errno).c_str());
          continue;
        }
        if (kind_of(st.st_mode) != x.kind) {
          rep_.fail("verify %s: %s is of type %c, want %c", where, r.c_str(), kind_of(st.st_mode), x.kind);
          continue;
        }
        if (dtype != DT_UNKNOWN && dtype != dtype_of(x.kind))
          rep_.fail("verify %s: readdir gives %s d_type %u, want %u", where, r.c_str(), dtype, dtype_of(x.kind));
        if (x.kind != 'l' && (st.st_mode & 07777) != x.mode)
          rep_.fail("verify %s: %s has mode %04o, want %04o", where, r.c_str(), st.st_mode & 07777, x.mode);
        if (st.st_nlink != x.nlink)
          rep_.fail("verify %s: %s has %lu links, want %lu", where, r.c_str(), static_cast<unsigned long>(st.st_nlink),
                    static_cast<unsigned long>(x.nlink));
        if (x.inode) {
          auto [a, fresh_a] = ino_of.emplace(x.inode, st.st_ino);
          auto [b, fresh_b] = inode_of.emplace(st.st_ino, x.inode);
          if (a->second != st.st_ino || b->second != x.inode)
            rep_.fail("verify %s: %s: hard links do not match the model (inode %lu)", where, r.c_str(),
                      static_cast<unsigned long>(st.st_ino));
        }
        if (x.kind == 'f') {
          if (static_cast<std::size_t>(st.st_size) != x.size)
            rep_.fail("verify %s: %s has size %lld, want %zu", where, r.c_str(), static_cast<long long>(st.st_size), x.size);
          auto bytes = slurp(p);
          if (!bytes) {
            rep_.fail("verify %s: read %s: %s", where, r.c_str(), errname(errno).c_str());
          } else if (bytes->size() != x.size) {
            rep_.fail("verify %s: %s reads %zu bytes, want %zu", where, r.c_str(), bytes->size(), x.size);
          } else if (auto diff = first_difference(reinterpret_cast<const unsigned char*>(bytes->data()), x.data, x.size, 0);
                     !diff.empty()) {
            rep_.fail("verify %s: %s content %s", where, r.c_str(), diff.c_str());
          }
        } else if (x.kind == 'l') {
          std::vector<char> buf(4096);
          const ssize_t n = ::readlink(p.c_str(), buf.data(), buf.size());
          if (n < 0) rep_.fail("verify %s: readlink %s: %s", where, r.c_str(), errname(errno).c_str());
          else if (std::string(buf.data(), static_cast<std::size_t>(n)) != std::string(reinterpret_cast<const char*>(x.data), x.size))
            rep_.fail("verify %s: symlink %s points elsewhere", where, r.c_str());
        }
        if (x.kind != 'l') {
          auto xa = user_xattrs(p);
          if (!xa) rep_.fail("verify %s: xattrs of %s: %s", where, r.c_str(), errname(errno).c_str());
          else if (*xa != x.xattrs)
            rep_.fail("verify %s: %s has %zu user xattrs unlike the model's %zu", where, r.c_str(), xa->size(), x.xattrs.size());
        }
        if (x.kind == 'd') walk(r);
      }
    };
    walk("");
    for (const auto& [r, x] : want)
      if (!seen.count(r)) rep_.fail("verify %s: %s is missing", where, r.c_str());
  }

 private:
  struct meta_model {
    std::string base;
    std::map<std::string, std::shared_ptr<meta_inode>> at;  // path under the root -> inode; base included
    std::uint64_t next_name = 0;
  };

  std::string path(const std::string& rel) const { return root_ + "/" + rel; }

  // An exception escaping a worker would end the child; count it instead.
  void guarded(const char* what, const std::function<void()>& fn) {
    try {
      fn();
    } catch (const std::exception& e) {
      rep_.fail("%s worker: exception: %s", what, e.what());
    } catch (...) {
      rep_.fail("%s worker: unknown exception", what);
    }
  }

  // After an unexpected result: the shadow becomes what the file holds (the error is counted already).
  void reload(data_file& f) {
    auto bytes = slurp(path(f.rel));
    if (!bytes) {
      f.broken = true;
      return;
    }
    f.shadow.assign(bytes->begin(), bytes->end());
  }

  std::map<std::string, expectation> expectations() const {
    std::map<std::string, expectation> want;
    auto dir = [&](const std::string& rel, nlink_t subdirs) {
      expectation x;
      x.kind = 'd';
      x.mode = 0755;
      x.nlink = 2 + subdirs;
      want[rel] = x;
    };
    dir("data", 0);
    dir("mmap", 0);
    for (const auto& f : files_) {
      expectation x;
      x.kind = 'f';
      x.mode = 0644;
      x.data = f->shadow.data();
      x.size = f->shadow.size();
      want[f->rel] = x;
    }
    for (const auto& m : metas_) {
      for (const auto& [rel, in] : m->at) {
        expectation x;
        x.kind = in->kind;
        x.mode = in->mode;
        x.data = reinterpret_cast<const unsigned char*>(in->data.data());
        x.size = in->data.size();
        x.xattrs = in->xattrs;
        x.inode = in.get();
        x.nlink = in->kind == 'd' ? 2 + subdirs(*m, rel) : links(*m, in.get());
        want[rel] = x;
      }
    }
    return want;
  }

  // ---- writers ----------------------------------------------------------------------------------

  void writer(int w, const std::atomic<bool>& stop) {
    rng r(splitmix(seed_ ^ (0x1000u + static_cast<unsigned>(w))));
    struct fds {
      int buffered = -1, direct = -1;
    };
    std::vector<fds> fd(files_per_writer);
    auto open_one = [&](data_file& f, bool direct) {
      int d = ::open(path(f.rel).c_str(), O_RDWR | O_CLOEXEC | (direct ? O_DIRECT : 0));
      rep_.meta++;
      if (d < 0) rep_.fail("writer: open%s %s: %s", direct ? "(O_DIRECT)" : "", f.rel.c_str(), errname(errno).c_str());
      return d;
    };
    for (int k = 0; k < files_per_writer; ++k) {
      data_file& f = *files_[static_cast<std::size_t>(w * files_per_writer + k)];
      fd[k].buffered = open_one(f, false);
      fd[k].direct = open_one(f, true);
    }
    // Page-aligned: O_DIRECT on FUSE does not demand it, but it keeps this usable on any file system.
    std::unique_ptr<unsigned char, decltype(&std::free)> buf(static_cast<unsigned char*>(std::aligned_alloc(4096, max_io)), &std::free);
    while (!stop.load(std::memory_order_relaxed)) {
      const int k = static_cast<int>(r.below(files_per_writer));
      data_file& f = *files_[static_cast<std::size_t>(w * files_per_writer + k)];
      std::unique_lock lock(f.lock);
      if (f.broken) continue;
      const unsigned dice = static_cast<unsigned>(r.below(100));
      const bool direct = r.percent(35);
      const int d = direct ? fd[k].direct : fd[k].buffered;
      if (d < 0) {
        // Opening failed earlier (counted): try again.
        (direct ? fd[k].direct : fd[k].buffered) = open_one(f, direct);
        continue;
      }
      if (dice < 68) {
        const std::size_t len = r.log_size(max_io);
        std::size_t off;
        if (r.percent(20) && f.shadow.size() + len <= max_data_file) off = f.shadow.size();  // append
        else off = r.below(max_data_file - len + 1);
        const std::uint64_t gen = ++f.generation;
        pattern(buf.get(), len, f.id, gen, off);
        const ssize_t n = ::pwrite(d, buf.get(), len, static_cast<off_t>(off));
        rep_.writes++;
        if (n != static_cast<ssize_t>(len)) {
          rep_.fail("writer: pwrite%s %s off=%zu len=%zu: %s", direct ? "(O_DIRECT)" : "", f.rel.c_str(), off, len,
                    n < 0 ? errname(errno).c_str() : ("short: " + std::to_string(n)).c_str());
          reload(f);
          continue;
        }
        if (off + len > f.shadow.size()) f.shadow.resize(off + len, 0);
        std::memcpy(f.shadow.data() + off, buf.get(), len);
      } else if (dice < 76) {
        const std::size_t size = r.percent(50) ? r.below(f.shadow.size() + 1) : r.below(max_data_file + 1);
        rep_.writes++;
        if (::ftruncate(d, static_cast<off_t>(size)) != 0) {
          rep_.fail("writer: ftruncate %s to %zu: %s", f.rel.c_str(), size, errname(errno).c_str());
          reload(f);
          continue;
        }
        f.shadow.resize(size, 0);
      } else if (dice < 84) {
        static constexpr int modes[] = {0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE};
        const int mode = modes[r.below(3)];
        const std::size_t off = r.below(max_data_file);
        const std::size_t len = std::min(r.log_size(max_io), max_data_file - off);
        rep_.writes++;
        if (::fallocate(d, mode, static_cast<off_t>(off), static_cast<off_t>(len)) != 0) {
          rep_.fail("writer: fallocate(mode %d) %s off=%zu len=%zu: %s", mode, f.rel.c_str(), off, len, errname(errno).c_str());
          reload(f);
          continue;
        }
        if (mode == 0 && off + len > f.shadow.size()) f.shadow.resize(off + len, 0);
        if (mode & FALLOC_FL_PUNCH_HOLE) {
          const std::size_t end = std::min(off + len, f.shadow.size());
          if (off < end) std::memset(f.shadow.data() + off, 0, end - off);
        }
      } else if (dice < 88) {
        const bool data_only = r.percent(50);
        rep_.writes++;
        if ((data_only ? ::fdatasync(d) : ::fsync(d)) != 0)
          rep_.fail("writer: %s %s: %s", data_only ? "fdatasync" : "fsync", f.rel.c_str(), errname(errno).c_str());
      } else if (dice < 93) {
        // A fresh descriptor: OPEN, FLUSH and RELEASE under load.
        int& slot = direct ? fd[k].direct : fd[k].buffered;
        rep_.meta++;
        if (::close(slot) != 0) rep_.fail("writer: close %s: %s", f.rel.c_str(), errname(errno).c_str());
        slot = open_one(f, direct);
      } else {
        // The writer reads back its own file (a read right after its writes, same descriptor).
        check_range(f, d, direct, r, buf.get(), "writer");
      }
    }
    for (auto& x : fd) {
      if (x.buffered >= 0) ::close(x.buffered);
      if (x.direct >= 0) ::close(x.direct);
    }
  }

  // Reads a random range (or the whole file) through `d` and compares it with the shadow. The
  // caller holds f.lock (either way).
  void check_range(data_file& f, int d, bool direct, rng& r, unsigned char* buf, const char* who) {
    const std::size_t size = f.shadow.size();
    std::size_t off, len;
    if (r.percent(20)) {
      off = 0;
      len = max_io;  // the file in max_io pieces below
    } else {
      off = r.below(size + 64 * KiB);
      len = r.log_size(max_io);
    }
    const bool whole = off == 0 && len == max_io;
    for (std::size_t at = off;;) {
      const ssize_t n = read_fully(d, buf, len, static_cast<off_t>(at));
      rep_.reads++;
      const std::size_t expect = at >= size ? 0 : std::min(len, size - at);
      if (n < 0) {
        rep_.fail("%s: pread%s %s off=%zu len=%zu: %s", who, direct ? "(O_DIRECT)" : "", f.rel.c_str(), at, len, errname(errno).c_str());
        return;
      }
      if (static_cast<std::size_t>(n) != expect) {
        rep_.fail("%s: pread%s %s off=%zu len=%zu: %zd bytes, want %zu (size %zu)", who, direct ? "(O_DIRECT)" : "", f.rel.c_str(), at, len,
                  n, expect, size);
        return;
      }
      if (expect == 0) break;  // at or past the end (and the shadow may be empty: no pointer into it)
      if (auto diff = first_difference(buf, f.shadow.data() + at, expect, at); !diff.empty()) {
        rep_.fail("%s: pread%s %s off=%zu len=%zu: content %s (generation %llu)", who, direct ? "(O_DIRECT)" : "", f.rel.c_str(), at, len,
                  diff.c_str(), static_cast<unsigned long long>(f.generation));
        return;
      }
      at += len;
      if (!whole || at >= size) break;
    }
  }

  // ---- readers ----------------------------------------------------------------------------------

  void reader(int i, const std::atomic<bool>& stop) {
    rng r(splitmix(seed_ ^ (0x2000u + static_cast<unsigned>(i))));
    struct fds {
      int buffered = -1, direct = -1;
    };
    std::vector<fds> fd(files_.size());
    auto ensure = [&](std::size_t n, bool direct) -> int {
      int& slot = direct ? fd[n].direct : fd[n].buffered;
      if (slot < 0) {
        slot = ::open(path(files_[n]->rel).c_str(), O_RDONLY | O_CLOEXEC | (direct ? O_DIRECT : 0));
        rep_.meta++;
        if (slot < 0) rep_.fail("reader: open%s %s: %s", direct ? "(O_DIRECT)" : "", files_[n]->rel.c_str(), errname(errno).c_str());
      }
      return slot;
    };
    std::unique_ptr<unsigned char, decltype(&std::free)> buf(static_cast<unsigned char*>(std::aligned_alloc(4096, max_io)), &std::free);
    while (!stop.load(std::memory_order_relaxed)) {
      const std::size_t n = r.below(files_.size());
      data_file& f = *files_[n];
      std::shared_lock lock(f.lock);
      if (f.broken) continue;
      const unsigned dice = static_cast<unsigned>(r.below(100));
      if (dice < 60) {
        const int d = ensure(n, false);
        if (d >= 0) check_range(f, d, false, r, buf.get(), "reader");
      } else if (dice < 80) {
        const int d = ensure(n, true);
        if (d >= 0) check_range(f, d, true, r, buf.get(), "reader");
      } else if (dice < 90) {
        const int d = ensure(n, false);
        if (d >= 0) mapped_read(f, d, r);
      } else if (dice < 95) {
        const int d = ensure(n, r.percent(50));
        struct stat st {};
        rep_.meta++;
        if (d >= 0 && ::fstat(d, &st) != 0) rep_.fail("reader: fstat %s: %s", f.rel.c_str(), errname(errno).c_str());
        else if (d >= 0 && static_cast<std::size_t>(st.st_size) != f.shadow.size())
          rep_.fail("reader: fstat %s: size %lld, want %zu", f.rel.c_str(), static_cast<long long>(st.st_size), f.shadow.size());
      } else {
        // Reopen: every OPEN/RELEASE pair adds to the load.
        for (int* slot : {&fd[n].buffered, &fd[n].direct}) {
          if (*slot >= 0) ::close(*slot);
          *slot = -1;
        }
        rep_.meta++;
      }
    }
    for (auto& x : fd) {
      if (x.buffered >= 0) ::close(x.buffered);
      if (x.direct >= 0) ::close(x.direct);
    }
  }

  // A short-lived shared read-only mapping of part of the file (within its size: no SIGBUS).
  void mapped_read(data_file& f, int d, rng& r) {
    const std::size_t size = f.shadow.size();
    if (size == 0) return;
    const std::size_t page = 4096;
    const std::size_t off = r.below(size) & ~(page - 1);
    const std::size_t len = std::min(r.log_size(max_io), size - off);
    void* p = ::mmap(nullptr, len, PROT_READ, MAP_SHARED, d, static_cast<off_t>(off));
    rep_.mmaps++;
    if (p == MAP_FAILED) {
      rep_.fail("reader: mmap %s off=%zu len=%zu: %s", f.rel.c_str(), off, len, errname(errno).c_str());
      return;
    }
    if (auto diff = first_difference(static_cast<const unsigned char*>(p), f.shadow.data() + off, len, off); !diff.empty())
      rep_.fail("reader: mapped read of %s off=%zu len=%zu: content %s", f.rel.c_str(), off, len, diff.c_str());
    ::munmap(p, len);
  }

  // ---- mmap workers -----------------------------------------------------------------------------

  void mmap_worker(int m, const std::atomic<bool>& stop) {
    rng r(splitmix(seed_ ^ (0x3000u + static_cast<unsigned>(m))));
    struct mapping {
      data_file* f = nullptr;
      int fd = -1;
      unsigned char* p = nullptr;
    };
    std::vector<mapping> maps;
    const std::size_t first = static_cast<std::size_t>(workers_ * files_per_writer + m * files_per_mmap_worker);
    for (int k = 0; k < files_per_mmap_worker; ++k) {
      data_file& f = *files_[first + static_cast<std::size_t>(k)];
      mapping x{&f};
      x.fd = ::open(path(f.rel).c_str(), O_RDWR | O_CLOEXEC);
      rep_.meta++;
      if (x.fd < 0) {
        rep_.fail("mmap: open %s: %s", f.rel.c_str(), errname(errno).c_str());
        continue;
      }
      void* p = ::mmap(nullptr, f.shadow.size(), PROT_READ | PROT_WRITE, MAP_SHARED, x.fd, 0);
      rep_.mmaps++;
      if (p == MAP_FAILED) {
        rep_.fail("mmap: mmap %s: %s", f.rel.c_str(), errname(errno).c_str());
        ::close(x.fd);
        continue;
      }
      x.p = static_cast<unsigned char*>(p);
      maps.push_back(x);
    }
    std::vector<unsigned char> buf(max_io);
    while (!maps.empty() && !stop.load(std::memory_order_relaxed)) {
      mapping& x = maps[r.below(maps.size())];
      data_file& f = *x.f;
      std::unique_lock lock(f.lock);
      const std::size_t size = f.shadow.size();
      const std::size_t off = r.below(size);
      const std::size_t len = std::min(r.log_size(256 * KiB), size - off);
      const unsigned dice = static_cast<unsigned>(r.below(100));
      if (dice < 45) {
        pattern(x.p + off, len, f.id, ++f.generation, off);  // a store through the mapping
        pattern(f.shadow.data() + off, len, f.id, f.generation, off);
        rep_.mmaps++;
      } else if (dice < 65) {
        rep_.mmaps++;
        if (auto diff = first_difference(x.p + off, f.shadow.data() + off, len, off); !diff.empty())
          rep_.fail("mmap: mapped read of %s off=%zu len=%zu: content %s", f.rel.c_str(), off, len, diff.c_str());
      } else if (dice < 75) {
        // Dirty pages go to the server now (WRITE requests from writeback).
        const std::size_t page_off = off & ~std::size_t{4095};
        rep_.mmaps++;
        if (::msync(x.p + page_off, len + (off - page_off), MS_SYNC) != 0)
          rep_.fail("mmap: msync %s: %s", f.rel.c_str(), errname(errno).c_str());
      } else if (dice < 88) {
        // A write through the descriptor must show in the mapping (one page cache).
        pattern(buf.data(), len, f.id, ++f.generation, off);
        const ssize_t n = ::pwrite(x.fd, buf.data(), len, static_cast<off_t>(off));
        rep_.writes++;
        if (n != static_cast<ssize_t>(len)) {
          rep_.fail("mmap: pwrite %s off=%zu len=%zu: %s", f.rel.c_str(), off, len, n < 0 ? errname(errno).c_str() : "short");
          std::memcpy(f.shadow.data(), x.p, size);  // the mapping shows what is there
          continue;
        }
        std::memcpy(f.shadow.data() + off, buf.data(), len);
        if (auto diff = first_difference(x.p + off, buf.data(), len, off); !diff.empty())
          rep_.fail("mmap: %s: the mapping does not show a pwrite: off=%zu len=%zu: %s", f.rel.c_str(), off, len, diff.c_str());
      } else {
        const ssize_t n = read_fully(x.fd, buf.data(), len, static_cast<off_t>(off));
        rep_.reads++;
        if (n != static_cast<ssize_t>(len))
          rep_.fail("mmap: pread %s off=%zu len=%zu: %s", f.rel.c_str(), off, len, n < 0 ? errname(errno).c_str() : "short");
        else if (auto diff = first_difference(buf.data(), f.shadow.data() + off, len, off); !diff.empty())
          rep_.fail("mmap: pread of %s after stores through the mapping: off=%zu len=%zu: content %s", f.rel.c_str(), off, len,
                    diff.c_str());
      }
    }
    // Everything stored through the mappings reaches the server before the final verification.
    for (auto& x : maps) {
      std::unique_lock lock(x.f->lock);
      if (::msync(x.p, x.f->shadow.size(), MS_SYNC) != 0) rep_.fail("mmap: final msync %s: %s", x.f->rel.c_str(), errname(errno).c_str());
      ::munmap(x.p, x.f->shadow.size());
      if (::close(x.fd) != 0) rep_.fail("mmap: close %s: %s", x.f->rel.c_str(), errname(errno).c_str());
    }
  }

  // ---- metadata workers -------------------------------------------------------------------------

  static std::string parent_of(const std::string& rel) { return rel.substr(0, rel.rfind('/')); }
  static bool inside(const std::string& rel, const std::string& dir) {
    return rel.size() > dir.size() && rel.compare(0, dir.size(), dir) == 0 && rel[dir.size()] == '/';
  }

  static nlink_t links(const meta_model& m, const meta_inode* in) {
    nlink_t n = 0;
    for (const auto& [rel, x] : m.at)
      if (x.get() == in) ++n;
    return n;
  }
  static nlink_t subdirs(const meta_model& m, const std::string& dir) {
    nlink_t n = 0;
    for (const auto& [rel, x] : m.at)
      if (x->kind == 'd' && inside(rel, dir) && rel.find('/', dir.size() + 1) == std::string::npos) ++n;
    return n;
  }
  static std::vector<std::string> children(const meta_model& m, const std::string& dir) {
    std::vector<std::string> out;
    for (const auto& [rel, in] : m.at)
      if (inside(rel, dir) && rel.find('/', dir.size() + 1) == std::string::npos) out.push_back(rel.substr(dir.size() + 1));
    return out;
  }
  // A random entry of the model of kind `kinds` (any of the letters), or "" when none; never base.
  static std::string pick(const meta_model& m, rng& r, const char* kinds) {
    std::vector<const std::string*> c;
    for (const auto& [rel, x] : m.at)
      if (rel != m.base && std::strchr(kinds, x->kind)) c.push_back(&rel);
    return c.empty() ? std::string() : *c[r.below(c.size())];
  }
  // A random directory (base included); "" only when base itself is gone.
  static std::string pick_dir(const meta_model& m, rng& r) {
    std::vector<const std::string*> c;
    for (const auto& [rel, x] : m.at)
      if (x->kind == 'd') c.push_back(&rel);
    return c.empty() ? std::string() : *c[r.below(c.size())];
  }
  static std::string fresh_name(meta_model& m, rng& r) {
    std::string name = "n" + std::to_string(m.next_name++);
    if (r.percent(5)) name += std::string(200, 'x');  // long names too (NAME_MAX is 255)
    return name;
  }

  // The model's idea of the subtree after an unexpected result: what is there now. Hard links are
  // recognised by inode number.
  void rescan(meta_model& m) {
    m.at.clear();
    std::map<ino_t, std::shared_ptr<meta_inode>> by_ino;
    std::function<void(const std::string&)> walk = [&](const std::string& rel) {
      struct stat st {};
      if (::lstat(path(rel).c_str(), &st) != 0) return;
      auto& in = by_ino[st.st_ino];
      if (!in) {
        in = std::make_shared<meta_inode>();
        in->kind = kind_of(st.st_mode);
        in->mode = st.st_mode & 07777;
        if (in->kind == 'f') in->data = slurp(path(rel)).value_or("");
        if (in->kind == 'l') {
          std::vector<char> buf(4096);
          const ssize_t n = ::readlink(path(rel).c_str(), buf.data(), buf.size());
          if (n > 0) in->data.assign(buf.data(), static_cast<std::size_t>(n));
        }
        if (in->kind != 'l') in->xattrs = user_xattrs(path(rel)).value_or(std::map<std::string, std::string>{});
      }
      m.at[rel] = in;
      if (in->kind != 'd') return;
      DIR* d = ::opendir(path(rel).c_str());
      if (!d) return;
      std::vector<std::string> names;
      while (dirent* e = ::readdir(d))
        if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) names.emplace_back(e->d_name);
      ::closedir(d);
      for (const auto& n : names) walk(rel + "/" + n);
    };
    walk(m.base);
  }

  // Checks one operation's outcome: `rc` < 0 means it failed with errno. `want` 0: it must succeed;
  // otherwise it must fail with that errno. Returns whether it went as the model said.
  bool outcome(meta_model& m, long rc, int want, const char* op, const std::string& rel, const std::string& rel2 = {}) {
    const int e = rc < 0 ? errno : 0;
    rep_.meta++;
    if (want == 0 && rc >= 0) return true;
    if (want != 0 && rc < 0 && e == want) return true;
    rep_.fail("meta: %s %s%s%s: %s, want %s", op, rel.c_str(), rel2.empty() ? "" : " -> ", rel2.c_str(),
              rc < 0 ? errname(e).c_str() : "success", want ? errname(want).c_str() : "success");
    rescan(m);
    return false;
  }

  static std::string random_bytes(rng& r, std::size_t max) {
    std::string s(r.below(max + 1), '\0');
    for (auto& c : s) c = static_cast<char>(r.below(256));
    return s;
  }

  // Writes `data` to an open descriptor in full; false (errno set) on failure.
  static bool write_all(int fd, const std::string& data) {
    std::size_t done = 0;
    while (done < data.size()) {
      const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
      if (n <= 0) return false;
      done += static_cast<std::size_t>(n);
    }
    return true;
  }

  void meta_worker(meta_model& m, int k, const std::atomic<bool>& stop) {
    rng r(splitmix(seed_ ^ (0x4000u + static_cast<unsigned>(k))));
    static constexpr mode_t file_modes[] = {0600, 0640, 0644, 0664, 0400, 0444, 0755};
    static constexpr mode_t dir_modes[] = {0700, 0711, 0750, 0755, 0775};
    while (!stop.load(std::memory_order_relaxed)) {
      if (!m.at.count(m.base)) {
        // A rescan found no subtree at all (the mount is gone?): nothing left to model.
        rep_.fail("meta: %s has vanished: this worker stops", m.base.c_str());
        return;
      }
      const bool shrink = m.at.size() > meta_entries_cap;
      const unsigned dice = static_cast<unsigned>(r.below(100));
      if (shrink && dice < 30) {
        meta_remove_subtree(m, r);
      } else if (dice < 12 && !shrink) {
        // create a file with some content
        const std::string rel = pick_dir(m, r) + "/" + fresh_name(m, r);
        const mode_t mode = file_modes[r.below(std::size(file_modes))];
        const std::string data = random_bytes(r, r.percent(10) ? 200 * KiB : 300);
        const int fd = ::open(path(rel).c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
        if (!outcome(m, fd, 0, "create", rel)) continue;
        const bool wrote = write_all(fd, data);
        const int e = errno;
        ::close(fd);
        auto in = std::make_shared<meta_inode>();
        in->kind = 'f';
        in->mode = mode;
        in->data = data;
        m.at[rel] = in;
        errno = e;
        outcome(m, wrote ? 0 : -1, 0, "write", rel);
      } else if (dice < 14) {
        // O_EXCL on any existing name
        const std::string rel = pick(m, r, "fdl");
        if (rel.empty()) continue;
        const int fd = ::open(path(rel).c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (outcome(m, fd, EEXIST, "create (exists)", rel) || fd < 0) continue;
        ::close(fd);
      } else if (dice < 20) {
        // overwrite a file (O_TRUNC)
        const std::string rel = pick(m, r, "f");
        if (rel.empty()) continue;
        const std::string data = random_bytes(r, 4096);
        const int fd = ::open(path(rel).c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
        if (!outcome(m, fd, 0, "open(O_TRUNC)", rel)) continue;
        const bool wrote = write_all(fd, data);
        const int e = errno;
        ::close(fd);
        m.at[rel]->data = data;
        errno = e;
        outcome(m, wrote ? 0 : -1, 0, "write", rel);
      } else if (dice < 27) {
        // read a file back
        const std::string rel = pick(m, r, "f");
        if (rel.empty()) continue;
        auto bytes = slurp(path(rel));
        rep_.reads++;
        if (!bytes) {
          outcome(m, -1, 0, "read", rel);
        } else if (*bytes != m.at[rel]->data) {
          rep_.fail("meta: read %s: %zu bytes unlike the model's %zu (or different bytes)", rel.c_str(), bytes->size(),
                    m.at[rel]->data.size());
          rescan(m);
        }
      } else if (dice < 37) {
        meta_rename(m, r);
      } else if (dice < 43) {
        // hard link (sometimes of a directory: EPERM; sometimes onto an existing name: EEXIST)
        const std::string src = pick(m, r, r.percent(10) ? "d" : "f");
        if (src.empty()) continue;
        const bool onto_existing = r.percent(10);
        const std::string dst = onto_existing ? pick(m, r, "fdl") : pick_dir(m, r) + "/" + fresh_name(m, r);
        if (dst.empty() || (shrink && !onto_existing)) continue;
        // An existing name is refused before the source's type is looked at.
        const int want = onto_existing ? EEXIST : m.at[src]->kind == 'd' ? EPERM : 0;
        if (outcome(m, ::link(path(src).c_str(), path(dst).c_str()), want, "link", src, dst) && want == 0) m.at[dst] = m.at[src];
      } else if (dice < 51) {
        // unlink (a directory: EISDIR; a name that is not there: ENOENT)
        const unsigned which = static_cast<unsigned>(r.below(10));
        const std::string rel = which == 0 ? pick(m, r, "d") : which == 1 ? pick_dir(m, r) + "/absent" : pick(m, r, "fl");
        if (rel.empty()) continue;
        const int want = which == 0 ? EISDIR : which == 1 ? ENOENT : 0;
        if (outcome(m, ::unlink(path(rel).c_str()), want, "unlink", rel) && want == 0) m.at.erase(rel);
      } else if (dice < 57) {
        // mkdir (an existing name: EEXIST)
        const bool existing = r.percent(10);
        const std::string rel = existing ? pick(m, r, "fdl") : pick_dir(m, r) + "/" + fresh_name(m, r);
        if (rel.empty() || (shrink && !existing)) continue;
        const mode_t mode = dir_modes[r.below(std::size(dir_modes))];
        if (outcome(m, ::mkdir(path(rel).c_str(), mode), existing ? EEXIST : 0, "mkdir", rel) && !existing) {
          auto in = std::make_shared<meta_inode>();
          in->kind = 'd';
          in->mode = mode;
          m.at[rel] = in;
        }
      } else if (dice < 62) {
        // rmdir (not empty: ENOTEMPTY; not a directory: ENOTDIR)
        const std::string rel = r.percent(10) ? pick(m, r, "fl") : pick(m, r, "d");
        if (rel.empty()) continue;
        const auto& in = *m.at[rel];
        const int want = in.kind != 'd' ? ENOTDIR : children(m, rel).empty() ? 0 : ENOTEMPTY;
        if (outcome(m, ::rmdir(path(rel).c_str()), want, "rmdir", rel) && want == 0) m.at.erase(rel);
      } else if (dice < 67) {
        // symlink: a target that may or may not resolve; never followed by this test
        if (shrink) continue;
        const std::string rel = pick_dir(m, r) + "/" + fresh_name(m, r);
        std::string target = r.percent(50) ? "../n" + std::to_string(r.below(m.next_name + 1))
                                           : "/nowhere/" + std::to_string(r.below(1000000));
        if (r.percent(5)) target = std::string(1000, 't');
        if (outcome(m, ::symlink(target.c_str(), path(rel).c_str()), 0, "symlink", rel)) {
          auto in = std::make_shared<meta_inode>();
          in->kind = 'l';
          in->mode = 0777;
          in->data = target;
          m.at[rel] = in;
        }
      } else if (dice < 70) {
        const std::string rel = pick(m, r, "l");
        if (rel.empty()) continue;
        std::vector<char> buf(4096);
        const ssize_t n = ::readlink(path(rel).c_str(), buf.data(), buf.size());
        if (outcome(m, n, 0, "readlink", rel) && std::string(buf.data(), static_cast<std::size_t>(n)) != m.at[rel]->data) {
          rep_.fail("meta: readlink %s: a target unlike the model's", rel.c_str());
          rescan(m);
        }
      } else if (dice < 77) {
        meta_readdir(m, r);
      } else if (dice < 86) {
        meta_stat(m, r);
      } else if (dice < 91) {
        // chmod
        const std::string rel = pick(m, r, "fd");
        if (rel.empty()) continue;
        auto& in = *m.at[rel];
        const mode_t mode = in.kind == 'd' ? dir_modes[r.below(std::size(dir_modes))] : file_modes[r.below(std::size(file_modes))];
        if (outcome(m, ::chmod(path(rel).c_str(), mode), 0, "chmod", rel)) in.mode = mode;
      } else {
        meta_xattr(m, r);
      }
    }
  }

  void meta_rename(meta_model& m, rng& r) {
    const std::string src = pick(m, r, "fdl");
    if (src.empty()) return;
    const bool onto_existing = r.percent(40);
    const std::string dst = onto_existing ? pick(m, r, "fdl") : pick_dir(m, r) + "/" + fresh_name(m, r);
    // The same path, or a target that is an ancestor of the source: left out (kernel-specific errnos).
    if (dst.empty() || dst == src || inside(src, dst)) return;
    const auto& from = m.at[src];
    int want = 0;
    if (from->kind == 'd' && inside(dst, src)) {
      want = EINVAL;  // into its own subtree
    } else if (onto_existing) {
      const auto& to = m.at[dst];
      if (to == from) want = -1;  // two links of one inode: rename does nothing
      else if (from->kind != 'd' && to->kind == 'd') want = EISDIR;
      else if (from->kind == 'd' && to->kind != 'd') want = ENOTDIR;
      else if (to->kind == 'd' && !children(m, dst).empty()) want = ENOTEMPTY;
    }
    if (!outcome(m, ::rename(path(src).c_str(), path(dst).c_str()), want < 0 ? 0 : want, "rename", src, dst) || want != 0) return;
    // Move src and everything under it; the replaced target (a non-directory or an empty directory) loses its name.
    m.at.erase(dst);
    std::vector<std::pair<std::string, std::shared_ptr<meta_inode>>> moved;
    for (auto it = m.at.begin(); it != m.at.end();) {
      if (it->first == src || inside(it->first, src)) {
        moved.emplace_back(dst + it->first.substr(src.size()), it->second);
        it = m.at.erase(it);
      } else {
        ++it;
      }
    }
    for (auto& [rel, in] : moved) m.at[rel] = in;
  }

  // Removes a random directory's whole subtree (not base), each step checked: keeps the tree bounded.
  void meta_remove_subtree(meta_model& m, rng& r) {
    const std::string top = pick(m, r, "d");
    if (top.empty()) return;
    std::vector<std::string> victims;
    for (const auto& [rel, in] : m.at)
      if (rel == top || inside(rel, top)) victims.push_back(rel);
    // Deepest first: every directory is empty when its turn comes.
    std::sort(victims.begin(), victims.end(), [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
    for (const auto& rel : victims) {
      const bool dir = m.at[rel]->kind == 'd';
      if (!outcome(m, dir ? ::rmdir(path(rel).c_str()) : ::unlink(path(rel).c_str()), 0, dir ? "rmdir" : "unlink", rel)) return;
      m.at.erase(rel);
    }
  }

  void meta_readdir(meta_model& m, rng& r) {
    const std::string dir = pick_dir(m, r);
    DIR* d = ::opendir(path(dir).c_str());
    if (!outcome(m, d ? 0 : -1, 0, "opendir", dir)) return;
    std::map<std::string, unsigned char> got;
    errno = 0;
    while (dirent* e = ::readdir(d)) {
      if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) got[e->d_name] = e->d_type;
      errno = 0;
    }
    const int e = errno;
    ::closedir(d);
    errno = e;
    if (!outcome(m, e ? -1 : 0, 0, "readdir", dir)) return;
    std::map<std::string, unsigned char> want;
    for (const auto& name : children(m, dir)) want[name] = dtype_of(m.at[dir + "/" + name]->kind);
    for (auto& [name, t] : got)
      if (t == DT_UNKNOWN && want.count(name)) t = want[name];
    if (got != want) {
      std::string extra, missing;
      for (const auto& [n, t] : got)
        if (!want.count(n) || want[n] != t) extra += " " + n;
      for (const auto& [n, t] : want)
        if (!got.count(n) || got[n] != t) missing += " " + n;
      rep_.fail("meta: readdir %s: unexpected [%s ], missing or of another type [%s ]", dir.c_str(), extra.c_str(), missing.c_str());
      rescan(m);
    }
  }

  void meta_stat(meta_model& m, rng& r) {
    if (r.percent(5)) {
      const std::string rel = pick_dir(m, r) + "/absent";
      struct stat st {};
      outcome(m, ::lstat(path(rel).c_str(), &st), ENOENT, "lstat", rel);
      return;
    }
    const std::string rel = r.percent(10) ? m.base : pick(m, r, "fdl");
    if (rel.empty()) return;
    struct stat st {};
    if (!outcome(m, ::lstat(path(rel).c_str(), &st), 0, "lstat", rel)) return;
    const auto& in = *m.at[rel];
    std::string wrong;
    if (kind_of(st.st_mode) != in.kind) wrong += " type";
    if (in.kind != 'l' && (st.st_mode & 07777) != in.mode) wrong += " mode " + std::to_string(st.st_mode & 07777);
    if (in.kind != 'd' && static_cast<std::size_t>(st.st_size) != in.data.size()) wrong += " size " + std::to_string(st.st_size);
    const nlink_t want_links = in.kind == 'd' ? 2 + subdirs(m, rel) : links(m, &in);
    if (st.st_nlink != want_links) wrong += " nlink " + std::to_string(st.st_nlink) + " (want " + std::to_string(want_links) + ")";
    if (!wrong.empty()) {
      rep_.fail("meta: lstat %s: unlike the model:%s", rel.c_str(), wrong.c_str());
      rescan(m);
    }
  }

  void meta_xattr(meta_model& m, rng& r) {
    const std::string rel = pick(m, r, "fd");
    if (rel.empty()) return;
    auto& in = *m.at[rel];
    const std::string name = "user.k" + std::to_string(r.below(4));
    const bool present = in.xattrs.count(name) != 0;
    const unsigned dice = static_cast<unsigned>(r.below(100));
    const std::string p = path(rel);
    if (dice < 40) {
      const std::string value = random_bytes(r, r.percent(5) ? 16 * KiB : 200);
      const int flags = r.percent(30) ? XATTR_CREATE : r.percent(30) ? XATTR_REPLACE : 0;
      const int want = flags == XATTR_CREATE && present ? EEXIST : flags == XATTR_REPLACE && !present ? ENODATA : 0;
      if (outcome(m, ::setxattr(p.c_str(), name.c_str(), value.data(), value.size(), flags), want, "setxattr", rel, name) && want == 0)
        in.xattrs[name] = value;
    } else if (dice < 70) {
      std::vector<char> buf(64 * KiB);
      const ssize_t n = ::getxattr(p.c_str(), name.c_str(), buf.data(), buf.size());
      if (outcome(m, n, present ? 0 : ENODATA, "getxattr", rel, name) && present &&
          std::string(buf.data(), static_cast<std::size_t>(n)) != in.xattrs[name]) {
        rep_.fail("meta: getxattr %s %s: a value unlike the model's", rel.c_str(), name.c_str());
        rescan(m);
      }
    } else if (dice < 85) {
      std::vector<char> buf(64 * KiB);
      const ssize_t n = ::listxattr(p.c_str(), buf.data(), buf.size());
      if (!outcome(m, n, 0, "listxattr", rel)) return;
      std::set<std::string> got, want;
      for (ssize_t i = 0; i < n;) {
        std::string x(buf.data() + i);
        i += static_cast<ssize_t>(x.size()) + 1;
        if (x.rfind("user.", 0) == 0) got.insert(x);
      }
      for (const auto& [k, v] : in.xattrs) want.insert(k);
      if (got != want) {
        rep_.fail("meta: listxattr %s: %zu user names, want %zu", rel.c_str(), got.size(), want.size());
        rescan(m);
      }
    } else {
      if (outcome(m, ::removexattr(p.c_str(), name.c_str()), present ? 0 : ENODATA, "removexattr", rel, name) && present)
        in.xattrs.erase(name);
    }
  }

  std::string root_;
  int workers_;
  int mmap_workers_ = 1;
  std::uint64_t seed_;
  shared_report& rep_;
  std::vector<std::unique_ptr<data_file>> files_;
  std::vector<std::unique_ptr<meta_model>> metas_;
};

// ---------------------------------------------------------------------------------------------
// The caller's side: one example over one transport.

struct run_options {
  std::string fs;         // "memfs" or "passthrough"
  std::string transport;  // "ring", "dev", "pool" (Linux 7.3: buffer pools, zero-copy where the
                          // example opens files for it) or "pool-copy" (pools, --zero-copy off)
  std::string binary;     // the example's executable
  double seconds = 30;
  int workers = 4;
  std::uint64_t seed = 1;
};

struct run_result {
  std::string fs, transport;
  std::uint64_t reads = 0, writes = 0, meta = 0, mmaps = 0, errors = 0;
  double load_seconds = 0, total_seconds = 0, rss_peak_mib = 0;
  std::vector<std::string> messages;  // the first max_messages, for the report
  std::string server_log_tail;        // when anything failed: the end of the server's log
  std::uint64_t ops() const { return reads + writes + meta + mmaps; }
  bool passed() const { return errors == 0; }
  // "soak: memfs ring: 123456 ops (read N, write N, meta N, mmap N), 0 errors, 40.0 s, server rss peak N MiB"
  std::string line() const {
    char buf[320];
    std::snprintf(buf, sizeof buf,
                  "soak: %s %s: %llu ops (read %llu, write %llu, meta %llu, mmap %llu), %llu errors, %.1f s, server rss peak %.0f MiB",
                  fs.c_str(), transport.c_str(), static_cast<unsigned long long>(ops()), static_cast<unsigned long long>(reads),
                  static_cast<unsigned long long>(writes), static_cast<unsigned long long>(meta), static_cast<unsigned long long>(mmaps),
                  static_cast<unsigned long long>(errors), load_seconds, rss_peak_mib);
    return buf;
  }
};


// A tmpfs of our own (with a size limit) as passthrough's SOURCE; detached when done.
class backing_tmpfs {
 public:
  backing_tmpfs() {
    char tmpl[] = "/tmp/corofuse-soak-backing-XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    if (::mount("tmpfs", dir_.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1g") != 0) {
      const int e = errno;
      ::rmdir(dir_.c_str());
      throw std::runtime_error("mounting the backing tmpfs failed: " + errname(e));
    }
  }
  ~backing_tmpfs() {
    ::umount2(dir_.c_str(), MNT_DETACH);
    ::rmdir(dir_.c_str());
  }
  backing_tmpfs(const backing_tmpfs&) = delete;
  backing_tmpfs& operator=(const backing_tmpfs&) = delete;
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
};

// The shared report, mapped before the fork.
class shared_report_mapping {
 public:
  shared_report_mapping() {
    void* p = ::mmap(nullptr, sizeof(shared_report), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap of the shared report failed");
    rep_ = new (p) shared_report;
  }
  ~shared_report_mapping() {
    rep_->~shared_report();
    ::munmap(rep_, sizeof(shared_report));
  }
  shared_report_mapping(const shared_report_mapping&) = delete;
  shared_report_mapping& operator=(const shared_report_mapping&) = delete;
  shared_report& operator*() const { return *rep_; }
  shared_report* operator->() const { return rep_; }

 private:
  shared_report* rep_;
};

enum class wait_outcome { got, closed, timed_out };

// Waits for one byte from the client child until `deadline`. `closed`: the child has closed its end,
// i.e. it is exiting (a process blocked in a FUSE request never gets that far), so waitpid will not block.
inline wait_outcome wait_byte(int fd, std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) return wait_outcome::timed_out;
    pollfd p{fd, POLLIN, 0};
    const int n = ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 1000)));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return wait_outcome::closed;
    if (n == 0) continue;
    char c;
    return ::read(fd, &c, 1) == 1 ? wait_outcome::got : wait_outcome::closed;
  }
}

inline double vm_hwm_mib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::strtod(line.c_str() + 6, nullptr) / 1024.0;
  return 0;
}

inline bool listed_in_proc_mounts(const std::string& dir) {
  std::ifstream in("/proc/mounts");
  std::string dev, point;
  std::string rest;
  while (in >> dev >> point && std::getline(in, rest))
    if (point == dir) return true;
  return false;
}

// One example over one transport: start it, load it, verify, stop it, verify its backing files.
inline run_result run_one(const run_options& o) {
  using clock = std::chrono::steady_clock;
  const auto started = clock::now();
  run_result res;
  res.fs = o.fs;
  res.transport = o.transport;
  auto fail = [&](const std::string& msg) {
    ++res.errors;
    if (res.messages.size() < max_messages) res.messages.push_back(msg);
  };
  // The client child's limits: the load, then a generous margin for setup and verification.
  const int alarm_seconds = static_cast<int>(o.seconds) + 180;
  const auto deadline_after_load = std::chrono::seconds(alarm_seconds + 10);

  try {
    std::unique_ptr<backing_tmpfs> backing;
    if (o.fs == "passthrough") backing = std::make_unique<backing_tmpfs>();
    std::vector<std::string> leading;
    if (backing) leading.push_back(backing->dir());
    // --stats: the server prints its per-opcode counters at exit, and says which transport served.
    std::vector<std::string> args{"--stats", "--transport", o.transport == "pool-copy" ? "pool" : o.transport};
    if (o.transport == "pool-copy") args.insert(args.end(), {"--zero-copy", "off"});
    server srv(o.binary, args, -1, -1, leading);
    const std::string mountpoint = srv.dir();
    if (!srv.mounted()) {
      fail(o.fs + " did not mount (" + (srv.exited() ? "exited with status " + std::to_string(srv.exit_status()) : "still running") +
           "); log:\n" + srv.log());
      return res;
    }
    const dev_t dev = srv.device();
    shared_report_mapping rep;
    int to_child[2], from_child[2];
    if (::pipe2(to_child, O_CLOEXEC) != 0 || ::pipe2(from_child, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");

    const pid_t child = ::fork();
    if (child < 0) throw std::runtime_error("fork failed");
    if (child == 0) {
      // A crash must end the child plainly (its signal is reported), not run a handler inherited
      // from the caller (Catch2's would print a test report from the child).
      for (int sig : {SIGSEGV, SIGBUS, SIGABRT, SIGILL, SIGFPE, SIGALRM}) ::signal(sig, SIG_DFL);
      ::alarm(static_cast<unsigned>(alarm_seconds));
      ::close(to_child[1]);
      ::close(from_child[0]);
      ::umask(0);  // modes in the models are the modes asked for
      int rc = 0;
      try {
        client_load load(mountpoint, o.workers, o.seed, *rep);
        if (load.setup()) load.run(o.seconds);
        load.verify_tree(mountpoint, "the mount");
        // Every descriptor and mapping in the mount is closed: the server may stop.
        if (::write(from_child[1], "1", 1) != 1) ::_exit(96);
        char c = 0;
        if (::read(to_child[0], &c, 1) != 1) ::_exit(97);
        if (c == 'b') load.verify_tree(backing->dir(), "the backing directory");
        if (::write(from_child[1], "2", 1) != 1) ::_exit(96);
      } catch (const std::exception& e) {
        rep->fail("client: exception: %s", e.what());
        rc = 98;
      }
      ::_exit(rc);
    }
    ::close(to_child[0]);
    ::close(from_child[1]);
    struct fds_closer {
      int a, b;
      ~fds_closer() {
        ::close(a);
        ::close(b);
      }
    } closer{to_child[1], from_child[0]};
    bool child_reaped = false;
    int child_status = 0;
    // A child stuck in a FUSE request cannot be killed until the connection is aborted.
    auto end_child = [&](const std::string& why) {
      fail("the client " + why + ": aborting the connection and killing it");
      corofuse::session::abort_connection(dev);
      ::kill(child, SIGKILL);
      ::waitpid(child, &child_status, 0);
      child_reaped = true;
    };

    auto how = [](int status) {
      return WIFEXITED(status) ? "exit " + std::to_string(WEXITSTATUS(status)) : "signal " + std::to_string(WTERMSIG(status));
    };
    const wait_outcome load_done = wait_byte(from_child[0],
                                             started +
                                                 std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(o.seconds)) +
                                                 deadline_after_load);
    const bool loaded = load_done == wait_outcome::got;
    if (load_done == wait_outcome::closed) {
      ::waitpid(child, &child_status, 0);
      child_reaped = true;
      fail("the client ended early: " + how(child_status));
    } else if (load_done == wait_outcome::timed_out) {
      end_child("did not finish its load and verification in time");
    }

    auto log_tail = [&] {
      const std::string log = srv.log();
      return log.substr(log.size() > 4000 ? log.size() - 4000 : 0);
    };
    if (srv.exited()) {
      // Nobody asked it to stop: it went away under load (crash, or its mount or connection was taken away).
      fail(o.fs + " ended during the load with status " + std::to_string(srv.exit_status()));
      res.server_log_tail = log_tail();
    }
    res.rss_peak_mib = vm_hwm_mib(srv.pid());
    srv.signal(SIGTERM);
    const bool ended = srv.wait_exit(30);
    const std::string log = srv.log();
    if (!ended) fail(o.fs + " did not exit within 30 s of SIGTERM");
    else if (srv.exit_status() != 0) fail(o.fs + " exited with status " + std::to_string(srv.exit_status()));
    if (o.transport == "ring" && log.find("serving over FUSE-over-io_uring") == std::string::npos)
      fail(o.fs + " did not serve over the ring");
    if ((o.transport == "pool" || o.transport == "pool-copy") && log.find("with buffer pools") == std::string::npos)
      fail(o.fs + " did not serve over buffer pools");
    // passthrough opens regular files for zero-copy: over "pool" its READs and WRITEs must have
    // been zero-copy (a soak of the zero-copy path with none would prove nothing); never over
    // "pool-copy", nor for memfs, which never opens for it.
    const bool zero_copied = log.find("counter ZERO_COPY") != std::string::npos;
    if (o.transport == "pool" && o.fs == "passthrough" && !zero_copied) fail("passthrough served no request zero-copy over pools");
    if ((o.transport == "pool-copy" || o.fs != "passthrough") && zero_copied) fail(o.fs + " served requests zero-copy over " + o.transport);
    if (srv.mounted() || listed_in_proc_mounts(mountpoint)) fail(o.fs + " left its mount behind at " + mountpoint);

    if (loaded) {
      const char command = backing ? 'b' : 'd';
      // The child now touches no FUSE mount (its mount is gone): a timeout here is only a slow tmpfs walk.
      const bool sent = ::write(to_child[1], &command, 1) == 1;
      if (sent && wait_byte(from_child[0], clock::now() + std::chrono::seconds(120)) == wait_outcome::timed_out)
        end_child("did not finish verifying the backing directory in time");
      if (!child_reaped) {
        ::waitpid(child, &child_status, 0);
        child_reaped = true;
      }
      if (!WIFEXITED(child_status) || WEXITSTATUS(child_status) != 0) fail("the client ended with " + how(child_status));
    }
    if ((res.errors > 0 || rep->errors > 0) && res.server_log_tail.empty()) res.server_log_tail = log_tail();
    srv.stop_and_clean();
    if (listed_in_proc_mounts(mountpoint)) fail("a mount is left behind at " + mountpoint);

    res.reads = rep->reads;
    res.writes = rep->writes;
    res.meta = rep->meta;
    res.mmaps = rep->mmaps;
    res.errors += rep->errors;
    res.load_seconds = static_cast<double>(rep->load_ns.load()) / 1e9;
    // The client's messages first (what went wrong first), but always room for the caller's few
    // (a server that died, a leftover mount): they may explain all the rest.
    std::vector<std::string> messages;
    const int room = max_messages - static_cast<int>(res.messages.size());
    for (int i = 0; i < std::min({rep->messages.load(), max_messages, room}); ++i) messages.emplace_back(rep->message[i]);
    messages.insert(messages.end(), res.messages.begin(), res.messages.end());
    res.messages = std::move(messages);
  } catch (const std::exception& e) {
    fail(std::string("harness: ") + e.what());
  }
  res.total_seconds = std::chrono::duration<double>(clock::now() - started).count();
  return res;
}

// An example's executable in this binary's runfiles (a test's, or `bazel run`'s), or "" when none is found.
inline std::string find_example(const std::string& name) {
  const std::string rel = "examples/" + name + "/" + name;
  std::vector<std::string> candidates;
  if (const char* d = std::getenv("TEST_SRCDIR")) candidates.push_back(std::string(d) + "/corofuse/" + rel);
  if (const char* d = std::getenv("RUNFILES_DIR")) candidates.push_back(std::string(d) + "/corofuse/" + rel);
  char self[4096];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n > 0) {
    self[n] = 0;
    candidates.push_back(std::string(self) + ".runfiles/corofuse/" + rel);
  }
  candidates.push_back(rel);  // `bazel run` starts in the runfiles' workspace directory
  // Installed beside it (the VM suite puts every binary in /usr/local/bin), or on PATH.
  if (const char* path = std::getenv("PATH")) {
    std::string_view rest(path);
    while (!rest.empty()) {
      const auto colon = rest.find(':');
      candidates.push_back(std::string(rest.substr(0, colon)) + "/" + name);
      rest = colon == std::string_view::npos ? std::string_view{} : rest.substr(colon + 1);
    }
  }
  for (const auto& c : candidates)
    if (::access(c.c_str(), X_OK) == 0) return c;
  return {};
}

}  // namespace corofuse::soak
