#!/usr/bin/env bash
# make demo: builds the library and the examples, then runs the main demo
# (Go example 6, the client/server timeout, done better) and C versions of
# the other Go context examples briefly. One line per event, with elapsed milliseconds.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh build demo || { echo "demo: could not install dependencies"; exit 1; }

dir=build-demo
echo "demo: building into $dir (cmake, -j2) ..."
if ! { cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
         -DCTX_BUILD_TESTS=OFF -DCTX_BUILD_EXAMPLES=ON >"$dir.log" 2>&1 &&
       cmake --build "$dir" -j2 >>"$dir.log" 2>&1; }; then
  tail -n 40 "$dir.log"; echo "demo: build failed (see $dir.log)"; exit 1
fi
bin=$dir/examples
tmp=$(mktemp -d)
spid=""
cleanup() { [ -n "$spid" ] && kill "$spid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

DEMO_T0=$(date +%s%3N)
export DEMO_T0
say() { printf '[%6d ms] %-7s %s\n' $(( $(date +%s%3N) - DEMO_T0 )) demo "$*"; }
section() { echo; echo "=== $*"; }

echo
echo "libctx brings Go's context package (cancellation, deadlines, values"
echo "across threads) to C. This demo runs C versions of well-known Go context"
echo "examples, the client/server timeout first. Each line is one event:"
echo "[elapsed ms since the demo started] who  what happened."

section "Go example 6 in C, the main demo: a client call with a 100 ms timeout. The server's handler either answers 'quick response' or hangs for 10 s (picked at random; random seed 10, so every run makes the same picks). Watch the client give up at 100 ms and the server stop the hung handler as soon as the client hangs up, instead of working 10 s for nobody."
"$bin/ex6_server" --port-file "$tmp/port" --seed 10 --grace-ms 1000 \
  > >(tee "$tmp/server.log") 2>&1 &
spid=$!
for _ in $(seq 250); do [ -s "$tmp/port" ] && break; sleep 0.02; done
[ -s "$tmp/port" ] || { echo "demo: the server did not start"; exit 1; }
port=$(cat "$tmp/port")
timeouts=0 quick=0
for i in $(seq 10); do
  say "call $i: ex6_client --timeout-ms 100 $port"
  "$bin/ex6_client" --timeout-ms 100 "$port"
  case $? in 0) quick=$((quick + 1)) ;; 2) timeouts=$((timeouts + 1)) ;; *) echo "demo: call $i failed"; exit 1 ;; esac
  sleep 0.05 # let the server's line about this call come out first
done
say "$quick quick responses, $timeouts timeouts; every timed-out handler stopped at the hang-up:"
grep "client hung up" "$tmp/server.log" | sed -E 's/.*(#[0-9]+) client hung up after ([0-9.]+) ms; handler stopped ([0-9.]+) ms later.*/             \1: hang-up after \2 ms, handler stopped \3 ms later (not 10 s)/'

section "Graceful shutdown of the same server: one slow request in flight (this client waits up to 5 s), then Ctrl-C (SIGINT). The server stops accepting, gives running handlers 1 s to finish, then cancels them through their context and exits 0."
"$bin/ex6_client" --timeout-ms 5000 --path /slow "$port" &
cpid=$!
for _ in $(seq 250); do grep -q "GET /slow" "$tmp/server.log" && break; sleep 0.02; done
sleep 0.1
say "kill -INT $spid (the server)"
kill -INT "$spid"
wait "$cpid"
wait "$spid"; status=$?
spid=""
say "server exited with status $status"
[ "$status" -eq 0 ] || exit 1

run() { section "$1"; shift; "$@" || { echo "demo: $* failed"; exit 1; }; }
run "Go example 1 in C: four ways to stop a worker thread (none, a global flag, a channel, a context); only the context stops a worker and the worker it started, at once (tick 100 ms)" "$bin/ex1_worker" 100
run "Go example 2 in C: a generator thread produces numbers until its consumer, having taken 5, cancels it; the generator then exits (no leaked thread)" "$bin/ex2_gen"
run "Go example 3 in C: WithDeadline; a 1 s job is abandoned when the 50 ms deadline passes" "$bin/ex3_deadline"
run "Go example 4 in C: WithTimeout; a worker retries a connection every 10 ms and stops when the 50 ms timeout passes" "$bin/ex4_timeout"
run "Go example 5 in C: WithValue; a trace code set at the entry point is read by a worker through a typed accessor" "$bin/ex5_value"
run "Go's classic goroutine-leak example in C (times divided by 10): workers that time out leave their jobs blocked forever on a send nobody receives; the live thread count climbs. Then the fix (a buffered channel): every thread ends" "$bin/ex7_leak" 10
echo
say "demo finished"
