#!/usr/bin/env bash
# Installs the Debian packages the tests need, only when something is missing.
# Usage: scripts/deps.sh [extra-package ...]
set -euo pipefail
need=(cmake gcc g++ clang make pkg-config libcmocka-dev valgrind libclang-rt-14-dev "$@")
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps: installing ${missing[*]}"
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
