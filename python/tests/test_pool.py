"""fpp.ProcessPool: submit, map, imap, imap_unordered with chunks, laziness, errors, threads.
(concurrent.futures behaviour: test_executor.py; CPython's own tests: test_cpython_executor.py.)"""
import concurrent.futures as cf
import gc
import os
import itertools
import multiprocessing
import threading
import time
from functools import partial

import pytest

import fpp
from fpp import _codec

from helpers import add, echo, fail_at, mark_and_sleep, segfault, sleep, square


def test_submit_and_result(pool):
    futs = [pool.submit(add, i, b=1) for i in range(1000)]
    assert [f.result() for f in futs] == list(range(1, 1001))
    assert all(f.done() for f in futs)
    assert pool.submit(echo, 1, x=2).result() == ((1,), {"x": 2})


def test_submit_any_picklable_callable(pool):
    assert pool.submit(partial(add, b=10), 1).result() == 11
    assert pool.submit(max, [3, 9, 2]).result() == 9
    assert pool.submit("{}-{}".format, 1, 2).result() == "1-2"


def test_future_api(pool):
    f = pool.submit(sleep, 0.2, "v")
    assert not f.done()
    seen = []
    f.add_done_callback(seen.append)
    assert f.result(timeout=5) == "v"
    assert seen == [f]
    assert f.exception() is None
    assert not f.cancel() and not f.cancelled()  # finished: too late
    g = pool.submit(fail_at, 1, 1)
    assert isinstance(g.exception(), KeyError)
    h = pool.submit(sleep, 1)
    with pytest.raises(TimeoutError):
        h.result(timeout=0.05)
    assert h.result() is None


def test_map_in_order_with_chunks(pool):
    for chunksize in (1, 7, 256, 5000):
        assert list(pool.map(square, range(3000), chunksize=chunksize)) == [i * i for i in range(3000)]
    assert list(pool.starmap(add, [(1, 2), (3, 4)], chunksize=2)) == [3, 7]
    assert list(pool.map(square, [])) == []


def test_imap_unordered(pool):
    out = list(pool.imap_unordered(square, range(5000), chunksize=64))
    assert sorted(out) == [i * i for i in range(5000)]


def test_chunks_travel_as_one_task_and_the_function_is_sent_once():
    # The function's reference is pickled once in the parent and cached...
    h = _codec.headers(square)
    assert _codec.headers(square) is h
    assert _codec.encode_chunk(square, [1, 2, 3], False)[:2] == [b"M", h]
    assert _codec.encode_call(square, (1,), {})[:2] == [b"C", h]
    with fpp.ProcessPool(1) as p:
        assert p.submit(square, 1).result() == 1
        before = p._mgr.stats()[0]
        assert sum(p.map(square, range(10_000), chunksize=1000)) == sum(i * i for i in range(10_000))
        assert p._mgr.stats()[0] - before == 10  # 10 chunks, 10 tasks
        for i in range(100):
            p.submit(square, i).result()
        # ...and the worker unpickled it once: square and _resolutions_seen, nothing else.
        assert p.submit(_resolutions_seen).result() == 2


def _resolutions_seen():
    from fpp import _codec as c

    return c._resolutions[0]


def test_map_is_lazy_and_stops_with_the_consumer(pool):
    pulled = []

    def numbers():
        for i in itertools.count():
            pulled.append(i)
            yield i

    it = pool.map(square, numbers(), chunksize=10)
    first = [next(it) for _ in range(100)]
    assert first == [i * i for i in range(100)]
    # Only about the backpressure window was read from the infinite input.
    assert len(pulled) <= 100 + pool.max_in_flight * 10 + 10
    it.close()
    assert pool.submit(square, 3).result() == 9


def test_map_raises_at_the_failing_item(pool):
    it = pool.map(fail_at, range(100), itertools.repeat(20), chunksize=8)
    got = []
    with pytest.raises(KeyError):
        for x in it:
            got.append(x)
    # Every item before the failing one (item 20, whose chunk starts at 16) came first.
    assert got == list(range(20))
    unordered = []
    with pytest.raises(KeyError):
        for x in pool.imap_unordered(_fail_at_2, range(5), chunksize=1):
            unordered.append(x)
    assert pool.submit(square, 2).result() == 4
    with pytest.raises(KeyError):  # starmap is multiprocessing's: a list, or the exception
        pool.starmap(fail_at, [(1, 2), (2, 2)])


def _fail_at_2(x):
    return fail_at(x, 2)


def test_map_with_a_crashing_chunk(pool):
    it = pool.map(_crash_at_3, range(8), chunksize=2)
    got = []
    with pytest.raises(fpp.WorkerCrashed):
        for x in it:
            got.append(x)
    assert got == [0, 1]
    assert list(pool.map(square, range(4))) == [0, 1, 4, 9]


def _crash_at_3(x):
    if x == 3:
        segfault()
    return x


def test_map_takes_any_picklable_callable(pool):
    assert list(pool.map(partial(add, b=1), range(3), chunksize=2)) == [1, 2, 3]
    assert list(pool.map(str, [1, 2])) == ["1", "2"]  # a class
    assert list(pool.imap_unordered(abs, [-1, -2], chunksize=2)) == [1, 2]
    with pytest.raises(fpp.FunctionNotInWorkers):
        pool.map(lambda x: x, range(3))


def test_many_futures_beyond_max_in_flight():
    with fpp.ProcessPool(2, max_in_flight=8) as p:
        futs = [p.submit(square, i) for i in range(1000)]
        assert [f.result() for f in futs] == [i * i for i in range(1000)]


def test_threads_share_a_pool(pool):
    results = {}

    def worker(k):
        results[k] = [pool.submit(add, i, k).result() for i in range(200)]

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(4):
        assert results[k] == [i + k for i in range(200)]


def test_close_then_join_finishes_pending_work(tmp_path):
    """multiprocessing.Pool's meaning: close() takes no more work, join() waits for what is
    pending (the 0.2 pool cancelled it)."""
    p = fpp.ProcessPool(1)
    futs = [p.submit(sleep, 0.05, i) for i in range(6)]
    p.close()
    with pytest.raises(RuntimeError, match="after shutdown"):
        p.submit(square, 1)
    p.join()
    assert [f.result(timeout=0) for f in futs] == list(range(6))


def test_join_needs_close_or_terminate_first(pool):
    with pytest.raises(ValueError, match="still running"):
        pool.join()


def test_terminate_cancels_pending_and_kills_running(tmp_path):
    marks = tmp_path / "started"
    p = fpp.ProcessPool(1)
    running = p.submit(mark_and_sleep, str(marks), 30)
    while not marks.exists():
        time.sleep(0.01)
    queued = [p.submit(mark_and_sleep, str(marks), 30) for _ in range(5)]
    t0 = time.monotonic()
    p.terminate()
    p.join()
    took = time.monotonic() - t0
    assert all(f.cancelled() for f in queued + [running])
    with pytest.raises(cf.CancelledError):
        running.result()
    assert len(marks.read_text().splitlines()) == 1  # the queued ones never started
    assert took < 20, took  # the 30 s task was killed, not waited for
    with pytest.raises(RuntimeError):
        p.submit(square, 1)


def test_context_manager_joins(pool):
    with fpp.ProcessPool(2) as p:
        futs = [p.submit(sleep, 0.05, i) for i in range(6)]
    assert [f.result() for f in futs] == list(range(6))


def test_options_are_validated():
    with pytest.raises(ValueError):
        fpp.ProcessPool(-1)
    with pytest.raises(fpp.FppError):
        fpp.ProcessPool(2000)
    with pytest.raises(fpp.FppError):
        fpp.ProcessPool(1, max_result_size=2 << 30)
    with pytest.raises(ValueError):
        fpp.ProcessPool(1, task_timeout=0)
    with pytest.raises(ValueError):
        fpp.ProcessPool(1, max_tasks_per_child=0)
    with pytest.raises(TypeError):
        fpp.ProcessPool(1, max_tasks_per_child=1.5)
    with pytest.raises(TypeError):
        fpp.ProcessPool(1, initializer=3)
    with pytest.raises(ValueError, match="'fork'"):
        fpp.ProcessPool(1, mp_context=multiprocessing.get_context("spawn"))
    with fpp.ProcessPool(1) as p, pytest.raises(ValueError, match="chunksize"):
        p.map(square, [1], chunksize=0)
    with pytest.raises(ValueError, match="kind"):
        fpp._fpp.Manager(kind="fork")


def test_worker_recycling(pool):
    with fpp.ProcessPool(1, max_tasks_per_child=5) as p:
        from helpers import pid

        pids = [p.submit(pid).result() for _ in range(20)]
    assert len(set(pids)) >= 4


def test_chunks_too_big_for_max_result_size_are_split():
    from helpers import big_result

    with fpp.ProcessPool(2, max_result_size=4 << 20) as p:
        sizes = [1 << 20] * 30 + [10] * 30
        out = list(p.map(big_result, sizes, chunksize=16))
        assert [len(b) for b in out] == sizes
        out = list(p.imap_unordered(big_result, sizes, chunksize=16))
        assert sorted(len(b) for b in out) == sorted(sizes)
        with pytest.raises(fpp.ResultTooBig, match="max_result_size"):
            list(p.map(big_result, [10, 5 << 20], chunksize=2))
        with pytest.raises(fpp.TaskFailed, match="max_result_size"):
            p.submit(big_result, 5 << 20).result()


def test_map_item_that_cannot_be_pickled_is_raised_and_the_pool_goes_on(pool):
    items = [1, 2, threading.Lock(), 4]
    with pytest.raises(TypeError, match="pickle"):
        list(pool.map(square, items))
    with pytest.raises(TypeError, match="pickle"):
        list(pool.map(square, items, chunksize=2))
    assert list(pool.map(square, range(300))) == [i * i for i in range(300)]  # refills in batches


def test_map_item_that_cannot_be_pickled_is_raised_at_its_position(pool):
    """As concurrent.futures: map() itself does not raise, the items before the bad one come
    out, then its exception (before: map() raised at once with 10 items, and with 1000 the
    chunks sent in the bad item's batch ran but their results were dropped: 383 of 500)."""
    for n, bad, chunksize, before in ((10, 5, 1, 5), (1000, 500, 1, 500), (10, 5, 4, 4)):
        items = list(range(n))
        items[bad] = threading.Lock()
        it = pool.map(square, items, chunksize=chunksize)
        got = []
        with pytest.raises(TypeError, match="pickle"):
            for r in it:
                got.append(r)
        assert got == [i * i for i in range(before)], (n, bad, chunksize)
    items = list(range(1000))
    items[500] = threading.Lock()
    got = []
    with pytest.raises(TypeError, match="pickle"):
        for r in pool.imap_unordered(square, items):
            got.append(r)
    assert sorted(got) == [i * i for i in range(500)]  # unordered: the ones before, then it
    assert list(pool.map(square, range(300))) == [i * i for i in range(300)]


@pytest.mark.parametrize("end", ["with", "close_join", "collected", "shutdown_nowait"])
def test_a_map_read_after_the_pool_ends_yields_everything(end):
    """The concurrent.futures idiom `with Pool() as p: it = p.map(...)`, then reading `it`:
    a map longer than the read-ahead window still yields every result (before: the first
    window's, part of them, then RuntimeError "cannot schedule new futures after shutdown").
    The workers stop once the map is read (the fixture checks none is left)."""
    n = 1000  # > max_in_flight (128): most of it is read after the pool ended
    if end == "with":
        with fpp.ProcessPool(2) as p:
            it = p.map(square, range(n))
    elif end == "close_join":
        p = fpp.ProcessPool(2)
        it = p.imap(square, range(n))
        p.close()
        p.join()
    elif end == "collected":
        it = fpp.ProcessPool(2).imap_unordered(square, range(n), chunksize=3)
        gc.collect()
    else:
        p = fpp.ProcessPool(2)
        it = p.map(square, range(n))
        p.shutdown(wait=False)
    assert sorted(it) == [i * i for i in range(n)]


def test_shutdown_does_not_wait_for_an_open_map_and_the_workers_stop_when_it_ends():
    """An endless map left open: shutdown(wait=True) waits for what was submitted, not for the
    map's input (it would never return); new work is refused; the map still reads on; the
    workers stop when it is closed."""
    from conftest import children

    before = children()
    p = fpp.ProcessPool(2)
    it = p.imap(square, itertools.count())
    assert next(it) == 0
    p.shutdown(wait=True)
    with pytest.raises(RuntimeError, match="after shutdown"):
        p.submit(square, 2)
    with pytest.raises(RuntimeError, match="after shutdown"):
        p.map(square, range(3))
    assert [next(it) for _ in range(500)] == [i * i for i in range(1, 501)]
    assert children() - before  # the workers serve the open map
    it.close()
    deadline = time.monotonic() + 10
    while children() - before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not children() - before


def test_starmap_chunksize_none_as_multiprocessing():
    with fpp.ProcessPool(2) as p:
        assert p.starmap(add, [(i, 1) for i in range(100)], None) == list(range(1, 101))
        assert p.starmap(add, iter([(i, 2) for i in range(10)]), None) == list(range(2, 12))


def test_a_program_ending_with_an_endless_map_open_exits():
    """At exit nobody reads an open map: it is closed, not run to its (endless) end."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import itertools, fpp
        from helpers import square
        p = fpp.ProcessPool(2)
        it = p.imap(square, itertools.count())
        assert next(it) == 0
        with fpp.ProcessPool(2) as q:
            it2 = q.map(square, itertools.count())
        assert next(it2) == 0
        print("end")
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, "-c", script], cwd=os.path.dirname(__file__), env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "end\n"
