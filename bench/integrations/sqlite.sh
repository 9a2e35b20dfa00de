#!/usr/bin/env bash
# libctx-sqlite beside plain SQLite: prints a Markdown section for the bench
# report; exits 1 when a target is missed, 0 (saying so) when not built.
#   bench/integrations/sqlite.sh BUILD_DIR     (BENCH_ROUNDS, default 5)
set -u
build=${1:-${BENCH_BUILD_DIR:-build}}
rounds=${BENCH_ROUNDS:-5}
bin=$build/integrations/sqlite/bench_sqlite
if [ ! -x "$bin" ]; then
  echo "### SQLite (libctx-sqlite)"
  echo
  echo "Not built: libctx-sqlite or its bench is missing in $build" \
       "(needs libsqlite3-dev and -DCTX_BUILD_BENCH=ON)."
  exit 0
fi
exec "$bin" "$rounds"
