# lib.sh: what fpp-run's test scripts share (sourced). Each test runs GNU parallel (Debian's
# parallel) and fpp-run on the same inputs and compares what they write: outputs, joblog
# columns (all but the two times), exit statuses. Environment from ctest: FPP_RUN (the
# program), FPP_RUN_TESTJOB (the job library of function mode).
set -u
export LC_ALL=C
FPP_RUN=${FPP_RUN:?FPP_RUN must name the fpp-run program}
TESTJOB=${FPP_RUN_TESTJOB:-}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PAR="parallel --will-cite"
# Both run shell command lines with the same shell.
export PARALLEL_SHELL=/bin/bash
export SHELL=/bin/bash
JOB=$HERE/job.sh

FAILS=0
CHECKS=0
T=$(mktemp -d "${TMPDIR:-/tmp}/fpp-run-test.XXXXXX")
trap 'rm -rf "$T"' EXIT

need_parallel() {
    if ! command -v parallel >/dev/null 2>&1; then
        echo "SKIPPED: GNU parallel is not installed (apt-get install parallel)"
        exit 77
    fi
}

ok() { CHECKS=$((CHECKS + 1)); echo "ok   $*"; }
bad() { CHECKS=$((CHECKS + 1)); FAILS=$((FAILS + 1)); echo "FAIL $*"; }

# same NAME FILE1 FILE2: the files are equal (a diff is shown otherwise).
same() {
    if cmp -s "$2" "$3"; then ok "$1"; else bad "$1"; diff "$2" "$3" | head -20; fi
}

# eq NAME A B
eq() {
    if [ "$2" = "$3" ]; then ok "$1 ($2)"; else bad "$1: '$2' != '$3'"; fi
}

# The joblog without its times (Starttime, JobRuntime).
cols() { cut -f1,2,5-9 "$1"; }
# ... sorted by Seq (runs that do not keep the order).
cols_sorted() { cols "$1" | sort -n; }

# Job output lines without the runners' own lines (fpp-run's failure lines, parallel's
# warnings).
job_lines() { grep -v -e '^fpp-run: ' -e '^parallel: ' "$1" || true; }

finish() {
    echo "$CHECKS checks, $FAILS failed"
    [ "$FAILS" -eq 0 ]
    exit $?
}

# Waits (up to 20 s) until command succeeds.
wait_for() {
    local i=0
    until "$@"; do
        i=$((i + 1))
        [ $i -gt 400 ] && return 1
        sleep 0.05
    done
}
