"""fpp.ProcessPool is a concurrent.futures.Executor (issue 19, item 1): its futures are
concurrent.futures.Future (wait, as_completed, asyncio), cancel() is exact, shutdown/map/
initializer/max_tasks_per_child mean what they mean there, a crash fails one future and never
breaks the pool, and the program's exit waits for pending work as concurrent.futures' does.
The names shared with multiprocessing.Pool are in test_pool.py; CPython's own tests in
test_cpython_executor.py."""
import asyncio
import concurrent.futures as cf
import gc
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures.process import BrokenProcessPool

import pytest

import fpp

from conftest import children
from helpers import (add, fail_at, get_state, mark_and_sleep, pid, segfault, set_state, sleep,
                     square)


def _run(code, timeout=60):
    """Runs a Python program that imports fpp and the test helpers; (returncode, out, err)."""
    prog = "import sys\nsys.path.insert(0, %r)\n" % os.path.dirname(__file__) + textwrap.dedent(code)
    out = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, timeout=timeout,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    return out.returncode, out.stdout, out.stderr


def _started(path):
    return len(path.read_text().splitlines()) if path.exists() else 0


def _wait_until(cond, timeout=30):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in %s s" % timeout)
        time.sleep(0.005)


def test_is_an_executor_whose_futures_are_concurrent_futures(pool):
    assert isinstance(pool, cf.Executor)
    futs = [pool.submit(add, i, 1) for i in range(200)] + [pool.submit(fail_at, 3, 3)]
    assert all(isinstance(f, cf.Future) for f in futs)
    seen = set()
    for f in cf.as_completed(futs, timeout=60):  # raised "no attribute '_condition'" in 0.2
        seen.add(f)
    assert seen == set(futs)
    done, not_done = cf.wait(futs, return_when=cf.ALL_COMPLETED, timeout=60)
    assert done == set(futs) and not not_done
    assert [f.result() for f in futs[:200]] == list(range(1, 201))
    assert isinstance(futs[-1].exception(), KeyError)
    slow = pool.submit(sleep, 0.5, "late")
    first = pool.submit(square, 4)
    done, not_done = cf.wait([slow, first], return_when=cf.FIRST_COMPLETED, timeout=60)
    assert first in done and slow in not_done
    assert slow.result(timeout=60) == "late"


def test_asyncio_run_in_executor_and_wrap_future(pool):
    async def main():
        loop = asyncio.get_running_loop()
        a = await loop.run_in_executor(pool, square, 12)
        b = await asyncio.wrap_future(pool.submit(add, 1, 2))
        many = await asyncio.gather(*(loop.run_in_executor(pool, square, i) for i in range(50)))
        with pytest.raises(KeyError):
            await loop.run_in_executor(pool, fail_at, 1, 1)
        # Cancelling the asyncio side cancels the pool's task (it is queued behind two sleeps).
        blockers = [pool.submit(sleep, 0.5) for _ in range(2)]
        queued = pool.submit(square, 5)
        w = asyncio.wrap_future(queued)
        w.cancel()
        with pytest.raises(asyncio.CancelledError):
            await w
        await asyncio.wrap_future(blockers[1])
        return a, b, many, queued

    a, b, many, queued = asyncio.run(main())
    assert (a, b) == (144, 3)
    assert many == [i * i for i in range(50)]
    assert queued.cancelled()


def test_cancel_of_a_queued_task_returns_true_and_it_never_runs(tmp_path):
    marks = tmp_path / "started"
    with fpp.ProcessPool(1) as p:
        running = p.submit(mark_and_sleep, str(marks), 1)
        _wait_until(lambda: _started(marks) == 1)
        assert running.running()
        queued = [p.submit(mark_and_sleep, str(marks), 0) for _ in range(20)]
        assert not any(f.running() for f in queued)
        assert all(f.cancel() for f in queued[::2])  # every other one
        assert not running.cancel()  # started: not cancelled, as concurrent.futures
        assert all(f.cancelled() and f.done() for f in queued[::2])
        with pytest.raises(cf.CancelledError):
            queued[0].result()
        assert running.result(timeout=60) is None
        for f in queued[1::2]:
            assert f.result(timeout=60) is None
    assert _started(marks) == 1 + 10  # the cancelled ten never started
    assert not running.cancelled()


def test_cancelled_futures_wake_wait_and_as_completed(pool):
    blockers = [pool.submit(sleep, 0.3) for _ in range(2)]
    queued = pool.submit(square, 3)
    done = []
    t = threading.Thread(target=lambda: done.extend(cf.as_completed([queued], timeout=60)))
    t.start()
    assert queued.cancel()
    t.join(30)
    assert done == [queued]
    assert cf.wait([queued], timeout=0).done == {queued}
    cf.wait(blockers)


def test_cancel_races_with_the_workers(pool):
    """Many cancels while the workers take tasks: each future is either cancelled (and its
    task did not run) or has its result, never both, never neither."""
    for _ in range(3):
        futs = [pool.submit(square, i) for i in range(2000)]
        cancelled = [f for f in futs[::3] if f.cancel()]
        for i, f in enumerate(futs):
            if f in cancelled:
                assert f.cancelled()
            else:
                assert f.result(timeout=60) == i * i
        assert cancelled  # some were still queued


def test_submit_and_cancel_from_many_threads(pool):
    results = {}

    def worker(k):
        futs = [pool.submit(add, i, k) for i in range(300)]
        for f in futs[::7]:
            f.cancel()
        results[k] = [(f.cancelled(), None if f.cancelled() else f.result(timeout=60)) for f in futs]

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(4):
        for i, (c, r) in enumerate(results[k]):
            assert c or r == i + k


def test_a_segfault_fails_only_its_future_and_the_pool_is_never_broken(pool):
    futs = [pool.submit(square, i) for i in range(50)]
    bad = [pool.submit(segfault) for _ in range(3)]
    more = [pool.submit(square, i) for i in range(50)]
    for b in bad:
        e = b.exception(timeout=60)
        assert isinstance(e, fpp.WorkerCrashed) and e.signal_name == "SIGSEGV"
        assert isinstance(e, BrokenProcessPool)  # what concurrent.futures code catches
    assert [f.result() for f in futs + more] == [i * i for i in range(50)] * 2
    assert pool.submit(square, 9).result() == 81


def test_a_worker_killed_from_outside_fails_only_its_task(pool, tmp_path):
    marks = tmp_path / "started"
    victim = pool.submit(mark_and_sleep, str(marks), 30)
    _wait_until(lambda: _started(marks) == 1)
    others = [pool.submit(sleep, 0.2, i) for i in range(6)]
    busy_pid = int(marks.read_text().split()[1])
    os.kill(busy_pid, signal.SIGKILL)  # as the OOM killer or an operator would
    e = victim.exception(timeout=60)
    assert isinstance(e, fpp.WorkerCrashed) and "SIGKILL" in str(e)
    assert [f.result(timeout=60) for f in others] == list(range(6))
    assert pool.submit(square, 5).result(timeout=60) == 25


def test_map_has_concurrent_futures_meaning(pool):
    assert list(pool.map(pow, range(10), range(10))) == [i ** i for i in range(10)]
    assert list(pool.map(pow, range(10), range(10), chunksize=3)) == [i ** i for i in range(10)]
    assert list(pool.map(pow, range(5), range(100))) == [i ** i for i in range(5)]  # zip's end
    assert list(pool.map(square, [])) == []
    it = pool.map(divmod, [1, 1, 1, 1], [2, 3, 0, 5])
    assert next(it) == (0, 1) and next(it) == (0, 1)
    with pytest.raises(ZeroDivisionError):
        next(it)
    with pytest.raises(StopIteration):  # a raised map is over
        next(it)
    t0 = time.monotonic()
    got = []
    with pytest.raises(TimeoutError):  # from the call of map(), not from each next()
        for r in pool.map(sleep, [0, 0, 3], timeout=1):
            got.append(r)
    assert got == [None, None]
    assert time.monotonic() - t0 < 2.9


def test_map_submits_its_first_window_when_called(tmp_path):
    marks = tmp_path / "started"
    with fpp.ProcessPool(2) as p:
        it = p.map(mark_and_sleep, [str(marks)] * 4, [0] * 4)
        _wait_until(lambda: _started(marks) == 4)  # ran without anyone iterating
        assert list(it) == [None] * 4


def test_shutdown_waits_and_refuses_new_work():
    p = fpp.ProcessPool(2)
    futs = [p.submit(sleep, 0.1, i) for i in range(6)]
    p.shutdown(wait=True)
    assert all(f.done() for f in futs)
    assert [f.result() for f in futs] == list(range(6))
    with pytest.raises(RuntimeError, match="after shutdown"):
        p.submit(square, 1)
    with pytest.raises(RuntimeError, match="after shutdown"):
        p.map(square, [1])
    p.shutdown()  # again: nothing


def test_shutdown_without_wait_returns_at_once_and_work_finishes():
    p = fpp.ProcessPool(2)
    futs = [p.submit(sleep, 0.3, i) for i in range(4)]
    t0 = time.monotonic()
    p.shutdown(wait=False)
    assert time.monotonic() - t0 < 0.25
    assert [f.result(timeout=60) for f in futs] == list(range(4))


def test_shutdown_cancel_futures(tmp_path):
    marks = tmp_path / "started"
    p = fpp.ProcessPool(2)
    futs = [p.submit(mark_and_sleep, str(marks), 0.2) for _ in range(30)]
    _wait_until(lambda: _started(marks) >= 1)
    p.shutdown(wait=True, cancel_futures=True)
    cancelled = [f for f in futs if f.cancelled()]
    ran = [f for f in futs if not f.cancelled()]
    assert len(cancelled) >= 20
    assert all(f.done() and f.exception() is None for f in ran)
    assert _started(marks) == len(ran)  # what was cancelled never started


def test_with_block_shuts_down_and_waits(tmp_path):
    with fpp.ProcessPool(2) as p:
        futs = [p.submit(sleep, 0.05, i) for i in range(6)]
    assert [f.result(timeout=0) for f in futs] == list(range(6))


def test_initializer_runs_in_every_worker_and_replacement():
    with fpp.ProcessPool(2, initializer=set_state, initargs=("initialized",), max_tasks_per_child=2) as p:
        assert [p.submit(get_state).result() for _ in range(10)] == ["initialized"] * 10
    assert get_state() == "unset"  # in the workers only


def test_failing_initializer_is_raised_once(caplog):
    """The pool cannot start: the constructor raises the initializer's error (a
    BrokenProcessPool, as concurrent.futures' pool would break), and nothing is logged."""
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(fpp.InitializerFailed) as info:
            fpp.ProcessPool(2, initializer=fail_at, initargs=(1, 1))
    assert isinstance(info.value, BrokenProcessPool)
    assert "KeyError" in str(info.value) and "item 1" in str(info.value)
    assert not [r for r in caplog.records if r.name.startswith("fpp")], caplog.text


def test_initializer_must_be_sendable():
    with pytest.raises(TypeError):
        fpp.ProcessPool(1, initializer="no")
    with pytest.raises(fpp.FunctionNotInWorkers):
        fpp.ProcessPool(1, initializer=lambda: None)


def test_max_tasks_per_child_replaces_workers():
    with fpp.ProcessPool(1, max_tasks_per_child=3) as p:
        pids = [p.submit(pid).result() for _ in range(9)]
    assert pids[0] == pids[1] == pids[2] != pids[3]
    assert len(set(pids)) == 3


def test_worker_traceback_is_the_cause(pool):
    """CPython's test_traceback, but for fpp's cause class."""
    with pytest.raises(KeyError) as info:
        pool.submit(fail_at, 7, 7).result()
    exc = info.value
    assert type(exc) is KeyError and exc.args == ("item 7",)
    assert isinstance(exc.__cause__, fpp.RemoteTraceback)
    assert 'raise KeyError("item %d" % x)' in exc.__cause__.tb
    import io
    from contextlib import redirect_stderr

    buf = io.StringIO()
    with redirect_stderr(buf):
        try:
            raise exc
        except KeyError:
            sys.excepthook(*sys.exc_info())
    assert 'raise KeyError("item %d" % x)' in buf.getvalue()


def test_pickling_errors_are_the_futures(pool):
    f = pool.submit(len, threading.Lock())
    with pytest.raises(TypeError, match="pickle"):
        f.result()
    with pytest.raises(fpp.FunctionNotInWorkers):
        pool.submit(lambda: 1).result()
    assert pool.submit(square, 2).result() == 4


def test_argument_too_big_is_raised_once_not_logged(caplog):
    with fpp.ProcessPool(1, max_arg_size=1 << 16) as p:
        with caplog.at_level(logging.DEBUG):
            f = p.submit(len, b"x" * 100000)
            with pytest.raises(fpp.ArgumentTooBig) as info:
                f.result()
    assert "100016 bytes" in str(info.value) or "over max_arg_size" in str(info.value)
    assert "max_arg_size (65536 bytes)" in str(info.value)  # fpp's own line, in the exception
    assert not [r for r in caplog.records if r.name.startswith("fpp")], caplog.text


def test_bad_options_are_raised_once_not_logged(caplog):
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(fpp.FppError, match="at most 1 GiB"):
            fpp.ProcessPool(1, max_result_size=2 << 30)
    assert not [r for r in caplog.records if r.name.startswith("fpp")], caplog.text


def test_a_pool_dropped_without_shutdown_stops_its_workers():
    before = children()
    p = fpp.ProcessPool(2)
    assert p.submit(square, 3).result() == 9
    assert children() - before
    del p
    gc.collect()
    _wait_until(lambda: not (children() - before))


def test_interpreter_exit_finishes_pending_work():
    rc, out, err = _run("""
        import fpp
        from helpers import sleep
        p = fpp.ProcessPool(2)
        f = p.submit(print, "apple")
        g = p.submit(sleep, 0.5)
        g.add_done_callback(lambda f: print("done", flush=True))
    """)
    assert rc == 0, err
    assert "apple" in out and "done" in out
    assert not err


def test_submit_after_interpreter_shutdown():
    rc, out, err = _run("""
        import atexit
        def late():
            try:
                pool.submit(id, 42)
            except RuntimeError as e:
                print("runtime-error:", e)
        atexit.register(late)  # runs after fpp's own exit handler
        import fpp
        pool = fpp.ProcessPool(2)
        pool.submit(id, 1).result()
    """)
    assert rc == 0, err
    assert "runtime-error: cannot schedule new futures after interpreter shutdown" in out


def test_shutdown_without_wait_exits_cleanly():
    rc, out, err = _run("""
        import fpp, time
        from helpers import sleep
        t = fpp.ProcessPool(3)
        t.submit(sleep, 1.0)
        t.submit(print, "apple")
        t.shutdown(wait=False)
    """)
    assert rc == 0, err
    assert out.strip() == "apple"
    assert not err


def test_a_forked_child_cannot_use_the_parents_pool_and_exits_cleanly(pool):
    assert pool.submit(square, 2).result() == 4
    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # the child: a clear error, then a normal exit (atexit handlers run)
        os.close(r)
        try:
            pool.submit(square, 3)
            msg = b"no error"
        except RuntimeError as e:
            msg = str(e).encode()
        os.write(w, msg)
        os.close(w)
        import atexit

        atexit._run_exitfuncs()  # what a normal exit runs: fpp's exit handler included
        os._exit(0)
    os.close(w)
    msg = os.read(r, 1000)
    os.close(r)
    deadline = time.monotonic() + 30
    while True:
        pid, status = os.waitpid(child, os.WNOHANG)
        if pid:
            break
        assert time.monotonic() < deadline, "the forked child hangs at exit"
        time.sleep(0.01)
    assert b"belongs to another process" in msg, msg
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert pool.submit(square, 5).result() == 25  # the parent's pool is untouched
