#!/usr/bin/env bash
# make demo: builds the library and the examples, then runs the main demo
# (the seed's client/server timeout example, done better) and the other
# seed examples briefly. One line per event, with elapsed milliseconds.
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

section "Seed 6: client/server timeout. The server's handler answers 'quick response' or, at random (seed 10), sleeps 10 s; the client gives up after 100 ms."
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

section "Graceful shutdown: one slow request in flight (client timeout 5 s), then SIGINT; the server stops accepting, gives handlers 1 s, then cancels them."
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
run "Seed 1: stopping a worker: no way, a global flag, a channel, a context (tick 100 ms)" "$bin/ex1_worker" 100
run "Seed 2: gen(ctx) until the consumer cancels after 5" "$bin/ex2_gen"
run "Seed 3: WithDeadline 50 ms against a 1 s sleep" "$bin/ex3_deadline"
run "Seed 4: WithTimeout 50 ms, a worker connecting every 10 ms" "$bin/ex4_timeout"
run "Seed 5: WithValue, a trace code read through a typed accessor" "$bin/ex5_value"
run "Seed 002: the goroutine leak (times divided by 10), leaky then fixed" "$bin/ex7_leak" 10
echo
say "demo finished"
