#!/usr/bin/env bash
# The numeric core's C++ tests (custom_ops/tests) for aarch64: cross-compiled with the wheels'
# toolchain (zig, glibc 2.28, scripts/zig/toolchain.cmake) and run under QEMU user-mode
# emulation, once per CPU: QEMU's "max" CPU (NEON, SVE and SVE2 in its hwcaps) at SVE vector
# lengths of 128, 256, 512 and 2048 bits, and a Cortex-A72 (NEON only, as on Kunpeng 920).
# Emulation, not Arm hardware. Each run checks the target the dispatch chose (sve on "max",
# neon otherwise, KLDIV_TEST_EXPECT_TARGET) and the vector length the kernel reports; on "max"
# the loops of the sve target alone run the whole suite (KLDIV_TEST_TARGETS: NEON's and the
# scalar ones run on the Cortex-A72), and test_sve.cc compares SVE with NEON.
# KLDIV_AARCH64_CPUS names the CPUs, as QEMU's -cpu takes them (default: the five above; the
# test command runs "max,sve256=on cortex-a72").
# Bounded: KLDIV_AARCH64_TEST_TIMEOUT seconds per run (default 600); KLDIV_TEST_EMULATED leaves
# out the two tests that stream 2**24 and 2**31 elements (test_main.cc).
#
# Needs: qemu-user-static and the arm64 glibc of the cross toolchain
# (apt-get install -y qemu-user-static libc6-arm64-cross), libhwy-dev, a Python with ziglang
# (build/wheels/venv-3.11 from scripts/build_wheels.sh, else this script makes
# build/aarch64-tests/venv), onnxruntime's headers (scripts/fetch_ort_headers.sh; the core's
# tests do not use them but the CMake project looks for them). Exits 0 when every run passed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
work="$root/build/aarch64-tests"
limit=${KLDIV_AARCH64_TEST_TIMEOUT:-600}
sysroot=${KLDIV_AARCH64_SYSROOT:-/usr/aarch64-linux-gnu}
start=$SECONDS
step() { echo "[aarch64_tests +$((SECONDS - start))s] $*"; }
die() { echo "aarch64_tests: $*" >&2; exit 1; }

command -v qemu-aarch64-static > /dev/null || die "qemu-aarch64-static not found (apt-get install -y qemu-user-static)"
[ -e "$sysroot/lib/ld-linux-aarch64.so.1" ] || die "no arm64 glibc at $sysroot (apt-get install -y libc6-arm64-cross)"
[ -f /usr/include/hwy/highway.h ] || die "Highway headers not found (apt-get install -y libhwy-dev)"
mkdir -p "$work/hwy-include"
ln -sfn /usr/include/hwy "$work/hwy-include/hwy"  # only hwy/: no header of the machine's glibc

python=""
for candidate in "$root/build/wheels/venv-3.11/bin/python" "$work/venv/bin/python"; do  # zig's cache is per install
  if [ -x "$candidate" ] && "$candidate" -c 'import ziglang' 2> /dev/null; then
    python=$candidate
    break
  fi
done
if [ -z "$python" ]; then
  step "venv with ziglang ($work/venv)"
  python3 -m venv "$work/venv"
  "$work/venv/bin/pip" install --quiet "ziglang>=0.13"
  python="$work/venv/bin/python"
fi
# zig caches its libc++ per installation: KLDIV_ZIG may name one already warmed.
KLDIV_ZIG=${KLDIV_ZIG:-$("$python" -c 'import os, ziglang; print(os.path.join(os.path.dirname(ziglang.__file__), "zig"))')}
export KLDIV_ZIG KLDIV_ZIG_TARGET=aarch64-linux-gnu.2.28

ort_include=${ORT_INCLUDE_DIR:-$root/third_party/onnxruntime/include}
[ -f "$ort_include/onnxruntime_cxx_api.h" ] || bash scripts/fetch_ort_headers.sh > /dev/null

step "configure and build kldiv_test_core (zig c++ -target $KLDIV_ZIG_TARGET; the first run builds zig's libc++, minutes)"
cmake -S custom_ops -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_TOOLCHAIN_FILE="$root/scripts/zig/toolchain.cmake" -DORT_INCLUDE_DIR="$ort_include" \
  -DHWY_INCLUDE_DIR="$work/hwy-include" -DKLDIV_BUILD_TESTS=ON > "$work/configure.log" 2>&1 \
  || { tail -n 30 "$work/configure.log" >&2; die "cmake configure failed"; }
cmake --build "$work/build" --target kldiv_test_core -j "${KLDIV_JOBS:-2}" 2>&1 \
  | grep --line-buffered -E '^\[ *[0-9]+%\]|error|warning' || true
[ "${PIPESTATUS[0]}" -eq 0 ] && [ -x "$work/build/kldiv_test_core" ] || die "build failed"

status=0
cpus=${KLDIV_AARCH64_CPUS:-max,sve128=on max,sve256=on max,sve512=on max,sve-default-vector-length=256 cortex-a72}
for cpu in $cpus; do
  # What this CPU must give: QEMU's "max" and "a64fx" have SVE (vector length: sveN=on, else
  # sve-default-vector-length in bytes, else QEMU's default of 512 bits); the others here do not.
  case "$cpu" in
    max* | a64fx*)
      want=sve only=sve bits=512
      case "$cpu" in
        *sve-default-vector-length=*) bits=$((${cpu##*sve-default-vector-length=} * 8)) ;;
        *sve*=on*) bits=$(echo "$cpu" | grep -oE 'sve[0-9]+=on' | tail -n 1 | tr -dc 0-9) ;;
      esac ;;
    *) want=neon only="" bits="" ;;
  esac
  step "run under qemu-aarch64-static -cpu $cpu (expects ${want}${bits:+, $bits-bit vectors})"
  log="$work/test-$cpu.log"
  if KLDIV_TEST_EMULATED=1 KLDIV_TEST_EXPECT_TARGET=$want KLDIV_TEST_TARGETS=$only \
    timeout "$limit" qemu-aarch64-static -cpu "$cpu" -L "$sysroot" "$work/build/kldiv_test_core" > "$log" 2>&1; then
    grep -E '^targets:|^sve vector length|passed, ' "$log" | sed 's/^/  /'
    if [ -n "$bits" ] && ! grep -q "^sve vector length: $bits bits" "$log"; then
      echo "aarch64_tests: -cpu $cpu ran without $bits-bit SVE vectors (log: $log)" >&2
      status=1
    fi
  else
    rc=$?
    tail -n 20 "$log" >&2
    echo "aarch64_tests: -cpu $cpu failed (exit $rc${rc:+; 124 is the $limit s limit}; log: $log)" >&2
    status=1
  fi
done
step "done"
exit $status
