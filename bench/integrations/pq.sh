#!/usr/bin/env bash
# libctx-pq bench: ctx_pq_exec / PQexec for SELECT 1 over a Unix socket, and
# the cancel-to-return latency of a long query, against a private server
# started (and always stopped) here with integrations/pq/tests/pg_server.sh.
#   bash bench/integrations/pq.sh BUILD_DIR   (built with -DCTX_BUILD_BENCH=ON)
set -uo pipefail
cd "$(dirname "$0")/../.."
build=${1:-${BENCH_BUILD_DIR:-build-bench}}
rounds=${BENCH_ROUNDS:-5}
prog=$build/integrations/pq/bench_pq
echo "### libctx-pq: PostgreSQL queries (libpq $(pkg-config --modversion libpq 2>/dev/null || echo '?'))"
echo
if [ ! -x "$prog" ]; then
  echo "libctx-pq was not built in $build (libpq missing or CTX_BUILD_BENCH off): skipped."
  exit 0
fi
dir=$(mktemp -d /tmp/ctxpq-bench.XXXXXX)
trap 'bash integrations/pq/tests/pg_server.sh stop "$dir" >/dev/null 2>&1; rm -rf "$dir"' EXIT
if ! bash integrations/pq/tests/pg_server.sh start "$dir" >&2; then
  echo "could not start a PostgreSQL server: skipped."
  exit 1
fi
echo "| workload | raw median | libctx median | ratio | target | met? |"
echo "|---|---|---|---|---|---|"
"$prog" "$(cat "$dir/conninfo")" "$rounds"; rc=$?
echo
echo "$((rounds * 8)) pairs of rounds of 1000 queries each, the order alternating (per-query means; the ratio is the median of the pairs' ratios); 100 cancels each way, interleaved, each 20 ms into the query. The cancel-to-return time is mostly the server's: the postmaster forks a child to serve each cancel request, which signals the backend; the raw column is that floor. Reproduce: \`cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DCTX_BUILD_BENCH=ON && cmake --build build-bench --target bench_pq && bash bench/integrations/pq.sh build-bench\`"
[ $rc = 0 ] || exit 1
