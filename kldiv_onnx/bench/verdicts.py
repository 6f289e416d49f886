"""The verdicts, in one place: ratios between backends and the targets, each measured against
its goal (:func:`summarize`: the kernel's speed and memory targets, the call-overhead targets,
the kernel-in-cache target). Pure functions of a result; :mod:`.measure` stores the summary in
the result, :mod:`.report` prints it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .config import OVERHEAD_SHAPES, OVERHEAD_TARGETS
from .kernel_log import KERNEL_LOG_REDUCTIONS

TARGET = {"size": 2**24, "dtype": "float32", "reduction": "batchmean"}
"""The point at which the kernel's speed targets are stated (with the most threads measured)."""
TARGET_SPEEDUP = 10.0
TARGET_READ_RATIO = 2.0
TARGET_FASTER_READ_RATIO = 1.25
"""Fused against the faster of the two read bounds (numpy's and torch's reads of both inputs)."""
HALF_SLACK = 1.05
"""float16/bfloat16 count as 'no slower per element' up to 5 % above float32 (run-to-run noise)."""


def index(points: Iterable[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    """Points by (backend, dtype, reduction, threads, size)."""
    return {(p["backend"], p["dtype"], p["reduction"], p["threads"], p["size"]): p for p in points}


def _ratio(num: dict[str, Any] | None, den: dict[str, Any] | None) -> float | None:
    if not num or not den or num["status"] != "ok" or den["status"] != "ok":
        return None
    return num["median_s"] / den["median_s"]


def ratios(result: dict[str, Any], dtype: str, reduction: str, threads: int, size: int) -> dict:
    """torch-export / fused, torch-eager / fused (speed-ups), fused / numpy-read and api /
    fused (the Python API's cost over the bare session) at a point."""
    idx = index(result["points"])
    fused = idx.get(("fused", dtype, reduction, threads, size))
    return {
        "api_over_fused": _ratio(idx.get(("api", dtype, reduction, threads, size)), fused),
        "export_over_fused": _ratio(
            idx.get(("torch-export", dtype, reduction, threads, size)), fused
        ),
        "eager_over_fused": _ratio(
            idx.get(("torch-eager", dtype, reduction, threads, size)), fused
        ),
        "composite_over_fused": _ratio(
            idx.get(("composite", dtype, reduction, threads, size)), fused
        ),
        "fused_over_read": _ratio(fused, idx.get(("numpy-read", dtype, reduction, threads, size))),
        "fused_over_faster_read": _faster_read_ratio(idx, fused, (dtype, reduction, threads, size)),
    }


def _faster_read_ratio(idx: dict, fused: dict[str, Any] | None, at: tuple) -> float | None:
    """fused / the faster of numpy-read and torch-read at a point (None if neither ran)."""
    reads = [_ratio(fused, idx.get((b, *at))) for b in ("numpy-read", "torch-read")]
    reads = [r for r in reads if r is not None]
    return max(reads) if reads else None


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """The kernel's targets at their point (or the nearest measured one), each with pass/fail."""
    cfg = result["config"]
    size = TARGET["size"] if TARGET["size"] in cfg["sizes"] else max(cfg["sizes"])
    threads = max(cfg["threads"])
    dtype = TARGET["dtype"] if TARGET["dtype"] in cfg["dtypes"] else cfg["dtypes"][0]
    reduction = (
        TARGET["reduction"] if TARGET["reduction"] in cfg["reductions"] else cfg["reductions"][-1]
    )
    idx = index(result["points"])
    r = ratios(result, dtype, reduction, threads, size)
    checks: dict[str, Any] = {
        "fused_vs_torch_export": _check(r["export_over_fused"], TARGET_SPEEDUP, ">="),
        "fused_vs_torch_eager": _check(r["eager_over_fused"], TARGET_SPEEDUP, ">="),
        "fused_vs_read_both": _check(r["fused_over_read"], TARGET_READ_RATIO, "<="),
        "fused_vs_faster_read": _check(r["fused_over_faster_read"], TARGET_FASTER_READ_RATIO, "<="),
    }
    base = idx.get(("fused", dtype, reduction, threads, size))
    f32 = idx.get(("fused", "float32", reduction, threads, size))
    for half in ("float16", "bfloat16"):
        other = idx.get(("fused", half, reduction, threads, size))
        value = None
        if f32 and other and f32["status"] == other["status"] == "ok":
            value = other["ns_per_element"] / f32["ns_per_element"]
        checks[f"{half}_per_element_vs_float32"] = _check(value, HALF_SLACK, "<=")
    fused = base if base and base["status"] == "ok" else None
    peak = fused["peak_extra_bytes"] if fused else None
    bound = max(4 << 20, 0.01 * fused["input_bytes"]) if fused else None
    checks["fused_peak_extra_bytes"] = {
        "value": peak,
        "target": bound,
        "op": "<=",
        "met": None if peak is None else peak <= bound,
    }
    rows = {tuple(r["shape"]): r for r in (result.get("call_overhead") or {}).get("rows", [])}
    for shape in OVERHEAD_SHAPES:
        row = rows.get(shape)
        worst = [row[k] for k in ("api_over_eager", "kl_div_over_eager")] if row else [None]
        checks[overhead_key(shape)] = _check(
            None if None in worst else max(worst), OVERHEAD_TARGETS[shape], "<="
        )
    checks.update(_kernel_log_checks(result.get("kernel_log")))
    return {
        "at": {"size": size, "dtype": dtype, "reduction": reduction, "threads": threads},
        "exact_target_point": size == TARGET["size"] and threads == 2,
        "ratios": r,
        "targets": checks,
    }


KERNEL_LOG_JUDGED = ("avx3", "batchmean")
"""The (SIMD target, reduction) the kernel-in-cache target is judged on: the whole loss for the
price of one log, with AVX-512. ``none`` (which also writes an output) and the AVX2 path are
measured and reported beside it."""


def kernel_log_key(isa: str, reduction: str) -> str:
    return f"fused_vs_torch_log_{isa}_{reduction}"


def _kernel_log_at(row: dict[str, Any], size: int) -> dict[str, Any] | None:
    """A target's measurements at one size (None when it did not run there)."""
    return next((p for p in row.get("sizes", []) if p["size"] == size), None)


def _kernel_log_checks(section: dict[str, Any] | None) -> dict[str, Any]:
    """fused / torch.log per element at the target size for :data:`KERNEL_LOG_JUDGED` (a
    target that is not supported, or a run without torch, gives ``met: None``)."""
    if not section:
        return {}
    checks = {}
    for row in section["rows"]:
        at = _kernel_log_at(row, section["target_size"]) if row["status"] == "ok" else None
        for reduction in KERNEL_LOG_REDUCTIONS:
            if (row["isa"], reduction) != KERNEL_LOG_JUDGED:
                continue
            value = at["over_log"][reduction] if at else None
            checks[kernel_log_key(row["isa"], reduction)] = _check(value, section["target"], "<=")
    return checks


def overhead_key(shape: tuple[int, ...]) -> str:
    return "api_vs_torch_eager_" + "x".join(str(d) for d in shape)


def _check(value: float | None, target: float, op: str) -> dict[str, Any]:
    met = None if value is None else (value >= target if op == ">=" else value <= target)
    return {"value": value, "target": target, "op": op, "met": met}
