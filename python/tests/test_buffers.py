"""Arrays and bytes without copies (issue 19, item 4): ordinary sizes pass by default, big
buffers travel as pickle protocol 5 out-of-band buffers both ways (copied once into fpp's
memory and once out of it, never into a pickle), and what arrives is what pickle would give
(a writable array for a writable one, bytes for bytes)."""
import pickle

import pytest

import fpp
import fpp.futureproof as futureproof
from fpp import _codec

from helpers import echo, identity

np = pytest.importorskip("numpy", reason="python3-numpy is not installed")

MIB = 1 << 20


def total(a):
    return float(a.sum())


def add_one_in_place(a):
    a += 1  # a writable array, as pickle gives
    return a


def flags(a):
    return a.flags.writeable, a.flags.c_contiguous, a.dtype.str, a.shape


def make(n, dtype="f8"):
    return np.arange(n, dtype=dtype)


def describe(x):
    return type(x).__name__, len(x)


def test_an_8_mb_array_passes_by_default(pool):
    a = np.random.default_rng(1).random(1 << 20)  # 8 MiB: refused by 0.2's 4 MiB default
    assert pool.submit(total, a).result() == pytest.approx(float(a.sum()))
    assert list(pool.map(total, [a] * 20)) == [pytest.approx(float(a.sum()))] * 20
    h = a[: 1 << 18]  # 2 MiB back (results: up to 4 MiB by default)
    back = pool.submit(identity, h).result()
    assert np.array_equal(back, h) and back.dtype == h.dtype
    with fpp.ProcessPool(1, max_result_size=64 * MIB) as p:  # results: 4 MiB by default
        big = p.submit(make, 4 << 20).result()  # a 32 MiB result
    assert big.shape == (4 << 20,) and big[-1] == (4 << 20) - 1


def test_futureproof_executors_take_them_too():
    a = np.ones(1 << 20)
    ex = futureproof.ProcessPoolExecutor(max_workers=2, monitor_interval=0)
    try:
        with futureproof.TaskManager(ex) as tm:
            tm.submit(total, a)
            tm.submit(make, 1 << 18)
        got = sorted(tm.results, key=lambda r: isinstance(r, float))
        assert got[1] == float(1 << 20) and got[0].shape == (1 << 18,)
    finally:
        ex.shutdown()


def test_arrays_arrive_as_pickle_would_give_them(pool):
    a = np.arange(1 << 16, dtype="i4")
    out = pool.submit(add_one_in_place, a).result()
    assert np.array_equal(out, a + 1)
    assert np.array_equal(a, np.arange(1 << 16, dtype="i4"))  # the caller's copy is untouched
    assert out.flags.writeable
    assert pool.submit(flags, a).result() == (True, True, "<i4", (1 << 16,))
    ro = np.arange(1 << 16, dtype="f8")
    ro.flags.writeable = False
    assert pool.submit(flags, ro).result()[0] is pickle.loads(pickle.dumps(ro, 5)).flags.writeable
    f = np.asfortranarray(np.arange(1 << 16, dtype="f4").reshape(256, 256))
    assert np.array_equal(pool.submit(identity, f).result(), f)
    strided = np.arange(1 << 17)[::2]  # not contiguous: in band
    assert np.array_equal(pool.submit(identity, strided).result(), strided)
    objs = np.array([{"a": 1}, None, "x"] * 20000, dtype=object)
    assert list(pool.submit(identity, objs).result()) == list(objs)


def test_bytes_like_objects_keep_their_type(pool):
    b = bytes(range(256)) * 4096
    ba = bytearray(b)
    assert pool.submit(describe, b).result() == ("bytes", len(b))
    assert pool.submit(describe, ba).result() == ("bytearray", len(b))
    args, kwargs = pool.submit(echo, b, ba, k=b).result()
    assert args == (b, ba) and type(args[0]) is bytes and type(args[1]) is bytearray
    assert kwargs == {"k": b}
    assert pool.submit(bytes, MIB).result() == bytes(MIB)
    assert type(pool.submit(bytearray, MIB).result()) is bytearray


def test_maps_carry_them_both_ways(pool):
    arrays = [np.full(1 << 16, i, dtype="f8") for i in range(40)]
    assert list(pool.map(total, arrays, chunksize=4)) == [float(i << 16) for i in range(40)]
    out = list(pool.map(make, [1 << 17] * 12, chunksize=3))
    assert all(o.shape == (1 << 17,) and o[-1] == (1 << 17) - 1 for o in out)
    blobs = list(pool.imap_unordered(bytes, [MIB] * 10, chunksize=5))
    assert blobs == [bytes(MIB)] * 10


def test_the_buffer_is_a_part_of_the_payload_not_of_the_pickle():
    """What the parent hands to fpp for a 1 MiB array: a small pickle and, as a separate
    part, a view of the array's own memory (the C half copies it once, into fpp's memory)."""
    a = np.ones(MIB // 8)
    parts = _codec.encode_call(total, (a,), {})
    views = [p for p in parts if isinstance(p, memoryview)]
    assert len(views) == 1 and views[0].nbytes == MIB
    assert np.frombuffer(views[0], np.uint8).ctypes.data == a.ctypes.data  # no copy made
    assert sum(len(p) for p in parts if not isinstance(p, memoryview)) < 2048
    assert parts[0] == b"c"  # the framed variant of a call
    # And the worker's answer for a 1 MiB result: the same, the other way.
    r = np.zeros(MIB // 8)
    tag, data = _codec._answer(_codec._R, r)
    assert tag == ord("r")
    views = [p for p in data if isinstance(p, memoryview)]
    assert len(views) == 1 and np.frombuffer(views[0], np.uint8).ctypes.data == r.ctypes.data
    # Small buffers stay in band: one plain pickle.
    tag, data = _codec._answer(_codec._R, np.zeros(100))
    assert tag == ord("R") and isinstance(data, bytes)


def test_frames_round_trip_at_any_alignment():
    objs = [np.arange(50000, dtype="i8"), {"x": bytearray(70000), "y": b"z" * 40000}, [b"a" * OOB for OOB in (1, 40000)]]
    for base in range(0, 130, 7):
        data, bufs = _codec._dumps_oob(_codec._box(objs))
        blob = b"".join(bytes(p) for p in _codec._frame(data, bufs, base))
        back = _codec._unframe(memoryview(blob), 0)
        assert np.array_equal(back[0], objs[0])
        assert back[1] == objs[1] and type(back[1]["x"]) is bytearray
        assert back[2] == objs[2]


def test_result_over_the_limit_is_that_tasks_error():
    with fpp.ProcessPool(1, max_result_size=MIB) as p:
        with pytest.raises(fpp.TaskFailed, match="max_result_size"):
            p.submit(make, MIB).result()  # 8 MiB
        assert p.submit(make, 1000).result().shape == (1000,)


def test_big_results_land_in_reused_memory_of_their_own(pool):
    """A big writable buffer of a result is copied once, into an fpp._fpp.Buffer (memory from
    a cache, so results a program lets go of serve the next ones without page faults)."""
    a = pool.submit(make, 1 << 17).result()
    owner = a
    while getattr(owner, "base", None) is not None:
        owner = owner.base
    if isinstance(owner, memoryview):
        owner = owner.obj
    assert isinstance(owner, fpp._fpp.Buffer)
    a[0] = 42.0  # its own, writable memory
    assert a[0] == 42.0
    b = fpp._fpp.copy_out(bytearray(b"abcdef"), 2, 3)
    assert bytes(b) == b"cde" and len(b) == 3
    for off, n in ((-1, 1), (4, 3), (0, 7)):
        with pytest.raises(ValueError):
            fpp._fpp.copy_out(b"abcdef", off, n)
