#!/bin/sh
# Installs the build tree into a scratch prefix, then builds and runs small
# consumers against it: the core through pkg-config (shared and static) and
# find_package (ctx::ctx, ctx::ctx_static), and every installed component
# (libctx-NAME.pc) through pkg-config and find_package(ctx COMPONENTS NAME).
# Also checks the layout a distribution expects: the SONAME, the headers,
# and the man pages (man 3 ctx_with_cancel) when they were made.
set -eu
build=$1 consumer=$2 cc=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
cmake --install "$build" --prefix "$prefix" >/dev/null

libdir=$(ls -d "$prefix"/lib*/pkgconfig | head -n 1 | xargs dirname)
export PKG_CONFIG_PATH="$libdir/pkgconfig"
ver=$(pkg-config --modversion libctx)
major=${ver%%.*}
soname=$(objdump -p "$libdir/libctx.so" | awk '/SONAME/ {print $2}')
[ "$soname" = "libctx.so.$major" ] || { echo "SONAME is $soname, want libctx.so.$major"; exit 1; }
# pkg-config, shared library
# shellcheck disable=SC2046
"$cc" -o "$tmp/pc-consumer" "$consumer/main.c" $(pkg-config --cflags --libs libctx) -pthread
LD_LIBRARY_PATH="$libdir" "$tmp/pc-consumer"
# pkg-config, static library
# shellcheck disable=SC2046
"$cc" -o "$tmp/pc-static" -DCTX_STATIC "$consumer/main.c" $(pkg-config --cflags libctx) \
  "$libdir/libctx.a" -pthread
"$tmp/pc-static"
echo "pkg-config: libctx $ver (SONAME $soname), consumer ran"

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

# Every installed component, through pkg-config.
components=""
for pc in "$libdir"/pkgconfig/libctx-*.pc; do
  [ -e "$pc" ] || continue
  name=$(basename "$pc" .pc); name=${name#libctx-}
  src=$consumer/components/$name.c
  [ -f "$src" ] || { echo "component $name: no consumer $src"; exit 1; }
  [ -f "$prefix/include/ctx/$name.h" ] || { echo "component $name: header not installed"; exit 1; }
  # shellcheck disable=SC2046
  "$cc" -o "$tmp/pc-$name" "$src" $(pkg-config --cflags --libs "libctx-$name")
  LD_LIBRARY_PATH="$libdir" "$tmp/pc-$name"
  echo "pkg-config: libctx-$name (Requires: $(pkg-config --print-requires "libctx-$name" | tr '\n' ' ')), consumer ran"
  components="$components;$name"
done
components=${components#;}

# find_package(ctx [COMPONENTS ...]): ctx::ctx, ctx::ctx_static, ctx::NAME
cmake -S "$consumer" -B "$tmp/cm" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_C_COMPILER="$cc" \
  "-DCTX_COMPONENTS=$components" >/dev/null
cmake --build "$tmp/cm" >/dev/null
LD_LIBRARY_PATH="$libdir" "$tmp/cm/consumer"
"$tmp/cm/consumer_static"
for name in $(echo "$components" | tr ';' ' '); do
  LD_LIBRARY_PATH="$libdir" "$tmp/cm/consumer_$name"
done
echo "find_package: ctx::ctx, ctx::ctx_static${components:+, components $components}: consumers ran"

# Man pages, when the build made them (pandoc present).
if [ -d "$build/man/man3" ] && command -v man >/dev/null 2>&1; then
  page=$prefix/share/man/man3/ctx_with_cancel.3
  [ -f "$page" ] || { echo "man pages made but not installed ($page)"; exit 1; }
  MANPATH=$prefix/share/man man -P cat 3 ctx_with_cancel 2>/dev/null | grep -q "derive a child context" ||
    { echo "man 3 ctx_with_cancel does not render"; exit 1; }
  echo "man: $(ls "$prefix/share/man/man3" | wc -l) pages, man 3 ctx_with_cancel renders"
fi

# A distribution's absolute libdir (-DCMAKE_INSTALL_LIBDIR=/usr/lib64): the
# .pc files must name it as is. They are written at configure time.
src=$(cd "$consumer/../../.." && pwd)
cmake -S "$src" -B "$tmp/abs" -DCMAKE_INSTALL_PREFIX=/usr -DCMAKE_INSTALL_LIBDIR=/usr/lib64 \
  -DCTX_BUILD_TESTS=OFF -DCTX_BUILD_EXAMPLES=OFF -DCTX_MAN_PAGES=OFF >/dev/null
for pc in "$tmp"/abs/libctx*.pc; do
  grep -qx 'libdir=/usr/lib64' "$pc" || { echo "$(basename "$pc"): $(grep '^libdir=' "$pc"), want libdir=/usr/lib64"; exit 1; }
done
echo "absolute libdir: $(ls "$tmp"/abs/libctx*.pc | wc -l) .pc files say libdir=/usr/lib64"
