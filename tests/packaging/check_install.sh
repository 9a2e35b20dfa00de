#!/bin/sh
# Installs the build tree into a scratch prefix, then builds and runs a small
# consumer against it twice: through pkg-config and through find_package.
set -eu
build=$1 consumer=$2 cc=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
cmake --install "$build" --prefix "$prefix" >/dev/null

libdir=$(ls -d "$prefix"/lib*/pkgconfig | head -n 1 | xargs dirname)
export PKG_CONFIG_PATH="$libdir/pkgconfig"
# pkg-config, shared library
# shellcheck disable=SC2046
"$cc" -o "$tmp/pc-consumer" "$consumer/main.c" $(pkg-config --cflags --libs libctx) -pthread
LD_LIBRARY_PATH="$libdir" "$tmp/pc-consumer"
# pkg-config, static library
# shellcheck disable=SC2046
"$cc" -o "$tmp/pc-static" -DCTX_STATIC "$consumer/main.c" $(pkg-config --cflags libctx) \
  "$libdir/libctx.a" -pthread
"$tmp/pc-static"
echo "pkg-config: version $(pkg-config --modversion libctx), consumer ran"

# valgrind: the consumer (it makes a deadline, so the timer thread runs) is
# clean with the installed suppression file (docs/TOOLS.md).
supp=$prefix/share/libctx/libctx.supp
[ -f "$supp" ] || { echo "no $supp installed"; exit 1; }
if command -v valgrind >/dev/null 2>&1; then
  LD_LIBRARY_PATH="$libdir" valgrind -q --leak-check=full --error-exitcode=1 \
    --errors-for-leak-kinds=definite,indirect,possible \
    --suppressions="$supp" "$tmp/pc-consumer" >/dev/null
  valgrind -q --leak-check=full --error-exitcode=1 \
    --errors-for-leak-kinds=definite,indirect,possible \
    --suppressions="$supp" "$tmp/pc-static" >/dev/null
  echo "valgrind: consumers clean with $supp"
fi

# find_package(ctx) with target ctx::ctx
cmake -S "$consumer" -B "$tmp/cm" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_C_COMPILER="$cc" >/dev/null
cmake --build "$tmp/cm" >/dev/null
LD_LIBRARY_PATH="$libdir" "$tmp/cm/consumer"
echo "find_package: consumer ran"
