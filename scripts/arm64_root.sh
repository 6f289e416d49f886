#!/usr/bin/env bash
# An arm64 Debian root with Python, onnxruntime, numpy and onnx, for running the aarch64 wheels
# under QEMU user-mode emulation: build/arm64-root-<suite> (git-ignored, cached: built once,
# 10-40 minutes on a busy 2-core machine). The suite picks the Python: bookworm (Debian 12)
# has 3.11, for the cp311 wheel; trixie (Debian 13) has 3.13, for the abi3 wheel (3.12+).
#
#   bash scripts/arm64_root.sh [bookworm|trixie]     # default bookworm
#
# Needs root, mmdebstrap and qemu-user-static (apt-get install -y mmdebstrap qemu-user-static);
# registers QEMU with binfmt_misc if it is not yet. Prints the root's path on its last line.
set -euo pipefail
root_dir=$(cd "$(dirname "$0")/.." && pwd)
suite=${1:-bookworm}
case $suite in
  bookworm) python_version=3.11 ;;
  trixie) python_version=3.13 ;;
  *) echo "arm64_root: unknown suite '$suite' (bookworm, trixie)" >&2; exit 2 ;;
esac
dest="$root_dir/build/arm64-root-$suite"
ort_version=${KLDIV_ARM64_ORT:-1.24.4}
start=$SECONDS
step() { echo "[arm64-root +$((SECONDS - start))s] $*" >&2; }

# binfmt_misc: lets the root's programs (apt's scripts, pip) start under qemu-aarch64-static.
binfmt=/proc/sys/fs/binfmt_misc
if [ ! -e "$binfmt/register" ]; then
  mount -t binfmt_misc binfmt_misc "$binfmt"
fi
if [ ! -e "$binfmt/qemu-aarch64" ]; then
  cat /usr/lib/binfmt.d/qemu-aarch64.conf > "$binfmt/register"
fi

if [ -f "$dest/.complete-$ort_version" ]; then
  echo "$dest"
  exit 0
fi
rm -rf "$dest" "$dest.partial"
mkdir -p "$root_dir/build"
mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
mirror=${mirror:-http://deb.debian.org/debian}
step "mmdebstrap arm64 $suite (python$python_version, pip, venv)"
mmdebstrap --quiet --arch=arm64 --variant=apt --include=python3,python3-pip,python3-venv \
  "$suite" "$dest.partial" "$mirror" >&2
# onnxruntime's and numpy's aarch64 wheels, fetched on this machine (fast) and installed in
# the root under emulation (slow, but once). /sys stays unmounted: QEMU 7.2 shows the guest
# the host's x86 /proc/cpuinfo and onnxruntime then crashes reading /sys's cache entries.
step "download aarch64 wheels: onnxruntime $ort_version, numpy"
wheels="$dest.partial/tmp/wheels"
mkdir -p "$wheels"
python3 -m pip download --quiet --dest "$wheels" --only-binary=:all: --python-version "$python_version" \
  --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 \
  "onnxruntime==$ort_version" "numpy<2.3" ml_dtypes "onnx>=1.16" "onnxscript>=0.5" >&2
# --no-compile: pip would byte-compile every module of these packages (sympy alone has over a
# thousand) under emulation.
step "python3 -m venv /opt/venv; pip install (emulated)"
chroot "$dest.partial" /usr/bin/python3 -m venv /opt/venv
chroot "$dest.partial" /opt/venv/bin/pip install --quiet --no-compile --no-index --find-links /tmp/wheels \
  onnxruntime numpy ml_dtypes onnx onnxscript >&2
rm -rf "$wheels"
# No /proc or /sys is mounted in the root: QEMU 7.2 would show the guest the host's x86
# /proc/cpuinfo, and onnxruntime (1.24) then aborts at import ("Unknown CPU vendor", then
# "Attempt to use DefaultLogger but none has been registered"); with the host's /sys it
# crashed reading the cache entries. Plain files in their place describe one Neoverse-N1-like
# core; onnxruntime warns and runs. (So the root's /proc/cpuinfo is not the emulated CPU's:
# the SIMD dispatch of the wheel reads AT_HWCAP, which QEMU sets for the CPU it emulates.)
mkdir -p "$dest.partial/proc" "$dest.partial/sys/devices/system/cpu"
printf 'processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: 0xd0c\nCPU revision\t: 1\n\n' \
  > "$dest.partial/proc/cpuinfo"
echo 0 > "$dest.partial/sys/devices/system/cpu/possible"
echo 0 > "$dest.partial/sys/devices/system/cpu/present"
touch "$dest.partial/.complete-$ort_version"
mv "$dest.partial" "$dest"
step "done"
echo "$dest"
