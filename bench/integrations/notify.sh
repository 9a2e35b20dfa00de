#!/bin/bash
# The notifier (<ctx/notify.h>) beside the done-fd-per-context way
# (ctx_done_fd() of every context in one epoll set), BENCH_ROUNDS (default 5)
# interleaved rounds: raw, then libctx, alternating.
#   usage: bench/integrations/notify.sh BUILD_DIR   (built with -DCTX_BUILD_BENCH=ON)
set -u
build=${1:-${BENCH_BUILD_DIR:-build-bench}}
rounds=${BENCH_ROUNDS:-5}
prog=$build/bench/notify_bench
echo "### Event loops: the notifier beside a done fd per context"
echo
if [ ! -x "$prog" ]; then
  echo "notify_bench was not built in $build (configure with -DCTX_BUILD_BENCH=ON): skipped."
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for r in $(seq "$rounds"); do
  for side in raw ctx; do
    "$prog" $side > "$tmp/$side.$r" || { echo "notify_bench $side failed"; exit 1; }
  done
done
# median KEY SIDE
median() {
  for f in "$tmp/$2".*; do awk -v k="$1" '$1 == k {print $2}' "$f"; done |
    sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'
}
for k in watch_ns lat_p50_ns lat_p99_ns cancel_ms cancel_cpu_ms mem_bytes fds children; do
  eval "raw_$k=$(median $k raw)"
  eval "ctx_$k=$(median $k ctx)"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a > 0) printf "%.3f", b / a; else print "-"}'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN {exit !(a <= b)}'; }
us() { awk -v v="$1" 'BEGIN {printf "%.1f us", v / 1000}'; }
miss=0
# Verdicts computed here, not in $(...), so that a miss sets $miss.
verdict() { if le "$2" "$3"; then eval "$1=yes"; else eval "$1=no"; miss=1; fi; }
verdict v_p99 "$ctx_lat_p99_ns" 5000000
verdict v_cancel "$ctx_cancel_ms" 50
if le "$ctx_mem_bytes" 64 && le "$ctx_fds" 0; then v_mem=yes
else v_mem="no"; miss=1; fi

echo "| workload | raw median (done fd + epoll) | libctx median (notifier) | ratio | target | met? |"
echo "|---|---|---|---|---|---|"
printf '| watch + unwatch, per context | %.0f ns | %.0f ns | %s | - | - |\n' \
  "$raw_watch_ns" "$ctx_watch_ns" "$(ratio "$raw_watch_ns" "$ctx_watch_ns")"
printf '| cancel to callback, p50 (other thread -> loop thread) | %s | %s | %s | - | - |\n' \
  "$(us "$raw_lat_p50_ns")" "$(us "$ctx_lat_p50_ns")" "$(ratio "$raw_lat_p50_ns" "$ctx_lat_p50_ns")"
printf '| cancel to callback, p99 | %s | %s | %s | <= 5 ms | %s |\n' \
  "$(us "$raw_lat_p99_ns")" "$(us "$ctx_lat_p99_ns")" "$(ratio "$raw_lat_p99_ns" "$ctx_lat_p99_ns")" "$v_p99"
printf '| cancel of a parent with 100,000 watched children, all callbacks run (raw: %s fds, scaled) | %.1f ms | %.1f ms | %s | <= 50 ms | %s |\n' \
  "$raw_children" "$raw_cancel_ms" "$ctx_cancel_ms" "$(ratio "$raw_cancel_ms" "$ctx_cancel_ms")" "$v_cancel"
printf '| the same, CPU time of the loop thread | %.1f ms | %.1f ms | %s | - | - |\n' \
  "$raw_cancel_cpu_ms" "$ctx_cancel_cpu_ms" "$(ratio "$raw_cancel_cpu_ms" "$ctx_cancel_cpu_ms")"
printf '| memory per watched context (heap + the 64-byte watch) | %.0f B + %s fd | %.0f B + %s fd | - | <= 64 B, 0 fds | %s |\n' \
  "$raw_mem_bytes" "$raw_fds" "$ctx_mem_bytes" "$ctx_fds" "$v_mem"
echo
echo "Reproduce: \`cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DCTX_BUILD_BENCH=ON && cmake --build build-bench --target notify_bench && bash bench/integrations/notify.sh build-bench\`"
exit $miss
