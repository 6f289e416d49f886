"""The ``kldiv-onnx`` command: the parser of every subcommand and :func:`main`.

Bad arguments and unreadable or unwritable files give one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import onnxruntime as ort

from .._version import __version__
from . import bench, cann, compare, core, interop, runtimes
from .common import Parser, UsageError

DESCRIPTION = (
    "MindSpore's KLDivLoss for ONNX: export it, run it (native fused kernel or its ONNX "
    "function body), embed it in models, validate runtimes against a float64 reference."
)
SUBCOMMANDS = (core, interop, runtimes, cann, bench, compare)
"""Modules adding subcommands through ``register(subparsers)``, in help order."""


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``kldiv-onnx`` and all its subcommands."""
    parser = Parser(prog="kldiv-onnx", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"kldiv-onnx {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in SUBCOMMANDS:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``kldiv-onnx`` with ``argv`` (default: the process's); return the exit code."""
    # onnxruntime logs a failing node to stderr before raising; the command reports the error
    # itself, in one line
    ort.set_default_logger_severity(4)
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except (UsageError, FileNotFoundError) as exc:
        print(f"kldiv-onnx: error: {exc}", file=sys.stderr)
        return 2
