#!/usr/bin/env bash
# Set-up on a fresh machine: build prerequisites, a virtual environment in .venv, and the
# project installed into it with its native library (pip install . runs CMake through
# scikit-build-core). Usage: scripts/setup.sh [demo|test]  (test also installs the test tools
# and PyTorch 2.13 CPU, the independent reference of the tests). Each long step prints a line
# before it, its elapsed time every minute and when it ends (scripts/progress.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
source scripts/progress.sh
purpose=${1:-demo}

# Highway's headers (vectorised log/exp of the native kernel): a Debian package, header-only use.
# Python's headers (the kldiv_onnx._core module): python3-dev where this Python lacks them.
packages=()
if [ ! -f /usr/include/hwy/contrib/math/math-inl.h ] && [ -z "${HWY_INCLUDE_DIR:-}" ]; then
  packages+=(libhwy-dev)
fi
if ! python3 -c 'import os, sysconfig, sys; sys.exit(not os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
  packages+=(python3-dev)
fi
# The test set-up's aarch64 C++ tests (scripts/aarch64_tests.sh): QEMU user-mode emulation and
# the arm64 glibc that the cross-built test binary runs on.
if [ "$purpose" = test ]; then
  command -v qemu-aarch64-static > /dev/null || packages+=(qemu-user-static)
  [ -e /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ] || packages+=(libc6-arm64-cross)
fi
if [ ${#packages[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  install_packages() {
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq "${packages[@]}" >/dev/null
  }
  step "set-up: installing ${packages[*]} (apt-get)" install_packages
fi
# onnxruntime's C/C++ headers: not in its wheels; unpacked from Debian's libonnxruntime-dev.
if [ -z "${ORT_INCLUDE_DIR:-}" ]; then
  step "set-up: onnxruntime's C/C++ headers into third_party/ (Debian's libonnxruntime-dev)" \
    bash scripts/fetch_ort_headers.sh
fi

if [ ! -x .venv/bin/python ]; then
  step "set-up: creating the virtual environment .venv" python3 -m venv .venv
fi
step "set-up: upgrading pip in .venv" .venv/bin/python -m pip install -q --upgrade pip
extras="cpu"
pins=()
if [ "$purpose" = test ]; then
  extras="cpu,test,mindspore,bench,ray,openvino,tract,polygraphy"
  # The mindspore extra holds numpy < 2 (MindSpore 2.10's wheels are built for numpy 1), and
  # pyarrow 26 (the ray extra's) refuses to import under numpy 1: the last that accepts it.
  pins=("pyarrow<26")
fi
if [ "$purpose" = test ]; then
  # torch first, pinned: its CPU build lies on this machine's disk (a bare 'torch' pulls CUDA).
  step "set-up: installing PyTorch 2.13 CPU (pip; a large download the first time)" \
    .venv/bin/python -m pip install -q torch==2.13.0
fi
# pip prints nothing while CMake compiles (its -v prints every compiler line); the step's
# minute lines show it is still at work.
step "set-up: pip install '.[${extras}]' ${pins[*]}: the dependencies, then the native library and kldiv_onnx._core compiled by CMake (the compile: about a minute on 2 cores)" \
  .venv/bin/python -m pip install -q ".[${extras}]" "${pins[@]}"
.venv/bin/kldiv-onnx doctor
