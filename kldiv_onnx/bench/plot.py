"""The throughput plot of a result (matplotlib, imported where used): input GB/s against size,
per backend, reduction and dtype. Written by ``kldiv-onnx bench --plot`` and
``scripts/performance.py``."""

from __future__ import annotations

import os
from typing import Any

from .config import BACKENDS
from .verdicts import index


def plot(result: dict[str, Any], path: str | os.PathLike, *, format: str | None = None) -> None:
    """Input GB/s against size, one line per backend (solid: most threads, dashed: one
    thread), a row per reduction and a column per dtype. ``format``: matplotlib's (e.g.
    ``'png'``, for a path whose suffix does not say it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = result["config"]
    idx = index(result["points"])
    rows, cols = len(cfg["reductions"]), len(cfg["dtypes"])
    fig, axes = plt.subplots(
        rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False, sharex=True, sharey=True
    )
    colors = dict(zip(BACKENDS, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    most = max(cfg["threads"])
    for i, reduction in enumerate(cfg["reductions"]):
        for j, dtype in enumerate(cfg["dtypes"]):
            ax = axes[i][j]
            for backend in cfg["backends"]:
                for threads in sorted(set(cfg["threads"]) & {1, most}, reverse=True):
                    pts = [idx.get((backend, dtype, reduction, threads, s)) for s in cfg["sizes"]]
                    xy = [
                        (p["size"], p["input_gb_per_s"]) for p in pts if p and p["status"] == "ok"
                    ]
                    if not xy:
                        continue
                    xs, ys = zip(*xy, strict=True)
                    ax.plot(
                        xs,
                        ys,
                        marker="o" if threads == most else None,
                        markersize=3,
                        linestyle="-" if threads == most else "--",
                        alpha=1.0 if threads == most else 0.5,
                        color=colors.get(backend),
                        label=f"{backend} ({threads}t)",
                    )
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{dtype}, {reduction}")
            ax.grid(True, which="both", alpha=0.3)
            if i == rows - 1:
                ax.set_xlabel("elements")
            if j == 0:
                ax.set_ylabel("input GB/s")
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=8)
    m = result["machine"]
    fig.suptitle(f"KLDivLoss: input throughput ({m['cpu_model']}, {m['cores']} cores)")
    fig.tight_layout(rect=(0, 0.05 + 0.03 * (len(labels) // 5), 1, 0.97))
    try:
        fig.savefig(path, dpi=110, format=format)
    finally:
        plt.close(fig)
