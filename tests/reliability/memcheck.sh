#!/usr/bin/env bash
# The CTest emulator of make test's valgrind step (scripts/test.d/70-valgrind.sh):
# runs a test program under memcheck. A memcheck error or leak (exit 99) is
# recorded in $CTX_MEMCHECK_ERRORS, so that the step fails on it whatever
# the test program itself reported.
#   memcheck.sh SUPPRESSIONS PROGRAM [ARGS...]
supp=$1
shift
valgrind -q --error-exitcode=99 --leak-check=full \
  --errors-for-leak-kinds=definite,indirect,possible \
  --show-leak-kinds=definite,indirect,possible --suppressions="$supp" "$@"
rc=$?
if [ "$rc" -eq 99 ] && [ -n "${CTX_MEMCHECK_ERRORS:-}" ]; then
  echo "memcheck: errors in $(basename "$1")" >>"$CTX_MEMCHECK_ERRORS"
fi
exit "$rc"
