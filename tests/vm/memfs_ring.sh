#!/bin/sh
# In the VM (Linux 7.3, root): memfs over the io_uring ring on /tmp/m; files written and read back
# through it; SIGTERM ends the server with status 0 and leaves nothing mounted. busybox sh.
set -u
mnt=/tmp/m
log=$PWD/memfs.log
fail() { echo "memfs_ring: FAIL: $*"; echo "--- memfs log"; cat "$log"; kill -9 "$pid" 2>/dev/null; exit 1; }

mkdir -p "$mnt"
memfs "$mnt" --transport ring -d >"$log" 2>&1 &
pid=$!
# Wait for the mount in /proc/mounts (a stat of the mount point before INIT is answered blocks).
i=0
until grep -q " $mnt fuse" /proc/mounts; do
  i=$((i + 1))
  [ $i -le 300 ] || fail "not mounted after 30 s"
  kill -0 "$pid" 2>/dev/null || fail "memfs exited before mounting"
  sleep 0.1
done
i=0
until grep -q 'serving over FUSE-over-io_uring' "$log"; do
  i=$((i + 1))
  [ $i -le 300 ] || fail "the ring did not start within 30 s"
  sleep 0.1
done
grep -q "mounted $mnt: protocol 7.46" "$log" || fail "no 'mounted $mnt: protocol 7.46' in the log"

echo hello >"$mnt/a" || fail "write a"
[ "$(cat "$mnt/a")" = hello ] || fail "read a back"
mkdir -p "$mnt/d/e" || fail "mkdir"
dd if=/dev/urandom of=/tmp/big bs=64k count=48 2>/dev/null          # 3 MiB: several max_write requests
cp /tmp/big "$mnt/d/e/big" || fail "cp big"
sync
echo 3 >/proc/sys/vm/drop_caches
cmp /tmp/big "$mnt/d/e/big" || fail "big differs after reading back"
[ "$(stat -c %s "$mnt/d/e/big")" = 3145728 ] || fail "size of big"
ln -s a "$mnt/l" && [ "$(cat "$mnt/l")" = hello ] || fail "symlink"
mv "$mnt/a" "$mnt/d/b" && [ "$(cat "$mnt/d/b")" = hello ] || fail "rename"
for n in 1 2 3 4 5 6 7 8 9 10; do echo "$n" >"$mnt/d/f$n"; done
[ "$(ls "$mnt/d" | wc -l)" = 12 ] || fail "listing: $(ls "$mnt/d")"
rm "$mnt/d/f1" "$mnt/l" && [ ! -e "$mnt/d/f1" ] || fail "unlink"
ls -la "$mnt" "$mnt/d"
df "$mnt"

kill -TERM "$pid"
wait "$pid"
rc=$?
echo "--- memfs log"; cat "$log"
[ "$rc" = 0 ] || { echo "memfs_ring: FAIL: memfs exited $rc after SIGTERM"; exit 1; }
if grep -q " $mnt " /proc/mounts; then echo "memfs_ring: FAIL: $mnt still mounted"; exit 1; fi
echo "memfs_ring: ok"
