#!/usr/bin/env bash
# Smoke test of the wheels in dist/ (scripts/build_wheels.sh), each installed as a user would:
#   x86_64:  a fresh venv (Python 3.11) with onnxruntime from PyPI, run with no compiler on
#            PATH and outside the source tree: `kldiv-onnx demo`, `kldiv-onnx doctor`, and
#            scripts/wheel_check.py (every kl_div variant and _core's row KL against numpy, the
#            dispatched SIMD path).
#   aarch64: the same checks in an arm64 Debian 12 root (scripts/arm64_root.sh: Python 3.11,
#            onnxruntime's aarch64 wheel) under QEMU user-mode emulation, twice: QEMU's default
#            CPU and a Cortex-A72 (NEON). Skipped, with the reason, where QEMU or root is absent.
# Each part is bounded by KLDIV_SMOKE_TIMEOUT seconds (default 600). KLDIV_SMOKE_ARCHS picks
# the architectures (default: "x86_64 aarch64"). Exits 0 when every part that ran passed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work="$root/build/wheel-smoke"
limit=${KLDIV_SMOKE_TIMEOUT:-600}
archs=${KLDIV_SMOKE_ARCHS:-"x86_64 aarch64"}
start=$SECONDS
step() { echo "[wheel_smoke +$((SECONDS - start))s] $*"; }
die() { echo "wheel_smoke: $*" >&2; exit 1; }
mkdir -p "$work"

wheel_for() {  # the newest cp311 wheel of an architecture in dist/
  ls -t "$root"/dist/kldiv_onnx-*-cp311-*manylinux*_"$1".whl 2> /dev/null | head -n 1
}
x86_target() {  # what the dispatch should pick on this machine, from the CPU's flags
  if grep -qw avx512bw /proc/cpuinfo && grep -qw avx512vl /proc/cpuinfo; then
    echo avx3
  elif grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo; then
    echo avx2
  else
    echo scalar
  fi
}

status=0
for arch in $archs; do
  whl=$(wheel_for "$arch")
  [ -n "$whl" ] || die "no cp311 $arch wheel in dist/ (run: bash scripts/build_wheels.sh)"
  case $arch in
    x86_64)
      step "x86_64: fresh venv, pip install $(basename "$whl") onnxruntime"
      python=$(command -v python3.11 || ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.11.*/bin/python3.11 2> /dev/null | tail -n 1)
      [ -n "$python" ] || die "no Python 3.11"
      rm -rf "$work/venv-x86_64"
      "$python" -m venv "$work/venv-x86_64"
      timeout "$limit" "$work/venv-x86_64/bin/pip" install --quiet "$whl[cpu]" > "$work/pip-x86_64.log" 2>&1 \
        || { tail -n 20 "$work/pip-x86_64.log" >&2; die "pip install failed"; }
      # No compiler: PATH holds the venv alone, and the checks run from an empty folder.
      bin="$work/venv-x86_64/bin"
      for cc in cc c++ gcc g++ clang zig; do
        if PATH="$bin" command -v "$cc" > /dev/null; then die "a compiler ($cc) is on the smoke test's PATH"; fi
      done
      mkdir -p "$work/run-x86_64"
      run() { (cd "$work/run-x86_64" && timeout "$limit" env -i HOME="$work/run-x86_64" PATH="$bin" "$@"); }
      step "x86_64: kldiv-onnx doctor"
      run kldiv-onnx doctor | grep -E 'kldiv-onnx|native|core module|CPU SIMD' | sed 's/^/  /'
      step "x86_64: kldiv-onnx demo"
      if run kldiv-onnx demo > "$work/demo-x86_64.log" 2>&1; then
        sed 's/^/  /' "$work/demo-x86_64.log" | tail -n 12
      else
        tail -n 20 "$work/demo-x86_64.log" >&2
        echo "wheel_smoke: x86_64 demo failed" >&2
        status=1
      fi
      step "x86_64: wheel_check.py (expects $(x86_target))"
      run python "$root/scripts/wheel_check.py" "$(x86_target)" > "$work/check-x86_64.log" 2>&1 || status=1
      grep -E 'SIMD path|BAD|failed' "$work/check-x86_64.log" | sed 's/^/  /'
      ;;
    aarch64)
      if [ "$(id -u)" != 0 ] || ! command -v qemu-aarch64-static > /dev/null || ! command -v mmdebstrap > /dev/null; then
        step "aarch64: SKIPPED (needs root, qemu-user-static and mmdebstrap)"
        continue
      fi
      step "aarch64: arm64 root (cached in build/arm64-root; first run about 10 minutes)"
      arm=$(bash "$root/scripts/arm64_root.sh" | tail -n 1)
      step "aarch64: pip install $(basename "$whl") into the root's /opt/venv (emulated)"
      cp "$whl" "$root/scripts/wheel_check.py" "$arm/tmp/"
      timeout "$limit" chroot "$arm" /opt/venv/bin/pip install --quiet --no-index --no-deps \
        --force-reinstall "/tmp/$(basename "$whl")"
      # Nothing is mounted in the root: plain /proc/cpuinfo and /sys files stand in for QEMU
      # 7.2's x86 ones, which onnxruntime cannot cope with (see arm64_root.sh).
      for cpu in max cortex-a72; do
        want=neon
        [ "$cpu" = max ] && want=sve  # QEMU's max CPU has SVE; the Cortex-A72 NEON only
        step "aarch64 (QEMU -cpu $cpu): kldiv-onnx doctor, wheel_check.py (expects $want)"
        (cd "$arm" && QEMU_CPU=$cpu timeout "$limit" chroot "$arm" /usr/bin/env -i HOME=/tmp QEMU_CPU="$cpu" \
          PATH=/opt/venv/bin:/usr/bin:/bin /opt/venv/bin/kldiv-onnx doctor 2> /dev/null) \
          | grep -E '^(kldiv-onnx |native|core module)' | sed 's/^/  /' || true
        if (cd "$arm" && QEMU_CPU=$cpu timeout "$limit" chroot "$arm" /usr/bin/env -i HOME=/tmp QEMU_CPU="$cpu" \
          PATH=/opt/venv/bin:/usr/bin:/bin /opt/venv/bin/python /tmp/wheel_check.py "$want") \
          > "$work/check-aarch64-$cpu.log" 2>&1; then
          grep -E 'SIMD path|failed' "$work/check-aarch64-$cpu.log" | sed 's/^/  /'
        else
          grep -E 'SIMD path|BAD|failed|Error' "$work/check-aarch64-$cpu.log" | sed 's/^/  /' >&2
          tail -n 5 "$work/check-aarch64-$cpu.log" >&2
          status=1
        fi
      done
      ;;
    *) die "unknown architecture '$arch'" ;;
  esac
done
step "done ($([ $status -eq 0 ] && echo passed || echo FAILED))"
exit $status
