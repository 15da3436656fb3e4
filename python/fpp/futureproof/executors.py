"""futureproof's executors on fpp's pool.

``ProcessPoolExecutor`` runs callables in fpp's crash-isolated worker processes (forked when it
is created); ``ThreadPoolExecutor`` runs them in fpp's worker threads. Either is handed to a
:class:`fpp.futureproof.TaskManager`; executors are not used directly.

The monitor lives here, as in futureproof, and logs through this module's ``logger``
("futureproof.executors") at INFO: "Starting executor monitor", every ``monitor_interval``
seconds "N task(s) completed in the last X second(s)", then "Shutting down monitor...". Unlike
futureproof's it is a thread of its own (it never takes a worker), it runs only while a task
manager has work, ``monitor_interval=0`` turns it off, and stopping it never delays anything.
"""
import logging
import os
import sys
import threading
import time

from .. import _fpp, _track
from ..pool import _default_in_flight, _limits, _pow2

logger = logging.getLogger("futureproof.executors")

_MIB = 1 << 20


class _Monitor:
    """The monitor thread of one run."""

    def __init__(self, interval, stats):
        self._interval = interval
        self._stats = stats
        self._stop = threading.Event()
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
        try:
            logger.info("Starting executor monitor")
            previous = self._finished(self._stats) or 0
            start = time.monotonic()
            while True:
                stopping = self._stop.wait(self._interval)
                now_count = self._finished(self._final if stopping else self._stats)
                if now_count is None:  # the run ended before we could look
                    break
                now = time.monotonic()
                if not stopping or now_count > previous:  # the last, partial interval too
                    logger.info("%d task(s) completed in the last %.2f second(s)",
                                now_count - previous, now - start)
                previous, start = now_count, now
                if stopping:
                    break
            logger.info("Shutting down monitor...")
        except Exception:
            logger.exception("Error in monitor")

    def stop(self, final=None):
        """Asks the thread to stop (it logs the last interval's count from final, the run's
        last counters, then "Shutting down monitor..."); does not wait for it."""
        self._final = final
        self._stop.set()


class _FutureProofExecutor:
    """The common part of both executors: one fpp pool and the run of at most one task
    manager at a time. Do not use directly."""

    _kind = None

    def __init__(self, max_workers=None, monitor_interval=2, *, max_in_flight=None,
                 task_timeout=None, max_tasks_per_worker=0, max_arg_size=4 * _MIB,
                 max_result_size=4 * _MIB, keep_fds=True, max_worker_rss_mib=0):
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
            **_limits(task_timeout, max_tasks_per_worker, max_worker_rss_mib)))
        self._owner = None
        self._monitor = None

    @staticmethod
    def _default_workers():
        return os.cpu_count() or 1

    @property
    def max_workers(self):
        return self._max_workers

    @property
    def monitor_interval(self):
        return self._monitor_interval

    # A task manager's run: the C task manager and the monitor.
    def _open(self, owner):
        if self._owner is owner:
            return
        if self._owner is not None:
            raise RuntimeError("another TaskManager is running tasks on this executor; "
                               "finish it (run() or join()) first")
        if self._mgr.closed:
            raise RuntimeError("cannot schedule new tasks after the executor was shut down")
        self._mgr.open(self._max_in_flight)
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
        """Stops every worker (and cancels what a task manager still has running)."""
        if self._owner is not None:
            self._close(self._owner)
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
    fpp options: ``max_in_flight``, ``task_timeout`` (seconds; the worker is killed),
    ``max_tasks_per_worker``, ``max_arg_size``/``max_result_size`` (pickled bytes, default
    4 MiB each), ``max_worker_rss_mib``, ``keep_fds`` (default True: file descriptors open now,
    such as a logging.FileHandler's, stay usable in tasks)."""

    _kind = "process"

    def __init__(self, max_workers=None, monitor_interval=2, **options):
        if sys.version_info < (3, 7):
            raise NotImplementedError("ProcessPoolExecutor are only available for Python 3.7+")
        if "max_tasks_per_child" in options:  # concurrent.futures' name (3.11)
            options["max_tasks_per_worker"] = options.pop("max_tasks_per_child") or 0
        for name in ("initializer", "initargs", "mp_context"):
            if name in options:
                raise TypeError("fpp's ProcessPoolExecutor does not take %s: workers are forked "
                                "from this process when the executor is created, so set up "
                                "what they need before creating it" % name)
        super().__init__(max_workers, monitor_interval, **options)
