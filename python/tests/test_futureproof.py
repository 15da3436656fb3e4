"""fpp.futureproof behaves as futureproof 0.3.1 documents, on both executors."""
import concurrent.futures as cf
import itertools
import logging
import re
import threading
import time
from functools import partial

import pytest

import fpp.futureproof as futureproof
from fpp.futureproof import executors, task_manager

from helpers import (add, echo, fail_at, flaky_sum, get_state, mark_and_sleep, set_state, sleep,
                     square)
from helpers import pid as pid_of


def test_module_layout_and_logger_names():
    assert futureproof.TaskManager is task_manager.TaskManager
    assert futureproof.ErrorPolicyEnum is task_manager.ErrorPolicyEnum
    assert futureproof.ThreadPoolExecutor is executors.ThreadPoolExecutor
    assert futureproof.ProcessPoolExecutor is executors.ProcessPoolExecutor
    # Code written against futureproof configures its loggers by these names.
    assert task_manager.logger is logging.getLogger("futureproof.task_manager")
    assert executors.logger is logging.getLogger("futureproof.executors")
    assert task_manager.logger.parent is logging.getLogger("futureproof")


def test_ten_thousand_tasks_right(executor):
    with futureproof.TaskManager(executor) as tm:
        for i in range(10_000):
            tm.submit(add, i, 1)
    assert sorted(tm.results) == list(range(1, 10_001))
    assert len(tm.completed_tasks) == 10_000
    assert all(t.complete for t in tm.completed_tasks)
    for t in tm.completed_tasks[:100]:
        assert t.result == t.args[0] + 1


def test_raise_immediate_exceptions(executor):
    tm = futureproof.TaskManager(executor)
    tm.submit(add, 1)
    with pytest.raises(TypeError) as info:
        tm.run()
    assert "add() missing 1 required positional argument: 'b'" == str(info.value)


def test_context_manager_raises(executor):
    with pytest.raises(TypeError) as info:
        with futureproof.TaskManager(executor) as tm:
            tm.submit(add, 1)
    assert "missing 1 required positional argument" in str(info.value)


def test_log_policy_reports_through_task_manager_logger(executor, mocker):
    mock_logger = mocker.patch("fpp.futureproof.task_manager.logger")
    with futureproof.TaskManager(executor, error_policy=futureproof.ErrorPolicyEnum.LOG) as tm:
        tm.submit(add, 1)
        tm.submit(add, 1, 2)
    assert mock_logger.exception.call_count == 1
    args, kwargs = mock_logger.exception.call_args
    assert isinstance(kwargs["exc_info"], TypeError)
    assert "raised an exception" in args[0]
    assert sorted(r for r in tm.results if not isinstance(r, Exception)) == [3]


def test_log_policy_output(executor, caplog):
    with caplog.at_level(logging.ERROR, logger="futureproof.task_manager"):
        with futureproof.TaskManager(executor, error_policy="log") as tm:
            tm.map(fail_at, [(1, 2), (2, 2), (3, 2)])
    records = [r for r in caplog.records if r.name == "futureproof.task_manager"]
    assert len(records) == 1
    assert "KeyError" in caplog.text and "item 2" in caplog.text
    assert len(tm.results) == 3


def test_ignore_policy_keeps_exceptions_on_tasks(executor, mocker):
    mock_logger = mocker.patch("fpp.futureproof.task_manager.logger")
    with futureproof.TaskManager(executor, error_policy="ignore") as tm:
        for i in range(1, 11):
            tm.submit(flaky_sum, i, 1)
    assert mock_logger.exception.call_count == 0
    failed = [t for t in tm.completed_tasks if isinstance(t.result, Exception)]
    assert sorted(t.args[0] for t in failed) == [5, 10]
    assert all(isinstance(t.result, ValueError) for t in failed)
    assert sorted(t.result for t in tm.completed_tasks if t not in failed) == [2, 3, 4, 5, 7, 8, 9, 10]


def test_raise_policy_stops_at_once(executor):
    tm = futureproof.TaskManager(executor)
    for i in range(1, 101):
        tm.submit(flaky_sum, i, 1, delay=0.05)
    with pytest.raises(ValueError):
        tm.run()
    assert len(tm.results) < 10
    failed = next(t for t in tm.completed_tasks if isinstance(t.result, Exception))
    assert isinstance(failed.result, ValueError)
    # Nothing more runs after the raise: run() again does nothing.
    n = len(tm.completed_tasks)
    tm.run()
    assert len(tm.completed_tasks) == n


def test_raise_does_not_wait_for_queued_tasks(executor, tmp_path):
    """futureproof waited for every queued task before raising; fpp cancels them."""
    marks = tmp_path / "started"
    tm = futureproof.TaskManager(executor)
    tm.submit(fail_at, 1, 1)
    for _ in range(20):
        tm.submit(mark_and_sleep, str(marks), 0.3)
    with pytest.raises(KeyError):
        tm.run()
    executor.shutdown()  # nothing can start after this (running threads are waited for)
    started = len(marks.read_text().splitlines()) if marks.exists() else 0
    # At most what the workers had started when the failure came back, never the queue.
    assert started <= 2 * executor.max_workers


def test_error_policy_as_string(executor):
    assert futureproof.TaskManager(executor, "log")._error_policy == futureproof.ErrorPolicyEnum.LOG
    assert futureproof.TaskManager(executor, "IGNORE")._error_policy == futureproof.ErrorPolicyEnum.IGNORE
    assert futureproof.TaskManager(executor)._error_policy == futureproof.ErrorPolicyEnum.RAISE
    with pytest.raises(ValueError):
        futureproof.TaskManager(executor, "explode")


def test_map_generator(executor):
    fn = partial(add, b=1)
    with futureproof.TaskManager(executor) as tm:
        tm.map(fn, range(100))
    assert sorted(tm.results) == list(range(1, 101))


def test_map_tuples_are_argument_lists(executor):
    with futureproof.TaskManager(executor) as tm:
        tm.map(add, [(1, 2), (3, 4)])
        tm.map(square, [5, 6])
    assert sorted(tm.results) == [3, 7, 25, 36]


def test_map_reads_lazily(executor):
    seen = []

    def gen():
        for i in range(50):
            seen.append(i)
            yield i

    tm = futureproof.TaskManager(executor)
    tm.map(square, gen())
    assert seen == []  # nothing is read until the tasks run
    it = tm.as_completed()
    next(it)
    assert len(seen) <= executor._max_in_flight + 1
    rest = list(it)
    assert len(rest) == 49
    assert sorted(tm.results) == [i * i for i in range(50)]


def test_lazy_map_over_count_stopped_by_raise(executor):
    pulled = []

    def items():
        for i in itertools.count():
            pulled.append(i)
            yield (i, 3000)

    with pytest.raises(KeyError):
        with futureproof.TaskManager(executor) as tm:
            tm.map(fail_at, items())
    # It ran until the failing item and stopped, having read the infinite input only as room
    # freed: never more than the backpressure window past what had been collected.
    assert 3000 in pulled
    assert len(pulled) <= len(tm.completed_tasks) + executor._max_in_flight
    assert any(isinstance(t.result, KeyError) for t in tm.completed_tasks)


def test_submit_after_map_and_map_after_submit(executor):
    fn = partial(add, b=1)
    tm = futureproof.TaskManager(executor)
    tm.map(fn, range(9))
    tm.submit(fn, 9)
    tm.run()
    assert sorted(tm.results) == list(range(1, 11))
    tm2 = futureproof.TaskManager(executor)
    tm2.submit(fn, 0)
    tm2.map(fn, range(1, 10))
    tm2.run()
    assert sorted(tm2.results) == list(range(1, 11))


def test_as_completed_yields_one_at_a_time(executor):
    tm = futureproof.TaskManager(executor)
    for i in range(5):
        tm.submit(add, i, 1)
    gen = tm.as_completed()
    first = next(gen)
    assert first.complete
    assert len(tm.completed_tasks) == 1
    assert len(list(gen)) == 4
    assert sorted(tm.results) == [1, 2, 3, 4, 5]


def test_as_completed_resumes_after_the_caller_stops(executor):
    tm = futureproof.TaskManager(executor)
    tm.map(square, range(20))
    for i, _ in enumerate(tm.as_completed()):
        if i == 4:
            break
    tm.run()
    assert sorted(tm.results) == [i * i for i in range(20)]


def test_submit_returns_the_task_that_completes(executor):
    with futureproof.TaskManager(executor) as tm:
        task = tm.submit(echo, 1, 2, k=3)
        assert not task.complete and task.result is None
    assert task.complete
    assert task.result == ((1, 2), {"k": 3})
    assert tm.completed_tasks[0] is task
    assert task.fn is echo and task.args == (1, 2) and task.kwargs == {"k": 3}
    assert repr(task).startswith("Task(fn=<function echo")


def test_join_waits_for_started_tasks_only(executor):
    tm = futureproof.TaskManager(executor)
    tm.submit(square, 3)
    tm.join()  # nothing started yet: nothing to wait for (as futureproof)
    assert tm.completed_tasks == []
    tm.run()
    assert tm.results == [9]


def test_retain_completed_false(executor):
    with futureproof.TaskManager(executor, retain_completed=False) as tm:
        tm.map(square, range(100))
        assert sum(t.result for t in tm.as_completed()) == sum(i * i for i in range(100))
    assert tm.completed_tasks == []


def test_executor_serves_several_task_managers(executor):
    for n in (3, 5):
        with futureproof.TaskManager(executor) as tm:
            tm.map(square, range(n))
        assert sorted(tm.results) == [i * i for i in range(n)]


def test_one_task_manager_at_a_time(executor):
    tm1 = futureproof.TaskManager(executor)
    tm1.map(sleep, [0.2] * 4)
    it = tm1.as_completed()
    next(it)
    tm2 = futureproof.TaskManager(executor)
    tm2.submit(square, 2)
    with pytest.raises(RuntimeError, match="another TaskManager"):
        tm2.run()
    list(it)
    tm2.run()
    assert tm2.results == [4]


def test_shutdown_executor_refuses_work(executor):
    executor.shutdown()
    tm = futureproof.TaskManager(executor)
    tm.submit(square, 2)
    with pytest.raises(RuntimeError, match="shut down"):
        tm.run()


def test_process_pool_executor_3_7_only(mocker):
    mock_sys = mocker.patch("fpp.futureproof.executors.sys")
    mock_sys.version_info = (3, 6, 6)
    with pytest.raises(NotImplementedError):
        futureproof.ProcessPoolExecutor()
    mock_sys.version_info = (3, 7, 0)
    ex = futureproof.ProcessPoolExecutor(max_workers=1)
    assert ex
    ex.shutdown()


def test_max_workers(kind):
    cls = futureproof.ThreadPoolExecutor if kind == "thread" else futureproof.ProcessPoolExecutor
    ex = cls(max_workers=3)
    try:
        assert ex.max_workers == 3
        assert ex._mgr.workers == 3
    finally:
        ex.shutdown()
    with pytest.raises(ValueError):
        cls(max_workers=0)


def test_futureproof_executor_alias():
    ex = futureproof.FutureProofExecutor(max_workers=2)
    try:
        with futureproof.TaskManager(ex) as tm:
            tm.submit(square, 4)
        assert tm.results == [16]
    finally:
        ex.shutdown()


def test_thread_executor_runs_lambdas_and_closures():
    ex = futureproof.ThreadPoolExecutor(max_workers=2)
    k = 10
    try:
        with futureproof.TaskManager(ex) as tm:
            tm.map(lambda x: x + k, range(3))
        assert sorted(tm.results) == [10, 11, 12]
    finally:
        ex.shutdown()


def test_monitor_logs_through_executors_logger(kind, mocker):
    mock_logger = mocker.patch("fpp.futureproof.executors.logger")
    cls = futureproof.ThreadPoolExecutor if kind == "thread" else futureproof.ProcessPoolExecutor
    ex = cls(max_workers=2, monitor_interval=0.1)
    try:
        with futureproof.TaskManager(ex) as tm:
            tm.map(sleep, [0.05] * 12)
        # The monitor thread logs its last line as it stops; give it the moment it needs.
        import time

        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            msgs = [c.args[0] for c in mock_logger.info.call_args_list]
            if "Shutting down monitor..." in msgs:
                break
            time.sleep(0.01)
    finally:
        ex.shutdown()
    msgs = [c.args[0] for c in mock_logger.info.call_args_list]
    assert msgs[0] == "Starting executor monitor"
    assert msgs[-1] == "Shutting down monitor..."
    counts = [c.args for c in mock_logger.info.call_args_list
              if c.args[0] == "%d task(s) completed in the last %.2f seconds"]  # 0.3.1's words
    assert counts, msgs
    assert sum(c[1] for c in counts) == 12  # every completion, the last partial interval too


def test_monitor_interval_zero_is_off(mocker):
    mock_logger = mocker.patch("fpp.futureproof.executors.logger")
    ex = futureproof.ProcessPoolExecutor(max_workers=2, monitor_interval=0)
    try:
        with futureproof.TaskManager(ex) as tm:
            tm.map(square, range(10))
    finally:
        ex.shutdown()
    assert mock_logger.info.call_count == 0


def test_block_that_raises_stops_everything(executor):
    with pytest.raises(ZeroDivisionError):
        with futureproof.TaskManager(executor) as tm:
            tm.map(sleep, [0.2] * 10)
            next(tm.as_completed())
            1 / 0
    # The executor is free for the next task manager at once.
    with futureproof.TaskManager(executor) as tm2:
        tm2.submit(square, 3)
    assert tm2.results == [9]


def test_thread_tables_do_not_leak_after_a_raise():
    from fpp import _codec

    ex = futureproof.ThreadPoolExecutor(max_workers=2)
    try:
        tm = futureproof.TaskManager(ex)
        tm.submit(fail_at, 1, 1)
        tm.map(sleep, [0.05] * 50)
        with pytest.raises(KeyError):
            tm.run()
    finally:
        ex.shutdown()  # does not wait for abandoned callables (fpp 0.2): they end on their own
    deadline = time.monotonic() + 5
    while _codec._abandoned and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _codec._calls and not _codec._results and not _codec._abandoned


def test_thread_executors_come_and_go():
    """Each worker thread's Python thread state is deleted when fpp ends the thread."""
    for _ in range(20):
        ex = futureproof.ThreadPoolExecutor(max_workers=3, monitor_interval=0)
        with futureproof.TaskManager(ex) as tm:
            tm.map(square, range(30))
        ex.shutdown()
        assert sorted(tm.results) == [i * i for i in range(30)]


def test_concurrent_futures_options():
    ex = futureproof.ProcessPoolExecutor(max_workers=1, max_tasks_per_child=3, monitor_interval=0)
    try:
        with futureproof.TaskManager(ex) as tm:
            tm.map(pid_of, range(9))
        assert len(set(tm.results)) >= 3  # a new worker every 3 tasks
    finally:
        ex.shutdown()
    with pytest.raises(TypeError, match="mp_context"):
        futureproof.ProcessPoolExecutor(max_workers=1, mp_context=None)
    with pytest.raises(TypeError, match="initializer"):
        futureproof.ThreadPoolExecutor(max_workers=1, initializer=print)
    ex = futureproof.ThreadPoolExecutor(max_workers=1, thread_name_prefix="x")
    ex.shutdown()


def test_process_executor_initializer():
    ex = futureproof.ProcessPoolExecutor(max_workers=2, monitor_interval=0, initializer=set_state,
                                         initargs=("ready",))
    try:
        with futureproof.TaskManager(ex) as tm:
            tm.map(get_state, range(6))
        assert tm.results == ["ready"] * 6
    finally:
        ex.shutdown()


# ------------------------------------------------------------ futureproof 0.3.1, to the letter


def test_tasks_are_hashable_by_identity(executor):
    """futureproof's Task is attrs' eq=False: users key dicts by task."""
    with futureproof.TaskManager(executor) as tm:
        a = tm.submit(square, 2)
        b = tm.submit(square, 2)
        names = {a: "foo", b: "bar"}
    assert names[a] == "foo" and names[b] == "bar"
    assert a != b and a == a  # equal only to itself, even with the same fn, args and result
    assert hash(a) != hash(b)
    assert set(tm.completed_tasks) == {a, b}


def test_executors_submit_returns_concurrent_futures(executor):
    """futureproof's executors have submit(fn, *args, **kwargs) -> concurrent.futures.Future."""
    futs = [executor.submit(add, i, b=1) for i in range(50)]
    assert all(isinstance(f, cf.Future) for f in futs)
    done, not_done = cf.wait(futs, timeout=60)
    assert not not_done
    assert sorted(f.result() for f in futs) == list(range(1, 51))
    assert isinstance(executor.submit(fail_at, 1, 1).exception(timeout=60), KeyError)
    # The executor then serves a TaskManager, and submit() again after it.
    with futureproof.TaskManager(executor) as tm:
        tm.map(square, range(5))
    assert sorted(tm.results) == [0, 1, 4, 9, 16]
    assert executor.submit(square, 9).result(timeout=60) == 81


def test_submit_and_a_task_manager_take_turns(executor):
    slow = executor.submit(sleep, 0.3, "slow")
    tm = futureproof.TaskManager(executor)
    tm.submit(square, 2)
    with pytest.raises(RuntimeError, match="submit"):
        tm.run()
    assert slow.result(timeout=60) == "slow"
    tm2 = futureproof.TaskManager(executor)
    tm2.map(sleep, [0.2] * 2)
    it = tm2.as_completed()
    next(it)
    with pytest.raises(RuntimeError, match="TaskManager is running"):
        executor.submit(square, 1)
    list(it)


def test_monitor_line_is_0_3_1s_through_the_executors_logger(caplog):
    ex = futureproof.ProcessPoolExecutor(max_workers=2, monitor_interval=0.1)
    try:
        with caplog.at_level(logging.INFO, logger="futureproof.executors"):
            with futureproof.TaskManager(ex) as tm:
                tm.map(sleep, [0.05] * 8)
    finally:
        ex.shutdown()
    lines = [r.getMessage() for r in caplog.records if r.name == "futureproof.executors"]
    counts = [m for m in lines if " task(s) completed in the last " in m]
    assert counts, lines
    for m in counts:
        assert re.fullmatch(r"\d+ task\(s\) completed in the last \d+\.\d\d seconds", m), m
    # The run returned after its monitor's last line.
    assert lines[0] == "Starting executor monitor" and lines[-1] == "Shutting down monitor..."


def _monitor_blocks(lines):
    """Checks that start and stop lines alternate (no block inside another); returns how
    many blocks there were."""
    depth = blocks = 0
    for m in lines:
        if m == "Starting executor monitor":
            assert depth == 0, lines
            depth = 1
            blocks += 1
        elif m == "Shutting down monitor...":
            assert depth == 1, lines
            depth = 0
        else:
            assert depth == 1, lines  # a count line belongs to a block
    assert depth == 0, lines
    return blocks


def test_two_monitors_never_interleave(caplog):
    """Runs one after the other on an executor, and two executors at once in two threads:
    each monitor's lines form one block, from its start line to its stop line."""
    exs = [futureproof.ThreadPoolExecutor(max_workers=2, monitor_interval=0.05) for _ in range(2)]
    try:
        with caplog.at_level(logging.INFO, logger="futureproof.executors"):
            for _ in range(5):  # back to back: the next run starts as the last one stops
                with futureproof.TaskManager(exs[0]) as tm:
                    tm.map(square, range(20))

            def run(ex):
                for _ in range(3):
                    with futureproof.TaskManager(ex) as tm:
                        tm.map(sleep, [0.02] * 10)

            threads = [threading.Thread(target=run, args=(ex,)) for ex in exs]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            deadline = time.monotonic() + 10  # a monitor that waited logs its block after
            while time.monotonic() < deadline:
                lines = [r.getMessage() for r in caplog.records if r.name == "futureproof.executors"]
                if lines.count("Shutting down monitor...") == 11:
                    break
                time.sleep(0.01)
    finally:
        for ex in exs:
            ex.shutdown()
    assert _monitor_blocks(lines) == 11
