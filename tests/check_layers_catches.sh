#!/bin/sh
# The layer check (.ci/check-layers) must fail on each kind of fault, naming the file: an
# include that goes up (pool -> tm), one of another layer's private header (exec ->
# pool/layout.h), and an internal header named without its layer. Run on copies of lib/.
set -eu
top=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
check() {  # check NAME FILE LINE EXPECT
  rm -rf "$tmp/lib" "$tmp/include"
  cp -r "$top/lib" "$top/include" "$tmp/"
  echo "$3" >> "$tmp/lib/$2"
  if out=$(sh "$top/.ci/check-layers" "$tmp/lib" 2>&1); then
    echo "FAIL $1: the check passed with $3 in lib/$2"; exit 1
  fi
  case $out in
    *"lib/$2"*"$4"*) echo "ok $1: $(printf '%s\n' "$out" | head -1)" ;;
    *) echo "FAIL $1: the check failed without naming lib/$2 ($4):"; printf '%s\n' "$out"; exit 1 ;;
  esac
}
sh "$top/.ci/check-layers" "$top/lib" >/dev/null || { echo "FAIL: the tree itself does not pass"; exit 1; }
check upward pool/steal.c '#include "tm/tm.h"' "may include only core"
check private exec/breaker.c '#include "pool/layout.h"' "private to pool"
check unnamed pool/audit.c '#include "pool_int.h"' "name an internal header with its layer"
check upward_from_core core/alloc.c '#include "exec/exec.h"' "may include only -"
