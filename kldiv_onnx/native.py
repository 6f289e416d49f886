"""Locate the fused-kernel library (``libkldiv_onnx_ops.so``) that ``pip install .`` builds.

Register it with onnxruntime through
``SessionOptions.register_custom_ops_library(library_path())``: every ``kldiv_onnx`` node
(the eight ``KLDivLoss_<reduction>[_logtarget]`` variants and the generic ``KLDivLoss``) then
runs as one native kernel instead of its function body.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

LIBRARY_NAME = "libkldiv_onnx_ops.so"
"""File name of the custom-op library inside the installed package."""
ENV_VAR = "KLDIV_ONNX_LIBRARY"
"""Environment variable that overrides the library's location (a path to the .so)."""
ORT_API_VERSION = 17
"""onnxruntime C API version the library requests (``kOrtApiVersion`` in
``custom_ops/ort/kldiv_ops.h``): onnxruntime >= 1.17 loads it; older ones refuse it with a
clear error."""
ISA_ENV_VAR = "KLDIV_ONNX_ISA"
"""Environment variable capping the SIMD code path the library picks at load: ``avx3``
(AVX-512), ``avx2`` or ``scalar``; unset means the best the CPU supports (``doctor`` shows
it)."""


def library_path() -> str:
    """Absolute path of the custom-op library.

    ``$KLDIV_ONNX_LIBRARY`` wins when set; otherwise the library next to this module.

    Raises:
        FileNotFoundError: naming the place looked at, when the library is not there.
    """
    override = os.environ.get(ENV_VAR)
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{ENV_VAR}={override!r}: no such file")
        return str(path.resolve())
    path = Path(__file__).resolve().parent / LIBRARY_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{LIBRARY_NAME} not found in {path.parent} (build it with `pip install .`, "
            f"or set {ENV_VAR} to its path)"
        )
    return str(path)


def available() -> bool:
    """True when :func:`library_path` finds the library (it is not loaded here)."""
    try:
        library_path()
    except FileNotFoundError:
        return False
    return True


def api_version() -> int:
    """The onnxruntime C API version the library requests (see :data:`ORT_API_VERSION`)."""
    return ORT_API_VERSION


def simd_level(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The widest x86 vector extension the CPU reports (avx512f, avx2, sse4_2), from the
    flags in ``/proc/cpuinfo``; the machine name elsewhere."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            flags = next(
                (
                    line.split(":", 1)[1].split()
                    for line in f
                    if line.startswith(("flags", "Features"))
                ),
                [],
            )
    except OSError:
        return f"unknown ({platform.machine()})"
    for flag in ("avx512f", "avx2", "sse4_2", "asimd"):
        if flag in flags:
            return flag
    return f"baseline ({platform.machine()})"
