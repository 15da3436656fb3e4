#!/bin/bash
# compare.sh: GNU parallel and fpp-run on the same jobs and inputs; their stdout, the jobs'
# stderr (without each runner's own lines), the joblog's columns but the times, and the exit
# status must be equal. Jobs that succeed, fail, segfault, time out, print to both streams,
# are retried; inputs with spaces, quotes, $ and *; every replacement string; several input
# sources; shell command lines; inputs that are the commands; more than 100 failures.
. "$(dirname "$0")/lib.sh"
need_parallel

# both NAME ORDER ARGS...: runs both with --joblog; ORDER is "keep" (-k among ARGS: compare as
# is) or "any" (compare sorted).
both() {
    local name=$1 order=$2
    shift 2
    rm -rf "$T/fp" "$T/ff"
    mkdir -p "$T/fp" "$T/ff"
    (cd "$T" && FLAKY_DIR="$T/fp" $PAR --joblog "$T/p.log" "$@" <"${STDIN_FILE:-/dev/null}" >"$T/p.out" 2>"$T/p.err")
    local prc=$?
    (cd "$T" && FLAKY_DIR="$T/ff" "$FPP_RUN" --joblog "$T/f.log" "$@" <"${STDIN_FILE:-/dev/null}" >"$T/f.out" 2>"$T/f.err")
    local frc=$?
    eq "$name: exit status" "$frc" "$prc"
    job_lines "$T/p.err" >"$T/p.err2"
    job_lines "$T/f.err" >"$T/f.err2"
    if [ "$order" = keep ]; then
        same "$name: stdout" "$T/p.out" "$T/f.out"
        same "$name: stderr of the jobs" "$T/p.err2" "$T/f.err2"
        cols "$T/p.log" >"$T/p.cols"
        cols "$T/f.log" >"$T/f.cols"
    else
        sort "$T/p.out" >"$T/p.s"; sort "$T/f.out" >"$T/f.s"
        same "$name: stdout (sorted)" "$T/p.s" "$T/f.s"
        sort "$T/p.err2" >"$T/p.s"; sort "$T/f.err2" >"$T/f.s"
        same "$name: stderr of the jobs (sorted)" "$T/p.s" "$T/f.s"
        cols_sorted "$T/p.log" >"$T/p.cols"
        cols_sorted "$T/f.log" >"$T/f.cols"
    fi
    same "$name: joblog (all but times)" "$T/p.cols" "$T/f.cols"
}

both "a mix" keep -k --timeout 1 "$JOB" ::: ok1 fail1 segv1 hang1 both1 'sp ace' "it's" 'q"uote' 'a$b' 'x*' '' ok2
both "a mix, completion order" any --timeout 1 "$JOB" ::: ok1 fail1 segv1 'sp ace' "it's" 'q"uote' ok2 fail2
both "-j1" keep -j1 -k "$JOB" {%} {#} ::: ok1 fail1 x y
both "replacement strings" keep -k "$JOB" {} {.} {/} {//} {/.} {#} ::: a/b.c/d.e.f /x .bashrc 'sp ace/f.g' plain dir/ file. / ''
both "positional ones" keep -k "$JOB" {2} {1} {1.} {2/} x{3}y ::: a.b c/d ::: 1 2/3.4
both "values appended" keep -k "$JOB" pre ::: a 'b c' ::: 1 2
both "--tag, both streams" keep -k --tag "$JOB" ::: both1 both2 ok3
both "--tag, two sources" keep -k --tag "$JOB" ::: ok1 'ok 2' ::: x y
printf 'ok1\nfail2\n' >"$T/in1"
printf 'u\nv w\n' >"$T/in2"
both "-a twice" keep -k -a "$T/in1" -a "$T/in2" "$JOB"
both ":::: two files" keep -k "$JOB" {1}-{2} :::: "$T/in1" "$T/in2"
both "-a and :::" keep -k -a "$T/in1" "$JOB" ::: p q
both "a shell command line" keep -k 'echo {} | tr a-z A-Z; echo $((1+2)) >&2; test {} != abc' ::: abc 'd e' "f'g"
both "variables" keep -k 'echo $PARALLEL_SEQ {}' ::: a b c
both "the inputs are the commands" keep -k ::: 'echo a' 'exit 3' 'echo b >&2' 'kill -SEGV $$'
both "--retries" keep -k --retries 3 "$JOB" ::: flaky1 fail1 ok1 flaky2
both "a command not found" keep -k fpp_run_no_such_command ::: a b
seq 1 150 | sed 's/^/exit=/' >"$T/many"
both "150 failures" any -a "$T/many" "$JOB"
printf 'l1\nl2\n\nl4 with  spaces\nno newline at the end' >"$T/stdin"
STDIN_FILE=$T/stdin both "stdin" keep -k "$JOB" x
finish
