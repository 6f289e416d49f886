"""Reading a result: ratios between backends, the targets (:func:`summarize`: the kernel's speed
and memory targets, the call-overhead targets), the terminal tables, the README markdown
section and the throughput plot."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

from .. import native
from .config import BACKENDS, CLASSES, OVERHEAD_SHAPES, OVERHEAD_TARGETS
from .kernel_log import KERNEL_LOG_REDUCTIONS

TARGET = {"size": 2**24, "dtype": "float32", "reduction": "batchmean"}
"""The point at which the kernel's speed targets are stated (with the most threads measured)."""
TARGET_SPEEDUP = 10.0
TARGET_READ_RATIO = 2.0
TARGET_FASTER_READ_RATIO = 1.25
"""Fused against the faster of the two read bounds (numpy's and torch's reads of both inputs)."""
HALF_SLACK = 1.05
"""float16/bfloat16 count as 'no slower per element' up to 5 % above float32 (run-to-run noise)."""

# ----------------------------------------------------------------------------- summary


def _index(points: Iterable[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    return {(p["backend"], p["dtype"], p["reduction"], p["threads"], p["size"]): p for p in points}


def _ratio(num: dict[str, Any] | None, den: dict[str, Any] | None) -> float | None:
    if not num or not den or num["status"] != "ok" or den["status"] != "ok":
        return None
    return num["median_s"] / den["median_s"]


def ratios(result: dict[str, Any], dtype: str, reduction: str, threads: int, size: int) -> dict:
    """torch-export / fused, torch-eager / fused (speed-ups), fused / numpy-read and api /
    fused (the Python API's cost over the bare session) at a point."""
    idx = _index(result["points"])
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
    idx = _index(result["points"])
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
        checks[_overhead_key(shape)] = _check(
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


def _kernel_log_key(isa: str, reduction: str) -> str:
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
            checks[_kernel_log_key(row["isa"], reduction)] = _check(value, section["target"], "<=")
    return checks


def _overhead_key(shape: tuple[int, ...]) -> str:
    return "api_vs_torch_eager_" + "x".join(str(d) for d in shape)


def _check(value: float | None, target: float, op: str) -> dict[str, Any]:
    met = None if value is None else (value >= target if op == ">=" else value <= target)
    return {"value": value, "target": target, "op": op, "met": met}


# ----------------------------------------------------------------------------- output


def _fmt_ns(p: dict[str, Any] | None) -> str:
    if p is None:
        return ""
    if p["status"] == "skipped":
        return "-"
    if p["status"] == "failed":
        return "failed"
    return f"{p['ns_per_element']:.3g}"


def _fmt_x(value: float | None) -> str:
    return "" if value is None else f"{value:.3g}x"


def fmt_size(size: int) -> str:
    exp = size.bit_length() - 1
    return f"2**{exp}" if size == 1 << exp else str(size)


def _fmt_load(value: Sequence[float] | None) -> str:
    return "n/a" if not value else " / ".join(f"{v:.2f}" for v in value)


def _fmt_mib(value: int | None) -> str:
    return "" if value is None else f"{value / 2**20:.1f}"


def format_table(result: dict[str, Any]) -> str:
    """The terminal table: median ns/element per backend and the ratios that matter."""
    cfg = result["config"]
    idx = _index(result["points"])
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
                        _fmt_x(r["api_over_fused"]),
                        _fmt_x(r["export_over_fused"]),
                        _fmt_x(r["eager_over_fused"]),
                        _fmt_x(r["fused_over_read"]),
                        _fmt_mib(fused["peak_extra_bytes"] if fused else None),
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
    idx = _index(result["points"])
    lines = [f"peak extra memory (MiB) at {fmt_size(size)} elements, {threads} thread(s):"]
    head = ["dtype", "reduction", "inputs", *cfg["backends"]]
    lines.append("  ".join(h.rjust(12) for h in head))
    for dtype in cfg["dtypes"]:
        for reduction in cfg["reductions"]:
            row = [idx.get((b, dtype, reduction, threads, size)) for b in cfg["backends"]]
            inputs = next((p["input_bytes"] for p in row if p), None)
            cells = [dtype, reduction, _fmt_mib(inputs)]
            cells += [
                _fmt_mib(p["peak_extra_bytes"]) if p and p["status"] == "ok" else "-" for p in row
            ]
            lines.append("  ".join(c.rjust(12) for c in cells))
    return "\n".join(lines)


def _fmt_us(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _overhead_rows(result: dict[str, Any]) -> list[list[str]]:
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
                _fmt_x(row["api_over_eager"]) or "-",
                _fmt_x(row["kl_div_over_eager"]) or "-",
                f"<= {row['target']:g}x",
                verdict,
            ]
        )
    return out


_OVERHEAD_HEAD = [
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
    lines.append("  ".join(h.rjust(w) for h, w in zip(_OVERHEAD_HEAD, widths, strict=True)))
    for cells in _overhead_rows(result):
        lines.append("  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)))
    for row in o["rows"]:
        for name, why in row["missing"].items():
            lines.append(f"  {name} at {tuple(row['shape'])}: {why}")
    return "\n".join(lines)


def _kernel_log_rows(section: dict[str, Any]) -> list[list[str]]:
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
                    *[_fmt_x(at["over_log"][r]) or "-" for r in KERNEL_LOG_REDUCTIONS],
                    " / ".join(v for v in verdicts if v),
                ]
            )
    return out


_KERNEL_LOG_HEAD = [
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
    lines.append("  ".join(h.rjust(w) for h, w in zip(_KERNEL_LOG_HEAD, widths, strict=False)))
    for cells in _kernel_log_rows(k):
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
        _overhead_key(shape): f"API / torch eager {shape}, 1 thread (time)"
        for shape in OVERHEAD_SHAPES
    },
    _kernel_log_key(*KERNEL_LOG_JUDGED): "fused avx3 batchmean / torch.log (2**18)",
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
            value = _fmt_mib(c["value"]) or "n/a"
            goal = f"{c['op']} {_fmt_mib(c['target']) or 'n/a'}"
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


def _scaling_markdown(result: dict[str, Any], dtype: str, reduction: str) -> list[str]:
    """The thread-scaling table (every size, every thread count) when several were measured."""
    cfg = result["config"]
    if len(cfg["threads"]) < 2 or "fused" not in cfg["backends"]:
        return []
    idx = _index(result["points"])

    def ms(backend: str, threads: int, size: int) -> float | None:
        p = idx.get((backend, dtype, reduction, threads, size))
        return p["median_s"] * 1e3 if p and p["status"] == "ok" else None

    out = [
        "",
        f"Thread scaling ({dtype}, `{reduction}`; the read bound is the faster of numpy's and "
        "torch's read of both inputs at the same thread count):",
        "",
        "| elements | threads | fused ms | speed-up over 1 thread | read bound ms "
        "| fused / read bound |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    one = min(cfg["threads"])
    for size in cfg["sizes"]:
        for threads in cfg["threads"]:
            fused = ms("fused", threads, size)
            reads = [v for b in ("numpy-read", "torch-read") if (v := ms(b, threads, size))]
            first = ms("fused", one, size)
            read = min(reads) if reads else None
            out.append(
                f"| {fmt_size(size)} | {threads} | {_fmt_float(fused)} "
                f"| {_fmt_x(first / fused) if first and fused else '-'} | {_fmt_float(read)} "
                f"| {_fmt_x(fused / read) if fused and read else '-'} |"
            )
    return out


def _fmt_float(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def markdown(result: dict[str, Any], command: str) -> str:
    """A README "Performance" section from one run: machine, command, the target point's
    table and the ratios."""
    m = result["machine"]
    s = result["summary"]
    at = s["at"]
    v = m["versions"]
    idx = _index(result["points"])
    out = [
        "## Performance",
        "",
        f"Measured with `{command}` ({result['duration_s']:.0f} s) on {m['cpu_model']} "
        f"({m['cores']} cores, {m['simd']}), onnxruntime {v['onnxruntime']}, torch {v['torch']}, "
        f"numpy {v['numpy']}, Python {v['python']}. Median of repeated calls after warm-up, "
        "inputs already in place (onnxruntime through an IOBinding over the numpy buffers), "
        "output allocated by the call. Peak extra memory: the call's peak resident-set growth "
        "(`VmHWM` after a `clear_refs` reset), onnxruntime with its CPU arena off. "
        f"Load average {_fmt_load(m.get('loadavg'))} at the start, "
        f"{_fmt_load(m.get('loadavg_end'))} at the end.",
        "",
        f"{fmt_size(at['size'])} elements ({at['size'] // CLASSES} x {CLASSES}), "
        f"`{at['reduction']}`, {at['threads']} intra-op threads:",
        "",
        "| backend | dtype | median ms | ns/element | input GB/s | peak extra MiB |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for dtype in result["config"]["dtypes"]:
        for backend in result["config"]["backends"]:
            p = idx.get((backend, dtype, at["reduction"], at["threads"], at["size"]))
            if p is None:
                continue
            if p["status"] != "ok":
                why = "skipped" if p["status"] == "skipped" else "failed"
                out.append(f"| {backend} | {dtype} | {why} | | | |")
                continue
            out.append(
                f"| {backend} | {dtype} | {p['median_s'] * 1e3:.3g} | {p['ns_per_element']:.3f} "
                f"| {p['input_gb_per_s']:.1f} | {_fmt_mib(p['peak_extra_bytes'])} |"
            )
    out += [
        "",
        f"Across sizes ({at['dtype']}, `{at['reduction']}`, {at['threads']} threads; ratios of "
        "median times):",
        "",
        "| elements | fused GB/s | torch export on ORT / fused | torch eager / fused "
        "| fused / numpy read-both |",
        "|---|---:|---:|---:|---:|",
    ]
    for size in result["config"]["sizes"]:
        p = idx.get(("fused", at["dtype"], at["reduction"], at["threads"], size))
        r = ratios(result, at["dtype"], at["reduction"], at["threads"], size)
        gbs = f"{p['input_gb_per_s']:.1f}" if p and p["status"] == "ok" else "-"
        out.append(
            f"| {fmt_size(size)} | {gbs} | {_fmt_x(r['export_over_fused']) or '-'} "
            f"| {_fmt_x(r['eager_over_fused']) or '-'} | {_fmt_x(r['fused_over_read']) or '-'} |"
        )
    out += _scaling_markdown(result, at["dtype"], at["reduction"])
    if result.get("call_overhead"):
        o = result["call_overhead"]
        out += [
            "",
            f"Call overhead: `KLDivLoss('batchmean')(x, t)` and `kl_div` as a user calls them "
            f"(backend auto: {o['api_backend']}), torch eager `F.kl_div`, and the bare pre-bound "
            f"onnxruntime session; {o['dtype']}, {o['threads']} thread, microseconds per call, "
            f"median of {o['rounds']} rounds measured side by side:",
            "",
            "| " + " | ".join(h or "verdict" for h in _OVERHEAD_HEAD) + " |",
            "|---|" + "---:|" * 6 + "---|---|",
        ]
        out += ["| " + " | ".join(cells) + " |" for cells in _overhead_rows(result)]
    if result.get("kernel_log"):
        k = result["kernel_log"]
        out += [
            "",
            f"Kernel in cache vs `torch.log`: the fused {k['dtype']} op in a pre-bound "
            f"onnxruntime session (inputs and output bound) against `torch.log(t, out=o)`, "
            f"{k['threads']} thread, ns/element, best of {k['rounds']} rounds measured side by "
            f"side; one subprocess per SIMD target (`${native.ISA_ENV_VAR}`); target at "
            f"{fmt_size(k['target_size'])}: fused avx3 `batchmean` / torch.log <= "
            f"{k['target']:g}x (`none` and avx2 reported):",
            "",
            "| " + " | ".join(_KERNEL_LOG_HEAD) + " |",
            "|---|---|" + "---:|" * 5 + "---|",
        ]
        for cells in _kernel_log_rows(k):
            if cells[2] in ("unsupported", "skipped", "failed"):
                cells = [cells[0], cells[8] or cells[2], *[""] * 6]
            out.append("| " + " | ".join(cells[:8]) + " |")
    out += [
        "",
        "Against the targets:",
        "",
        "| target | measured | goal | |",
        "|---|---:|---|---|",
    ]
    out += [
        f"| {label} | {value} | {goal} | {verdict} |"
        for label, value, goal, verdict in target_rows(result)
    ]
    errors = sorted(
        {
            (p["backend"], p["dtype"], p["error"])
            for p in result["points"]
            if p["status"] == "failed"
        }
    )
    if errors:
        out.append("")
    for backend, dtype, error in errors:
        out.append(f"- {backend} {dtype} fails: {error}")
    out += [
        "",
        "Every size, dtype, reduction and thread count is in the JSON (`--json`); the plot "
        "(`--plot`) shows input throughput against size per backend and dtype.",
        "",
    ]
    return "\n".join(out)


def plot(result: dict[str, Any], path: str | os.PathLike, *, format: str | None = None) -> None:
    """Input GB/s against size, one line per backend (solid: most threads, dashed: one
    thread), a row per reduction and a column per dtype. ``format``: matplotlib's (e.g.
    ``'png'``, for a path whose suffix does not say it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = result["config"]
    idx = _index(result["points"])
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
