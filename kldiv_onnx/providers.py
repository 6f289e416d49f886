"""Execution-provider policy: which providers a session asks for, with which options.

``'auto'`` orders what onnxruntime reports available: ``CANNExecutionProvider`` first when
present, then ``CPUExecutionProvider``. An explicit list is respected as given.

What is specific to CANN (its option table and the wrapper's defaults, whether it can start
here) lives in :mod:`kldiv_onnx.cann`; this module only applies it.

When CANN is asked for but cannot start (the CPU build of onnxruntime, no Ascend toolkit, its
libraries not on the loader path, no NPU device), the session runs on CPU with one
:class:`CANNFallbackWarning` naming what is missing; ``strict=True`` raises
:class:`CANNUnavailableError` instead.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import onnxruntime as ort

from .cann import PROVIDER as CANN
from .cann import CANNFallbackWarning, CANNUnavailableError, cann_options, cann_status

CPU = "CPUExecutionProvider"


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
