"""Subcommands ``inline`` and ``prepare``: a model file made ready for one runtime."""

from __future__ import annotations

import argparse
from typing import Any

from ..export import opset_of
from ..portable import inline
from ..prepare import TARGETS, prepare
from .common import UsageError, read_model, write_model


def _cmd_inline(args: argparse.Namespace) -> int:
    model = read_model(args.input)
    try:
        out = inline(model)
    except ValueError as exc:
        raise UsageError(f"cannot inline {args.input}: {exc}") from exc
    write_model(out, args.output, (args.input,))
    print(
        f"wrote {args.output}: {len(out.graph.node)} nodes, standard ops only "
        f"(opset {opset_of(out)})"
    )
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    model = read_model(args.input)
    try:
        prepared = prepare(model, args.target)
    except ValueError as exc:
        raise UsageError(f"cannot prepare {args.input} for {args.target}: {exc}") from exc
    write_model(prepared.model, args.output, (args.input,))
    print(f"wrote {args.output}: {prepared.summary()}")
    if prepared.placement is not None:
        print(prepared.placement.format())  # type: ignore[attr-defined]
    return 0 if prepared.ok else 1


def register(sub: Any) -> None:
    """Add ``inline`` and ``prepare``."""
    p = sub.add_parser(
        "inline",
        help="inline every model-local function: standard ONNX ops only (runtimes without "
        "extensions, such as tract)",
    )
    p.add_argument("input", help="the .onnx file to read (left unchanged)")
    p.add_argument("output", help="the .onnx file to write")
    p.set_defaults(func=_cmd_inline)

    p = sub.add_parser(
        "prepare",
        help="make a model ready for a runtime: fuse torch's KL subgraphs; for cann also lower "
        "the opset to 15 and check placement (exit 1 if a node would leave the NPU)",
    )
    p.add_argument("input", help="the .onnx file to read (left unchanged)")
    p.add_argument("output", help="the .onnx file to write")
    p.add_argument(
        "--target",
        choices=TARGETS,
        required=True,
        help="cann: opset 15 and the placement check; onnxruntime, openvino: function form "
        "(native kernel, OpenVINO registration); portable: standard ops only",
    )
    p.set_defaults(func=_cmd_prepare)
