// The node layer's notifications through a live mount, on both transports. A small node-based
// filesystem is served in a forked child (in_process_mount.hpp) with a thread that takes commands
// from a pipe and changes the tree behind the kernel's back:
//   set NAME TEXT       a file's bytes change, silently (no notification)
//   notify-data NAME    tree.invalidate_data(node)
//   add NAME TEXT       tree.add(root, NAME, new file)        (notifies by itself)
//   remove NAME         tree.remove(root, NAME)               (notifies by itself)
//   veil/unveil NAME    LOOKUP answers NAME as absent / as the tree has it, silently
//   notify-entry NAME   tree.invalidate_entry(root, NAME)
//   lookups NAME        how many LOOKUPs of NAME the server answered
// The kernel caches everything for an hour (entry and attribute timeouts 3600 s, and a LOOKUP of
// a missing name answers a negative entry cached as long), so what a client sees after each step
// is the notification's doing; each step has its control: the silent change alone shows nothing.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include "corofuse/corofuse.hpp"
#include "tests/mount/in_process_mount.hpp"

namespace cf = corofuse;
using corofuse::testing::is_mounted;
using corofuse::testing::uring_enabled;

namespace {

constexpr double forever = 3600;  // the kernel's cache times in this test

// A file of text (or a directory), kept open by clients with its page cache kept.
struct text_node : cf::node::inode<text_node> {
  explicit text_node(mode_t mode, std::string text = {}) : inode(mode), text_(std::move(text)) {}

  off_t size() const {
    std::lock_guard lock(mutex_);
    return static_cast<off_t>(text_.size());
  }
  cf::result<cf::open_reply> open(cf::context&, int flags) {
    if ((flags & O_ACCMODE) != O_RDONLY) return cf::error(EACCES);
    cf::open_reply r;
    r.keep_cache = true;  // a new open keeps the kernel's cached pages: only a notification drops them
    return r;
  }
  cf::result<std::size_t> read(cf::context&, cf::file_info&, std::span<std::byte> out, off_t off) {
    std::lock_guard lock(mutex_);
    const std::size_t from = std::min(static_cast<std::size_t>(std::max<off_t>(off, 0)), text_.size());
    const std::size_t n = std::min(out.size(), text_.size() - from);
    std::memcpy(out.data(), text_.data() + from, n);
    return n;
  }
  void set(std::string text) {
    std::lock_guard lock(mutex_);
    text_ = std::move(text);
  }

 private:
  mutable std::mutex mutex_;
  std::string text_;
};

// The tree, with LOOKUP answering a missing name as a negative entry the kernel caches, a veil
// over some names, and the command interpreter of the control thread.
class notify_fs : public cf::node::tree<text_node> {
 public:
  notify_fs() : tree(std::make_shared<text_node>(S_IFDIR | 0755)) {
    for (const char* n : {"a", "b", "c", "hidden"}) (void)add(root(), n, std::make_shared<text_node>(S_IFREG | 0444, "one"));
    veiled_.insert("hidden");
  }

  cf::result<cf::entry> lookup(cf::context& c, cf::ino parent, std::string_view name) {
    bool veiled;
    {
      std::lock_guard lock(mutex_);
      lookups_[std::string(name)]++;
      veiled = veiled_.count(std::string(name)) != 0;
    }
    auto r = veiled ? cf::result<cf::entry>(cf::error(ENOENT)) : tree::lookup(c, parent, name);
    if (!r && r.error_code() == ENOENT) {
      cf::entry negative;  // ino 0: "no such name", cached for entry_timeout
      negative.entry_timeout = forever;
      return negative;
    }
    return r;
  }

  std::string command(const std::string& line) {
    std::istringstream in(line);
    std::string verb, name, text;
    in >> verb >> name;
    std::getline(in >> std::ws, text);
    auto answer = [](const cf::result<>& r) { return r ? std::string("ok") : "error " + std::to_string(r.error_code()); };
    if (verb == "add") return answer(add(root(), name, std::make_shared<text_node>(S_IFREG | 0444, text)));
    if (verb == "remove") return answer(remove(root(), name));
    if (verb == "notify-entry") return answer(invalidate_entry(root(), name));
    if (verb == "veil" || verb == "unveil") {
      std::lock_guard lock(mutex_);
      if (verb == "veil") veiled_.insert(name);
      else veiled_.erase(name);
      return "ok";
    }
    if (verb == "lookups") {
      std::lock_guard lock(mutex_);
      return std::to_string(lookups_[name]);
    }
    auto node = at(name);
    if (!node) return "error no node " + name;
    if (verb == "set") {
      node->set(text);
      return "ok";
    }
    if (verb == "notify-data") return answer(invalidate_data(*node));
    return "error unknown command " + verb;
  }

 private:
  std::mutex mutex_;
  std::set<std::string> veiled_;
  std::map<std::string, int> lookups_;
};

// A line from `fd` within `seconds` (without its newline), or "TIMEOUT" / "EOF".
std::string read_line(int fd, int seconds = 20) {
  std::string line;
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, seconds * 1000) != 1) return "TIMEOUT";
    char c;
    if (::read(fd, &c, 1) != 1) return "EOF";
    if (c == '\n') return line;
    line += c;
  }
}
bool write_line(int fd, const std::string& s) {
  const std::string line = s + "\n";
  return ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
}

// The server child's control thread: one command a line, one answer a line.
void control_loop(notify_fs& fs, int in, int out) {
  for (;;) {
    const std::string line = read_line(in, 3600);
    if (line == "EOF" || line == "TIMEOUT") return;
    if (!write_line(out, fs.command(line))) return;
  }
}

// A pipe whose ends close with the test.
struct pipe_pair {
  int r = -1, w = -1;
  pipe_pair() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
    r = fds[0];
    w = fds[1];
  }
  ~pipe_pair() {
    ::close(r);
    ::close(w);
  }
};

// A client child this test started: killed (by its pid) and reaped when the test ends early.
struct client_guard {
  pid_t pid = -1;
  ~client_guard() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
  int wait() {
    int status = 0;
    ::waitpid(pid, &status, 0);
    pid = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
};

}  // namespace

TEST_CASE("node tree notifications: data, a new name, a removed name, an entry; seen at once, and only with them",
          "[mount][notify][node]") {
  const auto transport = GENERATE(cf::session::transport_choice::ring, cf::session::transport_choice::dev_fuse);
  const bool ring = transport == cf::session::transport_choice::ring;
  INFO("transport: " << (ring ? "ring" : "/dev/fuse"));
  REQUIRE(::geteuid() == 0);
  if (ring && !uring_enabled()) {
    WARN("/sys/module/fuse/parameters/enable_uring is not Y: the ring transport is not tested");
    return;
  }

  pipe_pair to_server, from_server;  // made before the fork: the child's control thread reads one
  cf::session::options o;
  o.mount.fsname = "nodenotify";
  o.transport = transport;
  o.cache.entry_timeout = forever;
  o.cache.attr_timeout = forever;
  o.shutdown_grace = 1;
  corofuse::testing::in_process_mount m(
      [in = to_server.r, out = from_server.w](const cf::session::options& opts) {
        notify_fs fs;
        // serve() blocks the stop signals in the threads it starts and reads them from a signalfd;
        // a thread started before it must block them too, or SIGTERM kills the process there.
        sigset_t stop;
        sigemptyset(&stop);
        for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&stop, sig);
        pthread_sigmask(SIG_BLOCK, &stop, nullptr);
        std::thread(control_loop, std::ref(fs), in, out).detach();  // the process ends with serve
        return cf::session::serve(fs, opts);
      },
      o);
  INFO("server log:\n" << m.log());
  REQUIRE(is_mounted(m.dir()));
  auto command = [&](const std::string& c) {
    REQUIRE(write_line(to_server.w, c));
    return read_line(from_server.r);
  };

  // One client for the whole test: it keeps `a` open (its page cache stays in use) and answers
  // "read a" (pread of the open file), "cat NAME" (open, read, close), "stat NAME".
  pipe_pair to_client, from_client;
  const std::string dir = m.dir();
  client_guard client{corofuse::testing::start_client(
      [&] {
        int fd = ::open((dir + "/a").c_str(), O_RDONLY);
        if (fd < 0) return 1;
        for (;;) {
          const std::string ask = read_line(to_client.r, 60);
          if (ask == "done" || ask == "EOF" || ask == "TIMEOUT") return 0;
          std::string answer;
          char buf[256];
          if (ask == "read a") {
            ssize_t n = ::pread(fd, buf, sizeof buf, 0);
            answer = n < 0 ? std::string("ERR ") + std::strerror(errno) : std::string(buf, static_cast<std::size_t>(n));
          } else if (ask.rfind("cat ", 0) == 0) {
            int f = ::open((dir + "/" + ask.substr(4)).c_str(), O_RDONLY);
            ssize_t n = f < 0 ? -1 : ::read(f, buf, sizeof buf);
            answer = n < 0 ? std::string("ERR ") + std::strerror(errno) : std::string(buf, static_cast<std::size_t>(n));
            if (f >= 0) ::close(f);
          } else if (ask.rfind("stat ", 0) == 0) {
            struct stat st {};
            answer = ::stat((dir + "/" + ask.substr(5)).c_str(), &st) == 0 ? "exists, size " + std::to_string(st.st_size)
                                                                           : std::strerror(errno);
          }
          if (!write_line(from_client.w, answer)) return 2;
        }
      },
      120)};
  REQUIRE(client.pid > 0);
  auto ask = [&](const std::string& q) {
    REQUIRE(write_line(to_client.w, q));
    return read_line(from_client.r);
  };
  const std::string enoent = std::strerror(ENOENT);

  SECTION("data: tree.invalidate_data(node) drops the kernel's pages and attributes") {
    CHECK(ask("read a") == "one");
    // Control: the bytes change without a notification; the kernel keeps showing its pages.
    CHECK(command("set a uno") == "ok");
    CHECK(ask("read a") == "one");
    CHECK(ask("cat a") == "one");  // a new open too (keep_cache)
    // The notification: the new bytes at once.
    CHECK(command("notify-data a") == "ok");
    CHECK(ask("read a") == "uno");
    // A longer text: the size comes back with the attributes the notification dropped (a stat
    // is no control here: after a read the kernel asks for the attributes again for the atime).
    CHECK(command("set a three-3") == "ok");
    CHECK(ask("read a") == "uno");
    CHECK(command("notify-data a") == "ok");
    CHECK(ask("read a") == "three-3");
    CHECK(ask("stat a") == "exists, size 7");
  }

  SECTION("a new name: tree.add() drops the kernel's cached \"no such name\"") {
    CHECK(ask("stat new") == enoent);
    CHECK(command("lookups new") == "1");
    CHECK(ask("stat new") == enoent);
    CHECK(command("lookups new") == "1");  // the negative entry is cached: no LOOKUP reached us
    CHECK(command("add new hello") == "ok");
    CHECK(ask("stat new") == "exists, size 5");
    CHECK(ask("cat new") == "hello");
    CHECK(command("lookups new") == "2");
  }

  SECTION("an absent name made visible silently stays absent until tree.invalidate_entry()") {
    CHECK(ask("stat hidden") == enoent);  // veiled: LOOKUP answers a negative entry
    CHECK(command("unveil hidden") == "ok");
    CHECK(ask("stat hidden") == enoent);  // control: the kernel keeps its negative entry
    CHECK(command("lookups hidden") == "1");
    CHECK(command("notify-entry hidden") == "ok");
    CHECK(ask("stat hidden") == "exists, size 3");
    CHECK(command("lookups hidden") == "2");
    // Nothing cached under a name: the kernel says so (ENOENT), nothing else happens.
    CHECK(command("notify-entry never-asked") == "error " + std::to_string(ENOENT));
  }

  SECTION("a removed name: tree.remove() drops the kernel's entry; an open file keeps working") {
    CHECK(ask("stat b") == "exists, size 3");
    // Control: LOOKUP would now say "no such name", but the kernel keeps its cached entry.
    CHECK(command("veil b") == "ok");
    CHECK(ask("stat b") == "exists, size 3");
    CHECK(command("lookups b") == "1");
    CHECK(command("unveil b") == "ok");
    CHECK(command("remove b") == "ok");
    CHECK(ask("stat b") == enoent);
    CHECK(ask("cat b") == "ERR " + enoent);
    // The file the client holds open loses its name and still reads.
    CHECK(ask("read a") == "one");
    CHECK(command("remove a") == "ok");
    CHECK(ask("stat a") == enoent);
    CHECK(ask("read a") == "one");
    CHECK(command("remove a") == "error " + std::to_string(ENOENT));
  }

  CHECK(write_line(to_client.w, "done"));
  CHECK(client.wait() == 0);
  CHECK(m.terminate(20));
  CHECK(m.exit_status() == 0);
  CHECK_FALSE(is_mounted(m.dir()));
}
