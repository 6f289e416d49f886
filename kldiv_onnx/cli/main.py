"""The ``kldiv-onnx`` command: the parser of every subcommand and :func:`main`.

Bad arguments and unreadable or unwritable files give one line on stderr and exit code 2; Ctrl-C
exits 130 and a closed output pipe ends the command quietly, neither with a traceback.

Starting the command costs what Python's own start costs: this module imports nothing heavy.
Each group of subcommands (a module beside this one) imports the library it runs, so only the
group of the subcommand given is imported and registers its parsers; the others appear in
``--help`` through :data:`COMMANDS` alone, and ``--version`` needs none of them.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from .._version import __version__
from .common import Parser, UsageError

DESCRIPTION = (
    "MindSpore's KLDivLoss for ONNX: export it, run it (native fused kernel or its ONNX "
    "function body), embed it in models, validate runtimes against a float64 reference."
)
GROUPS = ("core", "interop", "runtimes", "cann", "bench", "compare")
"""Modules adding subcommands through ``register(subparsers)``, in help order."""
COMMANDS: dict[str, tuple[str, str]] = {
    "export": ("core", "write a KLDivLoss model"),
    "run": ("core", "run a model on .npy/.npz/Parquet inputs"),
    "demo": ("core", "the seed example and a random case through every backend"),
    "doctor": ("core", "versions, providers, native library"),
    "embed": ("interop", "add a KLDivLoss output to a model"),
    "distill": ("interop", "merge student and teacher with the distillation loss"),
    "fuse": ("interop", "replace PyTorch's exported kl_div subgraphs with KLDivLoss"),
    "validate": ("interop", "compare every runtime against the float64 reference"),
    "inline": (
        "runtimes",
        "inline every model-local function: standard ONNX ops only (runtimes without "
        "extensions, such as tract)",
    ),
    "prepare": (
        "runtimes",
        "make a model ready for a runtime: fuse torch's KL subgraphs; for cann also lower the "
        "opset to 15 and check placement (exit 1 if a node would leave the NPU)",
    ),
    "check": ("cann", "predict placement under an execution provider (exit 1 if a node leaves)"),
    "bench": ("bench", "every backend side by side: time, throughput, memory"),
    "compare": ("compare", "KL divergence between two models' outputs over a data set"),
}
"""Each subcommand → (its group, its line in ``--help``), in the order its group registers
them; ``tests/test_startup.py`` checks this table against the groups' own parsers."""


def _group(name: str) -> ModuleType:
    """The subcommand module ``name`` of :data:`GROUPS`, imported now (with the library it
    runs)."""
    if name == "core":
        from . import core as module
    elif name == "interop":
        from . import interop as module
    elif name == "runtimes":
        from . import runtimes as module
    elif name == "cann":
        from . import cann as module
    elif name == "bench":
        from . import bench as module
    elif name == "compare":
        from . import compare as module
    else:
        raise ValueError(f"no subcommand group {name!r}")
    return module


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``kldiv-onnx``: every subcommand's own parser (``command=None``), or
    only those of ``command``'s group, the others as their help line (a name that is not a
    subcommand imports no group)."""
    wanted = set(GROUPS) if command is None else {COMMANDS.get(command, ("", ""))[0]}
    parser = Parser(prog="kldiv-onnx", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"kldiv-onnx {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for group in GROUPS:
        if group in wanted:
            _group(group).register(sub)
        else:
            for name, (owner, help) in COMMANDS.items():
                if owner == group:
                    sub.add_parser(name, help=help)
    return parser


def _command(argv: Sequence[str]) -> str:
    """The subcommand ``argv`` names: its first word that is not an option (before it, only
    ``--help`` and ``--version`` are options of ``kldiv-onnx`` itself); '' for none."""
    return next((a for a in argv if not a.startswith("-")), "")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``kldiv-onnx`` with ``argv`` (default: the process's); return the exit code: 2 for a
    usage error (one line on stderr), 130 for Ctrl-C, 141 when the reader of the output went
    away (``kldiv-onnx ... | head -1``), quietly."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        try:
            args = build_parser(_command(argv)).parse_args(argv)
            # onnxruntime logs a failing node to stderr before raising; the command reports the
            # error itself, in one line (the groups import onnxruntime: nothing more to load)
            import onnxruntime

            onnxruntime.set_default_logger_severity(4)
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
