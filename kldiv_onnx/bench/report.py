"""The terminal tables of a result: median ns/element per backend with the ratios that
matter, peak memory, call overhead, kernel in cache, and the targets with their verdicts
(judged in :mod:`.verdicts`)."""

from __future__ import annotations

from typing import Any

from .config import OVERHEAD_SHAPES, fmt_size
from .kernel_log import KERNEL_LOG_REDUCTIONS
from .verdicts import KERNEL_LOG_JUDGED, index, kernel_log_key, overhead_key, ratios


def _fmt_ns(p: dict[str, Any] | None) -> str:
    if p is None:
        return ""
    if p["status"] == "skipped":
        return "-"
    if p["status"] == "failed":
        return "failed"
    return f"{p['ns_per_element']:.3g}"


def fmt_x(value: float | None) -> str:
    """A ratio as '1.23x' ('' for none)."""
    return "" if value is None else f"{value:.3g}x"


def fmt_mib(value: int | None) -> str:
    """Bytes as MiB with one decimal ('' for none)."""
    return "" if value is None else f"{value / 2**20:.1f}"


def format_table(result: dict[str, Any]) -> str:
    """The terminal table: median ns/element per backend and the ratios that matter."""
    cfg = result["config"]
    idx = index(result["points"])
    backends = cfg["backends"]
    head = ["size", *backends, "api/fused", "export/fused", "eager/fused", "fused/read"]
    head.append("fused MiB")
    widths = [7, *[max(len(b), 9) for b in backends], 9, 12, 11, 10, 9]
    lines = []
    measured = bool(result["points"])  # False for --kernel-log-only
    for dtype in cfg["dtypes"] if measured else ():
        for reduction in cfg["reductions"]:
            for threads in cfg["threads"]:
                lines.append("")
                lines.append(
                    f"{dtype}, reduction={reduction}, {threads} thread(s) - median ns/element "
                    "(ratios: time over time)"
                )
                lines.append("  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True)))
                for size in cfg["sizes"]:
                    r = ratios(result, dtype, reduction, threads, size)
                    fused = idx.get(("fused", dtype, reduction, threads, size))
                    cells = [
                        fmt_size(size),
                        *[_fmt_ns(idx.get((b, dtype, reduction, threads, size))) for b in backends],
                        fmt_x(r["api_over_fused"]),
                        fmt_x(r["export_over_fused"]),
                        fmt_x(r["eager_over_fused"]),
                        fmt_x(r["fused_over_read"]),
                        fmt_mib(fused["peak_extra_bytes"] if fused else None),
                    ]
                    lines.append("  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)))
    if measured:
        lines.append("")
        lines.append(format_memory(result))
    if result.get("call_overhead"):
        lines.append("")
        lines.append(format_overhead(result))
    if result.get("kernel_log"):
        lines.append("")
        lines.append(format_kernel_log(result))
    lines.append("")
    lines.append(format_summary(result))
    for item in result["skipped"]:
        lines.append(f"skipped {item['backend']}: {item['reason']}")
    failures = sorted(
        {
            (p["backend"], p["dtype"], p["error"])
            for p in result["points"]
            if p["status"] == "failed"
        }
    )
    for backend, dtype, error in failures:
        lines.append(f"failed {backend} {dtype}: {error}")
    lines.extend(f"note: {n}" for n in result["notes"])
    return "\n".join(lines).lstrip("\n")


def format_memory(result: dict[str, Any]) -> str:
    """Peak extra MiB per backend at the largest size, most threads."""
    cfg = result["config"]
    size, threads = max(cfg["sizes"]), max(cfg["threads"])
    idx = index(result["points"])
    lines = [f"peak extra memory (MiB) at {fmt_size(size)} elements, {threads} thread(s):"]
    head = ["dtype", "reduction", "inputs", *cfg["backends"]]
    lines.append("  ".join(h.rjust(12) for h in head))
    for dtype in cfg["dtypes"]:
        for reduction in cfg["reductions"]:
            row = [idx.get((b, dtype, reduction, threads, size)) for b in cfg["backends"]]
            inputs = next((p["input_bytes"] for p in row if p), None)
            cells = [dtype, reduction, fmt_mib(inputs)]
            cells += [
                fmt_mib(p["peak_extra_bytes"]) if p and p["status"] == "ok" else "-" for p in row
            ]
            lines.append("  ".join(c.rjust(12) for c in cells))
    return "\n".join(lines)


def _fmt_us(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def overhead_rows(result: dict[str, Any]) -> list[list[str]]:
    """One row of cells per shape of the call-overhead section."""
    out = []
    for row in result["call_overhead"]["rows"]:
        us = row["us"]
        verdict = {True: "met", False: "MISSED", None: "not measured"}[row["met"]]
        out.append(
            [
                "(" + ", ".join(str(d) for d in row["shape"]) + ")",
                _fmt_us(us["api"]),
                _fmt_us(us["kl_div"]),
                _fmt_us(us["torch-eager"]),
                _fmt_us(us["session"]),
                fmt_x(row["api_over_eager"]) or "-",
                fmt_x(row["kl_div_over_eager"]) or "-",
                f"<= {row['target']:g}x",
                verdict,
            ]
        )
    return out


OVERHEAD_HEAD = [
    "shape",
    "api us",
    "kl_div us",
    "torch eager us",
    "session us",
    "api/eager",
    "kl_div/eager",
    "target",
    "",
]


def format_overhead(result: dict[str, Any]) -> str:
    """The call-overhead section: microseconds per call, side by side, and the targets."""
    o = result["call_overhead"]
    lines = [
        f"call overhead: {o['dtype']} {o['reduction']}, {o['threads']} thread, microseconds "
        f"per call (median of {o['rounds']} alternating rounds; api = "
        f"KLDivLoss(...)(x, t), backend auto -> {o['api_backend']}; session = bare pre-bound "
        "onnxruntime session):"
    ]
    widths = [11, 8, 9, 14, 10, 9, 12, 8, 12]
    lines.append("  ".join(h.rjust(w) for h, w in zip(OVERHEAD_HEAD, widths, strict=True)))
    for cells in overhead_rows(result):
        lines.append("  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)))
    for row in o["rows"]:
        for name, why in row["missing"].items():
            lines.append(f"  {name} at {tuple(row['shape'])}: {why}")
    return "\n".join(lines)


def kernel_log_rows(section: dict[str, Any]) -> list[list[str]]:
    """One row of cells per (SIMD target, size) of the kernel-vs-torch.log section."""
    out = []
    for row in section["rows"]:
        if row["status"] != "ok":
            out.append([row["isa"], "-", row["status"], "", "", "", "", "", row.get("error", "")])
            continue
        torch_missing = row.get("torch") == "not installed"
        for at in row["sizes"]:
            ns = at["ns_per_element"]
            judged = at["size"] == section["target_size"]
            verdicts = []
            for reduction in KERNEL_LOG_REDUCTIONS:
                ratio = at["over_log"][reduction]
                if not judged:
                    verdicts.append("")
                elif (row["isa"], reduction) != KERNEL_LOG_JUDGED:
                    verdicts.append("reported")
                elif ratio is None:
                    verdicts.append("not measured")
                else:
                    verdicts.append("met" if ratio <= section["target"] else "MISSED")
            out.append(
                [
                    row["isa"],
                    fmt_size(at["size"]),
                    *[f"{ns[r]:.3f}" for r in KERNEL_LOG_REDUCTIONS],
                    "not installed" if torch_missing else f"{ns['torch.log']:.3f}",
                    *[fmt_x(at["over_log"][r]) or "-" for r in KERNEL_LOG_REDUCTIONS],
                    " / ".join(v for v in verdicts if v),
                ]
            )
    return out


KERNEL_LOG_HEAD = [
    "isa",
    "size",
    *[f"{r} ns" for r in KERNEL_LOG_REDUCTIONS],
    "torch.log ns",
    *[f"{r}/log" for r in KERNEL_LOG_REDUCTIONS],
    "verdict",
]


def format_kernel_log(result: dict[str, Any]) -> str:
    """The kernel-in-cache section: ns/element of the fused op and of torch.log, side by side,
    per SIMD target and size, and the target at its size."""
    k = result["kernel_log"]
    lines = [
        f"kernel in cache vs torch.log: {k['dtype']}, {k['threads']} thread, ns/element, best "
        f"of {k['rounds']} alternating rounds; fused = pre-bound onnxruntime session; target at "
        f"{fmt_size(k['target_size'])}: fused avx3 batchmean / torch.log <= {k['target']:g}x "
        "(none and avx2 reported)"
    ]
    widths = [5, 6, 13, 8, 13, 14, 9, 14]
    lines.append("  ".join(h.rjust(w) for h, w in zip(KERNEL_LOG_HEAD, widths, strict=False)))
    for cells in kernel_log_rows(k):
        lines.append(
            "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=False))
            + ("  " + cells[-1] if len(cells) > len(widths) else "")
        )
    for row in k["rows"]:
        if row["status"] == "ok":
            us = ", ".join(f"{r} {row['session_us'][r]:.2g}" for r in KERNEL_LOG_REDUCTIONS)
            lines.append(f"  {row['isa']}: onnxruntime's fixed cost per run (16 elements): {us} us")
    return "\n".join(lines)


_TARGET_LABELS = {
    "fused_vs_torch_export": "torch export on ORT / fused (time)",
    "fused_vs_torch_eager": "torch eager / fused (time)",
    "fused_vs_read_both": "fused / numpy read-both (time)",
    "fused_vs_faster_read": "fused / faster of numpy, torch read-both",
    "float16_per_element_vs_float32": "fused float16 / float32 per element",
    "bfloat16_per_element_vs_float32": "fused bfloat16 / float32 per element",
    "fused_peak_extra_bytes": "fused peak extra memory (MiB)",
    **{
        overhead_key(shape): f"API / torch eager {shape}, 1 thread (time)"
        for shape in OVERHEAD_SHAPES
    },
    kernel_log_key(*KERNEL_LOG_JUDGED): "fused avx3 batchmean / torch.log (2**18)",
}


def target_rows(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(label, measured, goal, verdict) for each target (the kernel's and the call overhead's;
    for the latter the worse of ``KLDivLoss`` and ``kl_div``)."""
    rows = []
    for key, label in _TARGET_LABELS.items():
        c = result["summary"]["targets"].get(key)
        if c is None:  # a result written before that target existed
            continue
        if key == "fused_peak_extra_bytes":
            value = fmt_mib(c["value"]) or "n/a"
            goal = f"{c['op']} {fmt_mib(c['target']) or 'n/a'}"
        else:
            value = "n/a" if c["value"] is None else f"{c['value']:.3g}"
            goal = f"{c['op']} {c['target']:g}"
        verdict = {True: "met", False: "MISSED", None: "not measured"}[c["met"]]
        rows.append((label, value, goal, verdict))
    return rows


def format_summary(result: dict[str, Any]) -> str:
    """The targets, measured."""
    s = result["summary"]
    at = s["at"]
    lines = [
        f"targets at {fmt_size(at['size'])} {at['dtype']} {at['reduction']}, "
        f"{at['threads']} thread(s)"
        + ("" if s["exact_target_point"] else " (not the target point 2**24, 2 threads)")
        + ":"
    ]
    for label, value, goal, verdict in target_rows(result):
        lines.append(f"  {label:<44} {value:>10}  target {goal:<10} {verdict}")
    return "\n".join(lines)
