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
    lines += _cann_lines()
    try:
        path = native.library_path()
    except FileNotFoundError as exc:
        lines.append(f"native library: not found ({exc})")
    else:
        api = getattr(native, "api_version", None)
        requested = f", requests C API {api() if callable(api) else api}" if api else ""
        lines.append(f"native library: {path}{requested}")
    lines.append(f"CPU SIMD: {simd_level()}")
    return "\n".join(lines)


def _cann_lines() -> list[str]:
    """Whether CANN can start here and, if not, why; the tables and defaults in use."""
    import onnxruntime as ort

    from . import cann, providers

    status = providers.cann_status()
    version = cann.table()["onnxruntime"]
    if providers.CANN in ort.get_available_providers() and ort.__version__ != version:
        version += f" (installed: {ort.__version__}; its option names may differ)"
    defaults = ", ".join(f"{k}={v}" for k, (v, _) in providers.CANN_DEFAULTS.items())
    return [
        f"CANN: {status.describe()}",
        f"  tables: onnxruntime-cann {version}; wrapper option defaults: {defaults}",
    ]


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
