"""The per-sample KL distribution of a comparison as a histogram on a log axis, with the mean and
the reported quantiles marked (matplotlib, imported here)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ..model_io import atomic_write
from .report import CompareReport

_MARKS = (("median", "median"), ("p90", "p90"), ("p99", "p99"), ("p999", "p99.9"), ("max", "max"))


def _matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(
            "the plot needs matplotlib, which is not installed: pip install 'kldiv-onnx[bench]'"
        ) from exc
    return Figure, FigureCanvasAgg


def plot(report: CompareReport, path: str | os.PathLike) -> Path:
    """Write the distribution of ``report.values`` to ``path`` (PNG, or any format matplotlib
    knows by the suffix), atomically: a temporary file beside it, then a rename."""
    figure_type, canvas_type = _matplotlib()
    values = report.values[~np.isnan(report.values)]
    positive = values[values > 0]
    fig = figure_type(figsize=(8, 4.5), layout="constrained")
    canvas_type(fig)
    ax = fig.add_subplot()
    if positive.size:
        finite = positive[np.isfinite(positive)]
        low, high = (finite.min(), finite.max()) if finite.size else (1e-12, 1.0)
        if high <= low:
            low, high = low / 2, high * 2
        bins = np.geomspace(low, high, 60)
        ax.hist(finite, bins=bins, color="#4c72b0", alpha=0.85)
        ax.set_xscale("log")
        marks = [("mean", "mean", report.kl["mean"])]
        marks += [(key, label, report.kl[key]) for key, label in _MARKS]
        colors = ("black", "#55a868", "#c44e52", "#8172b2", "#ccb974", "#64b5cd")
        for (_, label, x), color in zip(marks, colors, strict=True):
            if x is not None and math.isfinite(x) and x > 0:
                ax.axvline(x, color=color, linestyle="--", linewidth=1.2, label=f"{label} {x:.3g}")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no sample with KL > 0", ha="center", va="center")
    left_out = values.size - int(np.count_nonzero(np.isfinite(positive)))
    ax.set_xlabel("KL(P_base ‖ P_candidate) per sample (nats, log scale)")
    ax.set_ylabel("samples")
    title = f"{Path(report.models['candidate']).name} vs {Path(report.models['base']).name}"
    note = f"{report.samples} samples"
    if left_out:
        note += f", {left_out} with KL ≤ 0 or infinite not shown"
    if report.nan_samples:
        note += f", {report.nan_samples} NaN"
    ax.set_title(
        f"{title}\n{note}, top-1 agreement {100 * report.top1_agreement:.2f} %", fontsize=10
    )
    target = Path(path)
    fmt = target.suffix[1:].lower() or "png"
    with atomic_write(target, "plot") as tmp:
        fig.savefig(tmp, dpi=120, format=fmt)
    return target
