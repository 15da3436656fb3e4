"""CPython's own executor tests (Lib/test/test_concurrent_futures.py, Debian's
libpython3.11-testsuite) run against fpp.ProcessPool.

The test classes are CPython's mixins (ExecutorTest, ProcessPoolExecutorTest, WaitTests,
AsCompletedTests, ExecutorShutdownTest, ExecutorDeadlockTest, InitializerMixin) combined with
a mixin that makes their executor an fpp.ProcessPool (given a 'fork' mp_context, as CPython's
fork mixin does). Nothing of theirs is changed; the tests left out are in EXCLUDED, each with
its reason, and show as skipped with it. Without the test suite installed
(apt-get install libpython3.11-testsuite, or another Python's own) the module is skipped.
"""
import multiprocessing as mp
import sys
import unittest

import pytest

import fpp

cft = pytest.importorskip(
    "test.test_concurrent_futures",
    reason="CPython's test suite is not installed (Debian: apt-get install libpython%d.%d-testsuite)"
    % sys.version_info[:2])

INTERNALS = "uses concurrent.futures.ProcessPoolExecutor internals (%s)"
BREAKS = ("expects the whole pool to break (BrokenProcessPool for every future) when %s; fpp "
          "fails only that task, with the exception raised there, and the pool goes on "
          "(issue 19: the pool never becomes broken)")
SUBPROCESS = ("runs `from concurrent.futures import <the executor class's name>` in a `python -I` "
              "subprocess, which can import neither fpp.ProcessPool from there nor fpp at all; "
              "test_executor.py::%s is the same check on fpp.ProcessPool")

# test name -> why it is not run against fpp.ProcessPool
EXCLUDED = {
    # ProcessPoolExecutorTest
    "test_killed_child": INTERNALS % "_processes, to kill a worker from outside" + "; and it expects "
                         "the pool to break, where fpp replaces the worker (test_executor.py::"
                         "test_a_worker_killed_from_outside_fails_only_its_task)",
    "test_saturation": INTERNALS % "_processes, to count the workers it spawned on demand",
    "test_max_tasks_per_child": "asserts CPython's refusal of max_tasks_per_child with a 'fork' "
                                "context (its manager thread would fork); fpp forks from its fork "
                                "server and supports it: test_executor.py::"
                                "test_max_tasks_per_child_replaces_workers",
    "test_max_tasks_per_child_defaults_to_spawn_context": INTERNALS % "_mp_context",
    "test_traceback": "asserts the cause's type is concurrent.futures.process._RemoteTraceback, a "
                      "private class; fpp's is fpp.RemoteTraceback, and the rest of the test is "
                      "test_executor.py::test_worker_traceback_is_the_cause",
    # ExecutorDeadlockTest
    "test_exit_at_task_unpickle": BREAKS % "unpickling a task's arguments in the worker calls "
                                           "sys.exit()",
    "test_error_at_task_unpickle": BREAKS % "unpickling a task's arguments in the worker raises",
    "test_error_during_result_unpickle_in_result_handler": BREAKS % "unpickling a result in the "
                                                                    "parent raises",
    "test_exit_during_result_unpickle_in_result_handler": BREAKS % "unpickling a result in the "
                                                                   "parent calls sys.exit()",
    "test_shutdown_deadlock_pickle": INTERNALS % "_executor_manager_thread",
    # ExecutorShutdownTest
    "test_interpreter_shutdown": SUBPROCESS % "test_interpreter_exit_finishes_pending_work",
    "test_submit_after_interpreter_shutdown": SUBPROCESS % "test_submit_after_interpreter_shutdown",
    "test_hang_gh83386": SUBPROCESS % "test_shutdown_without_wait_exits_cleanly",
}

# CPython's ProcessPoolShutdownTest and FailingInitializerMixin are not combined at all: the
# first builds concurrent.futures.ProcessPoolExecutor itself (test_processes_terminate,
# test_context_manager_shutdown, test_del_shutdown, test_shutdown_no_wait) and reads its
# _processes, _call_queue and _executor_manager_thread; the second waits for `executor._broken`
# after an initializer fails, where fpp raises fpp.InitializerFailed (a BrokenProcessPool) from
# the constructor: test_executor.py::test_failing_initializer_is_raised_once.
NOT_COMBINED = {
    "ProcessPoolShutdownTest": INTERNALS % "_processes, _call_queue, _executor_manager_thread; "
                                           "and it constructs concurrent.futures' own executor",
    "FailingInitializerMixin": INTERNALS % "_broken",
}


class FppMixin(cft.ExecutorMixin):
    executor_type = fpp.ProcessPool
    ctx = "fork"

    def get_context(self):
        return mp.get_context("fork")


def _combine(name, mixin):
    attrs = {}
    for attr in dir(mixin):
        if attr in EXCLUDED and attr.startswith("test_"):
            attrs[attr] = unittest.skip(EXCLUDED[attr])(getattr(mixin, attr))
    return type(name, (mixin, FppMixin, cft.BaseTestCase), attrs)


FppExecutorTest = _combine("FppExecutorTest", cft.ProcessPoolExecutorTest)
FppWaitTest = _combine("FppWaitTest", cft.WaitTests)
FppAsCompletedTest = _combine("FppAsCompletedTest", cft.AsCompletedTests)
FppShutdownTest = _combine("FppShutdownTest", cft.ExecutorShutdownTest)
FppDeadlockTest = _combine("FppDeadlockTest", cft.ExecutorDeadlockTest)
FppInitializerTest = _combine("FppInitializerTest", cft.InitializerMixin)


def test_every_exclusion_names_a_test_that_exists():
    """An exclusion that no longer matches a CPython test (renamed upstream) is stale."""
    names = set()
    for mixin in (cft.ProcessPoolExecutorTest, cft.WaitTests, cft.AsCompletedTests,
                  cft.ExecutorShutdownTest, cft.ExecutorDeadlockTest, cft.InitializerMixin):
        names.update(n for n in dir(mixin) if n.startswith("test_"))
    assert set(EXCLUDED) <= names, set(EXCLUDED) - names
    for cls in NOT_COMBINED:
        assert hasattr(cft, cls)
