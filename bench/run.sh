#!/usr/bin/env bash
# `make bench`: Go 1.19's context benchmarks and libctx's, interleaved in one
# run (Go, C, C++, Go, C, C++ ...), then the scaling tables, then one table of
# medians in bench/RESULTS.md and on stdout. The last line of stdout is
#   worst ratio: X.XX (workload)
#
# Knobs (environment):
#   BENCH_ROUNDS=5          interleaved rounds (medians are taken over them)
#   BENCH_TIME=200ms        -benchtime of every benchmark, Go and C alike
#   BENCH_FILTER=.          regex of the benchmarks to run (Go splits it on '/'
#                           into one pattern per sub-benchmark level; C does not)
#   BENCH_SCALE=1           0 skips the scaling tables
#   BENCH_SCALE_MAX=1000000 largest n of the scaling tables
#   BENCH_RESULTS=bench/RESULTS.md   where the report goes
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

ROUNDS=${BENCH_ROUNDS:-5}
BTIME=${BENCH_TIME:-200ms}
FILTER=${BENCH_FILTER:-.}
SCALE=${BENCH_SCALE:-1}
SCALE_MAX=${BENCH_SCALE_MAX:-1000000}
RESULTS=${BENCH_RESULTS:-bench/RESULTS.md}
BUILD=${BENCH_BUILD_DIR:-build-bench}
OUT=bench/go-out
log() { echo "bench: $*" >&2; }

# ---- dependencies: golang-go, cmake, a C and a C++ compiler --------------------
missing=()
command -v go >/dev/null 2>&1 || missing+=(golang-go)
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v cc >/dev/null 2>&1 || missing+=(gcc)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# ---- build (Release, own build dir) ----------------------------------------------
log "building libctx (Release) and the benchmarks in $BUILD"
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCTX_BUILD_TESTS=OFF \
  -DCTX_BUILD_EXAMPLES=OFF -DCTX_BUILD_BENCH=ON >/dev/null
cmake --build "$BUILD" -j2 >/dev/null
have_cxx=0
if cmake --build "$BUILD" -j2 --target stop_bench >/dev/null 2>&1; then
  have_cxx=1
else
  log "no C++20 std::stop_source peer (stop_bench did not build)"
fi
cbench=$BUILD/bench/ctx_bench
cxxbench=$BUILD/bench/stop_bench
report=$BUILD/bench/ctx_report

# ---- Go: compile the test binaries once (offline), then run them per round ---------
mkdir -p "$OUT"
rm -f "$OUT"/round-*.txt "$OUT"/scale.txt
export GOFLAGS=-mod=mod GOPROXY=off GOTOOLCHAIN=local GOTELEMETRY=off
gocache=$(go env GOCACHE 2>/dev/null || true)
if [ -z "$gocache" ] || ! mkdir -p "$gocache" 2>/dev/null || [ ! -w "$gocache" ]; then
  export GOCACHE=$root/$OUT/gocache
fi
log "compiling Go's context benchmarks ($(go version | awk '{print $3}'))"
go test -c -o "$OUT/context.test" context
(cd bench/go && go test -c -o "$root/$OUT/lifecycle.test" .)

gobench() { # the same flags as `go test -run NONE -bench . -benchmem context`
  "$OUT/context.test" -test.run NONE -test.bench "$FILTER" -test.benchmem -test.benchtime "$BTIME"
  "$OUT/lifecycle.test" -test.run NONE -test.bench "$FILTER" -test.benchmem -test.benchtime "$BTIME"
}

args=()
for r in $(seq 1 "$ROUNDS"); do
  log "round $r/$ROUNDS: Go"
  gobench >"$OUT/round-$r.go.txt"
  args+=("go:$OUT/round-$r.go.txt")
  log "round $r/$ROUNDS: C"
  "$cbench" -bench "$FILTER" -benchtime "$BTIME" >"$OUT/round-$r.c.txt"
  args+=("c:$OUT/round-$r.c.txt")
  if [ $have_cxx = 1 ]; then
    log "round $r/$ROUNDS: C++ std::stop_source"
    "$cxxbench" -bench "$FILTER" -benchtime "$BTIME" >"$OUT/round-$r.cxx.txt"
    args+=("cxx:$OUT/round-$r.cxx.txt")
  fi
done

if [ "$SCALE" != 0 ]; then
  log "scaling tables (n up to $SCALE_MAX)"
  "$cbench" -scale -scale-max "$SCALE_MAX" >"$OUT/scale.txt"
  [ $have_cxx = 1 ] && "$cxxbench" -scale -scale-max "$SCALE_MAX" >>"$OUT/scale.txt"
  args+=("scale:$OUT/scale.txt")
fi

# ---- the machine, then the report --------------------------------------------------
commit=unknown
if command -v git >/dev/null 2>&1 && git rev-parse --git-dir >/dev/null 2>&1; then
  commit=$(git rev-parse --short HEAD)
  git diff --quiet HEAD -- src include || commit="$commit+dirty"
fi
cpu=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || echo unknown)
{
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- Machine: $cpu, $(nproc) CPUs online, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM, $(uname -sr)"
  echo "- Go: $(go version | awk '{print $3, $4}'); C: $(cc --version | head -1); libctx $commit, Release (-O3)"
  echo "- Settings: $ROUNDS rounds, -benchtime $BTIME, filter '$FILTER', GOMAXPROCS and C threads = $(nproc); load average before the report: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- Command: \`make bench\` (bench/run.sh); raw outputs in $OUT/"
} >"$OUT/meta.txt"
"$report" -o "$RESULTS" -m "$OUT/meta.txt" "${args[@]}"

# ---- the integrations: each bench/integrations/NAME.sh prints a Markdown
# section (### title, a table of medians beside the raw library call, the
# ratio and the target), appended to the report and shown. A script exits 0
# when its integration was not built (it says so) and 1 when a target is missed.
ifail=0
for s in bench/integrations/*.sh; do
  [ -e "$s" ] || continue
  log "integration bench: $(basename "$s")"
  if ! out=$(BENCH_BUILD_DIR=$BUILD BENCH_ROUNDS=$ROUNDS bash "$s" "$BUILD"); then
    ifail=1
  fi
  printf '\n%s\n' "$out" | tee -a "$RESULTS"
done
if [ $ifail != 0 ]; then log "an integration missed a target (see above)"; fi
