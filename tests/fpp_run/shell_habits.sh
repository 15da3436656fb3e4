#!/bin/bash
# shell_habits.sh: what shell users do that fpp-run got wrong (a red-team pass against GNU
# parallel, each check failing before its fix): -j in the hundreds; a script without a #!
# line; a `while read` loop whose jobs read stdin; a joblog that is no regular file; Perl
# replacement strings; --timeout 0; output that cannot be written (a full disk, a reader gone
# with SIGPIPE ignored, a --results path that is a file).
. "$(dirname "$0")/lib.sh"
need_parallel
FPP_RUN=$(readlink -f "$FPP_RUN")
cd "$T" || exit 1

# -j 500: the workers' spawn requests fill the fork server's channel; before, that was taken
# for a dead server, replaced and flooded again: no job ever ran (fpp-run looped on "the fork
# server ... its channel failed").
seq 2000 | timeout 120 "$FPP_RUN" -j 500 'echo {}' >j500.out 2>j500.err
eq "-j 500: status" "$?" 0
eq "-j 500: every job once" "$(sort -n j500.out | uniq | wc -l) $(wc -l <j500.out)" "2000 2000"
eq "-j 500: no fork server message" "$(grep -c 'fork server' j500.err)" 0

# A script without #!: run by /bin/sh, as by GNU parallel, xargs and any shell (before:
# "Exec format error", status 126).
printf 'echo noshebang "$@"\n' >nosb.sh
chmod +x nosb.sh
"$FPP_RUN" -k ./nosb.sh ::: a b >nosb.out 2>nosb.err
$PAR -k ./nosb.sh ::: a b >nosb.par 2>/dev/null
same "a script without #! runs under /bin/sh" nosb.out nosb.par
mkdir -p bin && cp nosb.sh bin/nosb
PATH=$T/bin:$PATH "$FPP_RUN" -k nosb ::: c >nosbp.out 2>&1
eq "... found in \$PATH too" "$(cat nosbp.out)" "noshebang c"

# Jobs' stdin is /dev/null, as GNU parallel's: a job reading stdin does not eat the rest of a
# `while read` loop's input (before: the first job got fpp-run's stdin).
printf 'l1\nl2\nl3\n' >list
while read -r f; do "$FPP_RUN" 'cat >/dev/null; echo job {}' ::: "$f"; done <list >loop.out
while read -r f; do $PAR 'cat >/dev/null; echo job {}' ::: "$f"; done <list >loop.par
same "a while-read loop of stdin-reading jobs" loop.out loop.par

# A joblog that is no regular file: no journal beside it (before: /dev/fd/63.fppj could not be
# made and nothing ran; --joblog /dev/null left /dev/null.fppj behind).
"$FPP_RUN" --joblog >(cat >pipe.log) echo ::: a >pipe.out 2>pipe.err
eq "--joblog >(...): status" "$?" 0
eq "--joblog >(...): the job ran" "$(cat pipe.out)" a
wait_for grep -q 'echo a' pipe.log && ok "--joblog >(...): the joblog went through the pipe"
ln -s /dev/null devnull
"$FPP_RUN" --joblog devnull echo ::: a >/dev/null 2>&1
eq "--joblog to /dev/null: status" "$?" 0
[ ! -e devnull.fppj ] && [ ! -e /dev/null.fppj ] && ok "--joblog to /dev/null: no journal file" \
    || bad "--joblog to /dev/null left a journal file"

# Perl replacement strings are refused, not passed through as text with the value appended.
"$FPP_RUN" echo '{= s/\.gz$// =}' ::: a.gz >perl.out 2>perl.err
eq "{= =}: status" "$?" 255
grep -q 'not supported' perl.err && [ ! -s perl.out ] && ok "{= =}: refused, nothing run" || bad "{= =}: $(cat perl.out perl.err)"

# --timeout 0 is no timeout (GNU parallel's).
eq "--timeout 0" "$("$FPP_RUN" --timeout 0 echo ::: ok 2>&1)" ok

# Output that cannot be written stops the run with the right message (before: "No such file or
# directory", status 255 only at the end, every job run).
"$FPP_RUN" echo ::: a b >/dev/full 2>full.err
eq "stdout on a full disk: status" "$?" 255
grep -q 'No space left on device' full.err && ok "... says so" || bad "... says: $(cat full.err)"
rm -f ran
bash -c "trap '' PIPE; seq 3000 | \"$FPP_RUN\" -j2 'echo {}; echo {} >>ran' | head -1 >/dev/null; exit \${PIPESTATUS[1]}" 2>pipe2.err
eq "a reader gone, SIGPIPE ignored: status" "$?" 141
n=$(wc -l <ran)
[ "$n" -lt 3000 ] && ok "... the run stopped ($n of 3000 jobs ran)" || bad "... every job ran"
grep -q 'fpp-run: writing the output: Broken pipe' pipe2.err && ok "... says Broken pipe" || bad "... says: $(cat pipe2.err)"

# --results into a path that is a file: refused before any job runs (GNU parallel refuses too;
# before: the output was lost, the jobs logged as done, status 0).
touch resfile
"$FPP_RUN" --joblog rl --results resfile 'echo out-{}; echo {} >>resran' ::: a b >res.out 2>res.err
eq "--results on a file: status" "$?" 255
[ ! -e resran ] && ok "--results on a file: no job ran" || bad "--results on a file: jobs ran"
grep -q 'resfile' res.err && ok "... names it" || bad "... says: $(cat res.err)"
"$FPP_RUN" --results new/deep 'echo out-{}' ::: a >/dev/null 2>&1
eq "--results makes its directory" "$(cat new/deep/1/a/stdout)" out-a

finish
