"""``kldiv-onnx doctor``: what this installation has."""

from __future__ import annotations

import importlib.metadata
import platform

import onnxruntime as ort

from . import cann, native
from ._version import __version__

PACKAGES = (
    "onnx",
    "onnxscript",
    "onnxruntime",
    "onnxruntime-cann",
    "numpy",
    "ml_dtypes",
    "torch",
    "mindspore",
    "openvino",
    "tract",
    "ray",
    "polygraphy",
)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def report() -> str:
    """A few lines: versions, providers, native library."""
    lines = [
        f"kldiv-onnx {__version__} on Python {platform.python_version()} ({platform.machine()})"
    ]
    lines += [f"  {package:<17} {_version(package)}" for package in PACKAGES]
    lines.append(f"  onnxruntime module {ort.__version__}")
    lines.append(f"providers: {', '.join(ort.get_available_providers())}")
    lines += _cann_lines()
    try:
        path = native.library_path()
    except native.LibraryDamagedError as exc:
        lines.append(f"native library: DAMAGED, not used ({exc})")
    except FileNotFoundError as exc:
        lines.append(f"native library: not found ({exc})")
    else:
        version = native.api_version()
        api = "unknown (a build without KLDivOnnxOrtApiVersion)" if version is None else version
        lines.append(f"native library: {path}, requests C API {api}")
        lines.append(f"native kernel SIMD path: {native.active_target()}")
        core = native.core()
        lines.append(
            "core module (compare's KL): "
            + (f"kldiv_onnx._core, SIMD path {core.active_target()}" if core else "not built")
        )
    lines.append(f"CPU SIMD: {native.simd_level()}")
    return "\n".join(lines)


def _cann_lines() -> list[str]:
    """Whether CANN can start here and, if not, why; the tables and defaults in use."""
    status = cann.cann_status()
    version = cann.tables().onnxruntime
    if cann.PROVIDER in ort.get_available_providers() and ort.__version__ != version:
        version += f" (installed: {ort.__version__}; its option names may differ)"
    defaults = ", ".join(f"{k}={v}" for k, (v, _) in cann.CANN_DEFAULTS.items())
    return [
        f"CANN: {status.describe()}",
        f"  tables: onnxruntime-cann {version}; wrapper option defaults: {defaults}",
    ]
