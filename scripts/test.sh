#!/usr/bin/env bash
# make test: install what is missing, then build and run the whole suite in
# four configurations (plain, ASan+UBSan, TSan, portable fallback), then the
# extra steps in scripts/test.d/ (fuzzing, valgrind, ...). Fails if any fails.
set -uo pipefail
cd "$(dirname "$0")/.."
groups=$(cd scripts/deps.d && ls *.txt | sed 's/\.txt$//')
# shellcheck disable=SC2086
bash scripts/deps.sh $groups || { echo "test: could not install dependencies"; exit 1; }

jobs=$(nproc 2>/dev/null || echo 2)
failed=()
start=$(date +%s)

# name | cmake options
configs=(
  "plain|-DCMAKE_BUILD_TYPE=RelWithDebInfo -DCTX_DEBUG_CHECKS=ON"
  "asan|-DCMAKE_BUILD_TYPE=Debug -DCTX_SANITIZE=address -DCTX_DEBUG_CHECKS=ON"
  "tsan|-DCMAKE_BUILD_TYPE=RelWithDebInfo -DCTX_SANITIZE=thread -DCTX_DEBUG_CHECKS=ON"
  "fallback|-DCMAKE_BUILD_TYPE=RelWithDebInfo -DCTX_USE_FUTEX=OFF -DCTX_DEBUG_CHECKS=ON"
)
# Seconds each part took, printed at the end (the budget is 15 minutes).
times=()
lap=$(date +%s)
took() { local now; now=$(date +%s); times+=("$1 $((now - lap)) s"); lap=$now; }

for c in "${configs[@]}"; do
  name=${c%%|*}; opts=${c#*|}
  dir=build-test-$name
  echo "=== $name: configure and build ($opts)"
  # shellcheck disable=SC2086
  if ! cmake -S . -B "$dir" $opts >"$dir.log" 2>&1 || ! cmake --build "$dir" -j"$jobs" >>"$dir.log" 2>&1; then
    tail -n 40 "$dir.log"; failed+=("$name:build"); continue
  fi
  echo "=== $name: ctest"
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  # TSan suppressions: only for races inside uninstrumented third-party
  # libraries (each integration keeps its own list beside it).
  cat tests/tsan.supp integrations/*/tsan.supp > "$dir/tsan.supp" 2>/dev/null
  export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$PWD/$dir/tsan.supp"
  if ! (cd "$dir" && ctest --output-on-failure -j"$jobs"); then
    failed+=("$name:ctest")
  fi
  took "$name"
done

for step in scripts/test.d/*.sh; do
  [ -e "$step" ] || continue
  echo "=== $(basename "$step")"
  bash "$step" || failed+=("$(basename "$step")")
  took "$(basename "$step" .sh)"
done

echo "=== make test took $(( $(date +%s) - start )) s"
printf '    %s\n' "${times[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "make test: FAILED: ${failed[*]}"
  echo "0 passed, ${#failed[@]} failed"
  exit 1
fi
echo "make test: all configurations passed"
