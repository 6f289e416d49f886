"""The ``kldiv-onnx`` command: the parser of every subcommand and :func:`main`.

Bad arguments and unreadable or unwritable files give one line on stderr and exit code 2; Ctrl-C
exits 130 and a closed output pipe ends the command quietly, neither with a traceback."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

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
    """Run ``kldiv-onnx`` with ``argv`` (default: the process's); return the exit code: 2 for a
    usage error (one line on stderr), 130 for Ctrl-C, 141 when the reader of the output went
    away (``kldiv-onnx ... | head -1``), quietly."""
    # onnxruntime logs a failing node to stderr before raising; the command reports the error
    # itself, in one line
    ort.set_default_logger_severity(4)
    try:
        try:
            args = build_parser().parse_args(argv)
            with warnings.catch_warnings():
                warnings.showwarning = _warning_line
                code = args.func(args)
        except (UsageError, FileNotFoundError) as exc:
            sys.stdout.flush()
            print(f"kldiv-onnx: error: {exc}", file=sys.stderr)
            code = 2
        sys.stdout.flush()  # a reader that went away shows here, not in Python's exit
        return code
    except KeyboardInterrupt:
        print("kldiv-onnx: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _drop_stdout()
        return 141


def _warning_line(message: Warning | str, *_: Any, **__: Any) -> None:
    """A warning as one line on stderr (Python's shows the file, line and source too)."""
    print(f"kldiv-onnx: warning: {message}", file=sys.stderr)


def _drop_stdout() -> None:
    """Point stdout at the null device, so that the flush at exit does not fail again on the
    closed pipe (Python's documented way, in the ``signal`` module's notes on SIGPIPE)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # a stream with no file (a test's capture)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)
