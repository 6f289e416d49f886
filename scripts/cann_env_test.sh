#!/usr/bin/env bash
# Integration test against the real onnxruntime-cann wheel, without Ascend hardware.
#
# Builds a side environment (.venv-cann, git-ignored) with `pip install '.[cann,test]'`: the
# onnxruntime-cann wheel, numpy<2 (that wheel fails to import under numpy 2) and this project,
# whose native library scikit-build-core compiles against the headers of
# scripts/fetch_ort_headers.sh. Then runs tests/test_cann_env.py there, from outside the source
# tree so that the installed package is the one imported, and the native kernel's tests: the
# library must load and compute right in onnxruntime 1.24 as in the newest release.
#
# Skips (exit 0, a line starting with SKIPPED) only where the wheel cannot be installed: no
# onnxruntime-cann build for this Python or platform, or no package index. Any other failure
# fails. Set KLDIV_CANN_VENV to use another folder, PYTHON to pick the interpreter.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${KLDIV_CANN_VENV:-$root/.venv-cann}
python=${PYTHON:-python3}
cann_spec="onnxruntime-cann>=1.24"

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip >/dev/null

# The wheel alone first: failing here is the one reason to skip.
if ! log=$("$venv/bin/python" -m pip install -q "$cann_spec" "numpy<2" 2>&1); then
  echo "$log" | tail -n 5
  echo "SKIPPED: $cann_spec cannot be installed for $("$venv/bin/python" -V) on $(uname -m)"
  exit 0
fi

bash "$root/scripts/fetch_ort_headers.sh"
# Not editable: the test must see the installed package (its data files, its native library).
"$venv/bin/python" -m pip install -q "$root[cann,test]"

"$venv/bin/python" - <<'EOF'
import numpy, onnxruntime
print(f"side environment: onnxruntime {onnxruntime.__version__} ({onnxruntime.get_device()}), "
      f"numpy {numpy.__version__}, providers {onnxruntime.get_available_providers()}")
EOF

cd "$(mktemp -d)"
KLDIV_CANN_ENV=1 "$venv/bin/python" -m pytest -q -p no:cacheprovider \
  --rootdir "$root" -c "$root/pyproject.toml" -rs \
  "$root/tests/test_cann_env.py" "$root/tests/test_native_kernel.py"
