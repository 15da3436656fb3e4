"""fpp.ProcessPool: the low-level, fast way to run Python callables on fpp's process pool.

Differences from :class:`concurrent.futures.ProcessPoolExecutor` worth knowing:

* A function is pickled once in the parent (as a reference) and resolved once per worker,
  not per task; ``map``/``imap_unordered`` send ``chunksize`` items as one task.
* ``map`` and ``imap_unordered`` are lazy: they read the iterable only as room frees (at most
  ``max_in_flight`` chunks outstanding), so a map over ``itertools.count()`` runs in constant
  memory until the consumer stops.
* A callable that crashes its worker (a segfault, ``os._exit``) fails only its own task with
  :class:`fpp.WorkerCrashed` (naming the signal); the pool goes on. ``task_timeout`` kills a
  task that runs too long (:class:`fpp.TaskTimeout`).
* Waiting (``Future.result``, iterating a map) runs Python's signal handlers every few
  milliseconds, and a KeyboardInterrupt there stops everything at once: the busy workers are
  killed, every pending future fails with :class:`fpp.TaskCancelled`, the pool stays usable.

A pool is used from any thread, one at a time inside it (a lock); results are delivered by
whichever thread waits.
"""
import itertools
import os
import threading
import time
from collections import deque

from . import _codec, _fpp, _track
from .errors import TaskCancelled, task_error

_PENDING, _OK, _EXC = 0, 1, 2
_MIB = 1 << 20


def _pow2(n):
    p = 1
    while p < n:
        p <<= 1
    return p


def _default_in_flight(workers):
    return _pow2(max(128, 64 * workers))


def _outcome(code, value):
    """(ok, value) for a (code, value) from the C side."""
    if code == _fpp.CODE_OK:
        return True, value
    if code == _fpp.CODE_EXC:
        return False, value
    if code >= _fpp.CODE_FPP:
        message, sig = value
        return False, task_error(code - _fpp.CODE_FPP, message, sig)
    return False, value  # CODE_PARTIAL: handled by chunks


class Future:
    """The outcome of :meth:`ProcessPool.submit`: ``result()``, ``exception()``, ``done()``.

    Waiting on it runs the pool (collects whatever finishes, for every future)."""

    __slots__ = ("_pool", "_state", "_value", "_callbacks", "__weakref__")

    def __init__(self, pool):
        self._pool = pool
        self._state = _PENDING
        self._value = None
        self._callbacks = None

    def _set(self, code, value):
        ok, v = _outcome(code, value)
        self._value = v
        self._state = _OK if ok else _EXC
        cbs, self._callbacks = self._callbacks, None
        if cbs:
            for cb in cbs:
                try:
                    cb(self)
                except Exception:
                    import logging

                    logging.getLogger("fpp").exception("exception in a Future callback")

    def done(self):
        return self._state != _PENDING

    def running(self):
        return self._state == _PENDING

    def cancelled(self):
        return self._state == _EXC and isinstance(self._value, TaskCancelled)

    def cancel(self):
        """Not supported yet (fpp 0.2's fpp_cancel is not wired in): returns False."""
        return False

    def add_done_callback(self, fn):
        """fn(future) once it is done (at once if it is); called in the waiting thread."""
        if self._state != _PENDING:
            fn(self)
        else:
            if self._callbacks is None:
                self._callbacks = []
            self._callbacks.append(fn)

    def _wait(self, timeout):
        if self._state == _PENDING:
            self._pool._wait_for(self, timeout)

    def result(self, timeout=None):
        """The callable's return value; raises its exception, or a :class:`fpp.TaskError`."""
        self._wait(timeout)
        if self._state == _EXC:
            raise self._value
        return self._value

    def exception(self, timeout=None):
        self._wait(timeout)
        return self._value if self._state == _EXC else None

    def __repr__(self):
        st = {_PENDING: "pending", _OK: "finished", _EXC: "raised"}[self._state]
        return "<fpp.Future %s>" % st


class _Chunk:
    """One map chunk in flight: its items stay here until it is done, in case the worker
    sends back only part of it (results over max_result_size: the rest goes again)."""

    __slots__ = ("map", "index", "items", "sent", "acc", "code", "value")

    def __init__(self, m, index, items):
        self.map = m
        self.index = index
        self.items = items
        self.sent = len(items)  # how many of items the task in flight carries
        self.acc = None
        self.code = None
        self.value = None

    def _set(self, code, value):
        self.code = code
        self.value = value
        self.map._done(self)


class _MapState:
    __slots__ = ("ordered", "ready", "outstanding", "dead", "more", "chunksize")

    def __init__(self, ordered, chunksize):
        self.ordered = ordered
        self.ready = {} if ordered else deque()
        self.outstanding = 0
        self.dead = False
        self.more = deque()  # chunks done in part, to send again
        self.chunksize = chunksize

    def _done(self, ch):
        self.outstanding -= 1
        if self.dead:
            return
        if ch.code == _codec.CODE_MORE:
            results, k = ch.value
            self.chunksize = max(1, min(self.chunksize, k))  # later chunks: what fits
        elif ch.code == _fpp.CODE_OK and ch.sent < len(ch.items):
            results, k = ch.value, ch.sent
        else:
            k = 0
        if k:
            # Done in part: keep the results, send the rest again, in pieces that fit.
            if ch.acc is None:
                ch.acc = []
            ch.acc.extend(results)
            ch.items = ch.items[k:]
            self.more.append(ch)
            return
        if self.ordered:
            self.ready[ch.index] = ch
        else:
            self.ready.append(ch)

    def yieldable(self, want):
        return (want in self.ready) if self.ordered else bool(self.ready)


def _chunk_results(ch):
    """The chunk's results, and the error to raise after them (or None)."""
    code, value = ch.code, ch.value
    if code == _fpp.CODE_OK:
        results, err = value, None
    elif code == _fpp.CODE_PARTIAL:
        results, err = value
    else:
        results, err = (), _outcome(code, value)[1]
    if ch.acc:
        results = ch.acc + list(results)
    return results, err


class ProcessPool:
    """A pool of ``workers`` processes (default: one per CPU) running Python callables.

    Options: ``max_in_flight`` (tasks or chunks submitted and not yet collected before
    ``submit`` waits; default 64 per worker, at least 128), ``max_arg_size`` and
    ``max_result_size`` (bytes of a pickled task and result; default 4 MiB each, at most
    1 GiB), ``task_timeout`` (seconds; the worker is killed), ``max_tasks_per_worker`` (a worker
    is replaced after that many tasks), ``max_worker_rss_mib`` (a worker grown past it is
    replaced), ``keep_fds`` (default True: workers keep every file descriptor open when the
    pool is created, e.g. a ``logging.FileHandler``'s; False: only 0, 1, 2).

    Workers are forked now: they see the program as it is now. Functions defined later do not
    exist in them (:class:`fpp.FunctionNotInWorkers` says so)."""

    def __init__(self, workers=None, *, max_in_flight=None, max_arg_size=4 * _MIB,
                 max_result_size=4 * _MIB, task_timeout=None, max_tasks_per_worker=0,
                 max_worker_rss_mib=0, keep_fds=True):
        workers = int(workers or 0)
        if workers < 0:
            raise ValueError("workers must be >= 0")
        n = workers or os.cpu_count() or 1
        mif = int(max_in_flight) if max_in_flight else _default_in_flight(n)
        if mif < 1:
            raise ValueError("max_in_flight must be >= 1")
        self._mgr = _track(_fpp.Manager(
            "process", workers=workers, queue_capacity=_pow2(mif), max_arg_size=max_arg_size,
            max_result_size=max_result_size, keep_fds=keep_fds,
            **_limits(task_timeout, max_tasks_per_worker, max_worker_rss_mib)))
        self._mif = mif
        self._max_result = max_result_size
        self._lock = threading.RLock()
        self._handlers = {}
        self._mgr.open(mif)

    # ----------------------------------------------------------------- running

    @property
    def workers(self):
        return self._mgr.workers

    @property
    def max_in_flight(self):
        return self._mif

    def _pump(self, timeout):
        """Collects finished tasks (waits up to timeout for the first). Lock held."""
        try:
            batch = self._mgr.collect(timeout)
        except BaseException:
            self._abort()
            raise
        if batch is None:
            return False
        handlers = self._handlers
        for tid, code, value in batch:
            h = handlers.pop(tid, None)
            if h is not None:
                h._set(code, value)
        return True

    def _abort(self):
        """Stops everything: busy workers are killed, pending tasks fail as cancelled."""
        handlers, self._handlers = self._handlers, {}
        self._mgr.reset()
        if not self._mgr.closed:
            self._mgr.open(self._mif)
        for h in handlers.values():
            h._set(_fpp.CODE_FPP + _fpp.CANCELLED, ("cancelled: the pool was stopped", 0))

    def _room(self):
        """Waits until a task can be submitted without blocking in C. Lock held."""
        while len(self._handlers) >= self._mif:
            self._pump(None)

    def _wait_for(self, fut, timeout):
        deadline = None if timeout is None else time.monotonic() + timeout
        while fut._state == _PENDING:
            left = None
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("the task is not finished after %s s" % timeout)
            # Another thread may be collecting (for every future): wait for the lock no
            # longer than our own timeout.
            if not self._lock.acquire(timeout=-1 if left is None else left):
                continue
            try:
                if fut._state != _PENDING:
                    break
                if self._mgr.closed:
                    raise RuntimeError("the pool is closed")
                self._pump(left)
            finally:
                self._lock.release()

    def submit(self, fn, *args, **kwargs):
        """Runs fn(*args, **kwargs) in a worker; returns a :class:`Future`."""
        payload = _codec.encode_call(fn, args, kwargs)
        fut = Future(self)
        with self._lock:
            self._room()
            tid = self._mgr.submit(payload)
            self._handlers[tid] = fut
        return fut

    def _map(self, fn, iterable, chunksize, ordered, star):
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1")
        if _codec.headers(fn) is None:
            raise TypeError("fpp.ProcessPool map functions must be module-level functions "
                            "(got %r); wrap other callables in one" % (fn,))
        return self._map_gen(fn, iter(iterable), chunksize, ordered, star)

    def _map_gen(self, fn, it, chunksize, ordered, star):
        m = _MapState(ordered, chunksize)
        window = self._mif
        budget = self._max_result
        index = 0       # next chunk to send
        want = 0        # next chunk to yield (ordered)
        exhausted = False
        islice = itertools.islice
        encode = _codec.encode_chunk
        handlers = self._handlers
        try:
            while True:
                with self._lock:
                    handlers = self._handlers
                    while m.more and len(handlers) < self._mif:
                        ch = m.more.popleft()
                        piece = ch.items[:m.chunksize]
                        ch.sent = len(piece)
                        handlers[self._mgr.submit(encode(fn, piece, star, budget))] = ch
                        m.outstanding += 1
                    while (not exhausted and m.outstanding + len(m.ready) + len(m.more) < window
                           and len(handlers) < self._mif):
                        items = list(islice(it, m.chunksize))
                        if not items:
                            exhausted = True
                            break
                        tid = self._mgr.submit(encode(fn, items, star, budget))
                        handlers[tid] = _Chunk(m, index, items)
                        index += 1
                        m.outstanding += 1
                if ordered:
                    while want in m.ready:
                        results, err = _chunk_results(m.ready.pop(want))
                        want += 1
                        yield from results
                        if err is not None:
                            raise err
                else:
                    while m.ready:
                        results, err = _chunk_results(m.ready.popleft())
                        yield from results
                        if err is not None:
                            raise err
                if exhausted and m.outstanding == 0 and not m.ready and not m.more:
                    return
                with self._lock:
                    if m.yieldable(want) or (m.more and len(self._handlers) < self._mif):
                        continue
                    if not self._pump(None) and m.outstanding:
                        raise RuntimeError("fpp: chunks lost (the run ended under a map)")
        finally:
            m.dead = True  # chunks still running are dropped when they finish

    def map(self, fn, iterable, chunksize=1):
        """fn(item) for each item, results in input order. Lazy: a generator that reads the
        iterable as room frees. A raised exception (or WorkerCrashed...) is raised at that
        item's place, after the results before it."""
        return self._map(fn, iterable, chunksize, True, False)

    def starmap(self, fn, iterable, chunksize=1):
        """Like map, with fn(*item)."""
        return self._map(fn, iterable, chunksize, True, True)

    def imap_unordered(self, fn, iterable, chunksize=1):
        """Like map, results in completion order (items of a chunk stay together)."""
        return self._map(fn, iterable, chunksize, False, False)

    def join(self):
        """Waits until every submitted task has finished (their futures hold the outcomes)."""
        with self._lock:
            while self._handlers:
                self._pump(None)

    def close(self):
        """Stops the workers; pending futures fail with TaskCancelled. Idempotent."""
        with self._lock:
            handlers, self._handlers = self._handlers, {}
            self._mgr.close()
            for h in handlers.values():
                h._set(_fpp.CODE_FPP + _fpp.CANCELLED, ("cancelled: the pool was closed", 0))

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.join()
        self.close()

    def __repr__(self):
        return "<fpp.ProcessPool workers=%d%s>" % (self.workers, " closed" if self._mgr.closed else "")


def _limits(task_timeout, max_tasks_per_worker, max_worker_rss_mib):
    """The Manager's keyword arguments for these options, checked."""
    if task_timeout is not None and not task_timeout > 0:
        raise ValueError("task_timeout must be a number of seconds > 0, or None")
    if max_tasks_per_worker < 0 or max_worker_rss_mib < 0:
        raise ValueError("max_tasks_per_worker and max_worker_rss_mib must be >= 0")
    ms = int(round(task_timeout * 1000)) if task_timeout else 0
    if ms > 0xFFFFFFFF:
        raise ValueError("task_timeout is too long")
    return dict(task_timeout_ms=max(ms, 1) if task_timeout else 0,
                max_tasks_per_worker=int(max_tasks_per_worker),
                max_worker_rss_kib=int(max_worker_rss_mib * 1024))
