#!/usr/bin/env bash
# Runs one example program and checks its output.
# Usage: check.sh <example> <dir with the binaries>
set -uo pipefail
ex=$1 dir=$2
slow=${CHECK_SLOW:-1}
out=$(mktemp)
spid=""
# A failed check must not leave the example's server running.
trap '[ -n "$spid" ] && kill "$spid" 2>/dev/null; rm -f "$out" "$out".*' EXIT
fail() { echo "FAIL ($ex): $*"; echo "--- output:"; cat "$out"; exit 1; }
has() { grep -q -- "$1" "$out" || fail "no line matching '$1'"; }
count() { grep -c -- "$1" "$out"; }
ms_now() { date +%s%3N; }
run() { # run <max_ms> <cmd...>: runs, checks exit 0 and time
  local max=$(( $1 * slow )); shift
  local t0; t0=$(ms_now)
  "$@" >"$out" 2>&1 || fail "exit status $?"
  local took=$(( $(ms_now) - t0 ))
  (( took <= max )) || fail "took $took ms, more than $max ms"
  cat "$out"
}

case $ex in
ex1_worker)
  run 5000 "$dir/ex1_worker" 50
  has "1. a worker with no way"
  has "killing the process is the only way"
  (( $(count "over") == 3 )) || fail "expected three 'over'"
  has "worker2 *worker2"
  has "worker2 *stopped: context canceled"
  has "worker *stopped: context canceled"
  # the context way stops both at once, not after a tick
  ms=$(grep "both workers stopped" "$out" | sed -E 's/.*stopped ([0-9.]+) ms.*/\1/')
  (( ${ms%.*} < 50 * slow )) || fail "context stop took $ms ms"
  ;;
ex2_gen)
  run 3000 "$dir/ex2_gen"
  for n in 1 2 3 4 5; do has "main *$n\$"; done
  grep -q "main *6\$" "$out" && fail "consumed past 5"
  has "gen *stops at .*: context canceled"
  has "no leak"
  ;;
ex3_deadline)
  run 900 "$dir/ex3_deadline"
  has "context deadline exceeded"
  grep -q overslept "$out" && fail "overslept"
  ms=$(grep "deadline exceeded" "$out" | sed -E 's/^\[ *([0-9]+) ms.*/\1/')
  (( ms >= 45 && ms < 50 + 100 * slow )) || fail "deadline at $ms ms"
  ;;
ex4_timeout)
  run 2000 "$dir/ex4_timeout"
  # One attempt every 10 ms until the 50 ms timeout: at most 6, and at
  # least one (on a busy machine a 10 ms sleep may end only with the
  # timeout, so the count alone proves nothing more). What holds on any
  # machine: the attempts are at least 10 ms apart (9: the log rounds to ms)
  # and the worker stopped because of the deadline.
  n=$(count "db connecting ...")
  (( n >= 1 && n <= 6 )) || fail "$n connection attempts in 50 ms"
  prev=""
  for t in $(grep "db connecting" "$out" | sed -E 's/^\[ *([0-9]+) ms.*/\1/'); do
    [ -z "$prev" ] || (( t - prev >= 9 )) || fail "attempts $prev ms and $t ms: less than 10 ms apart"
    prev=$t
  done
  has "worker done! (context deadline exceeded)"
  tail -n1 "$out" | grep -q "over" || fail "'over' is not last"
  ;;
ex5_value)
  run 2000 "$dir/ex5_value"
  has "WithValue(TRACE_CODE"
  has "worker, trace code:12512312234"
  grep -q "invalid trace code" "$out" && fail "trace code not found"
  has "worker done!"
  ;;
ex6)
  pf=$out.port log=$out.server
  "$dir/ex6_server" --port-file "$pf" --pattern qs --grace-ms 300 >"$log" 2>&1 &
  spid=$!
  for _ in $(seq 200); do [ -s "$pf" ] && break; sleep 0.02; done
  [ -s "$pf" ] || { kill $spid; fail "server did not start"; }
  port=$(cat "$pf")
  c() { "$dir/ex6_client" "$@" "$port" >>"$out" 2>&1; echo $?; }
  # The quick calls get 5 s instead of the client's default 100 ms: on a
  # busy machine a quick round trip may take longer than 100 ms.
  [ "$(c --timeout-ms 5000)" = 0 ] || fail "quick call failed"  # #1: quick
  t0=$(ms_now)
  [ "$(c)" = 2 ] || fail "slow call did not time out"     # #2: slow
  (( $(ms_now) - t0 < 2000 * slow )) || fail "timeout took too long"
  [ "$(c --timeout-ms 5000 --path /quick)" = 0 ] || fail "/quick failed"
  # an in-flight slow handler when SIGINT arrives: cancelled after grace
  "$dir/ex6_client" --timeout-ms 5000 --path /slow "$port" >>"$out" 2>&1 &
  cpid=$!
  for _ in $(seq 200); do grep -q "#4 GET /slow" "$log" && break; sleep 0.02; done
  kill -INT $spid
  wait $cpid; wait $spid || { st=$?; spid=""; fail "server exit status $st"; }
  spid=""
  cat "$log" >>"$out"; cat "$out"
  has "client .*resp: quick response"
  has "client .*call api timeout (context deadline exceeded)"
  has "#2 client hung up after"
  has "client .*HTTP 503, resp: server shutting down"
  has "SIGINT: shutting down"
  has "grace period over"
  # the slow handler stopped within milliseconds of the hang-up
  ms=$(grep "#2 client hung up" "$out" | sed -E 's/.*handler stopped ([0-9.]+) ms later.*/\1/')
  (( ${ms%.*} < 50 * slow )) || fail "handler stopped $ms ms after the hang-up"
  ;;
ex7_leak)
  # Times are the example's divided by 10 (timeout 100 ms, job 120 ms);
  # with a slowdown factor (sanitizers) by less, so that the 20% margin
  # between them stays larger than a thread's start-up.
  run 8000 "$dir/ex7_leak" $(( slow >= 10 ? 1 : 10 / slow ))
  has "50 threads leaked"
  has "back to the baseline, no leak"
  ;;
*) fail "unknown example" ;;
esac
echo "PASS ($ex)"
