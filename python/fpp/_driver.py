"""The collector thread: one per pool that hands out futures, the only thread that calls into
its Manager while it runs.

Owns: the queue of tasks not yet given to fpp, the tasks fpp has (at most ``max_in_flight``:
fpp's submit then never waits), their cancel-table tickets, and the delivery of outcomes to
their handlers (a :class:`concurrent.futures.Future` subclass for ``submit``, a map chunk).
Any thread may put a task (``put``), cancel one (``cancel``: exact, see below), end the pool
(``shutdown``, ``terminate``); only the collector submits to fpp and collects from it.

Why a thread: a :class:`concurrent.futures.Future` is waited on by ``Future.result``, but also
by ``concurrent.futures.wait``/``as_completed`` and asyncio, which know nothing of fpp; so
someone must collect while everyone else waits. The collector waits in C without the GIL
(``collect(wake=True)``) and returns within ``WAKE_SLICE_MS`` when a task is put; while it is
idle (nothing in fpp, nothing queued) it sleeps on a condition and costs nothing.

Cancelling. A task still in the queue is dropped. A task fpp has carries a ticket (a slot of
the Manager's cancel table, armed before fpp sees the task): one compare-and-swap against the
worker's own when it starts decides whether it is cancelled (it will not run: the worker
answers "skipped" without calling it) or running (cancel returns False, as
concurrent.futures' does for a running call). Thread pools: a task not yet started is popped
from ``_codec._calls``, which its thread then finds empty.

Ending. ``shutdown`` refuses new tasks and lets the collector finish what is queued and
running, then stop the workers (``cancel_futures``: what has not started is cancelled first).
``terminate`` cancels everything and kills the busy workers at once (fpp's task manager is
freed, which is what Ctrl-C does).
"""
import itertools
import os
import threading
import time
import weakref
from collections import deque

from . import _codec, _fpp
from .errors import TaskCancelled, task_error

# Where a handler's task is (handler._fpp_where).
QUEUED, IN_FPP, DONE = 0, 1, 2

# Every driver alive (a running collector keeps its own alive): the exit handler ends them.
drivers = weakref.WeakSet()


class Driver:
    """The collector of one Manager. ``idle_exit``: when nothing is left, the collector ends
    the Manager's run and its thread (fpp.futureproof's executors, whose Manager then serves
    a TaskManager); otherwise both stay until shutdown (fpp.ProcessPool)."""

    def __init__(self, mgr, max_in_flight, name="fpp-collector", idle_exit=False):
        self.mgr = mgr
        self.process = mgr.kind != "thread"  # process or mpi: payloads of bytes
        self.mif = max_in_flight
        self.name = name
        self.idle_exit = idle_exit
        self.lock = threading.Lock()
        self.idle_cond = threading.Condition(self.lock)
        self.queue = deque()      # (item, handler) not yet given to fpp
        self.inflight = {}        # fpp task id -> handler (collector only)
        self.handing = 0          # tasks taken from the queue, not yet in inflight
        self.closed = False       # no new tasks
        self.kill = False         # terminate: stop everything now
        self.finished = False     # the Manager is closed
        self.idle = False         # the collector sleeps on idle_cond
        self.thread = None        # the collector, while there is one
        self.previous = None      # an idle_exit collector on its way out
        self.error = None         # what broke the collector, if anything
        self.lent = None          # lend(): the closer of the journaled map that has the Manager
        self.maps = weakref.WeakSet()  # plain maps still open: they may put chunks after shutdown
        self.settled = threading.Condition(self.lock)  # the collector went idle or ended
        self.pid = os.getpid()
        self.gens = itertools.count(1)
        self.free = list(range(mgr.tickets, 0, -1)) if self.process else []
        self.asleep = threading.Event()  # the collector has gone to sleep (once)
        drivers.add(self)
        if not idle_exit:
            # Started now and asleep before the first task comes: that task, and every one put
            # while the collector sleeps, goes to fpp straight from put() (see there).
            with self.lock:
                self._wake_locked()
            self.asleep.wait()

    # ------------------------------------------------------------ any thread

    def put(self, item, handler, from_map=None):
        """Queues a task: item is the payload parts (process) or (fn, args, kwargs) (threads).
        Raises RuntimeError once shut down (but for a map opened before: from_map). While the
        collector sleeps (nothing was running), this thread gives the task to fpp itself, so
        that it starts at once."""
        failed = None
        with self.lock:
            self._check_locked(from_map)
            handler._fpp_where = QUEUED
            handler._fpp_driver = self
            if self.idle and not self.queue and len(self.inflight) < self.mif and self.lent is None:
                failed = self._submit([self._ticket(item, handler)])
            else:
                self.queue.append((item, handler))
            self._wake_locked()
        if failed:
            self._fail(failed)

    def put_many(self, pairs, from_map=None):
        """put() for several (item, handler) pairs: one lock, one wake."""
        failed = None
        with self.lock:
            self._check_locked(from_map)
            for item, h in pairs:
                h._fpp_where = QUEUED
                h._fpp_driver = self
            if (self.idle and not self.queue and len(self.inflight) + len(pairs) <= self.mif
                    and self.lent is None):
                failed = self._submit([self._ticket(item, h) for item, h in pairs])
            else:
                self.queue.extend(pairs)
            self._wake_locked()
        if failed:
            self._fail(failed)

    def _check_locked(self, from_map=None):
        if self.error is not None:
            raise RuntimeError("this fpp pool failed: %s: %s" % (type(self.error).__name__, self.error))
        if self.closed and (self.kill or from_map is None or from_map not in self.maps):
            raise RuntimeError("cannot schedule new futures after shutdown")
        if self.pid != os.getpid():
            raise RuntimeError("this fpp pool belongs to another process (it was created before "
                               "a fork); create a new one here")

    def _wake_locked(self):
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, args=(self.previous,), name=self.name,
                                           daemon=True)
            self.previous = None
            self.thread.start()
        elif self.idle:
            self.idle_cond.notify()
        else:
            self.mgr.wake()

    def lend(self, closer):
        """Hands the Manager to the calling thread for a run of its own (a journaled map, whose
        task ids must be its chunk positions): waits until everything submitted before has
        finished and the collector sleeps, ends the pool's run and returns the Manager. Until
        give_back(), tasks put are queued (they run after it) and the collector stays off the
        Manager. closer(): stops the borrower (called by shutdown and terminate)."""
        while True:
            with self.lock:
                self._check_locked()
                if self.lent is not None:
                    raise RuntimeError("this pool is running a journaled map already (one at a "
                                       "time): finish or close it first")
                if self.idle and not self.queue and not self.inflight and not self.handing:
                    self.lent = closer
                    self.mgr.reset()
                    return self.mgr
            time.sleep(0.002)

    def give_back(self):
        """Ends the borrower's run (unfinished tasks cancelled; the journal written and
        closed) and lets the collector have the Manager again."""
        with self.lock:
            if self.lent is None:
                return
            try:
                if self.pid == os.getpid():
                    self.mgr.reset()
            finally:
                self.lent = None
                if self.queue or self.closed:
                    self._wake_locked()

    # Plain maps (pool.py, _Map) read their input lazily, so a map opened before shutdown may
    # still put chunks after it: shutdown waits for what was submitted, not for the rest of
    # an open map's input (which may never end), and the workers stop when the last open map
    # ends (read to its end, closed or dropped), as concurrent.futures' map, which submits
    # everything at once, yields all after shutdown. terminate() ends them.

    def map_open(self, m):
        """Registers map m (it may put after shutdown); RuntimeError once shut down."""
        with self.lock:
            self._check_locked()
            self.maps.add(m)

    def map_done(self, m):
        """Map m puts nothing more: the last one ends a shut-down pool."""
        with self.lock:
            if m not in self.maps:
                return
            self.maps.discard(m)
            if self.closed and not self.maps and not self.finished:
                self._wake_locked()

    def end_maps(self):
        """Closes every open map (at interpreter exit: nobody will read them)."""
        with self.lock:
            maps = list(self.maps)
        for m in maps:
            try:
                m.close()
            except Exception:
                pass

    def _stop_borrower(self):
        closer = self.lent
        if closer is not None:
            try:
                closer()
            except Exception:  # it runs in another thread now: shutdown waits for it
                pass

    def cancel(self, handler):
        """True: the task will not run (the caller tells its handler); False: it runs or ran."""
        with self.lock:
            where = handler._fpp_where
            if where == QUEUED:
                handler._fpp_where = DONE  # the collector drops it from the queue
                return True
            if where != IN_FPP:
                return False
            ticket = handler._fpp_ticket
        if not ticket:
            return False
        if self.process:
            return self.mgr.cancel_ticket(*ticket)
        return _codec.thread_cancel(ticket)

    def started(self, handler):
        """True if a worker is running the task now (process pools)."""
        t = handler._fpp_ticket
        if handler._fpp_where != IN_FPP or not self.process or not t:
            return False
        return self.mgr.ticket_state(*t) == 1

    def cancel_all(self, spare=0):
        """Cancels every task not started yet, but the oldest `spare` that fpp has; returns
        their handlers."""
        out = []
        with self.lock:
            while self.queue:
                item, h = self.queue.popleft()
                if h._fpp_where == QUEUED:
                    h._fpp_where = DONE
                    out.append(h)
            infpp = list(self.inflight.values())[spare:]  # in submission order
        for h in infpp:
            if self.cancel(h):
                out.append(h)
        return out

    def busy(self):
        """True while tasks are queued or in fpp."""
        with self.lock:
            return bool(self.queue or self.inflight or self.handing)

    def wait_idle_exit(self):
        """idle_exit: waits until no collector uses the Manager (False if tasks are left)."""
        with self.lock:
            if self.queue or self.inflight or self.handing:
                return False
            t, self.previous = self.thread or self.previous, None
        if t is not None and t is not threading.current_thread():
            t.join()
        return True

    def shutdown(self, wait=True, cancel_futures=False):
        """No new tasks; the collector finishes what is queued and running, then stops the
        workers. wait: until then. cancel_futures: what has not started is cancelled first,
        but for the tasks next in line, one per worker (the oldest not finished), which run:
        as in concurrent.futures, whose workers' next tasks count as started. A journaled map
        still being read is closed (its unfinished chunks cancelled; the journal keeps what
        finished)."""
        with self.lock:
            self.closed = True
        self._stop_borrower()
        if cancel_futures:
            for h in self.cancel_all(spare=self.mgr.workers):
                h._fpp_skipped()
        self._end(wait)

    def terminate(self):
        """Cancels everything unfinished, kills the busy workers, stops the pool; returns once
        done."""
        with self.lock:
            self.closed = True
            self.kill = True
        self._stop_borrower()
        for h in self.cancel_all():
            h._fpp_skipped()
        self._end(True)

    def _end(self, wait):
        with self.lock:
            t = self.thread
            if t is None:
                prev, self.previous = self.previous, None
            else:
                self._wake_locked()
        if t is None:  # no collector: close here (or the last open map's end will)
            if prev is not None and prev is not threading.current_thread():
                prev.join()
            with self.lock:
                if self.maps and not self.kill:
                    return
            self._close()
            return
        if wait and t is not threading.current_thread():
            # Until the collector ends, or, with maps open, has nothing left to do (what an
            # open map puts later is not waited for: it may be endless, read by this thread).
            with self.lock:
                while (self.maps and not self.kill and t.is_alive()
                       and not (self.idle and not self.queue and not self.inflight and not self.handing)):
                    self.settled.wait(0.05)
                maps_open = self.maps and not self.kill
            if not maps_open:
                t.join()

    def _close(self):
        with self.lock:
            if self.finished:
                return
            self.finished = True
        if self.pid == os.getpid():
            self.mgr.close()
            _fpp.trim_buffers()

    # ------------------------------------------------------------ the collector

    def _take(self):
        """Under the lock: the tasks to give fpp now; None: the collector ends. Sleeps while
        there is nothing to do."""
        batch = []
        while True:
            if self.lent is not None:  # a journaled map has the Manager: wait for it
                self.idle = True
                try:
                    self.idle_cond.wait()
                finally:
                    self.idle = False
                continue
            if self.kill:
                return None
            room = self.mif - len(self.inflight)
            q = self.queue
            while room > 0 and q:
                item, h = q.popleft()
                if h._fpp_where != QUEUED:  # cancelled while queued
                    continue
                batch.append(self._ticket(item, h))
                room -= 1
            if batch or self.inflight:
                self.handing = len(batch)
                return batch
            if self.closed and not self.maps:
                return None
            if self.idle_exit:
                self.previous = self.thread
                self.thread = None
                return None
            self.idle = True
            self.asleep.set()
            self.settled.notify_all()
            try:
                # Shut down with maps open: look again now and then (a map's end wakes us).
                self.idle_cond.wait(1.0 if self.closed else None)
            finally:
                self.idle = False

    def _ticket(self, item, h):
        """Under the lock: h's task is about to be given to fpp: its ticket (a cancel-table
        slot armed, or a thread sequence number)."""
        if self.process:
            slot = self.free.pop() if self.free else 0
            if slot:
                gen = next(self.gens)
                self.mgr.arm(slot, gen)
                h._fpp_ticket = (slot, gen)
            else:
                h._fpp_ticket = None
        else:
            seq = next(_codec._seqs)
            _codec._calls[seq] = item
            item = seq
            h._fpp_ticket = seq
        h._fpp_where = IN_FPP
        return item, h

    def _submit(self, batch):
        """Gives batch to fpp (by the one thread using the Manager now); returns the
        [(handler, exception)] of the tasks fpp refused (too big, ...), for _fail."""
        mgr = self.mgr
        if not mgr.running:
            mgr.open(self.mif)
        process = self.process
        inflight = self.inflight
        failed = []
        for item, h in batch:
            try:
                t = h._fpp_ticket
                tid = mgr.submit(item, *t) if process and t else mgr.submit(item)
            except Exception as exc:  # this task's failure
                self._release(h)
                if not process:
                    _codec._calls.pop(item, None)
                h._fpp_where = DONE
                failed.append((h, exc))
                continue
            inflight[tid] = h
        return failed

    @staticmethod
    def _fail(failed):
        for h, exc in failed:
            h._fpp_fail(exc)

    def _run(self, previous):
        if previous is not None:
            previous.join()  # the collector before this one still had the Manager
        mgr = self.mgr
        inflight = self.inflight
        fail = None
        try:
            while True:
                with self.lock:
                    batch = self._take()
                if batch is None:
                    break
                if batch:
                    self._fail(self._submit(batch))
                self.handing = 0
                del batch
                if not inflight:
                    continue
                got = mgr.collect(None, 256, True)
                if got is None:
                    raise RuntimeError("fpp: %d task(s) lost by the pool" % len(inflight))
                for tid, code, value in got:
                    h = inflight.pop(tid)
                    self._release(h)
                    h._fpp_where = DONE
                    if code == _codec.CODE_SKIPPED or code == _fpp.CODE_FPP + _fpp.CANCELLED:
                        h._fpp_skipped()
                    else:
                        h._fpp_set(code, value)
                # Nothing of a result may stay here while the collector waits.
                got = h = code = value = None
        except BaseException as exc:  # the pool is unusable: say why on every task
            fail = exc
        self._stop(fail)

    def _release(self, h):
        t = h._fpp_ticket
        if self.process and t:
            self.free.append(t[0])

    def _stop(self, fail):
        """The collector's last act: what is left is cancelled (terminate) or failed (an
        error), the run ends (busy workers are killed), and once shut down the workers stop."""
        with self.lock:
            if fail is not None:
                self.error = fail
                self.closed = True
            left = list(self.inflight.values())
            self.inflight.clear()
            while self.queue:
                left.append(self.queue.popleft()[1])
            closing = self.closed
            self.settled.notify_all()
        if left and not self.process:
            _codec.thread_forget([h._fpp_ticket for h in left if isinstance(h._fpp_ticket, int)])
        try:
            if self.pid == os.getpid():
                self.mgr.reset()
        except Exception:
            pass
        for h in left:
            if h._fpp_where == DONE and fail is None:
                continue
            h._fpp_where = DONE
            if fail is None:
                h._fpp_skipped()
            else:
                h._fpp_fail(TaskCancelled("cancelled: the pool failed (%s: %s)" % (type(fail).__name__, fail)))
        if closing:
            self._close()


def outcome(code, value):
    """(ok, value) for a (code, value) from the C side."""
    if code == _fpp.CODE_OK:
        return True, value
    if code == _fpp.CODE_EXC:
        return False, value
    if code >= _fpp.CODE_FPP:
        message, sig = value
        return False, task_error(code - _fpp.CODE_FPP, message, sig)
    return False, value  # CODE_PARTIAL: handled by chunks
