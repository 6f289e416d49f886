#!/usr/bin/env bash
# The benchmark's thread-scaling table on a machine with more cores, where the project is not
# installed: builds the native library from the unpacked headers (third_party/onnxruntime from
# scripts/fetch_ort_headers.sh; Highway's from HWY_INCLUDE_DIR or /usr/include) into the source
# tree, then times the fused float32 batchmean kernel against both read bounds at 1, 2, 4, ...
# threads up to the core count, and the kernel-in-cache section. Needs python3 with numpy, onnx,
# onnxscript, ml_dtypes, onnxruntime and torch.
# Usage: scripts/thread_scaling.sh OUT_DIR [LOG2_SIZES, default 24,26,28]
# OUT_DIR copied to docs/bench-16core becomes the "On 16 cores" section of docs/performance.md
# (python scripts/performance.py).
set -euo pipefail
out=${1:?usage: scripts/thread_scaling.sh OUT_DIR [LOG2_SIZES]}
sizes=${2:-24,26,28}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mkdir -p "$out"
hwy=${HWY_INCLUDE_DIR:-/usr/include}
ort=${ORT_INCLUDE_DIR:-third_party/onnxruntime/include}
if command -v cmake >/dev/null; then
  build=$(mktemp -d)
  cmake -S custom_ops -B "$build" -DKLDIV_BUILD_TESTS=OFF -DHWY_INCLUDE_DIR="$hwy" \
    -DORT_INCLUDE_DIR="$ort" >/dev/null
  cmake --build "$build" -j "$(nproc)" >/dev/null
  cp "$build/libkldiv_onnx_ops.so" kldiv_onnx/
else  # the same flags as CMakeLists.txt's release build
  g++ -O3 -std=c++17 -fPIC -shared -fvisibility=hidden -fvisibility-inlines-hidden \
    -fno-math-errno -Icustom_ops/core -isystem "$hwy" -isystem "$ort" \
    custom_ops/core/*.cc custom_ops/ort/*.cc \
    -Wl,--version-script=custom_ops/ort/exports.map -Wl,-z,nodelete -Wl,-z,defs \
    -static-libstdc++ -static-libgcc -o kldiv_onnx/libkldiv_onnx_ops.so
fi
cores=$(nproc)
threads=1
list=1
while [ $((threads * 2)) -le "$cores" ]; do
  threads=$((threads * 2))
  list="$list,$threads"
done
[ "$threads" = "$cores" ] || list="$list,$cores"
lscpu > "$out/lscpu.txt" || true
python3 -m kldiv_onnx bench --log2-sizes "$sizes" --dtypes float32 --reductions batchmean \
  --threads "$list" --backends fused,numpy-read,torch-read --no-memory --no-overhead \
  --no-kernel-log --no-progress --json "$out/scaling.json"
python3 -m kldiv_onnx bench --kernel-log-only --no-progress --json "$out/kernel_log.json" \
  > "$out/kernel_log.txt"
