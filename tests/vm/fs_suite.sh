#!/bin/sh
# In the VM (Linux 7.3, root): the shared behaviour suite (tests/mount/fs_suite_test.cpp) over the
# 7.46 transports. busybox sh.
#   sh /vm/tests/fs_suite.sh memfs|passthrough TRANSPORTS CATCH2-FILTER
# TRANSPORTS: FS_SUITE_TRANSPORTS (comma list: pool, pool-copy, ring, dev). The test binary
# (memfs_test or passthrough_suite_test) and the server are on PATH; the suite finds the server in
# its runfiles, so they are made here ($TEST_SRCDIR/corofuse/examples/FS/FS). Client deadlines are
# scaled by 10 (TCG). The [tools] test cannot run in the guest (no git, tar, ...): leave it out of
# the filter.
set -u
fs=$1 transports=$2 filter=$3
case "$fs" in
  memfs) bin=memfs_test ;;
  passthrough) bin=passthrough_suite_test ;;
  *) echo "fs_suite: unknown file system $fs"; exit 2 ;;
esac
server=$(command -v "$fs") || { echo "fs_suite: $fs is not on PATH"; exit 1; }
rf=$PWD/rf
mkdir -p "$rf/corofuse/examples/$fs"
ln -sf "$server" "$rf/corofuse/examples/$fs/$fs"
export TEST_SRCDIR=$rf TEST_WORKSPACE=corofuse FS_SUITE_TRANSPORTS=$transports FS_SUITE_TIME_SCALE=10
# The guest's init leaves RLIMIT_NOFILE at the kernel's 1024. passthrough records inodes as file
# handles here (root) and holds a bounded number of descriptors; in its fallback (--inode-handles
# off, or without the capability) it keeps a descriptor per inode the kernel knows, and [inodes]
# and [readdir] (2000+ files) would fail with EMFILE. Raised, so that either scheme runs.
ulimit -n 65536 || echo "fs_suite: cannot raise the open-file limit (ulimit -n is $(ulimit -n))"
echo "fs_suite: $bin over $transports, filter $filter, open files $(ulimit -n)"
"$bin" "$filter" --use-colour no --durations yes
