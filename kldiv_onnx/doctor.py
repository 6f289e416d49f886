"""``kldiv-onnx doctor``: what this installation has."""

from __future__ import annotations

import importlib.metadata
import platform


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def report() -> str:
    """A few lines: versions, providers, native library."""
    import onnxruntime as ort

    from . import __version__, native

    lines = [
        f"kldiv-onnx {__version__} on Python {platform.python_version()} ({platform.machine()})"
    ]
    for package in (
        "onnx",
        "onnxscript",
        "onnxruntime",
        "onnxruntime-cann",
        "numpy",
        "ml_dtypes",
        "torch",
        "mindspore",
    ):
        lines.append(f"  {package:<17} {_version(package)}")
    lines.append(f"  onnxruntime module {ort.__version__}")
    lines.append(f"providers: {', '.join(ort.get_available_providers())}")
    try:
        lines.append(f"native library: {native.library_path()}")
    except FileNotFoundError as exc:
        lines.append(f"native library: not found ({exc})")
    return "\n".join(lines)
