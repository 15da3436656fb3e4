"""fpp.mpi: Python callables on fpp's MPI executor, with mpi4py.futures' interface.

    mpirun -np N python3 -m fpp.mpi program.py [args...]     (as: python3 -m mpi4py.futures)

Rank 0 runs program.py as ``__main__``; every other rank serves, running the tasks in a local
pool of crash-isolated worker processes (fpp_mpi_serve), so a task that segfaults fails only
its own future, with :class:`fpp.WorkerCrashed` naming the rank ("rank 2: worker 4312 killed
by SIGSEGV while running task 17"), and the job goes on. The serving ranks import program.py
too, as ``__worker__`` (so its functions exist there: keep the program's work under ``if
__name__ == "__main__":``, as mpi4py.futures asks).

:class:`MPIPoolExecutor` is a :class:`concurrent.futures.Executor` with mpi4py.futures'
methods: ``submit``, ``map(fn, *iterables, timeout=None, chunksize=1, unordered=False)``,
``starmap(..., unordered=False)``, ``shutdown(wait=True, *, cancel_futures=False)``,
``bootup()``, ``num_workers``; the rest is :class:`fpp.ProcessPool`'s (it is one, whose
workers are the other ranks' pools). Tasks travel in batches and are balanced by credits;
``chunksize`` still makes one task of several items. Built where MPI is found
(``fpp._fpp_mpi``, Open MPI's ``libopenmpi-dev``). A rank that dies ends the MPI job (MPI
without fault tolerance): mpirun then stops every rank.
"""
import sys

from .. import _codec, _log, _track, errors
from .._driver import Driver
from ..pool import (DEFAULT_MAX_ARG_SIZE, DEFAULT_MAX_RESULT_SIZE, ProcessPool, _default_in_flight,
                    _limits)

try:
    from .. import _fpp_mpi
except ImportError as exc:  # built without MPI
    _fpp_mpi = None
    _why = exc
else:
    _fpp_mpi.set_callbacks(_codec.worker_run, _codec.decode, _codec.thread_run, _codec.thread_outcome,
                           _log, errors.make_error, _codec.worker_init)

_rank = None  # set by python3 -m fpp.mpi: (rank, size)

__all__ = ["MPIPoolExecutor", "get_rank", "get_size"]


def _require():
    if _fpp_mpi is None:
        raise ImportError("fpp.mpi needs fpp._fpp_mpi, built where MPI is found (apt-get install "
                          "libopenmpi-dev, then rebuild): %s" % (_why,))
    if _rank is None:
        raise RuntimeError("fpp.mpi runs under its launcher: mpirun -np N python3 -m fpp.mpi program.py")


def get_rank():
    """This process's rank (0 runs the program)."""
    _require()
    return _rank[0]


def get_size():
    """The number of ranks (1 + the serving ones)."""
    _require()
    return _rank[1]


class MPIPoolExecutor(ProcessPool):
    """An executor whose workers are the serving ranks' local process pools (on rank 0 only).

    :param max_workers: workers in all, spread over the serving ranks (each gets
        ceil(max_workers / (ranks - 1))); default: each rank as many as its CPUs.
    :param initializer, initargs: run in every worker of every rank before its first task.
    Other options: :class:`fpp.ProcessPool`'s (``max_in_flight``, ``max_arg_size``,
    ``max_result_size``, ``task_timeout``, ``max_tasks_per_child``, ``max_worker_rss_mib``,
    ``keep_fds``), applied to each rank's pool. mpi4py.futures' spawn options (``path``,
    ``wdir``, ``env``, ``python_exe``, ...) do not apply: the ranks are mpirun's."""

    def __init__(self, max_workers=None, initializer=None, initargs=(), *, max_in_flight=None,
                 max_arg_size=DEFAULT_MAX_ARG_SIZE, max_result_size=DEFAULT_MAX_RESULT_SIZE,
                 task_timeout=None, max_tasks_per_child=None, max_worker_rss_mib=0, keep_fds=True,
                 **spawn_options):
        _require()
        if spawn_options:
            raise TypeError("fpp.mpi.MPIPoolExecutor does not take %s: mpi4py.futures' options to "
                            "spawn workers; fpp.mpi's workers are the ranks mpirun started"
                            % ", ".join(sorted(spawn_options)))
        if _rank[0] != 0:
            raise RuntimeError("fpp.mpi.MPIPoolExecutor is made on rank 0 (this is rank %d)" % _rank[0])
        serving = _rank[1] - 1
        if max_workers is not None:
            if not isinstance(max_workers, int) or isinstance(max_workers, bool):
                raise TypeError("max_workers must be an int, not %r" % (max_workers,))
            if max_workers <= 0:
                raise ValueError("max_workers must be greater than 0")
        per_rank = 0 if max_workers is None else -(-max_workers // serving)
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if max_tasks_per_child is not None and (not isinstance(max_tasks_per_child, int)
                                                or max_tasks_per_child <= 0):
            raise ValueError("max_tasks_per_child must be an integer >= 1")
        init = _codec.encode_init(initializer, initargs) if initializer is not None else None
        self._mgr = _track(_fpp_mpi.Manager(
            "mpi", workers=per_rank, max_arg_size=max_arg_size, max_result_size=max_result_size,
            keep_fds=keep_fds, init=init, **_limits(task_timeout, max_tasks_per_child or 0, max_worker_rss_mib)))
        self._max_workers = self._mgr.workers
        self._mif = int(max_in_flight) if max_in_flight else _default_in_flight(self._max_workers)
        if self._mif < 1:
            raise ValueError("max_in_flight must be >= 1")
        self._max_result = max_result_size
        self._driver = Driver(self._mgr, self._mif, name="fpp.mpi-collector")
        self._closed = False

    @property
    def num_workers(self):
        """The workers of all serving ranks together."""
        return self._max_workers

    def bootup(self, wait=True):
        """mpi4py.futures': the workers are up once the executor exists. Returns self."""
        return self

    def map(self, fn, *iterables, timeout=None, chunksize=1, unordered=False):
        """fn(*args) for args in zip(*iterables): in order, or as they finish (unordered)."""
        it = iterables[0] if len(iterables) == 1 else zip(*iterables)
        return self._map(fn, it, chunksize, not unordered, len(iterables) != 1, timeout)

    def starmap(self, fn, iterable, timeout=None, chunksize=1, unordered=False):
        """fn(*args) for args in iterable: an iterator, as mpi4py.futures'."""
        return self._map(fn, iterable, chunksize, not unordered, True, timeout)

    def __repr__(self):
        return "<fpp.mpi.MPIPoolExecutor num_workers=%d%s>" % (self._max_workers, " closed" if self._closed else "")
