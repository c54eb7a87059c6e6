// The command line every corofuse filesystem shares, in the shape libfuse's examples made familiar:
//   NAME MOUNTPOINT [-o opt[,opt...]] [-f] [-d] [--stats] [--transport auto|pool|ring|dev] [--zero-copy auto|off]
//   [--depth N] [--shutdown-grace S] [--help]
#pragma once

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "corofuse/fs/types.hpp"
#include "corofuse/session/mount.hpp"
#include "corofuse/session/own_options.hpp"

namespace corofuse::session {

// automatic: the best the kernel offers (pool, then ring, then /dev/fuse); pool: 7.46 buffer pools
// or exit; ring: the 7.42 ring (per-entry payloads) or exit; dev_fuse: /dev/fuse only.
enum class transport_choice { automatic, pool, ring, dev_fuse };
// READDIRPLUS for filesystems that have it: always, when the kernel thinks it pays (after a
// LOOKUP of an entry of the same directory), or never.
enum class readdirplus_mode { always, automatic, off };

struct options {
  std::string mountpoint;
  mount_options mount;
  bool foreground = false;  // -f (corofuse never forks: accepted for libfuse compatibility)
  bool debug = false;       // -d: trace every request; log the terms, buffers and threads; --stats
  bool stats = false;       // --stats: request counters and latency histograms at exit and on SIGUSR1
  transport_choice transport = transport_choice::automatic;
  bool zero_copy = true;  // zero-copy queues when the pool is used and allowed (CAP_SYS_ADMIN)
  unsigned depth = 4;     // requests in service at once per queue
  std::uint32_t max_write = 1u << 20;
  std::uint32_t max_pages = 256;
  cache_defaults cache;
  bool writeback_cache = false;
  bool async_read = true;
  readdirplus_mode readdirplus = readdirplus_mode::automatic;
  double shutdown_grace = 5.0;        // seconds between the lazy unmount and aborting the connection
  std::uint16_t request_timeout = 0;  // seconds the kernel waits for any reply before aborting (0: for ever)
  // -o allow_idmap: idmapped mounts of this mount are allowed (FUSE_ALLOW_IDMAP, Linux 6.12+).
  // Needs default_permissions and a filesystem that declares `supports_idmapped_mounts`: the
  // kernel then names the caller only in creating requests (context::uid()).
  bool allow_idmap = false;
  // Restart without unmount. --handoff-socket PATH: listen there for a successor process (a new
  // version of this server, started with --take-over PATH) and hand it the mount. --take-over
  // PATH: take the mount over from the server listening there instead of mounting.
  std::string handoff_socket;
  std::string take_over;
};

inline constexpr std::string_view common_usage =
    "  -o opt[,opt...]        mount options:\n"
    "       allow_other          let other users access the mount (needs user_allow_other for non-root)\n"
    "       default_permissions  the kernel checks permissions from the mode bits (default)\n"
    "       no_default_permissions  leave permission checks to the filesystem\n"
    "       ro, rw               read-only or read-write mount\n"
    "       fsname=NAME          the source shown in /proc/mounts\n"
    "       subtype=NAME         the type becomes fuse.NAME\n"
    "       max_write=N          largest WRITE in bytes (default 1048576, at most max_pages*4096)\n"
    "       max_pages=N          largest request in pages (default 256)\n"
    "       attr_timeout=S       seconds the kernel caches attributes (default 1)\n"
    "       entry_timeout=S      seconds the kernel caches names (default 1)\n"
    "       writeback_cache      let the kernel cache writes\n"
    "       async_read / sync_read  allow (default) or forbid parallel reads of one file\n"
    "       readdirplus=yes|auto|no  listings with attributes, for filesystems that serve them (default auto)\n"
    "       request_timeout=S    the kernel aborts the connection when a request waits longer than S\n"
    "                            seconds for its reply (1-65535; Linux 6.14+, FUSE 7.43; default: never)\n"
    "       allow_idmap          allow idmapped mounts of this mount (mount_setattr MOUNT_ATTR_IDMAP;\n"
    "                            Linux 6.12+; needs default_permissions and a filesystem that supports it)\n"
    "  -f                     stay in the foreground (corofuse always does)\n"
    "  -d                     debug: one line per request and its reply (unique, opcode, node, the\n"
    "                         arguments, the outcome, the time taken); the negotiated terms, the\n"
    "                         buffers and the threads; and --stats (implies -f)\n"
    "  --stats                the buffer memory at start; per-opcode and per-queue request counters\n"
    "                         and per-opcode latency histograms, printed at exit and on SIGUSR1\n"
    "  --transport auto|pool|ring|dev  auto: the best the kernel offers: buffer pools (Linux 7.3+),\n"
    "                         the io_uring ring (Linux 6.14+ with enable_uring=Y), else /dev/fuse;\n"
    "                         pool, ring: that one or exit; dev: classic /dev/fuse only\n"
    "  --zero-copy auto|off   with buffer pools: zero-copy queues when allowed (CAP_SYS_ADMIN), for\n"
    "                         files the filesystem opens for it (default auto)\n"
    "  --depth N              requests in service at once (default 4, 1..1024)\n"
    "  --shutdown-grace S     after SIGINT/SIGTERM and the lazy unmount, seconds to wait for open\n"
    "                         files to close before aborting the connection (default 5)\n"
    "  --handoff-socket PATH  listen on the unix socket PATH for a successor (restart without\n"
    "                         unmount): a process started with --take-over PATH gets the mount,\n"
    "                         its open files and requests in flight, and this one exits 0\n"
    "  --take-over PATH       take the mount over from the server listening on PATH instead of\n"
    "                         mounting (same filesystem and options; MOUNTPOINT must match);\n"
    "                         both refused by a filesystem that cannot hand over its state\n"
    "  -h, --help             this text\n";

struct parse_outcome {
  enum class kind { run, help, error } what = kind::run;
  std::string error;
};

namespace detail {
inline bool parse_unsigned(std::string_view s, unsigned long long max, unsigned long long& out) {
  if (s.empty() || s.size() > 19) return false;
  unsigned long long v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<unsigned>(c - '0');
  }
  if (v > max) return false;
  out = v;
  return true;
}
inline bool parse_seconds(std::string_view s, double& out) {
  std::string tmp(s);
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(tmp.c_str(), &end);
  if (tmp.empty() || errno != 0 || end != tmp.c_str() + tmp.size() || !(v >= 0) || v > 1e9) return false;
  out = v;
  return true;
}
}  // namespace detail

// Applies one -o option; an error message when it is unknown or its value is bad.
inline std::string apply_mount_option(options& o, std::string_view opt) {
  auto eq = opt.find('=');
  std::string_view key = opt.substr(0, eq);
  std::string_view val = eq == std::string_view::npos ? std::string_view{} : opt.substr(eq + 1);
  const bool has_val = eq != std::string_view::npos;
  auto bad = [&](const char* what) { return "bad value for -o " + std::string(key) + ": '" + std::string(val) + "' (" + what + ")"; };
  unsigned long long n = 0;
  if (!has_val) {
    if (key == "allow_other") return o.mount.allow_other = true, "";
    if (key == "default_permissions") return o.mount.default_permissions = true, "";
    if (key == "no_default_permissions") return o.mount.default_permissions = false, "";
    if (key == "allow_idmap") return o.allow_idmap = true, "";
    if (key == "ro") return o.mount.read_only = true, "";
    if (key == "rw") return o.mount.read_only = false, "";
    if (key == "writeback_cache") return o.writeback_cache = true, "";
    if (key == "async_read") return o.async_read = true, "";
    if (key == "sync_read") return o.async_read = false, "";
  } else {
    if (key == "fsname" || key == "subtype") {
      if (val.empty() || val.find_first_of(", \t\n") != std::string_view::npos) return bad("no commas or spaces");
      (key == "fsname" ? o.mount.fsname : o.mount.subtype) = std::string(val);
      return "";
    }
    if (key == "max_write") {
      if (!detail::parse_unsigned(val, 1u << 24, n) || n < 4096) return bad("a byte count from 4096 to 16777216");
      o.max_write = static_cast<std::uint32_t>(n);
      return "";
    }
    if (key == "max_pages") {
      if (!detail::parse_unsigned(val, 4096, n) || n < 1) return bad("1 to 4096 pages");
      o.max_pages = static_cast<std::uint32_t>(n);
      return "";
    }
    if (key == "readdirplus") {
      if (val == "yes") o.readdirplus = readdirplus_mode::always;
      else if (val == "auto") o.readdirplus = readdirplus_mode::automatic;
      else if (val == "no") o.readdirplus = readdirplus_mode::off;
      else return bad("yes, auto or no");
      return "";
    }
    if (key == "request_timeout") {
      if (!detail::parse_unsigned(val, 65535, n) || n < 1) return bad("whole seconds from 1 to 65535");
      o.request_timeout = static_cast<std::uint16_t>(n);
      return "";
    }
    if (key == "attr_timeout" || key == "entry_timeout") {
      double s = 0;
      if (!detail::parse_seconds(val, s)) return bad("seconds, >= 0");
      (key == "attr_timeout" ? o.cache.attr_timeout : o.cache.entry_timeout) = s;
      return "";
    }
  }
  return "unknown mount option -o " + std::string(opt);
}

// True for the common options whose value is the next argument (and for `own` flags that take
// one, written without "="): a program that takes positional arguments of its own (passthrough's
// SOURCE) uses it to tell values from positionals.
inline bool option_takes_value(std::string_view a, const own_options& own = {}) noexcept {
  if (const own_option* mine = detail::find_own_flag(own, a); mine && a == mine->name) return mine->takes_value();
  return a == "-o" || a == "--transport" || a == "--zero-copy" || a == "--depth" || a == "--shutdown-grace" || a == "--handoff-socket" ||
         a == "--take-over";
}

// Parses the common options and the filesystem's `own` ones (session/own_options.hpp), which
// are applied as they come.
inline parse_outcome parse_command_line(int argc, char** argv, options& o, const own_options& own = {}) {
  parse_outcome r;
  auto fail = [&](std::string msg) {
    r.what = parse_outcome::kind::error;
    r.error = std::move(msg);
    return r;
  };
  std::vector<std::string_view> args(argv + 1, argv + argc);
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string_view a = args[i];
    auto value = [&](std::string_view name) -> std::string_view {
      if (i + 1 >= args.size()) return {};
      (void)name;
      return args[++i];
    };
    if (a == "-h" || a == "--help") {
      r.what = parse_outcome::kind::help;
      return r;
    } else if (a == "-f") {
      o.foreground = true;
    } else if (a == "-d") {
      o.debug = true;
      o.stats = true;
      o.foreground = true;
    } else if (a == "--stats") {
      o.stats = true;
    } else if (a == "-o" || (a.size() > 2 && a.substr(0, 2) == "-o")) {
      std::string_view list = a == "-o" ? value("-o") : a.substr(2);
      if (list.empty()) return fail("-o needs a list of options");
      while (!list.empty()) {
        auto comma = list.find(',');
        std::string_view one = list.substr(0, comma);
        if (!one.empty()) {
          const auto eq = one.find('=');
          if (const own_option* mine = detail::find_own_mount_option(own, one.substr(0, eq))) {
            if (mine->takes_value() && eq == std::string_view::npos) return fail("-o " + mine->name + " needs a value: " + mine->shown());
            if (!mine->takes_value() && eq != std::string_view::npos) return fail("-o " + mine->name + " takes no value");
            std::string err = detail::apply_own(*mine, eq == std::string_view::npos ? std::string_view{} : one.substr(eq + 1));
            if (!err.empty()) return fail(err);
          } else if (std::string err = apply_mount_option(o, one); !err.empty()) {
            return fail(err);
          }
        }
        if (comma == std::string_view::npos) break;
        list.remove_prefix(comma + 1);
      }
    } else if (a == "--transport") {
      std::string_view v = value(a);
      if (v == "auto") {
        o.transport = transport_choice::automatic;
      } else if (v == "pool") {
        o.transport = transport_choice::pool;
      } else if (v == "ring") {
        o.transport = transport_choice::ring;
      } else if (v == "dev") {
        o.transport = transport_choice::dev_fuse;
      } else {
        return fail("--transport takes auto, pool, ring or dev, not '" + std::string(v) + "'");
      }
    } else if (a == "--zero-copy") {
      std::string_view v = value(a);
      if (v == "auto") o.zero_copy = true;
      else if (v == "off") o.zero_copy = false;
      else return fail("--zero-copy takes auto or off, not '" + std::string(v) + "'");
    } else if (a == "--depth") {
      std::string_view v = value(a);
      unsigned long long n = 0;
      if (!detail::parse_unsigned(v, 1024, n) || n == 0) return fail("--depth takes a number from 1 to 1024, not '" + std::string(v) + "'");
      o.depth = static_cast<unsigned>(n);
    } else if (a == "--shutdown-grace") {
      std::string_view v = value(a);
      if (!detail::parse_seconds(v, o.shutdown_grace) || o.shutdown_grace > 3600)
        return fail("--shutdown-grace takes seconds from 0 to 3600, not '" + std::string(v) + "'");
    } else if (a == "--handoff-socket" || a == "--take-over") {
      std::string_view v = value(a);
      // A unix socket path: sun_path holds 107 bytes and its NUL.
      if (v.empty() || v.size() > 107) return fail(std::string(a) + " takes a socket path of 1 to 107 bytes");
      (a == "--handoff-socket" ? o.handoff_socket : o.take_over) = std::string(v);
    } else if (const own_option* mine = detail::find_own_flag(own, a)) {
      std::string_view v;
      if (a.size() > mine->name.size()) {  // --name=value
        if (!mine->takes_value()) return fail(mine->name + " takes no value");
        v = a.substr(mine->name.size() + 1);
      } else if (mine->takes_value()) {
        if (i + 1 >= args.size()) return fail(mine->name + " needs a value: " + mine->shown());
        v = args[++i];
      }
      if (std::string err = detail::apply_own(*mine, v); !err.empty()) return fail(err);
    } else if (!a.empty() && a[0] == '-') {
      return fail("unknown option " + std::string(a));
    } else if (o.mountpoint.empty()) {
      o.mountpoint = std::string(a);
    } else {
      return fail("more than one mount point: '" + o.mountpoint + "' and '" + std::string(a) + "'");
    }
  }
  if (o.mountpoint.empty()) return fail("missing mount point");
  if (o.allow_idmap && !o.mount.default_permissions) return fail("-o allow_idmap needs default_permissions");
  if (o.max_write > o.max_pages * 4096u) o.max_write = o.max_pages * 4096u;
  return r;
}

}  // namespace corofuse::session
