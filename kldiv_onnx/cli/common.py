"""What every subcommand shares: the usage error, the parser that raises it, argument types,
and reading and writing files with errors turned into one line.

Light to import (the parser of ``kldiv-onnx --version`` and ``--help`` is built from it): onnx
is imported by the functions that read and write models, when they run."""

from __future__ import annotations

import argparse
import os
from typing import Any

TYPE_CHECKING = False  # typing's own constant, without importing typing
if TYPE_CHECKING:
    import onnx


class UsageError(Exception):
    """A bad argument or input file: reported in one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are :class:`UsageError` (argparse would print its
    usage block and exit), and which takes long options only as spelled out: an abbreviation
    (``--out`` for ``--output``) would change meaning when a later option shares its prefix."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def shape(text: str) -> list[int | str | None]:
    """'2,3' → [2, 3]; 'batch,10' keeps names; '?' is an unnamed dim; '' is 0-d."""
    dims: list[int | str | None] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if part == "?":
            dims.append(None)
        elif part.isdigit():
            dims.append(int(part))
        elif part.isidentifier():
            dims.append(part)
        else:
            raise argparse.ArgumentTypeError(
                f"dims must be ints >= 0, names or ?, got {part!r} in {text!r}"
            )
    return dims


def non_negative_float(text: str) -> float:
    """A finite float >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An int >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text!r}")
    return value


def int_shape(text: str) -> list[int]:
    """'8,10' → [8, 10]: comma-separated ints only."""
    dims = shape(text)
    if not all(isinstance(d, int) for d in dims):
        raise argparse.ArgumentTypeError(f"shape must be comma-separated ints, got {text!r}")
    return dims  # type: ignore[return-value]


def read_model(path: str, what: str = "model") -> onnx.ModelProto:
    """The model at ``path``, or a :class:`UsageError` naming it."""
    from ..model_io import load_model

    try:
        return load_model(path, what)
    except (OSError, ValueError, TypeError) as exc:  # each names the path
        raise UsageError(str(exc)) from exc


def write_model(
    model: onnx.ModelProto, path: str | os.PathLike, sources: tuple[str, ...] = ()
) -> None:
    """Save ``model`` atomically, or a :class:`UsageError` naming the path. Its tensors go to
    external data when a ``sources`` file had them so, or when it would pass 2 GiB."""
    from ..model_io import save_model, saved_with_external_data

    try:
        external = any(saved_with_external_data(s) for s in sources) or None
        save_model(model, path, external_data=external)
    except (OSError, ValueError) as exc:
        raise UsageError(str(exc)) from exc


def read_paths(*items: str | None) -> list[str]:
    """The files a command reads, for ``check_output_path(..., inputs=...)``: each item as given
    and, for ``NAME=file.npy``, its file (``None`` items are left out)."""
    paths = []
    for item in items:
        if item:
            paths += [item, item.partition("=")[2]] if "=" in item else [item]
    return paths


def add_cast_option(parser: argparse.ArgumentParser, casts: tuple[str, ...]) -> None:
    """``--cast`` of ``run``, ``validate`` and ``compare`` (``casts``: the library's ``CASTS``,
    passed in so that this module imports no numpy)."""
    parser.add_argument(
        "--cast",
        choices=casts,
        default="no",
        help="data of another dtype than a model's input: no: refuse it (default); exact: cast "
        "it where every value survives unchanged (float64 copies of float32 values, int64 below "
        "2**24, bool, float16), refusing any other value; any: cast it as numpy does (rounding)",
    )
