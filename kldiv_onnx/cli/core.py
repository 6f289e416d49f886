"""Subcommands ``export``, ``run``, ``demo`` and ``doctor``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import runtime
from .._contract import DEFAULT_OPSET, DTYPES, REDUCTIONS
from ..demo import demo
from ..doctor import report
from ..export import FORMS, build_model
from .common import UsageError, shape, write_model


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


def _load_feeds(paths: Sequence[str], names: Sequence[str]) -> dict[str, np.ndarray]:
    feeds: dict[str, np.ndarray] = {}
    for path in paths:
        if "=" in path:  # NAME=file.npy
            name, path = path.split("=", 1)
        else:
            name = None
        try:
            loaded = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read {path}: {exc}") from exc
        if isinstance(loaded, np.lib.npyio.NpzFile):
            feeds.update({k: loaded[k] for k in loaded.files})
        else:
            feeds[name or names[len(feeds)]] = loaded
    missing = [n for n in names if n not in feeds]
    if missing:
        raise UsageError(f"no value given for model inputs {missing}")
    return feeds


def _cmd_run(args: argparse.Namespace) -> int:
    try:
        sess = runtime.session(
            args.model, threads=args.threads, fused=False if args.composite else None
        )
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load {args.model}: {exc}") from exc
    except Exception as exc:  # onnxruntime's own errors: invalid model files
        raise UsageError(f"cannot load {args.model}: {str(exc).splitlines()[0]}") from exc
    names = [i.name for i in sess.get_inputs()]
    outputs = runtime.run(sess, _load_feeds(args.inputs, names))
    out_names = [o.name for o in sess.get_outputs()]
    if args.output:
        np.savez(args.output, **dict(zip(out_names, outputs, strict=True)))
        print(f"wrote {args.output}: {', '.join(out_names)}")
    else:
        for name, value in zip(out_names, outputs, strict=True):
            print(f"{name} {value.dtype} {list(value.shape)}:\n{value!s}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    return demo(size=args.size, seed=args.seed)


def _cmd_doctor(args: argparse.Namespace) -> int:
    print(report())
    return 0


def register(sub: Any) -> None:
    """Add ``export``, ``run``, ``demo`` and ``doctor``."""
    p = sub.add_parser("export", help="write a KLDivLoss model")
    p.add_argument("output", help="path of the .onnx file to write")
    p.add_argument("--reduction", choices=REDUCTIONS, default="mean")
    p.add_argument("--log-target", action="store_true")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    p.add_argument(
        "--input-shape",
        type=shape,
        default=None,
        help="comma-separated dims: ints, names or ?; default batch,classes",
    )
    p.add_argument("--target-shape", type=shape, default=None, help="default: the input's")
    p.add_argument("--form", choices=FORMS, default="function")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("run", help="run a model on .npy/.npz inputs")
    p.add_argument("model")
    p.add_argument("inputs", nargs="+", help="file.npz, file.npy (in input order) or NAME=file.npy")
    p.add_argument("--output", help="save the outputs to this .npz instead of printing")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--composite", action="store_true", help="never use the native kernel")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("demo", help="the seed example and a random case through every backend")
    p.add_argument("--size", type=int, default=1 << 20, help="elements of the random case")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("doctor", help="versions, providers, native library")
    p.set_defaults(func=_cmd_doctor)
