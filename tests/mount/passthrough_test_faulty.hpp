// A tiny faulty FUSE filesystem for passthrough_test: a backing store whose I/O fails, served by
// corofuse itself in a forked child on a temporary directory. passthrough then mirrors that mount,
// and a client compares the errors it gets through passthrough with the ones it gets directly.
//
//   /rfail   1 MiB; bytes readable before 512 KiB; a READ touching [512 KiB, 1 MiB) fails with EIO
//   /weio    4 KiB, readable; every WRITE fails with EIO
//   /wnospc  4 KiB, readable; every WRITE fails with ENOSPC
//
// Files are opened with direct_io, so each READ and WRITE carries the client's own offset and size
// (the faulty filesystem's page cache never hides or shifts a failure). Nothing ever changes:
// SETATTR answers the unchanged attributes.
#pragma once

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <span>
#include <string_view>
#include <vector>

#include "corofuse/corofuse.hpp"
#include "tests/mount/in_process_mount.hpp"

namespace corofuse::testing::faulty {

namespace cf = corofuse;

inline constexpr cf::ino rfail_ino = 2;
inline constexpr cf::ino weio_ino = 3;
inline constexpr cf::ino wnospc_ino = 4;
inline constexpr off_t rfail_size = 1 << 20;
inline constexpr off_t rfail_bad_from = 512 << 10;
inline constexpr off_t small_size = 4096;

// The byte at `off` of every file.
inline char pattern(off_t off) { return static_cast<char>((off * 131 + 7 + off / 4096) & 0xff); }

class faulty_fs {
 public:
  cf::result<cf::entry> lookup(cf::context&, cf::ino parent, std::string_view name) {
    if (parent != cf::root_ino) return cf::error(ENOTDIR);
    cf::entry e;
    if (name == "rfail") e.ino = rfail_ino;
    else if (name == "weio") e.ino = weio_ino;
    else if (name == "wnospc") e.ino = wnospc_ino;
    else return cf::error(ENOENT);
    e.attr = stat_of(e.ino);
    return e;
  }

  cf::result<cf::attr> getattr(cf::context&, cf::ino i, const cf::file_info*) {
    if (i < cf::root_ino || i > wnospc_ino) return cf::error(ENOENT);
    return cf::attr{stat_of(i)};
  }

  cf::result<cf::attr> setattr(cf::context&, cf::ino i, const cf::set_attr&, const cf::file_info*) {
    if (i < cf::root_ino || i > wnospc_ino) return cf::error(ENOENT);
    return cf::attr{stat_of(i)};
  }

  cf::result<cf::open_reply> open(cf::context&, cf::ino i, int) {
    if (i == cf::root_ino) return cf::error(EISDIR);
    if (i > wnospc_ino) return cf::error(ENOENT);
    cf::open_reply r;
    r.direct_io = true;
    return r;
  }

  cf::result<std::size_t> read(cf::context&, cf::ino i, cf::file_info&, std::span<std::byte> out, off_t off) {
    if (off < 0) return cf::error(EINVAL);
    const off_t size = i == rfail_ino ? rfail_size : small_size;
    if (off >= size) return std::size_t{0};
    const std::size_t n = std::min<std::size_t>(out.size(), static_cast<std::size_t>(size - off));
    if (i == rfail_ino && off + static_cast<off_t>(n) > rfail_bad_from) return cf::error(EIO);
    for (std::size_t k = 0; k < n; ++k) out[k] = static_cast<std::byte>(pattern(off + static_cast<off_t>(k)));
    return n;
  }

  cf::result<std::size_t> write(cf::context&, cf::ino i, cf::file_info&, std::span<const std::byte>, off_t) {
    if (i == wnospc_ino) return cf::error(ENOSPC);
    return cf::error(EIO);
  }

  cf::result<std::span<const cf::dir_entry>> readdir(cf::context&, cf::ino i, cf::file_info&, off_t off) {
    if (i != cf::root_ino) return cf::error(ENOTDIR);
    static constexpr std::array<cf::dir_entry, 5> all = {{
        {".", cf::root_ino, DT_DIR, 1},
        {"..", cf::root_ino, DT_DIR, 2},
        {"rfail", rfail_ino, DT_REG, 3},
        {"weio", weio_ino, DT_REG, 4},
        {"wnospc", wnospc_ino, DT_REG, 5},
    }};
    return std::span<const cf::dir_entry>(all).subspan(
        std::min<std::size_t>(static_cast<std::size_t>(std::max<off_t>(off, 0)), all.size()));
  }

 private:
  static struct stat stat_of(cf::ino i) {
    struct stat st {};
    st.st_ino = i;
    st.st_uid = 0;
    st.st_gid = 0;
    st.st_blksize = 4096;
    st.st_atim.tv_sec = st.st_mtim.tv_sec = st.st_ctim.tv_sec = 1700000000;
    if (i == cf::root_ino) {
      st.st_mode = S_IFDIR | 0755;
      st.st_nlink = 2;
    } else {
      st.st_mode = S_IFREG | 0666;
      st.st_nlink = 1;
      st.st_size = i == rfail_ino ? rfail_size : small_size;
    }
    st.st_blocks = (st.st_size + 511) / 512;
    return st;
  }
};

// faulty_fs served over /dev/fuse by a forked child on a fresh temporary directory (the guard
// cleans up whatever happened, see in_process_mount.hpp).
inline corofuse::testing::in_process_mount mount_faulty_fs() {
  cf::session::options o;
  o.mount.fsname = "faultyfs";
  o.transport = cf::session::transport_choice::dev_fuse;
  o.shutdown_grace = 1;
  return corofuse::testing::in_process_mount(corofuse::testing::in_process_mount::serving<faulty_fs>(), o);
}

}  // namespace corofuse::testing::faulty
