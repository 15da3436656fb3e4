"""setuptools build of the Python package fpp, without CMake.

The extension fpp._fpp is compiled from python/src/fppmodule.c together with libfpp's own
sources (the folders of ../lib/LAYERS marked libfpp), so nothing needs to be installed first. From this directory:

    /usr/bin/python3 setup.py build_ext --inplace     # then PYTHONPATH=python works
    /usr/bin/python3 -m pytest tests                  # with PYTHONPATH=. (python/)

CMake (-DFPP_WITH_PYTHON=ON, the default AUTO) is the main build; this is the alternative.
"""
import glob
import os
import re

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


def libfpp_sources():
    """libfpp's sources, from the layout: every .c of the layers lib/LAYERS gives to libfpp
    (libfpp_mpi's layer needs Open MPI and is not part of the extension)."""
    layers = []
    with open(os.path.join(TOP, "lib", "LAYERS")) as f:
        for line in f:
            fields = line.split()
            if fields and not fields[0].startswith("#") and fields[1] == "libfpp":
                layers.append(fields[0])
    return sorted(os.path.relpath(p, HERE) for layer in layers
                  for p in glob.glob(os.path.join(TOP, "lib", layer, "*.c")))


generate_version_header()
lib_sources = libfpp_sources()

setup(
    name="fpp",
    version="%s.%s.%s" % version(),
    description="Python callables in fpp's crash-isolated process pool; futureproof's API on it",
    packages=["fpp", "fpp.futureproof"],
    python_requires=">=3.7",
    ext_modules=[
        Extension(
            "fpp._fpp",
            sources=["src/fppmodule.c"] + lib_sources,
            include_dirs=[os.path.join(TOP, "include"), os.path.join(TOP, "lib"), GEN],
            define_macros=[("_GNU_SOURCE", None)],
            extra_compile_args=["-std=c11", "-fvisibility=hidden", "-Wall", "-Wextra",
                                "-Wno-unused-parameter"],
            libraries=["rt"],
            extra_link_args=["-pthread"],
        )
    ],
)
