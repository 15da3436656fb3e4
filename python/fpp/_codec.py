"""How Python calls travel to fpp's workers and how their outcomes come back.

Process pools. A task's argument is a 16-byte prefix that the C extension writes (the task's
ticket in the cancel table: see fppmodule.c) followed by the parts made here, laid end to end:

    b"C" + <fkey, fingerprint, len(ref)> + ref + body((args, kwargs or None))
        a call of a module-level function (or a class, or a builtin). ``ref`` is the function
        pickled once in the parent (a reference: module and qualified name); ``fkey`` a number
        the parent gave it. Each worker unpickles ``ref`` once and keeps the function under
        ``fkey``, so a function is not pickled per task, nor looked up again per task in the
        workers.
    b"M" + <same header> + ref + body((items, star, budget))
        a chunk of a map: fn(item) (or fn(*item) with star) for each item, results as a list
        (budget: the pool's max_result_size, see "Y" below).
    b"P" + body((fn, args, kwargs or None))
        any other picklable callable (functools.partial, a bound method, ...), pickled per task.
    b"N" + body((fn, items, star, budget))
        a map chunk of such a callable.

The worker's answer (the task's result bytes) is a tag byte and a body:

    b"R" + body(result)
    b"E" + pickle((module, qualname, message, traceback text, pickle(exception) or None))
    b"X" + body((results so far, the same tuple as "E")): a map chunk that raised.
    b"Y" + body((results of the first k items, k)): a map chunk whose results would not fit
        in max_result_size; the parent sends the rest again (and makes its chunks smaller).
    b"K" (written by the C half): the task was cancelled before it started and did not run.

A body is a pickle (protocol 5). When the object holds buffers of OOB_MIN bytes or more
(numpy arrays, bytearrays, and bytes given as an argument, a result or a map item's result),
they travel out of band and the tag is in lower case: the body is then a frame,

    <nbuf, len(pickle)> + nbuf * <offset, length> + nbuf kind bytes + pickle + buffers

each buffer at a 64-byte boundary of the memory it is written to, handed to the C half as a
separate part: it is copied once, from the object straight into fpp's argument or result
memory (no pickle copy), and once on the other side, out of that memory into an object of
its own (a bytearray for a writable buffer, so a numpy array arrives writable; bytes for a
read-only one), since fpp's memory is reused after the task.

The fingerprint (a CRC of the function's code) catches a function redefined after the pool
was created: the workers would otherwise silently run the old definition.

Thread pools. A task's argument is a sequence number into ``_calls`` (fn, args, kwargs); the
worker thread pops it (so a task cancelled before it started never runs), calls, and stores
the outcome in ``_results``, or drops it if the parent gave the task up meanwhile
(``_abandoned``). All of it under the GIL, which is the only lock it needs.
"""
import itertools
import os
import pickle
import struct
import sys
import traceback
import types
import zlib

from . import _fpp
from .errors import FunctionNotInWorkers, RemoteError, RemoteTraceback, ResultTooBig

HIGHEST = pickle.HIGHEST_PROTOCOL
OOB_MIN = 32 * 1024  # buffers this big or bigger travel out of band
CODE_MORE = 3  # a map chunk done in part: (results, k)
CODE_SKIPPED = 4  # cancelled before it started: it did not run
PREFIX = _fpp.PREFIX
_COPY_OUT_MIN = 64 * 1024  # fpp._fpp.Buffer's smallest
_HDR = struct.Struct("<III")
_BLK = struct.Struct("<II")
_C, _M, _P, _N = ord("C"), ord("M"), ord("P"), ord("N")
_R, _E, _X, _Y, _K = ord("R"), ord("E"), ord("X"), ord("Y"), ord("K")
_LOWER = 32  # tag | _LOWER: the body is a frame
_dumps = pickle.dumps
_loads = pickle.loads
_copy_out = _fpp.copy_out
_PickleBuffer = pickle.PickleBuffer
_PAD = [bytes(n) for n in range(64)]
_TAGS = {t: (bytes([t]), bytes([t | _LOWER])) for t in (_C, _M, _P, _N)}

# -------------------------------------------------------------- bodies


class _Bytes:
    """A bytes object that travels out of band: rebuilt by bytes() from the buffer given to
    pickle.loads (a bytes object: bytes() returns it as it is, no copy)."""

    __slots__ = ("b",)

    def __init__(self, b):
        self.b = b

    def __reduce_ex__(self, protocol):
        return bytes, (_PickleBuffer(self.b),)


def _box(x):
    """x, or x wrapped to travel out of band if it is a big bytes object."""
    if x.__class__ is bytes and len(x) >= OOB_MIN:
        return _Bytes(x)
    return x


def _box_args(args, kwargs):
    if any(a.__class__ is bytes and len(a) >= OOB_MIN for a in args):
        args = tuple(_box(a) for a in args)
    if kwargs and any(v.__class__ is bytes and len(v) >= OOB_MIN for v in kwargs.values()):
        kwargs = {k: _box(v) for k, v in kwargs.items()}
    return args, kwargs


def _dumps_oob(obj):
    """(pickle bytes, [raw memoryviews of the out-of-band buffers])."""
    bufs = []

    def out_of_band(pb):
        try:
            raw = pb.raw()
        except BufferError:  # not contiguous: in band
            return True
        if raw.nbytes < OOB_MIN:
            return True
        bufs.append(raw)
        return False

    return _dumps(obj, HIGHEST, buffer_callback=out_of_band), bufs


def _frame(data, bufs, base):
    """The parts of a frame (see the top), whose first byte lands base bytes past a 64-byte
    boundary."""
    n = len(bufs)
    hlen = _BLK.size + 17 * n
    parts = [None, data]
    off = hlen + len(data)
    where = []
    for b in bufs:
        pad = -(base + off) % 64
        if pad:
            parts.append(_PAD[pad])
            off += pad
        where.append((off, b.nbytes))
        parts.append(b)
        off += b.nbytes
    parts[0] = (_BLK.pack(n, len(data)) + struct.pack("<%dQ" % (2 * n), *itertools.chain.from_iterable(where))
                + bytes(1 if b.readonly else 0 for b in bufs))
    return parts


def _unframe(buf, pos, copy_out=None):
    """The object in the frame at buf[pos:]; its buffers are copied out of buf: into bytes for
    a read-only buffer, else into a bytearray, or with copy_out(buf, offset, length) (the
    parent's: fpp._fpp.copy_out, memory from a cache, copied without the GIL)."""
    n, plen = _BLK.unpack_from(buf, pos)
    h = pos + _BLK.size
    where = struct.unpack_from("<%dQ" % (2 * n), buf, h)
    kinds = buf[h + 16 * n:h + 17 * n]
    start = h + 17 * n
    buffers = []
    for i in range(n):
        o = pos + where[2 * i]
        size = where[2 * i + 1]
        if kinds[i]:
            buffers.append(bytes(buf[o:o + size]))
        elif copy_out is not None and size >= _COPY_OUT_MIN:
            buffers.append(copy_out(buf, o, size))
        else:
            buffers.append(bytearray(buf[o:o + size]))
    return _loads(buf[start:start + plen], buffers=buffers)


def _encode(tag, head, obj):
    """A payload's parts: tag byte, head (b"" or a function's header), obj's body: a plain
    pickle, or a frame (tag in lower case) when obj holds big buffers."""
    data, bufs = _dumps_oob(obj)
    if not bufs:
        return [_TAGS[tag][0], head, data] if head else [_TAGS[tag][0], data]
    frame = _frame(data, bufs, PREFIX + 1 + len(head))
    return [_TAGS[tag][1], head] + frame if head else [_TAGS[tag][1]] + frame


def _load_body(buf, pos, framed, copy_out=None):
    return _unframe(buf, pos, copy_out) if framed else _loads(buf[pos:])


def _parts_len(data):
    if isinstance(data, (bytes, bytearray)):
        return len(data)
    return sum(p.nbytes if isinstance(p, memoryview) else len(p) for p in data)


# -------------------------------------------------------------- parent side

_fkeys = itertools.count(1)
_headers = {}  # function -> header bytes (fkey, fingerprint, len(ref)) + ref
_CACHEABLE = (types.FunctionType, types.BuiltinFunctionType, type)


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
    """The header (fkey, fingerprint, len(ref)) + ref of a cacheable function; None for other
    callables. Raises FunctionNotInWorkers for what cannot be sent at all (lambdas, local
    functions)."""
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
    h = _HDR.pack(next(_fkeys), _fingerprint(fn), len(ref)) + ref
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
    """The payload parts for one call of fn(*args, **kwargs) in a process worker."""
    args, kwargs = _box_args(args, kwargs)
    h = headers(fn)
    if h is not None:
        return _encode(_C, h, (args, kwargs or None))
    return _encode(_P, b"", (fn, args, kwargs or None))


def encode_chunk(fn, items, star, budget=0):
    """The payload parts for a map chunk: fn(item) for item in items (fn(*item) with star);
    budget: the most result bytes the pool takes back (0: no limit known)."""
    h = headers(fn)
    if h is None:
        return _encode(_N, b"", (fn, items, star, budget))
    return _encode(_M, h, (items, star, budget))


def encode_init(initializer, initargs):
    """The bytes fpp.python.init runs in each worker: pickle((initializer, initargs))."""
    check_sendable(initializer)
    return _dumps((initializer, tuple(initargs)), HIGHEST)


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
    base = tag & ~_LOWER
    framed = base != tag
    if base == _R:
        return _fpp.CODE_OK, _load_body(buf, 1, framed, _copy_out)
    if base == _E:
        return _fpp.CODE_EXC, _rebuild(_loads(buf[1:]))
    if base == _X:
        results, info = _load_body(buf, 1, framed, _copy_out)
        return _fpp.CODE_PARTIAL, (results, _rebuild(info))
    if base == _Y:
        return CODE_MORE, _load_body(buf, 1, framed, _copy_out)
    if base == _K:
        return CODE_SKIPPED, None
    return _fpp.CODE_FPP + _fpp.FAILED, ("fpp: unknown answer tag %d from the worker" % tag, 0)


# -------------------------------------------------------------- worker side

_fns = {}  # fkey -> function, in a worker
_resolutions = [0]  # how many function references this worker unpickled (for the tests)
_first = [True]


def _first_task():
    _first[0] = False
    _stdio.append(_Stdio())
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


class _Stdio:
    """The worker's stdio as it was before its first task, put back after every task: a task
    that closes or replaces sys.stdout or sys.stderr, or closes or redirects descriptor 1 or 2,
    does it for itself alone, not for the tasks that run in this worker after it. Costs two
    fstat calls and two comparisons a task."""

    def __init__(self):
        self.objs = [sys.stdout, sys.stderr]
        self.fds = {}
        for fd in (1, 2):
            try:
                st = os.fstat(fd)
                self.fds[fd] = (os.dup(fd), st.st_dev, st.st_ino)  # a private copy, not inherited
            except OSError:
                pass

    def restore(self):
        for fd, (keep, dev, ino) in self.fds.items():
            try:
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) == (dev, ino):
                    continue
            except OSError:
                pass  # closed
            try:
                os.dup2(keep, fd)
            except OSError:
                pass  # the task closed our copy too: nothing left to put back
        for i, name in enumerate(("stdout", "stderr")):
            saved = self.objs[i]
            if saved is None:
                continue
            if getattr(saved, "closed", False):
                saved = self.objs[i] = self._reopen(saved, i + 1)
            if saved is not None and getattr(sys, name) is not saved:
                setattr(sys, name, saved)

    @staticmethod
    def _reopen(old, fd):
        """A new text stream on fd like old, which a task closed (closing sys.stdout leaves
        descriptor 1 open)."""
        try:
            new = open(fd, "w", encoding=old.encoding, errors=old.errors, closefd=False)
            new.reconfigure(line_buffering=old.line_buffering, write_through=old.write_through)
            return new
        except Exception:
            return None


_stdio = []


def _flush():
    if _stdio:
        _stdio[0].restore()
    for s in (sys.stdout, sys.stderr):
        try:
            if s is not None:
                s.flush()
        except Exception:
            pass


_SIZED = (bytes, bytearray, str)


def _size(obj):
    data, bufs = _dumps_oob(obj)
    return 1 + len(data) + sum(b.nbytes + 64 for b in bufs) + 17 * len(bufs) + _BLK.size


def _split(out, budget, whole=True):
    """The most leading results of a chunk that fit in budget (a binary search on pickled
    prefixes: only chunks that overflow pay for it). whole: out is known not to fit."""
    lo, hi = 0, len(out)  # fits(lo) is known true, fits(hi) false (unless not whole)
    if not whole:
        hi += 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _size((out[:mid], mid)) <= budget:
            lo = mid
        else:
            hi = mid
    if lo == 0:
        size = _size(out[0]) - 1
        try:
            raise ResultTooBig("the result of one item is %d bytes pickled, over the pool's "
                               "max_result_size (%d bytes); raise max_result_size" % (size, budget))
        except ResultTooBig as exc:
            return _X, _dumps(([], _exc_info(exc, skip=0)), HIGHEST)
    return _answer(_Y, (out[:lo], lo))


def _answer(tag, obj):
    """(tag, data) for the C half: data is bytes, or the parts of a frame."""
    data, bufs = _dumps_oob(obj)
    if not bufs:
        return tag, data
    return tag | _LOWER, _frame(data, bufs, 1)


def _result_size(r):
    """The bytes a result will take, roughly, if it is a sized object (str, bytes, bytearray,
    an array: what can be big); else None."""
    cls = r.__class__
    if cls in _SIZED:
        return len(r)
    n = getattr(r, "nbytes", None)
    return n if n.__class__ is int else None


def _run_chunk(fn, items, star, budget):
    """fn over a map chunk. If the first result is a sized object, results are counted as
    they come (and big bytes boxed to travel out of band), and the chunk stops once past the
    budget (the parent sends the rest again), so that no item runs twice; otherwise (numbers,
    small objects: the usual case) a plain loop, and a chunk whose results turn out too big
    after all is split after the fact (its tail runs again)."""
    out = []
    append = out.append
    size = None
    try:
        it = iter(items)
        for a in it:
            r = fn(*a) if star else fn(a)
            size = _result_size(r)
            append(_box(r))
            break
        if size is None:
            if star:
                for a in it:
                    append(fn(*a))
            else:
                for a in it:
                    append(fn(a))
        else:
            big = size
            for a in it:
                if budget and big > budget:
                    return _split(out, budget, whole=False)
                r = fn(*a) if star else fn(a)
                append(_box(r))
                big += _result_size(r) or 0
    except BaseException as exc:
        return _X, _dumps((out, _exc_info(exc)), HIGHEST)
    tag, data = _answer(_R, out)
    n = _parts_len(data)
    if size is None and n >= OOB_MIN and any(r.__class__ is bytes and len(r) >= OOB_MIN for r in out):
        out = _boxed(out)
        tag, data = _answer(_R, out)
        n = _parts_len(data)
    if budget and n + 1 > budget:
        return _split(_boxed(out), budget)
    return tag, data


def _boxed(out):
    """out with its big bytes results wrapped to travel out of band."""
    return [_Bytes(r) if r.__class__ is bytes and len(r) >= OOB_MIN else r for r in out]


def worker_run(buf):
    """Runs one task in a worker process (called from C with a memoryview of the payload after
    its prefix). Returns (tag, bytes or parts). Never raises for anything the callable does."""
    if _first[0]:
        _first_task()
    try:
        tag = buf[0]
        base = tag & ~_LOWER
        framed = base != tag
        if base == _C or base == _M:
            fkey, fp, rlen = _HDR.unpack_from(buf, 1)
            off = 1 + _HDR.size
            fn = _resolve(buf, fkey, fp, rlen, off)
            body = _load_body(buf, off + rlen, framed)
            if base == _C:
                args, kwargs = body
                del body
                result = fn(*args, **kwargs) if kwargs else fn(*args)
                del args, kwargs
                return _answer(_R, _box(result))
            items, star, budget = body
            del body
            return _run_chunk(fn, items, star, budget)
        if base == _P:
            fn, args, kwargs = _load_body(buf, 1, framed)
            result = fn(*args, **kwargs) if kwargs else fn(*args)
            del fn, args, kwargs
            return _answer(_R, _box(result))
        if base == _N:
            fn, items, star, budget = _load_body(buf, 1, framed)
            return _run_chunk(fn, items, star, budget)
        raise ValueError("fpp: unknown task tag %d" % tag)
    except BaseException as exc:
        return _E, _dumps(_exc_info(exc), HIGHEST)
    finally:
        _flush()


def worker_init(buf):
    """Runs the pool's initializer in a new worker (called from C, before its first task).
    Returns None, or the message that says why it failed (the worker is then not used)."""
    try:
        initializer, initargs = _loads(buf)
        initializer(*initargs)
        return None
    except BaseException as exc:
        name = getattr(locals().get("initializer"), "__qualname__", "the initializer")
        traceback.print_exc()  # to the worker's stderr, as concurrent.futures' workers do
        return "initializer %s() raised %s: %s" % (name, type(exc).__name__, exc)
    finally:
        _flush()


# -------------------------------------------------------------- thread pools

_seqs = itertools.count(1)
_calls = {}
_results = {}
_abandoned = set()
_skipped = set()  # cancelled by thread_cancel before they started


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
        if seq in _skipped:
            _skipped.discard(seq)
        elif _calls.pop(seq, None) is None and _results.pop(seq, None) is None:
            _abandoned.add(seq)


def thread_cancel(seq):
    """Cancels a thread task if it has not started: True (it will not run), else False."""
    if _calls.pop(seq, None) is None:
        return False
    _skipped.add(seq)
    return True


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
    if seq in _skipped:
        _skipped.discard(seq)
        return CODE_SKIPPED, None
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
