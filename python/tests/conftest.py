"""Shared fixtures: executors of both kinds, and a check after every test that no worker
process is left behind by a pool the test closed (or forgot: those are closed here)."""
import gc
import os
import sys
import time

import pytest

import fpp
import fpp._driver
import fpp.futureproof as futureproof

# The tests import helper functions from here: workers are forked when a pool is created, and
# these modules are imported at collection, long before.
sys.path.insert(0, os.path.dirname(__file__))

WORKERS = 2


def children():
    """Pids of this process's children (from every thread: the supervisor forks them)."""
    pids = set()
    base = "/proc/%d/task" % os.getpid()
    for tid in os.listdir(base):
        try:
            with open("%s/%s/children" % (base, tid)) as f:
                pids.update(int(p) for p in f.read().split())
        except OSError:
            pass
    return pids


@pytest.fixture(autouse=True)
def no_workers_left():
    before = children()
    yield
    gc.collect()
    for d in list(fpp._driver.drivers):  # the collectors a test left running are stopped
        d.terminate()
    for mgr in list(fpp._live):
        mgr.close()
    deadline = time.monotonic() + 5
    while children() - before and time.monotonic() < deadline:
        time.sleep(0.01)
    left = children() - before
    assert not left, "worker processes left behind: %s" % sorted(left)


@pytest.fixture(params=["thread", "process"])
def kind(request):
    return request.param


@pytest.fixture
def executor(kind):
    cls = futureproof.ThreadPoolExecutor if kind == "thread" else futureproof.ProcessPoolExecutor
    ex = cls(max_workers=WORKERS)
    yield ex
    ex.shutdown()


@pytest.fixture
def process_executor():
    ex = futureproof.ProcessPoolExecutor(max_workers=WORKERS)
    yield ex
    ex.shutdown()


@pytest.fixture
def pool():
    p = fpp.ProcessPool(WORKERS)
    yield p
    p.shutdown()
