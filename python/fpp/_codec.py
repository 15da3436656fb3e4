"""How Python calls travel to fpp's workers and how their outcomes come back.

Process pools. A task's argument is bytes:

    b"C" + <fkey, fingerprint, len(ref)> + ref + pickle((args, kwargs or None))
        a call of a module-level function. ``ref`` is the function pickled once in the parent
        (a reference: module and qualified name); ``fkey`` a number the parent gave it. Each
        worker unpickles ``ref`` once and keeps the function under ``fkey``, so a function is
        not pickled per task, nor looked up again per task in the workers.
    b"M" + <same header> + ref + pickle((items, star, budget))
        a chunk of a map: fn(item) (or fn(*item) with star) for each item, results as a list
        (budget: the pool's max_result_size, see "Y" below).
    b"P" + pickle((fn, args, kwargs or None))
        any other picklable callable (functools.partial, a bound method, ...), pickled per task.

The worker's answer (the task's result bytes) is a tag byte and a pickle:

    b"R" + pickle(result)
    b"E" + pickle((module, qualname, message, traceback text, pickle(exception) or None))
    b"X" + pickle((results so far, the same tuple as "E")): a map chunk that raised.
    b"Y" + pickle((results of the first k items, k)): a map chunk whose results would not fit
        in max_result_size; the parent sends the rest again (and makes its chunks smaller).

The fingerprint (a CRC of the function's code) catches a function redefined after the pool
was created: the workers would otherwise silently run the old definition.

Thread pools. A task's argument is a sequence number into ``_calls`` (fn, args, kwargs); the
worker thread pops it (so a task cancelled before it started never runs), calls, and stores
the outcome in ``_results``, or drops it if the parent gave the task up meanwhile
(``_abandoned``). All of it under the GIL, which is the only lock it needs.
"""
import itertools
import pickle
import struct
import sys
import traceback
import types
import zlib

from . import _fpp
from .errors import FunctionNotInWorkers, RemoteError, RemoteTraceback, ResultTooBig

HIGHEST = pickle.HIGHEST_PROTOCOL
CODE_MORE = 3  # a map chunk done in part: (results, k)
_HDR = struct.Struct("<III")
_C, _M, _P = ord("C"), ord("M"), ord("P")
_R, _E, _X, _Y = ord("R"), ord("E"), ord("X"), ord("Y")
_dumps = pickle.dumps
_loads = pickle.loads

# -------------------------------------------------------------- parent side

_fkeys = itertools.count(1)
_headers = {}  # function -> (header bytes for "C" tasks, header bytes for "M" chunks)
_CACHEABLE = (types.FunctionType, types.BuiltinFunctionType)


def _fingerprint(fn):
    code = getattr(fn, "__code__", None)
    if code is None:
        return 0
    return (zlib.crc32(code.co_code) ^ code.co_firstlineno) & 0xFFFFFFFF


def _not_sendable(fn, exc):
    name = getattr(fn, "__qualname__", None) or repr(fn)
    why = ""
    if name == "<lambda>" or name.endswith(".<lambda>"):
        why = "lambdas have no name the workers could look up; "
    elif "<locals>" in name:
        why = "functions defined inside other functions cannot be looked up by name; "
    return FunctionNotInWorkers(
        "cannot run %r in fpp's worker processes: %sworkers are forked when the pool is "
        "created, see the program as it was then, and receive functions by reference "
        "(module and name). Define the function at module level, before creating the pool "
        "(or use a thread pool). (pickle said: %s)" % (fn, why, exc)
    )


def headers(fn):
    """(call header, chunk header) for a cacheable function; None for other callables.
    Raises FunctionNotInWorkers for what cannot be sent at all (lambdas, local functions)."""
    try:
        return _headers[fn]
    except KeyError:
        pass
    except TypeError:  # unhashable callable
        return None
    if not isinstance(fn, _CACHEABLE):
        check_sendable(fn)
        return None
    try:
        ref = _dumps(fn, HIGHEST)
    except Exception as exc:
        raise _not_sendable(fn, exc) from None
    hdr = _HDR.pack(next(_fkeys), _fingerprint(fn), len(ref)) + ref
    h = (b"C" + hdr, b"M" + hdr)
    _headers[fn] = h
    return h


def check_sendable(fn):
    """Raises FunctionNotInWorkers now for a callable that could never reach a worker."""
    if isinstance(fn, _CACHEABLE):
        headers(fn)
        return
    try:
        _dumps(fn, HIGHEST)
    except Exception as exc:
        raise _not_sendable(fn, exc) from None


def encode_call(fn, args, kwargs):
    """The payload for one call of fn(*args, **kwargs) in a process worker."""
    h = headers(fn)
    if h is not None:
        return h[0] + _dumps((args, kwargs or None), HIGHEST)
    return b"P" + _dumps((fn, args, kwargs or None), HIGHEST)


def encode_chunk(fn, items, star, budget=0):
    """The payload for a map chunk: fn(item) for item in items (fn(*item) with star); budget:
    the most result bytes the pool takes back (0: no limit known)."""
    h = headers(fn)
    if h is None:
        raise TypeError("fpp.ProcessPool map functions must be module-level functions "
                        "(got %r); wrap other callables in one" % (fn,))
    return h[1] + _dumps((items, star, budget), HIGHEST)


def _rebuild(info):
    module, qualname, message, tb, exc_bytes = info
    exc = None
    if exc_bytes is not None:
        try:
            exc = _loads(exc_bytes)
        except Exception:
            exc = None
    if not isinstance(exc, BaseException):
        exc = RemoteError("%s.%s" % (module, qualname) if module not in ("builtins", "__main__") else qualname,
                          message, tb)
    exc.__cause__ = RemoteTraceback(tb)
    return exc


def decode(buf):
    """(code, value) for a worker's answer whose tag is not "R" (called from C)."""
    tag = buf[0]
    if tag == _E:
        return _fpp.CODE_EXC, _rebuild(_loads(buf[1:]))
    if tag == _X:
        results, info = _loads(buf[1:])
        return _fpp.CODE_PARTIAL, (results, _rebuild(info))
    if tag == _Y:
        return CODE_MORE, _loads(buf[1:])
    if tag == _R:
        return _fpp.CODE_OK, _loads(buf[1:])
    return _fpp.CODE_FPP + _fpp.FAILED, ("fpp: unknown answer tag %d from the worker" % tag, 0)


# -------------------------------------------------------------- worker side

_fns = {}  # fkey -> function, in a worker
_resolutions = [0]  # how many function references this worker unpickled (for the tests)
_first = [True]


def _first_task():
    _first[0] = False
    # Signals the parent's Python would write to its wakeup fd (asyncio) are not ours.
    try:
        import signal

        signal.set_wakeup_fd(-1)
    except (ValueError, OSError):
        pass


def _resolve(buf, fkey, fp, rlen, off):
    fn = _fns.get(fkey)
    if fn is not None:
        return fn
    ref = buf[off:off + rlen]
    try:
        fn = _loads(ref)
    except Exception as exc:
        raise FunctionNotInWorkers(
            "the function does not exist in this worker process (pid %d): workers are forked "
            "when the pool is created and see the program as it was then; define it before "
            "creating the pool. (unpickling its reference said: %s)" % (_pid(), exc)
        ) from None
    if fp and _fingerprint(fn) != fp:
        raise FunctionNotInWorkers(
            "%s.%s was redefined after the pool was created: the workers still have the "
            "definition from when the pool was created; create the pool after the final "
            "definition" % (getattr(fn, "__module__", "?"), getattr(fn, "__qualname__", "?"))
        )
    _fns[fkey] = fn
    _resolutions[0] += 1
    return fn


def _pid():
    import os

    return os.getpid()


def _exc_info(exc, skip=1):
    tb = exc.__traceback__
    for _ in range(skip):
        if tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
    try:
        text = "".join(traceback.format_exception(type(exc), exc, tb))
    except Exception:
        text = "%s: (traceback unavailable)\n" % type(exc).__name__
    try:
        message = str(exc)
    except Exception:
        message = "(str() failed)"
    try:
        exc_bytes = _dumps(exc, HIGHEST)
        _loads(exc_bytes)  # catch exceptions that pickle but cannot unpickle here and now
    except Exception:
        exc_bytes = None
    t = type(exc)
    return (t.__module__, t.__qualname__, message, text, exc_bytes)


def _flush():
    for s in (sys.stdout, sys.stderr):
        try:
            if s is not None:
                s.flush()
        except Exception:
            pass


_SIZED = (bytes, bytearray, str)


def _split(out, budget, whole=True):
    """The most leading results of a chunk that fit in budget (a binary search on pickled
    prefixes: only chunks that overflow pay for it). whole: out is known not to fit."""
    lo, hi = 0, len(out)  # fits(lo) is known true, fits(hi) false (unless not whole)
    if not whole:
        hi += 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if len(_dumps((out[:mid], mid), HIGHEST)) + 1 <= budget:
            lo = mid
        else:
            hi = mid
    if lo == 0:
        size = len(_dumps(out[0], HIGHEST))
        try:
            raise ResultTooBig("the result of one item is %d bytes pickled, over the pool's "
                               "max_result_size (%d bytes); raise max_result_size" % (size, budget))
        except ResultTooBig as exc:
            return _X, _dumps(([], _exc_info(exc, skip=0)), HIGHEST)
    return _Y, _dumps((out[:lo], lo), HIGHEST)


def worker_run(buf):
    """Runs one task in a worker process (called from C with a memoryview of the payload).
    Returns (tag, bytes). Never raises for anything the callable does."""
    if _first[0]:
        _first_task()
    try:
        tag = buf[0]
        if tag == _C or tag == _M:
            fkey, fp, rlen = _HDR.unpack_from(buf, 1)
            off = 1 + _HDR.size
            fn = _resolve(buf, fkey, fp, rlen, off)
            if tag == _C:
                args, kwargs = _loads(buf[off + rlen:])
                result = fn(*args, **kwargs) if kwargs else fn(*args)
                return _R, _dumps(result, HIGHEST)
            items, star, budget = _loads(buf[off + rlen:])
            out = []
            big = 0  # bytes of the str/bytes results so far: stop early past the budget
            try:
                for a in items:
                    r = fn(*a) if star else fn(a)
                    out.append(r)
                    if budget and r.__class__ in _SIZED:
                        big += len(r)
                        if big > budget and len(out) < len(items):
                            return _split(out, budget, whole=False)
            except BaseException as exc:
                return _X, _dumps((out, _exc_info(exc)), HIGHEST)
            data = _dumps(out, HIGHEST)
            if budget and len(data) + 1 > budget:
                return _split(out, budget)
            return _R, data
        if tag == _P:
            fn, args, kwargs = _loads(buf[1:])
            result = fn(*args, **kwargs) if kwargs else fn(*args)
            return _R, _dumps(result, HIGHEST)
        raise ValueError("fpp: unknown task tag %d" % tag)
    except BaseException as exc:
        return _E, _dumps(_exc_info(exc), HIGHEST)
    finally:
        _flush()


# -------------------------------------------------------------- thread pools

_seqs = itertools.count(1)
_calls = {}
_results = {}
_abandoned = set()


def thread_submit(mgr, fn, args, kwargs, seqs):
    """Submits fn(*args, **kwargs) to a thread Manager; returns the task id, and records
    id -> sequence number in seqs (for thread_forget)."""
    seq = next(_seqs)
    _calls[seq] = (fn, args, kwargs)
    try:
        tid = mgr.submit(seq)
    except BaseException:
        _calls.pop(seq, None)
        raise
    seqs[tid] = seq
    return tid


def thread_forget(seqs):
    """The parent gives up these tasks (before ending a run): the ones not started never
    will, the finished ones' outcomes are dropped, the running ones drop theirs when done."""
    for seq in seqs:
        if _calls.pop(seq, None) is None and _results.pop(seq, None) is None:
            _abandoned.add(seq)


def thread_run(seq):
    """In a worker thread (called from C, GIL held)."""
    call = _calls.pop(seq, None)
    if call is None:  # cancelled before it started
        return
    fn, args, kwargs = call
    del call
    try:
        value = fn(*args, **kwargs) if kwargs else fn(*args)
        code = _fpp.CODE_OK
    except BaseException as exc:
        if exc.__traceback__ is not None and exc.__traceback__.tb_next is not None:
            exc.__traceback__ = exc.__traceback__.tb_next  # from the callable's frame down
        value = exc
        code = _fpp.CODE_EXC
    del fn, args, kwargs
    if seq in _abandoned:
        _abandoned.discard(seq)
    else:
        _results[seq] = (code, value)


def thread_outcome(seq, status):
    """In the parent, for a finished thread task: (code, value); code >= CODE_FPP means
    "use fpp's status and message"."""
    r = _results.pop(seq, None)
    if status == _fpp.DONE:
        if r is None:
            return _fpp.CODE_FPP + _fpp.FAILED, None
        return r
    # Timed out or cancelled: free what the worker will never use, or tell it to drop its
    # outcome when it gets there.
    if r is None and _calls.pop(seq, None) is None:
        _abandoned.add(seq)
    return _fpp.CODE_FPP + status, None
