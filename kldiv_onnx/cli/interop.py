"""Subcommands ``embed``, ``distill``, ``fuse`` and ``validate``."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from .._contract import DTYPES, REDUCTIONS
from ..export import FORMS
from ..interop.distill import distill
from ..interop.embed import embed
from ..interop.fuse import fuse
from ..interop.validate import validate_model, validate_op, write_json
from .common import UsageError, int_shape, read_model, write_model


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
        if args.model:
            model = read_model(args.model)
            inputs = None
            if args.inputs:
                try:
                    with np.load(args.inputs, allow_pickle=False) as data:
                        inputs = {k: data[k] for k in data.files}
                except (OSError, ValueError) as exc:
                    raise UsageError(f"cannot read {args.inputs}: {exc}") from exc
            report = validate_model(model, inputs, seed=args.seed, rtol=args.rtol)
        else:
            if args.inputs:
                raise UsageError("--inputs needs a model file")
            report = validate_op(
                args.reduction,
                args.log_target,
                args.dtype,
                args.input_shape,
                args.target_shape,
                seed=args.seed,
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
    """Add the subcommands to ``kldiv-onnx``'s subparsers."""
    p = sub.add_parser("embed", help="add a KLDivLoss output to a model")
    p.add_argument("model")
    p.add_argument("output")
    p.add_argument("--input", required=True, help="value holding log-probabilities (or logits)")
    p.add_argument("--target", default=None, help="existing value; default: a new graph input")
    p.add_argument("--reduction", choices=REDUCTIONS, default="batchmean")
    p.add_argument("--log-target", action="store_true")
    p.add_argument("--log-softmax", action="store_true", help="--input holds logits")
    p.add_argument("--output-name", default="kldiv_loss")
    p.add_argument("--form", choices=FORMS, default="function")
    p.set_defaults(func=_cmd_embed)

    p = sub.add_parser("distill", help="merge student and teacher with the distillation loss")
    p.add_argument("student")
    p.add_argument("teacher")
    p.add_argument("output")
    p.add_argument("--student-output", required=True)
    p.add_argument("--teacher-output", required=True)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--reduction", choices=REDUCTIONS, default="batchmean")
    p.set_defaults(func=_cmd_distill)

    p = sub.add_parser("fuse", help="replace PyTorch's exported kl_div subgraphs with KLDivLoss")
    p.add_argument("model")
    p.add_argument("output")
    p.set_defaults(func=_cmd_fuse)

    p = sub.add_parser("validate", help="compare every runtime against the float64 reference")
    p.add_argument("model", nargs="?", default=None, help="model file (default: an op config)")
    p.add_argument("--inputs", help=".npz with the model's inputs (default: generated)")
    p.add_argument("--reduction", choices=REDUCTIONS, default="batchmean")
    p.add_argument("--log-target", action="store_true")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    p.add_argument("--input-shape", type=int_shape, default=[8, 10])
    p.add_argument("--target-shape", type=int_shape, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--rtol",
        type=float,
        default=None,
        help="model files: relative tolerance (default per dtype: float32 1e-4, float16 1e-2, "
        "bfloat16 5e-2)",
    )
    p.add_argument("--json", help="also write the table's data to this JSON file")
    p.set_defaults(func=_cmd_validate)
