"""Process pools: crash isolation, exceptions coming back as themselves, what cannot be sent
to a worker and why, files opened before the pool, timeouts and size limits."""
import logging
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

import fpp
import fpp.futureproof as futureproof

import helpers
from helpers import (
    big_result, fail_at, hard_exit, kill_self, log_to, pid, raise_lock_error,
    raise_unpicklable, return_lock, segfault, sleep, square, sys_exit,
)


def test_segfault_and_exit_fail_only_their_tasks(process_executor):
    with futureproof.TaskManager(process_executor, error_policy="ignore") as tm:
        tm.map(square, range(50))
        tm.submit(segfault, 1)
        tm.map(square, range(50, 100))
        tm.submit(hard_exit, 3)
        tm.map(square, range(100, 150))
    by_fn = {}
    for t in tm.completed_tasks:
        by_fn.setdefault(t.fn.__name__, []).append(t)
    assert sorted(t.result for t in by_fn["square"]) == [i * i for i in range(150)]
    (seg,) = by_fn["segfault"]
    assert isinstance(seg.result, fpp.WorkerCrashed)
    assert seg.result.signal == signal.SIGSEGV
    assert seg.result.signal_name == "SIGSEGV"
    assert "SIGSEGV" in str(seg.result)
    (ex,) = by_fn["hard_exit"]
    assert isinstance(ex.result, fpp.WorkerCrashed)
    assert ex.result.signal == 0
    assert "exited with status 3" in str(ex.result)


def test_crash_under_raise_policy_raises_worker_crashed(process_executor):
    with pytest.raises(fpp.WorkerCrashed, match="SIGSEGV"):
        with futureproof.TaskManager(process_executor) as tm:
            tm.submit(segfault)
    # The executor goes on.
    with futureproof.TaskManager(process_executor) as tm:
        tm.map(square, range(10))
    assert sorted(tm.results) == [i * i for i in range(10)]


def test_crash_in_process_pool(pool):
    futs = [pool.submit(square, i) for i in range(20)]
    bad = pool.submit(kill_self, signal.SIGKILL)
    futs += [pool.submit(square, i) for i in range(20, 40)]
    assert [f.result() for f in futs] == [i * i for i in range(40)]
    with pytest.raises(fpp.WorkerCrashed) as info:
        bad.result()
    assert info.value.signal == signal.SIGKILL
    assert pool.submit(square, 9).result() == 81


def test_exception_comes_back_as_itself(kind):
    ex = futureproof.ProcessPoolExecutor(max_workers=2) if kind == "process" else futureproof.ThreadPoolExecutor(max_workers=2)
    try:
        tm = futureproof.TaskManager(ex)
        tm.submit(fail_at, 7, 7)
        with pytest.raises(KeyError) as info:
            tm.run()
    finally:
        ex.shutdown()
    exc = info.value
    assert type(exc) is KeyError
    assert exc.args == ("item 7",)
    if kind == "process":
        assert isinstance(exc.__cause__, fpp.RemoteTraceback)
        text = exc.__cause__.tb
    else:
        import traceback

        text = "".join(traceback.format_exception(exc))
    assert "in fail_at" in text and "KeyError: 'item 7'" in text


def test_traceback_text_is_printed_with_the_exception(pool):
    with pytest.raises(ValueError) as info:
        pool.submit(helpers.flaky_sum, 5, 1).result()
    import traceback

    printed = "".join(traceback.format_exception(info.value))
    assert "Traceback (most recent call last)" in printed
    assert "in flaky_sum" in printed
    assert "ValueError: 5 is a multiple of 5" in printed


def test_exceptions_that_cannot_travel(pool):
    with pytest.raises(fpp.RemoteError) as info:
        pool.submit(raise_unpicklable, 1).result()
    assert info.value.type_name.endswith("Unpicklable")
    assert "1/2" in str(info.value)
    assert "in raise_unpicklable" in info.value.tb
    # An exception carrying something unpicklable is sent as text too.
    with pytest.raises(fpp.RemoteError, match="carries a lock"):
        pool.submit(raise_lock_error, 1).result()
    # A result that cannot be pickled fails the task with the reason.
    with pytest.raises(TypeError, match="pickle"):
        pool.submit(return_lock, 1).result()


def test_system_exit_in_a_task_is_its_exception(pool):
    with pytest.raises(SystemExit) as info:
        pool.submit(sys_exit, 4).result()
    assert info.value.code == 4
    assert pool.submit(square, 3).result() == 9


def test_lambda_is_refused_at_submit_with_a_clear_error(process_executor, pool):
    tm = futureproof.TaskManager(process_executor)
    with pytest.raises(fpp.FunctionNotInWorkers, match="lambda"):
        tm.submit(lambda x: x, 1)
    with pytest.raises(fpp.FunctionNotInWorkers, match="lambda"):
        tm.map(lambda x: x, range(3))
    # As concurrent.futures: what cannot be pickled is the future's exception.
    with pytest.raises(fpp.FunctionNotInWorkers, match="lambda"):
        pool.submit(lambda: 1).result()

    def local(x):
        return x

    with pytest.raises(fpp.FunctionNotInWorkers, match="inside other functions"):
        pool.submit(local, 1).result()
    with pytest.raises(pickle.PicklingError):  # it is also a PicklingError, as multiprocessing's
        list(pool.map(local, [1]))


def test_function_defined_after_the_pool_is_a_clear_error(tmp_path):
    """A function that did not exist when the pool was created cannot run in its workers."""
    script = tmp_path / "late.py"
    script.write_text(textwrap.dedent("""
        import fpp, sys
        pool = fpp.ProcessPool(2)
        def late(x):
            return x
        try:
            pool.submit(late, 1).result()
        except fpp.FunctionNotInWorkers as e:
            print("REFUSED", e)
        def late(x):  # redefined: the workers would run the old one
            return -x
        pool.close()
        def early(x):
            return x + 1
        pool = fpp.ProcessPool(2)
        print("EARLY", pool.submit(early, 1).result())
        def early(x):
            return x + 2
        try:
            pool.submit(early, 1).result()
        except fpp.FunctionNotInWorkers as e:
            print("REDEFINED", e)
        pool.close()
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert out.returncode == 0, out.stderr
    assert "REFUSED" in out.stdout and "does not exist in this worker process" in out.stdout
    assert "forked when the pool is created" in out.stdout
    assert "EARLY 2" in out.stdout
    assert "REDEFINED" in out.stdout and "was redefined after the pool was created" in out.stdout


def test_file_handler_opened_before_the_pool_logs_from_a_task(tmp_path):
    path = tmp_path / "tasks.log"
    handler = logging.FileHandler(path)
    log = logging.getLogger("fpp.test.filehandler")
    log.addHandler(handler)
    log.propagate = False
    try:
        ex = futureproof.ProcessPoolExecutor(max_workers=2)
        try:
            with futureproof.TaskManager(ex) as tm:
                for i in range(10):
                    tm.submit(log_to, "fpp.test.filehandler", "message %d" % i)
        finally:
            ex.shutdown()
    finally:
        log.removeHandler(handler)
        handler.close()
    text = path.read_text()
    worker_pids = set(tm.results)
    assert os.getpid() not in worker_pids
    for i in range(10):
        assert "message %d from pid" % i in text
    assert all(("pid %d" % p) in text for p in worker_pids)


def test_keep_fds_false_closes_descriptors():
    r, w = os.pipe()  # open before the pools: kept by default, closed with keep_fds=False
    try:
        with fpp.ProcessPool(1, keep_fds=False) as p:
            with pytest.raises(OSError):
                p.submit(os.fstat, w).result()
        with fpp.ProcessPool(1) as p:
            assert p.submit(os.fstat, w).result().st_mode == os.fstat(w).st_mode
    finally:
        os.close(r)
        os.close(w)


def test_task_timeout_kills_the_task():
    ex = futureproof.ProcessPoolExecutor(max_workers=2, task_timeout=0.3)
    try:
        with futureproof.TaskManager(ex, error_policy="ignore") as tm:
            tm.submit(sleep, 30)
            tm.map(square, range(10))
    finally:
        ex.shutdown()
    slow = [t for t in tm.completed_tasks if t.fn is sleep][0]
    assert isinstance(slow.result, fpp.TaskTimeout)
    assert isinstance(slow.result, TimeoutError)
    assert sorted(t.result for t in tm.completed_tasks if t.fn is square) == [i * i for i in range(10)]


def test_result_and_argument_size_limits():
    with fpp.ProcessPool(1, max_result_size=1 << 16, max_arg_size=1 << 16) as p:
        assert len(p.submit(big_result, 60000).result()) == 60000
        with pytest.raises(fpp.TaskFailed, match="exceeds max_result_size"):
            p.submit(big_result, 70000).result()
        with pytest.raises(fpp.ArgumentTooBig, match="max_arg_size"):
            p.submit(len, b"x" * 70000).result()
        assert p.submit(len, b"x" * 1000).result() == 1000
    ex = futureproof.ProcessPoolExecutor(max_workers=1, max_arg_size=1 << 16)
    try:
        with futureproof.TaskManager(ex, error_policy="ignore") as tm:
            tm.submit(len, b"x" * 70000)
            tm.submit(len, b"x" * 10)
        assert sorted(map(type, tm.results), key=str) == sorted([fpp.ArgumentTooBig, int], key=str)
    finally:
        ex.shutdown()


def test_one_megabyte_results(pool):
    out = list(pool.imap_unordered(big_result, [1 << 20] * 20))
    assert len(out) == 20 and all(len(b) == 1 << 20 for b in out)


def test_fork_while_another_thread_holds_the_gil(process_executor):
    """The prototype hung forking a worker while another Python thread held the GIL: crashes
    force respawns while a busy thread competes for the GIL the whole time."""
    stop = threading.Event()

    def spin():
        n = 0
        while not stop.is_set():
            n += 1

    t = threading.Thread(target=spin)
    t.start()
    try:
        with futureproof.TaskManager(process_executor, error_policy="ignore") as tm:
            for i in range(20):
                tm.submit(segfault)
                tm.map(square, range(20))
        crashed = [r for r in tm.results if isinstance(r, fpp.WorkerCrashed)]
        assert len(crashed) == 20
        assert len(tm.results) == 20 * 21
    finally:
        stop.set()
        t.join()


def test_pool_created_from_a_thread_serves_the_main_thread():
    box = {}

    def make():
        box["pool"] = fpp.ProcessPool(2)

    t = threading.Thread(target=make)
    t.start()
    t.join()
    p = box["pool"]
    try:
        assert [p.submit(square, i).result() for i in range(5)] == [0, 1, 4, 9, 16]
        assert p.submit(segfault).exception() is not None
        assert p.submit(square, 5).result() == 25
    finally:
        p.close()


def test_workers_are_processes_of_their_own(pool):
    pids = {pool.submit(pid).result() for _ in range(20)}
    assert os.getpid() not in pids


def test_task_output_reaches_a_pipe_once():
    """Output a task prints reaches a pipe (flushed after every task), and what the parent had
    buffered before the fork is not written again by the workers."""
    script = textwrap.dedent("""
        import sys
        sys.path.insert(0, %r)
        import fpp
        from helpers import shout
        print("before the pool")  # stdout is a pipe: this sits in the buffer
        with fpp.ProcessPool(2) as p:
            assert sum(f.result() for f in [p.submit(shout, i) for i in range(20)]) == 190
        print("after the pool")
    """ % os.path.dirname(__file__))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("before the pool") == 1
    assert out.stdout.count("after the pool") == 1
    for i in range(20):
        assert out.stdout.count("task %d says hello" % i) == 1


def test_a_task_that_breaks_its_stdio_breaks_it_for_itself_alone(tmp_path):
    """A task that closes sys.stdout, closes descriptors 1 and 2, or replaces sys.stderr leaves
    the next task in the same worker printing as before: the worker's stdio is put back after
    every task (issue 16 item 14)."""
    script = tmp_path / "stdio.py"
    script.write_text(textwrap.dedent("""
        import io, os, sys
        import fpp

        def close_sys_stdout():
            sys.stdout.close()
            return os.getpid()

        def close_fds():
            os.close(1)
            os.close(2)
            return os.getpid()

        def redirect_fd1():
            fd = os.open(os.devnull, os.O_WRONLY)
            os.dup2(fd, 1)
            os.close(fd)
            return os.getpid()

        def replace_sys_stderr():
            sys.stderr = io.StringIO()
            return os.getpid()

        def say(what):
            print("OUT after", what)
            print("ERR after", what, file=sys.stderr)
            return os.getpid()

        with fpp.ProcessPool(1) as p:
            pids = set()
            for breaker in (close_sys_stdout, close_fds, redirect_fd1, replace_sys_stderr):
                pids.add(p.submit(breaker).result())
                pids.add(p.submit(say, breaker.__name__).result())
            print("WORKERS", len(pids))
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert out.returncode == 0, out.stderr
    for what in ("close_sys_stdout", "close_fds", "redirect_fd1", "replace_sys_stderr"):
        assert "OUT after %s" % what in out.stdout, out.stdout
        assert "ERR after %s" % what in out.stderr, out.stderr
    assert "WORKERS 1" in out.stdout, "one worker ran them all: nothing crashed"
