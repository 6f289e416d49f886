#!/usr/bin/env bash
# Smoke test of the wheels in dist/ (scripts/build_wheels.sh), each installed as a user would,
# the cp310, cp311 and abi3 (Python 3.12+) wheels where dist/ has them:
#   x86_64:  a fresh venv (Python 3.10 for cp310, 3.11 for cp311; 3.12, the oldest the abi3 tag
#            serves, for abi3) with onnxruntime from PyPI (for 3.10 its last release there, 1.23), run with no compiler on PATH and outside the
#            source tree: `kldiv-onnx demo`, `kldiv-onnx doctor`, and scripts/wheel_check.py
#            (every kl_div variant and _core's row KL against numpy, the dispatched SIMD path).
#   aarch64: the same checks in an arm64 Debian root (scripts/arm64_root.sh: bookworm's Python
#            3.11 for cp311, trixie's 3.13 for abi3, onnxruntime's aarch64 wheel) under QEMU
#            user-mode emulation, twice: QEMU's default CPU (with SVE) and a Cortex-A72 (NEON
#            only). Skipped, with the reason, where QEMU or root is absent.
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

wheel_for() {  # the newest wheel of an architecture ($1) and Python tag ($2: cp310, cp311, abi3) in dist/
  ls -t "$root"/dist/kldiv_onnx-*-"${2/abi3/cp312-abi3}"-*manylinux*_"$1".whl 2> /dev/null | head -n 1 || true
}
x86_python() {  # Python 3.X on PATH (one that runs, not a pyenv shim of another) or pyenv's
  local p
  p=$(command -v "python$1" || true)
  if [ -z "$p" ] || ! "$p" -c '' 2> /dev/null; then
    p=$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$1".*/bin/python"$1" 2> /dev/null | sort -V | tail -n 1 || true)
  fi
  [ -n "$p" ] || die "no Python $1"
  echo "$p"
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
  found=0
  for kind in cp310 cp311 abi3; do
    whl=$(wheel_for "$arch" "$kind")
    [ -n "$whl" ] || continue
    found=1
    name="$arch-$kind"
    case $arch in
      x86_64)
        case $kind in cp310) version=3.10 ;; cp311) version=3.11 ;; *) version=3.12 ;; esac
        step "$name: fresh Python $version venv, pip install $(basename "$whl") onnxruntime"
        rm -rf "$work/venv-$name"
        "$(x86_python "$version")" -m venv "$work/venv-$name"
        timeout "$limit" "$work/venv-$name/bin/pip" install --quiet "$whl[cpu]" > "$work/pip-$name.log" 2>&1 \
          || { tail -n 20 "$work/pip-$name.log" >&2; die "pip install failed"; }
        # No compiler: PATH holds the venv alone, and the checks run from an empty folder.
        bin="$work/venv-$name/bin"
        for cc in cc c++ gcc g++ clang zig; do
          if PATH="$bin" command -v "$cc" > /dev/null; then die "a compiler ($cc) is on the smoke test's PATH"; fi
        done
        mkdir -p "$work/run-$name"
        run() { (cd "$work/run-$name" && timeout "$limit" env -i HOME="$work/run-$name" PATH="$bin" "$@"); }
        step "$name: kldiv-onnx doctor"
        run kldiv-onnx doctor | grep -E 'kldiv-onnx|native|core module|CPU SIMD' | sed 's/^/  /'
        step "$name: kldiv-onnx demo"
        if run kldiv-onnx demo > "$work/demo-$name.log" 2>&1; then
          sed 's/^/  /' "$work/demo-$name.log" | tail -n 12
        else
          tail -n 20 "$work/demo-$name.log" >&2
          echo "wheel_smoke: $name demo failed" >&2
          status=1
        fi
        step "$name: wheel_check.py (expects $(x86_target))"
        run python "$root/scripts/wheel_check.py" "$(x86_target)" > "$work/check-$name.log" 2>&1 || status=1
        grep -E 'SIMD path|BAD|failed' "$work/check-$name.log" | sed 's/^/  /'
        ;;
      aarch64)
        if [ "$(id -u)" != 0 ] || ! command -v qemu-aarch64-static > /dev/null || ! command -v mmdebstrap > /dev/null; then
          step "$name: SKIPPED (needs root, qemu-user-static and mmdebstrap)"
          continue
        fi
        suite=$([ "$kind" = cp311 ] && echo bookworm || echo trixie)
        step "$name: arm64 $suite root (cached in build/arm64-root-$suite; first run 10-40 minutes)"
        arm=$(bash "$root/scripts/arm64_root.sh" "$suite" | tail -n 1)
        step "$name: pip install $(basename "$whl") into the root's /opt/venv (emulated)"
        cp "$whl" "$root/scripts/wheel_check.py" "$arm/tmp/"
        timeout "$limit" chroot "$arm" /opt/venv/bin/pip install --quiet --no-compile --no-index --no-deps \
          --force-reinstall "/tmp/$(basename "$whl")"
        # Nothing is mounted in the root: plain /proc/cpuinfo and /sys files stand in for QEMU
        # 7.2's x86 ones, which onnxruntime cannot cope with (see arm64_root.sh). QEMU's default
        # CPU has SVE, which the core dispatches; the Cortex-A72 has NEON only.
        for cpu in max cortex-a72; do
          expect=$([ "$cpu" = max ] && echo sve || echo neon)
          step "$name (QEMU -cpu $cpu): kldiv-onnx doctor, wheel_check.py (expects $expect)"
          (cd "$arm" && QEMU_CPU=$cpu timeout "$limit" chroot "$arm" /usr/bin/env -i HOME=/tmp QEMU_CPU="$cpu" \
            PATH=/opt/venv/bin:/usr/bin:/bin /opt/venv/bin/kldiv-onnx doctor 2> /dev/null) \
            | grep -E '^(kldiv-onnx |native|core module)' | sed 's/^/  /' || true
          if (cd "$arm" && QEMU_CPU=$cpu timeout "$limit" chroot "$arm" /usr/bin/env -i HOME=/tmp QEMU_CPU="$cpu" \
            PATH=/opt/venv/bin:/usr/bin:/bin /opt/venv/bin/python /tmp/wheel_check.py "$expect") \
            > "$work/check-$name-$cpu.log" 2>&1; then
            grep -E 'SIMD path|failed' "$work/check-$name-$cpu.log" | sed 's/^/  /'
          else
            grep -E 'SIMD path|BAD|failed|Error' "$work/check-$name-$cpu.log" | sed 's/^/  /' >&2
            tail -n 5 "$work/check-$name-$cpu.log" >&2
            status=1
          fi
        done
        ;;
      *) die "unknown architecture '$arch'" ;;
    esac
  done
  [ $found = 1 ] || die "no $arch wheel in dist/ (run: bash scripts/build_wheels.sh)"
done
step "done ($([ $status -eq 0 ] && echo passed || echo FAILED))"
exit $status
