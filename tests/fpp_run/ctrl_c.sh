#!/bin/bash
# ctrl_c.sh: one SIGINT (as a terminal sends it, to fpp-run's process group) while jobs run:
# fpp-run ends by SIGINT, every running job's whole process group is gone (a job's background
# child too), the joblog holds exactly the jobs that finished (flushed), the spill directory is
# gone, and --resume then runs only the rest. The same for SIGTERM. The time it took is shown
# (fpp-run-bench.sh measures it); the test only bounds it loosely.
. "$(dirname "$0")/lib.sh"
mkdir -p "$T/tmp"
export TMPDIR=$T/tmp
cmd='if [ {} -le 5 ]; then echo quick {}; else sleep 51.3 & exec sleep 51.4; fi'
running() { [ "$(pgrep -fc 'sleep 51[.]4')" -ge 2 ]; }
gone() { ! pgrep -f 'sleep 51[.][34]' >/dev/null; }
log_has() { [ -f "$1" ] && [ "$(wc -l <"$1")" -ge "$2" ]; }

for sig in INT TERM; do
    rm -f "$T/log"
    setsid "$FPP_RUN" -k -j2 --joblog "$T/log" "$cmd" ::: $(seq 8) >"$T/out" 2>"$T/err" &
    pid=$!
    if ! wait_for running || ! wait_for log_has "$T/log" 6; then
        bad "SIG$sig: the jobs did not start"
        kill -KILL $pid
        pkill -f 'sleep 51[.][34]'
        continue
    fi
    t0=$(date +%s%N)
    kill -$sig -- -$pid
    wait $pid
    rc=$?
    t1=$(date +%s%N)
    echo "     (SIG$sig to exit: $(((t1 - t0) / 1000000)) ms)"
    want=$((128 + $(kill -l $sig)))
    eq "SIG$sig: fpp-run ends by the signal" "$rc" "$want"
    [ $(((t1 - t0) / 1000000)) -lt 10000 ] && ok "SIG$sig: ended (within 10 s)" || bad "SIG$sig: ended within 10 s"
    if wait_for gone; then ok "SIG$sig: every job's process group is gone"; else bad "SIG$sig: every job's process group is gone"; pkill -f 'sleep 51[.][34]'; fi
    eq "SIG$sig: the joblog holds the 5 finished jobs" "$(tail -n +2 "$T/log" | cut -f1,7 | tr '\t\n' ', ')" "1,0 2,0 3,0 4,0 5,0 "
    eq "SIG$sig: their output was written" "$(tr '\n' ' ' <"$T/out")" "quick 1 quick 2 quick 3 quick 4 quick 5 "
    eq "SIG$sig: nothing left in TMPDIR" "$(ls -A "$T/tmp" | wc -l)" 0
done
# Another command (GNU parallel's way): on the joblog alone, without fpp's journal, which would
# refuse it (journal.sh checks the journal after a Ctrl-C).
rm -f "$T/log.fppj"
"$FPP_RUN" -k -j2 --resume --joblog "$T/log" echo again ::: $(seq 8) >"$T/out" 2>&1
eq "--resume after SIGTERM: runs the unfinished jobs" "$(tr '\n' ' ' <"$T/out")" "again 6 again 7 again 8 "
finish
