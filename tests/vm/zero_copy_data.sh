#!/bin/sh
# In the VM (Linux 7.3, root): file data through the buffer-pool transport, zero-copy and not.
#   passthrough over a tmpfs SOURCE, --transport pool (zero-copy queues: root has CAP_SYS_ADMIN;
#     passthrough opens regular files for zero-copy): ZERO_COPY > 0 at exit, READ/WRITE errors=0;
#   passthrough --transport pool --zero-copy off: no ZERO_COPY line, the same data;
#   memfs --transport pool (never opens for zero-copy): no ZERO_COPY line, the same data.
# Data: a 64 MiB random file and one of an odd size (1197465 bytes: 292 pages and 1433 bytes), written and read with dd,
# buffered and O_DIRECT (bs=1M and bs=4k; the odd file ends in a partial block), compared byte for
# byte after dropping caches with the copies kept outside and (passthrough) the backing files.
# busybox sh.
set -u
test_name=zero_copy_data
. /vm/tests/lib.sh

keep=$PWD/keep
mkdir -p "$keep"
dd if=/dev/urandom of="$keep/big" bs=1M count=64 2>/dev/null || fail "making the 64 MiB file"
dd if=/dev/urandom of="$keep/odd" bs=12345 count=97 2>/dev/null || fail "making the odd file"   # 1197465 bytes
[ "$(stat -c %s "$keep/odd")" = 1197465 ] || fail "the odd file's size"

same() {  # A B WHAT
  cmp "$1" "$2" >/dev/null 2>&1 || fail "$3: $1 differs from $2 ($(cmp "$1" "$2" 2>&1 | head -n 1))"
}

# One server: the data checks through MOUNTPOINT. $1: label; $2: backing directory or "-"; rest:
# the server's command line.
data_checks() {
  label=$1 src=$2
  m=$mnt
  t0=$(date +%s)
  # Buffered: 1 MiB and 4 KiB writes (the kernel sends max_write-sized WRITEs either way).
  dd if="$keep/big" of="$m/big" bs=1M conv=fsync 2>/dev/null || fail "$label: buffered write of big"
  dd if="$keep/odd" of="$m/odd" bs=4k conv=fsync 2>/dev/null || fail "$label: buffered write of odd"
  drop_caches
  same "$m/big" "$keep/big" "$label: buffered big read back"
  same "$m/odd" "$keep/odd" "$label: buffered odd read back"
  dd if="$m/big" of="$PWD/out" bs=1M 2>/dev/null || fail "$label: buffered dd read of big"
  same "$PWD/out" "$keep/big" "$label: buffered dd read of big"
  # O_DIRECT: each request carries the client's own buffer (the zero-copy path).
  dd if="$keep/big" of="$m/big_d" bs=1M oflag=direct 2>/dev/null || fail "$label: O_DIRECT 1M write of big"
  dd if="$keep/odd" of="$m/odd_d" bs=4k oflag=direct 2>/dev/null || fail "$label: O_DIRECT 4k write of odd"
  dd if="$keep/odd" of="$m/odd_d1" bs=1M oflag=direct 2>/dev/null || fail "$label: O_DIRECT 1M write of odd"
  drop_caches
  dd if="$m/big_d" of="$PWD/out" bs=1M iflag=direct 2>/dev/null || fail "$label: O_DIRECT 1M read of big_d"
  same "$PWD/out" "$keep/big" "$label: O_DIRECT 1M read of big_d"
  dd if="$m/big" of="$PWD/out" bs=4k iflag=direct count=512 2>/dev/null || fail "$label: O_DIRECT 4k read of big"
  head -c 2097152 "$keep/big" >"$PWD/want"
  same "$PWD/out" "$PWD/want" "$label: O_DIRECT 4k read of big's first 2 MiB"
  for f in odd_d odd_d1; do
    dd if="$m/$f" of="$PWD/out" bs=4k iflag=direct 2>/dev/null || fail "$label: O_DIRECT 4k read of $f"
    same "$PWD/out" "$keep/odd" "$label: O_DIRECT 4k read of $f"
    dd if="$m/$f" of="$PWD/out" bs=1M iflag=direct 2>/dev/null || fail "$label: O_DIRECT 1M read of $f"
    same "$PWD/out" "$keep/odd" "$label: O_DIRECT 1M read of $f"
  done
  # A write into the middle at an odd offset (read-modify-write of partial pages), O_DIRECT.
  dd if="$keep/odd" of="$m/big_d" bs=4k seek=1000 conv=notrunc oflag=direct 2>/dev/null || fail "$label: O_DIRECT overwrite"
  drop_caches
  dd if="$m/big_d" of="$PWD/out" bs=1M iflag=direct 2>/dev/null || fail "$label: O_DIRECT read after the overwrite"
  cp "$keep/big" "$PWD/want" && dd if="$keep/odd" of="$PWD/want" bs=4k seek=1000 conv=notrunc 2>/dev/null
  same "$PWD/out" "$PWD/want" "$label: big_d after the overwrite"
  same "$m/big_d" "$PWD/want" "$label: big_d after the overwrite, buffered"
  if [ "$src" != - ]; then
    for f in big odd; do same "$src/$f" "$keep/$f" "$label: backing $f"; done
    same "$src/big_d" "$PWD/want" "$label: backing big_d"
    for f in odd_d odd_d1; do same "$src/$f" "$keep/odd" "$label: backing $f"; done
  fi
  [ "$(stat -c %s "$m/odd_d")" = 1197465 ] || fail "$label: size of odd_d through the mount"
  rm -f "$m/big" "$m/big_d" "$m/odd" "$m/odd_d" "$m/odd_d1" "$PWD/out" "$PWD/want" || fail "$label: rm"
  echo "$test_name: $label: data checks passed in $(( $(date +%s) - t0 )) s"
}

check_counters() {  # LABEL ZERO_COPY(yes|no)
  for op in READ WRITE; do
    [ "$(counter "$log" "$op" errors)" = 0 ] || fail "$1: $op errors: $(grep "counter $op " "$log")"
    [ "$(counter "$log" "$op" ring)" -gt 0 ] || fail "$1: no $op over the ring: $(grep "counter $op " "$log")"
  done
  z=$(awk '$1 == "counter" && $2 == "ZERO_COPY" { print $3 }' "$log")
  if [ "$2" = yes ]; then
    [ -n "$z" ] && [ "$z" -gt 0 ] || fail "$1: no 'counter ZERO_COPY N' with N > 0"
  else
    [ -z "$z" ] || fail "$1: zero-copied $z requests where none should be"
  fi
  echo "$test_name: $1: $(grep -E 'counter (READ|WRITE|ZERO_COPY) ' "$log" | tr '\n' ';')"
}

run() {  # LABEL ZERO_COPY(yes|no) EXPECTED-START-LINE-PATTERN FS ARGS...
  label=$1 zc=$2 pat=$3 fs=$4
  shift 4
  l=$PWD/$label.log
  if [ "$fs" = passthrough ]; then
    src=$PWD/src-$label
    mkdir -p "$src" && mount -t tmpfs -o size=512m tmpfs "$src" || fail "$label: tmpfs for SOURCE"
    tidy_mounts="$tidy_mounts $src"
    start_server "$l" "$PWD/mnt-$label" passthrough "$src" "$PWD/mnt-$label" "$@"
  else
    src=-
    start_server "$l" "$PWD/mnt-$label" memfs "$PWD/mnt-$label" "$@"
  fi
  grep -E -q "$pat" "$log" || fail "$label: no start line matching '$pat': $(grep 'serving over' "$log")"
  data_checks "$label" "$src"
  stop_server
  check_counters "$label" "$zc"
  [ "$src" = - ] || umount "$src" || fail "$label: umount SOURCE"
}

run pt-pool yes 'with buffer pools: [0-9]+ queues x [0-9]+ entries, [0-9]+ KiB buffers; ([1-9][0-9]*) queues pooled, \1 zero-copy' \
  passthrough --transport pool -d
run pt-pool-copy no 'with buffer pools: .*; [1-9][0-9]* queues pooled, 0 zero-copy' passthrough --transport pool --zero-copy off -d
run memfs-pool no 'with buffer pools: [0-9]+ queues x [0-9]+ entries, [0-9]+ KiB buffers; ([1-9][0-9]*) queues pooled, \1 zero-copy' \
  memfs --transport pool -d
echo "$test_name: ok"
