"""docs/performance.md from a ``kldiv-onnx bench --json`` result: the tables, the targets, the
plot, the runs on more cores beside it, start-up and ``compare`` at scale.

The package writes no markdown: this script reads what the benchmark measured (the JSON keeps
every point, the machine and the command) and writes the page; every figure on it comes from
those files. Run it after a new ``kldiv-onnx bench --json docs/bench.json`` (with ``--compare
local,ray`` for the ``compare`` section):

    python scripts/performance.py

Usage: python scripts/performance.py [--json docs/bench.json] [--more-cores docs/bench-16core]
[--startup docs/startup.json] [--scale docs/compare-scale.json] [--out docs/performance.md]
[--plot docs/bench.png | --no-plot]
(the defaults are those paths; ``--more-cores``, ``--startup`` and ``--scale`` may name what
does not exist: no section then; ``--no-plot``: link the plot that is there, write none)

The start-up section reads ``scripts/bench_startup.py``'s JSON, the ``compare`` at scale
section ``scripts/bench_scale.py``'s; rerun this script after either.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from kldiv_onnx import native
from kldiv_onnx.bench.config import CLASSES, fmt_size
from kldiv_onnx.bench.report import (
    KERNEL_LOG_HEAD,
    OVERHEAD_HEAD,
    fmt_mib,
    fmt_x,
    kernel_log_rows,
    overhead_rows,
    target_rows,
)
from kldiv_onnx.bench.verdicts import index, ratios
from kldiv_onnx.model_io import atomic_write, check_output_path, write_bytes

ROOT = Path(__file__).resolve().parent.parent
REGENERATE = "python scripts/performance.py"


def _fmt_load(value: list[float] | None) -> str:
    return "n/a" if not value else " / ".join(f"{v:.2f}" for v in value)


def _fmt_float(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _span(values: list[float], digits: str = ".2f") -> str:
    """'a–b' of the smallest and largest value ('a' when they print the same)."""
    lo, hi = f"{min(values):{digits}}", f"{max(values):{digits}}"
    return lo if lo == hi else f"{lo}–{hi}"


def command_as_run(command: str) -> str:
    """The recorded command with what no longer applies taken out: ``--markdown FILE`` (the
    benchmark once wrote this page itself; this script does now) and the folders before
    ``docs/`` in its paths."""
    command = re.sub(r" --markdown \S+", "", command)
    return re.sub(r"(?<= )/\S*/(docs/\S+)", r"\1", command)


def _out_dir(command: str) -> str:
    """:func:`command_as_run` with the output folder of ``scripts/thread_scaling.sh`` as OUT."""
    return re.sub(r"(?<= )/\S*/([^/\s]+)(?=\s|$)", r"OUT/\1", command_as_run(command))


def _machine(m: dict[str, Any]) -> str:
    v = m["versions"]
    return (
        f"{m['cpu_model']} ({m['cores']} cores, {m['simd']}), onnxruntime {v['onnxruntime']}, "
        f"torch {v['torch']}, numpy {v['numpy']}, Python {v['python']}"
    )


def _scaling(result: dict[str, Any], dtype: str, reduction: str) -> list[str]:
    """The thread-scaling table (every size, every thread count) when several were measured."""
    cfg = result["config"]
    if len(cfg["threads"]) < 2 or "fused" not in cfg["backends"]:
        return []
    idx = index(result["points"])

    def ms(backend: str, threads: int, size: int) -> float | None:
        p = idx.get((backend, dtype, reduction, threads, size))
        return p["median_s"] * 1e3 if p and p["status"] == "ok" else None

    out = [
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
                f"| {fmt_x(first / fused) if first and fused else '-'} | {_fmt_float(read)} "
                f"| {fmt_x(fused / read) if fused and read else '-'} |"
            )
    return out


def _scaling_ratios(result: dict[str, Any], dtype: str, reduction: str) -> list[float]:
    """fused / the faster read bound at every (size, threads) both ran."""
    idx = index(result["points"])
    cfg = result["config"]
    out = []
    for size in cfg["sizes"]:
        for threads in cfg["threads"]:
            at = (dtype, reduction, threads, size)
            fused = idx.get(("fused", *at))
            reads = [idx.get((b, *at)) for b in ("numpy-read", "torch-read")]
            reads = [p["median_s"] for p in reads if p and p["status"] == "ok"]
            if fused and fused["status"] == "ok" and reads:
                out.append(fused["median_s"] / min(reads))
    return out


def _target_point(result: dict[str, Any]) -> list[str]:
    """Every backend and dtype at the target point."""
    at = result["summary"]["at"]
    idx = index(result["points"])
    out = [
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
                out.append(f"| {backend} | {dtype} | {p['status']} | | | |")
                continue
            out.append(
                f"| {backend} | {dtype} | {p['median_s'] * 1e3:.3g} | {p['ns_per_element']:.3f} "
                f"| {p['input_gb_per_s']:.1f} | {fmt_mib(p['peak_extra_bytes'])} |"
            )
    return out


def _across_sizes(result: dict[str, Any]) -> list[str]:
    at = result["summary"]["at"]
    idx = index(result["points"])
    out = [
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
            f"| {fmt_size(size)} | {gbs} | {fmt_x(r['export_over_fused']) or '-'} "
            f"| {fmt_x(r['eager_over_fused']) or '-'} | {fmt_x(r['fused_over_read']) or '-'} |"
        )
    return out


def _overhead(result: dict[str, Any]) -> list[str]:
    o = result["call_overhead"]
    return [
        f"Call overhead: `KLDivLoss('batchmean')(x, t)` and `kl_div` as a user calls them "
        f"(backend auto: {o['api_backend']}), torch eager `F.kl_div`, and the bare pre-bound "
        f"onnxruntime session; {o['dtype']}, {o['threads']} thread, microseconds per call, "
        f"median of {o['rounds']} rounds measured side by side:",
        "",
        "| " + " | ".join(h or "verdict" for h in OVERHEAD_HEAD) + " |",
        "|---|" + "---:|" * 6 + "---|---|",
        *["| " + " | ".join(cells) + " |" for cells in overhead_rows(result)],
    ]


def _kernel_log(section: dict[str, Any]) -> list[str]:
    k = section
    out = [
        f"Kernel in cache vs `torch.log`: the fused {k['dtype']} op in a pre-bound onnxruntime "
        f"session (inputs and output bound) against `torch.log(t, out=o)`, {k['threads']} "
        f"thread, ns/element, the fastest of {k['rounds']} rounds measured side by side; one "
        f"subprocess per SIMD target (`${native.ISA_ENV_VAR}`); target at "
        f"{fmt_size(k['target_size'])}: fused avx3 `batchmean` / torch.log <= {k['target']:g}x "
        "(`none` and avx2 reported):",
        "",
        "| " + " | ".join(KERNEL_LOG_HEAD) + " |",
        "|---|---|" + "---:|" * 5 + "---|",
    ]
    for cells in kernel_log_rows(k):
        if cells[2] in ("unsupported", "skipped", "failed"):
            cells = [cells[0], cells[8] or cells[2], *[""] * 6]
        out.append("| " + " | ".join(cells[:8]) + " |")
    return out


def _over_log(section: dict[str, Any] | None, isa: str, size: int) -> dict[str, float] | None:
    """fused / torch.log per reduction of one SIMD target at one size (None: not measured)."""
    for row in (section or {}).get("rows", []):
        if row["isa"] == isa and row["status"] == "ok":
            for at in row["sizes"]:
                if at["size"] == size and None not in at["over_log"].values():
                    return at["over_log"]
    return None


def _compare(section: dict[str, Any]) -> list[str]:
    stage, m = section["kl_stage"], section["machine"]
    out = [
        f"`kldiv-onnx compare` (`--compare`): the KL stage ({m['kl_op']}, on every core, per "
        f"batch of {stage[0]['batch_size']} rows, as `compare` runs it) against reading both "
        "models' output batches once (numpy's float32 sum of each), timed in turn, medians of "
        f"{stage[0]['repeats']} rounds:",
        "",
        "| outputs | classes | read both µs | KL stage µs | KL / read |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in stage:
        out.append(
            f"| {r['kind']} | {r['classes']} | {1e6 * r['read_s']:.1f} | {1e6 * r['kl_s']:.1f} "
            f"| {r['ratio']:.2f}× |"
        )
    if section["end_to_end"]:
        first = section["end_to_end"][0]
        out += [
            "",
            f"End to end, a classifier pair with {first['classes']:,} classes over "
            f"{first['samples']:,} samples:",
            "",
        ]
        for r in section["end_to_end"]:
            out.append(
                f"- `{r['engine']}`: {r['samples_per_s']:,.0f} samples/s (wall {r['wall_s']:.2f} s;"
                f" KL stage {r['kl_s']:.2f} s, models {r['base_s'] + r['candidate_s']:.2f} s)"
            )
    return out


def _compare_reading(result: dict[str, Any]) -> list[str]:
    """What the compare figures say, from the same figures."""
    section = result["compare"]
    worst = max(r["ratio"] for r in section["kl_stage"])
    text = f"At every class count the KL stage is within {worst:.2g}× of the read."
    if "_core" in section["machine"]["kl_op"]:
        text += (
            " It runs the numeric core directly through `kldiv_onnx._core`, not as one run of "
            "the `KLDivRows` op in an onnxruntime session per batch: one run costs about as "
            "much as the read of a small batch on its own"
        )
        rows = (result.get("call_overhead") or {}).get("rows", [])
        session = next((r["us"]["session"] for r in rows if r["shape"] == [2, 2]), None)
        if session is not None:
            text += (
                f" ({session:.3g} µs for the bare pre-bound session at (2, 2) in the "
                "call-overhead table above)"
            )
        text += (
            ". Rows below 128 classes are taken 16 at a time and transposed into class-major "
            "vectors in registers, so that each row's maxima, sums and final log are vector "
            "operations; a batch of more than 8,192 elements is split over the cores by the "
            "module's pool."
        )
    local = next((r for r in section["end_to_end"] if r["engine"] == "local"), None)
    if local is not None:
        models = local["base_s"] + local["candidate_s"]
        text += (
            f" End to end (`local`) the two models take {models:.2f} s against "
            f"{local['kl_s']:.2f} s of KL stage"
        )
        if any(r["engine"] == "ray" for r in section["end_to_end"]):
            text += "; the Ray engine's wall time is mostly starting its actors"
        text += "."
    return ["", text]


def _reading(result: dict[str, Any]) -> list[str]:
    """What the main figures say, every number from the result."""
    at = result["summary"]["at"]
    idx = index(result["points"])
    key = (at["dtype"], at["reduction"], at["threads"], at["size"])
    r = ratios(result, *key)
    parts = []
    if r["export_over_fused"] and r["eager_over_fused"]:
        parts.append(
            f"At {fmt_size(at['size'])} {at['dtype']} elements the fused node is about "
            f"{r['export_over_fused']:.0f}× faster than PyTorch's export run by onnxruntime and "
            f"{r['eager_over_fused']:.0f}× faster than PyTorch eager"
        )
    reads = {b: ratios_read(idx, b, key) for b in ("numpy-read", "torch-read")}
    if None not in reads.values():
        faster = min(reads, key=lambda b: idx[(b, *key)]["median_s"])
        mark = {b: " (the faster read here)" if b == faster else "" for b in reads}
        parts.append(
            f"it takes {reads['numpy-read']:.2f}× the time numpy needs to read both inputs once"
            f"{mark['numpy-read']} and {reads['torch-read']:.2f}× torch's read, `x.sum(); "
            f"t.sum()`{mark['torch-read']}"
        )
    targets = result["summary"]["targets"]
    halves = [
        (half, targets.get(f"{half}_per_element_vs_float32", {}).get("value"))
        for half in ("float16", "bfloat16")
    ]
    if all(v is not None for _, v in halves):
        parts.append(
            "float16 and bfloat16 cost "
            + " and ".join(f"{v:.2f}×" for _, v in halves)
            + " float32's time per element (they read half the bytes)"
        )
    text = "; ".join(parts) + "." if parts else ""
    rows = (result.get("call_overhead") or {}).get("rows", [])
    spans = []
    for row in rows:
        values = [row[k] for k in ("api_over_eager", "kl_div_over_eager") if row[k] is not None]
        if values:
            spans.append(f"{_span(values)}× at {tuple(row['shape'])}")
    if spans:
        text += (
            " The Python API as a user calls it (`KLDivLoss`, `kl_div`) costs "
            + " and ".join(spans)
            + " of torch eager's time."
        )
    fused = idx.get(("fused", *key))
    others = [
        p["peak_extra_bytes"]
        for b in ("composite", "torch-export")
        for d in result["config"]["dtypes"]
        if (p := idx.get((b, d, at["reduction"], at["threads"], at["size"])))
        and p["status"] == "ok"
        and p["peak_extra_bytes"] is not None
    ]
    if fused and fused["status"] == "ok" and fused["peak_extra_bytes"] is not None and others:
        text += (
            f" For `{at['reduction']}` the fused kernel's peak memory grows by "
            f"{fmt_mib(fused['peak_extra_bytes'])} MiB; the composite body and the torch export "
            f"take {_span([o / 2**20 for o in others], '.0f')} MiB of temporaries at "
            f"{fmt_size(at['size'])}."
        )
    failed = sorted(
        {
            p["dtype"]
            for p in result["points"]
            if p["backend"] == "torch-export" and p["status"] == "failed"
        }
    )
    if failed:
        text += f" The torch export cannot run in {', '.join(failed)} in onnxruntime at all."
    return ["Reading it: " + text.strip()[0].lower() + text.strip()[1:], ""] if text else []


def ratios_read(idx: dict, backend: str, key: tuple) -> float | None:
    """fused / one read bound at a point (None when either did not run)."""
    fused, read = idx.get(("fused", *key)), idx.get((backend, *key))
    if not fused or not read or fused["status"] != "ok" or read["status"] != "ok":
        return None
    return fused["median_s"] / read["median_s"]


def _kernel_reading(section: dict[str, Any] | None) -> list[str]:
    """What the kernel-in-cache figures say at the target size."""
    if not section:
        return []
    size = section["target_size"]
    avx3, avx2 = _over_log(section, "avx3", size), _over_log(section, "avx2", size)
    if avx3 is None:
        return []
    text = (
        f"In cache, on one thread, at {fmt_size(size)}: the AVX-512 `batchmean` loop costs "
        f"{avx3['batchmean']:.3g}× one `torch.log` of the target. `none` "
        f"({avx3['none']:.3g}×) writes an output besides reading two inputs, 3 MiB of traffic "
        "where `torch.log` has 2, and at 2**18 elements (2 MiB of inputs against a 1 MiB L2) "
        "the traffic, not the arithmetic, sets the time."
    )
    if avx2 is not None:
        text += (
            f" The AVX2 path ({_span(list(avx2.values()), '.3g')}×) is bound by arithmetic: the "
            "loss needs about 26 vector operations per 8 elements, 20 of them on the two ports "
            "that multiply, where the `torch.log` it is compared with runs AVX-512."
        )
    return [
        text,
        "",
        "The numeric core alone, without onnxruntime (`custom_ops/bench/bench_core.cc`): "
        "[Timing the core alone](native-kernel.md#timing-the-core-alone).",
        "",
    ]


def _lscpu(folder: Path) -> dict[str, str]:
    path = folder / "lscpu.txt"
    if not path.is_file():
        return {}
    pairs = (line.split(":", 1) for line in path.read_text().splitlines() if ":" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def _cache(text: str, level: str) -> str:
    """lscpu's '32 MiB (16 instances)' as '2 MiB L2 per core' ('300 MiB L3' for one)."""
    found = re.fullmatch(r"([\d.]+) (\w+) \((\d+) instances?\)", text)
    if not found:
        return f"{level} {text}"
    size, unit, count = float(found[1]), found[2], int(found[3])
    return f"{size / count:g} {unit} {level}" + (" per core" if count > 1 else "")


def _more_cores(folder: Path) -> list[str]:
    """The section of a ``scripts/thread_scaling.sh`` run: its scaling table, kernel in cache
    and (when there) ``compare``'s KL stage."""
    scaling_path = folder / "scaling.json"
    if not scaling_path.is_file():
        return []
    scaling = json.loads(scaling_path.read_text())
    m = scaling["machine"]
    cpu = _lscpu(folder)
    cfg = scaling["config"]
    dtype, reduction = cfg["dtypes"][0], cfg["reductions"][0]
    caches = ", ".join(_cache(cpu[k], k[:2]) for k in ("L2 cache", "L3 cache") if k in cpu)
    virt = cpu.get("Hypervisor vendor")
    name = f"docs/{folder.name}" if folder.parent.name == "docs" else str(folder)
    log2 = ",".join(str(s.bit_length() - 1) for s in cfg["sizes"])
    out = [
        f"## On {m['cores']} cores",
        "",
        f"`HWY_INCLUDE_DIR=… bash scripts/thread_scaling.sh OUT {log2}` builds the library from "
        "the unpacked headers on a machine where the project is not installed and runs "
        f"`{_out_dir(scaling['command'])}` and the kernel-in-cache section. Run on "
        f"{_machine(m)}"
        + (f" ({caches}" if caches else "")
        + (f"; {virt}" if virt else "")
        + (")" if caches else "")
        + f"; the results are in `{name}/`. The fused {dtype} "
        f"`{reduction}` against the faster read of both inputs at the same thread count:",
        "",
        *_scaling(scaling, dtype, reduction),
        "",
    ]
    spans = _scaling_ratios(scaling, dtype, reduction)
    text = f"The kernel takes {_span(spans)}× the read bound over these sizes and thread counts."
    kernel_path = folder / "kernel_log.json"
    if kernel_path.is_file():
        section = json.loads(kernel_path.read_text())["kernel_log"]
        size = section["target_size"]
        avx3, avx2 = _over_log(section, "avx3", size), _over_log(section, "avx2", size)
        if avx3 is not None:
            text += (
                f" In cache on one thread there, at {fmt_size(size)}: AVX-512 `batchmean` "
                f"{avx3['batchmean']:.2f}× `torch.log`, `none` {avx3['none']:.2f}×"
            )
            if avx2 is not None:
                text += f", AVX2 {_span(list(avx2.values()))}×"
            text += f" (`{name}/kernel_log.json`)."
    stage_path = folder / "compare_kl_stage.json"
    if stage_path.is_file():
        stage = json.loads(stage_path.read_text())
        small = [r["ratio"] for r in stage if r["classes"] < 100]
        large = [r["ratio"] for r in stage if r["classes"] >= 1000]
        text += (
            " `compare`'s KL stage there (`"
            + f"{name}/compare_kl_stage.json`) was measured as the `KLDivRows` op in an "
            f"onnxruntime session with its {m['cores']} threads, before the numeric core was "
            "called directly through `kldiv_onnx._core`: "
            + (
                f"{_span(large)}× the read of both output batches at 1,000 classes and more"
                if large
                else ""
            )
            + (f", {_span(small, '.2g')}× at 10" if small else "")
            + "; the present way has not run there."
        )
    return [*out, text, ""]


# --- start-up (docs/startup.json, scripts/bench_startup.py) -------------------------------------

STARTUP_COMMAND = "python scripts/bench_startup.py"
STARTUP_MEASURES = {
    "import": ("`import kldiv_onnx`", "`import onnxruntime, numpy, onnx`"),
    "import_api": ("`from kldiv_onnx import kl_div`", "the same"),
    "version": ("`kldiv-onnx --version`", '`python -c "import numpy"`'),
    "help": ("`kldiv-onnx --help`", "the same"),
    "check": ("`kldiv-onnx check MODEL`", "a script: `onnx.load`, a session, one run"),
    "run": ("`kldiv-onnx run MODEL x.npy target=t.npy`", "the same script"),
    "first_call": ("first `kl_div` call", "a bare session on the same model, created and run"),
    "first_call_after_library_check": ("the same, the native library's check left out", "the same"),
    "new_variant": ("a new variant's first `kl_div` call", "a new bare session"),
    "validate": ("`kldiv-onnx validate --input-shape 4,10`", "importing the runtimes it runs"),
}
"""What ``scripts/bench_startup.py`` times under each name: A and its yardstick B."""


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.1f} ms" if ms < 10 else f"{ms:,.0f} ms"


def _startup_machine(report: dict[str, Any]) -> str:
    m = report.get("machine") or {}
    if not m:
        return "a machine the JSON does not record"
    cpu = f"{m.get('cores', '?')}-core {m.get('cpu', 'unknown CPU')}"
    if m.get("simd"):
        cpu += f" ({m['simd']})"
    versions = ", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items())
    parts = [cpu, f"Python {m.get('python', '?')}", *([versions] if versions else [])]
    return (
        ", ".join(parts)
        + f", {report.get('date', 'date not recorded')[:10]}; load average "
        + f"{_fmt_load(m.get('load_avg'))} at the start"
    )


def _startup(path: Path, name: str) -> list[str]:
    """The start-up section from ``scripts/bench_startup.py``'s JSON (None: no file)."""
    report = json.loads(path.read_text(encoding="utf-8"))
    results, verdicts = report["results"], report.get("verdicts", {})
    out = [
        "## Start-up",
        "",
        "What a user waits for before any work: importing the package, starting the command, "
        "the first call. Each figure A is measured side by side with a yardstick B that does "
        "the same work with numpy, onnx and onnxruntime alone, in alternating rounds (whole "
        "processes timed from outside, start to exit; the first calls timed inside fresh "
        "processes, the native library registered on both sides); the ratio is the median of "
        "the rounds' ratios A / B, and its span is the smallest and the largest.",
        "",
        f"Measured with `{command_as_run(report.get('command', STARTUP_COMMAND))}` "
        f"(`{name}`) on {_startup_machine(report)}. On a shared machine the absolute times "
        "move by a factor of two from run to run; the ratios side by side are what to compare.",
        "",
        "| A | B | A, median | B, median | A / B (span) | target | |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for key, (a, b) in STARTUP_MEASURES.items():
        if key not in results:
            continue
        r, v = results[key], verdicts.get(key, {})
        target = f"<= {v['target']:g}" if "target" in v else "-"
        met = "" if "met" not in v else ("met" if v["met"] else "**missed**")
        out.append(
            f"| {a} | {b} | {_ms(r['a']['median_s'])} | {_ms(r['b']['median_s'])} | "
            f"**{r['ratio_median']:.2f}x** ({r['ratio_min']:.2f}–{r['ratio_max']:.2f}) | "
            f"{target} | {met} |"
        )
    out += [
        "",
        "MODEL is `models/kldiv_batchmean_float32.onnx`, the inputs (4, 10) float32; the first "
        "calls are `kl_div` on (2, 2) float32, `batchmean` then `sum`. validate's yardstick "
        f"imports {', '.join(report.get('validate_imports', []))} (those installed there).",
    ]
    check, once = results.get("library_check"), results.get("library_check_once")
    if check:
        out += [
            "",
            "The first call checks the native library before anything loads it (a damaged "
            "file would otherwise kill the process): a cheap look at its ELF headers in every "
            "process, then a full check (in a source tree the library loaded in a throw-away "
            "process; in an installed wheel its SHA-256 against pip's RECORD) once per file: "
            "a pass is remembered in the user's cache folder (`$XDG_CACHE_HOME/kldiv-onnx`, "
            "else `~/.cache/kldiv-onnx`) under the file's device, inode, size, mtime and "
            "ctime, so a rebuilt, reinstalled, rewritten or replaced library is checked again. "
            f"In the first calls above the check took {_ms(check['a']['median_s'])} (median)"
            + (
                f"; the first process after a build or an install, which finds no pass "
                f"remembered, pays {_ms(once['a']['median_s'])} (median of "
                f"{once['a']['repeats']}, `library_check_once`)."
                if once
                else "."
            ),
        ]
    out += ["", "### Where start-up goes", ""]
    out.append(
        "`python -X importtime`, each package's own share (the self times of its modules, "
        "nested imports of other packages left out), median of three runs:"
    )
    out.append("")
    for command, profile in report.get("importtime", {}).items():
        packages = ", ".join(
            f"{'protobuf (`google`)' if p['package'] == 'google' else p['package']} {p['own_ms']:g}"
            for p in profile["packages"]
        )
        out.append(f"- `{command}`: {profile['total_ms']:g} ms of imports: {packages} ms.")
    return [*out, "", *STARTUP_DESIGN]


STARTUP_DESIGN = [
    "How start-up is kept short:",
    "",
    "- **`import kldiv_onnx` imports its names on first use** (PEP 562 `__getattr__`): the "
    "import itself loads only the version. `kldiv_onnx.kl_div` loads numpy, onnx and "
    "onnxruntime; `fuse` and `prepare` (graph rewriting with onnxscript) load onnxscript; no "
    "public name loads PyTorch, MindSpore, Ray, OpenVINO, tract or matplotlib "
    "(`tests/test_startup.py` keeps it so).",
    "- **onnxscript (with onnx_ir and sympy) loads where a function body is first built**: the "
    "composite module is imported by `add_function` when it runs, not with `export`.",
    "- **The fused backend's session model is the node alone**: its kernel runs it, so a first "
    "`kl_div` call builds no function body and runs no onnx checker (whose first call starts "
    "onnx's schema registry); onnxruntime checks the model as it loads it.",
    "- **The command builds only the parsers of the subcommand given**: `--version` and "
    "`--help` import no subcommand group, and a subcommand imports its group only.",
    "- **ml_dtypes below 0.7** (`pyproject.toml`): onnx imports ml_dtypes, so every start-up "
    "pays for it, and 0.7.0's import registers its ufunc loops with numpy through a linear "
    "search, most of a second of CPU here (compare "
    '`python -X importtime -c "import numpy, ml_dtypes"` under each version).',
]
"""What the start-up figures rest on (no figure here: those come from the JSON)."""


# --- compare at scale (docs/compare-scale.json, scripts/bench_scale.py) -------------------------

SCALE_SOURCES = {"data.npz": ".npz", "data.parquet": "Parquet file"}
SCALE_MEMORY_TARGET = 1.25
"""The most a run's peak memory may grow from the smallest row count to the largest."""


def _scale_source(source: str) -> str:
    found = re.fullmatch(r"shards-(\d+)", source)
    return f"{found[1]} shards" if found else SCALE_SOURCES.get(source, source)


def _scale_machine(report: dict[str, Any]) -> str:
    m = report["machine"]
    described = f"{m.get('cores', '?')}-core {m.get('cpu', 'unknown CPU')}"
    if report.get("date"):
        described += f" on {report['date'][:10]}"
    if m.get("load_avg"):
        described += f", load average {_fmt_load(m['load_avg'])} at the start"
    return described


def _scale_when(run: dict[str, Any]) -> str:
    """When a run was measured: its time (UTC) and 1-minute load average."""
    return f"{run['date'][11:16]}, {run['load_avg'][0]:.1f}"


def _scale(path: Path, name: str) -> list[str]:
    """The ``compare`` at scale section from ``scripts/bench_scale.py``'s JSON."""
    report = json.loads(path.read_text(encoding="utf-8"))
    runs = report.get("runs", [])
    out = [
        "## `compare` at scale",
        "",
        "What a `compare` run costs as the data grows: each run is its own `kldiv-onnx compare` "
        "command, its whole process tree (Ray's processes included) sampled from `/proc` every "
        "0.1 s. An MLP 64-256-10 and a perturbed copy of it, float32 rows, compare's default "
        "options (batch 256); the data is one uncompressed `.npz`, one Parquet file with "
        "pyarrow's default row groups, and a folder of Parquet shards. Measured on "
        f"{_scale_machine(report)}, written to `{name}` by one run of",
        "",
        "```bash",
        *report["command"].splitlines(),
        "```",
        "",
        '"wall" is the whole command (Python start-up and imports included); "start-up" is the '
        "report's `startup_s` (local: the sessions built; Ray: `ray.init` until the first actor "
        'has built its sessions); "CPU" is the user + system time of every process of the tree; '
        '"peak" is the largest sum of the tree\'s resident sets.',
        "",
        "| rows | data | engine | wall s | compare's wall s | start-up s | rows/s (wall) "
        "| rows/s after start-up | CPU s | peak MB | measured (UTC, load) |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in runs:
        out.append(
            f"| {r['rows']:,} | {_scale_source(r['source'])} | {r['engine']} | {r['wall_s']:.1f} "
            f"| {r['compare_wall_s']:.1f} | {r['startup_s']:.1f} | {r['rows_per_s']:,.0f} "
            f"| {r['rows_per_s_after_startup']:,.0f} | {r['cpu_s']:.1f} | {r['peak_mb']:.0f} "
            f"| {_scale_when(r)} |"
        )
    by_rows: dict[int, set[float]] = {}
    for r in runs:
        by_rows.setdefault(r["rows"], set()).add(r["kl_mean"])
    same = all(len(means) == 1 for means in by_rows.values())
    out += [
        "",
        "Every run of a row count gives the same KL mean, to the bit, across engines and formats."
        if same
        else "The KL means of a row count **differ** across engines or formats: "
        + "; ".join(
            f"{rows:,} rows: {', '.join(repr(m) for m in sorted(means))}"
            for rows, means in by_rows.items()
            if len(means) > 1
        ),
        "",
    ]
    return [
        *out,
        *_scale_memory(runs),
        *_scale_speed(report, runs),
        *_scale_cpu(runs),
        *SCALE_DESIGN,
    ]


def _scale_memory(runs: list[dict[str, Any]]) -> list[str]:
    """Peak memory at the largest row count against the smallest, per data and engine."""
    if len({r["rows"] for r in runs}) < 2:
        return []
    small, large = min(r["rows"] for r in runs), max(r["rows"] for r in runs)
    peaks = {(r["source"], r["engine"], r["rows"]): r["peak_mb"] for r in runs}
    out = [
        f"Peak memory at {large:,} rows against {small:,} (target: at most "
        f"{SCALE_MEMORY_TARGET}x):",
        "",
        f"| data | engine | {small:,} rows | {large:,} rows | ratio | |",
        "|---|---|---:|---:|---:|---|",
    ]
    for source, engine, rows in peaks:
        if rows != small or (source, engine, large) not in peaks:
            continue
        a, b = peaks[source, engine, small], peaks[source, engine, large]
        met = "met" if b / a <= SCALE_MEMORY_TARGET else "**missed**"
        out.append(
            f"| {_scale_source(source)} | {engine} | {a:.0f} MB | {b:.0f} MB | {b / a:.2f}x "
            f"| {met} |"
        )
    return [*out, ""]


def _scale_speed(report: dict[str, Any], runs: list[dict[str, Any]]) -> list[str]:
    """Planning, the local engine against a bare loop, Ray against local."""
    out = []
    planning = report.get("planning")
    if planning:
        per = planning["s"] / planning["shards"] * 1000
        out += [
            f"Planning {planning['shards']:,} Parquet shards (every footer read once, batches "
            f"cut by binary search over the shards' first rows): {planning['s']:.2f} s, "
            f"{per:.2f} s per 1,000 shards (target: at most 1 s).",
            "",
        ]
    bare = report.get("bare")
    if bare:
        out += [
            "The local engine against a bare loop (the same batches through the same reader, "
            "two onnxruntime sessions with the same options, a numpy float64 KL), timed in one "
            "process, best of two each (target: at least 0.8x):",
            "",
            "| data | bare loop s | `compare` (local) s | compare's speed / bare loop's |",
            "|---|---:|---:|---:|",
            *[
                f"| {_scale_source(b['source'])} | {b['bare_s']:.1f} | {b['local_s']:.1f} "
                f"| {b['ratio']:.2f}x |"
                for b in bare
            ],
            "",
        ]
    return [*out, *_scale_ray(runs)]


RAY_TARGET_ROWS = 10**6
RAY_SPEED_TARGET = 0.5
"""Ray's rows/s against local's, at least, at :data:`RAY_TARGET_ROWS` rows."""
RAY_CPU_TARGET = 1.5
"""Ray's CPU time against local's, at most, at :data:`RAY_TARGET_ROWS` rows."""


def _scale_ray(runs: list[dict[str, Any]]) -> list[str]:
    """Ray against local per row count and data kind, whole command and after the fixed cost,
    and which target each figure meets at 10^6 rows."""
    pairs: dict[tuple[int, str], dict[str, dict[str, Any]]] = {}
    for r in runs:
        pairs.setdefault((r["rows"], r["source"]), {})[r["engine"]] = r
    ratios: dict[int, dict[str, list[float]]] = {}
    for (rows, _), engines in sorted(pairs.items()):
        if not {"local", "ray"} <= set(engines):
            continue
        local, ray = engines["local"], engines["ray"]
        got = ratios.setdefault(rows, {})
        got.setdefault("speed", []).append(ray["rows_per_s"] / local["rows_per_s"])
        got.setdefault("after", []).append(
            ray["rows_per_s_after_startup"] / local["rows_per_s_after_startup"]
        )
        got.setdefault("cpu", []).append(ray["cpu_s"] / local["cpu_s"])
        if "fixed" in ray and "fixed" in local:
            got.setdefault("speed_fixed", []).append(
                ray["rows_per_s_after_fixed"] / local["rows_per_s_after_fixed"]
            )
            got.setdefault("cpu_fixed", []).append(
                ray["cpu_after_fixed_s"] / local["cpu_after_fixed_s"]
            )
    if not ratios:
        return []

    def cell(got: dict[str, list[float]], key: str) -> str:
        return f"{_span(got[key])}x" if key in got else "-"

    out = [
        "Ray against local, over the data kinds of each row count (targets at 10^6 rows: "
        f'rows/s at least {RAY_SPEED_TARGET}x, CPU at most {RAY_CPU_TARGET}x). "after start-up" '
        'leaves out each engine\'s `startup_s`; "after the fixed cost" leaves out the wall and '
        "CPU time of the same command on one batch (`--limit 256`: Python, imports and, for Ray, "
        "its cluster, actors and sessions started and stopped), measured beside it "
        "(`bench_scale.py --fixed`):",
        "",
        "| rows | rows/s, whole command | rows/s after start-up | rows/s after the fixed cost "
        "| CPU, whole command | CPU after the fixed cost |",
        "|---:|---:|---:|---:|---:|---:|",
        *[
            f"| {rows:,} | {cell(got, 'speed')} | {cell(got, 'after')} "
            f"| {cell(got, 'speed_fixed')} | {cell(got, 'cpu')} | {cell(got, 'cpu_fixed')} |"
            for rows, got in sorted(ratios.items())
        ],
        "",
    ]
    got = ratios.get(RAY_TARGET_ROWS)
    if got:
        checks = [
            ("rows/s, whole command", "speed", lambda v: v >= RAY_SPEED_TARGET),
            ("rows/s after start-up", "after", lambda v: v >= RAY_SPEED_TARGET),
            ("rows/s after the fixed cost", "speed_fixed", lambda v: v >= RAY_SPEED_TARGET),
            ("CPU, whole command", "cpu", lambda v: v <= RAY_CPU_TARGET),
            ("CPU after the fixed cost", "cpu_fixed", lambda v: v <= RAY_CPU_TARGET),
        ]
        verdicts = [
            f"{what} {_span(got[key])}x: "
            + ("met" if all(map(ok, got[key])) else "**missed**")
            + ("" if all(map(ok, got[key])) or not any(map(ok, got[key])) else " (for some kinds)")
            for what, key, ok in checks
            if key in got
        ]
        out += [
            f"At {RAY_TARGET_ROWS:,} rows, for every data kind: " + "; ".join(verdicts) + ".",
            "",
        ]
    return out


def _scale_cpu(runs: list[dict[str, Any]]) -> list[str]:
    """Where each run's CPU went (runs that recorded it): the ``compare`` process, Ray's
    workers, Ray's own processes; and its fixed cost."""
    split = [r for r in runs if "cpu_split_s" in r]
    if not split:
        return []
    out = [
        "Where the CPU time goes (the `compare` process itself; Ray's workers, which are the "
        "actors and any idle worker Ray starts; Ray's own processes: GCS, raylet, dashboard, "
        "dashboard and runtime-env agents, autoscaler monitor, log monitor), and the fixed cost: "
        "the same command on one batch:",
        "",
        "| rows | data | engine | CPU s | `compare` | Ray's workers | Ray's own | fixed: wall s "
        "| fixed: CPU s | of it Ray's own |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in split:
        c, f = r["cpu_split_s"], r.get("fixed")
        fixed = (
            f"| {f['wall_s']:.1f} | {f['cpu_s']:.1f} | {f['cpu_split_s']['ray']:.1f} |"
            if f
            else "| - | - | - |"
        )
        out.append(
            f"| {r['rows']:,} | {_scale_source(r['source'])} | {r['engine']} | {r['cpu_s']:.1f} "
            f"| {c['compare']:.1f} | {c['workers']:.1f} | {c['ray']:.1f} {fixed}"
        )
    return [*out, ""]


SCALE_DESIGN = [
    "What a run holds in memory, and why:",
    "",
    "- **One batch per reader.** Batches are read, run and reduced one at a time. An `.npz` "
    "member stored uncompressed is read in place (`pread` of the batch's rows), a compressed "
    "one through `zipfile`, decompressed up to the slice. Parquet is read with pyarrow's "
    "`ParquetFile.iter_batches` in record batches of up to 1 MiB or 4,096 rows (or a batch, if "
    "larger), never a whole row group.",
    "- **One open shard.** Planning reads every shard's header once (Parquet metadata, `.npy` "
    "headers) into a small picklable layout and closes it; a shard is opened when first read "
    "and closed when reading moves on, so a folder of any number of shards needs one open data "
    "file at a time (`tests/test_compare_scale.py` runs 1,000 shards under a 256-file limit). "
    "Ray workers get the driver's layout and do not read the headers again.",
    "- **The per-sample KL on disk, not in memory.** Every sample's KL (float64, 8 bytes a "
    "sample, for the exact median and p90 to p99.9) is written as it comes to an unlinked "
    "temporary file in TMPDIR, not kept in the process's memory; the kernel's file cache holds "
    "it while memory allows. The statistics read it in chunks of 65,536 and make no copy: the "
    "quantiles come from their exact ranks, found 16 bits at a time, bit-identical to numpy's. "
    "A run's resident memory therefore does not grow with its sample count.",
    "- **Ray** adds its own processes whatever the row count: the GCS, the raylet, the log "
    "monitor, the autoscaler monitor, the dashboard's API server (started even without the "
    "dashboard), the dashboard and runtime-env agents, and one actor per CPU, each with its own "
    "sessions and one intra-op thread. Each task is a run of up to 256 consecutive batches, "
    "handed to an actor as it finishes one; the actor reads only the row groups under those "
    "rows and sends back only each sample's KL and top-1 agreement (9 bytes a sample).",
    "- **Progress** off a terminal (a CI log, a file) is a plain line on stderr every 5 s "
    "(`KLDIV_ONNX_PROGRESS_SECONDS`), rows, rows/s and ETA counted from the moment the sessions "
    "are built; a Ray run prints none of Ray's own log lines unless `--verbose`.",
]
"""How ``compare`` bounds its memory and files (no figure here: those come from the JSON)."""


def render(
    result: dict[str, Any],
    json_name: str,
    plot_name: str | None,
    more_cores: Path | None = None,
    startup: Path | None = None,
    scale: Path | None = None,
) -> str:
    """The page of ``result`` (read from ``json_name``): the run's machine and command, every
    table, the targets, the reading of the figures, the plot (``plot_name``, relative to the
    page; None: none), the run on more cores (a folder; no section where it has no
    ``scaling.json``), then start-up and ``compare`` at scale from their JSON files (no section
    where the file is not there)."""
    m = result["machine"]
    sources = [f"`{json_name}`"]
    sections = []
    for path, title, anchor in (
        (startup, "Start-up", "start-up"),
        (scale, "`compare` at scale", "compare-at-scale"),
    ):
        if path is not None and path.is_file():
            sources.append(f"`{_shown(path)}`")
            sections.append(f"[{title}](#{anchor})")
    named = ", ".join(sources[:-1]) + " and " + sources[-1] if sections else sources[0]
    out = [
        "# Performance",
        "",
        f"Generated by `{REGENERATE}` from {named}; do "
        "not edit by hand: measure again and rerun it."
        + (
            f" The kernel and call figures come first; {' and '.join(sections)} follow, "
            "each from its own run, command and machine."
            if sections
            else ""
        ),
        "",
        f"Measured with `{command_as_run(result.get('command', 'kldiv-onnx bench'))}` "
        f"({result['duration_s']:.0f} s) on {_machine(m)}. Median of repeated calls after "
        "warm-up, inputs already in place (onnxruntime through an IOBinding over the numpy "
        "buffers), output allocated by the call. Peak extra memory: the call's peak resident-set "
        "growth (`VmHWM` after a `clear_refs` reset), onnxruntime with its CPU arena off. "
        f"Load average {_fmt_load(m.get('loadavg'))} at the start, "
        f"{_fmt_load(m.get('loadavg_end'))} at the end: on a shared machine the load moves these "
        "figures from run to run, the memory-bound ratios most.",
        "",
    ]
    if result["points"]:
        at = result["summary"]["at"]
        out += [*_target_point(result), "", *_across_sizes(result), ""]
        scaling = _scaling(result, at["dtype"], at["reduction"])
        if scaling:
            out += [
                f"Thread scaling ({at['dtype']}, `{at['reduction']}`; the read bound is the "
                "faster of numpy's and torch's read of both inputs at the same thread count):",
                "",
                *scaling,
                "",
            ]
    if result.get("call_overhead"):
        out += [*_overhead(result), ""]
    if result.get("kernel_log"):
        out += [*_kernel_log(result["kernel_log"]), ""]
    out += [
        "Against the targets:",
        "",
        "| target | measured | goal | |",
        "|---|---:|---|---|",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in target_rows(result)],
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
    out += [f"- {backend} {dtype} fails: {error}" for backend, dtype, error in errors]
    out.append("")
    if result.get("compare"):
        out += [*_compare(result["compare"]), *_compare_reading(result), ""]
    if result["points"]:
        most, one = max(result["config"]["threads"]), min(result["config"]["threads"])
        out += [
            "Every size, dtype, reduction and thread count of that run is in the JSON"
            + (
                f"; the plot shows input throughput against size, per backend and dtype "
                f"(solid: {most} threads, dashed: {one}):"
                if plot_name
                else "."
            ),
            "",
        ]
        if plot_name:
            out += [f"![input throughput against size]({plot_name})", ""]
        out += _reading(result)
    out += _kernel_reading(result.get("kernel_log"))
    if more_cores is not None:
        out += _more_cores(more_cores)
    for path, section in ((startup, _startup), (scale, _scale)):
        if path is not None and path.is_file():
            out += [*([""] if out[-1] else []), *section(path, _shown(path)), ""]
    return "\n".join(out).rstrip("\n") + "\n"


def _shown(path: Path) -> str:
    """``path`` as the page names it: relative to the repository when inside it."""
    resolved = path.resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(path)


def main(argv: list[str] | None = None) -> int:
    """Read the JSON, write the page (and the plot); one line on stderr and exit 2 on a bad
    path or file."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", default=str(ROOT / "docs" / "bench.json"))
    p.add_argument("--more-cores", default=str(ROOT / "docs" / "bench-16core"))
    p.add_argument("--out", default=str(ROOT / "docs" / "performance.md"))
    p.add_argument("--plot", default=str(ROOT / "docs" / "bench.png"))
    p.add_argument("--no-plot", action="store_true", help="link the plot that is there")
    p.add_argument("--startup", default=str(ROOT / "docs" / "startup.json"))
    p.add_argument("--scale", default=str(ROOT / "docs" / "compare-scale.json"))
    args = p.parse_args(argv)
    try:
        out = check_output_path(args.out, "--out")  # before drawing: a bad path costs nothing
        if not args.no_plot:
            check_output_path(args.plot, "--plot")
        if out.resolve() == Path(args.plot).resolve():
            raise ValueError(f"--out and --plot name the same file {args.out!r}")
        result = json.loads(Path(args.json).read_text(encoding="utf-8"))
        plot_name = os.path.relpath(Path(args.plot).resolve(), out.resolve().parent)
        json_name = _shown(Path(args.json))
        if not args.no_plot:
            from kldiv_onnx.bench.plot import plot  # matplotlib: imported where used

            with atomic_write(args.plot, "--plot") as tmp:
                plot(result, tmp, format="png")
        elif not Path(args.plot).is_file():
            plot_name = None
        text = render(
            result,
            json_name,
            plot_name,
            Path(args.more_cores),
            Path(args.startup),
            Path(args.scale),
        )
        write_bytes(out, text.encode("utf-8"), "--out")
    except (OSError, ValueError, KeyError, ImportError) as exc:
        line = (str(exc).splitlines() or [type(exc).__name__])[0]
        print(f"performance.py: error: {line}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}" + ("" if args.no_plot else f" and {args.plot}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
