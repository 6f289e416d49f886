"""The ``kldiv-onnx`` command line: export, run, demo, doctor (and the subcommands of the
runtime and interop modules). Bad arguments give one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

import numpy as np

from ._contract import DEFAULT_OPSET, DTYPES, REDUCTIONS


class UsageError(Exception):
    """A bad argument or input file: reported in one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print the usage block
        raise UsageError(message)


def _shape(text: str) -> list[int | str | None]:
    """'2,3' → [2, 3]; 'batch,10' keeps names; '?' is an unnamed dim; '' is 0-d."""
    dims: list[int | str | None] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        dims.append(None if part == "?" else int(part) if part.isdigit() else part)
    return dims


def _cmd_export(args: argparse.Namespace) -> int:
    import onnx

    from .export import build_model

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
    onnx.save(model, args.output)
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
    from . import runtime

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
    from .demo import demo

    return demo(size=args.size, seed=args.seed)


def _cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import report

    print(report())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kldiv-onnx", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("export", help="write a KLDivLoss model")
    p.add_argument("output", help="path of the .onnx file to write")
    p.add_argument("--reduction", choices=REDUCTIONS, default="mean")
    p.add_argument("--log-target", action="store_true")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    p.add_argument(
        "--input-shape",
        type=_shape,
        default=None,
        help="comma-separated dims: ints, names or ?; default batch,classes",
    )
    p.add_argument("--target-shape", type=_shape, default=None, help="default: the input's")
    p.add_argument("--form", choices=("function", "inline"), default="function")
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

    for module in _EXTENSIONS:
        importlib.import_module(f".{module}", __package__).register_cli(sub)
    return parser


_EXTENSIONS: tuple[str, ...] = ("cann", "bench", "interop.cli")
"""Modules that add subcommands through ``register_cli(subparsers)``."""


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except UsageError as exc:
        print(f"kldiv-onnx: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"kldiv-onnx: error: {exc}", file=sys.stderr)
        return 2
