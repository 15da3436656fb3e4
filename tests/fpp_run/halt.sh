#!/bin/bash
# halt.sh: --halt, every form, GNU parallel and fpp-run side by side: the exit status, the
# output (-k) and the joblog (which jobs ran, how they ended) must be equal. With -j1 the runs
# are deterministic; with -j2, "now" must kill a running job (nothing of it is left) and
# "soon" must let it finish while starting no other.
. "$(dirname "$0")/lib.sh"
need_parallel

cmp_run() {
    local name=$1
    shift
    $PAR --joblog "$T/p.log" "$@" >"$T/p.out" 2>/dev/null
    local prc=$?
    "$FPP_RUN" --joblog "$T/f.log" "$@" >"$T/f.out" 2>"$T/f.err"
    local frc=$?
    eq "$name: exit status" "$frc" "$prc"
    same "$name: output" "$T/p.out" "$T/f.out"
    cols "$T/p.log" >"$T/p.cols"
    cols "$T/f.log" >"$T/f.cols"
    same "$name: joblog (all but times)" "$T/p.cols" "$T/f.cols"
}

mix=(exit=0 exit=3 exit=0 exit=5 segv1 exit=0 exit=7 exit=0 exit=0 exit=0)
for h in never now,fail=1 soon,fail=1 now,fail=2 soon,fail=2 now,fail=30% soon,fail=30% now,success=1 \
    soon,success=2 now,success=50% now,done=2 soon,done=3 now,done=10% 1 2 -1 -2 0 20% now,success=20; do
    cmp_run "--halt $h" -j1 -k --halt "$h" "$JOB" ::: "${mix[@]}"
done
cmp_run "--halt now,fail=1 on a segfault (128 + 11)" -j1 -k --halt now,fail=1 "$JOB" ::: exit=0 segv1 exit=0
cmp_run "--halt soon,fail=1 on a timeout (-1)" -j1 -k --timeout 1 --halt soon,fail=1 "$JOB" ::: exit=0 hang1 exit=0
cmp_run "--halt now,fail=1 -j2: the running job is killed" -j2 -k --halt now,fail=1 \
    'if [ {} = slow ]; then exec sleep 41.3; else exit 2; fi' ::: slow fail more
if pgrep -f 'sleep 41.3' >/dev/null; then
    bad "--halt now: the running job's process is gone"
    pkill -f 'sleep 41.3'
else
    ok "--halt now: the running job's process is gone"
fi
cmp_run "--halt soon,fail=1 -j2: the running job finishes, no other starts" -j2 -k --halt soon,fail=1 \
    'if [ {} = slow ]; then sleep 1; echo slow done; else exit 2; fi' ::: slow fail x y z
grep -q 'slow done' "$T/f.out" && ok "--halt soon: the running job finished" || bad "--halt soon: the running job finished"

# Bad values are refused, by name.
for h in sometimes now,maybe=1 now,fail now,fail=x soon,fail=1.5; do
    "$FPP_RUN" --halt "$h" true ::: a >/dev/null 2>"$T/err"
    rc=$?
    if [ $rc -eq 255 ] && grep -q -- '--halt' "$T/err"; then ok "--halt $h refused"; else bad "--halt $h refused (rc $rc)"; fi
done
finish
