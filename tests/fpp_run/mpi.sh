#!/bin/bash
# mpi.sh: --mpi under mpirun (3 ranks: rank 0 reads the inputs, ranks 1 and 2 run the jobs):
# the same output, joblog columns and exit status as the same run without MPI, in exec mode
# and in function mode (a segfault and an exit() on a rank fail only their input); one rank
# alone is refused. Arguments: the mpirun command line (mpiexec -n 3 --oversubscribe).
. "$(dirname "$0")/lib.sh"
[ -n "$TESTJOB" ] || { echo "FPP_RUN_TESTJOB is not set"; exit 1; }
MPIRUN=("$@")
args=(-k -j1 --timeout 2 "$JOB" ::: ok1 fail1 segv1 'sp ace' both2 hang1 ok3)
"$FPP_RUN" --joblog "$T/l.log" "${args[@]}" >"$T/l.out" 2>"$T/l.err"
lrc=$?
"${MPIRUN[@]}" "$FPP_RUN" --mpi --joblog "$T/m.log" "${args[@]}" >"$T/m.out" 2>"$T/m.err"
mrc=$?
eq "exec mode: exit status" "$mrc" "$lrc"
same "exec mode: output" "$T/l.out" "$T/m.out"
cols "$T/l.log" >"$T/l.cols"; cols "$T/m.log" >"$T/m.cols"
same "exec mode: joblog (all but times)" "$T/l.cols" "$T/m.cols"

fargs=(-k --lib "$TESTJOB" --fn act ::: a 'segv x' b exit c)
"$FPP_RUN" "${fargs[@]}" >"$T/l.out" 2>"$T/l.err"
lrc=$?
"${MPIRUN[@]}" "$FPP_RUN" --mpi "${fargs[@]}" >"$T/m.out" 2>"$T/m.err"
mrc=$?
eq "function mode: exit status" "$mrc" "$lrc"
same "function mode: output" "$T/l.out" "$T/m.out"
grep -q '^fpp-run: job 2 "segv x": killed by SIGSEGV (signal 11); 1 attempt (rank ' "$T/m.err" && ok "function mode: the segfault's line names the rank" || bad "function mode: the segfault's line names the rank"

"${MPIRUN[@]/3/1}" "$FPP_RUN" --mpi echo ::: a >"$T/m.out" 2>"$T/m.err"
rc=$?
if [ $rc -ne 0 ] && grep -q -- '--mpi needs at least 2 ranks' "$T/m.err"; then ok "one rank: refused"; else bad "one rank: refused (rc $rc)"; fi
finish
