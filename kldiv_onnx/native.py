"""Placeholder until the native library lands (helper-owned)."""

from __future__ import annotations

import os
from pathlib import Path

LIBRARY_NAME = "libkldiv_onnx_ops.so"


def library_path() -> str:
    """Path of the native custom-op library, or ``FileNotFoundError`` naming where it looked."""
    override = os.environ.get("KLDIV_ONNX_LIBRARY")
    candidate = Path(override) if override else Path(__file__).resolve().parent / LIBRARY_NAME
    if not candidate.is_file():
        raise FileNotFoundError(f"kldiv_onnx native library not found at {candidate}")
    return str(candidate)


def available() -> bool:
    """Whether the native library is present."""
    try:
        library_path()
    except FileNotFoundError:
        return False
    return True
