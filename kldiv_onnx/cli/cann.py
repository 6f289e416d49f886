"""Subcommand ``check``: predict which nodes would leave the NPU."""

from __future__ import annotations

import argparse
from typing import Any

from ..cann import MODES, check_placement
from .common import UsageError


def _cmd_check(args: argparse.Namespace) -> int:
    try:
        report = check_placement(args.model, args.cann_mode)
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(f"cannot check {args.model}: {exc}") from exc
    print(report.format())
    return 0 if report.ok else 1


def register(sub: Any) -> None:
    """Add ``check``: predict placement (exit 1 if a node leaves the NPU, 0 if none)."""
    p = sub.add_parser(
        "check", help="predict placement under an execution provider (exit 1 if a node leaves)"
    )
    p.add_argument("model", help="the .onnx file")
    p.add_argument(
        "--provider", choices=("cann",), default="cann", help="the execution provider to check"
    )
    p.add_argument(
        "--cann-mode",
        choices=MODES,
        default="graph",
        help="graph: enable_cann_graph=1 (default); op: single-operator kernels",
    )
    p.set_defaults(func=_cmd_check)
