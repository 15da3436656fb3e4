#!/usr/bin/env python3
"""python_mpi.py: fpp.mpi against mpi4py.futures, the same program under each launcher.

    PYTHONPATH=build/python /usr/bin/python3 bench/peers/python_mpi.py [--quick] [--np 3] [--reps 3]

Runs, one after the other in this one invocation,

    mpirun -np NP python3 -m fpp.mpi        python_mpi.py --job fpp
    mpirun -np NP python3 -m mpi4py.futures python_mpi.py --job mpi4py

each of which times, on rank 0, the workloads with default arguments the way a user writes
them (``list(executor.map(fn, range(n)))``: chunksize 1), --reps times, and prints the medians;
this driver prints them side by side. Workloads: "tiny" (return the argument; 100k tasks,
5k with --quick) and "1ms" (1 ms of CPU each; 2000 tasks, 200). Executors are made and warmed
up outside the timing. Targets (issue 19): fpp.mpi >= 10x mpi4py.futures on tiny tasks and
>= 1.5x on 1 ms tasks. Needs python3-mpi4py and fpp built with MPI (fpp._fpp_mpi). As root,
mpirun needs OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 (set here).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time


def tiny(i):
    return i


def spin_1ms(i):
    end = time.perf_counter() + 0.001
    while time.perf_counter() < end:
        pass
    return i


def job(lib, quick, reps):
    if lib == "fpp":
        from fpp.mpi import MPIPoolExecutor
    else:
        from mpi4py.futures import MPIPoolExecutor
    loads = {"tiny": (tiny, 5000 if quick else 100000), "1ms": (spin_1ms, 200 if quick else 2000)}
    out = {}
    with MPIPoolExecutor() as ex:
        list(ex.map(tiny, range(100)))  # warm: workers up, the function resolved
        for name, (fn, n) in loads.items():
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                res = list(ex.map(fn, range(n)))
                times.append(time.perf_counter() - t0)
                if res != list(range(n)):
                    out[name] = {"broke": "wrong results"}
                    break
            else:
                out[name] = {"n": n, "median_s": statistics.median(times)}
    print("RESULT " + json.dumps(out), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--np", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--job", choices=["fpp", "mpi4py"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    reps = 1 if args.quick else args.reps
    if args.job:
        job(args.job, args.quick, reps)
        return 0
    mpirun = shutil.which("mpirun")
    if not mpirun:
        sys.exit("python_mpi.py: no mpirun (apt-get install openmpi-bin)")
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    here = os.path.abspath(__file__)
    results = {}
    for lib, launcher in (("fpp", "fpp.mpi"), ("mpi4py", "mpi4py.futures")):
        cmd = [mpirun, "--oversubscribe", "-np", str(args.np), sys.executable, "-m", launcher, here,
               "--job", lib, "--reps", str(reps)] + (["--quick"] if args.quick else [])
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
        line = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")]
        if p.returncode != 0 or not line:
            results[lib] = {"broke": "exit %d: %s" % (p.returncode, (p.stderr.strip().splitlines() or ["?"])[-1])}
        else:
            results[lib] = json.loads(line[0][7:])
        print("  %s job done in %.1f s" % (lib, time.perf_counter() - t0), file=sys.stderr)
    print("python_mpi.py: %d ranks (1 + %d serving), %d round(s)%s" % (args.np, args.np - 1, reps,
                                                                       " (--quick)" if args.quick else ""))
    print("%-16s %-5s %7s %10s" % ("executor", "load", "tasks", "tasks/s"))
    for lib in results:
        r = results[lib]
        if "broke" in r:
            print("%-16s BROKE: %s" % (lib, r["broke"]))
            continue
        for w, v in r.items():
            if "broke" in v:
                print("%-16s %-5s BROKE: %s" % (lib, w, v["broke"]))
            else:
                print("%-16s %-5s %7d %10.0f" % (lib, w, v["n"], v["n"] / v["median_s"]))
    print()
    print("Targets:")
    for w, target in (("tiny", 10), ("1ms", 1.5)):
        a, b = results.get("fpp", {}).get(w, {}), results.get("mpi4py", {}).get(w, {})
        if "median_s" in a and "median_s" in b:
            r = b["median_s"] / a["median_s"]
            print("  %-5s fpp.mpi / mpi4py.futures: %.2fx (target >= %gx): %s" % (w, r, target, "met" if r >= target else "NOT MET"))
        else:
            print("  %-5s: a side broke" % w)
    return 0 if "broke" not in results.get("fpp", {}) else 1


if __name__ == "__main__":
    sys.exit(main())
