#!/bin/sh
# Keeps docs/reference/ honest:
#  1. every exported symbol (exports.txt), and the macro and constants pages,
#     has docs/reference/<name>.md with the eight section headings in order;
#  2. every declaration in a page's SYNOPSIS appears verbatim (whitespace
#     aside) in the public headers, and every relative .md link resolves;
#  3. every ```c block under "## EXAMPLE" that defines main() is compiled
#     with -Wall -Werror, linked against the static library and run (10 s
#     limit, exit status 0 expected); a block without main() that includes a
#     header is compiled with -c; other fragments are skipped.
#
# usage: check_reference.sh <libctx.a> <include dir> <C compiler>
set -eu
lib=$1 inc=$2 cc=$3
here=$(cd "$(dirname "$0")" && pwd)
ref=$here/../../docs/reference
exports=$here/exports.txt
extra="CTX_KEY CTX_DEFER_CANCEL constants"
sections="NAME SYNOPSIS DESCRIPTION RETURN_VALUE THREADS EXAMPLE SEE_ALSO"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
err() {
  echo "FAIL: $*"
  fail=1
}

# The public headers as one line of single-spaced text, comments kept (a
# prototype never contains one).
cat "$inc/ctx.h" "$inc"/ctx/*.h |
  tr '\n\t' '  ' | tr -s ' ' > "$tmp/headers.txt"

# ---- 1. pages and headings --------------------------------------------------
pages=0
for sym in $(cat "$exports") $extra; do
  page=$ref/$sym.md
  if [ ! -f "$page" ]; then
    err "$sym: no page $page"
    continue
  fi
  pages=$((pages + 1))
  # Headings outside code fences, "RETURN VALUE" spelled with an underscore.
  got=$(awk '/^```/ {f = !f; next}
             !f && /^##? / {sub(/^## /, ""); sub(/^# .*/, "#"); gsub(/ /, "_"); print}' \
          "$page" | tr '\n' ' ')
  want="# $sections "
  [ "$got" = "$want" ] || err "$sym: headings are '$got', want '$want'"
  first=$(head -n 1 "$page")
  [ "$first" = "# $sym" ] || err "$sym: first line is '$first', want '# $sym'"
done

# ---- 2. SYNOPSIS declarations and links ---------------------------------------
for page in "$ref"/*.md; do
  name=$(basename "$page" .md)
  # Declarations of the SYNOPSIS code block: drop preprocessor lines and
  # comment lines, join, split at ';'.
  awk '/^## / {s = $0; next}
       s == "## SYNOPSIS" && /^```/ {f = !f; next}
       s == "## SYNOPSIS" && f' "$page" |
    grep -v -E '^[[:space:]]*(#|/\*|\*|//)' | tr '\n\t' '  ' | tr -s ' ' |
    sed -e 's|/\*[^*]*\*/||g' | tr ';' '\n' | sed -e 's/^ *//' -e 's/ *$//' |
    grep -v '^$' > "$tmp/decls" || true
  while IFS= read -r d; do
    grep -qF -- "$d;" "$tmp/headers.txt" ||
      err "$name: SYNOPSIS declaration not in the headers: $d;"
  done < "$tmp/decls"
  for link in $(grep -o '([A-Za-z0-9_]*\.md)' "$page" | tr -d '()' | sort -u); do
    [ -f "$ref/$link" ] || err "$name: broken link $link"
  done
done

# ---- 3. examples ------------------------------------------------------------
built=0 compiled=0 skipped=0
for page in "$ref"/*.md; do
  name=$(basename "$page" .md)
  # Writes each ```c block under ## EXAMPLE to $tmp/<name>.<n>.c
  awk -v out="$tmp/$name" '
    /^## / && !f {s = $0; next}
    s == "## EXAMPLE" && /^```c[[:space:]]*$/ && !f {f = 1; n++; next}
    f && /^```/ {f = 0; next}
    f {print > (out "." n ".c")}' "$page"
  for src in "$tmp/$name".*.c; do
    [ -f "$src" ] || continue
    obj=${src%.c}
    if grep -q 'int main' "$src"; then
      if ! "$cc" -DCTX_STATIC -I"$inc" -Wall -Werror -o "$obj" "$src" "$lib" \
           -pthread > "$obj.log" 2>&1; then
        err "$name: example $(basename "$src") does not build:"
        cat "$obj.log"
        continue
      fi
      st=0
      timeout 10 "$obj" > "$obj.out" 2>&1 || st=$?
      if [ "$st" -ne 0 ]; then
        err "$name: example $(basename "$src") exited with $st:"
        cat "$obj.out"
        continue
      fi
      built=$((built + 1))
    elif grep -q '^#include' "$src"; then
      if ! "$cc" -DCTX_STATIC -I"$inc" -Wall -Werror -c -o "$obj.o" "$src" \
           > "$obj.log" 2>&1; then
        err "$name: fragment $(basename "$src") does not compile:"
        cat "$obj.log"
        continue
      fi
      compiled=$((compiled + 1))
    else
      skipped=$((skipped + 1))
    fi
  done
done

echo "reference: $pages pages checked; examples: $built built and run," \
     "$compiled compiled only, $skipped fragments skipped"
[ "$fail" -eq 0 ] || { echo "check_reference: FAILED"; exit 1; }
echo "check_reference: OK"
