#!/bin/bash
# null.sh: inputs with spaces, quotes, tabs, newlines, backslashes, $, *, ~, non-ASCII bytes and
# empty ones, NUL-separated (-0) from stdin and from a file, and with -d: GNU parallel and
# fpp-run must write the same output, the same joblog (a newline in a command is written as a
# NUL there) and the same --dry-run command lines (GNU parallel's quoting).
. "$(dirname "$0")/lib.sh"
need_parallel

printf '%s\0' 'a b' "it's" 'q"d' $'new\nline' 'd$x' 'ü é' '' 'x*' '~h' $'tab\tt' 'back\slash' '-n' \
    "'" '"' $'two\n\nnewlines\n' ' lead' 'trail ' >"$T/in0"

# run NAME ARGS...: the same run by both, stdin from $T/in0.
run() {
    local name=$1
    shift
    $PAR "$@" <"$T/in0" >"$T/p.out" 2>"$T/p.err"
    local prc=$?
    "$FPP_RUN" "$@" <"$T/in0" >"$T/f.out" 2>"$T/f.err"
    local frc=$?
    eq "$name: exit status" "$frc" "$prc"
    same "$name: output" "$T/p.out" "$T/f.out"
}

run "-0, a direct command" -0 -k "$JOB" {}
run "-0, a shell command line" -0 -k 'printf "<%s>\n" {} {.} | cat'
run "-0, values appended" -0 -k "$JOB" pre
run "-0, --tag" -0 -k --tag "$JOB"
run "-0 --dry-run" -0 -k --dry-run "$JOB" {} {/} x{.}y
run "--null -a" --null -k -a "$T/in0" "$JOB" {}
run "-d ," -d , -k "$JOB" ::: 'a,b'

$PAR -0 -k --joblog "$T/p.log" "$JOB" {} <"$T/in0" >/dev/null
"$FPP_RUN" -0 -k --joblog "$T/f.log" "$JOB" {} <"$T/in0" >/dev/null
cols "$T/p.log" >"$T/p.cols"
cols "$T/f.log" >"$T/f.cols"
same "-0: joblog (all but times; newlines as NUL)" "$T/p.cols" "$T/f.cols"
if grep -q $'new\x00line' "$T/f.log" 2>/dev/null || tr '\0' '@' <"$T/f.log" | grep -q 'new@line'; then
    ok "-0: a newline in a command is a NUL in the joblog"
else
    bad "-0: a newline in a command is a NUL in the joblog"
fi
finish
