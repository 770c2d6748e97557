#!/usr/bin/env bash
# What make test needs besides Go and npm: redis-server and redis-sentinel
# (the tests start their own), libjpeg-turbo (parity), its jpegtran (the
# JPEG variants with restart markers), libpng and libdeflate (the worker's
# PNG decoders)
# and kubectl (manifest tests; in the machine image). Installs
# what is missing with apt-get when it can, and otherwise says what to
# install.
set -euo pipefail
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-sentinel >/dev/null || need+=(redis-sentinel)
ldconfig -p 2>/dev/null | grep -q 'libturbojpeg.so.0 ' || need+=(libturbojpeg0)
ldconfig -p 2>/dev/null | grep -q 'libpng16.so.16 ' || need+=(libpng16-16)
ldconfig -p 2>/dev/null | grep -q 'libdeflate.so.0 ' || need+=(libdeflate0)
command -v jpegtran >/dev/null || need+=(libjpeg-turbo-progs)
[ ${#need[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "test-deps: installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
elif command -v apt-get >/dev/null && command -v sudo >/dev/null; then
  echo "test-deps: installing ${need[*]} with sudo"
  sudo apt-get update -qq
  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
else
  echo "test-deps: make test needs ${need[*]}; install them (Debian: apt-get install ${need[*]})" >&2
  exit 1
fi
