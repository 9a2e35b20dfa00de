#!/usr/bin/env bash
# make test, extra step: a 32-bit build (i386, -m32 with Debian's
# gcc-multilib) and its unit + reliability tests. It catches what only a
# 32-bit ABI shows: 32-bit pointers, size_t and long; 64-bit atomics
# (ctx_time_t) done with cmpxchg8b; the layout asserts of src/core/tree.c
# against the inline queries' view in ctx.h; shifts wider than a pointer.
#
# Needs: the i386 architecture in dpkg, libcmocka-dev:i386, gcc-multilib
# and g++-multilib (the C++ header test). Installed here when missing (apt-get,
# as root or through sudo); the step fails if they cannot be installed.
#
# Running: natively when the kernel runs 32-bit programs. Some kernels are
# built or booted without it (CONFIG_IA32_EMULATION off, or
# ia32_emulation=off: "Exec format error"); then the tests run under
# qemu-user (qemu-i386, installed when missing), which is slower (timing
# tolerances x8) and cannot run a few tests (see QEMU_SKIP below).
set -uo pipefail
cd "$(dirname "$0")/../.."
dir=build-test-m32
jobs=$(nproc 2>/dev/null || echo 2)

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
apt_updated=""
apt_install() {
  [ -n "$apt_updated" ] || { $sudo apt-get update -qq && apt_updated=1; } || return 1
  $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

if [ "$(dpkg --print-architecture 2>/dev/null)" != amd64 ]; then
  echo "m32: SKIPPED: the host is not amd64 ($(dpkg --print-architecture 2>/dev/null || uname -m)); the i386 multilib build needs an amd64 Debian host"
  exit 0
fi
if ! dpkg --print-foreign-architectures | grep -qx i386; then
  echo "m32: adding the i386 architecture to dpkg"
  $sudo dpkg --add-architecture i386 || { echo "m32: FAILED: cannot add the i386 architecture"; exit 1; }
  apt_updated=""
fi
missing=()
for p in gcc-multilib g++-multilib libcmocka-dev:i386; do
  installed "$p" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "m32: installing ${missing[*]}"
  apt_install "${missing[@]}" || { echo "m32: FAILED: could not install ${missing[*]}"; exit 1; }
fi

# Can this kernel run a 32-bit program?
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
printf 'int main(void) { return 0; }\n' > "$probe/p.c"
if ! gcc -m32 "$probe/p.c" -o "$probe/p" >/dev/null 2>&1; then
  echo "m32: FAILED: gcc -m32 cannot build a program (gcc-multilib broken?)"
  exit 1
fi
emu=()
slow=1
if ! "$probe/p" 2>/dev/null; then
  installed qemu-user || { echo "m32: installing qemu-user"; apt_install qemu-user; } ||
    { echo "m32: FAILED: the kernel does not run 32-bit programs and qemu-user cannot be installed"; exit 1; }
  if ! qemu-i386 "$probe/p"; then
    echo "m32: FAILED: neither the kernel nor qemu-i386 runs a 32-bit program"
    exit 1
  fi
  echo "m32: this kernel does not run 32-bit programs (ia32 emulation off): running the tests under qemu-i386"
  emu=("-DCMAKE_CROSSCOMPILING_EMULATOR=$(command -v qemu-i386)")
  slow=8
fi

# pkg-config must find the i386 cmocka, not the amd64 one.
export PKG_CONFIG_LIBDIR=/usr/lib/i386-linux-gnu/pkgconfig:/usr/share/pkgconfig
if ! cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCTX_DEBUG_CHECKS=ON \
      -DCTX_BUILD_EXAMPLES=OFF "-DCMAKE_C_FLAGS=-m32 -DTU_SLOW=$slow" \
      -DCMAKE_CXX_FLAGS=-m32 -DCMAKE_EXE_LINKER_FLAGS=-m32 \
      -DCMAKE_SHARED_LINKER_FLAGS=-m32 -DCTX_TIMEOUT_FACTOR=$slow "${emu[@]}" \
      >"$dir.log" 2>&1 ||
   ! cmake --build "$dir" -j"$jobs" >>"$dir.log" 2>&1; then
  tail -n 40 "$dir.log"; exit 1
fi
# Every object is 32-bit, or the flags did not reach the build.
if ! file -L "$dir/tests/test_tree" | grep -q 'ELF 32-bit'; then
  echo "m32: FAILED: the tests were not built for i386: $(file -L "$dir/tests/test_tree")"
  exit 1
fi

# Under qemu-user (7.2) these cannot run, for the emulator's sake, not
# libctx's: fork() in a multi-threaded process aborts qemu itself
# ("qemu_plugin_vcpu_init_hook: assertion failed"), qemu's own threads
# show in /proc/self/task (the thread-count checks), and signals sent to
# the process while threads wait in futex hang the emulated wait, and
# getsockopt(TCP_INFO) returns garbage there (test_io's connect-deadline
# case waits for the accept queue to fill through it).
QEMU_SKIP='^(test_fork|test_review|test_executor|test_sigctx|rel_threadfail|test_io)$'
args=(-L "unit|reliability" --output-on-failure -j"$jobs")
if [ ${#emu[@]} -gt 0 ]; then
  echo "m32: SKIPPING under qemu-i386 (native 32-bit would run them): $QEMU_SKIP"
  args+=(-E "$QEMU_SKIP")
fi
cd "$dir" || exit 1
ctest "${args[@]}"
