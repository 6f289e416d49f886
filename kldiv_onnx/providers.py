"""Execution-provider policy: which providers a session asks for, with which options.

``'auto'`` orders what onnxruntime reports available: ``CANNExecutionProvider`` first when
present, then ``CPUExecutionProvider``. An explicit list is respected as given.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import onnxruntime as ort

CPU = "CPUExecutionProvider"
CANN = "CANNExecutionProvider"


def resolve(
    providers: str | Sequence[str],
    provider_options: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    strict: bool = False,
) -> tuple[list[str], list[dict[str, str]]]:
    """Provider names and their options (as strings), in onnxruntime's order."""
    available = ort.get_available_providers()
    if providers == "auto":
        names = [p for p in (CANN, CPU) if p in available]
    elif isinstance(providers, str):
        raise ValueError(f"providers must be 'auto' or a list of provider names, got {providers!r}")
    else:
        names = list(providers)
        unknown = [p for p in names if p not in available]
        if unknown:
            raise ValueError(f"providers {unknown} are not available; onnxruntime has {available}")
    options = dict(provider_options or {})
    stray = sorted(set(options) - set(names))
    if stray:
        raise ValueError(f"provider_options given for providers not requested: {stray}")
    return names, [{k: str(v) for k, v in options.get(p, {}).items()} for p in names]


def check_fallback(sess: ort.InferenceSession, requested: Sequence[str], *, strict: bool) -> None:
    """Warn (or raise with ``strict``) when a requested provider did not start."""
    missing = [p for p in requested if p not in sess.get_providers()]
    if missing:
        message = f"providers {missing} could not start; running on {sess.get_providers()}"
        if strict:
            raise RuntimeError(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
