#!/usr/bin/env bash
# Propagation bench (make bench): client inject + server extract of a
# deadline (grpc-timeout) and a W3C traceparent, target <= 1 us per hop.
#   bench/integrations/propagate.sh BUILD_DIR
# BUILD_DIR is a Release build with -DCTX_BUILD_BENCH=ON; BENCH_ROUNDS
# rounds (default 5). Prints a Markdown section; exits 1 if the target is
# missed.
set -uo pipefail
build=${1:-${BENCH_BUILD_DIR:-build-bench}}
rounds=${BENCH_ROUNDS:-5}
bin=$build/bench/propagate_bench
if [ ! -x "$bin" ]; then
  cmake --build "$build" -j2 --target propagate_bench >/dev/null 2>&1 || true
fi
if [ ! -x "$bin" ]; then
  echo "### Propagation: deadline + traceparent"
  echo
  echo "propagate_bench was not built in $build (configure with -DCTX_BUILD_BENCH=ON): skipped."
  exit 0
fi
"$bin" "$rounds"
rc=$?
echo "Reproduce: \`cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DCTX_BUILD_BENCH=ON && cmake --build build-bench --target propagate_bench && bash bench/integrations/propagate.sh build-bench\`"
exit $rc
