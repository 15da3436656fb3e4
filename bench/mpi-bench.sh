#!/bin/sh
# mpi-bench.sh BUILD_DIR [REPS]: fpp-mpi-bench over shared memory (3 ranks on this machine)
# and over TCP (two network namespaces, tests/mpi/netns.sh; root only), REPS times each
# (default 3), then the median of every row. 2 serving ranks of 1 worker each, as the
# targets say; noop also with each rank's default pool (one worker per CPU).
set -eu
build=${1:-build}
reps=${2:-3}
here=$(cd "$(dirname "$0")" && pwd)
bin=$(cd "$build" && pwd)/bench/fpp-mpi-bench
out=$(mktemp)
csv=$(mktemp)
trap 'rm -f "$out" "$csv"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
i=0
while [ $i -lt "$reps" ]; do
  i=$((i + 1))
  echo "== run $i of $reps (load $(cut -d' ' -f1 /proc/loadavg))"
  mpirun -np 3 --oversubscribe "$bin" --workers 1 --latency --csv "$csv" | tee -a "$out"
  mpirun -np 3 --oversubscribe "$bin" --workers 2 --workloads noop --no-process --csv "$csv" | tee -a "$out"
  sh "$here/../tests/mpi/netns.sh" "$bin" --workers 1 --label tcp --no-process --latency --csv "$csv" | tee -a "$out" || true
  sh "$here/../tests/mpi/netns.sh" "$bin" --workers 2 --label tcp --no-process --workloads noop --csv "$csv" \
    | tee -a "$out" || true
done
echo "== medians of $reps run(s): tasks/s (speedup or MB/s)"
# CSV: executor,link,workload,workers,tasks,tasks/s,us/task,speedup,MB/s,cpu0_s
awk -F, '
  { key = sprintf("%-12s %-4s %-14s workers %d", $1, $2, $3, $4); n[key]++
    tps[key, n[key]] = $6 + 0; sp[key, n[key]] = $8; mb[key, n[key]] = $9
    if (!(key in seen)) { seen[key] = 1; keys[++k] = key } }
  END {
    for (j = 1; j <= k; j++) {
      key = keys[j]; m = n[key]
      for (a = 1; a <= m; a++) idx[a] = a
      for (a = 1; a <= m; a++) for (b = a + 1; b <= m; b++)
        if (tps[key, idx[b]] < tps[key, idx[a]]) { t = idx[a]; idx[a] = idx[b]; idx[b] = t }
      mid = idx[int((m + 1) / 2)]
      all = ""; for (a = 1; a <= m; a++) all = all sprintf(" %.0f", tps[key, a])
      printf "%s  %10.0f tasks/s%s%s   (runs:%s)\n", key, tps[key, mid],
        sp[key, mid] != "" ? "  speedup " sp[key, mid] : "", mb[key, mid] != "" ? "  " mb[key, mid] " MB/s" : "", all
    } }' "$csv"
echo "== latency, every run"
grep latency "$out"
