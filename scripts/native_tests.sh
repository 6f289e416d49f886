#!/usr/bin/env bash
# The native core's C++ unit tests, built with AddressSanitizer and UBSan, run by ctest.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build="$root/build/sanitize"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DKLDIV_BUILD_TESTS=ON -DKLDIV_SANITIZE=ON >/dev/null
cmake --build "$build" -j 2 >/dev/null
ctest --test-dir "$build" --output-on-failure --no-tests=error
