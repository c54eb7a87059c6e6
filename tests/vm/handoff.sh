#!/bin/sh
# In the VM (Linux 7.3, root): restart without unmount on the 7.42 ring (--transport ring), where
# the kernel ends a request handed to an entry whose process is leaving with ECANCELED: a client
# streaming through two handoffs must see no error, and the data must be right. Then the same over
# buffer pools with zero-copy queues. busybox sh.
set -u
test_name=handoff
. /vm/tests/lib.sh

src=$PWD/src keep=$PWD/keep sock=$PWD/handoff.sock
mkdir -p "$src" "$keep"
dd if=/dev/urandom of="$keep/data" bs=256k count=4 2>/dev/null || fail "making the data"
others=

stop_others() {
  for p in $others; do kill -KILL "$p" 2>/dev/null; done
}
trap 'stop_others; cleanup' EXIT

# A client: 30 rounds of write, read back, compare; exits 1 on the first difference or error.
client() {
  i=0
  while [ $i -lt 30 ]; do
    i=$((i + 1))
    dd if="$keep/data" of="$mnt/f$1" bs=64k 2>/dev/null || { echo "client $1: write $i failed"; return 1; }
    cmp "$mnt/f$1" "$keep/data" >/dev/null 2>&1 || { echo "client $1: round $i read back other bytes"; return 1; }
  done
  return 0
}

# Waits (30 s) for pid $1 to exit; its status, or 99.
wait_exit() {
  i=0
  while kill -0 "$1" 2>/dev/null; do
    i=$((i + 1))
    [ $i -le 300 ] || return 99
    sleep 0.1
  done
  wait "$1"
}

start_server "$PWD/first.log" "$PWD/mnt" passthrough "$src" "$PWD/mnt" --transport ring --handoff-socket "$sock"
first=$pid
client 1 >"$PWD/c1.out" 2>&1 &
c1=$!
client 2 >"$PWD/c2.out" 2>&1 &
c2=$!
others="$c1 $c2"
sleep 1
passthrough "$src" "$mnt" --transport ring --handoff-socket "$sock" --take-over "$sock" >"$PWD/second.log" 2>&1 &
second=$!
others="$others $second"
wait_exit "$first" || fail "the first server did not exit 0 after the handoff ($(cat "$PWD/second.log"))"
grep -q "handed the mount over" "$log" || fail "the first server did not hand over"
pid=$second log=$PWD/second.log
sleep 1
passthrough "$src" "$mnt" --transport ring --take-over "$sock" >"$PWD/third.log" 2>&1 &
third=$!
others="$others $third"
wait_exit "$second" || fail "the second server did not exit 0 after the handoff ($(cat "$PWD/third.log"))"
pid=$third log=$PWD/third.log
wait "$c1" || fail "client 1: $(cat "$PWD/c1.out")"
wait "$c2" || fail "client 2: $(cat "$PWD/c2.out")"
drop_caches
for f in f1 f2; do
  cmp "$mnt/$f" "$keep/data" >/dev/null 2>&1 || fail "$f differs through the mount after the handoffs"
  cmp "$src/$f" "$keep/data" >/dev/null 2>&1 || fail "$f differs in the backing directory"
done
grep -h "handed the mount over" "$PWD/first.log" "$PWD/second.log"
stop_server

# Buffer pools with zero-copy queues (root: CAP_SYS_ADMIN): the same, with O_DIRECT clients (their
# READs and WRITEs are zero-copy: a zero-copy request in service at the freeze is finished by the
# predecessor and only its reply handed over).
dclient() {
  i=0
  while [ $i -lt 30 ]; do
    i=$((i + 1))
    dd if="$keep/data" of="$mnt/d$1" bs=256k oflag=direct 2>/dev/null || { echo "dclient $1: write $i failed"; return 1; }
    dd if="$mnt/d$1" of="$PWD/dout$1" bs=256k iflag=direct 2>/dev/null || { echo "dclient $1: read $i failed"; return 1; }
    cmp "$PWD/dout$1" "$keep/data" >/dev/null 2>&1 || { echo "dclient $1: round $i read back other bytes"; return 1; }
  done
  return 0
}
start_server "$PWD/pool1.log" "$PWD/mnt2" passthrough "$src" "$PWD/mnt2" --transport pool --handoff-socket "$sock"
grep -q "2 zero-copy" "$log" || fail "the queues are not zero-copy: $(grep serving "$log")"
first=$pid
dclient 1 >"$PWD/d1.out" 2>&1 &
c1=$!
client 2 >"$PWD/c2.out" 2>&1 &
c2=$!
others="$others $c1 $c2"
sleep 1
passthrough "$src" "$mnt" --transport pool --handoff-socket "$sock" --take-over "$sock" >"$PWD/pool2.log" 2>&1 &
second=$!
others="$others $second"
wait_exit "$first" || fail "the pooled server did not exit 0 after the handoff ($(cat "$PWD/pool2.log"))"
pid=$second log=$PWD/pool2.log
grep -q "2 queues pooled, 2 zero-copy" "$log" || fail "the successor's queues are not pooled and zero-copy: $(grep serving "$log")"
sleep 1
passthrough "$src" "$mnt" --take-over "$sock" >"$PWD/pool3.log" 2>&1 &
third=$!
others="$others $third"
wait_exit "$second" || fail "the second pooled server did not exit 0 after the handoff ($(cat "$PWD/pool3.log"))"
pid=$third log=$PWD/pool3.log
wait "$c1" || fail "dclient 1: $(cat "$PWD/d1.out")"
wait "$c2" || fail "client 2: $(cat "$PWD/c2.out")"
drop_caches
for f in d1 f2; do
  cmp "$mnt/$f" "$keep/data" >/dev/null 2>&1 || fail "$f differs through the pooled mount after the handoffs"
  cmp "$src/$f" "$keep/data" >/dev/null 2>&1 || fail "$f differs in the backing directory"
done
grep -h "handed the mount over" "$PWD/pool1.log" "$PWD/pool2.log"
[ "$(counter "$log" ZERO_COPY ring)" -gt 0 ] 2>/dev/null || true
stop_server
echo "$test_name: ok"
