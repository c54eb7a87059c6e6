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

# An O_DIRECT client (on a zero-copy queue its READs and WRITEs are zero-copy): the same rounds.
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

# Two handoffs (server 1 -> 2 -> 3) over --transport $2 while client 1 ($3, a function writing
# the file $4) and client 2 (client, f2) stream; each server's log must show $5 once it serves.
# Then the clients must have seen no error, and the files be right through the mount and in the
# backing directory. $1 names the logs and the mount point.
two_handoffs() {
  label=$1 transport=$2 first_client=$3 first_file=$4 serving=$5
  start_server "$PWD/$label-1.log" "$PWD/mnt-$label" passthrough "$src" "$PWD/mnt-$label" --transport "$transport" \
    --handoff-socket "$sock"
  grep -q "$serving" "$log" || fail "$label: server 1 does not serve as expected: $(grep serving "$log")"
  $first_client 1 >"$PWD/$label-c1.out" 2>&1 &
  c1=$!
  client 2 >"$PWD/$label-c2.out" 2>&1 &
  c2=$!
  others="$others $c1 $c2"
  sleep 1
  for n in 2 3; do
    passthrough "$src" "$mnt" --transport "$transport" --handoff-socket "$sock" --take-over "$sock" >"$PWD/$label-$n.log" 2>&1 &
    next=$!
    others="$others $next"
    wait_exit "$pid" || fail "$label: server $((n - 1)) did not exit 0 after the handoff ($(cat "$PWD/$label-$n.log"))"
    grep -q "handed the mount over" "$log" || fail "$label: server $((n - 1)) did not hand over"
    pid=$next log=$PWD/$label-$n.log
    grep -q "$serving" "$log" || fail "$label: server $n does not serve as expected: $(grep serving "$log")"
    sleep 1
  done
  wait "$c1" || fail "$label: client 1: $(cat "$PWD/$label-c1.out")"
  wait "$c2" || fail "$label: client 2: $(cat "$PWD/$label-c2.out")"
  drop_caches
  for f in "$first_file" f2; do
    cmp "$mnt/$f" "$keep/data" >/dev/null 2>&1 || fail "$label: $f differs through the mount after the handoffs"
    cmp "$src/$f" "$keep/data" >/dev/null 2>&1 || fail "$label: $f differs in the backing directory"
  done
  grep -h "handed the mount over" "$PWD/$label-1.log" "$PWD/$label-2.log"
  stop_server
}

two_handoffs ring ring client f1 "serving over FUSE-over-io_uring: "
# Buffer pools with zero-copy queues (root: CAP_SYS_ADMIN), the successors' too: a zero-copy
# request in service at the freeze is finished by the predecessor and only its reply handed over.
two_handoffs pool pool dclient d1 "2 queues pooled, 2 zero-copy"
echo "$test_name: ok"
