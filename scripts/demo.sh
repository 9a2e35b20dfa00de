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
bpid="" gpid=""
cleanup() {
  for p in $spid $gpid $bpid; do kill "$p" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT

DEMO_T0=$(date +%s%3N)
export DEMO_T0
say() { printf '[%6d ms] %-7s %s\n' $(( $(date +%s%3N) - DEMO_T0 )) demo "$*"; }
section() { echo; echo "=== $*"; }

echo
echo "libctx brings Go's context package (cancellation, deadlines, values"
echo "across threads and processes) to C. This demo first follows requests"
echo "across three processes, then runs C versions of well-known Go context"
echo "examples. Each line is one event:"
echo "[elapsed ms since the demo started] who  what happened."

# ---- 1. One request across three processes ------------------------------------
if [ -x "$bin/demo_gateway" ]; then
section "A request across processes: a client calls a gateway with a 100 ms budget; the gateway calls a backend over HTTP (libcurl), passing on the time left (grpc-timeout header) and the trace id (traceparent header); the backend runs an SQLite query under its request context. Each line shows the process, the trace id and what happened."
"$bin/demo_backend" --port-file "$tmp/bport" > >(tee "$tmp/backend.log") 2>&1 &
bpid=$!
for _ in $(seq 250); do [ -s "$tmp/bport" ] && break; sleep 0.02; done
"$bin/demo_gateway" --backend-port "$(cat "$tmp/bport")" --port-file "$tmp/gport" \
  > >(tee "$tmp/gateway.log") 2>&1 &
gpid=$!
for _ in $(seq 250); do [ -s "$tmp/gport" ] && break; sleep 0.02; done
[ -s "$tmp/gport" ] || { echo "demo: the gateway did not start"; exit 1; }
gport=$(cat "$tmp/gport")
# client PATH [options]: one call of demo_client to the gateway
client() { local path=$1; shift; "$bin/demo_client" "$@" "$gport" "$path" > >(tee -a "$tmp/client.log") 2>&1; }
settle() { sleep 0.1; } # lets the servers' lines about a call come out before the next

say "1. A quick request: answered well within the budget, by every hop."
client /quick --timeout-ms 100 || { echo "demo: the quick request failed"; exit 1; }
settle
say "2. A slow request: the backend's query would run for a minute, but the budget is 100 ms. At 100 ms the client gives up, the gateway's call stops, and the backend's query is interrupted, not left running."
st=0; client /slow --timeout-ms 100 || st=$?
[ "$st" -eq 2 ] || { echo "demo: the slow request did not run out of budget (exit $st)"; exit 1; }
settle
say "3. The client hangs up after 300 ms (a user closing the page) although its budget is 5 s: the gateway sees the hang-up, stops its call, and the backend sees its own caller hang up."
st=0; client /slow --timeout-ms 5000 --hangup-ms 300 || st=$?
[ "$st" -eq 3 ] || { echo "demo: the hang-up did not happen (exit $st)"; exit 1; }
settle
trace=$(grep -o 'trace [0-9a-f]\{32\}  GET /slow with a 100 ms' "$tmp/client.log" | awk '{print $2}')
hops=0
for f in client gateway backend; do grep -q "$trace" "$tmp/$f.log" && hops=$((hops + 1)); done
say "The trace id of request 2, $trace, is in the log of all $hops processes."
[ "$hops" -eq 3 ] || { echo "demo: the trace id did not reach every hop"; exit 1; }
grep -q "$trace.*INTERRUPTED" "$tmp/backend.log" || { echo "demo: the backend's query was not interrupted"; exit 1; }

say "4. Graceful shutdown: a slow request is in flight (budget 5 s) when the gateway gets SIGINT. It stops accepting, gives the request 1 s of grace, then cancels it; the backend's query stops with it."
started=$(grep -c "query starts" "$tmp/backend.log")
client /slow --timeout-ms 5000 &
cpid=$!
for _ in $(seq 250); do [ "$(grep -c "query starts" "$tmp/backend.log")" -gt "$started" ] && break; sleep 0.02; done
say "kill -INT gateway"
kill -INT "$gpid"
wait "$cpid" || true
wait "$gpid"; st=$?
say "the gateway exited with status $st; now the backend, with nothing in flight"
[ "$st" -eq 0 ] || exit 1
kill -INT "$bpid"
wait "$bpid"; st=$?
[ "$st" -eq 0 ] || { echo "demo: the backend exited with $st"; exit 1; }
say "the backend exited with status $st"
else
  echo "demo: the cross-process demo needs libcurl, libmicrohttpd and SQLite (scripts/deps.d/demo.txt)"
  exit 1
fi

section "Go example 6 in C: a client call with a 100 ms timeout. The server's handler either answers 'quick response' or hangs for 10 s (picked at random; random seed 10, so every run makes the same picks). Watch the client give up at 100 ms and the server stop the hung handler as soon as the client hangs up, instead of working 10 s for nobody."
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
