#!/bin/sh
# tour.sh BUILD_DIR: a short run of every example, as the README's first command ends with.
set -e
b=${1:-build}/examples
run() { printf '\n$ %s\n' "$*"; "$@"; }
run "$b/basic"
run "$b/error_policy" raise
run "$b/error_policy" log
run "$b/error_policy" ignore
run "$b/completed_tasks"
run "$b/crash"
run "$b/futures"
run "$b/retries"
run "$b/ordered" --items 5000
run "$b/untrusted_files"
printf '\n$ %s   (one Ctrl-C after 2 s)\n' "$b/backpressure"
timeout --foreground -s INT 2 "$b/backpressure" || true
