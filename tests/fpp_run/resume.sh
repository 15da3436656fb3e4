#!/bin/bash
# resume.sh: --resume and --resume-failed, GNU parallel and fpp-run on each other's joblogs
# (fpp-run's own runs resume from its journal beside the joblog; journal.sh tests it alone).
#  - after a complete run with failures, --resume-failed runs again exactly the failed jobs, as
#    GNU parallel does (same output, same joblog but the times), also on GNU parallel's log;
#  - after fpp-run is killed (SIGKILL) in the middle, nothing of its jobs is left running, and
#    --resume runs exactly the jobs its joblog lacks: in the end every job is in the joblog
#    once; the same from a killed GNU parallel's joblog, and GNU parallel resumes from
#    fpp-run's;
#  - a joblog line cut by the kill does not count, and is cut off before appending.
. "$(dirname "$0")/lib.sh"
need_parallel

mix=(ok1 fail1 flaky1 segv1 ok2 flaky2 exit=9 ok3)
# First runs: one by each, complete.
mkdir -p "$T/fp" "$T/ff"
FLAKY_DIR="$T/fp" $PAR -k --joblog "$T/p.log" "$JOB" ::: "${mix[@]}" >/dev/null 2>&1
FLAKY_DIR="$T/ff" "$FPP_RUN" -k --joblog "$T/f.log" "$JOB" ::: "${mix[@]}" >/dev/null 2>&1
cols "$T/p.log" >"$T/p.cols"; cols "$T/f.log" >"$T/f.cols"
same "first run: joblog" "$T/p.cols" "$T/f.cols"
cp "$T/p.log" "$T/p2.log"; cp "$T/f.log" "$T/f2.log"; cp "$T/p.log" "$T/x.log"
# --resume-failed: the flaky ones succeed now, the others fail again.
FLAKY_DIR="$T/fp" $PAR -k --resume-failed --joblog "$T/p2.log" "$JOB" ::: "${mix[@]}" >"$T/p.out" 2>/dev/null
prc=$?
FLAKY_DIR="$T/ff" "$FPP_RUN" -k --resume-failed --joblog "$T/f2.log" "$JOB" ::: "${mix[@]}" >"$T/f.out" 2>/dev/null
frc=$?
eq "--resume-failed: exit status" "$frc" "$prc"
same "--resume-failed: output (the failed jobs only)" "$T/p.out" "$T/f.out"
cols "$T/p2.log" >"$T/p.cols"; cols "$T/f2.log" >"$T/f.cols"
same "--resume-failed: joblog, appended" "$T/p.cols" "$T/f.cols"
FLAKY_DIR="$T/ff" "$FPP_RUN" -k --resume-failed --joblog "$T/x.log" "$JOB" ::: "${mix[@]}" >"$T/x.out" 2>/dev/null
same "--resume-failed on GNU parallel's joblog" "$T/p.out" "$T/x.out"
"$FPP_RUN" -k --resume --joblog "$T/f2.log" "$JOB" ::: "${mix[@]}" >"$T/y.out" 2>/dev/null
rc=$?
eq "--resume of a finished run: exit status" "$rc" 0
eq "--resume of a finished run: runs nothing" "$(wc -c <"$T/y.out")" 0

# Killed in the middle. N jobs of 0.2 s, 2 at a time; killed once 6 are in the joblog.
N=40
marker=fpp-run-resume-$$
cmd="sleep 0.2; echo {} $marker"
seqs() { tail -n +2 "$1" | cut -f1 | sort -n; }
log_has() { [ -f "$1" ] && [ "$(wc -l <"$1")" -ge "$2" ]; }
no_job_left() { ! pgrep -f "$marker" >/dev/null; }
killed_run() { # RUNNER LOG: runs, kills it with SIGKILL after 6 finished jobs
    local log=$1
    shift
    "$@" -j2 --joblog "$log" "$cmd" ::: $(seq $N) >"$T/k.out" 2>/dev/null &
    local pid=$!
    wait_for log_has "$log" 7
    kill -KILL $pid
    wait $pid 2>/dev/null
}
killed_run "$T/fk.log" "$FPP_RUN"
n1=$(($(wc -l <"$T/fk.log") - 1))
if [ "$n1" -ge 6 ] && [ "$n1" -lt $N ]; then ok "killed fpp-run: $n1 jobs in the joblog"; else bad "killed fpp-run: $n1 jobs in the joblog"; fi
if wait_for no_job_left; then ok "killed fpp-run: no job left running"; else bad "killed fpp-run: no job left running"; pkill -f "$marker"; fi
cp "$T/fk.log" "$T/pk.log"
"$FPP_RUN" -j2 --resume --joblog "$T/fk.log" "$cmd" ::: $(seq $N) >"$T/r.out" 2>/dev/null
eq "--resume after a kill: exit status" "$?" 0
eq "--resume after a kill: every job in the joblog once" "$(seqs "$T/fk.log" | tr '\n' ' ')" "$(seq $N | tr '\n' ' ')"
ran_again=$(awk '{print $1}' "$T/r.out" | sort | comm -12 - <(seqs "$T/pk.log" | sort) | wc -l)
eq "--resume after a kill: no job of the joblog ran again" "$ran_again" 0
$PAR -j2 --resume --joblog "$T/pk.log" "$cmd" ::: $(seq $N) >/dev/null 2>&1
eq "GNU parallel --resume on fpp-run's joblog: every job once" "$(seqs "$T/pk.log" | tr '\n' ' ')" "$(seq $N | tr '\n' ' ')"

killed_run "$T/pk2.log" $PAR
wait_for no_job_left # GNU parallel's jobs outlive it: let them end
cp "$T/pk2.log" "$T/pk3.log"
"$FPP_RUN" -j2 --resume --joblog "$T/pk2.log" "$cmd" ::: $(seq $N) >"$T/r.out" 2>/dev/null
eq "fpp-run --resume on a killed GNU parallel's joblog: every job once" "$(seqs "$T/pk2.log" | tr '\n' ' ')" "$(seq $N | tr '\n' ' ')"
ran_again=$(awk '{print $1}' "$T/r.out" | sort | comm -12 - <(seqs "$T/pk3.log" | sort) | wc -l)
eq "fpp-run --resume on GNU parallel's joblog: no logged job ran again" "$ran_again" 0

# --resume-failed after a kill: every third job failed; the second pass (where all succeed)
# runs the failed ones and the ones never run, the same set as GNU parallel's second pass on a
# copy of the same log.
# The same command for both passes (fpp's journal refuses another): $T/pass2 makes all succeed.
fcmd="sleep 0.2; { [ -e $T/pass2 ] || [ \$(( {} % 3 )) -ne 0 ]; } && echo {} $marker"
"$FPP_RUN" -j2 --joblog "$T/rf.log" "$fcmd" ::: $(seq $N) >/dev/null 2>&1 &
pid=$!
wait_for log_has "$T/rf.log" 9
kill -KILL $pid
wait $pid 2>/dev/null
wait_for no_job_left
cp "$T/rf.log" "$T/rp.log"
n0=$(wc -l <"$T/rf.log")
touch "$T/pass2"
"$FPP_RUN" -j2 --resume-failed --joblog "$T/rf.log" "$fcmd" ::: $(seq $N) >/dev/null 2>&1
$PAR -j2 --resume-failed --joblog "$T/rp.log" "$fcmd" ::: $(seq $N) >/dev/null 2>&1
second() { tail -n +$((n0 + 1)) "$1" | cut -f1 | sort -n | tr '\n' ' '; }
want=$(comm -23 <(seq $N | sort) <(tail -n +2 "$T/rp.log" | head -n $((n0 - 1)) | awk -F'\t' '$7 == 0 && $8 == 0 {print $1}' | sort) | sort -n | tr '\n' ' ')
eq "--resume-failed after a kill: runs the failed and the unrun jobs" "$(second "$T/rf.log")" "$want"
eq "--resume-failed after a kill: the same jobs as GNU parallel" "$(second "$T/rf.log")" "$(second "$T/rp.log")"

# A line cut by a kill.
printf 'Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n1\t:\t1.000\t     0.001\t0\t2\t0\t0\techo 1\n2\t:\t1.0' >"$T/cut.log"
"$FPP_RUN" -k --resume --joblog "$T/cut.log" echo ::: 1 2 3 >"$T/c.out" 2>&1
eq "a cut line: its job runs again" "$(tr '\n' ' ' <"$T/c.out")" "2 3 "
eq "a cut line: cut off, the log is whole lines of 9 fields" "$(awk -F'\t' 'NF != 9' "$T/cut.log" | wc -l) $(seqs "$T/cut.log" | tr '\n' ' ')" "0 1 2 3 "
printf 'Seq\tHost\n1\tgarbage\n' >"$T/bad.log"
"$FPP_RUN" --resume --joblog "$T/bad.log" echo ::: 1 >/dev/null 2>"$T/err"
rc=$?
if [ $rc -eq 255 ] && grep -q 'line 2' "$T/err"; then ok "a malformed joblog is refused, naming the line"; else bad "a malformed joblog is refused (rc $rc)"; fi
"$FPP_RUN" --resume echo ::: 1 >/dev/null 2>"$T/err"
rc=$?
if [ $rc -eq 255 ] && grep -q -- '--joblog' "$T/err"; then ok "--resume without --joblog is refused"; else bad "--resume without --joblog is refused (rc $rc)"; fi
finish
