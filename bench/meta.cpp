// Metadata micro-benchmarks on a directory, printing one "name value unit" line each:
//   meta stat FILE N [T]    N stat(2) calls in each of T threads (default 1)
//                                                                  -> stat_us (per call, as each
//                                                                     thread waits for it)
//   meta create DIR N       N files created, then unlinked          -> create_unlink_files_per_s
//   meta readdir DIR N R    a directory of N entries listed R times  -> readdir_ms (per full listing)
//   meta lsl DIR N R        the same, with an lstat of every entry,  -> readdir_stat_ms
//                           as ls -l does
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <atomic>
#include <string>
#include <thread>
#include <vector>

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
int usage() {
  std::fprintf(stderr, "usage: meta stat FILE N [THREADS] | meta create DIR N | meta readdir|lsl DIR N REPEAT\n");
  return 2;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) return usage();
  const std::string mode = argv[1], path = argv[2];
  const long n = std::atol(argv[3]);
  if (n <= 0) return usage();
  if (mode == "stat") {
    const long threads = argc > 4 ? std::atol(argv[4]) : 1;
    if (threads < 1 || threads > 256) return usage();
    // Each thread's mean latency, averaged: all threads start together and run the same count.
    std::vector<double> per(static_cast<std::size_t>(threads));
    std::atomic<long> failed{0};
    std::vector<std::thread> pool;
    for (long t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        struct stat st {};
        auto t0 = std::chrono::steady_clock::now();
        for (long i = 0; i < n; ++i)
          if (::stat(path.c_str(), &st) != 0) return (void)failed.fetch_add(1);
        per[static_cast<std::size_t>(t)] = seconds_since(t0) * 1e6 / static_cast<double>(n);
      });
    for (auto& th : pool) th.join();
    if (failed.load() != 0) return std::perror("stat"), 1;
    double sum = 0;
    for (double v : per) sum += v;
    std::printf("stat_us %.3f us\n", sum / static_cast<double>(threads));
    return 0;
  }
  if (mode == "create") {
    char name[4096];
    auto t0 = std::chrono::steady_clock::now();
    for (long i = 0; i < n; ++i) {
      std::snprintf(name, sizeof name, "%s/c%ld", path.c_str(), i);
      int fd = ::open(name, O_CREAT | O_EXCL | O_WRONLY, 0644);
      if (fd < 0 || ::close(fd) != 0) return std::perror("create"), 1;
    }
    for (long i = 0; i < n; ++i) {
      std::snprintf(name, sizeof name, "%s/c%ld", path.c_str(), i);
      if (::unlink(name) != 0) return std::perror("unlink"), 1;
    }
    std::printf("create_unlink_files_per_s %.0f files/s\n", static_cast<double>(n) / seconds_since(t0));
    return 0;
  }
  if (mode == "readdir" || mode == "lsl") {
    const bool with_stat = mode == "lsl";
    if (argc < 5) return usage();
    const long repeat = std::atol(argv[4]);
    char name[4096];
    std::snprintf(name, sizeof name, "%s/list", path.c_str());
    const std::string dir = name;
    if (::mkdir(dir.c_str(), 0755) != 0) return std::perror("mkdir"), 1;
    for (long i = 0; i < n; ++i) {
      std::snprintf(name, sizeof name, "%s/entry-with-a-longish-name-%06ld", dir.c_str(), i);
      int fd = ::open(name, O_CREAT | O_EXCL | O_WRONLY, 0644);
      if (fd < 0 || ::close(fd) != 0) return std::perror("create"), 1;
    }
    long seen = 0;
    auto t0 = std::chrono::steady_clock::now();
    for (long r = 0; r < repeat; ++r) {
      DIR* d = ::opendir(dir.c_str());
      if (!d) return std::perror("opendir"), 1;
      while (dirent* e = ::readdir(d)) {
        ++seen;
        struct stat st;
        if (with_stat && ::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) return std::perror("fstatat"), 1;
      }
      ::closedir(d);
    }
    const double per = seconds_since(t0) * 1e3 / static_cast<double>(repeat);
    if (seen != repeat * (n + 2)) std::fprintf(stderr, "meta: saw %ld entries, expected %ld\n", seen, repeat * (n + 2));
    for (long i = 0; i < n; ++i) {
      std::snprintf(name, sizeof name, "%s/entry-with-a-longish-name-%06ld", dir.c_str(), i);
      ::unlink(name);
    }
    ::rmdir(dir.c_str());
    std::printf("%s %.3f ms\n", with_stat ? "readdir_stat_ms" : "readdir_ms", per);
    return seen == repeat * (n + 2) ? 0 : 1;
  }
  return usage();
}
