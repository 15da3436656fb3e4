#!/bin/sh
# external_mpi.sh BUILD_DIR SOURCE_DIR MPIEXEC...: installs the build into a scratch prefix,
# then builds mpi_consumer.c outside the tree twice (pkg-config fpp-mpi, and CMake's
# find_package(fpp) with fpp::fpp_mpi) and runs each under MPIEXEC (mpiexec -n 3 ...).
set -eu
build=$1
src=$2
shift 2
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" >/dev/null
libdir=$(ls -d "$prefix"/lib* | head -n 1)
export PKG_CONFIG_PATH="$libdir/pkgconfig"
cc -std=c11 -Wall -Wextra -Werror "$src/tests/mpi/mpi_consumer.c" -o "$prefix/consumer" \
   $(pkg-config --cflags --libs fpp-mpi) -Wl,-rpath,"$libdir"
echo "pkg-config fpp-mpi: built"
"$@" "$prefix/consumer"
mkdir -p "$prefix/cm"
cat > "$prefix/cm/CMakeLists.txt" <<CMK
cmake_minimum_required(VERSION 3.16)
project(consumer C)
find_package(fpp REQUIRED)
add_executable(consumer "$src/tests/mpi/mpi_consumer.c")
target_link_libraries(consumer PRIVATE fpp::fpp_mpi)
CMK
cmake -S "$prefix/cm" -B "$prefix/cm/build" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$prefix/cm/build" >/dev/null
echo "find_package(fpp) + fpp::fpp_mpi: built"
"$@" "$prefix/cm/build/consumer"
