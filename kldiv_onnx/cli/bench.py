"""Subcommand ``bench``: its arguments and the command itself."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from .. import native
from ..bench.config import BACKENDS, Config, quick_config
from ..bench.measure import run_benchmark
from ..bench.report import format_table, markdown, plot
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
    try:
        cfg.validate()
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    for target in (args.json, args.plot, args.markdown):
        if target and not Path(target).resolve().parent.is_dir():
            raise UsageError(f"no folder for {target}")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError as exc:
            raise UsageError(f"--plot needs matplotlib ({exc})") from exc

    result = run_benchmark(cfg, progress=not args.no_progress)
    command = _command_line(args)
    result["command"] = command
    print(format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.json}: {len(result['points'])} points")
    if args.plot:
        plot(result, args.plot)
        print(f"wrote {args.plot}")
    if args.markdown:
        Path(args.markdown).write_text(markdown(result, command), encoding="utf-8")
        print(f"wrote {args.markdown}")
    return 0


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
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", metavar="FILE", help="write every point and the machine as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="write the throughput plot (matplotlib)")
    p.add_argument("--markdown", metavar="FILE.md", help="write a README Performance section")
    p.set_defaults(func=_cmd_bench)


def _command_line(args: argparse.Namespace) -> str:
    """The options given, spelled back (for the JSON and the README snippet)."""
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
    for name in ("no_memory", "no_progress"):
        if getattr(args, name):
            words.append(f"--{name.replace('_', '-')}")
    for name in ("json", "plot", "markdown"):
        value = getattr(args, name)
        if value:
            words += [f"--{name}", str(value)]
    return " ".join(words)
