// The shared command line: values, errors (one line each), and what a program with positional
// arguments of its own (passthrough's SOURCE) relies on.
#include <catch2/catch.hpp>

#include <cstdio>
#include <string>
#include <vector>

#include "corofuse/fs/connection.hpp"
#include "corofuse/fs/types.hpp"
#include "corofuse/session/serve.hpp"

namespace cf = corofuse;
using cf::session::options;
using cf::session::parse_command_line;
using cf::session::parse_outcome;

namespace {
struct argv_of {
  std::vector<std::string> words;
  std::vector<char*> ptrs;
  explicit argv_of(std::vector<std::string> w) : words(std::move(w)) {
    for (auto& s : words) ptrs.push_back(s.data());
    ptrs.push_back(nullptr);
  }
  int argc() const { return static_cast<int>(words.size()); }
  char** argv() { return ptrs.data(); }
};

parse_outcome parse(std::vector<std::string> w, options& o) {
  argv_of a(std::move(w));
  return parse_command_line(a.argc(), a.argv(), o);
}
}  // namespace

TEST_CASE("command line: values land in the options", "[session][options]") {
  options o;
  auto r = parse({"fs", "/mnt", "-o", "allow_other,ro,attr_timeout=2.5,entry_timeout=0,max_pages=64,fsname=src,request_timeout=30", "-d",
                  "--transport", "dev", "--depth", "16", "--shutdown-grace", "1", "--zero-copy", "off"},
                 o);
  REQUIRE(r.what == parse_outcome::kind::run);
  CHECK(o.mountpoint == "/mnt");
  CHECK(o.mount.allow_other);
  CHECK(o.mount.read_only);
  CHECK(o.mount.default_permissions);
  CHECK(o.cache.attr_timeout == 2.5);
  CHECK(o.cache.entry_timeout == 0);
  CHECK(o.max_pages == 64);
  CHECK(o.max_write == 64 * 4096);  // capped by max_pages
  CHECK(o.mount.fsname == "src");
  CHECK(o.debug);
  CHECK(o.foreground);
  CHECK(o.transport == cf::session::transport_choice::dev_fuse);
  CHECK(o.depth == 16);
  CHECK(o.shutdown_grace == 1.0);
  CHECK(o.request_timeout == 30);
  CHECK_FALSE(o.zero_copy);
  options p;
  REQUIRE(parse({"fs", "/mnt", "--transport", "pool"}, p).what == parse_outcome::kind::run);
  CHECK(p.transport == cf::session::transport_choice::pool);
  CHECK(p.zero_copy);
  CHECK_FALSE(p.allow_idmap);
  options q;
  REQUIRE(parse({"fs", "/mnt", "-o", "allow_idmap"}, q).what == parse_outcome::kind::run);
  CHECK(q.allow_idmap);
}

TEST_CASE("command line: -d traces and implies --stats; --stats alone counts and times", "[session][options]") {
  options o;
  REQUIRE(parse({"fs", "/mnt"}, o).what == parse_outcome::kind::run);
  CHECK_FALSE(o.debug);
  CHECK_FALSE(o.stats);
  options d;
  REQUIRE(parse({"fs", "/mnt", "-d"}, d).what == parse_outcome::kind::run);
  CHECK(d.debug);
  CHECK(d.stats);
  options st;
  REQUIRE(parse({"fs", "/mnt", "--stats"}, st).what == parse_outcome::kind::run);
  CHECK_FALSE(st.debug);
  CHECK(st.stats);
  CHECK(std::string(cf::session::common_usage).find("--stats") != std::string::npos);
}

TEST_CASE("command line: every bad input is one error line", "[session][options]") {
  const std::vector<std::vector<std::string>> bad = {
      {"fs"},                                    // no mount point
      {"fs", "/a", "/b"},                        // two
      {"fs", "/mnt", "--bogus"},                 // unknown option
      {"fs", "/mnt", "-o", "nosuchopt"},         // unknown -o
      {"fs", "/mnt", "-o"},                      // -o without a list
      {"fs", "/mnt", "-o", "max_pages=0"},       // out of range
      {"fs", "/mnt", "-o", "attr_timeout=-1"},   // negative
      {"fs", "/mnt", "-o", "attr_timeout=abc"},  // not a number
      {"fs", "/mnt", "-o", "fsname=a b"},        // space
      {"fs", "/mnt", "--depth", "0"},            // out of range
      {"fs", "/mnt", "--depth", "2000"},
      {"fs", "/mnt", "--depth"},                   // missing value
      {"fs", "/mnt", "--transport", "carrier"},    // unknown choice
      {"fs", "/mnt", "--shutdown-grace", "9999"},  // too long
      {"fs", "/mnt", "-o", "request_timeout=0"},   // out of range
      {"fs", "/mnt", "-o", "request_timeout=70000"},
      {"fs", "/mnt", "--zero-copy", "maybe"},  // unknown choice
      {"fs", "/mnt", "--transport", "pools"},
      {"fs", "/mnt", "-o", "allow_idmap,no_default_permissions"},  // the kernel refuses idmapping without
      {"fs", "/mnt", "-o", "allow_idmap=1"},                       // a flag, not a value
  };
  for (const auto& words : bad) {
    options o;
    auto r = parse(words, o);
    std::string line;
    for (const auto& w : words) line += w + " ";
    INFO(line);
    CHECK(r.what == parse_outcome::kind::error);
    CHECK_FALSE(r.error.empty());
    CHECK(r.error.find('\n') == std::string::npos);
  }
}

TEST_CASE("command line: the options that take a value are known to programs with positionals", "[session][options]") {
  for (const char* o : {"-o", "--transport", "--zero-copy", "--depth", "--shutdown-grace"}) CHECK(cf::session::option_takes_value(o));
  for (const char* o : {"-d", "-f", "--help", "/mnt", "-oallow_other"}) CHECK_FALSE(cf::session::option_takes_value(o));
}

TEST_CASE("parse_main_options: help is exit 0, a bad line exit 2, a good one goes on with the subtype set", "[session][options]") {
  {
    options o;
    argv_of a({"/usr/bin/myfs", "--help"});
    CHECK(cf::session::parse_main_options(a.argc(), a.argv(), "about", "", o) == 0);
  }
  {
    options o;
    argv_of a({"/usr/bin/myfs", "/mnt", "--depth", "x"});
    CHECK(cf::session::parse_main_options(a.argc(), a.argv(), "about", "", o) == 2);
  }
  {
    options o;
    argv_of a({"/usr/bin/myfs", "/mnt"});
    CHECK(cf::session::parse_main_options(a.argc(), a.argv(), "about", "", o) == -1);
    CHECK(o.mount.subtype == "myfs");
  }
}

namespace {
// A filesystem's own options as a program declares them: a flag with a value, a bare flag, and
// mount options with and without one. Each records what it was given.
struct own_fixture {
  std::string size, mode_seen;
  bool verbose = false, sync = false;
  std::vector<std::string> order;
  cf::session::own_options own() {
    using cf::session::own_option;
    return {
        own_option::flag("--size", "N", "how much\nand a second line",
                         [this](std::string_view v) -> std::string {
                           order.push_back("size");
                           if (v.empty() || v.find_first_not_of("0123456789") != std::string_view::npos) return "a number";
                           size = std::string(v);
                           return "";
                         }),
        own_option::flag("--verbose", "", "say more",
                         [this](std::string_view) -> std::string {
                           order.push_back("verbose");
                           verbose = true;
                           return "";
                         }),
        own_option::mount("mode", "OCTAL", "the root's mode",
                          [this](std::string_view v) -> std::string {
                            order.push_back("mode");
                            if (v != "700" && v != "755") return "700 or 755";
                            mode_seen = std::string(v);
                            return "";
                          }),
        own_option::mount("sync", "", "write through",
                          [this](std::string_view) -> std::string {
                            order.push_back("sync");
                            sync = true;
                            return "";
                          }),
    };
  }
};

parse_outcome parse_own(std::vector<std::string> w, options& o, const cf::session::own_options& own) {
  argv_of a(std::move(w));
  return parse_command_line(a.argc(), a.argv(), o, own);
}
}  // namespace

TEST_CASE("own options: parsed with the common ones, in order, in every spelling", "[session][options][own]") {
  own_fixture f;
  const auto own = f.own();
  options o;
  auto r = parse_own({"fs", "/mnt", "--size", "12", "-o", "allow_other,mode=700,sync,attr_timeout=0", "--verbose", "--size=34", "-d"}, o,
                     own);
  REQUIRE(r.what == parse_outcome::kind::run);
  CHECK(o.mountpoint == "/mnt");
  CHECK(o.mount.allow_other);
  CHECK(o.cache.attr_timeout == 0);
  CHECK(o.debug);
  CHECK(f.size == "34");  // the later one wins, as with the common options
  CHECK(f.mode_seen == "700");
  CHECK(f.verbose);
  CHECK(f.sync);
  CHECK(f.order == std::vector<std::string>{"size", "mode", "sync", "verbose", "size"});
  // Without own options the same names are unknown, as before.
  options plain;
  CHECK(parse({"fs", "/mnt", "--size", "12"}, plain).what == parse_outcome::kind::error);
  CHECK(parse({"fs", "/mnt", "-o", "mode=700"}, plain).what == parse_outcome::kind::error);
}

TEST_CASE("own options: every bad input is one error line that names the option", "[session][options][own]") {
  struct bad {
    std::vector<std::string> args;
    std::string says;
  };
  const std::vector<bad> cases = {
      {{"fs", "/mnt", "--size"}, "--size needs a value: --size N"},
      {{"fs", "/mnt", "--size", "x1"}, "bad value for --size: 'x1' (a number)"},
      {{"fs", "/mnt", "--size="}, "bad value for --size: '' (a number)"},
      {{"fs", "/mnt", "--verbose=yes"}, "--verbose takes no value"},
      {{"fs", "/mnt", "-o", "mode"}, "-o mode needs a value: -o mode=OCTAL"},
      {{"fs", "/mnt", "-o", "mode=777"}, "bad value for -o mode: '777' (700 or 755)"},
      {{"fs", "/mnt", "-o", "sync=1"}, "-o sync takes no value"},
      {{"fs", "/mnt", "--sizes", "1"}, "unknown option --sizes"},
      {{"fs", "/mnt", "-o", "modes=1"}, "unknown mount option -o modes=1"},
  };
  for (const auto& c : cases) {
    own_fixture f;
    const auto own = f.own();
    options o;
    auto r = parse_own(c.args, o, own);
    INFO(c.args.back());
    CHECK(r.what == parse_outcome::kind::error);
    CHECK(r.error == c.says);
    CHECK(r.error.find('\n') == std::string::npos);
  }
}

TEST_CASE("own options: --help lists them beside the common ones; positionals are told from values", "[session][options][own]") {
  own_fixture f;
  const auto own = f.own();
  const std::string usage = cf::session::usage_of(own);
  CHECK(usage ==
        "  --size N               how much\n"
        "                         and a second line\n"
        "  --verbose              say more\n"
        "  -o opt[,opt...]        this filesystem's mount options (beside the common ones below):\n"
        "       mode=OCTAL           the root's mode\n"
        "       sync                 write through\n");
  CHECK(cf::session::option_takes_value("--size", own));
  CHECK_FALSE(cf::session::option_takes_value("--size=3", own));
  CHECK_FALSE(cf::session::option_takes_value("--verbose", own));
  CHECK(cf::session::option_takes_value("--depth", own));
  // The whole help goes to stdout with exit 0; a bad own value is exit 2.
  {
    options o;
    argv_of a({"/usr/bin/myfs", "--help"});
    CHECK(cf::session::parse_main_options(a.argc(), a.argv(), "about", "", o, "MOUNTPOINT", own) == 0);
  }
  {
    options o;
    argv_of a({"/usr/bin/myfs", "/mnt", "--size", "many"});
    CHECK(cf::session::parse_main_options(a.argc(), a.argv(), "about", "", o, "MOUNTPOINT", own) == 2);
  }
}

TEST_CASE("open_reply: passthrough sets FOPEN_PASSTHROUGH and the backing id; otherwise the id is 0", "[fs][types]") {
  cf::open_reply r;
  r.fh = 5;
  r.backing_id = 7;  // ignored without passthrough
  auto plain = cf::to_wire(r);
  CHECK(plain.open_flags == 0);
  CHECK(plain.backing_id == 0);
  r.passthrough = true;
  auto wire = cf::to_wire(r);
  CHECK(wire.fh == 5);
  CHECK(wire.open_flags == cf::abi::fopen::passthrough);
  CHECK(wire.backing_id == 7);
}

TEST_CASE("connection: backing files only when INIT agreed on passthrough; device errors come back as errno", "[fs][connection]") {
  cf::connection none;
  CHECK(none.open_backing(0).error_code() == EPERM);
  // Agreed, but the descriptor is not /dev/fuse: the ioctl fails and says why.
  std::FILE* f = std::tmpfile();
  REQUIRE(f);
  cf::connection c(fileno(f), cf::abi::init_flag::passthrough, 45, 1 << 20);
  CHECK(c.has(cf::abi::init_flag::passthrough));
  CHECK_FALSE(c.has(cf::abi::init_flag::writeback_cache));
  auto id = c.open_backing(fileno(f));
  CHECK_FALSE(id);
  CHECK(id.error_code() == ENOTTY);
  CHECK(c.close_backing(1).error_code() == ENOTTY);
  std::fclose(f);
}
