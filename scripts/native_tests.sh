#!/usr/bin/env bash
# The native core's C++ unit tests, built with AddressSanitizer and UBSan, run by ctest.
# The build is the slow part (every file compiled under the sanitizers: 11.6 min in one tester's
# run, 20 min 43 s on the 2-core Xeon of the README under a load average of 12-16); cmake prints
# a line per file compiled and progress.sh the elapsed time.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/scripts/progress.sh"
build="$root/build/sanitize"
configure() {  # cmake's errors and warnings still reach stderr
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DKLDIV_BUILD_TESTS=ON -DKLDIV_SANITIZE=ON >/dev/null
}
step "native tests: configuring the C++ core's tests with ASan/UBSan in build/sanitize" configure
step "native tests: building them under the sanitizers (the first time: 12-21 min on 2 cores in the runs measured)" \
  cmake --build "$build" -j 2
step "native tests: running them (ctest)" \
  ctest --test-dir "$build" --output-on-failure --no-tests=error
