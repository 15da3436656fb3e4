#!/bin/bash
# spill.sh: jobs whose output is larger than what travels in a result (128 KiB) go through files
# in TMPDIR: the output must equal GNU parallel's (with -k and --tag too), and nothing may be
# left in TMPDIR afterwards.
. "$(dirname "$0")/lib.sh"
need_parallel
mkdir -p "$T/tmp"
big='head -c {}000 /dev/zero | tr "\0" o; echo; head -c {}00 /dev/zero | tr "\0" e >&2'
for opts in "-k" "-k --tag"; do
    $PAR $opts "$big" ::: 3000 10 2000 >"$T/p.out" 2>"$T/p.err"
    TMPDIR=$T/tmp "$FPP_RUN" $opts "$big" ::: 3000 10 2000 >"$T/f.out" 2>"$T/f.err"
    eq "$opts: exit status" "$?" 0
    same "$opts: 3 MB of stdout, in order" "$T/p.out" "$T/f.out"
    same "$opts: stderr" "$T/p.err" "$T/f.err"
    eq "$opts: nothing left in TMPDIR" "$(ls -A "$T/tmp" | wc -l)" 0
done
TMPDIR=$T/tmp "$FPP_RUN" --joblog "$T/f.log" "$big" ::: 3000 >/dev/null 2>&1
eq "the joblog's Receive counts spilled output" "$(tail -1 "$T/f.log" | cut -f6)" 3000001
finish
