"""setuptools build of the Python package fpp, without CMake (pyproject.toml names it as the
build backend's script, so `pip install ./python` runs it).

The extension fpp._fpp is compiled from python/src/fppmodule.c together with libfpp's own
sources (the folders ../lib/LAYERS gives to libfpp: libfpp_sources() below), so nothing needs to be installed first. From the top of the
checkout (see the README's "Python: installing"):

    pip install ./python                                   # into a venv, or with
                                                           # --break-system-packages outside
    cd python && python3 setup.py build_ext --inplace      # or in place: PYTHONPATH=python

CMake (-DFPP_WITH_PYTHON=ON, the default AUTO) is the other build; both compile the same.
"""
import glob
import os
import re
import shlex
import shutil
import subprocess

from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
GEN = os.path.join(HERE, "build", "fpp-include")


def version():
    with open(os.path.join(TOP, "CMakeLists.txt")) as f:
        m = re.search(r"project\(fpp VERSION (\d+)\.(\d+)\.(\d+)", f.read())
    return m.groups()


def generate_version_header():
    """include/fpp_version.h.in, filled in as CMake's configure_file does."""
    major, minor, patch = version()
    with open(os.path.join(TOP, "include", "fpp_version.h.in")) as f:
        text = f.read()
    for k, v in (("PROJECT_VERSION_MAJOR", major), ("PROJECT_VERSION_MINOR", minor),
                 ("PROJECT_VERSION_PATCH", patch), ("PROJECT_VERSION", "%s.%s.%s" % (major, minor, patch))):
        text = text.replace("@%s@" % k, v)
    os.makedirs(GEN, exist_ok=True)
    path = os.path.join(GEN, "fpp_version.h")
    old = open(path).read() if os.path.exists(path) else None
    if old != text:
        with open(path, "w") as f:
            f.write(text)


def layer_sources(library):
    """A library's sources, relative to this directory, from the layout: every .c of the layers
    ../lib/LAYERS gives to that library (libfpp, or libfpp_mpi, which needs Open MPI)."""
    layers = []
    with open(os.path.join(TOP, "lib", "LAYERS")) as f:
        for line in f:
            fields = line.split()
            if len(fields) > 1 and not fields[0].startswith("#") and fields[1] == library:
                layers.append(fields[0])
    return sorted(os.path.relpath(p, HERE) for layer in layers
                  for p in glob.glob(os.path.join(TOP, "lib", layer, "*.c")))


def libfpp_sources():
    """libfpp's sources (the extension fpp._fpp compiles them in)."""
    return layer_sources("libfpp")


def libfpp_mpi_sources():
    """libfpp_mpi's sources (fpp._fpp_mpi adds them)."""
    return layer_sources("libfpp_mpi")


def mpi_flags():
    """The MPI C compiler wrapper's flags as Extension arguments, or None: no mpicc (or
    MPICC), or FPP_WITH_MPI=OFF in the environment. Then fpp.mpi is installed without its
    extension and says so when used."""
    if os.environ.get("FPP_WITH_MPI", "AUTO").upper() == "OFF":
        return None
    mpicc = os.environ.get("MPICC") or shutil.which("mpicc")
    if not mpicc:
        return None

    def ask(*args):
        try:
            out = subprocess.run([mpicc] + list(args), capture_output=True, text=True, timeout=60)
        except OSError:
            return None
        return shlex.split(out.stdout) if out.returncode == 0 else None

    words = ask("-showme:compile")  # Open MPI
    if words is not None:
        words += ask("-showme:link") or []
    else:
        words = (ask("-show") or [])[1:]  # MPICH: the whole command line, compiler first
    if not words:
        return None
    f = {"include_dirs": [], "library_dirs": [], "libraries": [], "extra_link_args": [], "extra_compile_args": []}
    for w in words:
        if w.startswith("-I"):
            f["include_dirs"].append(w[2:])
        elif w.startswith("-L"):
            f["library_dirs"].append(w[2:])
        elif w.startswith("-l"):
            f["libraries"].append(w[2:])
        elif w.startswith("-Wl,") or w == "-pthread":
            f["extra_link_args"].append(w)
        elif w.startswith("-") and not w.startswith(("-c", "-o")):
            f["extra_compile_args"].append(w)
    return f


if not os.path.isfile(os.path.join(TOP, "include", "fpp.h")):
    raise SystemExit("fpp's setup.py builds from a checkout of fpp: it needs ../include and ../lib "
                     "next to python/ (pip install ./python from the top of the checkout)")
generate_version_header()
lib_sources = libfpp_sources()

COMPILE_ARGS = ["-std=c11", "-fvisibility=hidden", "-Wall", "-Wextra", "-Wno-unused-parameter"]
ext_modules = [
    Extension(
        "fpp._fpp",
        sources=["src/fppmodule.c"] + lib_sources,
        include_dirs=[os.path.join(TOP, "include"), os.path.join(TOP, "lib"), GEN],
        define_macros=[("_GNU_SOURCE", None)],
        extra_compile_args=COMPILE_ARGS,
        libraries=["rt"],
        extra_link_args=["-pthread"],
    )
]
mpi = mpi_flags()
if mpi is not None:  # fpp._fpp_mpi, for fpp.mpi: libfpp and libfpp_mpi, with MPI
    ext_modules.append(Extension(
        "fpp._fpp_mpi",
        sources=["src/fppmodule_mpi.c"] + libfpp_mpi_sources() + lib_sources,
        include_dirs=[os.path.join(TOP, "include"), os.path.join(TOP, "lib"), GEN] + mpi["include_dirs"],
        define_macros=[("_GNU_SOURCE", None)],
        extra_compile_args=COMPILE_ARGS + mpi["extra_compile_args"],
        library_dirs=mpi["library_dirs"],
        libraries=["rt", "dl"] + mpi["libraries"],
        extra_link_args=["-pthread", "-Wl,-Bsymbolic"] + mpi["extra_link_args"],
    ))

setup(
    version="%s.%s.%s" % version(),
    packages=["fpp", "fpp.futureproof", "fpp.mpi"],
    ext_modules=ext_modules,
)
