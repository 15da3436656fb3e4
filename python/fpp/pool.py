"""fpp.ProcessPool: a :class:`concurrent.futures.Executor` whose workers are fpp's
crash-isolated processes.

What concurrent.futures code gets: ``submit`` returns a :class:`concurrent.futures.Future`
(so ``concurrent.futures.wait``/``as_completed`` and asyncio's ``run_in_executor`` and
``wrap_future`` work), ``map(fn, *iterables, timeout=None, chunksize=1)``, ``shutdown(wait=True,
*, cancel_futures=False)``, the context manager, ``max_workers``, ``initializer``,
``initargs``, ``max_tasks_per_child``; a callable's exception comes back as itself with the
worker's traceback as its ``__cause__``; pickling errors, on either side, are the future's.
The names it shares with :class:`multiprocessing.pool.Pool` mean what they mean there:
``close()`` then ``join()`` finishes the pending work and stops the workers, ``terminate()``
stops at once; ``imap``, ``imap_unordered`` (lazy iterators) and ``starmap`` (a list).

What fpp adds:

* A callable that crashes its worker (a segfault, ``os._exit``) fails only its own task with
  :class:`fpp.WorkerCrashed` (naming the signal; it is also a ``BrokenProcessPool``, so code
  written for concurrent.futures catches it); the worker is replaced and the pool is never
  "broken". ``task_timeout`` kills a task that runs too long (:class:`fpp.TaskTimeout`).
* ``Future.cancel()`` is exact: a task no worker has started is cancelled and never runs, even
  when it is already queued in a worker's ring; a running one is not (False), as in
  concurrent.futures. ``Future.running()`` says whether a worker runs it now.
* A function is pickled once in the parent (as a reference) and resolved once per worker,
  not per task; ``map`` sends ``chunksize`` items as one task.
* ``map``/``imap``/``imap_unordered`` read their input lazily: at most ``max_in_flight``
  chunks ahead of the consumer (concurrent.futures reads it all at once), so a map over
  ``itertools.count()`` runs in constant memory; the first window is submitted when ``map`` is
  called. ``shutdown`` waits for what was submitted; the rest of an open map is read (and
  run) as it is iterated, also after shutdown (the workers stop when the last open map ends:
  read to its end, closed or dropped), so that ``with ProcessPool() as p: it = p.map(...)``
  then reading ``it`` yields everything, as in concurrent.futures. A journaled map is closed
  by shutdown instead (what finished is in its journal).
* Big buffers (numpy arrays, bytes, bytearrays) travel out of band both ways (pickle protocol
  5): copied once into fpp's shared memory and once out of it, never into a pickle.
* One Ctrl-C stops everything: a KeyboardInterrupt out of a ``with`` block, or the program
  ending on one, terminates the pool (busy workers are killed at once) instead of waiting.

Threads: any thread may submit, wait, cancel and shut down. A collector thread (see
:mod:`fpp._driver`) hands tasks to fpp and delivers outcomes; done-callbacks run in it.
"""
import atexit
import concurrent.futures as cf
import itertools
import os
import pickle
import queue
import sys
import threading
import time
import weakref
from collections import deque
from concurrent.futures._base import CANCELLED, PENDING

from . import _codec, _fpp, _track
from . import _driver as _driver_mod
from ._driver import DONE, Driver, outcome
from .errors import TaskCancelled

_MIB = 1 << 20
_GIB = 1 << 30
# The largest pickled argument (out-of-band buffers included) a pool takes by default: all
# that fpp allows. fpp reserves twice that for the arguments in flight and backs it as it is
# used (but for its first 64 MiB, backed when the pool is created: see the README).
DEFAULT_MAX_ARG_SIZE = _GIB
# The largest result by default. Not more: each worker's result memory is four times this,
# written round and round, so all of it ends up resident (a 1 GiB default held 3 GiB of
# shared memory per worker after 3000 1-MiB results).
DEFAULT_MAX_RESULT_SIZE = 4 * _MIB


def _pow2(n):
    p = 1
    while p < n:
        p <<= 1
    return p


def _default_in_flight(workers):
    return _pow2(max(128, 64 * workers))


_notify_lock = threading.Lock()


class Future(cf.Future):
    """A :class:`concurrent.futures.Future` whose ``cancel()`` reaches the worker: a task no
    worker has started is cancelled for good (True); a running or finished one is not
    (False)."""

    def __init__(self):
        super().__init__()
        self._fpp_driver = None
        self._fpp_where = DONE
        self._fpp_ticket = None

    def cancel(self):
        d = self._fpp_driver
        if d is not None and self._state == PENDING:
            if not d.cancel(self):
                return False
            self._fpp_skipped()
            return True
        return super().cancel()

    def running(self):
        if self._state == PENDING and self._fpp_driver is not None:
            return self._fpp_driver.started(self)
        return super().running()

    # The driver's handler protocol (called by the collector thread, or by cancel).
    def _fpp_skipped(self):
        """Cancelled for good: state CANCELLED, callbacks run, and (at once, not when a
        worker would have taken it) concurrent.futures.wait()/as_completed() told."""
        if not cf.Future.cancel(self):
            return
        with _notify_lock:  # one notification, whoever gets here (canceller, collector)
            if self._state == CANCELLED:
                self.set_running_or_notify_cancel()

    def _fpp_set(self, code, value):
        ok, v = outcome(code, value)
        try:
            if ok:
                self.set_result(v)
            else:
                self.set_exception(v)
        except cf.InvalidStateError:  # cancelled meanwhile
            pass

    def _fpp_fail(self, exc):
        try:
            self.set_exception(exc)
        except cf.InvalidStateError:
            pass


# ------------------------------------------------------------------------ maps


class _Chunk:
    """One map chunk: its items stay here until it is done, in case the worker sends back
    only part of it (results over max_result_size: the rest goes again)."""

    __slots__ = ("q", "index", "items", "sent", "acc", "code", "value",
                 "_fpp_where", "_fpp_driver", "_fpp_ticket")

    def __init__(self, q, index, items):
        self.q = q
        self.index = index
        self.items = items
        self.sent = len(items)  # how many of items the task in flight carries
        self.acc = None
        self.code = None
        self.value = None
        self._fpp_where = DONE
        self._fpp_driver = None
        self._fpp_ticket = None

    def _fpp_set(self, code, value):
        self.code = code
        self.value = value
        self.q.put(self)

    def _fpp_fail(self, exc):
        self._fpp_set(_fpp.CODE_EXC, exc)

    def _fpp_skipped(self):
        self._fpp_set(_codec.CODE_SKIPPED, None)


class _Map:
    """The state of one map/imap/imap_unordered: submits the first window of chunks when the
    map is made, then a chunk per chunk consumed; hands out finished chunks in input order
    (ordered) or as they finish. Its results come out of _results(), a generator (so that
    handing out an item costs no Python call). Closing it (the generator closed or dropped, a
    timeout, an exception) cancels the chunks not started."""

    def __init__(self, pool, fn, it, chunksize, ordered, star, timeout):
        self._driver = pool._driver
        self._fn = fn
        self._it = it
        self._chunksize = chunksize
        self._ordered = ordered
        self._star = star
        self._budget = pool._max_result
        self._window = pool._mif
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._q = queue.SimpleQueue()
        self._live = {}       # chunk index -> chunk in flight
        self._ready = {}      # index -> finished chunk not yet handed out
        self._more = deque()  # chunks done in part, to send again
        self._index = 0       # next chunk to send
        self._want = 0        # next chunk to hand out (ordered)
        self._exhausted = False
        self._closed = False
        self._driver.map_open(self)
        self._fill()

    def _send(self, ch, items):
        ch.sent = len(items)
        self._driver.put(_codec.encode_chunk(self._fn, items, self._star, self._budget), ch, self)

    def _fill(self):
        """Sends chunks up to the window: once it is a quarter empty, in one batch (one wake
        of the collector for many chunks, not one per chunk handed out)."""
        while self._more and len(self._live) + len(self._ready) < self._window:
            ch = self._more.popleft()
            self._live[ch.index] = ch
            self._send(ch, ch.items[:self._chunksize])
        if self._exhausted:
            return
        room = self._window - len(self._live) - len(self._ready) - len(self._more)
        if room < max(1, self._window // 4) and (self._live or self._ready or self._more):
            return
        batch = []
        encode, fn, star, budget, cs = _codec.encode_chunk, self._fn, self._star, self._budget, self._chunksize
        for _ in range(room):
            items = list(itertools.islice(self._it, cs))
            if not items:
                self._exhausted = True
                self._it = None
                break
            ch = _Chunk(self._q, self._index, items)
            self._index += 1
            try:
                parts = encode(fn, items, star, budget)
            except Exception as exc:
                # An item that cannot be pickled: its chunk fails with it, in its place (the
                # chunks before it are sent and come out first), and the input ends there.
                ch.code, ch.value, ch.sent = _fpp.CODE_EXC, exc, 0
                self._ready[ch.index] = ch
                self._exhausted = True
                self._it = None
                break
            batch.append((parts, ch))
        if batch:
            self._driver.put_many(batch, self)
            for parts, ch in batch:
                self._live[ch.index] = ch

    def _arrived(self, ch):
        """A chunk came back: file it (or send the rest of it again)."""
        code = ch.code
        if code == _codec.CODE_MORE:
            results, k = ch.value
            self._chunksize = max(1, min(self._chunksize, k))  # later chunks: what fits
        elif code == _fpp.CODE_OK and ch.sent < len(ch.items):
            results, k = ch.value, ch.sent
        else:
            k = 0
        if k:
            if ch.acc is None:
                ch.acc = []
            ch.acc.extend(results)
            ch.items = ch.items[k:]
            self._more.append(ch)
            return
        del self._live[ch.index]
        self._ready[ch.index] = ch

    def _next_chunk(self):
        """The next chunk to hand out, waiting for it (None: nothing is left)."""
        while True:
            if self._ordered:
                ch = self._ready.pop(self._want, None)
                if ch is not None:
                    self._want += 1
                    return ch
            elif self._ready:
                # As they finish; an item that could not be sent (sent == 0) comes out last.
                idx = next((i for i, c in self._ready.items() if c.sent), None)
                if idx is None and not self._live and not self._more:
                    idx = next(iter(self._ready))
                if idx is not None:
                    return self._ready.pop(idx)
            self._fill()
            if not self._live and not self._more:
                if self._exhausted and not self._ready:
                    return None
                continue
            timeout = None
            if self._deadline is not None:
                timeout = self._deadline - time.monotonic()
                if timeout <= 0:
                    raise TimeoutError()
            try:
                ch = self._q.get(timeout=timeout)
            except queue.Empty:
                raise TimeoutError() from None
            self._arrived(ch)

    def _results(self):
        try:
            while True:
                ch = self._next_chunk()
                if ch is None:
                    return
                code, value = ch.code, ch.value
                if code == _fpp.CODE_OK:
                    results, err = value, None
                elif code == _fpp.CODE_PARTIAL:
                    results, err = value
                elif code == _codec.CODE_SKIPPED:
                    results, err = (), TaskCancelled("cancelled: the pool was shut down or terminated")
                else:
                    results, err = (), outcome(code, value)[1]
                if ch.acc:
                    results = ch.acc + list(results)
                del ch, value
                try:
                    self._fill()  # before handing out this chunk: the workers go on meanwhile
                except BaseException as exc:  # the pool ended: what came back still comes out
                    if err is None:
                        err = exc
                if err is not None:
                    yield from results
                    raise err
                if len(results) == 1:
                    yield results.pop()
                else:
                    # Handed out from the end (nothing keeps what was), by C-level iteration.
                    results.reverse()
                    yield from map(results.pop, itertools.repeat(-1, len(results)))
                del results
        finally:
            self.close()

    def close(self):
        """Stops the map: chunks not started are cancelled; running ones finish unseen."""
        if self._closed:
            return
        self._closed = True
        self._it = None
        self._driver.map_done(self)
        live, self._live = self._live, {}
        self._ready.clear()
        self._more.clear()
        for ch in live.values():
            if ch._fpp_driver is not None:
                ch._fpp_driver.cancel(ch)


# ------------------------------------------------------------------------ journaled maps


def _journal_key(fn, chunksize, star, key):
    """The run's fingerprint for fpp's journal: what the ids mean (the function, the chunking)
    and the caller's key."""
    name = "%s:%s" % (getattr(fn, "__module__", None) or "?",
                      getattr(fn, "__qualname__", None) or type(fn).__qualname__)
    return "fpp.ProcessPool.map %s chunksize=%d star=%d key=%s" % (name, chunksize, int(star), key)


def _replayed(rec):
    """(code, value) of a chunk an earlier run finished, from its journal record."""
    status, sig, _attempts, data, rlen, error = rec
    if status == _fpp.DONE:
        if not data or len(data) != rlen:
            return _fpp.CODE_FPP + _fpp.FAILED, (
                "fpp: an earlier run finished this chunk but the journal holds no result for it "
                "(%d bytes)" % rlen, 0)
        view = memoryview(data)
        if data[0] == _codec._R:
            return _fpp.CODE_OK, pickle.loads(view[1:])
        return _codec.decode(view)
    return _fpp.CODE_FPP + status, (error or "failed in an earlier run", sig)


class _JournalMap:
    """A map with fpp's task journal: it runs in a run of its own on the pool's Manager,
    driven by the thread that reads it (lent by the collector: see Driver.lend), so that its
    task ids are its chunk positions. Chunks an earlier run finished are not run again: their
    outcome (results, or the exception) is read back from the journal."""

    def __init__(self, pool, fn, it, chunksize, ordered, star, timeout, journal, key,
                 rerun_failed, flush_ms):
        self.pool = pool
        self.fn = fn
        self.it = it
        self.cs = chunksize
        self.ordered = ordered
        self.star = star
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.journal = os.fspath(journal)
        self.key = _journal_key(fn, chunksize, star, key)
        self.rerun_failed = bool(rerun_failed)
        self.flush_ms = int(flush_ms)
        self.skipped = 0  # chunks an earlier run finished (read back, not run)
        self.ran = 0      # chunks this run submitted
        self.gen = None   # a weak reference to results(), the generator handed out

    def close(self):
        g = self.gen() if self.gen is not None else None
        if g is not None:
            g.close()

    def results(self):
        driver = self.pool._driver
        # Nothing but the caller may keep the map alive: the driver's closer and this object
        # hold it weakly, so a map dropped unfinished (a break out of a for loop) is closed at
        # once and gives the pool back.
        close = weakref.WeakMethod(self.close)

        def closer():
            c = close()
            if c is not None:
                c()

        mgr = driver.lend(closer)
        try:
            mgr.open(self.pool._mif, journal=self.journal, journal_key=self.key,
                     rerun_failed=self.rerun_failed,
                     journal_result_max=min(self.pool._max_result, _GIB),
                     journal_flush_ms=self.flush_ms)
            yield from self._loop(mgr)
        finally:
            self.it = None
            driver.give_back()

    def _loop(self, mgr):
        window = self.pool._mif
        encode, fn, star, cs = _codec.encode_chunk, self.fn, self.star, self.cs
        live = set()   # chunk ids in fpp
        ready = {}     # chunk id -> (code, value)
        want = 0       # ordered: the next chunk to hand out
        index = 0      # the next chunk id
        exhausted = False
        skipped = mgr.skipped
        while True:
            # Hand out what is ready.
            while ready:
                if self.ordered:
                    if want not in ready:
                        break
                    code, value = ready.pop(want)
                    want += 1
                else:
                    code, value = ready.pop(next(iter(ready)))
                results, err = _chunk_outcome(code, value)
                del value
                yield from results
                del results
                if err is not None:
                    raise err
            # Read and send chunks up to the window (every chunk id its input position).
            while not exhausted and len(live) + len(ready) < window:
                items = list(itertools.islice(self.it, cs))
                if not items:
                    exhausted = True
                    break
                try:
                    # No budget: a chunk is one task, never split (its results must fit
                    # max_result_size), or the ids after it would move.
                    tid = mgr.submit(encode(fn, items, star, 0))
                except Exception as exc:  # cannot be pickled, too big: the map ends there
                    ready[index] = (_fpp.CODE_EXC, exc)
                    exhausted = True
                    break
                if tid != index:
                    raise RuntimeError("fpp: journaled map chunk %d got task id %d" % (index, tid))
                index += 1
                now = mgr.skipped
                if now != skipped:  # an earlier run finished it: its outcome is in the journal
                    skipped = now
                    self.skipped += 1
                    rec = mgr.journal_find(tid)
                    if rec is None:
                        raise RuntimeError("fpp: chunk %d skipped but not in the journal" % tid)
                    ready[tid] = _replayed(rec)
                else:
                    self.ran += 1
                    live.add(tid)
            if ready and (not self.ordered or want in ready):
                continue
            if not live:
                if exhausted and not ready:
                    return
                continue
            timeout = None
            if self.deadline is not None:
                timeout = self.deadline - time.monotonic()
                if timeout <= 0:
                    raise TimeoutError()
            got = mgr.collect(timeout)
            if got is None:
                raise RuntimeError("fpp: %d chunk(s) lost by the journaled map" % len(live))
            if not got and timeout is not None:
                raise TimeoutError()
            for tid, code, value in got:
                live.discard(tid)
                ready[tid] = (code, value)
            del got


def _chunk_outcome(code, value):
    """(results, exception or None) of a finished chunk."""
    if code == _fpp.CODE_OK:
        return value, None
    if code == _fpp.CODE_PARTIAL:
        return value
    if code == _codec.CODE_SKIPPED:
        return (), TaskCancelled("cancelled: the pool was shut down or terminated")
    return (), outcome(code, value)[1]


def _map_iterator(m):
    """The generator a map hands out; a map dropped unstarted is closed when it goes."""
    gen = m._results()
    weakref.finalize(gen, m.close)
    return gen


# ------------------------------------------------------------------------ the pool


_interpreter_exiting = False


class ProcessPool(cf.Executor):
    """A pool of ``max_workers`` processes (default: one per CPU) running Python callables.

    :param max_workers: worker processes (> 0; default: one per CPU).
    :param mp_context: accepted for concurrent.futures compatibility: None or a "fork"
        context (fpp forks its workers from a fork server made now; other start methods do
        not apply).
    :param initializer: called as ``initializer(*initargs)`` in every worker before its first
        task (replacements too). If it raises in the first workers, creating the pool raises
        :class:`fpp.InitializerFailed` (a ``BrokenProcessPool``); later, a worker whose
        initializer fails is not used, and after 5 in a row tasks fail with
        :class:`fpp.WorkerCrashed` "workers cannot start".
    :param max_tasks_per_child: a worker is replaced after this many tasks (None: never).
    :param max_in_flight: tasks (or map chunks) given to fpp at once (more wait in the pool's
        queue); also a map's read-ahead window. Default 64 per worker, at least 128.
    :param max_arg_size: the largest pickled argument (out-of-band buffers included) a task may
        have, in bytes; default 1 GiB (fpp's maximum): reserved, backed as it is used.
    :param max_result_size: the same for results; default 4 MiB (up to 1 GiB; each worker's
        result memory is four times this, and all of it becomes resident with use).
    :param task_timeout: seconds; a task running longer is killed (:class:`fpp.TaskTimeout`).
    :param max_worker_rss_mib: a worker that grew past this is replaced.
    :param keep_fds: True (default): workers keep every file descriptor open when the pool is
        created (e.g. a ``logging.FileHandler``'s); False: only 0, 1, 2.

    Workers are forked now: they see the program as it is now. Functions defined later do not
    exist in them (:class:`fpp.FunctionNotInWorkers` says so)."""

    def __init__(self, max_workers=None, mp_context=None, initializer=None, initargs=(), *,
                 max_tasks_per_child=None, max_in_flight=None,
                 max_arg_size=DEFAULT_MAX_ARG_SIZE, max_result_size=DEFAULT_MAX_RESULT_SIZE,
                 task_timeout=None, max_worker_rss_mib=0, keep_fds=True):
        if max_workers is None:
            max_workers = os.cpu_count() or 1
        elif not isinstance(max_workers, int) or isinstance(max_workers, bool):
            raise TypeError("max_workers must be an int, not %r" % (max_workers,))
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if mp_context is not None:
            method = mp_context.get_start_method(allow_none=False) if hasattr(
                mp_context, "get_start_method") else None
            if method != "fork":
                raise ValueError("fpp.ProcessPool forks its workers (from a fork server made when "
                                 "the pool is created); mp_context must be None or a 'fork' "
                                 "context, not %r" % (mp_context,))
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if max_tasks_per_child is not None:
            if not isinstance(max_tasks_per_child, int) or isinstance(max_tasks_per_child, bool):
                raise TypeError("max_tasks_per_child must be an integer")
            if max_tasks_per_child <= 0:
                raise ValueError("max_tasks_per_child must be >= 1")
        mif = int(max_in_flight) if max_in_flight else _default_in_flight(max_workers)
        if mif < 1:
            raise ValueError("max_in_flight must be >= 1")
        init = _codec.encode_init(initializer, initargs) if initializer is not None else None
        self._mgr = _track(self._manager(
            workers=max_workers, queue_capacity=_pow2(mif), max_arg_size=max_arg_size,
            max_result_size=max_result_size, keep_fds=keep_fds, init=init,
            **_limits(task_timeout, max_tasks_per_child or 0, max_worker_rss_mib)))
        self._max_workers = max_workers
        self._mif = mif
        self._max_result = max_result_size
        self._driver = Driver(self._mgr, mif, name="fpp-collector")
        self._closed = False

    @staticmethod
    def _manager(**options):
        """The fpp executor under the pool (fpp.mpi.MPIPoolExecutor's is MPI's)."""
        return _fpp.Manager("process", **options)

    # ----------------------------------------------------------------- properties

    @property
    def max_workers(self):
        return self._max_workers

    @property
    def workers(self):
        return self._mgr.workers

    @property
    def max_in_flight(self):
        return self._mif

    # ----------------------------------------------------------------- concurrent.futures

    def submit(self, fn, /, *args, **kwargs):
        """Runs fn(*args, **kwargs) in a worker; returns a :class:`concurrent.futures.Future`.
        A callable or arguments that cannot be pickled make that future's exception."""
        if _interpreter_exiting:
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")
        fut = Future()
        try:
            parts = _codec.encode_call(fn, args, kwargs)
        except Exception as exc:
            if self._driver.closed:
                raise RuntimeError("cannot schedule new futures after shutdown") from None
            fut.set_exception(exc)
            return fut
        self._driver.put(parts, fut)
        return fut

    def map(self, fn, *iterables, timeout=None, chunksize=1, journal=None, journal_key="",
            rerun_failed=False, journal_flush_ms=0):
        """fn(*args) for args in zip(*iterables), results in order: an iterator (lazy: see the
        module's text). timeout: seconds from this call after which ``__next__`` raises
        TimeoutError for a result not ready (and the map is cancelled). chunksize: items per
        task.

        journal: a file (fpp's task journal) that makes the map resumable: each chunk's outcome
        is recorded there as it finishes, and a rerun of the same map (the same function,
        chunksize and journal_key) over the same input runs only the chunks not recorded,
        reading the others' results (or exception) back from the file, so it yields the same
        complete sequence. rerun_failed: chunks recorded as failed (worker crashed, timed
        out, fpp failed it) run again; otherwise they fail again as recorded. A journal of
        another map raises :class:`fpp.JournalMismatch`; one that cannot be used
        :class:`fpp.JournalError`. See the README ("Resumable maps")."""
        if len(iterables) == 1:
            return self._map(fn, iterables[0], chunksize, True, False, timeout, journal,
                             journal_key, rerun_failed, journal_flush_ms)
        return self._map(fn, zip(*iterables), chunksize, True, True, timeout, journal,
                         journal_key, rerun_failed, journal_flush_ms)

    def shutdown(self, wait=True, *, cancel_futures=False):
        """No more tasks; what was submitted finishes, then the workers stop. wait: return only
        then. cancel_futures: what no worker has started is cancelled first, but for the next
        task of each worker (the oldest max_workers unfinished), as in concurrent.futures."""
        self._closed = True
        self._driver.shutdown(wait, cancel_futures)

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            self.terminate()  # one Ctrl-C stops everything
        else:
            self.shutdown(wait=True)
        return False

    # ----------------------------------------------------------------- multiprocessing.Pool

    def imap(self, fn, iterable, chunksize=1, **journal):
        """fn(item) for each item, in order; lazy (multiprocessing's imap). journal,
        journal_key, rerun_failed, journal_flush_ms: as map's."""
        return self._map(fn, iterable, chunksize, True, False, None, **journal)

    def imap_unordered(self, fn, iterable, chunksize=1, **journal):
        """Like imap, results as they finish (the items of a chunk stay together)."""
        return self._map(fn, iterable, chunksize, False, False, None, **journal)

    def starmap(self, fn, iterable, chunksize=1, **journal):
        """[fn(*args) for args in iterable], a list (multiprocessing's starmap; chunksize None:
        its choice, about four chunks per worker)."""
        if chunksize is None:
            if not hasattr(iterable, "__len__"):
                iterable = list(iterable)
            chunksize, extra = divmod(len(iterable), self._max_workers * 4)
            chunksize += bool(extra) or not chunksize
        return list(self._map(fn, iterable, chunksize, True, True, None, **journal))

    def close(self):
        """No more tasks; the workers stop once the pending ones are done (call join() to
        wait). As multiprocessing.Pool.close."""
        self._closed = True
        self._driver.shutdown(False)

    def join(self):
        """Waits until the pool is stopped: after close(), every pending task finished; after
        terminate(), at once. As multiprocessing.Pool.join, it needs one of them first."""
        if not self._closed:
            raise ValueError("Pool is still running: call close() or terminate() first")
        self._driver.shutdown(True)

    def terminate(self):
        """Stops now: tasks not started are cancelled, running ones killed (their futures
        cancelled), the workers stopped. As multiprocessing.Pool.terminate."""
        self._closed = True
        self._driver.terminate()

    # ----------------------------------------------------------------- the rest

    def _map(self, fn, iterable, chunksize, ordered, star, timeout, journal=None,
             journal_key="", rerun_failed=False, journal_flush_ms=0):
        if not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError("chunksize must be >= 1")
        if _interpreter_exiting:
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")
        _codec.check_sendable(fn)
        if journal is None:
            return _map_iterator(_Map(self, fn, iter(iterable), chunksize, ordered, star, timeout))
        if self._driver.closed:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if self._mgr.kind != "process":
            raise NotImplementedError("journal= is for fpp.ProcessPool's process workers, "
                                      "not %s" % type(self).__name__)
        jm = _JournalMap(self, fn, iter(iterable), chunksize, ordered, star, timeout, journal,
                         str(journal_key), rerun_failed, journal_flush_ms)
        gen = jm.results()
        jm.gen = weakref.ref(gen)
        return gen

    def __del__(self):
        try:
            if not self._closed:
                self._driver.shutdown(False)
        except Exception:
            pass

    def __repr__(self):
        return "<fpp.ProcessPool max_workers=%d%s>" % (self._max_workers, " closed" if self._closed else "")


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


@atexit.register
def _python_exit():
    """At exit, as concurrent.futures: no new tasks, and every pool finishes what was
    submitted before the interpreter goes. After a KeyboardInterrupt (the one that ends the
    program, or one while waiting here), pools are terminated instead: one Ctrl-C stops
    everything."""
    global _interpreter_exiting
    _interpreter_exiting = True
    ds = list(_driver_mod.drivers)
    last = getattr(sys, "last_type", None)
    interrupted = last is not None and issubclass(last, KeyboardInterrupt)
    for d in ds:
        try:
            if interrupted:
                d.terminate()
            else:
                d.end_maps()  # maps left open: nobody reads them now
                d.shutdown(wait=True)
        except KeyboardInterrupt:
            interrupted = True
            for e in ds:
                try:
                    e.terminate()
                except Exception:
                    pass
        except Exception:
            pass
