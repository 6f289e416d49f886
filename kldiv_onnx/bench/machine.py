"""What a result records besides its timings: the machine it ran on (:func:`machine_info`) and
the peak-memory probe (:class:`PeakMemory`; what it counts: see the package docstring)."""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import hashlib
import importlib.metadata
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import native
from .._version import __version__

# ----------------------------------------------------------------------------- memory


def _status_kib(*keys: str) -> dict[str, int]:
    found: dict[str, int] = {}
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in keys:
                found[key] = int(value.split()[0])
    return found


class PeakMemory:
    """Peak RSS growth of a call: ``VmHWM`` after it minus ``VmRSS`` before it, after
    resetting ``VmHWM`` through ``/proc/self/clear_refs``. Before each measurement glibc's
    ``malloc_trim(0)`` hands freed heap pages back to the kernel, so memory an earlier call
    freed and this call reuses is counted again. ``available`` is False off Linux or where the
    reset is refused."""

    def __init__(self) -> None:
        self.available = False
        self.reason = ""
        try:
            self._reset()
            if "VmHWM" not in _status_kib("VmHWM"):
                raise KeyError("VmHWM not in /proc/self/status")
        except (OSError, KeyError) as exc:
            self.reason = f"peak RSS reset unavailable: {exc}"
            return
        self._trim: Callable[[int], int] | None = None
        try:
            self._trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError) as exc:  # not glibc: reused heap pages go unseen
            self.reason = f"malloc_trim unavailable ({exc}); peaks may read low"
        self.available = True

    @staticmethod
    def _reset() -> None:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")

    def measure(self, call: Callable[[], Any]) -> int | None:
        """Bytes of resident memory ``call`` added at its peak (its result is dropped inside)."""
        if not self.available:
            return None
        if self._trim is not None:
            self._trim(0)
        self._reset()
        before = _status_kib("VmRSS")["VmRSS"]
        call()
        peak = _status_kib("VmHWM")["VmHWM"]
        return max(peak - before, 0) * 1024


# ----------------------------------------------------------------------------- machine


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """CPU model, SIMD level, cores, memory, load, versions and the native library used."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        model = next(
            (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model
        )
    memory = None
    with contextlib.suppress(OSError), open("/proc/meminfo", encoding="ascii") as f:
        memory = next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("MemTotal"))
    library: dict[str, Any] | None = None
    if native.available():
        path = Path(native.library_path())
        stat = path.stat()
        library = {
            "path": str(path),
            "modified": datetime.datetime.fromtimestamp(
                stat.st_mtime, datetime.timezone.utc
            ).isoformat(timespec="seconds"),
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        }
    versions = {"python": platform.python_version(), "kldiv-onnx": __version__}
    for package in ("numpy", "onnxruntime", "onnx", "onnxscript", "ml_dtypes", "torch"):
        versions[package] = _version(package)
    return {
        "cpu_model": model,
        "simd": native.simd_level(),
        "cores": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_bytes": memory,
        "platform": platform.platform(),
        "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "versions": versions,
        "native_library": library,
    }
