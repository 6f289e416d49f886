"""``kldiv-onnx compare``: the KL divergence between two models' output distributions over a
data set, as a table, with ``--json`` and ``--plot`` written atomically."""

from __future__ import annotations

import argparse
import json
import sys

from ..comparison import CASTS, DEFAULT_BATCH_SIZE, ENGINES, KINDS, compare, provider_list
from ..comparison.plot import plot
from ..errors import first_line
from ..model_io import check_output_path, write_bytes
from .common import UsageError, add_cast_option, positive_int, read_paths

DESCRIPTION = (
    "Measure how far a candidate model's output distribution drifts from a base model's over a "
    "data set: per sample KL(P_base || P_candidate) over the last (class) axis, computed with "
    "the library's KLDivRows op (float32 math, float64 sums), and top-1 agreement; reports the "
    "mean with its standard error, median, p90, p99, p99.9, max and the worst samples. Set "
    "RAY_ADDRESS to run --engine ray on an existing Ray cluster."
)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``compare`` subcommand."""
    p = subparsers.add_parser(
        "compare",
        help="KL divergence between two models' outputs over a data set",
        description=DESCRIPTION,
    )
    p.add_argument("base", help="the reference model (.onnx): P in KL(P || Q)")
    p.add_argument("candidate", help="the model compared with it (.onnx): Q in KL(P || Q)")
    p.add_argument(
        "--data",
        required=True,
        help="an .npz (keys = the models' input names), a folder of .npz shards, or a Parquet "
        "file or folder (one column per input; fixed-size lists for multi-dimensional inputs)",
    )
    p.add_argument(
        "--output",
        metavar="NAME",
        help="the compared output, where the models have several (default: their only one)",
    )
    p.add_argument(
        "--kind",
        choices=KINDS,
        default="logits",
        help="what the output holds along its last axis (default: logits); each row becomes a "
        "distribution: softmax(z / T), softmax(z) or z / sum(z)",
    )
    p.add_argument(
        "--temperature",
        type=_positive_float,
        default=1.0,
        metavar="T",
        help="divide logits by T before the softmax (--kind logits only; default 1)",
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help=f"rows read and run at a time (default {DEFAULT_BATCH_SIZE})",
    )
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default="local",
        help="local: this process; ray: a pool of Ray actors, on the cluster RAY_ADDRESS names "
        "or a local one (needs the ray extra)",
    )
    p.add_argument(
        "--ray-timeout",
        type=_positive_float,
        default=30.0,
        metavar="S",
        help="seconds to wait for the Ray cluster RAY_ADDRESS names to answer before giving up "
        "(--engine ray; default 30)",
    )
    p.add_argument(
        "--base-provider",
        metavar="P",
        help="execution provider(s) of the base model: cpu, cann, a full name or a "
        "comma-separated list of onnxruntime's, or openvino (OpenVINO's CPU device); "
        "default: the session policy's choice",
    )
    p.add_argument(
        "--candidate-provider",
        metavar="P",
        help="execution provider(s) of the candidate model (as --base-provider)",
    )
    p.add_argument(
        "--limit",
        type=positive_int,
        metavar="N",
        help="compare only the first N rows of the data",
    )
    add_cast_option(p, CASTS)
    p.add_argument(
        "--verbose",
        action="store_true",
        help="also show Ray's own log lines (--engine ray; hidden by default)",
    )
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON to FILE")
    p.add_argument(
        "--plot",
        metavar="FILE.png",
        help="draw the per-sample KL distribution (log scale, percentiles marked) to FILE.png "
        "(needs matplotlib)",
    )
    p.set_defaults(func=_cmd_compare)


def _check_output(path: str | None, what: str, inputs: list[str]) -> None:
    if path is None:
        return
    try:
        check_output_path(path, what, inputs=inputs)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def _cmd_compare(args: argparse.Namespace) -> int:
    # everything that can fail cheaply fails before the long run
    inputs = read_paths(args.base, args.candidate, args.data)
    _check_output(args.json, "--json file", inputs)
    _check_output(args.plot, "--plot file", inputs)
    if args.json is not None and args.plot is not None and args.json == args.plot:
        raise UsageError("--json and --plot name the same file")
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError as exc:
            raise UsageError(
                "--plot needs matplotlib, which is not installed: pip install 'kldiv-onnx[bench]'"
            ) from exc
    if args.engine == "ray":
        try:
            import ray  # noqa: F401
        except ImportError as exc:
            raise UsageError(
                "--engine ray needs Ray, which is not installed: pip install 'kldiv-onnx[ray]'"
            ) from exc
    try:
        provider_list(args.base_provider)
        provider_list(args.candidate_provider)
        report = compare(
            args.base,
            args.candidate,
            args.data,
            output=args.output,
            kind=args.kind,
            temperature=args.temperature,
            batch_size=args.batch_size,
            engine=args.engine,
            base_provider=args.base_provider,
            candidate_provider=args.candidate_provider,
            limit=args.limit,
            cast=args.cast,
            ray_timeout=args.ray_timeout,
            progress=True,
            verbose=args.verbose,
        )
    except (ValueError, ImportError) as exc:
        raise UsageError(first_line(exc)) from exc
    print(report.table())
    if args.json is not None:
        text = json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n"
        try:
            write_bytes(args.json, text.encode(), "--json file")
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        print(f"wrote {args.json}")
    if args.plot is not None:
        try:
            plot(report, args.plot)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        print(f"wrote {args.plot}")
    sys.stdout.flush()
    return 0
