#!/bin/bash
# slow_input.sh: reading the input never holds back the output: with a producer that writes
# one line and then waits to see that line's job output before it writes the next, fpp-run
# must write each job's output while the input is still open (a runner that waited for more
# input first would stall until the producer gives up after 20 s).
. "$(dirname "$0")/lib.sh"
# (Not with --bar or --eta: they count the inputs first, so they read all of them first.)
for opts in "" "-k" "--joblog $T/log --tag"; do
    rm -f "$T/out" "$T/seen"
    {
        for w in one two three; do
            echo "$w"
            i=0
            until grep -q "\[$w\]" "$T/out" 2>/dev/null; do
                i=$((i + 1))
                [ $i -gt 400 ] && { echo "timeout $w" >>"$T/seen"; break; }
                sleep 0.05
            done
        done
    } | "$FPP_RUN" $opts "$JOB" >"$T/out"
    eq "a slow producer ($opts): every job's output came while the input was open" "$(cat "$T/seen" 2>/dev/null)" ""
    eq "a slow producer ($opts): output" "$(sort "$T/out" | sed 's/.*\t//' | tr '\n' ' ')" "[one] [three] [two] "
done
finish
