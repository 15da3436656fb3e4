#!/bin/sh
# job.sh: the job of fpp-run's comparison tests; what it does depends on its first argument:
#   ok*     prints it on stdout and on stderr, exits 0
#   fail*   prints it, exits 3
#   segv*   prints it, then dies of SIGSEGV
#   hang*   prints it, then sleeps (a --timeout ends it)
#   both*   several lines on both streams, the last without a newline
#   flaky*  fails the first time (a file in $FLAKY_DIR marks it), succeeds the next
#   exit=N  exits N
#   anything else: prints every argument on a line of its own, as [arg]
case "$1" in
ok*) echo "out $1"; echo "err $1" >&2; exit 0 ;;
fail*) echo "out $1"; exit 3 ;;
segv*) echo "out $1"; kill -SEGV $$ ;;
hang*) echo "out $1"; exec sleep 30 ;;
both*) printf 'o1 %s\no2\n' "$1"; printf 'e1 %s\ne2' "$1" >&2; printf 'o3 no newline' ;;
flaky*) f="$FLAKY_DIR/$1"; if [ -e "$f" ]; then echo "second $1"; exit 0; fi; : > "$f"; echo "first $1"; exit 4 ;;
exit=*) exit "${1#exit=}" ;;
*) for a in "$@"; do printf '[%s]\n' "$a"; done ;;
esac
