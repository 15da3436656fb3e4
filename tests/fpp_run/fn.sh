#!/bin/bash
# fn.sh: function mode (--lib, --fn). A function that segfaults, calls exit(), hangs (with
# --timeout) or fails on one input fails that input only, with its line on stderr and its joblog
# line (GNU parallel's conventions: a signal is Exitval 0 Signal N, a timeout -1 and 15); leaks
# are bounded by --max-rss; retries; order with -k over many lines; inputs and results over the
# limits fail clearly; bad --lib and --fn are refused.
. "$(dirname "$0")/lib.sh"
[ -n "$TESTJOB" ] || { echo "FPP_RUN_TESTJOB is not set"; exit 1; }
run_fn() { "$FPP_RUN" --lib "$TESTJOB" "$@"; }

printf 'a\nsegv x\nb\nexit 1\nfail q\nc\nhang\nleak 10\n' >"$T/mix"
run_fn --fn act -k --timeout 1 --joblog "$T/f.log" <"$T/mix" >"$T/out" 2>"$T/err"
eq "a mix: exit status (the number of failed inputs)" "$?" 4
eq "a mix: the other inputs' results, in order" "$(tr '\n' ' ' <"$T/out")" "a b c leak 10 "
eq "a mix: joblog Seq, Exitval, Signal" "$(tail -n +2 "$T/f.log" | cut -f1,7,8 | tr '\t\n' ', ')" \
    "1,0,0 2,0,11 3,0,0 4,3,0 5,1,0 6,0,0 7,-1,15 8,0,0 "
grep -q '^fpp-run: job 2 "segv x": killed by SIGSEGV (signal 11); 1 attempt' "$T/err" && ok "a mix: the segfault's line" || bad "a mix: the segfault's line"
grep -q '^fpp-run: job 4 "exit 1": exit status 3; 1 attempt' "$T/err" && ok "a mix: the exit()'s line" || bad "a mix: the exit()'s line"
grep -q '^fpp-run: job 7 "hang": timed out after 1 s; 1 attempt' "$T/err" && ok "a mix: the timeout's line" || bad "a mix: the timeout's line"
grep -q '^fpp-run: job 5 "fail q": exit status 1; 1 attempt (this line says fail)' "$T/err" && ok "a mix: the failure's line" || bad "a mix: the failure's line"

run_fn --fn act --retries 3 ::: ok 'segv again' >"$T/out" 2>"$T/err"
eq "--retries 3: exit status" "$?" 1
grep -q '^fpp-run: job 2 "segv again": killed by SIGSEGV (signal 11); 3 attempts' "$T/err" && ok "--retries 3: 3 attempts" || bad "--retries 3: 3 attempts"

# Leaks: 20 inputs leak 40 MiB each (800 MiB in all); with --max-rss 100M workers are replaced
# and every input succeeds; one input that wants 400 MiB at once fails alone.
for i in $(seq 20); do echo "leak 40"; done >"$T/leaks"
echo "leak 400" >>"$T/leaks"
echo "after" >>"$T/leaks"
if [ -n "${FPP_RUN_SANITIZED:-}" ]; then
    # Under AddressSanitizer nothing can make malloc fail at the cap: the leaks only.
    sed -i '/leak 400/d' "$T/leaks"
    run_fn --fn act -k -j2 --max-rss 100M <"$T/leaks" >"$T/out" 2>"$T/err"
    eq "--max-rss: exit status (sanitizers: no input fails)" "$?" 0
    eq "--max-rss: every input succeeds" "$(grep -c . "$T/out")" 21
else
    run_fn --fn act -k -j2 --max-rss 100M <"$T/leaks" >"$T/out" 2>"$T/err"
    eq "--max-rss: exit status (only the 400 MiB input fails)" "$?" 1
    eq "--max-rss: the other inputs succeed" "$(grep -c . "$T/out")" 21
    grep -q '^fpp-run: job 21 "leak 400"' "$T/err" && ok "--max-rss: the failed input named" || bad "--max-rss: the failed input named"
fi

seq 300000 >"$T/many"
run_fn --fn echo -k -j2 <"$T/many" >"$T/out" 2>"$T/err"
eq "-k over 300,000 lines: exit status" "$?" 0
same "-k over 300,000 lines: the output is the input" "$T/many" "$T/out"
run_fn --fn echo -j2 <"$T/many" | sort -n >"$T/out"
same "300,000 lines in completion order: every line once" "$T/many" "$T/out"

{ echo small; head -c 2000000 /dev/zero | tr '\0' x; echo; echo after; } >"$T/long"
run_fn --fn echo -k <"$T/long" >"$T/out" 2>"$T/err"
eq "a 2 MB line: exit status" "$?" 1
eq "a 2 MB line: the others go on" "$(tr '\n' ' ' <"$T/out")" "small after "
grep -q 'job 2 .*exceeds max_arg_size' "$T/err" && ok "a 2 MB line: failed clearly" || bad "a 2 MB line: failed clearly"
run_fn --fn act ::: 'big 20' >/dev/null 2>"$T/err"
eq "a 20 MiB result: exit status" "$?" 1
grep -q 'job 1 "big 20".*exceeds max_result_size' "$T/err" && ok "a 20 MiB result: failed clearly" || bad "a 20 MiB result: failed clearly"

printf 'a b\0c\nd\0' | run_fn --fn echo -0 -k --tag >"$T/out"
# The tag is the value itself, newline included (GNU parallel's).
eq "-0 --tag" "$(od -An -c "$T/out" | tr -s ' ' | tr -d '\n')" " a b \t a b \n c \n d \t c \n c \n d \t d \n"

for bad_args in "--fn nosuch" "--fn" "--fn echo echo x" "--fn echo ::: a ::: b"; do
    run_fn $bad_args </dev/null >/dev/null 2>"$T/err"
    rc=$?
    if [ $rc -eq 255 ] && [ -s "$T/err" ]; then ok "refused: --lib ... $bad_args"; else bad "refused: --lib ... $bad_args (rc $rc)"; fi
done
grep -q 'registered: echo, noop, act' "$T/err" || run_fn --fn nosuch </dev/null 2>&1 | grep -q 'registered: echo, noop, act' && ok "an unknown --fn lists the registered ones" || bad "an unknown --fn lists the registered ones"
"$FPP_RUN" --lib "$T/nosuch.so" --fn x </dev/null >/dev/null 2>"$T/err"
eq "--lib of a missing file: exit status" "$?" 255
"$FPP_RUN" --max-rss 100M true </dev/null >/dev/null 2>"$T/err"
eq "--max-rss in exec mode: refused" "$?" 255
finish
