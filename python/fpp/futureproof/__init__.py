"""futureproof's API on fpp's crash-isolated pool: ``import fpp.futureproof as futureproof``.

``TaskManager``, ``ErrorPolicyEnum``, ``ThreadPoolExecutor`` and ``ProcessPoolExecutor`` as in
futureproof 0.3.1 (see :mod:`fpp.futureproof.task_manager` and
:mod:`fpp.futureproof.executors`, whose module-level loggers are "futureproof.task_manager"
and "futureproof.executors", as futureproof's are). ``FutureProofExecutor`` is the name
futureproof's README uses: a ``ThreadPoolExecutor``.
"""
import logging

# futureproof's logger hierarchy: "futureproof", with ".task_manager" and ".executors" under it.
logger = logging.getLogger("futureproof")

from .executors import ProcessPoolExecutor, ThreadPoolExecutor  # noqa: E402
from .task_manager import ErrorPolicyEnum, Task, TaskManager  # noqa: E402

FutureProofExecutor = ThreadPoolExecutor

__all__ = [
    "TaskManager",
    "ErrorPolicyEnum",
    "ThreadPoolExecutor",
    "ProcessPoolExecutor",
    "FutureProofExecutor",
    "Task",
]
