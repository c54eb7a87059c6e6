// A filesystem's own command-line options, parsed together with the common ones
// (session/options.hpp) and shown in the same --help:
//
//   std::uint64_t size = 1 << 30;
//   corofuse::session::own_options own = {
//       corofuse::session::own_option::flag("--size", "N", "the most file data to hold (bytes)",
//                                           [&](std::string_view v) { return parse(v, size) ? "" : "bytes, at least 4096"; }),
//       corofuse::session::own_option::mount("uid", "N", "the root directory's owner",
//                                            [&](std::string_view v) { ...; return ""; }),
//   };
//   return corofuse::session::main(fs, argc, argv, "myfs: ...", own);
//
// A flag is `--name ARG` or `--name=ARG` (or a bare `--name` when it has no argument); a mount
// option is one key of `-o key=ARG,...` beside the common ones (`-o key` when it has no argument).
// `apply` gets the value and answers "" when it takes it, or what a good value looks like: the
// program then prints "NAME: bad value for --size: 'abc' (bytes, at least 4096) (try --help)" and
// exits 2, before anything is mounted. Options are applied in command-line order.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace corofuse::session {

struct own_option {
  enum class kind { flag, mount };
  kind what = kind::flag;
  std::string name;      // "--size" for a flag, "uid" for a mount option
  std::string argument;  // what the value is called in --help ("N", "FIFO"); empty: takes none
  std::string help;      // one or more lines, wrapped by the author
  std::function<std::string(std::string_view value)> apply;

  static own_option flag(std::string name, std::string argument, std::string help, std::function<std::string(std::string_view)> apply) {
    return {kind::flag, std::move(name), std::move(argument), std::move(help), std::move(apply)};
  }
  static own_option mount(std::string key, std::string argument, std::string help, std::function<std::string(std::string_view)> apply) {
    return {kind::mount, std::move(key), std::move(argument), std::move(help), std::move(apply)};
  }

  bool takes_value() const noexcept { return !argument.empty(); }
  // How the option is written in messages and --help: "--size N", "-o uid=N".
  std::string shown() const {
    if (what == kind::mount) return "-o " + name + (takes_value() ? "=" + argument : "");
    return name + (takes_value() ? " " + argument : "");
  }
};

using own_options = std::vector<own_option>;

namespace detail {

// The flag `arg` names ("--size" or "--size=4G"), or null.
inline const own_option* find_own_flag(const own_options& own, std::string_view arg) {
  for (const own_option& o : own) {
    if (o.what != own_option::kind::flag) continue;
    if (arg == o.name) return &o;
    if (arg.size() > o.name.size() && arg.substr(0, o.name.size()) == o.name && arg[o.name.size()] == '=') return &o;
  }
  return nullptr;
}

inline const own_option* find_own_mount_option(const own_options& own, std::string_view key) {
  for (const own_option& o : own)
    if (o.what == own_option::kind::mount && o.name == key) return &o;
  return nullptr;
}

// Applies `o` to `value`: "" or the message the command line fails with.
inline std::string apply_own(const own_option& o, std::string_view value) {
  std::string why = o.apply ? o.apply(value) : std::string();
  if (why.empty()) return "";
  const std::string name = o.what == own_option::kind::mount ? "-o " + o.name : o.name;
  return "bad value for " + name + ": '" + std::string(value) + "' (" + why + ")";
}

// One help entry in the layout of common_usage: the option, then its help from `column` on (25
// for flags, 28 for mount options); lines after the first indented to the help's column.
inline void append_usage_entry(std::string& out, std::string_view indent, std::string shown, std::string_view help, std::size_t column) {
  std::string line = std::string(indent) + shown;
  out += line;
  if (line.size() + 1 > column) {
    out += "\n";
    line.clear();
  }
  std::string pad(column - line.size(), ' ');
  bool first = true;
  while (!help.empty() || first) {
    const auto nl = help.find('\n');
    std::string_view one = help.substr(0, nl);
    out += (first ? pad : std::string(column, ' ')) + std::string(one) + "\n";
    first = false;
    if (nl == std::string_view::npos) break;
    help.remove_prefix(nl + 1);
  }
}

}  // namespace detail

// The --help text of `own`: flags first, then the mount options under their own heading.
inline std::string usage_of(const own_options& own) {
  std::string out;
  for (const own_option& o : own)
    if (o.what == own_option::kind::flag) detail::append_usage_entry(out, "  ", o.shown(), o.help, 25);
  bool heading = false;
  for (const own_option& o : own) {
    if (o.what != own_option::kind::mount) continue;
    if (!heading) out += "  -o opt[,opt...]        this filesystem's mount options (beside the common ones below):\n";
    heading = true;
    detail::append_usage_entry(out, "       ", o.name + (o.takes_value() ? "=" + o.argument : ""), o.help, 28);
  }
  return out;
}

}  // namespace corofuse::session
