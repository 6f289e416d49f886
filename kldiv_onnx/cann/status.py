"""Can the CANN provider start in this process, and if not, what is missing."""

from __future__ import annotations

import ctypes
import functools
import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass

import onnxruntime as ort

from ..errors import first_line
from .tables import tables

PROVIDER = "CANNExecutionProvider"


class CANNFallbackWarning(RuntimeWarning):
    """CANN was asked for but cannot start: the session runs on CPU."""


class CANNUnavailableError(RuntimeError):
    """CANN was asked for with ``strict=True`` but cannot start."""


@dataclass(frozen=True)
class CannStatus:
    """Whether the CANN provider can start in this process, and if not, what is missing."""

    missing: tuple[str, ...]
    toolkit: str | None
    devices: tuple[str, ...]

    @property
    def can_start(self) -> bool:
        return not self.missing

    def describe(self) -> str:
        """One line: 'can start (...)' or 'cannot start: <what is missing>'."""
        if self.can_start:
            return f"can start (toolkit {self.toolkit}, devices {', '.join(self.devices)})"
        return "cannot start: " + "; ".join(self.missing)


@functools.lru_cache(maxsize=64)
def _probe_library(name: str, folders: tuple[str, ...], ld_path: str) -> str | None:
    """None when ``name`` loads (by the loader's search, then from ``folders``), else why not.

    ``ld_path`` is only part of the cache key: a changed LD_LIBRARY_PATH probes again.
    """
    errors = []
    for candidate in (name, *(os.path.join(f, name) for f in folders)):
        if candidate != name and not os.path.exists(candidate):
            continue
        try:
            ctypes.CDLL(candidate, mode=getattr(os, "RTLD_LAZY", 1) | ctypes.RTLD_LOCAL)
            return None
        except OSError as exc:
            errors.append(first_line(exc))
    return errors[-1] if errors else f"{name}: not found"


def _toolkit(missing: list[str]) -> str | None:
    """The toolkit folder: the first of the variables naming a folder, else the provider's
    built-in path if present; what is wrong is appended to ``missing``."""
    builtin = os.path.dirname(tables().toolkit_runpath)
    bad_variable = False
    for var in ("ASCEND_HOME_PATH", "ASCEND_TOOLKIT_HOME"):
        value = os.environ.get(var)
        if value:
            if os.path.isdir(value):
                return value
            missing.append(f"{var}={value} is not a directory")
            bad_variable = True
    if os.path.isdir(builtin):
        return builtin
    if not bad_variable:
        missing.append(
            f"the Ascend CANN toolkit (ASCEND_HOME_PATH and ASCEND_TOOLKIT_HOME unset, "
            f"{builtin} absent; source the toolkit's set_env.sh)"
        )
    return None


def cann_status(available: Sequence[str] | None = None) -> CannStatus:
    """Detect what the CANN provider needs: the onnxruntime-cann build, the Ascend toolkit
    (``ASCEND_HOME_PATH``, ``ASCEND_TOOLKIT_HOME`` or the provider's built-in path), the
    libraries it links (``libascendcl.so`` and friends) on the loader path, and an NPU
    device node (``/dev/davinci<N>``). Library probes are cached per loader path."""
    missing: list[str] = []
    if available is None:
        available = ort.get_available_providers()
    if PROVIDER not in available:
        missing.append(
            f"the onnxruntime-cann build (onnxruntime {ort.__version__} here reports "
            f"{', '.join(available)}; install kldiv-onnx[cann])"
        )
    toolkit = _toolkit(missing)
    runpath = tables().toolkit_runpath
    folders = tuple(
        dict.fromkeys([*([os.path.join(toolkit, "lib64")] if toolkit else []), runpath])
    )
    ld_path = os.environ.get("LD_LIBRARY_PATH", "")
    unloadable = [
        lib for lib in tables().toolkit_libraries if _probe_library(lib, folders, ld_path)
    ]
    if unloadable:
        missing.append(
            f"{', '.join(unloadable)} not loadable (LD_LIBRARY_PATH, ld.so.cache, "
            f"{', '.join(folders)})"
        )
    devices = tuple(sorted(glob.glob("/dev/davinci[0-9]*")))
    if not devices:
        missing.append("an Ascend NPU device (no /dev/davinci<N>)")
    return CannStatus(tuple(missing), toolkit, devices)
