#!/usr/bin/env bash
# libctx-mhd: per-request cost of the request-context machinery, beside the
# same libmicrohttpd daemon without it (no target: measured).
# Usage: bench/integrations/mhd.sh BUILD_DIR   (BENCH_ROUNDS, default 5)
set -uo pipefail
build=${1:-${BENCH_BUILD_DIR:-build-bench}}
rounds=${BENCH_ROUNDS:-5}
bin=$build/integrations/mhd/bench_mhd
if [ ! -x "$bin" ]; then
  echo "### libctx-mhd"
  echo
  echo "libctx-mhd was not built in $build (libmicrohttpd not found or CTX_BUILD_BENCH off): skipped."
  exit 0
fi
"$bin" "$rounds" 3000 || exit 1
echo
echo "Reproduce: cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DCTX_BUILD_BENCH=ON && cmake --build build-bench --target bench_mhd && bash bench/integrations/mhd.sh build-bench"
