// tarfs: a tar archive served read-only, on the node layer (corofuse/node.hpp).
//
// At startup the archive's headers are read once into a tree of nodes; the archive itself stays
// open and is the only copy of the file data: a READ is answered with a file_slice of the
// archive, which the transport reads into the reply itself (the server never touches the bytes).
// The tree keeps names, hard links, link counts, node ids, lookup counts and FORGET; a member only
// says where its bytes are. Its node type cannot be built from cf::node::made alone, so the tree
// answers no CREATE, MKDIR, UNLINK, RENAME, ... and the mount is always read-only (-o ro): the
// kernel refuses every change with EROFS before asking us.
//
// Formats: POSIX ustar and pax ('x'/'g' records path, linkpath, size, mtime, uid, gid) and GNU
// (long names in 'L'/'K' records, base-256 numbers): what GNU tar writes by default and with
// --format=posix. Anything else in the archive is refused at startup, never half-served.
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "corofuse/corofuse.hpp"

namespace cf = corofuse;

namespace {

// One member of the archive.
struct member : cf::node::inode<member> {
  member(const cf::node::made& m, int fd, off_t data, off_t size) : inode(m), fd(fd), data(data), bytes(size) {}

  off_t size() const { return bytes; }
  cf::result<cf::open_reply> open(cf::context&, int flags) {
    // Never asked on the read-only mount; said here too, with the same errno, for a mount made
    // without MS_RDONLY some other way.
    if ((flags & (O_ACCMODE | O_TRUNC)) != O_RDONLY) return cf::error(EROFS);
    cf::open_reply r;
    r.keep_cache = true;  // the archive does not change under us: pages cached earlier stay good
    return r;
  }
  cf::result<cf::read_reply> read(cf::context&, cf::file_info&, std::span<std::byte> out, off_t off) {
    if (off < 0 || off >= bytes) return cf::read_reply::bytes_copied(0);
    // Clamped to the member: past it the archive holds padding and the next header.
    const auto n = static_cast<std::size_t>(std::min<off_t>(static_cast<off_t>(out.size()), bytes - off));
    return cf::read_reply::from(cf::file_slice{fd, data + off, n, speed});
  }

  const int fd;                                                      // the archive
  const off_t data;                                                  // where this member's bytes start in it
  const off_t bytes;                                                 // how many
  static inline cf::backing_speed speed = cf::backing_speed::local;  // where the archive lives
};

// A malformed archive: what and where (the offset of the header at fault).
struct bad_archive {
  off_t at;
  std::string why;
};

using header = std::array<unsigned char, 512>;

std::string field(const header& h, std::size_t off, std::size_t len) {
  const char* p = reinterpret_cast<const char*>(h.data()) + off;
  return std::string(p, strnlen(p, len));
}

// A numeric field: octal digits (space or NUL ended), or GNU's base-256 (high bit set) for values
// octal cannot hold.
std::int64_t number(const header& h, std::size_t off, std::size_t len, off_t at, const char* what) {
  const unsigned char* p = h.data() + off;
  if (p[0] & 0x80) {  // 0x80: positive, 0xff: negative two's complement
    std::uint64_t v = p[0] == 0xff ? ~0ull : 0;
    for (std::size_t i = 1; i < len; ++i) {
      if (i < len - 8 && p[i] != (p[0] == 0xff ? 0xff : 0)) throw bad_archive{at, std::string(what) + " out of range"};
      v = (v << 8) | p[i];
    }
    return static_cast<std::int64_t>(v);
  }
  std::size_t i = 0;
  while (i < len && p[i] == ' ') ++i;
  std::int64_t v = 0;
  for (; i < len && p[i] >= '0' && p[i] <= '7'; ++i) {
    if (v >> 60) throw bad_archive{at, std::string(what) + " out of range"};
    v = v * 8 + (p[i] - '0');
  }
  if (i < len && p[i] != ' ' && p[i] != 0) throw bad_archive{at, std::string("bad ") + what + " field"};
  return v;
}

// The pax record `key` when there is one, else `fallback`: decimal; an mtime may have a sign and
// a fraction ("-12.25").
timespec pax_value(const std::map<std::string, std::string>& pax, const std::string& key, timespec fallback, off_t at) {
  auto it = pax.find(key);
  if (it == pax.end()) return fallback;
  const std::string& s = it->second;
  const bool time = key == "mtime", minus = time && s.starts_with('-');
  std::size_t i = minus, digits = 0;
  std::int64_t sec = 0, nsec = 0;
  for (; i < s.size() && std::isdigit(static_cast<unsigned char>(s[i])) && sec < (1ll << 55); ++i, ++digits) sec = sec * 10 + (s[i] - '0');
  if (time && i < s.size() && s[i] == '.')
    for (std::int64_t scale = 100000000; ++i < s.size() && std::isdigit(static_cast<unsigned char>(s[i])); scale /= 10)
      nsec += (s[i] - '0') * scale;
  if (digits == 0 || i != s.size()) throw bad_archive{at, "bad pax " + key + " '" + s + "'"};
  if (minus) return nsec ? timespec{-sec - 1, 1000000000 - nsec} : timespec{-sec, 0};
  return timespec{sec, nsec};
}

// Pax records, "LEN key=value\n" each, into `out` (a later record overrides an earlier one).
void pax_records(const std::string& text, off_t at, std::map<std::string, std::string>& out) {
  for (std::size_t pos = 0; pos < text.size();) {
    std::size_t len = 0, i = pos;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i])) && len < text.size()) len = len * 10 + (text[i++] - '0');
    const std::size_t eq = text.find('=', i);
    if (i == pos || i >= text.size() || text[i] != ' ' || len < i - pos + 3 || len > text.size() - pos || text[pos + len - 1] != '\n' ||
        eq >= pos + len - 1)
      throw bad_archive{at, "malformed pax record"};
    out[text.substr(i + 1, eq - i - 1)] = text.substr(eq + 1, pos + len - eq - 2);
    pos += len;
  }
}

// "./a//b/" -> "a/b". Members must stay under the mount's root: absolute paths and ".." are refused.
std::string clean_path(const std::string& p, off_t at) {
  if (p.size() >= PATH_MAX) throw bad_archive{at, "path of " + std::to_string(p.size()) + " bytes is too long"};
  if (p.starts_with('/')) throw bad_archive{at, "absolute path '" + p + "' refused (members must stay inside the archive)"};
  std::string out;
  for (std::size_t pos = 0; pos <= p.size();) {
    std::size_t slash = std::min(p.find('/', pos), p.size());
    const std::string part = p.substr(pos, slash - pos);
    if (part == "..") throw bad_archive{at, "path '" + p + "' with a '..' component refused (members must stay inside the archive)"};
    if (!part.empty() && part != ".") out += (out.empty() ? "" : "/") + part;
    pos = slash + 1;
  }
  return out;
}

struct parsed {
  std::shared_ptr<member> node;
  off_t at;  // its header, for messages
  timespec mtime;
};

// Reads every header of the archive `fd` (of `end` bytes): path -> node. A member that appears
// again replaces the earlier one, as extraction does; a hard link names the node its target has
// at that point of the archive.
std::map<std::string, parsed> read_archive(int fd, off_t end) {
  std::map<std::string, parsed> members;
  std::map<std::string, std::string> global, local;  // pax records: for all that follow, for the next
  std::string long_name, long_link;                  // GNU 'L'/'K': for the next member
  auto read_data = [&](off_t at, off_t off, off_t n) {
    if (n > (1 << 20)) throw bad_archive{at, "extended header of " + std::to_string(n) + " bytes is too large"};
    std::string s(static_cast<std::size_t>(n), '\0');
    if (::pread(fd, s.data(), s.size(), off) != n) throw bad_archive{at, std::string("reading failed: ") + std::strerror(errno)};
    return s;
  };
  for (off_t at = 0;;) {
    header h{};
    const ssize_t got = ::pread(fd, h.data(), h.size(), at);
    if (got < 0) throw bad_archive{at, std::string("reading failed: ") + std::strerror(errno)};
    if (got < 512) throw bad_archive{at, "truncated archive: it ends without the end-of-archive blocks"};
    if (std::all_of(h.begin(), h.end(), [](unsigned char c) { return c == 0; })) return members;  // the end
    unsigned sum = 0;
    int signed_sum = 0;  // some old tars summed signed chars
    for (std::size_t i = 0; i < h.size(); ++i) {
      const bool in_sum = i < 148 || i >= 156;
      sum += in_sum ? h[i] : ' ';
      signed_sum += in_sum ? static_cast<signed char>(h[i]) : ' ';
    }
    const auto want = number(h, 148, 8, at, "checksum");
    if (want != sum && want != signed_sum) throw bad_archive{at, "bad header checksum (corrupt, or not a tar archive)"};
    if (field(h, 257, 5) != "ustar") throw bad_archive{at, "not a ustar, pax or GNU tar header"};
    const char type = static_cast<char>(h[156]);
    std::map<std::string, std::string> pax = global;
    for (auto& [k, v] : local) pax[k] = v;
    const bool extension = type == 'L' || type == 'K' || type == 'x' || type == 'g';
    const off_t size = extension ? number(h, 124, 12, at, "size") : pax_value(pax, "size", {number(h, 124, 12, at, "size"), 0}, at).tv_sec;
    const off_t data = at + 512;
    if (size < 0 || size > end - data)
      throw bad_archive{at, "member data (" + std::to_string(size) + " bytes) runs past the end of the archive (" + std::to_string(end) +
                                " bytes)"};
    const off_t next = data + (size + 511) / 512 * 512;
    if (extension) {  // records about the member that follows (or, 'g', all that follow)
      const std::string text = read_data(at, data, size);
      if (type == 'L') long_name = text.c_str();
      else if (type == 'K') long_link = text.c_str();
      else pax_records(text, at, type == 'x' ? local : global);
      at = next;
      continue;
    }
    // The member itself: its name from pax, else GNU's long name, else ustar's prefix/name (POSIX's
    // magic "ustar\0" has a prefix field, GNU's "ustar  " none).
    std::string name = field(h, 0, 100);
    if (h[262] == 0 && h[345]) name = field(h, 345, 155) + "/" + name;
    if (!long_name.empty()) name = long_name;
    name = pax.count("path") ? pax["path"] : name;
    const std::string link = pax.count("linkpath") ? pax["linkpath"] : !long_link.empty() ? long_link : field(h, 157, 100);
    cf::node::made m;
    m.mode = static_cast<mode_t>(number(h, 100, 8, at, "mode") & 07777);
    m.uid = static_cast<uid_t>(pax_value(pax, "uid", {number(h, 108, 8, at, "uid"), 0}, at).tv_sec);
    m.gid = static_cast<gid_t>(pax_value(pax, "gid", {number(h, 116, 8, at, "gid"), 0}, at).tv_sec);
    m.mtime = pax_value(pax, "mtime", {number(h, 136, 12, at, "mtime"), 0}, at);
    local.clear(), long_name.clear(), long_link.clear();
    const std::string path = clean_path(name, at);
    static const std::map<char, mode_t> kinds{{'0', S_IFREG}, {'\0', S_IFREG}, {'7', S_IFREG}, {'2', S_IFLNK},
                                              {'3', S_IFCHR}, {'4', S_IFBLK},  {'5', S_IFDIR}, {'6', S_IFIFO}};
    std::shared_ptr<member> node;
    if (type == '1') {  // a hard link: the node its target names at this point, under another name
      auto target = members.find(clean_path(link, at));
      if (target == members.end() || target->second.node->is_dir())
        throw bad_archive{at, "hard link '" + path + "' to '" + link + "', which is no earlier file of the archive"};
      node = target->second.node;
      m.mtime = target->second.mtime;
    } else if (auto kind = kinds.find(type); kind != kinds.end()) {
      m.mode |= kind->second;
      if (S_ISLNK(m.mode)) m.mode = S_IFLNK | 0777, m.target = link;
      if (S_ISCHR(m.mode) || S_ISBLK(m.mode)) m.rdev = makedev(number(h, 329, 8, at, "devmajor"), number(h, 337, 8, at, "devminor"));
      node = std::make_shared<member>(m, fd, data, S_ISREG(m.mode) ? size : 0);
    } else {
      throw bad_archive{at, std::string("unsupported member type '") + (std::isprint(type) ? std::string(1, type) : std::to_string(type)) +
                                "'"};
    }
    if (path.empty() && !node->is_dir()) throw bad_archive{at, "a member that is not a directory names the root"};
    members[path] = parsed{node, at, m.mtime};
    at = next;
  }
}

// Puts the members into the tree, parents first (in a map's order "a" comes before "a/b").
// Directories a path implies but the archive lacks are made with mode 0755, owned by the serving
// user, with the archive's mtime. Returns each node with its archive mtime, for restore_times.
struct placed {
  member* node;
  timespec mtime;
};
std::vector<placed> build(cf::node::tree<member>& fs, const std::map<std::string, parsed>& members, int fd, timespec implied_mtime) {
  std::vector<placed> out;
  std::map<std::string, member*> dirs{{"", &fs.root()}};
  auto add = [&](const std::string& path, std::shared_ptr<member> node, off_t at, timespec mtime, auto& directory) -> void {
    const auto slash = path.rfind('/');
    member* dir = directory(slash == std::string::npos ? "" : path.substr(0, slash), at, directory);
    const std::string name = path.substr(slash + 1);  // npos + 1 == 0
    if (auto r = fs.add(*dir, name, node); !r) throw bad_archive{at, "'" + path + "': " + std::strerror(r.error_code())};
    out.push_back(placed{node.get(), mtime});
    if (node->is_dir()) dirs[path] = node.get();
  };
  auto directory = [&](const std::string& path, off_t at, auto& self) -> member* {
    if (auto d = dirs.find(path); d != dirs.end()) return d->second;
    if (members.count(path)) throw bad_archive{at, "'" + path + "' is not a directory, yet members lie under it"};
    add(path, std::make_shared<member>(cf::node::made{S_IFDIR | 0755, ::getuid(), ::getgid(), 0, {}, implied_mtime}, fd, 0, 0), at,
        implied_mtime, self);
    return dirs[path];
  };
  for (const auto& [path, p] : members)
    if (!path.empty()) add(path, p.node, p.at, p.mtime, directory);
  return out;
}

// Naming a child stamps "now" on its directory's mtime, and cf::node::made takes an mtime of 0 for
// "now": the archive's times are put back once the tree is whole.
void restore_times(cf::node::tree<member>& fs, const std::vector<placed>& placed, timespec root_mtime) {
  auto stamp = [&](member& n, timespec t) { fs.edit_attributes(n, [&](cf::node::attributes& a) { a.atime = a.mtime = a.ctime = t; }); };
  for (const auto& p : placed) stamp(*p.node, p.mtime);
  stamp(fs.root(), root_mtime);
}

// Whether a list of mount options asks for "rw".
bool lists_rw(std::string_view opts) {
  for (;;) {
    const auto comma = opts.find(',');
    if (opts.substr(0, comma) == "rw") return true;
    if (comma == std::string_view::npos) return false;
    opts.remove_prefix(comma + 1);
  }
}

constexpr std::string_view about =
    "tarfs: serves an uncompressed tar archive (GNU tar's default format, POSIX ustar and pax) as a read-only filesystem";
constexpr std::string_view extra_usage =
    "  ARCHIVE                an uncompressed tar archive, read once at startup: directories, regular\n"
    "                         files, symlinks, hard links, fifos and devices, with the modes, numeric\n"
    "                         owners and mtimes of its headers; GNU long names ('L'/'K') and pax\n"
    "                         path, linkpath, size, mtime, uid and gid records. File data is read\n"
    "                         from the archive for each READ, never copied. A directory that a path\n"
    "                         implies but the archive lacks gets mode 0755, the serving user and the\n"
    "                         archive's mtime; a member that appears twice: the later one wins.\n"
    "                         A malformed archive (bad checksum, truncated, data past its end, an\n"
    "                         unsupported member type, an absolute path or a '..' component) or one\n"
    "                         that cannot be read: one line naming it (and the offset), exit 2,\n"
    "                         nothing mounted.\n"
    "  The mount is always read-only (-o ro; -o rw is refused): changes fail with EROFS.\n\n";

}  // namespace

int main(int argc, char** argv) {
  // ARCHIVE is the first positional argument; the rest is the common command line.
  std::string archive;
  bool asked_rw = false;
  std::vector<char*> rest{argv[0]};
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a.starts_with("-o") && a.size() > 2) asked_rw |= lists_rw(a.substr(2));
    if (cf::session::option_takes_value(a) && i + 1 < argc) {
      if (a == "-o") asked_rw |= lists_rw(argv[i + 1]);
      rest.push_back(argv[i]);
      rest.push_back(argv[++i]);
    } else if (archive.empty() && !a.empty() && a[0] != '-') {
      archive = a;
    } else {
      rest.push_back(argv[i]);
    }
  }
  rest.push_back(nullptr);
  cf::session::options o;
  const int status = cf::session::parse_main_options(static_cast<int>(rest.size() - 1), rest.data(), about, extra_usage, o,
                                                     "ARCHIVE MOUNTPOINT");
  if (status >= 0) return status;
  const char* name = argv[0];
  if (asked_rw) {
    std::fprintf(stderr, "%s: -o rw: an archive is served read-only (try --help)\n", name);
    return 2;
  }
  o.mount.read_only = true;

  const int fd = ::open(archive.c_str(), O_RDONLY | O_CLOEXEC);
  struct stat st {};
  if (fd < 0 || ::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    std::fprintf(stderr, "%s: %s: %s\n", name, archive.c_str(), fd < 0 ? std::strerror(errno) : "not a regular file");
    return 2;
  }
  member::speed = cf::classify_backing(fd);
  if (o.mount.fsname.empty() && archive.find_first_of(", \t\n") == std::string::npos) o.mount.fsname = archive;
  try {
    const auto members = read_archive(fd, st.st_size);
    // The root: the archive's own "./" when it has one.
    auto top = members.find("");
    auto root = top != members.end()
                    ? top->second.node
                    : std::make_shared<member>(cf::node::made{S_IFDIR | 0755, ::getuid(), ::getgid(), 0, {}, st.st_mtim}, fd, 0, 0);
    cf::node::tree<member> fs(root);
    restore_times(fs, build(fs, members, fd, st.st_mtim), top != members.end() ? top->second.mtime : st.st_mtim);
    return cf::session::serve(fs, o);
  } catch (const bad_archive& e) {
    std::fprintf(stderr, "%s: %s: offset %lld: %s\n", name, archive.c_str(), static_cast<long long>(e.at), e.why.c_str());
    return 2;
  }
}
