"""The exceptions fpp raises, and how a task's outcome becomes one.

A callable that raises comes back as the same exception (type, arguments, message), with the
worker's traceback text attached as its ``__cause__`` (a :class:`RemoteTraceback`, the way
``concurrent.futures`` does it), so an uncaught one prints both tracebacks. What is not a
Python exception is a :class:`TaskError`: the worker died (:class:`WorkerCrashed`, with the
signal), the task ran over its time (:class:`TaskTimeout`), it was cancelled
(:class:`TaskCancelled`), or fpp itself failed it (:class:`TaskFailed`, e.g. a result over
``max_result_size``).

Where concurrent.futures has a name for the same thing, fpp's exception is also that: a crashed
worker (:class:`WorkerCrashed`) and an initializer that fails (:class:`InitializerFailed`)
are :class:`concurrent.futures.process.BrokenProcessPool` (but only that task fails, or only
the pool's creation: an fpp pool is never "broken"); a cancelled task
(:class:`TaskCancelled`) is a :class:`concurrent.futures.CancelledError`; a task that ran out
of time (:class:`TaskTimeout`) a :class:`TimeoutError`.
"""
import pickle
import signal as _signal
from concurrent.futures import CancelledError
from concurrent.futures.process import BrokenProcessPool


class FppError(Exception):
    """An fpp call failed (the pool could not be created, a pickled argument is too big...).

    ``code`` is the C library's FPP_E* code (negative), ``name`` its name."""

    def __init__(self, message, code=0, name=""):
        super().__init__(message)
        self.code = code
        self.name = name


class InitializerFailed(FppError, BrokenProcessPool):
    """The pool's initializer failed (raised or crashed) in the first workers: the pool could
    not be created. The message is the initializer's exception."""


class ArgumentTooBig(FppError, ValueError):
    """A task's pickled arguments are over the pool's ``max_arg_size``."""


class FunctionNotInWorkers(FppError, pickle.PicklingError):
    """The callable cannot run in a worker process.

    Workers are forked when the pool is created and see the program as it was then, and a
    callable travels to them by reference (module and name). Lambdas, functions defined inside
    other functions, and functions defined (or redefined) after the pool was created do not
    exist there. Define the function at module level before creating the pool, or use a
    thread pool."""


class ResultTooBig(FppError, ValueError):
    """A result that, pickled, is over the pool's ``max_result_size``."""


class JournalError(FppError):
    """The task journal cannot be written or read: it cannot be opened, created or locked
    (another run holds it), is no fpp journal, or is damaged before its end (FPP_EJOURNAL).
    The message has fpp's log line, which names the file and the error."""


class JournalMismatch(JournalError):
    """The journal file holds the journal of another run (another function, key or chunk
    size: FPP_EMISMATCH). It is never applied: nothing ran. Use another file, or the same
    function, key and chunksize as the run that wrote it."""


class RemoteTraceback(Exception):
    """The traceback text of an exception raised in a worker (set as its ``__cause__``)."""

    def __init__(self, tb):
        super().__init__(tb)
        self.tb = tb

    def __str__(self):
        return '\n"""\n%s"""' % self.tb


class RemoteError(Exception):
    """An exception raised in a worker that could not be sent back as itself (it could not be
    pickled or unpickled): its type's name, message and traceback text."""

    def __init__(self, type_name, message, tb=""):
        super().__init__("%s: %s" % (type_name, message))
        self.type_name = type_name
        self.message = message
        self.tb = tb


class TaskError(Exception):
    """A task ended without a result or a Python exception of its own.

    ``status`` is one of "failed", "crashed", "timeout", "cancelled"; ``signal`` the signal
    that killed the worker (0 if none); the message is fpp's, e.g. "worker 4312 killed by
    SIGSEGV while running task 17"."""

    status = "failed"

    def __init__(self, message, signal=0):
        super().__init__(message)
        self.signal = signal

    @property
    def signal_name(self):
        """"SIGSEGV" for a task killed by SIGSEGV, else ""."""
        if not self.signal:
            return ""
        try:
            return _signal.Signals(self.signal).name
        except ValueError:
            return "signal %d" % self.signal


class TaskFailed(TaskError):
    """fpp failed the task (a result over max_result_size, a broken worker, ...)."""

    status = "failed"


class WorkerCrashed(TaskError, BrokenProcessPool):
    """The worker process died while running the task (a signal, ``os._exit``, ...).

    Only this task fails; the worker is replaced and the pool goes on. It is also a
    concurrent.futures BrokenProcessPool, so code written for concurrent.futures catches it."""

    status = "crashed"


class TaskTimeout(TaskError, TimeoutError):
    """The task ran past the pool's task_timeout; its worker was killed and replaced."""

    status = "timeout"


class TaskCancelled(TaskError, CancelledError):
    """The task was cancelled before it finished (a raise, Ctrl-C, the pool closing)."""

    status = "cancelled"


_STATUS_CLASSES = {}


def _setup(fpp_status_codes):
    """fpp_status_codes: {status code: class}; called by fpp/__init__.py."""
    _STATUS_CLASSES.update(fpp_status_codes)


def task_error(status, message, signal=0):
    """The exception for a task fpp ended with status (an fpp_status number)."""
    cls = _STATUS_CLASSES.get(status, TaskFailed)
    if "exceeds max_result_size" in message:
        message += " (pickled, with a tag byte); raise the pool's max_result_size"
    return cls(message, signal)


def make_error(code, what):
    """The exception for an FPP_E* code (called from the C extension)."""
    from . import _fpp

    name, message = _fpp.strerror(code)
    text = "%s: %s (%s)" % (what, message, name)
    if name == "FPP_ETOOBIG":
        return ArgumentTooBig(text, code, name)
    if name == "FPP_EINIT":
        return InitializerFailed(text, code, name)
    if name == "FPP_ENOMEM":
        return MemoryError(text)
    if name == "FPP_EMISMATCH":
        return JournalMismatch(text, code, name)
    if name == "FPP_EJOURNAL":
        return JournalError(text, code, name)
    return FppError(text, code, name)
