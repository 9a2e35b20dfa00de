#!/usr/bin/env bash
# Installs Debian packages, only when something is missing.
# Usage: scripts/deps.sh GROUP... [-- extra-package ...]
# Each GROUP is scripts/deps.d/GROUP.txt, one package a line (# comments).
# `make test` installs every group; `make demo` only build + demo.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
need=()
while [ $# -gt 0 ]; do
  case $1 in
    --) shift; need+=("$@"); break ;;
    *) f=$here/deps.d/$1.txt
       [ -f "$f" ] || { echo "deps: no group $1 ($f)"; exit 2; }
       while read -r p _; do
         case $p in ''|'#'*) ;; *) need+=("$p") ;; esac
       done < "$f"
       shift ;;
  esac
done
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
