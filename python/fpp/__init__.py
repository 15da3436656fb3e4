"""fpp: run Python callables in a pool of crash-isolated worker processes.

Two ways in:

* :mod:`fpp.futureproof` -- futureproof's API (``TaskManager``, ``ProcessPoolExecutor``,
  ``ThreadPoolExecutor``, error policies, lazy ``map`` with backpressure, a monitor through
  :mod:`logging`, one Ctrl-C stops everything) on fpp's pool: ``import fpp.futureproof as
  futureproof`` is all a futureproof program needs.
* :class:`fpp.ProcessPool` -- a :class:`concurrent.futures.Executor` (``submit`` returns a
  ``concurrent.futures.Future``; ``map`` with chunks; ``shutdown``; ``initializer``), also
  with :class:`multiprocessing.pool.Pool`'s ``close``/``join``/``terminate``, ``imap``,
  ``imap_unordered`` and ``starmap``; a function is sent to each worker once, big buffers
  travel out of band.

Both run callables in worker processes forked when the pool is created: a callable that
segfaults, calls ``os._exit`` or hangs past its timeout fails only its own task, and the worker
is replaced. Callables and their arguments travel by pickle, so they must be module-level
functions that existed when the pool was created (not lambdas); see
:class:`fpp.errors.FunctionNotInWorkers`.

fpp's own log lines (errors of the C library) go to the ``fpp`` logger.
"""
import atexit
import logging
import weakref

from . import _fpp
from . import _codec
from . import errors
from .errors import (
    ArgumentTooBig,
    FppError,
    FunctionNotInWorkers,
    InitializerFailed,
    JournalError,
    JournalMismatch,
    RemoteError,
    RemoteTraceback,
    ResultTooBig,
    TaskCancelled,
    TaskError,
    TaskFailed,
    TaskTimeout,
    WorkerCrashed,
)

__version__ = "0.3.0"
C_VERSION = _fpp.FPP_VERSION

logger = logging.getLogger("fpp")
logger.addHandler(logging.NullHandler())
_LEVELS = {0: logging.DEBUG, 1: logging.INFO, 2: logging.WARNING, 3: logging.ERROR}


def _log(level, message):
    logger.log(_LEVELS.get(level, logging.ERROR), "%s", message)


errors._setup({
    _fpp.FAILED: TaskFailed,
    _fpp.CRASHED: WorkerCrashed,
    _fpp.TIMEOUT: TaskTimeout,
    _fpp.CANCELLED: TaskCancelled,
})

_fpp.set_callbacks(_codec.worker_run, _codec.decode, _codec.thread_run, _codec.thread_outcome,
                   _log, errors.make_error, _codec.worker_init)

# Every pool is closed before the interpreter goes away (worker threads of thread pools hold
# thread states; process pools' workers are reaped), whatever the program forgot.
_live = weakref.WeakSet()


def _track(mgr):
    _live.add(mgr)
    return mgr


@atexit.register
def _close_all():
    for mgr in list(_live):
        try:
            mgr.close()
        except Exception:
            pass


from .pool import Future, ProcessPool  # noqa: E402

__all__ = [
    "ProcessPool",
    "Future",
    "FppError",
    "ArgumentTooBig",
    "FunctionNotInWorkers",
    "InitializerFailed",
    "JournalError",
    "JournalMismatch",
    "RemoteError",
    "RemoteTraceback",
    "ResultTooBig",
    "TaskError",
    "TaskFailed",
    "WorkerCrashed",
    "TaskTimeout",
    "TaskCancelled",
]
