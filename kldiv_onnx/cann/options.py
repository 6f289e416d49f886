"""CANN provider options: the wrapper's defaults, with their reasons, and validation against the
option table of the installed provider version."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .tables import OptionSpec, tables

CANN_DEFAULTS: dict[str, tuple[str, str]] = {
    "precision_mode": (
        "must_keep_origin_dtype",
        "onnxruntime passes no precision mode, so CANN applies force_fp16: a float32 loss would "
        "be computed in float16 (log of small probabilities, sums of many terms). The body casts "
        "to float32 itself; keeping the model's dtypes keeps that math in float32.",
    ),
    "dump_om_model": (
        "0",
        "onnxruntime's default 1 writes <node>_<hash>.om files into the working directory, and "
        "a later session loads an existing file of that name instead of compiling: a stale "
        "model from another run can be picked up. Pass dump_om_model=True to have them.",
    ),
    "op_select_impl_mode": (
        "high_precision",
        "onnxruntime's default high_performance lets CANN pick faster, less accurate Log/Exp "
        "implementations; the loss is compared with a float64 reference.",
    ),
}
"""Wrapper defaults for CANN options, as (value, reason); any of them can be overridden."""

_TRUE = ("1", "true", "True")
_FALSE = ("0", "false", "False")


def _bool(name: str, value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int) and value in (0, 1):
        return str(value)
    if isinstance(value, str) and value in (*_TRUE, *_FALSE):
        return "1" if value in _TRUE else "0"
    raise ValueError(f"CANN option {name} must be a bool (True/False, 0/1), got {value!r}")


def _int(name: str, value: object, minimum: int) -> str:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"CANN option {name} must be an int >= {minimum}, got {value!r}")
    return str(value)


def _render(name: str, spec: OptionSpec, value: object) -> str:
    if spec.kind == "bool":
        return _bool(name, value)
    if spec.kind == "int":
        return _int(name, value, spec.minimum)
    if spec.kind == "enum":
        if value not in spec.values:
            raise ValueError(
                f"CANN option {name} must be one of {list(spec.values)}, got {value!r}"
            )
        return str(value)
    if not isinstance(value, str):
        raise ValueError(f"CANN option {name} must be a string, got {value!r}")
    if (
        name == "optypelist_for_implmode"
        and value
        and not all(op.strip().isidentifier() for op in value.split(","))
    ):
        raise ValueError(f"CANN option {name} must be comma-separated op types, got {value!r}")
    return value


def cann_options(options: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The CANN provider options to pass: :data:`CANN_DEFAULTS` updated with ``options``,
    validated against the option table and rendered as onnxruntime's strings."""
    table = tables()
    merged: dict[str, Any] = {name: value for name, (value, _) in CANN_DEFAULTS.items()}
    for name, value in (options or {}).items():
        if name not in table.options:
            raise ValueError(
                f"unknown CANN option {name!r}: onnxruntime-cann {table.onnxruntime} "
                f"accepts {sorted(table.options)}"
            )
        merged[name] = value
    return {name: _render(name, table.options[name], value) for name, value in merged.items()}
