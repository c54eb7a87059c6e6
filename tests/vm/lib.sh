# Shared by the tests/vm scripts (busybox sh; sourced). A server runs in the background with its
# log in a file; every way out of a script unmounts and ends it (EXIT trap), so a failure leaves
# nothing mounted.
#   start_server LOG MOUNTPOINT COMMAND...   start COMMAND (stdout+stderr to LOG), wait for the
#                                            mount and the ring's start line; sets $pid
#   stop_server                              SIGTERM; waits (30 s); fails unless it exits 0 and
#                                            the mount is gone
#   counter LOG NAME FIELD                   e.g. counter LOG READ errors -> the number (0 if none)
#   fail MESSAGE...                          report (with the server's log), clean up, exit 1
pid= log= mnt= tidy_mounts=
test_name=${test_name:-vm-test}

fail() {
  echo "$test_name: FAIL: $*"
  if [ -n "$log" ] && [ -f "$log" ]; then echo "--- server log (last 60 lines)"; tail -n 60 "$log"; fi
  exit 1
}

cleanup() {
  if [ -n "$mnt" ] && grep -q " $mnt fuse" /proc/mounts; then
    # The connection's number is the minor of the mount's device (mountinfo: no stat of the mount).
    conn=$(awk -v m="$mnt" '$5 == m { split($3, d, ":"); print d[2] }' /proc/self/mountinfo | tail -n 1)
    umount -l "$mnt" 2>/dev/null
    [ -n "$conn" ] && [ -e "/sys/fs/fuse/connections/$conn/abort" ] && echo 1 >"/sys/fs/fuse/connections/$conn/abort"
  fi
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    i=0
    while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    kill -KILL "$pid" 2>/dev/null
  fi
  pid=
  for t in $tidy_mounts; do grep -q " $t " /proc/mounts && umount -l "$t"; done
}
trap cleanup EXIT

start_server() {  # LOG MOUNTPOINT COMMAND...
  log=$1 mnt=$2
  shift 2
  mkdir -p "$mnt"
  "$@" >"$log" 2>&1 &
  pid=$!
  i=0
  until grep -q " $mnt fuse" /proc/mounts; do
    i=$((i + 1))
    [ $i -le 600 ] || fail "$mnt not mounted after 60 s"
    kill -0 "$pid" 2>/dev/null || { pid=; fail "the server exited before mounting"; }
    sleep 0.1
  done
  i=0
  until grep -q 'serving over FUSE-over-io_uring' "$log"; do
    i=$((i + 1))
    [ $i -le 600 ] || fail "the ring did not start within 60 s"
    kill -0 "$pid" 2>/dev/null || { pid=; fail "the server exited before its ring started"; }
    sleep 0.1
  done
}

stop_server() {
  kill -TERM "$pid" || fail "the server is gone before SIGTERM"
  i=0
  while kill -0 "$pid" 2>/dev/null; do
    i=$((i + 1))
    [ $i -le 300 ] || fail "the server did not exit within 30 s of SIGTERM"
    sleep 0.1
  done
  wait "$pid"
  rc=$?
  pid=
  [ "$rc" = 0 ] || fail "the server exited $rc after SIGTERM"
  if grep -q " $mnt fuse" /proc/mounts; then fail "$mnt still mounted after the server exited"; fi
}

counter() {  # LOG NAME FIELD
  awk -v n="$2" -v f="$3" '$1 == "counter" && $2 == n { for (i = 3; i <= NF; i++) { split($i, kv, "="); if (kv[1] == f) v = kv[2] } } END { print v + 0 }' "$1"
}

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
