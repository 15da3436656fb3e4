#!/bin/sh
# mpi-lost-bench.sh BUILD_DIR [REPS]: issue 17 B's timing targets, side by side. fpp-mpi-bench
# --lose on 4 ranks (3 serving, 1 worker each; 3000 tasks of 2 ms; rank timeout 1000 ms),
# under mpirun --enable-recovery --mca async_mpi_finalize 1, over shared memory and over TCP
# (tests/mpi/netns.sh, ranks 0-2 with mpirun, rank 3 in the other namespace; root only), REPS
# times each (default 5), a run without a loss next to a run where rank 2 is SIGKILLed a
# quarter in. Prints the medians and checks them against the targets:
#   detection  <= timeout + 10 ms            (from the kill to rank 0's loss line; every run)
#   run time   <= the run without a loss + the timeout + the lost rank's share, the share
#                 being the time the survivors need for its part of the work: the run
#                 without a loss x (its workers / the survivors' workers) = x 1/2 here.
set -eu
build=${1:-build}
reps=${2:-5}
here=$(cd "$(dirname "$0")" && pwd)
bin=$(cd "$build" && pwd)/bench/fpp-mpi-bench
csv=$(mktemp)
trap 'rm -f "$csv"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
recovery="--enable-recovery --mca async_mpi_finalize 1"
timeout_ms=1000
i=0
while [ "$i" -lt "$reps" ]; do
  i=$((i + 1))
  echo "== run $i of $reps (load $(cut -d' ' -f1 /proc/loadavg))"
  for mode in none kill; do
    timeout 120 mpirun -np 4 --oversubscribe $recovery "$bin" --lose $mode --rank-timeout $timeout_ms \
      --label shm --csv "$csv" 2>/dev/null | grep '^loss:' || echo "shm $mode: FAILED"
    FPP_NETNS_NP=4 FPP_NETNS_A=3 FPP_NETNS_MPIRUN_ARGS="$recovery" timeout 120 sh "$here/../tests/mpi/netns.sh" \
      "$bin" --lose $mode --rank-timeout $timeout_ms --label tcp --csv "$csv" 2>/dev/null | grep '^loss:' \
      || echo "tcp $mode: FAILED (or no namespaces)"
  done
done
echo "== medians of $reps run(s) (timeout $timeout_ms ms; share = no-loss run x 1/2)"
# CSV: label,mode,run_s,detect_ms,serving,timeout_ms
awk -F, -v to="$timeout_ms" '
  function median(arr, m,   a, b, t) {
    for (a = 1; a <= m; a++) for (b = a + 1; b <= m; b++) if (arr[b] < arr[a]) { t = arr[a]; arr[a] = arr[b]; arr[b] = t }
    return m % 2 ? arr[(m + 1) / 2] : (arr[m / 2] + arr[m / 2 + 1]) / 2 }
  { k = $1 "," $2; n[k]++; run[k, n[k]] = $3; det[k, n[k]] = $4; serving[$1] = $5; seen[$1] = 1 }
  END {
    printf "%-4s %12s %12s %12s %8s   %s\n", "link", "no loss", "with loss", "bound", "within", "detection ms (median, max; target <= " to + 10 ")"
    for (l in seen) {
      kn = l ",none"; kk = l ",kill"
      if (!n[kn] || !n[kk]) continue
      for (j = 1; j <= n[kn]; j++) a1[j] = run[kn, j]
      for (j = 1; j <= n[kk]; j++) { a2[j] = run[kk, j]; a3[j] = det[kk, j] }
      mn = median(a1, n[kn]); mk = median(a2, n[kk]); md = median(a3, n[kk]); mx = a3[n[kk]]
      bound = mn + to / 1000 + mn / (serving[l] - 1)
      printf "%-4s %10.3f s %10.3f s %10.3f s %8s   %.1f, %.1f: %s\n", l, mn, mk, bound, mk <= bound ? "yes" : "NO",
             md, mx, mx <= to + 10 ? "yes" : "NO"
    } }' "$csv"
