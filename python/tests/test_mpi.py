"""fpp.mpi (issue 19, item 5): mpirun -np N python3 -m fpp.mpi program.py, with
MPIPoolExecutor's mpi4py.futures interface, crash isolation naming the rank, several executors
in one job, the program's exit status, and a clean, quick end. Skipped where fpp._fpp_mpi was
not built (no MPI) or mpirun is missing."""
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

try:
    from fpp import _fpp_mpi  # noqa: F401
except ImportError:
    pytest.skip("fpp._fpp_mpi not built (no MPI found)", allow_module_level=True)
MPIRUN = shutil.which("mpirun") or shutil.which("mpiexec")
if MPIRUN is None:
    pytest.skip("no mpirun", allow_module_level=True)


def mpirun(tmp_path, program, np=3, args=(), timeout=180):
    """Runs program (its text) under mpirun -np np python3 -m fpp.mpi; (status, out, err, s)."""
    path = tmp_path / "prog.py"
    path.write_text(textwrap.dedent(program))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1")
    t0 = time.monotonic()
    out = subprocess.run([MPIRUN, "-np", str(np), sys.executable, "-m", "fpp.mpi", str(path)] + list(args),
                         capture_output=True, text=True, timeout=timeout, env=env, cwd=str(tmp_path))
    return out.returncode, out.stdout, out.stderr, time.monotonic() - t0


PROGRAM = """
    import concurrent.futures as cf, ctypes, os, sys
    import fpp
    from fpp.mpi import MPIPoolExecutor, get_rank, get_size

    def square(x):
        return x * x

    def pid_and_state(x):
        return os.getpid(), STATE[0]

    def crash(x):
        ctypes.string_at(0)

    def fail(x):
        raise KeyError("item %d" % x)

    STATE = ["unset"]

    def init(value):
        STATE[0] = value

    if __name__ == "__main__":
        print("rank", get_rank(), "of", get_size(), "argv", sys.argv[1:])
        with MPIPoolExecutor(max_workers=4, initializer=init, initargs=("ready",)) as ex:
            assert isinstance(ex, cf.Executor) and ex.num_workers == 4
            print("map", sum(ex.map(square, range(3000), chunksize=64)))
            print("unordered", sorted(ex.map(square, range(10), unordered=True)))
            print("starmap", list(ex.starmap(pow, [(2, 3), (3, 2)])))
            fs = [ex.submit(square, i) for i in range(100)] + [ex.submit(crash, 0), ex.submit(fail, 7)]
            done, _ = cf.wait(fs, timeout=120)
            assert len(done) == len(fs)
            print("results", sum(f.result() for f in fs[:100]))
            e = fs[-2].exception()
            print("crashed", type(e).__name__, e)
            print("raised", repr(fs[-1].exception()))
            seen = set(ex.map(pid_and_state, range(400)))
            print("workers", len({p for p, _ in seen}), "states", sorted({s for _, s in seen}))
            print("after", ex.submit(square, 12).result())
        with MPIPoolExecutor() as ex2:  # a second executor in the same job
            print("second", ex2.submit(square, 5).result())
        MPIPoolExecutor().shutdown()  # one never used
        print("done")
"""


def test_a_job_runs_and_a_crash_fails_only_its_future(tmp_path):
    status, out, err, took = mpirun(tmp_path, PROGRAM, args=("a", "b"))
    assert status == 0, out + err
    assert "rank 0 of 3 argv ['a', 'b']" in out
    assert "map %d" % sum(i * i for i in range(3000)) in out
    assert "unordered [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]" in out
    assert "starmap [8, 9]" in out
    assert "results %d" % sum(i * i for i in range(100)) in out
    assert re.search(r"crashed WorkerCrashed rank [12]: worker \d+ killed by SIGSEGV while running task \d+", out), out
    assert "raised KeyError('item 7')" in out
    assert "workers 4 states ['ready']" in out  # 2 per serving rank, each initialised
    assert "after 144" in out and "second 25" in out and out.rstrip().endswith("done")


def test_the_programs_failure_is_the_jobs_status_and_it_ends_cleanly(tmp_path):
    status, out, err, took = mpirun(tmp_path, """
        from fpp.mpi import MPIPoolExecutor

        def square(x):
            return x * x

        if __name__ == "__main__":
            ex = MPIPoolExecutor(max_workers=2)
            print(ex.submit(square, 3).result(), flush=True)
            raise ValueError("the program failed")  # with the executor still open
    """)
    assert status == 1, out + err
    assert out.strip() == "9"
    assert "ValueError: the program failed" in err
    assert took < 60


def test_the_launcher_is_needed_and_says_so(tmp_path):
    code = "from fpp.mpi import MPIPoolExecutor\nMPIPoolExecutor()\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert out.returncode != 0 and "python3 -m fpp.mpi" in out.stderr
    status, out, err, took = mpirun(tmp_path, "print('never')\n", np=1)
    assert status == 2 and "needs 2 ranks or more" in err
