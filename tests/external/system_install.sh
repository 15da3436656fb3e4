#!/bin/sh
# system_install.sh BUILD_DIR SOURCE_DIR: `cmake --install` into /usr/local (the default prefix)
# is enough for a program linked with plain -lfpp (no run path, no pkg-config) to start: the
# install refreshes the loader's cache (cmake/FppInstallLoader.cmake). On 0.2 such a program
# failed with "libfpp.so.0: cannot open shared object file" until someone ran ldconfig.
# Run as root in a mount namespace of its own, with /usr/local and /etc on scratch copies, so
# that the machine's own are left alone. Exit 77 (skipped) where that cannot be set up.
set -eu
build=$1
src=$2
if [ "$(id -u)" != 0 ] || ! command -v unshare >/dev/null; then
  echo "skipped: needs root and unshare(1) for a private /usr/local and /etc"
  exit 77
fi
if ! unshare -m --propagation private true 2>/dev/null; then
  echo "skipped: cannot make a mount namespace here"
  exit 77
fi
exec unshare -m --propagation private sh -eu -c '
  build=$1; src=$2
  scratch=$(mktemp -d)
  trap "umount /etc 2>/dev/null; umount \"$scratch/etc\" 2>/dev/null; rm -rf \"$scratch\"" EXIT
  mount -t tmpfs fpp-usr-local /usr/local
  mkdir "$scratch/etc"
  mount -t tmpfs fpp-etc "$scratch/etc"
  cp -a /etc/. "$scratch/etc/"
  mount --bind "$scratch/etc" /etc
  if ldconfig -p | grep -q "libfpp\.so\.0 "; then
    echo "libfpp is in the loader cache before the install: the test proves nothing"; exit 1
  fi
  cmake --install "$build" --prefix /usr/local > "$scratch/install.log"
  grep "fpp: ran ldconfig" "$scratch/install.log"
  cc -std=c11 -Wall -Wextra -Werror "$src/tests/external/consumer.c" -o "$scratch/consumer" \
     -I/usr/local/include -L/usr/local/lib -lfpp
  if readelf -d "$scratch/consumer" | grep -qE "RPATH|RUNPATH"; then
    echo "the program has a run path: the test proves nothing"; exit 1
  fi
  "$scratch/consumer"
  echo "a program linked with -lfpp starts right after cmake --install to /usr/local"
' sh "$build" "$src"
