"""The built wheels, installed as a user installs them (scripts/wheel_smoke.sh): x86_64 in a
fresh venv with no compiler on PATH, aarch64 in an arm64 root under QEMU; the cp310, cp311 and
abi3 (Python 3.12+) wheels where dist/ has them. Each checks every
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


def _wheels(arch: str) -> int:
    """How many of the wheels the smoke test installs (cp310, cp311, abi3) dist/ holds for
    ``arch``."""
    return sum(
        any((ROOT / "dist").glob(f"kldiv_onnx-*-{tag}-*manylinux*_{arch}.whl"))
        for tag in ("cp310-cp310", "cp311-cp311", "cp312-abi3")
    )


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
    wheels = _wheels("x86_64")
    if not wheels:
        pytest.skip("no x86_64 wheel in dist/ (bash scripts/build_wheels.sh builds it)")
    out = _smoke("x86_64")
    assert out.count("ok  SIMD path: library") == wheels
    assert out.count("\n  0 failed") == wheels and "BAD" not in out
    assert "done (passed)" in out


@pytest.mark.slow
def test_aarch64_wheel_under_emulation():
    wheels = _wheels("aarch64")
    if not wheels:
        pytest.skip("no aarch64 wheel in dist/ (bash scripts/build_wheels.sh builds it)")
    tools = ("qemu-aarch64-static", "mmdebstrap")
    if os.geteuid() != 0 or not all(shutil.which(tool) for tool in tools):
        pytest.skip("aarch64 emulation needs root, qemu-user-static and mmdebstrap")
    out = _smoke("aarch64")
    # Per wheel: QEMU's default CPU dispatches SVE, the Cortex-A72 NEON.
    assert out.count("ok  SIMD path: library sve, _core sve") == wheels
    assert out.count("ok  SIMD path: library neon, _core neon") == wheels
    assert out.count("\n  0 failed") == 2 * wheels and "BAD" not in out
    assert "done (passed)" in out
