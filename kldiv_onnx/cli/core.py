"""Subcommands ``export``, ``run``, ``demo`` and ``doctor``."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from .. import runtime
from .._contract import DEFAULT_OPSET, DTYPES, REDUCTIONS
from ..data_files import CASTS, check_memory, read_feeds, session_inputs
from ..demo import demo
from ..doctor import report
from ..errors import ort_message
from ..export import FORMS, build_model
from ..model_io import atomic_write, check_output_path
from .common import UsageError, add_cast_option, positive_int, read_paths, shape, write_model


def _cmd_export(args: argparse.Namespace) -> int:
    try:
        model = build_model(
            args.reduction,
            args.log_target,
            args.dtype,
            args.input_shape,
            args.target_shape,
            form=args.form,
            opset=args.opset,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    write_model(model, args.output)
    node = model.graph.node
    what = (
        node[0].domain + "." + node[0].op_type if args.form == "function" else f"{len(node)} nodes"
    )
    print(f"wrote {args.output}: {what}, opset {args.opset}, ir {model.ir_version}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    output = None
    if args.output:
        output = args.output if args.output.endswith(".npz") else args.output + ".npz"
        try:  # numpy's way: '.npz' appended; a device such as /dev/full is refused as given
            reads = read_paths(args.model, *args.inputs)
            check_output_path(args.output, inputs=reads)
            check_output_path(output, inputs=reads)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
    try:
        sess = runtime.session(
            args.model, threads=args.threads, fused=False if args.composite else None
        )
    except (OSError, ValueError, TypeError) as exc:  # each names the path
        raise UsageError(str(exc)) from exc
    except Exception as exc:  # onnxruntime's own errors: invalid model files
        raise UsageError(f"cannot load {args.model}: {ort_message(exc)}") from exc
    try:
        feeds = read_feeds(args.inputs, session_inputs(sess), args.cast)
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from exc
    try:
        outputs = runtime.run(sess, feeds)
    except Exception as exc:  # what onnxruntime checks at run time (e.g. broadcasting)
        raise UsageError(f"cannot run {args.model}: {ort_message(exc)}") from exc
    out_names = [o.name for o in sess.get_outputs()]
    if output:
        try:
            with atomic_write(output, "output") as tmp, open(tmp, "wb") as f:
                np.savez(f, **dict(zip(out_names, outputs, strict=True)))
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        print(f"wrote {output}: {', '.join(out_names)}")
    else:
        for name, value in zip(out_names, outputs, strict=True):
            print(f"{name} {value.dtype} {list(value.shape)}:\n{value!s}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    try:  # the random case is made in float64: two arrays of --size elements at least
        check_memory(16 * args.size, f"--size {args.size} (in float64)")
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return demo(size=args.size, seed=args.seed)


def _cmd_doctor(args: argparse.Namespace) -> int:
    print(report())
    return 0


def register(sub: Any) -> None:
    """Add ``export``, ``run``, ``demo`` and ``doctor``."""
    p = sub.add_parser("export", help="write a KLDivLoss model")
    p.add_argument("output", help="path of the .onnx file to write")
    p.add_argument(
        "--reduction", choices=REDUCTIONS, default="mean", help="how the loss is reduced"
    )
    p.add_argument("--log-target", action="store_true", help="the target is log-probabilities")
    p.add_argument(
        "--dtype", choices=tuple(DTYPES), default="float32", help="dtype of inputs and output"
    )
    p.add_argument(
        "--input-shape",
        type=shape,
        default=None,
        help="comma-separated dims: ints, names or ?; default batch,classes",
    )
    p.add_argument("--target-shape", type=shape, default=None, help="default: the input's")
    p.add_argument(
        "--form",
        choices=FORMS,
        default="function",
        help="function: one kldiv_onnx node with its body as a model-local function; "
        "inline: the body's standard ops only",
    )
    p.add_argument(
        "--opset",
        type=int,
        default=DEFAULT_OPSET,
        help=f"ai.onnx opset to import (default {DEFAULT_OPSET}, the highest CANN takes)",
    )
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("run", help="run a model on .npy/.npz/Parquet inputs")
    p.add_argument("model", help="the .onnx file (external data is read beside it)")
    p.add_argument(
        "inputs",
        nargs="+",
        help="file.npz (keys: input names), a Parquet file (columns: input names), file.npy "
        "(in input order) or NAME=file.npy; 2-byte void arrays (numpy's way of saving "
        "bfloat16) are read as bfloat16 where the input is bfloat16",
    )
    add_cast_option(p, CASTS)
    p.add_argument(
        "--output",
        metavar="FILE",
        help="save the outputs to FILE (.npz appended if missing) instead of printing",
    )
    p.add_argument(
        "--threads", type=positive_int, default=None, help="intra-op threads (default: cores)"
    )
    p.add_argument("--composite", action="store_true", help="never use the native kernel")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("demo", help="the seed example and a random case through every backend")
    p.add_argument(
        "--size",
        type=positive_int,
        default=1000 * 1000,
        help="elements of the random case: rows of 1000 or 1024 classes where they divide it, "
        "else one row (default 1000000)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("doctor", help="versions, providers, native library")
    p.set_defaults(func=_cmd_doctor)
