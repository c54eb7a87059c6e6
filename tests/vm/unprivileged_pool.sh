#!/bin/sh
# In the VM (Linux 7.3): passthrough over --transport pool run as uid 1000, without CAP_SYS_ADMIN,
# mounted through the setuid fusermount3. The kernel refuses zero-copy queues (EPERM), so every
# queue must fall back to a pool without zero-copy, say so in the log, and still serve the right
# data (buffered and O_DIRECT, written and read by uid 1000); no ZERO_COPY counter at exit, no
# READ/WRITE errors. SIGTERM must end the server with status 0, unmounted through fusermount3 -u -z.
# Needs /usr/bin/fusermount3 and /usr/bin/setpriv in the guest (TESTS adds them). busybox sh.
set -u
test_name=unprivileged_pool
. /vm/tests/lib.sh

fm=/usr/bin/fusermount3
[ -x "$fm" ] || fail "$fm is not in the guest"
# util-linux's setpriv by its path: busybox sh would run its own setpriv applet (no --reuid).
[ -x /usr/bin/setpriv ] || fail "/usr/bin/setpriv is not in the guest"
echo "$test_name: $(ls -l "$fm")"
if [ "$(stat -c %u "$fm")" != 0 ] || [ ! -u "$fm" ]; then
  echo "$test_name: note: $fm lost its owner or setuid bit in the initramfs: chown root, chmod 4755"
  chown 0:0 "$fm" && chmod 4755 "$fm" || fail "cannot make $fm setuid root"
fi
chmod 0666 /dev/fuse || fail "chmod /dev/fuse"
grep -q '^user:' /etc/passwd || echo 'user:x:1000:1000:user:/tmp:/bin/sh' >>/etc/passwd
grep -q '^user:' /etc/group || echo 'user:x:1000:' >>/etc/group
[ -e /etc/mtab ] || ln -s /proc/self/mounts /etc/mtab   # fusermount3 -u finds the mount's owner here
as_user() { /usr/bin/setpriv --reuid 1000 --regid 1000 --clear-groups "$@"; }

keep=$PWD/keep src=$PWD/src m=$PWD/mnt
mkdir -p "$keep" "$src" "$m"
chown 1000:1000 "$src" "$m" "$keep"
dd if=/dev/urandom of="$keep/big" bs=1M count=16 2>/dev/null || fail "making the 16 MiB file"
dd if=/dev/urandom of="$keep/odd" bs=12345 count=433 2>/dev/null || fail "making the odd file"
chmod 644 "$keep/big" "$keep/odd"

start_server "$PWD/server.log" "$m" /usr/bin/setpriv --reuid 1000 --regid 1000 --clear-groups passthrough "$src" "$m" --transport pool -d
awk -v m="$m" '$2 == m' /proc/mounts
grep 'serving over\|zero-copy\|pool' "$log"
queues=$(sed -n 's/.*with buffer pools: \([0-9]*\) queues x.*/\1/p' "$log")
[ -n "$queues" ] || fail "no 'serving over FUSE-over-io_uring with buffer pools' line"
grep -q "with buffer pools: $queues queues x .*; $queues queues pooled, 0 zero-copy" "$log" ||
  fail "expected $queues queues pooled, 0 zero-copy: $(grep 'with buffer pools' "$log")"
refused=$(grep -c 'corofuse: queue [0-9]*: zero-copy refused (EPERM: needs CAP_SYS_ADMIN): pool without zero-copy' "$log")
[ "$refused" = "$queues" ] || fail "$refused of $queues queues logged 'zero-copy refused (EPERM: needs CAP_SYS_ADMIN): pool without zero-copy'"
ps -o user,pid,args 2>/dev/null | grep '[p]assthrough'

# The data, as the mount's owner (without allow_other nobody else may use the mount).
as_user sh -c "
  set -e
  dd if='$keep/big' of='$m/big' bs=1M conv=fsync 2>/dev/null
  dd if='$keep/odd' of='$m/odd' bs=4k conv=fsync 2>/dev/null
  dd if='$keep/big' of='$m/big_d' bs=1M oflag=direct 2>/dev/null
  dd if='$keep/odd' of='$m/odd_d' bs=4k oflag=direct 2>/dev/null
" || fail "writing through the mount as uid 1000"
drop_caches
as_user sh -c "
  set -e
  cmp '$m/big' '$keep/big'
  cmp '$m/odd' '$keep/odd'
  dd if='$m/big_d' bs=1M iflag=direct 2>/dev/null | cmp - '$keep/big'
  dd if='$m/odd_d' bs=4k iflag=direct 2>/dev/null | cmp - '$keep/odd'
  dd if='$m/odd' bs=1M iflag=direct 2>/dev/null | cmp - '$keep/odd'
" || fail "reading back through the mount as uid 1000"
for f in big big_d; do cmp "$src/$f" "$keep/big" || fail "backing $f differs"; done
for f in odd odd_d; do cmp "$src/$f" "$keep/odd" || fail "backing $f differs"; done
[ "$(stat -c %u:%g "$src/big")" = 1000:1000 ] || fail "backing big belongs to $(stat -c %u:%g "$src/big"), not 1000:1000"

stop_server
for op in READ WRITE; do
  [ "$(counter "$log" "$op" errors)" = 0 ] || fail "$op errors: $(grep "counter $op " "$log")"
  [ "$(counter "$log" "$op" ring)" -gt 0 ] || fail "no $op over the ring: $(grep "counter $op " "$log")"
done
! grep -q 'counter ZERO_COPY' "$log" || fail "zero-copied without CAP_SYS_ADMIN: $(grep 'counter ZERO_COPY' "$log")"
grep -E 'counter (READ|WRITE) ' "$log"
echo "$test_name: ok"
