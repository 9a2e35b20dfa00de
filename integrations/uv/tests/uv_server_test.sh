#!/bin/bash
# Runs examples/uv_server: clients get their echo; an idle client is closed
# at its idle deadline; SIGINT closes every connection and the server exits
# 0 with uv_loop_close() == 0.   usage: uv_server_test.sh <uv_server>
set -u
server=$1
dir=$(mktemp -d)
trap 'kill -9 $pid 2>/dev/null; rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*"; echo "--- server output:"; cat "$dir/out"; exit 1; }

"$server" 0 1500 > "$dir/out" 2>&1 &
pid=$!
for _ in $(seq 200); do
  grep -q '^listening on' "$dir/out" && break
  sleep 0.05
done
port=$(sed -n 's/^listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$dir/out")
[ -n "$port" ] || fail "server did not start"

# Three clients that talk, one that stays silent.
for i in 1 2 3; do
  eval "exec $((i + 2))<>/dev/tcp/127.0.0.1/$port" || fail "connect $i"
  echo "hello $i" >&$((i + 2))
  read -r -t 10 line <&$((i + 2)) || fail "no echo for client $i"
  [ "$line" = "hello $i" ] || fail "client $i got '$line'"
done
exec 6<>/dev/tcp/127.0.0.1/$port || fail "connect idle client"

# The idle client is closed by its deadline (EOF), the others are kept alive
# by talking every 0.3 s (their deadline is renewed on every read).
deadline=$((SECONDS + 20))
idle_closed=0
while [ $SECONDS -lt $deadline ]; do
  for i in 1 2 3; do
    echo "ping $i" >&$((i + 2))
    read -r -t 10 line <&$((i + 2)) || fail "client $i lost its connection"
  done
  rs=0
  read -r -t 0.3 line <&6 || rs=$?
  [ $rs -gt 128 ] && continue      # timeout: still open
  [ $rs = 0 ] && fail "idle client got data: '$line'"
  idle_closed=1                    # EOF
  break
done
[ $idle_closed = 1 ] || fail "idle client not closed by its deadline"
grep -q 'idle, closing' "$dir/out" || fail "server did not report the idle close"

kill -INT $pid
for i in 1 2 3; do
  if read -r -t 10 line <&$((i + 2)); then
    fail "client $i: expected EOF after SIGINT, got '$line'"
  fi
done
st=0
wait $pid || st=$?
[ $st = 0 ] || fail "server exited with $st"
grep -q 'loop closed: clean exit' "$dir/out" || fail "no clean exit"
[ "$(grep -c 'shutdown, closing' "$dir/out")" = 3 ] || fail "not all 3 connections closed at shutdown"
echo "uv_server: echo, idle deadline, SIGINT shutdown: OK"
cat "$dir/out"
