#!/bin/bash
# results.sh: --results DIR writes GNU parallel's tree (DIR/1/<value>/2/<value>/ with seq,
# stdout and stderr; "/" in a value as "\_") and nothing on stdout: same files, same contents.
. "$(dirname "$0")/lib.sh"
need_parallel
cd "$T" || exit 1
$PAR --results p "$JOB" ::: ok1 'a/b' 'c d' 'x\y' fail1 >p.out 2>p.err
prc=$?
"$FPP_RUN" --results f "$JOB" ::: ok1 'a/b' 'c d' 'x\y' fail1 >f.out 2>f.err
frc=$?
eq "one source: exit status" "$frc" "$prc"
if diff -r p f >diff.txt; then ok "one source: the same tree and files"; else bad "one source: the same tree and files"; head -20 diff.txt; fi
eq "one source: nothing on stdout" "$(wc -c <f.out)" 0
rm -rf p f
$PAR --results p "$JOB" ::: ok1 both2 ::: x 'y z' >/dev/null 2>&1
"$FPP_RUN" --results f "$JOB" ::: ok1 both2 ::: x 'y z' >/dev/null 2>&1
if diff -r p f >diff.txt; then ok "two sources: the same tree and files"; else bad "two sources: the same tree and files"; head -20 diff.txt; fi
eq "two sources: 4 jobs" "$(find f -name seq | wc -l)" 4
finish
