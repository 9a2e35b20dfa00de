#!/usr/bin/env bash
# make test, extra step: the propagation parsers (grpc-timeout, traceparent,
# tracestate, baggage) under libFuzzer with ASan+UBSan, each for
# FUZZ_PROPAGATE_SECONDS (default 20) starting from its committed seed
# corpus (tests/fuzz/corpus/NAME, never written to; new inputs go to
# build-fuzz-propagate/corpus/NAME, crashes to build-fuzz-propagate/artifacts).
# Fails on any crash, sanitizer report or failed check.
#   FUZZ_PROPAGATE_SECONDS=300 bash scripts/test.d/65-fuzz-propagate.sh
#   build-fuzz-propagate/tests/fuzz/fuzz_propagate_traceparent CRASHFILE  # replay
set -uo pipefail
cd "$(dirname "$0")/../.."
seconds=${FUZZ_PROPAGATE_SECONDS:-20}
dir=build-fuzz-propagate
names="grpc_timeout traceparent tracestate baggage"
if ! command -v clang >/dev/null; then
  echo "fuzz-propagate: clang is missing (scripts/deps.sh installs it)"; exit 1
fi
targets=""
for n in $names; do targets="$targets fuzz_propagate_$n"; done
# shellcheck disable=SC2086
if ! CC=clang cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DCTX_SANITIZE=address -DCTX_DEBUG_CHECKS=ON -DCTX_FUZZ=ON \
      -DCTX_BUILD_EXAMPLES=OFF \
      -DCMAKE_C_FLAGS=-fsanitize=fuzzer-no-link >"$dir.log" 2>&1 ||
   ! cmake --build "$dir" -j"$(nproc 2>/dev/null || echo 2)" --target $targets >>"$dir.log" 2>&1; then
  tail -n 40 "$dir.log"; echo "fuzz-propagate: build failed"; exit 1
fi
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
mkdir -p "$dir/artifacts"
rc=0
for n in $names; do
  mkdir -p "$dir/corpus/$n"
  log="$dir/fuzz-$n.log"
  "$dir/tests/fuzz/fuzz_propagate_$n" -max_total_time="$seconds" -timeout=10 \
    -max_len=20000 -print_final_stats=1 -artifact_prefix="$dir/artifacts/$n-" \
    "$dir/corpus/$n" "tests/fuzz/corpus/$n" >"$log" 2>&1
  r=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  echo "fuzz-propagate $n: ${seconds} s, ${execs:-?} executions (${rate:-?}/s), coverage ${cov:-?} edges, corpus $(ls "$dir/corpus/$n" | wc -l) new + $(ls "tests/fuzz/corpus/$n" | wc -l) seeds"
  if [ $r -ne 0 ]; then
    grep -E 'ERROR|fuzz check failed|SUMMARY|artifact' "$log" | head -n 20
    echo "fuzz-propagate $n: FAILED (rc $r); the input is in $dir/artifacts/"
    rc=1
  fi
done
exit $rc
