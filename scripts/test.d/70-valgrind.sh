#!/usr/bin/env bash
# make test, extra step: the unit suite (and the fuzz corpus replay and the
# event-loop adapters) under valgrind memcheck: no error, no leak (definite,
# indirect or possible), else the test fails. Tests run through
# CMAKE_CROSSCOMPILING_EMULATOR, so ctest keeps its timeouts; TU_SLOW widens
# the unit tests' timing tolerances.
set -uo pipefail
cd "$(dirname "$0")/../.."
dir=build-test-valgrind
jobs=$(nproc 2>/dev/null || echo 2)
supp=$PWD/share/libctx.supp # installed as share/libctx/libctx.supp
# tests/reliability/memcheck.sh runs each test under memcheck and records a
# memcheck error (exit 99) in $CTX_MEMCHECK_ERRORS, which fails the step
# whatever the test itself reported.
vg="$PWD/tests/reliability/memcheck.sh;$supp"
export CTX_MEMCHECK_ERRORS=$PWD/$dir/memcheck-errors.txt
# Unit tests to leave out (docs/RELIABILITY.md, "valgrind exclusions"):
# none by default. test_fork and test_review keep the contexts their forked
# children inherit reachable (a child _exit()s holding them: the fork rule),
# so memcheck does not count them as the child's leaks.
skip=${CTX_VALGRIND_SKIP-}
if ! cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCTX_DEBUG_CHECKS=ON \
      -DCTX_BUILD_EXAMPLES=OFF -DCTX_NODE_CACHE=OFF -DCMAKE_C_FLAGS=-DTU_SLOW=8 -DCTX_TIMEOUT_FACTOR=8 \
      "-DCMAKE_CROSSCOMPILING_EMULATOR=$vg" >"$dir.log" 2>&1 ||
   ! cmake --build "$dir" -j"$jobs" >>"$dir.log" 2>&1; then
  tail -n 40 "$dir.log"; exit 1
fi
exclude=""
for t in $skip; do exclude="$exclude|^$t\$"; echo "valgrind: skipping $t (see the note in $0)"; done
exclude=${exclude#|}
cd "$dir" || exit 1
# Serial, and no retry: a test that passes only on a second try is flaky,
# which is a defect to fix, not to hide (timing bounds carry TU_SLOW=8 here,
# and the tests wait for the events they need). The node cache is off
# (CTX_NODE_CACHE=OFF): reusing freed nodes at once would hide a use after
# free from memcheck. A memcheck error or leak fails the step
# (memcheck-errors.txt), whatever the test's own verdict.
args=(-L unit --output-on-failure)
[ -n "$exclude" ] && args+=(-E "$exclude")
rc=0
rm -f "$CTX_MEMCHECK_ERRORS"
ctest "${args[@]}" || rc=1
ctest -R '^rel_fuzz_replay$' --output-on-failure || rc=1
# The event-loop adapters against their real loops (libuv, libevent, GLib):
# 100,000 watches and a clean teardown, about 15 s in all. The other
# integrations' suites take minutes each under memcheck; they run under
# ASan (leak check on) in every make test.
ctest -R '^test_(uv|event|glib)$' --output-on-failure || rc=1
if [ -s "$CTX_MEMCHECK_ERRORS" ]; then
  cat "$CTX_MEMCHECK_ERRORS"
  echo "valgrind: memcheck found errors (see above)"
  rc=1
fi
exit $rc
