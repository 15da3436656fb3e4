"""Installing the package (issue 19, item 3), offline: pip install ./python in a venv and
outside one on Debian's python3, with another python3 built from source, and cmake --install.

Each pip case builds from a copy of the checkout (python/, lib/, include/, CMakeLists.txt) so
that the tree under test gains no build files, and installs somewhere of the test's own (a
venv, or --root for Debian's python3: the command is the README's, staged). The installed
package then runs a task in a worker, and a crash, from a directory where the checkout's
fpp cannot be imported. These compile libfpp: a minute or two each.
"""
import glob
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
WHEELS = "/usr/share/python-wheels"  # Debian's python3-setuptools-whl, python3-wheel-whl
SMOKE = """
import concurrent.futures as cf, ctypes, fpp, os, sys
assert os.path.dirname(fpp.__file__).startswith(sys.argv[1]), (fpp.__file__, sys.argv[1])
with fpp.ProcessPool(2) as p:
    assert p.submit(pow, 2, 10).result() == 1024
    assert isinstance(p.submit(ctypes.string_at, 0).exception(), fpp.WorkerCrashed)
    assert list(p.map(abs, [-1, -2], chunksize=2)) == [1, 2]
print("OK", fpp.__file__)
"""


def _run(cmd, **kw):
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kw)
    assert out.returncode == 0, "%s\n%s\n%s" % (cmd, out.stdout[-4000:], out.stderr[-4000:])
    return out


def _env():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_"))}
    env["PIP_NO_INPUT"] = "1"
    return env


def _checkout(tmp):
    """A copy of what pip needs: the package and libfpp's sources."""
    src = tmp / "fpp-src"
    for d in ("python", "lib", "include"):
        shutil.copytree(os.path.join(TOP, d), src / d,
                        ignore=shutil.ignore_patterns("build", "__pycache__", "*.so", "*.egg-info"))
    shutil.copy(os.path.join(TOP, "CMakeLists.txt"), src / "CMakeLists.txt")
    return src


def _smoke(python, where, tmp, env=None):
    out = _run([python, "-c", SMOKE, str(where)], cwd=str(tmp), env=env or _env())
    assert out.stdout.startswith("OK"), out.stdout


def _needs_venv():
    if subprocess.run(["/usr/bin/python3", "-c", "import ensurepip, venv"], capture_output=True).returncode:
        pytest.skip("apt-get install python3-venv")


def _needs_debian_wheels():
    if not glob.glob(os.path.join(WHEELS, "setuptools-*.whl")) or not glob.glob(os.path.join(WHEELS, "wheel-*.whl")):
        pytest.skip("Debian's wheels are missing: apt-get install python3-setuptools-whl python3-wheel-whl")


def test_pip_install_in_a_venv_offline(tmp_path):
    """python3 -m venv, then pip install ./python with build isolation, its build backend
    from Debian's wheels instead of an index."""
    _needs_debian_wheels()
    _needs_venv()
    src = _checkout(tmp_path)
    venv = tmp_path / "venv"
    _run(["/usr/bin/python3", "-m", "venv", str(venv)], env=_env())
    py = str(venv / "bin" / "python")
    _run([py, "-m", "pip", "install", "--no-index", "--find-links", WHEELS, "./python"], cwd=str(src), env=_env())
    _smoke(py, venv, tmp_path)
    # And it goes away cleanly.
    _run([py, "-m", "pip", "uninstall", "-y", "fpp"], env=_env())
    assert subprocess.run([py, "-c", "import fpp"], cwd=str(tmp_path), env=_env(),
                          capture_output=True).returncode != 0


def test_pip_install_outside_a_venv_on_debians_python3(tmp_path):
    """The README's command for Debian's python3 (PEP 668: --break-system-packages; the build
    backend: Debian's python3-setuptools and python3-wheel, --no-build-isolation), staged with
    --root so that this test leaves /usr/local alone."""
    if not os.path.exists("/usr/lib/python3.11/EXTERNALLY-MANAGED") and not glob.glob("/usr/lib/python3*/EXTERNALLY-MANAGED"):
        pytest.skip("not Debian's externally-managed python3")
    if subprocess.run(["/usr/bin/python3", "-c", "import setuptools, wheel, pip"], capture_output=True,
                      env=_env()).returncode:
        pytest.skip("apt-get install python3-pip python3-setuptools python3-wheel")
    src = _checkout(tmp_path)
    root = tmp_path / "root"
    _run(["/usr/bin/python3", "-m", "pip", "install", "--break-system-packages", "--no-build-isolation",
          "--no-index", "--root", str(root), "./python"], cwd=str(src), env=_env())
    platlib = sysconfig.get_path("platlib")  # /usr/local/lib/python3.X/dist-packages
    staged = str(root) + platlib
    assert os.path.isdir(os.path.join(staged, "fpp")), os.listdir(str(root))
    env = _env()
    env["PYTHONPATH"] = staged
    _smoke("/usr/bin/python3", staged, tmp_path, env)


def _other_python():
    """A python3 that is not Debian's (built from source, pyenv...), with its headers."""
    seen = {os.path.realpath("/usr/bin/python3")}
    for d in os.environ.get("PATH", "").split(os.pathsep):
        for name in ("python3",) + tuple("python3.%d" % m for m in range(8, 15)):
            p = os.path.join(d, name)
            if not os.access(p, os.X_OK) or os.path.realpath(p) in seen:
                continue
            seen.add(os.path.realpath(p))
            out = subprocess.run([p, "-c", "import sys, sysconfig, os; print(sys.executable); "
                                  "print(os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))"],
                                 capture_output=True, text=True, env=_env())
            lines = out.stdout.split()
            if out.returncode == 0 and len(lines) == 2 and lines[1] == "True":
                exe = lines[0]
                if os.path.realpath(exe) not in {os.path.realpath("/usr/bin/python3")}:
                    return exe
    return None


def test_pip_install_with_another_python3_built_from_source(tmp_path):
    """A venv of a python3 that is not Debian's: the extension compiles against that
    Python's own headers, with the venv's own setuptools (Debian's setuptools wheel is patched
    for Debian's Python and fails elsewhere: "AttributeError: install_layout") and wheel from
    Debian's python3-wheel-whl (pure Python)."""
    _needs_debian_wheels()
    other = _other_python()
    if other is None:
        pytest.skip("no python3 other than Debian's (with its headers) on PATH")
    src = _checkout(tmp_path)
    venv = tmp_path / "venv"
    _run([other, "-m", "venv", str(venv)], env=_env())
    py = str(venv / "bin" / "python")
    if subprocess.run([py, "-c", "import setuptools"], env=_env()).returncode != 0:
        pytest.skip("%s's venvs have no setuptools (Python 3.12+): it needs one from an index" % other)
    _run([py, "-m", "pip", "install", "--no-index", "--find-links", WHEELS, "wheel"], env=_env())
    _run([py, "-m", "pip", "install", "--no-build-isolation", "--no-index", "./python"], cwd=str(src), env=_env())
    _smoke(py, venv, tmp_path)


def test_cmake_install_puts_it_where_its_python_finds_it(tmp_path):
    """cmake --install (staged with DESTDIR) puts the package in the interpreter's platlib and
    says so; with another --prefix it says where and that PYTHONPATH is needed."""
    build = os.environ.get("FPP_BUILD_DIR")
    if not build or not os.path.exists(os.path.join(build, "cmake_install.cmake")):
        pytest.skip("not run from a CMake build (ctest sets FPP_BUILD_DIR)")
    cache = open(os.path.join(build, "CMakeCache.txt")).read()
    python = sys.executable  # ctest runs this with the interpreter the build is for
    env = _env()
    env["DESTDIR"] = str(tmp_path / "stage")
    out = _run(["cmake", "--install", build], env=env)
    said = [line for line in out.stdout.splitlines() if "fpp: the Python package is in" in line]
    assert len(said) == 1, out.stdout
    platlib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('platlib'))"],
                             capture_output=True, text=True).stdout.strip()
    assert "is in %s/fpp: %s imports it" % (platlib, python) in said[0], said
    staged = str(tmp_path / "stage") + platlib
    env = _env()
    env["PYTHONPATH"] = staged
    _smoke(python, staged, tmp_path, env)
    where = next(line.split("=", 1)[1] for line in cache.splitlines()
                 if line.startswith("FPP_PYTHON_INSTALL_DIR:"))
    if not os.path.isabs(where):  # under the prefix: another prefix moves it (else: DESTDIR only)
        env = _env()
        env["DESTDIR"] = str(tmp_path / "stage2")
        out = _run(["cmake", "--install", build, "--prefix", "/opt/fpp-elsewhere"], env=env)
        assert ("is in /opt/fpp-elsewhere/%s/fpp, which %s does not search: run it with "
                "PYTHONPATH=/opt/fpp-elsewhere/%s" % (where, python, where)) in out.stdout, out.stdout
