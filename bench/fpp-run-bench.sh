#!/bin/bash
# fpp-run-bench.sh: fpp-run against GNU parallel and xargs, side by side in one run, medians of
# 3 (the runs of a row interleaved). Rows:
#   exec      5,000 `true` jobs: fpp-run, GNU parallel, xargs -P <CPUs> (each with its defaults)
#   function  2,000,000 lines, -j 2: a no-op function, an echo, an echo with -k
#   parser    20,000 files through a parser that segfaults on 1% of them, hangs on 0.2% and
#             leaks on every one, --timeout 1: GNU parallel and fpp-run with the parser as a
#             program, and fpp-run with it as a job library (--max-rss 64M); every tool must
#             give the 19,760 good files' lines
#   ctrl-c    time from one SIGINT to fpp-run's exit, with 2 jobs running
# Usage: bench/fpp-run-bench.sh [BUILD_DIR [ROWS]] (default: build, and every row; ROWS a comma
# list of exec,function,parser,ctrl-c). Needs GNU parallel and a C compiler. About 10 minutes
# on 2 cores, most of it GNU parallel's parser runs. Timing lives here only; the tests never
# time anything. On a shared machine, compare the rows' ratios, not their absolute figures.
set -u
export LC_ALL=C
BUILD=${1:-build}
ROWS=,${2:-exec,function,parser,ctrl-c},
want() { [[ $ROWS == *,$1,* ]]; }
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
FPP_RUN=$(cd "$BUILD" && pwd)/tools/fpp-run
TESTJOB=$(cd "$BUILD" && pwd)/tests/fpp_run/libfpprun_testjob.so
[ -x "$FPP_RUN" ] || { echo "no $FPP_RUN: build first"; exit 1; }
[ -f "$TESTJOB" ] || { echo "no $TESTJOB: build with tests (the default)"; exit 1; }
command -v parallel >/dev/null || { echo "GNU parallel is missing: apt-get install parallel"; exit 1; }
PAR="parallel --will-cite"
NCPU=$(nproc)
W=$(mktemp -d "${TMPDIR:-/tmp}/fpp-run-bench.XXXXXX")
trap 'rm -rf "$W"' EXIT
cc -O2 -o "$W/parser" "$HERE/fpp-run-parser.c" || exit 1
cc -O2 -shared -fPIC -DJOB_LIBRARY -o "$W/libparser.so" "$HERE/fpp-run-parser.c" \
    -I"$ROOT/include" -I"$BUILD/include" -L"$BUILD" -lfpp || exit 1

now() { date +%s%N; }
median() { printf '%s\n' "$@" | sort -g | sed -n 2p; }
# timed VAR CMD...: runs CMD (stdout to $W/out), adds its seconds to the array VAR.
timed() {
    local var=$1
    shift
    local t0 t1
    t0=$(now)
    "$@" >"$W/out" 2>"$W/err"
    t1=$(now)
    eval "$var+=($(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'))"
}
row() { # LABEL COUNT UNIT TIMES...
    local label=$1 count=$2 unit=$3
    shift 3
    local m
    m=$(median "$@")
    printf '%-44s %8s s  %12.0f %s/s   (runs: %s)\n' "$label" "$m" "$(awk -v c="$count" -v m="$m" 'BEGIN { print c / m }')" "$unit" "$*"
    LAST=$m
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

echo "fpp-run-bench: $(uname -sr), $NCPU CPUs, $(parallel --version | head -1), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo

# ------------------------------------------------------------------ exec mode
if want exec; then
seq 5000 >"$W/n5000"
t_f=() t_p=() t_x=()
for r in 1 2 3; do
    timed t_f "$FPP_RUN" true <"$W/n5000"
    timed t_p $PAR true <"$W/n5000"
    timed t_x xargs -P "$NCPU" -n 1 true <"$W/n5000"
done
echo "exec mode: 5,000 'true' jobs, default options (-j $NCPU)"
row "  fpp-run true" 5000 jobs "${t_f[@]}"; F=$LAST
row "  GNU parallel true" 5000 jobs "${t_p[@]}"; P=$LAST
row "  xargs -P $NCPU -n 1 true" 5000 jobs "${t_x[@]}"; X=$LAST
echo "  fpp-run: $(ratio "$P" "$F")x GNU parallel's jobs/s, $(ratio "$X" "$F")x xargs's"
echo
fi

# ------------------------------------------------------------------ function mode
if want function; then
seq 2000000 >"$W/n2m"
t_n=() t_e=() t_k=()
for r in 1 2 3; do
    timed t_n "$FPP_RUN" -j 2 --lib "$TESTJOB" --fn noop <"$W/n2m"
    timed t_e "$FPP_RUN" -j 2 --lib "$TESTJOB" --fn echo <"$W/n2m"
    timed t_k "$FPP_RUN" -j 2 -k --lib "$TESTJOB" --fn echo <"$W/n2m"
    cmp -s "$W/out" "$W/n2m" || echo "  (the -k echo output differs from its input!)"
done
echo "function mode: 2,000,000 lines, -j 2"
row "  fpp-run --fn noop" 2000000 lines "${t_n[@]}"
row "  fpp-run --fn echo" 2000000 lines "${t_e[@]}"
row "  fpp-run -k --fn echo" 2000000 lines "${t_k[@]}"
echo
fi

# ------------------------------------------------------------------ the parser
if want parser; then
mkdir -p "$W/files"
awk -v d="$W/files" 'BEGIN {
    srand(7);
    for (i = 0; i < 20000; i++) {
        f = sprintf("%s/f%05d.txt", d, i);
        if (i % 100 == 37) print "crash" > f;
        else if (i % 500 == 123) print "hang" > f;
        for (l = 0; l < 40; l++) {
            s = "";
            for (k = 0; k < 12; k++) s = s int(rand() * 100000) " ";
            print s > f;
        }
        close(f);
    }
}'
find "$W/files" -name '*.txt' | sort >"$W/list"
good=$(grep -L -e '^crash' -e '^hang' "$W"/files/*.txt | wc -l)
t_p=() t_f=() t_l=()
for r in 1 2 3; do
    timed t_p $PAR --timeout 1 "$W/parser" <"$W/list"
    np=$(wc -l <"$W/out")
    timed t_f "$FPP_RUN" --timeout 1 "$W/parser" <"$W/list"
    nf=$(wc -l <"$W/out")
    timed t_l "$FPP_RUN" --timeout 1 --max-rss 64M --lib "$W/libparser.so" --fn parse <"$W/list"
    nl=$(wc -l <"$W/out")
    [ "$np $nf $nl" = "$good $good $good" ] || echo "  (good lines: parallel $np, fpp-run $nf, function mode $nl; want $good)"
done
echo "parser: 20,000 files, 1% segfault, 0.2% hang, leaks 64 KiB+ each, --timeout 1, -j $NCPU"
row "  GNU parallel --timeout 1 parser" 20000 files "${t_p[@]}"; P=$LAST
row "  fpp-run --timeout 1 parser" 20000 files "${t_f[@]}"; F=$LAST
row "  fpp-run --timeout 1 --max-rss 64M --fn parse" 20000 files "${t_l[@]}"; L=$LAST
echo "  fpp-run: $(ratio "$P" "$F")x GNU parallel's files/s (exec mode), $(ratio "$P" "$L")x (function mode)"
echo
fi

# ------------------------------------------------------------------ Ctrl-C
if want ctrl-c; then
t_c=()
for r in 1 2 3; do
    setsid "$FPP_RUN" -j 2 'sleep 71.{}' ::: 1 2 3 >/dev/null 2>&1 &
    pid=$!
    until [ "$(pgrep -fc 'sleep 71[.]')" -ge 2 ]; do sleep 0.05; done
    t0=$(now)
    kill -INT -- -$pid
    wait $pid
    t1=$(now)
    t_c+=($(((t1 - t0) / 1000000)))
done
echo "Ctrl-C: one SIGINT to fpp-run's exit, 2 jobs running: median $(median "${t_c[@]}") ms (runs: ${t_c[*]} ms)"
fi
