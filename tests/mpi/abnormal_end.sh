#!/bin/sh
# abnormal_end.sh HOW MPIEXEC... -- BINARY: ends a running job from outside and checks that it
# ends quickly and cleanly. HOW: sigint-mpirun (Ctrl-C in a terminal reaches mpirun only: the
# ranks run in process groups of their own) or kill-rank (SIGKILL to rank 2, as the OOM killer
# would). Passes if mpirun exits within LIMIT seconds (default 5; about 1 s is usual), no
# process of the job (ranks, their pool's workers) is left, and no /dev/shm entry of theirs.
set -u
how=$1; shift
limit=${LIMIT:-5}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$@" hang >"$out" 2>&1 &
mpirun_pid=$!

# Wait for "ready": every worker of every rank is running a minute-long task.
i=0
while ! grep -q '^ready' "$out"; do
  i=$((i + 1))
  if [ $i -gt 600 ] || ! kill -0 $mpirun_pid 2>/dev/null; then
    echo "FAIL: the job never got ready"; cat "$out"; kill -KILL $mpirun_pid 2>/dev/null; exit 1
  fi
  sleep 0.1
done

# Every process of the job: mpirun's descendants.
descendants() {
  for c in $(cat /proc/$1/task/*/children 2>/dev/null); do echo $c; descendants $c; done
}
pids=$(descendants $mpirun_pid)
ranks=$(sed -n 's/^rank [0-9]* pid \([0-9]*\)$/\1/p' "$out")
nprocs=$(echo $pids | wc -w)
echo "job: mpirun $mpirun_pid, $nprocs processes under it (ranks: $(echo $ranks))"
[ "$nprocs" -ge 7 ] || { echo "FAIL: expected 3 ranks and their workers"; cat "$out"; kill -KILL $mpirun_pid; exit 1; }

ms() { echo $(($(date +%s%N) / 1000000)); }
start=$(ms)
case $how in
  sigint-mpirun) kill -INT $mpirun_pid ;;
  kill-rank) kill -KILL $(sed -n 's/^rank 2 pid \([0-9]*\)$/\1/p' "$out") ;;
  *) echo "unknown: $how"; exit 2 ;;
esac
while kill -0 $mpirun_pid 2>/dev/null; do
  if [ $(($(ms) - start)) -gt 30000 ]; then
    echo "FAIL: mpirun still running 30 s later"; kill -KILL $mpirun_pid; break
  fi
  sleep 0.02
done
wait $mpirun_pid 2>/dev/null
took_ms=$(($(ms) - start))
took=$(printf '%d.%03d' $((took_ms / 1000)) $((took_ms % 1000)))
echo "mpirun exited $took s after the $how (a plain MPI program's mpirun takes about 1.0 s here)"
fail=0
if [ $took_ms -gt $((limit * 1000)) ]; then echo "FAIL: over $limit s"; fail=1; fi

# Nothing left: no process (within a second: the last workers die as their rank's death
# reaches them), no shared memory named after any of them.
sleep 1
for p in $pids; do
  if [ -d /proc/$p ] && grep -q mpi_scenarios /proc/$p/cmdline 2>/dev/null; then
    echo "FAIL: process $p left: $(tr '\0' ' ' </proc/$p/cmdline)"; fail=1
  fi
done
for p in $pids; do
  for f in /dev/shm/fpp-$p-*; do
    [ -e "$f" ] && { echo "FAIL: $f left"; fail=1; }
  done
done
[ $fail = 0 ] && echo "PASS: $how ended the job in $took s, nothing left"
exit $fail
