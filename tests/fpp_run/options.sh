#!/bin/bash
# options.sh: the command line. What fpp-run does not support is refused (status 255) with a
# message naming the option, never ignored; bad values too. --help and --version. --dry-run
# prints what GNU parallel prints (its quoting, replacement strings). -j's forms and {%}: job
# slots are 1..N and never shared by two running jobs, for both runners.
. "$(dirname "$0")/lib.sh"
need_parallel

refused() { # refused NAME-IN-MESSAGE ARGS...
    local name=$1
    shift
    "$FPP_RUN" "$@" </dev/null >"$T/out" 2>"$T/err"
    local rc=$?
    if [ $rc -eq 255 ] && grep -qF -- "$name" "$T/err" && [ ! -s "$T/out" ]; then
        ok "refused, naming $name: $*"
    else
        bad "refused, naming $name: $* (rc $rc: $(head -c 200 "$T/err"))"
    fi
}
refused --pipe --pipe echo
refused -X -X echo
refused -m -m echo
refused -q -q echo
refused -u -u echo
refused --colsep --colsep , echo
refused --tagstring --tagstring x echo
refused --line-buffer --line-buffer echo
refused -S -S host echo
refused --progress --progress echo
refused -N -N 2 echo
refused --bogus-option --bogus-option echo
refused -I -I X echo
refused --xargs --xargs echo
refused :::+ echo ::: a :::+ b
refused '-j 0' -j 0 echo
refused -j -j lots echo
refused --timeout --timeout 10% echo
refused --timeout --timeout soon echo
refused --results --results out.csv echo
refused --results --results 'x{}' echo
refused --retries --retries -1 echo
refused -d -d '::' echo
refused --max-rss --max-rss 100M echo
refused --resume --resume echo
refused --joblog --joblog
refused no-such-file -a "$T/no-such-file" echo
refused 'stdin' -a - :::: - echo

"$FPP_RUN" --help >"$T/out" 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q '^Usage: fpp-run' "$T/out" && grep -q -- '--joblog' "$T/out" && grep -q -- '--lib' "$T/out"; then
    ok "--help"
else
    bad "--help (rc $rc)"
fi
"$FPP_RUN" --version >"$T/out" 2>&1
eq "--version" "$?:$(head -c 8 "$T/out")" "0:fpp-run "

dry() { # dry NAME ARGS...: the same --dry-run output
    local name=$1
    shift
    $PAR --dry-run "$@" </dev/null >"$T/p.out" 2>&1
    "$FPP_RUN" --dry-run "$@" </dev/null >"$T/f.out" 2>&1
    same "--dry-run $name" "$T/p.out" "$T/f.out"
}
dry "replacement strings" -k echo {} {.} {/} {//} {/.} {#} ::: a/b.c 'sp ace/x.y' "it's" '' /
# ({%} is left out: what GNU parallel's --dry-run prints for it depends on its timing.)
dry "-j3, {#}" -k -j3 echo {#} ::: a b c d e f g
dry "values appended" -k echo -n pre ::: 'a b' c ::: 1 2
dry "a shell line" -k 'cat {} | wc -l > {.}.count' ::: f1.txt 'f 2.txt'
dry "the inputs are the commands" -k ::: 'echo a; echo b' 'ls -l | head'
dry "--" -k -- echo ::: x

"$FPP_RUN" echo </dev/null >"$T/out" 2>&1
eq "no input: no job, status 0" "$?:$(wc -c <"$T/out")" "0:0"
"$FPP_RUN" echo ::: >"$T/out" 2>&1
eq "an empty ::: : no job, status 0" "$?:$(wc -c <"$T/out")" "0:0"
# {%}: each job takes its slot's directory (mkdir fails if another running job holds it).
slots() { # RUNNER... : "ok" if no two running jobs shared a slot and every slot is in 1..N
    local n=$1
    shift
    rm -rf "$T/slots"
    mkdir -p "$T/slots"
    "$@" -j "$n" 'mkdir '"$T"'/slots/{%} || echo CLASH; [ "$PARALLEL_JOBSLOT" = {%} ] || echo ENV; echo {%} >> '"$T"'/slots/all; sleep 0.2; rmdir '"$T"'/slots/{%}' \
        ::: $(seq 12) >"$T/slot.out" 2>&1
    echo "$(cat "$T/slot.out")|$(sort -u "$T/slots/all" | tr '\n' ' ')"
}
eq "GNU parallel -j3: {%} and \$PARALLEL_JOBSLOT" "$(slots 3 $PAR)" "|1 2 3 "
eq "fpp-run -j3: {%} and \$PARALLEL_JOBSLOT" "$(slots 3 "$FPP_RUN")" "|1 2 3 "
nproc=$(nproc)
eq "fpp-run -j +1: slots 1..CPUs+1" "$(slots +1 "$FPP_RUN")" "|$(seq $((nproc + 1)) | tr '\n' ' ')"
finish
