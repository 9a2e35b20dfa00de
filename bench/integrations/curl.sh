#!/usr/bin/env bash
# libctx-curl benchmark: usage bench/integrations/curl.sh BUILD_DIR
# (BUILD_DIR configured with -DCTX_BUILD_BENCH=ON, Release). Prints a Markdown
# section; exits 1 if a target is missed, 0 (with a note) if libctx-curl was
# not built.
#   BENCH_ROUNDS=5   rounds of the keep-alive GET comparison
#   CURL_BENCH_N=2000 requests per side per round; CURL_BENCH_CANCELS=200
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR}
bin=$build/integrations/curl/curl_bench
rounds=${BENCH_ROUNDS:-5}
n=${CURL_BENCH_N:-2000}
cancels=${CURL_BENCH_CANCELS:-200}

echo "### libctx-curl: ctx_curl_perform vs curl_easy_perform (loopback)"
echo
if [ ! -x "$bin" ]; then
  echo "libctx-curl was not built (libcurl not found, or CTX_WITH_CURL=OFF): skipped."
  exit 0
fi

read -r _ raw ctx < <("$bin" get "$rounds" "$n" | grep '^get ')
lat=$("$bin" cancel "$cancels")
read -r _ c50 c99 <<< "$(grep '^cancel ' <<< "$lat")"
read -r _ d50 d99 <<< "$(grep '^deadline ' <<< "$lat")"
read -r _ k50 k99 <<< "$(grep '^core ' <<< "$lat")"
read -r _ dctx dcurl < <("$bin" dns | grep '^dns ')
# glibc's real resolver against a name server that never answers: only where
# a private user, mount and network namespace can be made.
real=""
if command -v unshare >/dev/null 2>&1 && unshare -rmn true 2>/dev/null; then
  tmp=$(mktemp -d)
  echo "nameserver 127.0.0.1" > "$tmp/resolv.conf"
  real=$(unshare -rmn sh -c "ip link set lo up 2>/dev/null; \
    mount --bind '$tmp/resolv.conf' /etc/resolv.conf && \
    RES_OPTIONS='timeout:1 attempts:1' '$bin' dnsreal" 2>/dev/null | grep '^dnsreal ' || true)
  rm -rf "$tmp"
fi

ratio=$(awk -v a="$raw" -v b="$ctx" 'BEGIN { printf "%.2f", b / a }')
get_ok=$(awk -v r="$ratio" 'BEGIN { print (r <= 1.10) ? "yes" : "no" }')
cancel_ok=$(awk -v p="$c99" 'BEGIN { print (p <= 5000) ? "yes" : "no" }')
us() { awk -v x="$1" 'BEGIN { printf "%.1f us", x / 1000 }'; }
ms() { awk -v x="$1" 'BEGIN { printf "%.2f ms", x / 1000 }'; }

echo "| workload | raw median | libctx median | ratio | target | met? |"
echo "|---|---|---|---|---|---|"
echo "| keep-alive GET, a ctx_with_timeout per request (median request) | $(us "$raw") | $(us "$ctx") | $ratio | <= 1.10 | $get_ok |"
echo "| cancel to return, waiting for the first byte (p50 / p99 of $cancels) | progress callback: up to 1 s | $(ms "$c50") / $(ms "$c99") | - | p99 <= 5 ms | $cancel_ok |"
echo "| deadline to return, 5 ms deadline (p50 / p99) | - | $(ms "$d50") / $(ms "$d99") | - | - | info |"
echo "| reference: the core's ctx_wait woken by a cancel, same load (p50 / p99) | - | $(ms "$k50") / $(ms "$k99") | - | - | info |"
echo "| DNS hang (resolver released at 500 ms): curl TIMEOUT_MS 50 vs 50 ms deadline | ${dcurl} ms | ${dctx} ms | - | - | info |"
if [ -n "$real" ]; then
  read -r _ rctx rcurl <<< "$real"
  echo "| DNS, glibc resolver, silent name server (1 s timeout): curl TIMEOUT_MS 50 vs 50 ms deadline | ${rcurl} ms | ${rctx} ms | - | - | info |"
fi
echo
echo "Reproduce: \`cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DCTX_BUILD_BENCH=ON && cmake --build build-bench -j2 && bench/integrations/curl.sh build-bench\`"
[ "$get_ok" = yes ] && [ "$cancel_ok" = yes ] || exit 1
