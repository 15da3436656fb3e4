"""Resumable maps: ProcessPool.map(journal=...) and futureproof's TaskManager(journal=...) on
fpp's task journal. Executions are counted with marker files (one per call of the function,
written when it returns), so "ran only what was not recorded" is checked, never timed."""
import os
import signal
import subprocess
import sys
import textwrap
import uuid

import pytest

import fpp
import fpp.futureproof as futureproof
from helpers import square

N = 40
CHUNK = 3


def marked_square(d, x):
    """x * x, leaving a marker file in d (one per execution)."""
    with open(os.path.join(d, "%d.%s" % (x, uuid.uuid4().hex)), "w"):
        pass
    return x * x


def marked_pair(t):
    return marked_square(*t)


def crash_if_flagged(d, x):
    """Kills its worker for x == 5 while d/crash exists; else marked_square."""
    if x == 5 and os.path.exists(os.path.join(d, "crash")):
        os.kill(os.getpid(), signal.SIGKILL)
    if x == 3 and os.path.exists(os.path.join(d, "raise")):
        raise ValueError("bad input 3")
    return marked_square(d, x)


def cube(d, x):
    return x * x * x


def runs(d):
    """{x: executions} from the marker files in d."""
    out = {}
    for name in os.listdir(d):
        if name[0].isdigit():
            x = int(name.split(".")[0])
            out[x] = out.get(x, 0) + 1
    return out


def clear(d):
    for name in os.listdir(d):
        if name[0].isdigit():
            os.unlink(os.path.join(d, name))


def chunk_of(x):
    return x // CHUNK


@pytest.fixture
def marks(tmp_path):
    d = tmp_path / "marks"
    d.mkdir()
    return str(d)


def items(d, n=N):
    return [(d, x) for x in range(n)]


def test_map_interrupted_then_resumed(tmp_path, marks):
    journal = tmp_path / "map.journal"
    got = []
    with pytest.raises(KeyboardInterrupt):
        with fpp.ProcessPool(2) as pool:
            for r in pool.map(marked_square, *zip(*items(marks)), chunksize=CHUNK,
                              journal=journal, journal_key="squares"):
                got.append(r)
                if len(got) == 10:  # in the middle of chunk 3
                    raise KeyboardInterrupt
    first = runs(marks)
    assert got == [x * x for x in range(10)]
    # Chunks 0..2 were handed out: finished, so recorded.
    assert all(first.get(x) == 1 for x in range(9))
    clear(marks)

    with fpp.ProcessPool(2) as pool:
        again = list(pool.map(marked_square, *zip(*items(marks)), chunksize=CHUNK,
                              journal=journal, journal_key="squares"))
        assert again == [x * x for x in range(N)]
        second = runs(marks)
        # Nothing recorded ran again; what ran, ran as whole chunks, once each.
        assert not any(x in second for x in range(9))
        assert set(second) | set(first) == set(range(N))
        for x in second:
            assert second[x] == 1
            assert all(y in second for y in range(N) if chunk_of(y) == chunk_of(x))
        clear(marks)
        # The pool is itself again: plain tasks and maps.
        assert pool.submit(cube, marks, 3).result() == 27
        assert list(pool.map(cube, [marks] * 4, range(4))) == [0, 1, 8, 27]
        # A third run finds everything recorded: nothing runs, the results are whole.
        third = list(pool.map(marked_square, *zip(*items(marks)), chunksize=CHUNK,
                              journal=journal, journal_key="squares"))
        assert third == [x * x for x in range(N)]
        assert runs(marks) == {}


def test_starmap_and_imap_unordered(tmp_path, marks):
    with fpp.ProcessPool(2) as pool:
        for _ in range(2):  # the second time everything is read back
            out = pool.starmap(marked_square, items(marks), chunksize=4,
                               journal=tmp_path / "s.journal", journal_key="star")
            assert out == [x * x for x in range(N)]
            assert sum(runs(marks).values()) == N
        clear(marks)
        for _ in range(2):
            res = sorted(pool.imap_unordered(marked_pair, items(marks), chunksize=4,
                                             journal=tmp_path / "u.journal"))
            assert res == sorted(x * x for x in range(N))
            assert sum(runs(marks).values()) == N


SCRIPT = textwrap.dedent("""
    import os, signal, sys, time
    import fpp

    def marked_square(d, x):
        with open(os.path.join(d, "%d.%d" % (x, time.monotonic_ns())), "w"):
            pass
        return x * x

    if __name__ == "__main__":
        marks, journal, mode = sys.argv[1], sys.argv[2], sys.argv[3]
        with fpp.ProcessPool(2) as pool:
            out = []
            for r in pool.map(marked_square, [marks] * 40, range(40), chunksize=3,
                              journal=journal, journal_key="killed"):
                out.append(r)
                if mode == "kill" and len(out) == 12:
                    # What finished more than a flush period ago is in the file.
                    time.sleep(1)
                    os.kill(os.getpid(), signal.SIGKILL)
            print(repr(out))
""")


def test_map_resumes_after_sigkill(tmp_path, marks):
    script = tmp_path / "killed.py"
    script.write_text(SCRIPT)
    journal = str(tmp_path / "k.journal")
    p = subprocess.run([sys.executable, str(script), marks, journal, "kill"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr
    first = runs(marks)
    assert all(first.get(x) == 1 for x in range(12))
    clear(marks)
    p = subprocess.run([sys.executable, str(script), marks, journal, "run"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert eval(p.stdout.strip().splitlines()[-1]) == [x * x for x in range(40)]
    second = runs(marks)
    assert not any(x in second for x in range(12))
    assert set(second) | set(first) == set(range(40))


def test_failed_chunks_replayed_or_rerun(tmp_path, marks):
    journal = tmp_path / "f.journal"
    flag = os.path.join(marks, "crash")
    open(flag, "w").close()
    with fpp.ProcessPool(2) as pool:
        it = pool.map(crash_if_flagged, *zip(*items(marks, 12)), chunksize=CHUNK,
                      journal=journal)
        with pytest.raises(fpp.WorkerCrashed):
            list(it)
        os.unlink(flag)
        clear(marks)
        # Without rerun_failed the recorded crash is replayed: chunk 1 does not run again.
        got = []
        with pytest.raises(fpp.WorkerCrashed):
            for r in pool.map(crash_if_flagged, *zip(*items(marks, 12)), chunksize=CHUNK,
                              journal=journal):
                got.append(r)
        assert got == [0, 1, 4]
        assert not any(x in runs(marks) for x in (3, 4, 5))
        clear(marks)
        # rerun_failed: it runs again (and now succeeds); nothing else does.
        out = list(pool.map(crash_if_flagged, *zip(*items(marks, 12)), chunksize=CHUNK,
                            journal=journal, rerun_failed=True))
        assert out == [x * x for x in range(12)]
        ran = runs(marks)
        assert {3, 4, 5} <= set(ran)
        assert all(n == 1 for n in ran.values())
        assert not any(x in ran for x in (0, 1, 2))


def test_python_exception_is_replayed(tmp_path, marks):
    journal = tmp_path / "e.journal"
    open(os.path.join(marks, "raise"), "w").close()
    with fpp.ProcessPool(2) as pool:
        for attempt in range(2):
            got = []
            with pytest.raises(ValueError, match="bad input 3"):
                for r in pool.map(crash_if_flagged, *zip(*items(marks, 9)), chunksize=CHUNK,
                                  journal=journal):
                    got.append(r)
            assert got == [0, 1, 4]
            if attempt == 0:
                clear(marks)
        # The second time nothing ran for chunk 1 (nor chunk 0): the exception was read back.
        assert not any(x in runs(marks) for x in range(6))


def test_another_runs_journal_is_refused(tmp_path, marks):
    journal = tmp_path / "m.journal"
    with fpp.ProcessPool(2) as pool:
        assert list(pool.map(marked_square, *zip(*items(marks, 6)), chunksize=2,
                             journal=journal, journal_key="a")) == [x * x for x in range(6)]
        clear(marks)
        for kw in (dict(chunksize=2, journal_key="b"),  # another key
                   dict(chunksize=3, journal_key="a")):  # other chunks: other ids
            with pytest.raises(fpp.JournalMismatch, match="another run"):
                list(pool.map(marked_square, *zip(*items(marks, 6)), journal=journal, **kw))
        with pytest.raises(fpp.JournalMismatch):  # another function
            list(pool.map(cube, *zip(*items(marks, 6)), chunksize=2, journal=journal,
                          journal_key="a"))
        assert runs(marks) == {}
        bad = tmp_path / "not-a-journal"
        bad.write_bytes(b"this is no journal\n" * 10)
        with pytest.raises(fpp.JournalError) as e:
            list(pool.map(marked_square, *zip(*items(marks, 6)), journal=bad))
        assert not isinstance(e.value, fpp.JournalMismatch)
        assert runs(marks) == {}
        # The pool still works.
        assert pool.submit(cube, marks, 2).result() == 8


def test_task_manager_journal(tmp_path, marks):
    journal = tmp_path / "tm.journal"
    with futureproof.ProcessPoolExecutor(max_workers=2, monitor_interval=0) as ex:
        done = []
        with pytest.raises(KeyboardInterrupt):
            with futureproof.TaskManager(ex, journal=journal, journal_key="tm") as tm:
                tm.map(marked_square, items(marks))
                for task in tm.as_completed():
                    done.append(task.args[1])
                    if len(done) == 8:
                        raise KeyboardInterrupt
        first = runs(marks)
        assert all(first.get(x) == 1 for x in done)
        clear(marks)

        with futureproof.TaskManager(ex, journal=journal, journal_key="tm") as tm:
            tm.map(marked_square, items(marks))
        assert sorted(tm.results) == [x * x for x in range(N)]
        assert all(t.result == t.args[1] ** 2 for t in tm.completed_tasks)
        second = runs(marks)
        assert not any(x in second for x in done)
        assert set(second) | set(first) == set(range(N))
        assert all(n == 1 for n in second.values())
        assert tm.skipped_count == N - len(second)
        clear(marks)

        with futureproof.TaskManager(ex, journal=journal, journal_key="tm") as tm:
            tm.map(marked_square, items(marks))
        assert sorted(tm.results) == [x * x for x in range(N)]
        assert runs(marks) == {} and tm.skipped_count == N

        with pytest.raises(fpp.JournalMismatch):
            with futureproof.TaskManager(ex, journal=journal, journal_key="other") as tm:
                tm.map(marked_square, items(marks))
        with pytest.raises(fpp.JournalMismatch):
            with futureproof.TaskManager(ex, journal=journal, journal_key="tm") as tm:
                tm.map(cube, items(marks))
        assert runs(marks) == {}


def test_task_manager_journal_needs_processes(tmp_path):
    with futureproof.ThreadPoolExecutor(max_workers=1, monitor_interval=0) as ex:
        with pytest.raises(ValueError, match="ProcessPoolExecutor"):
            futureproof.TaskManager(ex, journal=tmp_path / "x")


def test_journaled_map_shares_the_pool(tmp_path, marks):
    """Futures submitted before it finish first; ones submitted while it runs wait for it;
    shutdown while it is half read closes it (what finished stays recorded)."""
    journal = tmp_path / "share.journal"
    with fpp.ProcessPool(2) as pool:
        before = [pool.submit(cube, marks, x) for x in range(5)]
        it = pool.map(marked_square, *zip(*items(marks)), chunksize=CHUNK, journal=journal)
        assert next(it) == 0
        assert all(f.done() for f in before)
        during = pool.submit(cube, marks, 4)
        assert next(it) == 1
        rest = list(it)
        assert rest == [x * x for x in range(2, N)]
        assert during.result() == 64
        assert [f.result() for f in before] == [x ** 3 for x in range(5)]
        clear(marks)
        # Half read when the with block ends: shutdown closes it, does not wait for ever.
        it = pool.map(marked_square, *zip(*items(marks)), chunksize=CHUNK,
                      journal=tmp_path / "half.journal")
        assert [next(it) for _ in range(4)] == [0, 1, 4, 9]
    with pytest.raises(StopIteration):
        next(it)
    half = runs(marks)
    clear(marks)
    with fpp.ProcessPool(2) as pool:
        assert list(pool.map(marked_square, *zip(*items(marks)), chunksize=CHUNK,
                             journal=tmp_path / "half.journal")) == [x * x for x in range(N)]
    assert not any(x in runs(marks) for x in range(6))
    assert set(runs(marks)) | set(half) == set(range(N))


def test_a_journaled_map_left_by_a_break_gives_the_pool_back(tmp_path):
    """Breaking out of a for loop over a journaled map drops it: the pool is the others'
    again at once (before: the map stayed alive through the pool's reference to it, and every
    later submit waited for ever, every later journaled map was refused)."""
    with fpp.ProcessPool(2) as pool:
        for r in pool.imap(square, range(1000), journal=tmp_path / "a.journal"):
            if r > 100:
                break
        assert pool.submit(square, 3).result(timeout=30) == 9
        assert list(pool.map(square, range(3), journal=tmp_path / "b.journal")) == [0, 1, 4]
