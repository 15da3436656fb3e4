#!/bin/sh
# run.sh BUILD_DIR SOURCE_DIR: installs the build into a scratch prefix, then builds
# consumer.c outside the tree twice (pkg-config, and CMake's find_package) and runs it. The
# pkg-config build is given no run path of its own: fpp.pc's must find the library.
set -eu
build=$1
src=$2
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" >/dev/null
libdir=$(ls -d "$prefix"/lib* | head -n 1)
export PKG_CONFIG_PATH="$libdir/pkgconfig"
cc -std=c11 -Wall -Wextra -Werror "$src/tests/external/consumer.c" -o "$prefix/consumer" \
   $(pkg-config --cflags --libs fpp)
"$prefix/consumer"
mkdir -p "$prefix/cm"
cat > "$prefix/cm/CMakeLists.txt" <<CMK
cmake_minimum_required(VERSION 3.16)
project(consumer C)
find_package(fpp REQUIRED)
add_executable(consumer "$src/tests/external/consumer.c")
target_link_libraries(consumer PRIVATE fpp::fpp)
CMK
cmake -S "$prefix/cm" -B "$prefix/cm/build" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$prefix/cm/build" >/dev/null
"$prefix/cm/build/consumer"
