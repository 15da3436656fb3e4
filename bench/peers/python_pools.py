#!/usr/bin/env python3
"""python_pools.py: Python process pools side by side, in one run.

    PYTHONPATH=build/python /usr/bin/python3 bench/peers/python_pools.py [--quick] [--reps N]
        [--workers W] [--only tiny,1ms,1MiB,numpy] [--csv FILE]

Peers, each used as its documentation shows (Debian packages: python3-pebble, python3-joblib,
python3-dask; a peer not installed is listed as such):
  fpp.ProcessPool map            pool.map(fn, items, chunksize=C)
  fpp.ProcessPool submit         [pool.submit(fn, i) for i in items], then each .result()
  fpp.futureproof map            TaskManager(ProcessPoolExecutor).map(fn, items)
  fpp.futureproof submit         TaskManager(...).submit(fn, i) for each item
  cf map / cf submit             concurrent.futures.ProcessPoolExecutor (fork), the same two ways
  mp map                         multiprocessing.Pool (fork): pool.map(fn, items, chunksize=C)
  mp imap_unordered              pool.imap_unordered(fn, items, chunksize=C or 1)
  pebble map                     pebble.ProcessPool: pool.map(fn, items, chunksize=C).result()
  joblib (loky)                  Parallel(n_jobs=W)(delayed(fn)(i) for i in items)
  dask processes                 dask.bag.from_sequence(items).map(fn).compute(scheduler=
                                 "processes", pool=<a ProcessPoolExecutor made once>)
C is the workload's chunksize: 256 for "tiny" (every peer that takes a chunk size gets the
same; joblib gets batch_size=256, dask 256 items per partition), the library's default
otherwise (1 for fpp, cf, pebble, imap_unordered; mp's map picks its own; joblib "auto";
dask's default partitions).

Workloads: "tiny" (return the argument, chunked), "1ms" (1 ms of CPU each: the speedup over
running them serially, 2.0 at best on 2 workers), "1MiB" (a 1 MiB bytes result),
"numpy" (a 1 MiB numpy array result: np.full(131072, i, float)).

Every configuration runs --reps times (default 3), interleaved round by round so that a noisy
neighbour hurts all peers alike; the table shows the median rate. Pools are created and warmed
up outside the timing. Each run's results are checked as they come, inside the timing (the
way a program consumes them: an iterator is read item by item, a list is what the peer
returns). A peer that fails (BrokenProcessPool,
wrong results, ...) prints that it broke and why, never a rate.

Targets (issue 19): fpp.ProcessPool (map) >= 1.5x the best of the other libraries on every
workload; numpy results >= 3x multiprocessing.Pool and >= 0.3x memcpy (hot 1 MiB copies,
np.copyto, measured in this run). Issue 12's: fpp.ProcessPool.map >= 2x cf map on tiny tasks;
fpp.futureproof submit >= 10x futureproof's process pool (not installed here: against cf
submit, which futureproof's wraps, a lower bound).
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
    import numpy as np
except ImportError:
    np = None
try:
    import pebble
except ImportError:
    pebble = None
try:
    import joblib
except ImportError:
    joblib = None
try:
    import dask
    import dask.bag
except ImportError:
    dask = None


# ------------------------------------------------------------------ task bodies

def tiny(i):
    return i


def spin_1ms(i):
    end = time.perf_counter() + 0.001
    while time.perf_counter() < end:
        pass
    return i


MIB = 1 << 20


def one_mib(i):
    return bytes(MIB)


def one_mib_numpy(i):
    return np.full(MIB // 8, i, dtype=np.float64)


# The checks consume the results as they come (a peer that returns a list holds them all, as
# its users' code would).

def _sum_check(r, n):
    count = total = squares = 0
    for x in r:
        count += 1
        total += x
        squares += x * x
    return count == n and total == n * (n - 1) // 2 and squares == (n - 1) * n * (2 * n - 1) // 6


def _bytes_check(r, n):
    count = 0
    for b in r:
        if type(b) is not bytes or len(b) != MIB:
            return False
        count += 1
    return count == n


def _numpy_check(r, n):
    count = total = 0
    for a in r:
        if a.shape != (MIB // 8,) or a[-1] != a[0]:
            return False
        count += 1
        total += int(a[0])
    return count == n and total == n * (n - 1) // 2


WORKLOADS = {
    # name: (function, tasks, tasks with --quick, chunksize (None: the library's default), check)
    "tiny": (tiny, 200000, 4000, 256, _sum_check),
    "1ms": (spin_1ms, 2000, 100, None, _sum_check),
    "1MiB": (one_mib, 2000, 100, None, _bytes_check),
    "numpy": (one_mib_numpy, 2000, 100, None, _numpy_check),
}


# ------------------------------------------------------------------ peers
# Each: (name, library, make(workers) -> pool, run(pool, fn, n, chunksize) -> results, close(pool))

def _cs(c):
    return 1 if c is None else c


def _tm_submit(ex, fn, n, c):
    with fppf.TaskManager(ex) as tm:
        for i in range(n):
            tm.submit(fn, i)
    return tm.results


def _tm_map(ex, fn, n, c):
    with fppf.TaskManager(ex) as tm:
        tm.map(fn, range(n))
    return tm.results


def _submit_all(ex, fn, n, c):
    futs = [ex.submit(fn, i) for i in range(n)]
    futs.reverse()
    while futs:
        yield futs.pop().result()


def _mp_map(p, fn, n, c):
    return p.map(fn, range(n)) if c is None else p.map(fn, range(n), chunksize=c)


def _pebble_map(p, fn, n, c):
    return p.map(fn, range(n), chunksize=_cs(c)).result()


def _joblib(p, fn, n, c):
    return p(joblib.delayed(fn)(i) for i in range(n))


def _dask_make(w):
    return cf.ProcessPoolExecutor(w, mp_context=mp.get_context("fork"))


def _dask(pool, fn, n, c):
    b = dask.bag.from_sequence(range(n), partition_size=c) if c else dask.bag.from_sequence(range(n))
    return b.map(fn).compute(scheduler="processes", pool=pool)


def _fork_pool(w):
    return mp.get_context("fork").Pool(w)


def _close_mp(p):
    p.terminate()
    p.join()


PEERS = [
    ("fpp.ProcessPool map", "fpp", lambda w: fpp.ProcessPool(w),
     lambda p, fn, n, c: p.map(fn, range(n), chunksize=_cs(c)), lambda p: p.shutdown()),
    ("fpp.ProcessPool submit", "fpp", lambda w: fpp.ProcessPool(w), _submit_all, lambda p: p.shutdown()),
    ("fpp.futureproof map", "fpp", lambda w: fppf.ProcessPoolExecutor(max_workers=w, monitor_interval=0),
     _tm_map, lambda ex: ex.shutdown()),
    ("fpp.futureproof submit", "fpp", lambda w: fppf.ProcessPoolExecutor(max_workers=w, monitor_interval=0),
     _tm_submit, lambda ex: ex.shutdown()),
    ("cf map", "concurrent.futures", lambda w: cf.ProcessPoolExecutor(w, mp_context=mp.get_context("fork")),
     lambda ex, fn, n, c: ex.map(fn, range(n), chunksize=_cs(c)), lambda ex: ex.shutdown()),
    ("cf submit", "concurrent.futures", lambda w: cf.ProcessPoolExecutor(w, mp_context=mp.get_context("fork")),
     _submit_all, lambda ex: ex.shutdown()),
    ("mp map", "multiprocessing", _fork_pool, _mp_map, _close_mp),
    ("mp imap_unordered", "multiprocessing", _fork_pool,
     lambda p, fn, n, c: p.imap_unordered(fn, range(n), chunksize=_cs(c)), _close_mp),
    ("pebble map", "pebble", lambda w: pebble.ProcessPool(max_workers=w), _pebble_map,
     lambda p: (p.stop(), p.join())),
    ("joblib (loky)", "joblib", None, None, None),  # made per workload: batch_size differs
    ("dask processes", "dask", _dask_make, _dask, lambda p: p.shutdown()),
]
INSTALLED = {"fpp": True, "concurrent.futures": True, "multiprocessing": True,
             "pebble": pebble is not None, "joblib": joblib is not None, "dask": dask is not None}
FPP = "fpp.ProcessPool map"


def _joblib_parallel(w, c):
    return joblib.Parallel(n_jobs=w, batch_size=c if c else "auto")


def memcpy_rate(seconds=0.3):
    """Hot 1 MiB copies per second (np.copyto between two preallocated arrays)."""
    src = np.ones(MIB // 8)
    dst = np.empty_like(src)
    n = 0
    t0 = time.perf_counter()
    while True:
        for _ in range(64):
            np.copyto(dst, src)
        n += 64
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return n / dt


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="few tasks, one round (a smoke run)")
    ap.add_argument("--reps", type=int, default=3, help="rounds (median taken); default 3")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--csv", help="also write the rows to this CSV file")
    ap.add_argument("--only", help="comma-separated workloads (%s)" % ",".join(WORKLOADS))
    args = ap.parse_args()
    reps = 1 if args.quick else args.reps
    workloads = [w for w in WORKLOADS if not args.only or w in args.only.split(",")]
    if np is None and "numpy" in workloads:
        print("numpy is not installed (apt-get install python3-numpy): the numpy workload is skipped")
        workloads.remove("numpy")
    W = args.workers

    print("python_pools.py: Python %s, %d CPU(s), %d workers, %d round(s)%s"
          % (sys.version.split()[0], os.cpu_count(), W, reps, " (--quick)" if args.quick else ""))
    peers = [p for p in PEERS if INSTALLED[p[1]]]
    for p in PEERS:
        if not INSTALLED[p[1]]:
            print("%s: not installed (Debian: python3-%s), its rows are skipped" % (p[0], p[1]))
    mcopy = memcpy_rate() if np is not None else None

    # One pool per peer (and workload, for joblib) for the whole run, warmed up.
    pools, broke = {}, {}
    for name, lib, make, run, close in peers:
        for w in workloads:
            fn, n_full, n_quick, c, check = WORKLOADS[w]
            try:
                if lib == "joblib":
                    pool = pools[(name, w)] = _joblib_parallel(W, c)
                    list(_joblib(pool, fn, 4 * W, c))
                else:
                    if name not in pools:
                        pools[name] = make(W)
                    list(run(pools[name], fn, 4 * W, c))
            except BaseException as e:  # noqa: a peer that breaks must not stop the others
                if isinstance(e, KeyboardInterrupt):
                    raise
                broke[(name, w)] = "%s: %s" % (type(e).__name__, e)

    times = {(p[0], w): [] for p in peers for w in workloads}
    for rnd in range(reps):
        for w in workloads:
            fn, n_full, n_quick, c, check = WORKLOADS[w]
            n = n_quick if args.quick else n_full
            for name, lib, make, run, close in peers:
                if (name, w) in broke:
                    continue
                try:
                    t0 = time.perf_counter()
                    if lib == "joblib":
                        res = _joblib(pools[(name, w)], fn, n, c)
                    else:
                        res = run(pools[name], fn, n, c)
                    ok = check(res, n)
                    dt = time.perf_counter() - t0
                except BaseException as e:  # noqa
                    if isinstance(e, KeyboardInterrupt):
                        raise
                    broke[(name, w)] = "%s: %s" % (type(e).__name__, e)
                    continue
                del res
                if not ok:
                    broke[(name, w)] = "wrong results"
                    continue
                times[(name, w)].append(dt)
        print("  round %d/%d done" % (rnd + 1, reps), file=sys.stderr)

    for name, lib, make, run, close in peers:
        for key in [name] + [(name, w) for w in workloads]:
            if key in pools and lib != "joblib":
                try:
                    close(pools[key])
                except Exception:
                    pass

    def med(name, w):
        return statistics.median(times[(name, w)]) if times.get((name, w)) and (name, w) not in broke else None

    rows = []
    print()
    print("%-24s %-6s %7s %11s %8s  %s" % ("peer", "load", "tasks", "tasks/s", "vs fpp", "note"))
    for w in workloads:
        fn, n_full, n_quick, c, check = WORKLOADS[w]
        n = n_quick if args.quick else n_full
        ref = med(FPP, w)
        for name, lib, *_ in peers:
            m = med(name, w)
            if m is None:
                print("%-24s %-6s %7d %11s %8s  BROKE: %s" % (name, w, n, "-", "-", broke.get((name, w), "?")))
                rows.append((name, w, n, None, None, None, "broke: " + broke.get((name, w), "?")))
                continue
            rate = n / m
            note = ""
            if w == "1ms":
                note = "speedup %.2f" % (n * 0.001 / m)
            elif w in ("1MiB", "numpy"):
                note = "%.2f GB/s" % (rate * MIB / 1e9)
                if w == "numpy" and mcopy:
                    note += " = %.2fx memcpy" % (rate / mcopy)
            vs = ref / m if ref else None
            print("%-24s %-6s %7d %11.0f %8s  %s" % (name, w, n, rate, "%.2fx" % (1 / vs) if vs else "-", note))
            rows.append((name, w, n, m, rate, (1 / vs) if vs else None, note))
        print()
    print("vs fpp: the peer's median rate over fpp.ProcessPool map's, same workload (< 1: slower)")
    if mcopy:
        print("memcpy (hot, 1 MiB, np.copyto): %.0f copies/s = %.1f GB/s" % (mcopy, mcopy * MIB / 1e9))

    print()
    print("Targets:")
    others = [p[0] for p in peers if p[1] != "fpp"]
    for w in workloads:
        f = med(FPP, w)
        if f is None:
            print("  %s: fpp.ProcessPool map BROKE" % w)
            continue
        best = min(((med(o, w), o) for o in others if med(o, w) is not None), default=(None, None))
        if best[0] is None:
            print("  %s: no other peer ran" % w)
            continue
        r = best[0] / f
        print("  %-6s fpp.ProcessPool map / best other (%s): %.2fx (target >= 1.5x): %s"
              % (w, best[1], r, "met" if r >= 1.5 else "NOT MET"))
    if "numpy" in workloads and med(FPP, "numpy") and med("mp map", "numpy"):
        r = med("mp map", "numpy") / med(FPP, "numpy")
        print("  numpy  fpp.ProcessPool map / mp map: %.2fx (target >= 3x): %s" % (r, "met" if r >= 3 else "NOT MET"))
    if "numpy" in workloads and med(FPP, "numpy") and mcopy:
        n = WORKLOADS["numpy"][2 if args.quick else 1]
        r = n / med(FPP, "numpy") / mcopy
        print("  numpy  fpp.ProcessPool map / memcpy: %.2fx (target >= 0.3x): %s" % (r, "met" if r >= 0.3 else "NOT MET"))
    if "tiny" in workloads and med(FPP, "tiny") and med("cf map", "tiny"):
        r = med("cf map", "tiny") / med(FPP, "tiny")
        print("  tiny   fpp.ProcessPool map / cf map (issue 12): %.2fx (target >= 2x): %s" % (r, "met" if r >= 2 else "NOT MET"))
    if "tiny" in workloads and med("fpp.futureproof submit", "tiny") and med("cf submit", "tiny"):
        r = med("cf submit", "tiny") / med("fpp.futureproof submit", "tiny")
        print("  tiny   fpp.futureproof submit / cf submit (issue 12; futureproof absent, a lower bound): "
              "%.2fx (target >= 10x): %s" % (r, "met" if r >= 10 else "NOT MET"))
    bad = [k for k in broke if k[0] == FPP]
    if args.csv:
        with open(args.csv, "w") as f:
            f.write("peer,workload,tasks,median_s,tasks_per_s,vs_fpp,note\n")
            for row in rows:
                f.write("%s,%s,%d,%s,%s,%s,%s\n" % (row[0], row[1], row[2],
                                                    "" if row[3] is None else "%.6f" % row[3],
                                                    "" if row[4] is None else "%.1f" % row[4],
                                                    "" if row[5] is None else "%.3f" % row[5], row[6]))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
