#!/usr/bin/env bash
# Load and faults for libctx-mhd, with ab (apache2-utils) on loopback:
#  - 10,000 requests at 200 concurrent (keep-alive) on /fast, while
#  - rounds of SLOW_C parallel requests on /slow (curl -Z, --max-time 1)
#    give up after 1 s, abandoning their requests mid-handler;
# then checks that every request succeeded, that every abandoned handler
# was cancelled (hang-ups counted) and stopped within milliseconds of its
# hang-up (the server's max hang-up-to-stop latency), and that the
# server's fds and threads are back to their baseline. Both modes.
# Usage: load.sh <mhd_backend binary>    (LOAD_N, LOAD_C, LOAD_SLOW_ROUNDS)
set -uo pipefail
backend=$1
N=${LOAD_N:-10000}
C=${LOAD_C:-200}
ROUNDS=${LOAD_SLOW_ROUNDS:-4}
SLOW_C=50
# Hang-up to handler stopped, max. poll: the after-func replies in the
# watcher thread (typically < 1 ms); tpc: 200+ blocked connection threads
# must each be scheduled to return (10-40 ms typical, 305 ms seen at load 18
# on 2 cores). Bounds for a loaded machine:
MAX_STOP_US_POLL=${LOAD_MAX_STOP_US_POLL:-100000}
MAX_STOP_US_TPC=${LOAD_MAX_STOP_US_TPC:-1000000}
command -v ab >/dev/null || { echo "FAIL: ab not found (apt-get install apache2-utils)"; exit 1; }
command -v curl >/dev/null || { echo "FAIL: curl not found (apt-get install curl)"; exit 1; }

tmp=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; [ -f "$tmp/out" ] && { echo "--- backend:"; cat "$tmp/out"; }; exit 1; }

stats() { # prints the backend's /stats line (its own request is active)
  curl -s --max-time 10 "http://127.0.0.1:$port/stats"
}
field() { echo "$1" | awk -v k="$2" '{for (i = 1; i < NF; i++) if ($i == k) print $(i + 1)}'; }

run_mode() {
  local mode=$1
  local MAX_STOP_US=$MAX_STOP_US_POLL
  [ "$mode" = tpc ] && MAX_STOP_US=$MAX_STOP_US_TPC
  "$backend" --mode "$mode" --threads 2 >"$tmp/out" 2>&1 &
  pid=$!
  for _ in $(seq 100); do grep -q '^port ' "$tmp/out" && break; sleep 0.05; done
  port=$(awk '/^port /{print $2}' "$tmp/out")
  [ -n "$port" ] || fail "backend did not start"
  stats >/dev/null                    # warm up
  local base; base=$(stats)
  local fds0 threads0
  fds0=$(field "$base" fds); threads0=$(field "$base" threads)
  echo "[$mode] baseline: $base"

  local t0; t0=$(date +%s%N)
  ab -k -n "$N" -c "$C" "http://127.0.0.1:$port/fast" >"$tmp/ab_fast" 2>&1 &
  local abp=$!
  local abandoned=0
  for r in $(seq "$ROUNDS"); do
    # each round: SLOW_C parallel requests that the client abandons after
    # 1 s (ab opens its connections one response at a time on a slow path)
    local urls=()
    for i in $(seq "$SLOW_C"); do urls+=("http://127.0.0.1:$port/slow?r=$r&i=$i"); done
    curl -s -Z --parallel-immediate --parallel-max "$SLOW_C" --max-time 1 "${urls[@]}" >/dev/null 2>&1
    abandoned=$((abandoned + SLOW_C))
  done
  wait $abp || fail "ab on /fast failed: $(tail -5 "$tmp/ab_fast")"
  local ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  local complete failed rps
  complete=$(awk '/^Complete requests:/{print $3}' "$tmp/ab_fast")
  failed=$(awk '/^Failed requests:/{print $3}' "$tmp/ab_fast")
  rps=$(awk '/^Requests per second:/{print $4}' "$tmp/ab_fast")
  [ "$complete" = "$N" ] || fail "[$mode] $complete of $N requests complete"
  [ "$failed" = "0" ] || fail "[$mode] $failed requests failed"

  # everything settles: no handler active, fds and threads at baseline
  local s
  for _ in $(seq 200); do
    s=$(stats)
    [ "$(field "$s" active)" = 1 ] && [ "$(field "$s" fds)" = "$fds0" ] &&
      [ "$(field "$s" threads)" = "$threads0" ] && break
    sleep 0.05
  done
  echo "[$mode] after: $s"
  [ "$(field "$s" active)" = 1 ] || fail "[$mode] handlers still active: $s"
  [ "$(field "$s" fds)" = "$fds0" ] || fail "[$mode] fds $(field "$s" fds), baseline $fds0"
  [ "$(field "$s" threads)" = "$threads0" ] || fail "[$mode] threads $(field "$s" threads), baseline $threads0"
  local hang max
  hang=$(field "$s" hangups); max=$(field "$s" stop_max_us)
  [ "$hang" = "$abandoned" ] || fail "[$mode] $hang hang-ups seen, $abandoned requests abandoned"
  [ "$max" -le "$MAX_STOP_US" ] || fail "[$mode] an abandoned handler stopped $max us after its hang-up (max $MAX_STOP_US)"
  echo "[$mode] $N requests at $C concurrent (keep-alive): $complete complete, $failed failed, $rps req/s, ${ms} ms;" \
       "$abandoned slow requests abandoned: $hang hang-ups, every handler stopped within $max us of its hang-up"

  kill -TERM "$pid"; wait "$pid" || fail "[$mode] backend exit status $?"
  pid=
  grep -q '^stopped graceful' "$tmp/out" || fail "[$mode] no graceful stop"
}

run_mode poll
run_mode tpc
echo "PASS"
