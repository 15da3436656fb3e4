"""futureproof's TaskManager on fpp's pool.

Behaviour, as futureproof 0.3.1 documents it:

* ``submit(fn, *args, **kwargs)`` and ``map(fn, iterable)`` queue tasks lazily; nothing runs
  until ``as_completed()``, ``run()``, ``join()`` or the end of a ``with`` block.
* ``map`` reads its iterable only as room frees (at most the executor's ``max_in_flight``
  tasks are unfinished or uncollected), so a map over 10^9 items, or ``itertools.count()``,
  starts at once and runs in constant memory.
* ``as_completed()`` yields tasks in completion order; ``completed_tasks`` keeps them (pass
  ``retain_completed=False`` for an endless map); ``results`` lists their results.
* Error policies (``ErrorPolicyEnum`` or "raise", "log", "ignore"): raise (the default)
  re-raises a task's exception in the caller at once, log reports it through this module's
  ``logger.exception`` and goes on, ignore leaves it on ``task.result``.
* The context manager runs everything on exit.

Where fpp does better than futureproof: a raise stops at once (queued tasks are cancelled and
busy process workers killed, instead of waiting for every queued task); the Task returned by
``submit`` is the one that completes and is yielded (not a copy); a task whose worker process
died fails alone with :class:`fpp.WorkerCrashed`; one Ctrl-C (a KeyboardInterrupt while
waiting) stops everything in milliseconds.
"""
import logging
import os
from collections import deque
from enum import Enum

from .. import _codec, _fpp
from ..errors import task_error
from ..pool import _replayed
from . import executors

logger = logging.getLogger("futureproof.task_manager")


class ErrorPolicyEnum(Enum):
    IGNORE = "ignore"
    LOG = "log"
    RAISE = "raise"


class Task:
    """A call of ``fn(*args, **kwargs)``: ``result`` (its return value, or the exception it
    raised) once ``complete`` is True. Compared and hashed by identity, as futureproof's
    (attrs' ``eq=False``): tasks key dicts and go in sets."""

    __slots__ = ("fn", "args", "kwargs", "result", "complete", "__weakref__")

    def __init__(self, fn, args=(), kwargs=None, result=None, complete=False):
        self.fn = fn
        self.args = args
        self.kwargs = {} if kwargs is None else kwargs
        self.result = result
        self.complete = complete

    def __repr__(self):
        return "Task(fn=%r, args=%r, kwargs=%r, result=%r, complete=%r)" % (
            self.fn, self.args, self.kwargs, self.result, self.complete)



def _map_tasks(fn, iterable):
    for i in iterable:
        yield Task(fn, i if isinstance(i, tuple) else (i,))


class TaskManager:
    """Schedules tasks on a futureproof executor (fpp's ``ThreadPoolExecutor`` or
    ``ProcessPoolExecutor``) and hands back the finished ones.

    :param executor: the executor; one task manager runs on it at a time.
    :param error_policy: ``ErrorPolicyEnum`` or its value as a string (any case).
    :param retain_completed: keep finished tasks in ``completed_tasks`` (default True, as
        futureproof); False keeps memory constant however many tasks run.
    :param journal: a file (fpp's task journal; process executors only) that makes the run
        resumable: each task's outcome is recorded under its position in submission order
        (submit and map items alike), and a task manager made again on the same journal, with
        the same ``journal_key`` and queuing the same functions, does not run the tasks
        recorded as finished: they complete with the recorded result (or exception) and are
        yielded by ``as_completed`` as if they had run. With a journal the run stays open
        until ``join()`` (or the end of the ``with`` block), so that ids keep counting.
    :param journal_key: your part of the run's fingerprint (e.g. the input's name).
    :param rerun_failed: tasks recorded as failed by fpp (worker crashed, timed out) run
        again; otherwise they fail again as recorded. A Python exception is a recorded result:
        it is replayed, not run again.
    A journal of another run raises :class:`fpp.JournalMismatch` when the run starts."""

    def __init__(self, executor, error_policy=ErrorPolicyEnum.RAISE, retain_completed=True, *,
                 journal=None, journal_key="", rerun_failed=False, journal_flush_ms=0):
        if not isinstance(executor, executors._FutureProofExecutor):
            raise TypeError("executor must be fpp.futureproof's ThreadPoolExecutor or "
                            "ProcessPoolExecutor, not %r" % (executor,))
        self._error_policy = (
            error_policy if isinstance(error_policy, ErrorPolicyEnum)
            else ErrorPolicyEnum(str(error_policy).lower())
        )
        self._executor = executor
        self._process = executor._kind == "process"
        self._retain = bool(retain_completed)
        self._pending = deque()    # iterators of Tasks not yet sent
        self._singles = None       # the deque at the tail of _pending that submit() appends to
        self._singles_iter = None  # and the iterator over it that _pending holds
        self._inflight = {}        # fpp task id -> Task
        self._seqs = {}            # thread executors: fpp task id -> fpp._codec sequence number
        self._ready = deque()      # (Task, ok): finished, not yet handed out
        self._shutdown = False
        self._submitted_task_count = 0
        self.completed_tasks = []
        self._journal = None if journal is None else os.fspath(journal)
        if self._journal is not None and not self._process:
            raise ValueError("journal= needs a ProcessPoolExecutor (a thread's result is no "
                             "bytes the journal could keep)")
        self._journal_key = str(journal_key)
        self._rerun_failed = bool(rerun_failed)
        self._journal_flush_ms = int(journal_flush_ms)
        self._fn_names = []  # journal: the functions queued, in first-queued order (the key)
        self.skipped_count = 0  # journal: tasks an earlier run finished (not run again)

    def _note_fn(self, fn):
        if self._journal is not None:
            name = "%s:%s" % (getattr(fn, "__module__", None) or "?",
                              getattr(fn, "__qualname__", None) or type(fn).__qualname__)
            if name not in self._fn_names:
                self._fn_names.append(name)

    def _run_options(self):
        """The Manager.open() options of this task manager's run (its journal)."""
        if self._journal is None:
            return {}
        key = "fpp.futureproof.TaskManager fns=%s key=%s" % (",".join(self._fn_names), self._journal_key)
        return dict(journal=self._journal, journal_key=key, rerun_failed=self._rerun_failed,
                    journal_result_max=min(self._executor._max_result, 1 << 30),
                    journal_flush_ms=self._journal_flush_ms)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        if exc_type is None:
            self.run()
            self.join()
        else:
            # The block failed (or Ctrl-C): stop everything, let the exception through.
            self._abort()
        return False

    def __del__(self):
        try:
            if self._inflight or self._ready:
                self._abort()
        except Exception:
            pass

    @property
    def results(self):
        return [task.result for task in self.completed_tasks if task.complete]

    # ------------------------------------------------------------- queueing

    def _check(self, fn):
        if not callable(fn):
            raise TypeError("%r is not callable" % (fn,))
        if self._process:
            _codec.check_sendable(fn)

    def submit(self, fn, *args, **kwargs):
        """Queues fn(*args, **kwargs); returns its Task (the object that completes)."""
        if self._process and fn.__class__ in _codec._CACHEABLE:
            _codec.headers(fn)  # a lambda fails here, at the call that named it
        elif not callable(fn):
            raise TypeError("%r is not callable" % (fn,))
        task = Task(fn, args, kwargs)
        self._note_fn(fn)
        if not self._pending or self._pending[-1] is not self._singles_iter:
            self._singles = deque()
            self._singles_iter = _drain(self._singles)
            self._pending.append(self._singles_iter)
        self._singles.append(task)
        return task

    def map(self, fn, iterable):
        """Queues fn(item) for each item (fn(*item) for a tuple item), read lazily."""
        self._check(fn)
        self._note_fn(fn)
        self._pending.append(_map_tasks(fn, iterable))

    def _next_task(self):
        pending = self._pending
        while pending:
            try:
                return next(pending[0])
            except StopIteration:
                pending.popleft()
        return None

    # -------------------------------------------------------------- running

    def run(self):
        """Runs every queued task to the end (as_completed, results discarded)."""
        for _ in self.as_completed():
            pass

    def as_completed(self):
        """Starts the queued tasks and yields each as it completes."""
        if self._shutdown or not (self._pending or self._inflight or self._ready):
            return
        ex = self._executor
        ex._open(self)
        try:
            yield from self._loop(ex)
        except GeneratorExit:
            raise  # the caller stopped iterating: what runs goes on, a later call resumes
        except BaseException:
            self._abort()
            raise
        if not self._inflight and not self._ready and not self._pending and self._journal is None:
            ex._close(self)  # (a journaled run stays open until join(): its ids go on counting)

    def _loop(self, ex):
        mgr = ex._mgr
        mif = ex._max_in_flight
        inflight = self._inflight
        ready = self._ready
        process = self._process
        encode = _codec.encode_call
        thread_submit = _codec.thread_submit
        seqs = self._seqs
        CODE_OK, CODE_EXC, CODE_FPP = _fpp.CODE_OK, _fpp.CODE_EXC, _fpp.CODE_FPP
        journaled = self._journal is not None
        skipped = mgr.skipped if journaled else 0
        while True:
            while ready:
                task, ok = ready.popleft()
                if self._retain:
                    self.completed_tasks.append(task)
                if not ok:
                    self._failed(task)
                yield task
            if self._shutdown:
                return
            # Feed: as many as there is room for (never waits in C).
            while len(inflight) < mif:
                task = self._next_task()
                if task is None:
                    break
                try:
                    if process:
                        tid = mgr.submit(encode(task.fn, task.args, task.kwargs))
                    else:
                        tid = thread_submit(mgr, task.fn, task.args, task.kwargs, seqs)
                except Exception as exc:  # cannot be pickled, too big: this task's failure
                    self._submitted_task_count += 1
                    task.result = exc
                    task.complete = True
                    ready.append((task, False))
                    break
                self._submitted_task_count += 1
                if journaled and mgr.skipped != skipped:  # an earlier run finished it
                    skipped = mgr.skipped
                    self.skipped_count += 1
                    rec = mgr.journal_find(tid)
                    if rec is None:
                        raise RuntimeError("fpp: task %d skipped but not in the journal" % tid)
                    self._complete(task, *_replayed(rec))
                    continue
                inflight[tid] = task
            if ready:
                continue
            if not inflight:
                return
            batch = mgr.collect(None)
            if batch is None:
                raise RuntimeError("fpp: %d task(s) lost by the pool" % len(inflight))
            for tid, code, value in batch:
                task = inflight.pop(tid)
                if not process:
                    del seqs[tid]
                self._complete(task, code, value)

    def _complete(self, task, code, value):
        if code == _fpp.CODE_OK:
            task.result = value
            ok = True
        elif code == _fpp.CODE_EXC:
            task.result = value
            ok = False
        else:
            message, sig = value
            task.result = task_error(code - _fpp.CODE_FPP, message, sig)
            ok = False
        task.complete = True
        self._ready.append((task, ok))

    def _failed(self, task):
        if self._error_policy == ErrorPolicyEnum.RAISE:
            self._raise(task.result)
        elif self._error_policy == ErrorPolicyEnum.LOG:
            logger.exception("Task %s raised an exception", task, exc_info=task.result)

    def _raise(self, exception):
        """Stops at once, then raises the task's exception."""
        logger.info("Raising exception and shutting down")
        self._abort()
        raise exception

    def _abort(self):
        """Stops everything: queued tasks never run, busy process workers are killed."""
        self._shutdown = True
        self._ready.clear()
        self._inflight.clear()
        if self._seqs:
            _codec.thread_forget(self._seqs.values())
            self._seqs.clear()
        self._executor._close(self)

    def join(self):
        """Waits for every task already started (not for queued ones: see run())."""
        if self._inflight or self._ready:
            pending, self._pending = self._pending, deque()
            try:
                for _ in self.as_completed():
                    pass
            finally:
                self._pending = pending + self._pending
        if not self._inflight and not self._ready:
            self._executor._close(self)
        self._executor.join()


def _drain(d):
    """Yields from a deque that submit() keeps appending to."""
    while d:
        yield d.popleft()
