#!/usr/bin/env bash
# Runs examples/db_worker against the test server (conninfo file from the
# pq_server fixture) and checks what it says: fast requests answered, the
# slow one cut at its deadline, the server confirming the query stopped.
set -uo pipefail
prog=$1; cifile=$2
out=$("$prog" "$(cat "$cifile")" 2>&1); rc=$?
printf '%s\n' "$out"
fail() { echo "check_db_worker: $1"; exit 1; }
[ $rc = 0 ] || fail "exit status $rc"
grep -q '^request 1: .* -> hello from postgres' <<<"$out" || fail "request 1 not answered"
grep -q '^request 3: SELECT pg_sleep(10) -> cut at its deadline of 300 ms' <<<"$out" || fail "slow request not cut"
grep -q "server: backend [0-9]* is '.*' in pg_stat_activity: the query stopped" <<<"$out" || fail "no confirmation from the server"
grep -q '^request 4: .* -> still serving' <<<"$out" || fail "request 4 not answered"
# cut within a generous bound of its deadline (scaled under sanitizers)
t=$(sed -n 's/^request 3: .* after \([0-9]*\)\..* ms .*/\1/p' <<<"$out")
[ -n "$t" ] && [ "$t" -ge 300 ] && [ "$t" -le $((300 + 1000 * ${CHECK_SLOW:-1})) ] || fail "cut after $t ms"
echo "check_db_worker: ok"
