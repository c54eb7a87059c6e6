// Where a backing file's data lives, which decides how a queue thread may touch it.
//
// io_uring runs a READ or WRITE inline only when the file can do it without blocking (it asks the
// file with IOCB_NOWAIT); otherwise it hands the operation to an io-wq worker thread, and the
// queue thread hops to that worker and back. tmpfs and memfds (shmem) cannot be asked (Linux 6.18
// answers RWF_NOWAIT with EOPNOTSUPP), so every io_uring read of them is punted, although their
// data is in memory and a pread(2) on the queue thread is a plain copy: a thread hop costs more
// than the copy (docs/kernel.md, "What io_uring runs inline"). So:
//   memory  (tmpfs, ramfs, memfd, hugetlbfs): read and write with the system call, inline;
//   local   (a local disk filesystem): read inline what is cached (preadv2 RWF_NOWAIT), the rest
//           and every write on the ring;
//   remote  (NFS, SMB, FUSE, anything unknown): everything on the ring, a slow server never
//           stalls a queue thread.
#pragma once

#include <sys/statfs.h>

#include <cstdint>

namespace corofuse {

enum class backing_speed : std::uint8_t { remote, local, memory };

// Classifies the filesystem `fd` is on (fstatfs once, at open or at start: not per request).
inline backing_speed classify_backing(int fd) noexcept {
  struct statfs s {};
  if (::fstatfs(fd, &s) != 0) return backing_speed::remote;
  switch (static_cast<unsigned long>(s.f_type)) {
    case 0x01021994:  // TMPFS_MAGIC (tmpfs, memfds, SysV shm)
    case 0x858458f6:  // RAMFS_MAGIC
    case 0x958458f6:  // HUGETLBFS_MAGIC
      return backing_speed::memory;
    case 0xef53:      // EXT2/3/4_SUPER_MAGIC
    case 0x58465342:  // XFS_SUPER_MAGIC
    case 0x9123683e:  // BTRFS_SUPER_MAGIC
    case 0xf2f52010:  // F2FS_SUPER_MAGIC
    case 0x2fc12fc1:  // ZFS
    case 0x794c7630:  // OVERLAYFS_SUPER_MAGIC
      return backing_speed::local;
    default:  // NFS, CIFS/SMB, FUSE, 9p, ceph, anything not known to be local
      return backing_speed::remote;
  }
}

}  // namespace corofuse
