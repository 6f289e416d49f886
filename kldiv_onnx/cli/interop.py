"""Subcommands ``embed``, ``distill``, ``fuse`` and ``validate``."""

from __future__ import annotations

import argparse
from typing import Any

from .._contract import DTYPES, REDUCTIONS
from ..data_files import CASTS, declared_inputs, read_feeds
from ..export import FORMS
from ..interop.distill import distill
from ..interop.embed import embed
from ..interop.fuse import fuse
from ..interop.validate import check_shape_memory, validate_model, validate_op, write_json
from ..model_io import check_output_path
from .common import (
    UsageError,
    add_cast_option,
    int_shape,
    non_negative_float,
    read_model,
    read_paths,
    write_model,
)


def _cmd_embed(args: argparse.Namespace) -> int:
    model = read_model(args.model)
    try:
        out = embed(
            model,
            args.input,
            target=args.target,
            reduction=args.reduction,
            log_target=args.log_target,
            log_softmax=args.log_softmax,
            output_name=args.output_name,
            form=args.form,
        )
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from exc
    write_model(out, args.output, (args.model,))
    added = [i.name for i in out.graph.input if i.name not in {j.name for j in model.graph.input}]
    print(
        f"wrote {args.output}: output {args.output_name!r} = KLDivLoss({args.reduction}) of "
        f"{args.input!r}" + (f", new input {added[0]!r}" if added else f", target {args.target!r}")
    )
    return 0


def _cmd_distill(args: argparse.Namespace) -> int:
    student, teacher = read_model(args.student, "student"), read_model(args.teacher, "teacher")
    try:
        out = distill(
            student,
            teacher,
            student_output=args.student_output,
            teacher_output=args.teacher_output,
            temperature=args.temperature,
            reduction=args.reduction,
        )
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from exc
    write_model(out, args.output, (args.student, args.teacher))
    outputs = ", ".join(o.name for o in out.graph.output)
    print(f"wrote {args.output}: outputs {outputs}; T={args.temperature}, {args.reduction}")
    return 0


def _cmd_fuse(args: argparse.Namespace) -> int:
    model = read_model(args.model)
    try:
        result = fuse(model)
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from exc
    write_model(result.model, args.output, (args.model,))
    before, after = len(model.graph.node), len(result.model.graph.node)
    if result.count == 0:
        print(f"wrote {args.output}: nothing to fuse, model unchanged ({before} nodes)")
    else:
        ops = ", ".join(f"{name} x{n}" for name, n in sorted(result.ops.items()))
        print(
            f"wrote {args.output}: fused {result.count} KL-divergence subgraph(s) into {ops}; "
            f"nodes {before} -> {after}"
        )
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    try:
        if args.cast != "no" and not args.inputs:
            raise UsageError("--cast needs --inputs (generated inputs have the model's dtypes)")
        if args.json:
            reads = read_paths(args.model, *(args.inputs or []))
            check_output_path(args.json, "JSON file", inputs=reads)
        if args.model:
            model = read_model(args.model)
            inputs = (
                read_feeds(args.inputs, declared_inputs(model), args.cast) if args.inputs else None
            )
            report = validate_model(model, inputs, seed=args.seed, rtol=args.rtol)
        else:
            if args.inputs:
                raise UsageError("--inputs needs a model file")
            check_shape_memory(args.input_shape, "--input-shape")
            if args.target_shape is not None:
                check_shape_memory(args.target_shape, "--target-shape")
            report = validate_op(
                args.reduction,
                args.log_target,
                args.dtype,
                args.input_shape,
                args.target_shape,
                seed=args.seed,
                rtol=args.rtol,
            )
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from exc
    print(report.table())
    if args.json:
        try:
            write_json(report, args.json)
        except (OSError, ValueError) as exc:
            raise UsageError(str(exc)) from exc
    return 0 if report.ok else 1


def register(sub: Any) -> None:
    """Add ``embed``, ``distill``, ``fuse`` and ``validate``."""
    p = sub.add_parser("embed", help="add a KLDivLoss output to a model")
    p.add_argument("model", help="the .onnx file to extend (left untouched)")
    p.add_argument("output", help="the .onnx file to write (may be the model itself)")
    p.add_argument("--input", required=True, help="value holding log-probabilities (or logits)")
    p.add_argument("--target", default=None, help="existing value; default: a new graph input")
    p.add_argument(
        "--reduction", choices=REDUCTIONS, default="batchmean", help="how the loss is reduced"
    )
    p.add_argument("--log-target", action="store_true", help="the target is log-probabilities")
    p.add_argument("--log-softmax", action="store_true", help="--input holds logits")
    p.add_argument("--output-name", default="kldiv_loss", help="name of the new output")
    p.add_argument(
        "--form",
        choices=FORMS,
        default="function",
        help="function: a kldiv_onnx node and its body; inline: standard ops only",
    )
    p.set_defaults(func=_cmd_embed)

    p = sub.add_parser("distill", help="merge student and teacher with the distillation loss")
    p.add_argument("student", help="the student's .onnx file")
    p.add_argument("teacher", help="the teacher's .onnx file (same input names)")
    p.add_argument("output", help="the .onnx file to write")
    p.add_argument("--student-output", required=True, help="the student's logits")
    p.add_argument("--teacher-output", required=True, help="the teacher's logits")
    p.add_argument("--temperature", type=float, default=1.0, help="softening temperature T (> 0)")
    p.add_argument(
        "--reduction", choices=REDUCTIONS, default="batchmean", help="how the loss is reduced"
    )
    p.set_defaults(func=_cmd_distill)

    p = sub.add_parser("fuse", help="replace PyTorch's exported kl_div subgraphs with KLDivLoss")
    p.add_argument("model", help="the exported .onnx file (left untouched)")
    p.add_argument("output", help="the .onnx file to write")
    p.set_defaults(func=_cmd_fuse)

    p = sub.add_parser("validate", help="compare every runtime against the float64 reference")
    p.add_argument("model", nargs="?", default=None, help="model file (default: an op config)")
    p.add_argument(
        "--inputs",
        nargs="+",
        metavar="FILE",
        help="the model's inputs, as for run: file.npz, a Parquet file, file.npy (in input "
        "order) or NAME=file.npy (default: generated)",
    )
    add_cast_option(p, CASTS)
    p.add_argument(
        "--reduction", choices=REDUCTIONS, default="batchmean", help="op config: the reduction"
    )
    p.add_argument(
        "--log-target", action="store_true", help="op config: the target is log-probabilities"
    )
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="op config: the dtype")
    p.add_argument(
        "--input-shape", type=int_shape, default=[8, 10], help="op config: input dims (8,10)"
    )
    p.add_argument(
        "--target-shape", type=int_shape, default=None, help="op config: default the input's"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the generated inputs")
    p.add_argument(
        "--rtol",
        type=non_negative_float,
        default=None,
        help="relative tolerance, of max |reference| (default: for model files per dtype, "
        "float32 1e-4, float16 1e-2, bfloat16 5e-2; for the op, its float32 error bound)",
    )
    p.add_argument("--json", metavar="FILE", help="also write the table's data to this file")
    p.set_defaults(func=_cmd_validate)
