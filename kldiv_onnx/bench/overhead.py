"""The "call overhead" section of ``kldiv-onnx bench``: the Python API as a user calls it against
torch eager and the bare session, at small shapes where the fixed cost of a call dominates."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import api, native
from ..arrays import to_torch
from ..reference import sample
from .backends import OrtCall, first_line, ort_session
from .config import OVERHEAD_SHAPES, OVERHEAD_TARGETS, Config
from .timer import Stats, side_by_side

OVERHEAD_BATCH_S = 0.5e-3
"""Each contestant of the call-overhead section is timed over batches of calls lasting about
this long (a (2, 2) call takes a few microseconds, close to the clock's own cost)."""
OVERHEAD_WARMUP = 20
"""Untimed calls of each contestant before its batch is sized (sessions, prepared calls,
caches)."""
OVERHEAD_MAX_BATCH = 10_000


def _contestants(
    model: Callable[[str], bytes],
    torch: Any,
    library: str | None,
    why_no_torch: str,
    x: np.ndarray,
    t: np.ndarray,
) -> tuple[dict[str, Callable[[], Any]], dict[str, str]]:
    """The calls side by side at one shape (float32 batchmean, 1 thread), and why any is
    missing. ``model(backend)`` gives the batchmean float32 model of 'fused' or 'composite'."""
    loss = api.KLDivLoss("batchmean", threads=1)
    calls: dict[str, Callable[[], Any]] = {
        "api": lambda: loss(x, t),
        "kl_div": lambda: api.kl_div(x, t, "batchmean", threads=1),
    }
    missing: dict[str, str] = {}
    if torch is not None:
        import torch.nn.functional as F

        xt, tt = to_torch(x), to_torch(t)
        calls["torch-eager"] = lambda: F.kl_div(xt, tt, reduction="batchmean")
    else:
        missing["torch-eager"] = why_no_torch
    if library is None and native.available():
        library = native.library_path()
    backend = "fused" if library is not None else "composite"
    try:
        sess = ort_session(model(backend), 1, library, True)
        bare = OrtCall(sess, x, t)
        bare.prepare()  # the output stays bound: onnxruntime reuses it from the second run
        calls["session"] = bare
    except Exception as exc:
        missing["session"] = first_line(exc)
    return calls, missing


def call_overhead(
    cfg: Config,
    model: Callable[[str], bytes],
    torch: Any,
    library: str | None,
    why_no_torch: str = "torch not installed",
) -> dict[str, Any]:
    """The section: ``KLDivLoss('batchmean', threads=1)(x, t)`` ("api") and
    ``kl_div(x, t, 'batchmean', threads=1)`` against torch eager ``F.kl_div`` (1 thread; None:
    torch missing, ``why_no_torch``) and the bare pre-bound session (of ``library``, else the
    composite), float32, at each of :data:`OVERHEAD_SHAPES`. Timed by
    :func:`~.timer.side_by_side`: ``cfg.overhead_rounds`` rounds in a new random order each,
    each contestant over a batch of calls of about :data:`OVERHEAD_BATCH_S`; the median over
    the rounds is kept, and the API's time over torch eager's is checked against
    :data:`OVERHEAD_TARGETS`."""
    if torch is not None:
        torch.set_num_threads(1)
    section: dict[str, Any] = {
        "dtype": "float32",
        "reduction": "batchmean",
        "threads": 1,
        "rounds": cfg.overhead_rounds,
        "api_backend": None,
        "rows": [],
    }
    with contextlib.suppress(Exception):
        section["api_backend"] = api._resolve_backend("auto")
    rng = np.random.default_rng(cfg.seed)
    for shape in OVERHEAD_SHAPES:
        x, t = sample(shape, np.dtype(np.float32), cfg.seed)
        calls, missing = _contestants(model, torch, library, why_no_torch, x, t)
        for name in list(calls):  # a contestant that cannot run is reported, not timed
            try:
                calls[name]()
            except Exception as exc:
                missing[name] = first_line(exc)
                del calls[name]
        times = side_by_side(
            calls,
            cfg.overhead_rounds,
            warmup=OVERHEAD_WARMUP,
            batch_s=OVERHEAD_BATCH_S,
            max_batch=OVERHEAD_MAX_BATCH,
            rng=rng,
        )
        us = {name: Stats.of(v).median_s * 1e6 for name, v in times.items()}
        eager = us.get("torch-eager")
        row: dict[str, Any] = {
            "shape": list(shape),
            "us": {name: us.get(name) for name in ("api", "kl_div", "torch-eager", "session")},
            "missing": missing,
            "target": OVERHEAD_TARGETS[shape],
        }
        for name in ("api", "kl_div"):
            row[f"{name}_over_eager"] = (
                us[name] / eager if eager and us.get(name) is not None else None
            )
        worst = [row[k] for k in ("api_over_eager", "kl_div_over_eager")]
        row["met"] = None if None in worst else max(worst) <= row["target"]
        section["rows"].append(row)
    return section
