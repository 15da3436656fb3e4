"""Task bodies for the tests: module-level, so that they exist in every worker."""
import ctypes
import logging
import os
import time


def square(x):
    return x * x


def add(a, b, delay=0):
    if delay:
        time.sleep(delay)
    return a + b


def flaky_sum(a, b, delay=0):
    """Raises ValueError for multiples of 5."""
    if delay:
        time.sleep(delay)
    if a % 5 == 0:
        raise ValueError("%d is a multiple of 5" % a)
    return a + b


def fail_at(x, bad):
    if x == bad:
        raise KeyError("item %d" % x)
    return x


def sleep(seconds, value=None):
    time.sleep(seconds)
    return value


def segfault(x=None):
    ctypes.string_at(0)  # reads address 0: SIGSEGV
    return x


def hard_exit(code):
    os._exit(code)


def kill_self(sig):
    os.kill(os.getpid(), sig)


def pid(x=None):
    return os.getpid()


def big_result(n):
    return b"x" * n


def echo(*args, **kwargs):
    return args, kwargs


class Unpicklable(Exception):
    """An exception that pickles but cannot be rebuilt (its __init__ wants two arguments)."""

    def __init__(self, a, b):
        super().__init__("%s/%s" % (a, b))


def raise_unpicklable(x):
    raise Unpicklable(x, x + 1)


def raise_lock_error(x):
    import threading

    e = RuntimeError("carries a lock")
    e.lock = threading.Lock()  # cannot be pickled
    raise e


def return_lock(x):
    import threading

    return threading.Lock()


def log_to(name, message):
    logging.getLogger(name).warning("%s from pid %d", message, os.getpid())
    return os.getpid()


def sys_exit(code):
    raise SystemExit(code)


def identity(x):
    return x


def redefined():
    return "first definition"


def mark_and_sleep(path, seconds):
    """Appends a line to path when it starts (one write: lines from several processes do not
    mix), then sleeps."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"started %d\n" % os.getpid())
    finally:
        os.close(fd)
    time.sleep(seconds)


def shout(i):
    print("task %d says hello" % i)
    return i


_state = ["unset"]


def set_state(value):
    """An initializer: sets what get_state returns in this process."""
    _state[0] = value


def get_state(_=None):
    return _state[0]
