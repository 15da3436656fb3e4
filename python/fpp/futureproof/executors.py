"""futureproof's executors on fpp's pool.

``ProcessPoolExecutor`` runs callables in fpp's crash-isolated worker processes (forked when it
is created); ``ThreadPoolExecutor`` runs them in fpp's worker threads. Either is handed to a
:class:`fpp.futureproof.TaskManager`; executors are not used directly.

``submit(fn, *args, **kwargs)`` returns a :class:`concurrent.futures.Future`, as
futureproof's executors do (a collector thread, :mod:`fpp._driver`, delivers them); it and a
TaskManager take turns on an executor: a TaskManager cannot start while such futures are
unfinished, nor can ``submit`` while a TaskManager runs.

The monitor lives here, as in futureproof 0.3.1, and logs through this module's ``logger``
("futureproof.executors") at INFO: "Starting executor monitor", every ``monitor_interval``
seconds "N task(s) completed in the last X seconds", then "Shutting down monitor...". Unlike
futureproof's it is a thread of its own (it never takes a worker), it runs only while a task
manager has work, and ``monitor_interval=0`` turns it off. Two monitors' lines never
interleave: a monitor's "Starting" to "Shutting down" block is whole (a second monitor running
meanwhile logs its block after it), and a task manager's run returns after its monitor's last
line.
"""
import logging
import os
import sys
import threading
import time

from .. import _codec, _fpp, _track
from .._driver import Driver
from ..pool import (DEFAULT_MAX_ARG_SIZE, DEFAULT_MAX_RESULT_SIZE, Future, _default_in_flight,
                    _limits, _pow2)

logger = logging.getLogger("futureproof.executors")

# Held by a monitor from its first line to its last: two monitors' blocks never interleave.
_monitor_lock = threading.Lock()


class _Monitor:
    """The monitor thread of one run."""

    def __init__(self, interval, stats):
        self._interval = interval
        self._stats = stats
        self._stop = threading.Event()
        self._logging = threading.Event()  # it holds _monitor_lock: its block has begun
        self._final = None  # the counters when the run ended (set by stop)
        self._thread = threading.Thread(target=self._run, name="futureproof-monitor", daemon=True)
        self._thread.start()

    @staticmethod
    def _finished(stats):
        s = stats() if callable(stats) else stats
        if s is None:
            return None
        return s[1] + s[2] + s[3] + s[4]  # done, failed, crashed, timed out

    def _run(self):
        start = time.monotonic()
        previous = self._finished(self._stats) or 0
        with _monitor_lock:
            self._logging.set()
            self._log(previous, start)

    def _log(self, previous, start):
        try:
            logger.info("Starting executor monitor")
            if self._stop.is_set() or time.monotonic() - start >= self._interval:
                # It waited for another monitor's block: report what it missed now.
                stopping = self._stop.is_set()
                now_count = self._finished(self._final if stopping else self._stats)
                if now_count is not None and (not stopping or now_count > previous):
                    now = time.monotonic()
                    logger.info("%d task(s) completed in the last %.2f seconds", now_count - previous, now - start)
                    previous, start = now_count, now
                if stopping:
                    logger.info("Shutting down monitor...")
                    return
            while True:
                stopping = self._stop.wait(self._interval)
                now_count = self._finished(self._final if stopping else self._stats)
                if now_count is None:  # the run ended before we could look
                    break
                now = time.monotonic()
                if not stopping or now_count > previous:  # the last, partial interval too
                    logger.info("%d task(s) completed in the last %.2f seconds",
                                now_count - previous, now - start)
                previous, start = now_count, now
                if stopping:
                    break
            logger.info("Shutting down monitor...")
        except Exception:
            logger.exception("Error in monitor")

    def stop(self, final=None):
        """Asks the thread to stop (it logs the last interval's count from final, the run's
        last counters, then "Shutting down monitor...") and, if its block has begun, waits for
        those lines (a moment: the thread is only woken). A monitor still waiting for another
        one's block logs its own after it, without anyone waiting."""
        self._final = final
        self._stop.set()
        if self._logging.is_set() and self._thread is not threading.current_thread():
            self._thread.join()


class _FutureProofExecutor:
    """The common part of both executors: one fpp pool and the run of at most one task
    manager at a time. Do not use directly."""

    _kind = None

    def __init__(self, max_workers=None, monitor_interval=2, *, max_in_flight=None,
                 task_timeout=None, max_tasks_per_worker=0, max_arg_size=DEFAULT_MAX_ARG_SIZE,
                 max_result_size=DEFAULT_MAX_RESULT_SIZE, keep_fds=True, max_worker_rss_mib=0,
                 init=None):
        if max_workers is None:
            max_workers = self._default_workers()
        max_workers = int(max_workers)
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if monitor_interval is None or monitor_interval < 0:
            raise ValueError("monitor_interval must be >= 0 (0: no monitor)")
        self._max_workers = max_workers
        self._monitor_interval = monitor_interval
        self._max_in_flight = int(max_in_flight) if max_in_flight else _default_in_flight(max_workers)
        if self._max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        self._mgr = _track(_fpp.Manager(
            self._kind, workers=max_workers, queue_capacity=_pow2(self._max_in_flight),
            max_arg_size=max_arg_size, max_result_size=max_result_size, keep_fds=keep_fds,
            init=init, **_limits(task_timeout, max_tasks_per_worker, max_worker_rss_mib)))
        self._max_result = max_result_size
        self._owner = None
        self._monitor = None
        self._driver = None  # submit()'s collector, made at the first submit
        self._shut = False

    @staticmethod
    def _default_workers():
        return os.cpu_count() or 1

    @property
    def max_workers(self):
        return self._max_workers

    @property
    def monitor_interval(self):
        return self._monitor_interval

    def submit(self, fn, *args, **kwargs):
        """Runs fn(*args, **kwargs) on the executor's workers, as futureproof's executors do;
        returns a :class:`concurrent.futures.Future`. Not while a TaskManager runs on it."""
        if self._owner is not None:
            raise RuntimeError("a TaskManager is running tasks on this executor; submit() "
                               "waits until it has finished (run() or join())")
        if self._shut:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if self._driver is None:
            self._driver = Driver(self._mgr, self._max_in_flight, name="futureproof-collector",
                                  idle_exit=True)
        fut = Future()
        if self._kind == "process":
            try:
                item = _codec.encode_call(fn, args, kwargs)
            except Exception as exc:
                fut.set_exception(exc)
                return fut
        else:
            if not callable(fn):
                raise TypeError("%r is not callable" % (fn,))
            item = (fn, args, kwargs)
        self._driver.put(item, fut)
        return fut

    # A task manager's run: the C task manager and the monitor.
    def _open(self, owner):
        if self._owner is owner:
            return
        if self._owner is not None:
            raise RuntimeError("another TaskManager is running tasks on this executor; "
                               "finish it (run() or join()) first")
        if self._shut or self._mgr.closed:
            raise RuntimeError("cannot schedule new tasks after the executor was shut down")
        if self._driver is not None and not self._driver.wait_idle_exit():
            raise RuntimeError("futures from this executor's submit() are unfinished; wait for "
                               "them before running a TaskManager on it")
        self._mgr.open(self._max_in_flight, **owner._run_options())
        self._owner = owner
        if self._monitor_interval:
            self._monitor = _Monitor(self._monitor_interval, self._mgr.stats)

    def _close(self, owner):
        """Ends owner's run: anything unfinished is cancelled (busy workers killed)."""
        if self._owner is not owner:
            return
        self._owner = None
        mon, self._monitor = self._monitor, None
        if mon is not None:
            mon.stop(self._mgr.stats())
        self._mgr.reset()

    def join(self):
        """Nothing to wait for: a task manager's join() waits for its own tasks. The workers
        stay, so the executor can serve another task manager; shutdown() stops them."""
        logger.debug("Executor join: workers stay until shutdown()")

    def shutdown(self, wait=True):
        """Stops every worker (and cancels what a task manager still has running; futures
        from submit() finish first, and wait=True waits for them)."""
        self._shut = True
        if self._owner is not None:
            self._close(self._owner)
        if self._driver is not None:
            self._driver.shutdown(wait)  # closes the Manager once its futures are done
        else:
            self._mgr.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.shutdown()
        return False

    def __repr__(self):
        return "<%s max_workers=%d>" % (type(self).__name__, self._max_workers)


class ThreadPoolExecutor(_FutureProofExecutor):
    """Runs tasks in fpp's worker threads (no isolation: a crash takes the process down; a
    running callable cannot be stopped, so Ctrl-C returns at once but the threads finish
    their current callables).

    :param max_workers: threads (default: min(32, CPUs + 4), as concurrent.futures).
    :param monitor_interval: seconds between monitor lines, default 2; 0: no monitor.
    ``thread_name_prefix`` is accepted for compatibility and ignored. fpp options:
    ``max_in_flight``, ``task_timeout`` (the task is reported timed out, its thread is left
    to finish)."""

    _kind = "thread"

    def __init__(self, max_workers=None, monitor_interval=2, thread_name_prefix="", **options):
        for name in ("initializer", "initargs"):
            if name in options:
                raise TypeError("fpp's ThreadPoolExecutor does not take %s (its process "
                                "executor does)" % name)
        super().__init__(max_workers, monitor_interval, **options)

    @staticmethod
    def _default_workers():
        return min(32, (os.cpu_count() or 1) + 4)


class ProcessPoolExecutor(_FutureProofExecutor):
    """Runs tasks in fpp's worker processes, forked now: callables and arguments travel by
    pickle, so use module-level functions defined before this executor is created. A callable
    that crashes its worker fails only its task (:class:`fpp.WorkerCrashed`).

    Available only in Python 3.7 and above.

    :param max_workers: processes (default: one per CPU).
    :param monitor_interval: seconds between monitor lines, default 2; 0: no monitor.
    :param initializer, initargs: ``initializer(*initargs)`` runs in every worker before its
        first task, as concurrent.futures' (see :class:`fpp.ProcessPool`).
    fpp options: ``max_in_flight``, ``task_timeout`` (seconds; the worker is killed),
    ``max_tasks_per_worker`` (or concurrent.futures' ``max_tasks_per_child``),
    ``max_arg_size``/``max_result_size`` (pickled bytes, default 1 GiB and 4 MiB, as
    :class:`fpp.ProcessPool`), ``max_worker_rss_mib``, ``keep_fds`` (default True: file descriptors open now,
    such as a logging.FileHandler's, stay usable in tasks)."""

    _kind = "process"

    def __init__(self, max_workers=None, monitor_interval=2, initializer=None, initargs=(), **options):
        if sys.version_info < (3, 7):
            raise NotImplementedError("ProcessPoolExecutor are only available for Python 3.7+")
        if "max_tasks_per_child" in options:  # concurrent.futures' name (3.11)
            options["max_tasks_per_worker"] = options.pop("max_tasks_per_child") or 0
        if "mp_context" in options:
            raise TypeError("fpp's ProcessPoolExecutor does not take mp_context: its workers are "
                            "forked from a fork server made when the executor is created")
        if initializer is not None:
            if not callable(initializer):
                raise TypeError("initializer must be a callable")
            options["init"] = _codec.encode_init(initializer, initargs)
        super().__init__(max_workers, monitor_interval, **options)
