#!/bin/bash
# memory.sh: fpp-run's memory does not grow with the number of inputs (the lazy map, and the
# bounded window of -k): its peak resident memory over 15 or 20 times more inputs must stay within
# 3 MiB of the smaller run's, in function mode (200,000 vs 3,000,000 lines, with and without
# -k) and in exec mode (200 vs 4,000 jobs).
. "$(dirname "$0")/lib.sh"
[ -n "$TESTJOB" ] || { echo "FPP_RUN_TESTJOB is not set"; exit 1; }
# peak LINES ARGS...: fpp-run's VmHWM (KiB) over seq LINES.
peak() {
    local n=$1
    shift
    seq "$n" >"$T/in"
    "$FPP_RUN" "$@" <"$T/in" >/dev/null 2>&1 &
    local pid=$! hwm="" h
    while kill -0 $pid 2>/dev/null; do
        h=$(awk '/^VmHWM/ {print $2}' /proc/$pid/status 2>/dev/null)
        [ -n "$h" ] && hwm=$h
        sleep 0.02
    done
    wait $pid
    echo "${hwm:-0}"
}
check() { # NAME SMALL BIG ARGS...
    local name=$1 small=$2 big=$3
    shift 3
    local a b
    a=$(peak "$small" "$@")
    b=$(peak "$big" "$@")
    if [ "$a" -gt 0 ] && [ $((b - a)) -lt 3072 ]; then
        ok "$name: $a KiB over $small, $b KiB over $big"
    else
        bad "$name: $a KiB over $small, $b KiB over $big"
    fi
}
check "function mode" 200000 3000000 -j2 --lib "$TESTJOB" --fn echo
check "function mode, -k" 200000 3000000 -j2 -k --lib "$TESTJOB" --fn echo
check "exec mode, -k, joblog" 200 4000 -j2 -k --joblog /dev/null true
finish
