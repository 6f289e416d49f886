"""The built wheels, installed as a user installs them (scripts/wheel_smoke.sh): x86_64 in a
fresh venv with no compiler on PATH, aarch64 in an arm64 root under QEMU. Each checks every
``kl_div`` variant and ``_core``'s row KL against numpy (scripts/wheel_check.py) and the SIMD
path the core dispatched. The wheels come from ``bash scripts/build_wheels.sh`` (into dist/);
without them these tests are skipped, saying so."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "scripts" / "wheel_smoke.sh"


def _wheel(arch: str) -> Path | None:
    found = sorted((ROOT / "dist").glob(f"kldiv_onnx-*-cp311-*manylinux*_{arch}.whl"))
    return found[-1] if found else None


def _smoke(arch: str) -> str:
    proc = subprocess.run(
        ["bash", str(SMOKE)],
        env={**os.environ, "KLDIV_SMOKE_ARCHS": arch, "KLDIV_SMOKE_TIMEOUT": "600"},
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


@pytest.mark.slow
def test_x86_64_wheel_without_compiler():
    if _wheel("x86_64") is None:
        pytest.skip("no x86_64 wheel in dist/ (bash scripts/build_wheels.sh builds it)")
    out = _smoke("x86_64")
    assert "ok  SIMD path: library" in out
    assert "\n  0 failed" in out and "BAD" not in out
    assert "done (passed)" in out


@pytest.mark.slow
def test_aarch64_wheel_under_emulation():
    if _wheel("aarch64") is None:
        pytest.skip("no aarch64 wheel in dist/ (bash scripts/build_wheels.sh builds it)")
    tools = ("qemu-aarch64-static", "mmdebstrap")
    if os.geteuid() != 0 or not all(shutil.which(tool) for tool in tools):
        pytest.skip("aarch64 emulation needs root, qemu-user-static and mmdebstrap")
    out = _smoke("aarch64")
    assert out.count("ok  SIMD path: library sve, _core sve") == 1  # QEMU's max CPU (SVE)
    assert out.count("ok  SIMD path: library neon, _core neon") == 1  # Cortex-A72
    assert out.count("\n  0 failed") == 2 and "BAD" not in out
    assert "done (passed)" in out
