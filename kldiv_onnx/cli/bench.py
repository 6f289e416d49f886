"""Subcommand ``bench``: its arguments and the command itself."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from typing import Any

from .. import native
from ..bench.compare import compare_bench, format_bench
from ..bench.config import BACKENDS, Config, quick_config
from ..bench.measure import run_benchmark
from ..bench.plot import plot
from ..bench.report import format_table
from ..comparison import ENGINES
from ..model_io import atomic_write, check_output_path, write_bytes
from .common import UsageError


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from exc


def _log2_sizes(text: str) -> tuple[int, ...]:
    """'10,16,24' or '10:26:2' (inclusive, step) → sizes 2**k."""
    try:
        if ":" in text:
            parts = [int(p) for p in text.split(":")]
            lo, hi, step = [*parts, 1] if len(parts) == 2 else parts
            exps = list(range(lo, hi + 1, step))
        else:
            exps = [int(p) for p in text.split(",") if p.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected '10,16,24' or '10:26:2', got {text!r}") from exc
    if not exps or any(not 0 <= e <= 40 for e in exps):
        raise argparse.ArgumentTypeError(f"log2 sizes must lie in [0, 40], got {text!r}")
    return tuple(1 << e for e in exps)


def _str_list(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def _engines(text: str) -> tuple[str, ...]:
    engines = _str_list(text)
    unknown = [e for e in engines if e not in ENGINES]
    if not engines or unknown:
        raise argparse.ArgumentTypeError(
            f"engines must be among {', '.join(ENGINES)}, got {text!r}"
        )
    return engines


def _cmd_bench(args: argparse.Namespace) -> int:
    cfg = quick_config() if args.quick else Config()
    for name in ("sizes", "dtypes", "reductions", "threads", "backends"):
        value = getattr(args, name)
        if value is not None:
            setattr(cfg, name, value)
    for name in ("min_repeats", "budget_s"):
        value = getattr(args, name)
        if value is not None:
            setattr(cfg, name, value)
    cfg.max_repeats = max(cfg.max_repeats, cfg.min_repeats)
    if args.no_memory:
        cfg.memory = False
    if args.no_overhead:
        cfg.overhead = False
    if args.no_kernel_log:
        cfg.kernel_log = False
    if args.kernel_log_only:
        if args.no_kernel_log:
            raise UsageError("--kernel-log-only and --no-kernel-log exclude each other")
        cfg.points = cfg.overhead = False
    try:
        cfg.validate()
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    _check_outputs(args)  # before measuring: a bad path must not cost a whole run
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError as exc:
            raise UsageError(f"--plot needs matplotlib ({exc})") from exc

    if args.compare and "ray" in args.compare:
        try:
            import ray  # noqa: F401
        except ImportError as exc:
            raise UsageError("--compare ray needs Ray: pip install 'kldiv-onnx[ray]'") from exc

    result = run_benchmark(cfg, progress=not args.no_progress)
    result["command"] = _command_line(args)
    print(format_table(result))
    if args.compare:
        sizes = {"classes": (10, 1000), "rows": 2000, "repeats": 5} if args.quick else {}
        result["compare"] = compare_bench(engines=args.compare, **sizes)
        print(format_bench(result["compare"]))
    writes: list[tuple[str, str, Callable[[str], None], str]] = []
    if args.json:
        data = (json.dumps(result, indent=1) + "\n").encode("utf-8")
        writes.append(("--json", args.json, lambda p: write_bytes(p, data, "--json"), "points"))
    if args.plot:
        writes.append(("--plot", args.plot, lambda p: _write_plot(result, p), ""))
    failed: list[str] = []
    for option, path, write, what in writes:  # every one is tried: one failure loses no other
        try:
            write(path)
        except (OSError, ValueError) as exc:
            failed.append(str(exc) if isinstance(exc, ValueError) else f"{option} {path}: {exc}")
            continue
        print(f"wrote {path}" + (f": {len(result['points'])} points" if what else ""))
    if failed:
        raise UsageError("; ".join(line.splitlines()[0] for line in failed))
    return 0


def _check_outputs(args: argparse.Namespace) -> None:
    """Every output path can be written (a regular file or none yet, in a writable folder),
    and no two are the same file; :class:`UsageError` naming the first that cannot."""
    seen: dict[str, str] = {}
    for option in ("json", "plot"):
        path = getattr(args, option)
        if not path:
            continue
        try:
            resolved = str(check_output_path(path, f"--{option}").resolve())
        except (OSError, ValueError) as exc:
            raise UsageError(str(exc)) from exc
        if resolved in seen:
            raise UsageError(f"--{option} and --{seen[resolved]} name the same file {path!r}")
        seen[resolved] = option


def _write_plot(result: dict[str, Any], path: str) -> None:
    """The plot, through a temporary file renamed into place (PNG whatever the suffix)."""
    with atomic_write(path, "--plot") as tmp:
        plot(result, tmp, format="png")


def register(subparsers: Any) -> None:
    """Add ``kldiv-onnx bench``."""
    p = subparsers.add_parser("bench", help="every backend side by side: time, throughput, memory")
    p.add_argument("--quick", action="store_true", help="the small CI set (seconds)")
    p.add_argument(
        "--log2-sizes",
        dest="sizes",
        type=_log2_sizes,
        default=None,
        help="sizes as powers of two: '10,16,24' or '10:26:2' (default 10:26:2; quick 10,14)",
    )
    p.add_argument("--dtypes", type=_str_list, default=None, help="default: all three")
    p.add_argument("--reductions", type=_str_list, default=None, help="default: none,batchmean")
    p.add_argument("--threads", type=_int_list, default=None, help="intra-op threads; default 1,2")
    p.add_argument(
        "--backends", type=_str_list, default=None, help=f"default: {','.join(BACKENDS)}"
    )
    p.add_argument("--min-repeats", type=int, default=None, help="timed calls per point, at least")
    p.add_argument(
        "--budget-s", type=float, default=None, help="timed seconds per point beyond the minimum"
    )
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument(
        "--no-overhead",
        action="store_true",
        help="skip the call-overhead section (API vs torch eager at (2, 2) and (64, 1000))",
    )
    p.add_argument(
        "--no-kernel-log",
        action="store_true",
        help="skip the kernel-in-cache section (fused float32 vs torch.log, 1 thread, per SIMD "
        "target)",
    )
    p.add_argument(
        "--kernel-log-only",
        action="store_true",
        help="measure only the kernel-in-cache section (fused vs torch.log at 2**14..2**18)",
    )
    p.add_argument(
        "--compare",
        type=_engines,
        metavar="ENGINES",
        default=None,
        help="also measure kldiv-onnx compare with these engines (local,ray): its KL stage "
        "against reading both models' output batches once, and samples/s end to end",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument(
        "--json",
        metavar="FILE",
        help="write every point and the machine as JSON (scripts/performance.py turns it into "
        "docs/performance.md)",
    )
    p.add_argument("--plot", metavar="FILE.png", help="write the throughput plot (matplotlib)")
    p.set_defaults(func=_cmd_bench)


def _command_line(args: argparse.Namespace) -> str:
    """The options given, spelled back (for the JSON)."""
    words = ["kldiv-onnx", "bench"]
    env = native.ENV_VAR
    if os.environ.get(env):  # where the library came from is part of how the figures were made
        words.insert(0, f"{env}={os.environ[env]}")
    if args.quick:
        words.append("--quick")
    if args.sizes is not None:
        words += ["--log2-sizes", ",".join(str(s.bit_length() - 1) for s in args.sizes)]
    for name in ("dtypes", "reductions", "threads", "backends"):
        value = getattr(args, name)
        if value is not None:
            words += [f"--{name}", ",".join(str(v) for v in value)]
    for name in ("min_repeats", "budget_s"):
        value = getattr(args, name)
        if value is not None:
            words += [f"--{name.replace('_', '-')}", str(value)]
    if args.compare:
        words += ["--compare", ",".join(args.compare)]
    for name in ("no_memory", "no_overhead", "no_kernel_log", "kernel_log_only", "no_progress"):
        if getattr(args, name):
            words.append(f"--{name.replace('_', '-')}")
    for name in ("json", "plot"):
        value = getattr(args, name)
        if value:
            words += [f"--{name}", str(value)]
    return " ".join(words)
