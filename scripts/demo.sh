#!/usr/bin/env bash
# The main job on a fresh machine: set up, then export → fused and composite runs → validation.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh demo
.venv/bin/kldiv-onnx demo "$@"
