#!/usr/bin/env bash
# The test suite on a fresh machine: set up, lint, pytest against the installed package, the
# native core's C++ tests under AddressSanitizer/UBSan, and the onnxruntime-cann side env.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
.venv/bin/ruff check kldiv_onnx tests scripts
# `pytest` (not `python -m pytest`) keeps the source tree off sys.path: the tests import the
# installed package, native library included.
status=0
.venv/bin/pytest -q -p no:cacheprovider "$@" || status=$?
if [ "$status" = 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
[ "$status" = 0 ] || exit "$status"
bash scripts/native_tests.sh
# The same C++ tests built for aarch64 (the Ascend hosts' architecture) and run under QEMU: the
# SVE loops at a 256-bit vector length (QEMU's max CPU), then a Cortex-A72 (NEON, as Kunpeng
# 920): a few minutes. SVE at 128, 256, 512 and 2048 bits as well: bash scripts/aarch64_tests.sh
KLDIV_AARCH64_CPUS="max,sve256=on cortex-a72" bash scripts/aarch64_tests.sh
if [ -f scripts/cann_env_test.sh ]; then bash scripts/cann_env_test.sh; fi
