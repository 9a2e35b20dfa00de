#!/bin/sh
# Diffs the dynamic symbols a shared library defines against a checked-in list
# (jansson's check-exports): nothing internal leaks, nothing public is lost.
set -eu
lib=$1 list=$2
got=$(mktemp)
trap 'rm -f "$got"' EXIT
nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRVW]$/ {sub(/@.*/, "", $3); print $3}' |
  grep -v -E '^(_init|_fini|_edata|_end|__bss_start)$' | sort -u > "$got"
if ! diff -u "$list" "$got"; then
  echo "exported symbols differ from $list (- expected, + exported)"
  exit 1
fi
echo "exports: $(wc -l < "$got") symbols match $list"
