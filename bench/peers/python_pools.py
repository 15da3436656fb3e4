#!/usr/bin/env python3
"""python_pools.py: Python process pools side by side, in one run.

    PYTHONPATH=build/python /usr/bin/python3 bench/peers/python_pools.py [--quick] [--reps N]
        [--workers W] [--csv FILE]

Peers: fpp.futureproof (ProcessPoolExecutor + TaskManager, submit and map), fpp.ProcessPool
(submit, map(chunksize=256), imap_unordered(chunksize=256)), futureproof's own
ProcessPoolExecutor where it is installed, concurrent.futures.ProcessPoolExecutor (submit,
map(chunksize=256)) and multiprocessing.Pool.imap_unordered (chunksize 1 and 256).

Workloads: small tasks (return the argument), 1 ms tasks (1 ms of CPU each: the speedup over
running them serially, 2.0 at best on 2 workers), 1 MiB results.

Every configuration runs --reps times, interleaved round by round (so that a noisy neighbour
hurts all peers alike); the table shows the median rate and each peer's ratio to the
reference row of its workload. Pools are created and warmed up outside the timing. Each run's
results are checked. Targets (issue 12): fpp.ProcessPool.map >= 2x
concurrent.futures map(chunksize=256) on small tasks; fpp.futureproof submit >= 10x
futureproof's process pool (where futureproof is not installed: against
concurrent.futures submit, which futureproof's process pool wraps, so the ratio printed is a
lower bound of the one asked for).
"""
import argparse
import concurrent.futures as cf
import multiprocessing as mp
import os
import statistics
import sys
import time

try:
    import fpp
    import fpp.futureproof as fppf
except ImportError:
    sys.exit("python_pools.py: cannot import fpp: build it (cmake -S . -B build && cmake --build build) "
             "and run with PYTHONPATH=build/python")

try:
    import futureproof  # the original, from PyPI
except ImportError:
    futureproof = None


# ------------------------------------------------------------------ task bodies

def small(i):
    return i


def spin_1ms(i):
    end = time.perf_counter() + 0.001
    while time.perf_counter() < end:
        pass
    return i


MIB = 1 << 20


def one_mib(i):
    return bytes(MIB)


WORKLOADS = {
    # name: (function, tasks (full run), tasks (--quick), check(results, n))
    "small": (small, 20000, 2000, lambda r, n: sum(r) == n * (n - 1) // 2),
    "1ms": (spin_1ms, 2000, 200, lambda r, n: sum(r) == n * (n - 1) // 2),
    "1MiB": (one_mib, 400, 50, lambda r, n: len(r) == n and all(len(b) == MIB for b in r)),
}

# ------------------------------------------------------------------ peers
# Each peer: make(workers) -> pool, run(pool, fn, n) -> results, close(pool).


def _tm_submit(ex, fn, n):
    with fppf.TaskManager(ex) as tm:
        for i in range(n):
            tm.submit(fn, i)
    return tm.results


def _tm_map(ex, fn, n):
    with fppf.TaskManager(ex) as tm:
        tm.map(fn, range(n))
    return tm.results


def _fp_submit(ex, fn, n):
    with futureproof.TaskManager(ex) as tm:
        for i in range(n):
            tm.submit(fn, i)
    return [t.result for t in tm.completed_tasks]


def _cf_submit(ex, fn, n):
    futs = [ex.submit(fn, i) for i in range(n)]
    return [f.result() for f in futs]


def _fpp_submit(p, fn, n):
    futs = [p.submit(fn, i) for i in range(n)]
    return [f.result() for f in futs]


def _shutdown(ex):
    ex.shutdown()


PEERS = [
    # (name, make, run, close, reference for these workloads)
    ("fpp.futureproof submit", lambda w: fppf.ProcessPoolExecutor(max_workers=w), _tm_submit, _shutdown),
    ("fpp.futureproof map", lambda w: fppf.ProcessPoolExecutor(max_workers=w), _tm_map, _shutdown),
    ("fpp.ProcessPool submit", lambda w: fpp.ProcessPool(w), _fpp_submit, lambda p: p.close()),
    ("fpp.ProcessPool map cs=256", lambda w: fpp.ProcessPool(w),
     lambda p, fn, n: list(p.map(fn, range(n), chunksize=256)), lambda p: p.close()),
    ("fpp.ProcessPool imap_unordered cs=256", lambda w: fpp.ProcessPool(w),
     lambda p, fn, n: list(p.imap_unordered(fn, range(n), chunksize=256)), lambda p: p.close()),
    ("futureproof ProcessPoolExecutor submit",
     lambda w: futureproof.ProcessPoolExecutor(max_workers=w), _fp_submit, lambda ex: None),
    ("cf ProcessPoolExecutor submit", lambda w: cf.ProcessPoolExecutor(w), _cf_submit, _shutdown),
    ("cf ProcessPoolExecutor map cs=256", lambda w: cf.ProcessPoolExecutor(w),
     lambda ex, fn, n: list(ex.map(fn, range(n), chunksize=256)), _shutdown),
    ("mp Pool imap_unordered cs=1", lambda w: mp.get_context("fork").Pool(w),
     lambda p, fn, n: list(p.imap_unordered(fn, range(n), chunksize=1)), lambda p: (p.terminate(), p.join())),
    ("mp Pool imap_unordered cs=256", lambda w: mp.get_context("fork").Pool(w),
     lambda p, fn, n: list(p.imap_unordered(fn, range(n), chunksize=256)), lambda p: (p.terminate(), p.join())),
]

REFERENCE = "cf ProcessPoolExecutor map cs=256"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="few tasks, one round (a smoke run)")
    ap.add_argument("--reps", type=int, default=5, help="rounds (median taken); default 5")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--csv", help="also write the rows to this CSV file")
    ap.add_argument("--only", help="comma-separated workloads (small,1ms,1MiB)")
    args = ap.parse_args()
    reps = 1 if args.quick else args.reps
    workloads = [w for w in WORKLOADS if not args.only or w in args.only.split(",")]

    print("python_pools.py: Python %s, %d CPU(s), %d workers, %d round(s)%s"
          % (sys.version.split()[0], os.cpu_count(), args.workers, reps, " (--quick)" if args.quick else ""))
    peers = PEERS
    if futureproof is None:
        print("futureproof is not installed (no PyPI here): its row is skipped; fpp.futureproof "
              "submit is compared with concurrent.futures submit instead, which futureproof's "
              "process pool wraps (so that ratio is a lower bound of the one against futureproof)")
        peers = [p for p in PEERS if not p[0].startswith("futureproof")]

    # One pool per peer for the whole run, warmed up (workers started, functions resolved).
    pools = {}
    for name, make, run, close in peers:
        pool = make(args.workers)
        for w in workloads:
            run(pool, WORKLOADS[w][0], 4 * args.workers)
        pools[name] = pool

    times = {(name, w): [] for name, *_ in peers for w in workloads}
    bad = []
    for rnd in range(reps):
        for w in workloads:
            fn, n_full, n_quick, check = WORKLOADS[w]
            n = n_quick if args.quick else n_full
            for name, make, run, close in peers:
                t0 = time.perf_counter()
                res = run(pools[name], fn, n)
                dt = time.perf_counter() - t0
                if not check(res, n):
                    bad.append((name, w))
                times[(name, w)].append(dt)
        print("  round %d/%d done" % (rnd + 1, reps), file=sys.stderr)

    for name, make, run, close in peers:
        close(pools[name])

    rows = []
    print()
    print("%-40s %-6s %7s %12s %9s %9s" % ("peer", "load", "tasks", "tasks/s", "vs ref", "speedup"))
    for w in workloads:
        fn, n_full, n_quick, check = WORKLOADS[w]
        n = n_quick if args.quick else n_full
        ref = statistics.median(times[(REFERENCE, w)])
        for name, *_ in peers:
            med = statistics.median(times[(name, w)])
            rate = n / med
            speedup = (n * 0.001 / med) if w == "1ms" else float("nan")
            rows.append((name, w, n, med, rate, ref / med, speedup))
            print("%-40s %-6s %7d %12.0f %8.2fx %9s" % (name, w, n, rate, ref / med,
                                                         "%.2f" % speedup if w == "1ms" else ""))
        print()
    print("vs ref: the peer's median rate over %s's, same workload" % REFERENCE)

    def med(name, w):
        return statistics.median(times[(name, w)])

    print()
    print("Targets:")
    if "small" in workloads:
        r = med(REFERENCE, "small") / med("fpp.ProcessPool map cs=256", "small")
        print("  fpp.ProcessPool.map(cs=256) / cf map(cs=256), small tasks: %.2fx (target >= 2x): %s"
              % (r, "met" if r >= 2 else "NOT MET"))
        if futureproof is not None:
            base = "futureproof ProcessPoolExecutor submit"
            what = "futureproof's ProcessPoolExecutor"
        else:
            base = "cf ProcessPoolExecutor submit"
            what = "cf submit (futureproof absent; a lower bound of the ratio to futureproof)"
        r = med(base, "small") / med("fpp.futureproof submit", "small")
        print("  fpp.futureproof submit / %s, small tasks: %.2fx (target >= 10x): %s"
              % (what, r, "met" if r >= 10 else "NOT MET"))
    if bad:
        print("WRONG RESULTS from: %s" % ", ".join("%s (%s)" % b for b in bad))
    if args.csv:
        with open(args.csv, "w") as f:
            f.write("peer,workload,tasks,median_s,tasks_per_s,vs_ref,speedup_1ms\n")
            for row in rows:
                f.write("%s,%s,%d,%.6f,%.1f,%.3f,%s\n" % (row[0], row[1], row[2], row[3], row[4], row[5],
                                                         "" if row[1] != "1ms" else "%.3f" % row[6]))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
