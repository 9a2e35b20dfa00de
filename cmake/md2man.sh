#!/bin/sh
# md2man.sh PANDOC PAGE.md OUT.3 NAME: one reference page as a man page in
# section 3. The page's "# name" title becomes the man header; links between
# pages become plain names (name(3)).
set -eu
pandoc=$1 in=$2 out=$3 name=$4
sed -e '1{/^# /d}' -e 's/\[\([A-Za-z_0-9]*\)\](\([A-Za-z_0-9]*\)\.md)/\1(3)/g' "$in" |
  "$pandoc" -s -f gfm -t man \
    -M title="$name" -M section=3 -M header="libctx" -M footer="libctx" \
    -o "$out"
