#!/usr/bin/env python3
"""peers.py EXECUTOR WORKLOAD WORKERS TASKS SPIN_PER_US

Runs one fpp-bench configuration on a Python peer and prints one line:
secs p50_us p99_us rss_mib cpu_parent_s cpu_workers_s failed broken

broken is 1 when the pool itself broke (concurrent.futures' BrokenProcessPool: one crash and
every task after it fails): fpp-bench then prints that it broke, and no rate.

EXECUTOR: cf-process (concurrent.futures.ProcessPoolExecutor, submit per task),
cf-thread (ThreadPoolExecutor, submit per task), mp-imap (multiprocessing.Pool.imap_unordered,
chunksize 1). WORKLOAD: noop, spin:US, bytes:N, mixed, crashy:P, the same bodies as
fpp-bench's (spin is a loop of SPIN_PER_US iterations per microsecond in C; in Python it is
timed on perf_counter, since Python's loop is far slower).
"""
import concurrent.futures as cf
import multiprocessing as mp
import os
import resource
import signal
import sys
import time

W = None


def mixed_us(i):
    h = (i * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    r = (h >> 54) % 1000
    return 20 if r < 900 else 200 if r < 990 else 5000


def crashy_hit(i, p):
    h = ((i + 1) * 0xD1B54A32D192ED03) & 0xFFFFFFFFFFFFFFFF
    return (h >> 11) / 9007199254740992.0 < p


def spin(us):
    end = time.perf_counter() + us / 1e6
    while time.perf_counter() < end:
        pass


def body(seq):
    kind, param = W
    if kind == "spin":
        spin(param)
    elif kind == "bytes":
        return bytes(int(param))
    elif kind == "mixed":
        spin(mixed_us(seq))
    elif kind == "crashy" and crashy_hit(seq, param):
        os.kill(os.getpid(), signal.SIGSEGV)
    return seq


def init(w):
    global W
    W = w


def main():
    global W
    ex_name, wl, workers, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    kind, _, param = wl.partition(":")
    W = (kind, float(param) if param else 0.0)
    failed = 0
    broken = False
    lat = []
    if ex_name in ("cf-process", "cf-thread"):
        pool = (cf.ProcessPoolExecutor(workers, initializer=init, initargs=(W,))
                if ex_name == "cf-process" else cf.ThreadPoolExecutor(workers))
        for i in range(min(200, n)):
            t0 = time.perf_counter()
            try:
                pool.submit(body, 10**9 + i).result()
            except cf.process.BrokenProcessPool:
                broken = True
                break
            except Exception:
                break
            lat.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        futs = []
        try:
            for i in range(n):
                futs.append(pool.submit(body, i))
        except cf.process.BrokenProcessPool:  # one crash breaks the whole pool
            broken = True
            failed += n - len(futs)
        for f in cf.as_completed(futs):
            try:
                f.result()
            except cf.process.BrokenProcessPool:
                broken = True
                failed += 1
            except Exception:
                failed += 1
        secs = time.perf_counter() - t0
        pool.shutdown(wait=True, cancel_futures=True)
    elif ex_name == "mp-imap":
        if kind == "crashy":  # a task whose worker died never comes back: imap would hang forever
            sys.exit(3)
        with mp.Pool(workers, initializer=init, initargs=(W,)) as pool:
            for i in range(min(200, n)):
                t0 = time.perf_counter()
                list(pool.imap_unordered(body, [10**9 + i], chunksize=1))
                lat.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for _ in pool.imap_unordered(body, range(n), chunksize=1):
                pass
            secs = time.perf_counter() - t0
    else:
        sys.exit("unknown executor " + ex_name)
    lat.sort()
    self_ru = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    p50 = lat[len(lat) // 2] * 1e6 if lat else 0.0
    p99 = lat[len(lat) * 99 // 100] * 1e6 if lat else 0.0
    print("%.6f %.2f %.2f %.2f %.3f %.3f %d %d" % (
        secs, p50, p99, self_ru.ru_maxrss / 1024.0,
        self_ru.ru_utime + self_ru.ru_stime, kids.ru_utime + kids.ru_stime, failed, int(broken)))


if __name__ == "__main__":
    main()
