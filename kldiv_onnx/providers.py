"""Execution-provider policy: which providers a session asks for, with which options.

``'auto'`` orders what onnxruntime reports available: ``CANNExecutionProvider`` first when
present, then ``CPUExecutionProvider``. An explicit list is respected as given.

CANN options carry the names the installed ``onnxruntime-cann`` accepts (the table in
``kldiv_onnx/data``, read from the 1.24.4 provider library); an unknown key or a bad value is a
``ValueError`` naming it. Where onnxruntime's defaults hurt this loss the wrapper's differ
(:data:`CANN_DEFAULTS`, each with its reason).

When CANN is asked for but cannot start (the CPU build of onnxruntime, no Ascend toolkit, its
libraries not on the loader path, no NPU device), the session runs on CPU with one
:class:`CANNFallbackWarning` naming what is missing; ``strict=True`` raises
:class:`CANNUnavailableError` instead.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import onnxruntime as ort

from . import cann

CPU = "CPUExecutionProvider"
CANN = "CANNExecutionProvider"

CANN_DEFAULTS: dict[str, tuple[str, str]] = {
    "precision_mode": (
        "must_keep_origin_dtype",
        "onnxruntime passes no precision mode, so CANN applies force_fp16: a float32 loss would "
        "be computed in float16 (log of small probabilities, sums of many terms). The body casts "
        "to float32 itself; keeping the model's dtypes keeps that math in float32.",
    ),
    "dump_om_model": (
        "0",
        "onnxruntime's default 1 writes <node>_<hash>.om files into the working directory, and "
        "a later session loads an existing file of that name instead of compiling: a stale "
        "model from another run can be picked up. Pass dump_om_model=True to have them.",
    ),
    "op_select_impl_mode": (
        "high_precision",
        "onnxruntime's default high_performance lets CANN pick faster, less accurate Log/Exp "
        "implementations; the loss is compared with a float64 reference.",
    ),
}
"""Wrapper defaults for CANN options, as (value, reason); any of them can be overridden."""


class CANNFallbackWarning(RuntimeWarning):
    """CANN was asked for but cannot start: the session runs on CPU."""


class CANNUnavailableError(RuntimeError):
    """CANN was asked for with ``strict=True`` but cannot start."""


# ---------------------------------------------------------------------------------------------
# options


def _option_specs() -> dict[str, dict[str, Any]]:
    return {k: v for k, v in cann.table()["provider_options"].items() if k != "source"}


def _bool(name: str, value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int) and value in (0, 1):
        return str(value)
    if isinstance(value, str) and value in ("0", "1", "true", "false", "True", "False"):
        return "1" if value in ("1", "true", "True") else "0"
    raise ValueError(f"CANN option {name} must be a bool (True/False, 0/1), got {value!r}")


def _int(name: str, value: object, minimum: int) -> str:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"CANN option {name} must be an int >= {minimum}, got {value!r}")
    return str(value)


def cann_options(options: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The CANN provider options to pass: :data:`CANN_DEFAULTS` updated with ``options``,
    validated against the option table and rendered as onnxruntime's strings."""
    specs = _option_specs()
    merged: dict[str, Any] = {name: value for name, (value, _) in CANN_DEFAULTS.items()}
    for name, value in (options or {}).items():
        if name not in specs:
            raise ValueError(
                f"unknown CANN option {name!r}: onnxruntime-cann {cann.table()['onnxruntime']} "
                f"accepts {sorted(specs)}"
            )
        merged[name] = value
    out: dict[str, str] = {}
    for name, value in merged.items():
        spec = specs[name]
        kind = spec["kind"]
        if kind == "bool":
            out[name] = _bool(name, value)
        elif kind == "int":
            out[name] = _int(name, value, int(spec.get("min", 0)))
        elif kind == "enum":
            if value not in spec["values"]:
                raise ValueError(
                    f"CANN option {name} must be one of {spec['values']}, got {value!r}"
                )
            out[name] = value
        else:
            if not isinstance(value, str):
                raise ValueError(f"CANN option {name} must be a string, got {value!r}")
            if (
                name == "optypelist_for_implmode"
                and value
                and not all(op.strip().isidentifier() for op in value.split(","))
            ):
                raise ValueError(
                    f"CANN option {name} must be comma-separated op types, got {value!r}"
                )
            out[name] = value
    return out


# ---------------------------------------------------------------------------------------------
# can CANN start here?


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
            errors.append(str(exc).splitlines()[0])
    return errors[-1] if errors else f"{name}: not found"


def cann_status(available: Sequence[str] | None = None) -> CannStatus:
    """Detect what the CANN provider needs: the onnxruntime-cann build, the Ascend toolkit
    (``ASCEND_HOME_PATH``, ``ASCEND_TOOLKIT_HOME`` or the provider's built-in path), the
    libraries it links (``libascendcl.so`` and friends) on the loader path, and an NPU
    device node (``/dev/davinci<N>``)."""
    missing: list[str] = []
    if available is None:
        available = ort.get_available_providers()
    if CANN not in available:
        missing.append(
            f"the onnxruntime-cann build (onnxruntime {ort.__version__} here reports "
            f"{', '.join(available)}; install kldiv-onnx[cann])"
        )
    toolkit_info = cann.table()["toolkit"]
    toolkit = None
    for var in ("ASCEND_HOME_PATH", "ASCEND_TOOLKIT_HOME"):
        value = os.environ.get(var)
        if value:
            if os.path.isdir(value):
                toolkit = value
                break
            missing.append(f"{var}={value} is not a directory")
    builtin = os.path.dirname(toolkit_info["runpath"])
    if toolkit is None and os.path.isdir(builtin):
        toolkit = builtin
    if toolkit is None and not any("is not a directory" in m for m in missing):
        missing.append(
            f"the Ascend CANN toolkit (ASCEND_HOME_PATH and ASCEND_TOOLKIT_HOME unset, {builtin} "
            "absent; source the toolkit's set_env.sh)"
        )
    folders = tuple(
        dict.fromkeys(
            f
            for f in (
                (os.path.join(toolkit, "lib64") if toolkit else None),
                toolkit_info["runpath"],
            )
            if f
        )
    )
    ld_path = os.environ.get("LD_LIBRARY_PATH", "")
    unloadable = [lib for lib in toolkit_info["libraries"] if _probe_library(lib, folders, ld_path)]
    if unloadable:
        missing.append(
            f"{', '.join(unloadable)} not loadable (LD_LIBRARY_PATH, ld.so.cache, "
            f"{', '.join(folders)})"
        )
    devices = tuple(sorted(glob.glob("/dev/davinci[0-9]*")))
    if not devices:
        missing.append("an Ascend NPU device (no /dev/davinci<N>)")
    return CannStatus(tuple(missing), toolkit, devices)


# ---------------------------------------------------------------------------------------------
# policy


def resolve(
    providers: str | Sequence[str],
    provider_options: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    strict: bool = False,
) -> tuple[list[str], list[dict[str, str]]]:
    """Provider names and their options (as strings), in onnxruntime's order.

    ``providers``: ``'auto'`` or a list of names. CANN options are validated and completed with
    :data:`CANN_DEFAULTS`. When CANN is requested but :func:`cann_status` says it cannot start,
    it is dropped (CPU is appended if nothing is left) with one :class:`CANNFallbackWarning`,
    or :class:`CANNUnavailableError` with ``strict``.
    """
    available = ort.get_available_providers()
    if isinstance(providers, str):
        if providers != "auto":
            raise ValueError(
                f"providers must be 'auto' or a list of provider names, got {providers!r}"
            )
        names = [p for p in (CANN, CPU) if p in available]
    else:
        names = list(providers)
        if not names or not all(isinstance(p, str) for p in names):
            raise ValueError(f"providers must be a non-empty list of names, got {providers!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"providers listed twice: {names}")
        unknown = [p for p in names if p not in available and p != CANN]
        if unknown:
            raise ValueError(f"providers {unknown} are not available; onnxruntime has {available}")
    options = {k: dict(v) for k, v in (provider_options or {}).items()}
    stray = sorted(set(options) - set(names))
    if stray:
        raise ValueError(f"provider_options given for providers not requested: {stray}")
    rendered = {p: {k: str(v) for k, v in options.get(p, {}).items()} for p in names}
    if CANN in names:
        rendered[CANN] = cann_options(options.get(CANN))
        status = cann_status(available)
        if not status.can_start:
            message = f"{CANN} {status.describe()}; running on {CPU}"
            if strict:
                raise CANNUnavailableError(message)
            warnings.warn(message, CANNFallbackWarning, stacklevel=3)
            names = [p for p in names if p != CANN] or [CPU]
    return names, [rendered.get(p, {}) for p in names]


def check_fallback(sess: ort.InferenceSession, requested: Sequence[str], *, strict: bool) -> None:
    """Warn (or raise with ``strict``) when a requested provider did not start anyway."""
    running = sess.get_providers()
    missing = [p for p in requested if p not in running]
    if missing:
        message = (
            f"providers {missing} could not start (see onnxruntime's log); running on {running}"
        )
        if strict:
            raise CANNUnavailableError(message) if CANN in missing else RuntimeError(message)
        category = CANNFallbackWarning if CANN in missing else RuntimeWarning
        warnings.warn(message, category, stacklevel=3)
