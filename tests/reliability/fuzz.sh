#!/usr/bin/env bash
# The model-based fuzzer (fuzz_model.c) under libFuzzer with ASan+UBSan, the
# debug checks and allocation-failure injection, for FUZZ_SECONDS (default
# 600; `make test` uses 60). Starts from the committed seed corpus
# (tests/reliability/corpus, never written to); new inputs go to
# build-fuzz/corpus, crashes to build-fuzz/artifacts. Prints the figures
# (executions, rate, coverage) and writes them to build-fuzz/summary.txt.
#   make fuzz                         # 10 minutes
#   FUZZ_SECONDS=3600 make fuzz       # an hour
#   build-fuzz/tests/reliability/ctx_fuzz build-fuzz/artifacts/crash-...  # replay
set -uo pipefail
cd "$(dirname "$0")/../.."
seconds=${FUZZ_SECONDS:-600}
dir=build-fuzz
if ! command -v clang >/dev/null; then
  echo "fuzz: clang is missing (scripts/deps.sh installs it)"; exit 1
fi
if ! CC=clang cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DCTX_SANITIZE=address -DCTX_DEBUG_CHECKS=ON -DCTX_FAULT_INJECTION=ON \
      -DCTX_FUZZ=ON -DCTX_BUILD_EXAMPLES=OFF \
      -DCMAKE_C_FLAGS=-fsanitize=fuzzer-no-link >"$dir.log" 2>&1 ||
   ! cmake --build "$dir" -j"$(nproc 2>/dev/null || echo 2)" --target ctx_fuzz >>"$dir.log" 2>&1; then
  tail -n 40 "$dir.log"; echo "fuzz: build failed"; exit 1
fi
mkdir -p "$dir/corpus" "$dir/artifacts"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
echo "fuzz: $seconds s on tests/reliability/corpus ($(ls tests/reliability/corpus | wc -l) seeds)"
"$dir/tests/reliability/ctx_fuzz" -max_total_time="$seconds" -timeout=20 \
  -max_len=1024 -print_final_stats=1 -artifact_prefix="$dir/artifacts/" \
  "$dir/corpus" tests/reliability/corpus >"$dir/fuzz.log" 2>&1
rc=$?
execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/fuzz.log")
rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$dir/fuzz.log")
last=$(grep -E '^#[0-9]+' "$dir/fuzz.log" | tail -n 1)
cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p' <<<"$last")
summary="fuzz: ${seconds} s, ${execs:-?} executions (${rate:-?}/s), coverage ${cov:-?} edges, ${ft:-?} features, corpus ${corp:-?}"
echo "$summary" | tee "$dir/summary.txt"
if [ $rc -ne 0 ]; then
  grep -E 'ERROR|check failed|SUMMARY|artifact|libctx:' "$dir/fuzz.log" | head -n 20
  tail -n 60 "$dir/fuzz.log"
  echo "fuzz: FAILED (rc $rc); the input is in $dir/artifacts/"
  exit 1
fi
