#!/bin/bash
# readme.sh: the README's "From the shell" commands work as shown: a command per line of input
# with a joblog and a timeout, then --resume (which runs nothing that was logged), and a function
# of examples/fpp_run_job.c per input line (FPP_RUN_EXAMPLE: that library, built by CMake).
. "$(dirname "$0")/lib.sh"
EXAMPLE=${FPP_RUN_EXAMPLE:?FPP_RUN_EXAMPLE must name libfpp_run_job.so}
cd "$T" || exit 1
mkdir -p data/sub
for i in $(seq 30); do echo "{\"n\": $i}" >"data/f$i.json"; done
echo '{"n": "crash"}' >data/sub/bad.json
printf '#!/bin/sh\ngrep -q crash "$1" && kill -SEGV $$\necho "$1 $(wc -c <"$1")"\n' >parse
chmod +x parse
find data -name '*.json' | "$FPP_RUN" --joblog run.log --timeout 60 ./parse {} >parsed.txt 2>err.txt
eq "use 1: exit status (one job segfaults)" "$?" 1
eq "use 1: the other jobs' output" "$(wc -l <parsed.txt)" 30
grep -q '^fpp-run: job [0-9]* "data/sub/bad.json": killed by SIGSEGV (signal 11); 1 attempt$' err.txt && ok "use 1: the failure line" || bad "use 1: the failure line: $(cat err.txt)"
find data -name '*.json' | "$FPP_RUN" --joblog run.log --timeout 60 --resume ./parse {} >>parsed.txt 2>err.txt
eq "use 1, --resume: exit status" "$?" 0
eq "use 1, --resume: nothing ran again" "$(wc -l <parsed.txt)" 30
printf 'hello world\n\nthe end\n' >lines.txt
"$FPP_RUN" -k --lib "$EXAMPLE" --fn wc <lines.txt >counts.txt
eq "use 3: exit status" "$?" 0
eq "use 3: output" "$(tr '\t\n' ',;' <counts.txt)" "2,11,hello world;0,0,;2,7,the end;"
"$FPP_RUN" -k --lib "$EXAMPLE" --fn upper <lines.txt >upper.txt 2>err.txt
eq "use 3 (upper): the empty line fails alone" "$?:$(tr '\n' ';' <upper.txt)" "1:HELLO WORLD;THE END;"
finish
