#!/bin/bash
# outlive.sh: nothing a job starts outlives fpp-run: a job that leaves a process in the
# background, one that leaves a daemon in a session of its own, and everything of a run killed
# with SIGKILL; a timed-out job's background child is killed with it at the timeout, while the
# run goes on. And a job that leaves a process holding its output does not stall the run.
. "$(dirname "$0")/lib.sh"
gone() { ! pgrep -xf "sleep 61[.]$1" >/dev/null; }
check_gone() { # NAME N
    if wait_for gone "$2"; then ok "$1"; else bad "$1"; pkill -f "sleep 61[.]$2"; fi
}

"$FPP_RUN" 'sleep 61.1 & echo started {}' ::: a >"$T/out" 2>&1
eq "a job that leaves a background process: the run ends" "$?:$(cat "$T/out")" "0:started a"
check_gone "... and the background process is gone" 1

"$FPP_RUN" 'setsid sleep 61.2 </dev/null >/dev/null 2>&1 & echo daemon {}' ::: b >"$T/out" 2>&1
eq "a job that leaves a daemon (setsid)" "$?:$(cat "$T/out")" "0:daemon b"
check_gone "... and the daemon is gone" 2

# -j1: "t" times out after 1 s; then "w", a job of the same run, looks (for up to 0.5 s)
# whether t's background child is gone.
"$FPP_RUN" -j1 -k --timeout 1 \
    'if [ {} = t ]; then sleep 61.3 & exec sleep 61.4; else for i in 1 2 3 4 5; do pgrep -xf "sleep 61[.]3" >/dev/null || { echo gone; exit 0; }; sleep 0.1; done; echo still there; fi' \
    ::: t w >"$T/out" 2>"$T/err"
eq "a timed-out job's background child is killed at the timeout" "$(cat "$T/out")" "gone"
check_gone "... and nothing of it is left" 3

"$FPP_RUN" -j2 'sleep 61.5 & sleep 61.6; echo {}' ::: a b c d >/dev/null 2>&1 &
pid=$!
running() { [ "$(pgrep -xfc 'sleep 61[.]6')" -ge 2 ]; }
if wait_for running; then
    kill -KILL $pid
    wait $pid 2>/dev/null
    check_gone "fpp-run killed by SIGKILL: its jobs' processes are gone" 5
    check_gone "... their background children too" 6
else
    bad "fpp-run killed by SIGKILL: the jobs did not start"
    kill -KILL $pid
fi
finish
