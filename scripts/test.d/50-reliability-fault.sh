#!/usr/bin/env bash
# make test, extra step: the reliability tests in the allocation-failure
# injection build (CTX_FAULT_INJECTION=ON, debug checks, ASan+UBSan), which
# the four main configurations do not enable. See docs/RELIABILITY.md.
set -uo pipefail
cd "$(dirname "$0")/../.."
dir=build-test-fault
jobs=$(nproc 2>/dev/null || echo 2)
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
if ! cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Debug -DCTX_SANITIZE=address \
      -DCTX_DEBUG_CHECKS=ON -DCTX_FAULT_INJECTION=ON -DCTX_BUILD_EXAMPLES=OFF \
      >"$dir.log" 2>&1; then
  tail -n 40 "$dir.log"; exit 1
fi
# Build only what `ctest -L reliability` runs: the test names are the targets.
targets=$(cd "$dir" && ctest -N -L reliability | sed -n 's/^ *Test *#[0-9]*: *//p')
# shellcheck disable=SC2086
if [ -z "$targets" ] || ! cmake --build "$dir" -j"$jobs" --target $targets >>"$dir.log" 2>&1; then
  tail -n 40 "$dir.log"; exit 1
fi
cd "$dir" || exit 1
rc=0
ctest -L reliability --output-on-failure -j"$jobs" || rc=1
# The figures each test prints (failure points, soak rate, ...).
grep -hE '^(rel_[a-z_]+:|fuzz replay:)' Testing/Temporary/LastTest.log
exit $rc
