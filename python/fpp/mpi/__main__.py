"""python3 -m fpp.mpi: the launcher, run by mpirun on every rank.

    mpirun -np N python3 -m fpp.mpi program.py [args...]
    mpirun -np N python3 -m fpp.mpi -m package.module [args...]

Every rank starts MPI. Rank 0 runs the program as __main__ (sys.argv as it would be), then
shuts its executors down (waiting for what they run; after a KeyboardInterrupt, at once) and
lets the serving ranks go. Every other rank loads the program as __worker__ and installs it as
__main__ (so that the functions rank 0 sends by reference exist there), then serves rank 0's
executors in local pools until rank 0 is done. The exit status is rank 0's program's.
"""
import os
import runpy
import sys
import traceback
import types

USAGE = "usage: mpirun -np N python3 -m fpp.mpi (program.py | -m module) [args...]"


def _load_as_worker(target, is_module):
    """The program's top level, run as __worker__ and installed as __main__."""
    if is_module:
        g = runpy.run_module(target, run_name="__worker__", alter_sys=False)
    else:
        g = runpy.run_path(target, run_name="__worker__")
    main = types.ModuleType("__main__")
    main.__dict__.update(g)
    main.__name__ = "__main__"
    sys.modules["__main__"] = main


def main(argv):
    if len(argv) < 1 or argv[0] in ("-h", "--help") or (argv[0] == "-m" and len(argv) < 2):
        print(USAGE, file=sys.stderr)
        return 2
    is_module = argv[0] == "-m"
    target = argv[1] if is_module else argv[0]
    rest = argv[2:] if is_module else argv[1:]

    import fpp.mpi as fmpi
    from fpp import _driver

    if fmpi._fpp_mpi is None:
        print("fpp.mpi: %s" % fmpi._why, file=sys.stderr)
        return 2
    rank, size, _ = fmpi._fpp_mpi.init()
    fmpi._rank = (rank, size)
    if size < 2:
        print("fpp.mpi: needs 2 ranks or more (rank 0 runs the program, the others serve): "
              "mpirun -np N with N >= 2", file=sys.stderr)
        fmpi._fpp_mpi.finalize()
        return 2

    sys.argv = [target] + rest
    if rank != 0:
        status = 0
        try:
            if not is_module:
                sys.path.insert(0, os.path.dirname(os.path.abspath(target)))
            _load_as_worker(target, is_module)
        except BaseException:  # the program cannot load here: serve anyway, rank 0 will say
            traceback.print_exc()
            status = 1
        fmpi._fpp_mpi.serve()
        fmpi._fpp_mpi.finalize()
        return status

    status = 0
    interrupted = False
    try:
        if is_module:
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:
            sys.path.insert(0, os.path.dirname(os.path.abspath(target)))
            runpy.run_path(target, run_name="__main__")
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, int) and e.code is not None:
            print(e.code, file=sys.stderr)
    except KeyboardInterrupt:
        interrupted = True
        traceback.print_exc()
        status = 130
    except BaseException:
        traceback.print_exc()
        status = 1
    finally:
        for d in list(_driver.drivers):  # every executor freed: the serving ranks' serve ends
            try:
                if interrupted:
                    d.terminate()
                else:
                    d.shutdown(wait=True)
            except KeyboardInterrupt:
                interrupted = True
                d.terminate()
        fmpi._fpp_mpi.finish()
        fmpi._fpp_mpi.finalize()
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
