#!/bin/bash
# journal.sh: --resume and --resume-failed on fpp's task journal (FILE.fppj beside --joblog
# FILE). Every job appends a line to a marker file of its own, so the checks count how often
# each job ran; no timing is asserted.
#  - killed (SIGKILL) midway, --resume runs only the jobs the journal lacks: every job ran,
#    none the journal had ran again, the joblog (appended) has every job once; with -k, jobs
#    journaled but never written out run again (no output lost);
#  - --resume-failed runs exactly the failed jobs again, and then nothing;
#  - -k, and -k with --halt, resume in order past the skipped jobs;
#  - a changed command with the same joblog is refused, naming the option, running nothing;
#  - a joblog with no journal (GNU parallel's) still resumes from its lines;
#  - a run without --resume starts a new journal; one Ctrl-C leaves what finished journaled.
. "$(dirname "$0")/lib.sh"
JOBLOG_TOOL=$(dirname "$FPP_RUN")/fpp-joblog
marker=fpp-run-journal-$$
no_job_left() { ! pgrep -f "$marker" >/dev/null; }
log_has() { [ -f "$1" ] && [ "$(wc -l <"$1")" -ge "$2" ]; }
# The journal trails the joblog by up to a flush period (more on a loaded machine): wait for it.
journal_has() { [ -f "$1" ] && [ "$("$JOBLOG_TOOL" "$1" 2>/dev/null | tail -n +2 | grep -c .)" -ge "$2" ]; }
seqs() { tail -n +2 "$1" | cut -f1 | sort -n | tr '\n' ' '; }
runs() { [ -f "$M/$1" ] && wc -l <"$M/$1" || echo 0; } # how often job $1 ran
M=$T/m

# 1. SIGKILL midway, then --resume.
N=30
mkdir -p "$M"
cmd="sleep 0.1; echo >>$M/{}; : $marker"
"$FPP_RUN" -j2 --joblog "$T/k.log" "$cmd" ::: $(seq $N) >/dev/null 2>&1 &
pid=$!
wait_for log_has "$T/k.log" 7
wait_for journal_has "$T/k.log.fppj" 6
kill -KILL $pid
wait $pid 2>/dev/null
if wait_for no_job_left; then ok "killed: no job left running"; else bad "killed: no job left running"; pkill -f "$marker"; fi
if [ -f "$T/k.log.fppj" ]; then ok "killed: the journal is beside the joblog"; else bad "killed: no $T/k.log.fppj"; fi
journaled=$("$JOBLOG_TOOL" "$T/k.log.fppj" 2>/dev/null | tail -n +2 | cut -f1 | sort -n)
nj=$(echo "$journaled" | grep -c .)
if [ "$nj" -ge 6 ] && [ "$nj" -lt $N ]; then ok "killed: $nj jobs journaled"; else bad "killed: $nj jobs journaled"; fi
"$FPP_RUN" -j2 --resume --joblog "$T/k.log" "$cmd" ::: $(seq $N) >/dev/null 2>"$T/err"
eq "--resume after a kill: exit status" "$?" 0
again=0; never=0
for i in $journaled; do [ "$(runs "$i")" -eq 1 ] || again=$((again + 1)); done
for i in $(seq $N); do [ "$(runs "$i")" -ge 1 ] || never=$((never + 1)); done
eq "--resume after a kill: no journaled job ran again" "$again" 0
eq "--resume after a kill: every job ran" "$never" 0
eq "--resume after a kill: every job in the joblog once" "$(seqs "$T/k.log")" "$(seq $N | tr '\n' ' ')"
eq "--resume after a kill: the joblog is whole lines of 9 fields" "$(awk -F'\t' 'NF != 9' "$T/k.log" | wc -l)" 0
rm -f "$M"/*
"$FPP_RUN" -j2 --resume --joblog "$T/k.log" "$cmd" ::: $(seq $N) >/dev/null 2>&1
eq "--resume of a finished run: exit status" "$?" 0
eq "--resume of a finished run: runs nothing" "$(ls "$M" | wc -l)" 0

# 1b. -k, killed while job 3 holds the others back: jobs after it are journaled but never
# written out. --resume runs them again (their output is not lost), nothing else twice.
rm -f "$M"/*
kcmd="[ {} -ne 3 ] || while [ ! -e $T/go ]; do sleep 0.02; done; echo {}; echo >>$M/{}; : $marker"
journal_has() { [ -f "$1" ] && [ "$("$JOBLOG_TOOL" "$1" 2>/dev/null | tail -n +2 | wc -l)" -ge "$2" ]; }
"$FPP_RUN" -k -j2 --joblog "$T/h.log" "$kcmd" ::: $(seq 12) >"$T/h1.out" 2>/dev/null &
pid=$!
wait_for journal_has "$T/h.log.fppj" 8
kill -KILL $pid
wait $pid 2>/dev/null
touch "$T/go"
wait_for no_job_left
logged=$(seqs "$T/h.log")
"$FPP_RUN" -k -j2 --resume --joblog "$T/h.log" "$kcmd" ::: $(seq 12) >"$T/h2.out" 2>"$T/err"
eq "-k, killed, --resume: exit status" "$?" 0
eq "-k, killed, --resume: every job's output written" "$(cat "$T/h1.out" "$T/h2.out" | sort -n | uniq | tr '\n' ' ')" "$(seq 12 | tr '\n' ' ')"
eq "-k, killed, --resume: every job in the joblog once" "$(seqs "$T/h.log")" "$(seq 12 | tr '\n' ' ')"
again=0
for i in $logged; do [ "$(runs "$i")" -eq 1 ] || again=$((again + 1)); done
eq "-k, killed, --resume: no job of the joblog ran again" "$again" 0
rm -f "$T/go" "$M"/*

# 2. --resume-failed: jobs 4, 8, 12 fail until $T/fixed exists.
rm -f "$M"/*
fcmd="echo >>$M/{}; [ -e $T/fixed ] || [ \$(( {} % 4 )) -ne 0 ]"
"$FPP_RUN" -j2 --joblog "$T/f.log" "$fcmd" ::: $(seq 12) >/dev/null 2>&1
eq "first run: 3 failed" "$?" 3
touch "$T/fixed"
"$FPP_RUN" -j2 --resume-failed --joblog "$T/f.log" "$fcmd" ::: $(seq 12) >/dev/null 2>&1
eq "--resume-failed: exit status" "$?" 0
counts=$(for i in $(seq 12); do printf '%s ' "$(runs "$i")"; done)
eq "--resume-failed: the failed jobs ran again, no other" "$counts" "1 1 1 2 1 1 1 2 1 1 1 2 "
eq "--resume-failed: the joblog appended" "$(tail -n +14 "$T/f.log" | cut -f1,7 | sort -n | tr '\t\n' ': ')" "4:0 8:0 12:0 "
eq "--resume-failed: 1 + 12 + 3 lines" "$(wc -l <"$T/f.log")" 16
"$FPP_RUN" -j2 --resume-failed --joblog "$T/f.log" "$fcmd" ::: $(seq 12) >/dev/null 2>&1
counts2=$(for i in $(seq 12); do printf '%s ' "$(runs "$i")"; done)
eq "--resume-failed again: runs nothing" "$counts2" "$counts"
rm -f "$T/fixed" "$M"/*
# A job killed by a signal is a failure too; --resume skips it, --resume-failed runs it.
scmd="echo >>$M/{}; [ {} -ne 2 ] || [ -e $T/fixed ] || kill -SEGV \$\$"
"$FPP_RUN" --joblog "$T/s.log" "$scmd" ::: 1 2 3 >/dev/null 2>&1
eq "a job killed by SIGSEGV: in the joblog" "$(awk -F'\t' '$1 == 2 {print $8}' "$T/s.log")" 11
touch "$T/fixed"
"$FPP_RUN" --resume --joblog "$T/s.log" "$scmd" ::: 1 2 3 >/dev/null 2>&1
eq "--resume: a killed job is not run again" "$(runs 2)" 1
"$FPP_RUN" --resume-failed --joblog "$T/s.log" "$scmd" ::: 1 2 3 >/dev/null 2>&1
eq "--resume-failed: a killed job runs again" "$(runs 1) $(runs 2) $(runs 3)" "1 2 1"
rm -f "$T/fixed" "$M"/*

# 3. -k resumes in order past the skipped jobs (also -k with --halt, which orders itself);
# inputs added at the end are run.
"$FPP_RUN" -k --joblog "$T/o.log" echo ::: 1 2 3 4 5 6 >/dev/null 2>&1
"$FPP_RUN" -k --resume --joblog "$T/o.log" echo ::: 1 2 3 4 5 6 7 8 9 >"$T/o.out" 2>&1
eq "-k --resume: the new jobs, in order" "$(tr '\n' ' ' <"$T/o.out")" "7 8 9 "
"$FPP_RUN" -k --halt now,fail=1 --resume --joblog "$T/o.log" echo ::: $(seq 12) >"$T/o.out" 2>&1
eq "-k --halt --resume: the new jobs, in order" "$(tr '\n' ' ' <"$T/o.out")" "10 11 12 "

# 4. Another command with the same joblog: refused, nothing run, the joblog unchanged.
cp "$T/f.log" "$T/f.before"
"$FPP_RUN" -j2 --resume-failed --joblog "$T/f.log" "echo >>$M/{}" ::: $(seq 12) >/dev/null 2>"$T/err"
rc=$?
if [ $rc -eq 255 ] && grep -q -- '--resume-failed: the journal .* is another run' "$T/err"; then
    ok "another command: refused, naming the option"
else
    bad "another command: refused (rc $rc)"; cat "$T/err"
fi
eq "another command: nothing ran" "$(ls "$M" | wc -l)" 0
same "another command: the joblog unchanged" "$T/f.before" "$T/f.log"
"$FPP_RUN" --resume --dry-run --joblog "$T/f.log" "echo {}" ::: 1 >/dev/null 2>"$T/err"
rc=$?
if [ $rc -eq 255 ] && grep -q -- '--resume: the journal' "$T/err"; then ok "another command: --dry-run refused too"; else bad "another command: --dry-run refused (rc $rc)"; fi
"$FPP_RUN" --resume --dry-run --joblog "$T/o.log" echo ::: $(seq 14) >"$T/d.out" 2>&1
eq "--resume --dry-run: the jobs the journal lacks" "$(tr '\n' ' ' <"$T/d.out")" "echo 13 echo 14 "

# 5. A joblog with no journal (written by GNU parallel): resumed from its lines, as before.
if command -v parallel >/dev/null 2>&1; then
    $PAR --joblog "$T/p.log" "echo >>$M/{}" ::: 1 2 3 >/dev/null 2>&1
else
    printf 'Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n' >"$T/p.log"
    for i in 1 2 3; do printf '%s\t:\t1.000\t     0.001\t0\t0\t0\t0\techo\n' $i >>"$T/p.log"; echo >>"$M/$i"; done
fi
"$FPP_RUN" --resume --joblog "$T/p.log" "echo >>$M/{}" ::: 1 2 3 4 5 >/dev/null 2>&1
eq "GNU parallel's joblog: --resume runs the jobs it lacks" "$(runs 1) $(runs 2) $(runs 3) $(runs 4) $(runs 5)" "1 1 1 1 1"
eq "GNU parallel's joblog: every job once" "$(seqs "$T/p.log")" "1 2 3 4 5 "
if [ ! -e "$T/p.log.fppj" ]; then ok "GNU parallel's joblog: no journal made"; else bad "GNU parallel's joblog: a journal was made"; fi
rm -f "$M"/*

# 6. Without --resume, the journal starts again: every job runs.
"$FPP_RUN" --joblog "$T/o.log" "echo >>$M/{}" ::: 1 2 3 >/dev/null 2>&1
"$FPP_RUN" --resume --joblog "$T/o.log" "echo >>$M/{}" ::: 1 2 3 >/dev/null 2>&1
eq "a new run: runs every job, --resume then none" "$(runs 1) $(runs 2) $(runs 3)" "1 1 1"
rm "$T/o.log"
"$FPP_RUN" --resume --joblog "$T/o.log" "echo >>$M/{}" ::: 1 2 3 4 >/dev/null 2>&1
eq "the joblog removed, the journal kept: --resume runs the new job only" "$(runs 1) $(runs 2) $(runs 3) $(runs 4)" "1 1 1 1"
rm -f "$M"/*

# 7. Function mode: the journal knows failures and crashes of the function itself.
if [ -n "$TESTJOB" ]; then
    printf 'a\nfail\nsegv\nb\n' >"$T/in.txt"
    "$FPP_RUN" -k --joblog "$T/fn.log" --lib "$TESTJOB" --fn act <"$T/in.txt" >"$T/fn.out" 2>/dev/null
    eq "function mode: 2 failed" "$?" 2
    "$FPP_RUN" -k --resume --joblog "$T/fn.log" --lib "$TESTJOB" --fn act <"$T/in.txt" >"$T/fn.out" 2>/dev/null
    eq "function mode, --resume: runs nothing" "$?:$(wc -c <"$T/fn.out"):$(seqs "$T/fn.log")" "0:0:1 2 3 4 "
    "$FPP_RUN" -k --resume-failed --joblog "$T/fn.log" --lib "$TESTJOB" --fn act <"$T/in.txt" >/dev/null 2>&1
    eq "function mode, --resume-failed: the two failed jobs again" "$?:$(tail -n +6 "$T/fn.log" | cut -f1,8 | tr '\t\n' ': ')" "2:2:0 3:11 "
fi

# 8. One Ctrl-C: what finished is journaled; --resume runs the rest, nothing journaled twice.
"$FPP_RUN" -j2 --joblog "$T/c.log" "$cmd" ::: $(seq $N) >/dev/null 2>&1 &
pid=$!
wait_for log_has "$T/c.log" 5
kill -INT $pid
wait $pid
eq "Ctrl-C: ends by SIGINT" "$?" 130
wait_for no_job_left
journaled=$("$JOBLOG_TOOL" "$T/c.log.fppj" 2>/dev/null | tail -n +2 | cut -f1 | sort -n)
# (The journal may have more: jobs finished but not yet written out when the signal came.)
eq "Ctrl-C: the journal has every job of the joblog" "$(seqs "$T/c.log" | tr ' ' '\n' | grep . | comm -23 - <(echo "$journaled" | sort) | wc -l)" 0
"$FPP_RUN" -j2 --resume --joblog "$T/c.log" "$cmd" ::: $(seq $N) >/dev/null 2>&1
again=0; never=0
for i in $journaled; do [ "$(runs "$i")" -eq 1 ] || again=$((again + 1)); done
for i in $(seq $N); do [ "$(runs "$i")" -ge 1 ] || never=$((never + 1)); done
eq "Ctrl-C, --resume: no journaled job ran again, every job ran" "$again $never" "0 0"
eq "Ctrl-C, --resume: every job in the joblog once" "$(seqs "$T/c.log")" "$(seq $N | tr '\n' ' ')"
wait_for no_job_left
finish
