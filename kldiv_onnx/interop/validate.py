"""Cross-runtime validation: every runtime at hand against the float64 reference.

For an op configuration (reduction, log_target, dtype, shapes) the runtimes are the float64
numpy reference (the truth), then every adapter of :mod:`kldiv_onnx.runtimes`: the ONNX
runtimes (``onnx.reference`` on the inlined model, onnxruntime with the composite body,
onnxruntime with the fused kernel when the native library is built, OpenVINO through the
registration, tract on the inlined file), then the frameworks' own losses (PyTorch eager,
MindSpore). An adapter is "not available" with its reason (e.g. "tract not installed") and "not
supported" for a case it does not take (e.g. bfloat16 on tract, a log-target on MindSpore's
``ops.kl_div``): never counted as agreeing.

For a model file the baseline is ``onnx.reference`` (the ONNX specification's evaluator) on
the inlined model, and every other ONNX runtime is compared with it, output by output. A
model whose graph is one KLDivLoss node on its inputs is validated as an op configuration.

Tolerances: :mod:`kldiv_onnx.tolerance`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import ml_dtypes
import numpy as np
import onnx

from .._contract import DTYPES, ONNX_TYPE_NAMES, Variant, dtype_name
from ..data_files import check_feeds, check_memory, declared_inputs, sample_feeds
from ..errors import first_line
from ..export import variant_model
from ..graph import rename_values
from ..model_io import ModelLike, load_model, write_bytes
from ..reference import kl_div as reference_kl_div
from ..reference import sample_inputs
from ..runtimes import OnnxReference, Runtime, Unsupported, frameworks, runtimes, single_kldiv
from ..tolerance import model_tolerance, tolerance

OK, FAIL, ERROR, UNSUPPORTED, UNAVAILABLE, REFERENCE = (
    "ok",
    "DISAGREES",
    "error",
    "not supported",
    "not available",
    "reference",
)


@dataclass
class Row:
    """One runtime's result: worst errors against the reference, over every output."""

    runtime: str
    status: str
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    max_ulps: float | None = None
    note: str = ""


@dataclass
class Report:
    """Every runtime's row for one case; ``ok`` when none disagrees or fails."""

    case: str
    dtype: str
    rows: list[Row] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.status not in (FAIL, ERROR) for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        def clean(value: Any) -> Any:
            return None if isinstance(value, float) and not math.isfinite(value) else value

        rows = [{k: clean(v) for k, v in asdict(r).items()} for r in self.rows]
        return {"case": self.case, "dtype": self.dtype, "ok": self.ok, "rows": rows}

    def table(self) -> str:
        """The human-readable table (ULPs only for float16/bfloat16)."""
        ulps = self.dtype in ("float16", "bfloat16")
        head = f"{'runtime':<26} {'status':<14} {'max abs err':>12} {'max rel err':>12}"
        lines = [f"{self.case} ({self.dtype})", head + (f" {'ULPs':>8}" if ulps else "")]
        for r in self.rows:
            line = f"{r.runtime:<26} {r.status:<14} {_fmt(r.max_abs_err):>12} "
            line += f"{_fmt(r.max_rel_err):>12}"
            if ulps:
                line += f" {_fmt(r.max_ulps, '.1f'):>8}"
            lines.append(line + (f"  {r.note}" if r.note else ""))
        verdict = "all runtimes agree" if self.ok else "some runtimes DISAGREE or failed"
        lines.append(f"validation: {verdict}")
        return "\n".join(lines)


def _fmt(value: float | None, spec: str = ".2e") -> str:
    return "-" if value is None else format(value, spec)


# --- comparison --------------------------------------------------------------------------------


def _ulp(ref: np.ndarray, dtype: np.dtype) -> np.ndarray:
    info = ml_dtypes.finfo(dtype)
    with np.errstate(divide="ignore"):
        exponent = np.floor(np.log2(np.abs(ref)))
    exponent = np.where(np.isfinite(exponent), exponent, -np.inf)
    return np.maximum(np.exp2(exponent) * float(info.eps), float(info.smallest_subnormal))


def compare(
    runtime_name: str, got: np.ndarray, ref: np.ndarray, tol: np.ndarray, dtype: np.dtype
) -> Row:
    """A row comparing ``got`` with the float64 ``ref`` elementwise under ``tol``."""
    got = np.asarray(got)
    if got.shape != ref.shape:
        return Row(runtime_name, FAIL, note=f"shape {got.shape}, expected {ref.shape}")
    g = got.astype(np.float64)
    both_nan = np.isnan(g) & np.isnan(ref)
    same_inf = np.isinf(g) & (g == ref)
    exact = both_nan | same_inf
    with np.errstate(invalid="ignore"):
        err = np.where(exact, 0.0, np.abs(g - ref))
        err = np.where(np.isnan(err), np.inf, err)
        rel = np.where(
            ref != 0, err / np.abs(np.where(ref != 0, ref, 1.0)), np.where(err, np.inf, 0)
        )
    bad = ~(exact | (err <= tol))  # NaN agrees with NaN at the same positions
    row = Row(
        runtime_name,
        FAIL if bad.any() else OK,
        float(err.max()) if err.size else 0.0,
        float(rel.max()) if rel.size else 0.0,
    )
    if dtype in (DTYPES["float16"], DTYPES["bfloat16"]) and err.size:
        finite = np.isfinite(ref)
        ulps = np.where(finite, err / _ulp(np.where(finite, ref, 1.0), dtype), 0.0)
        row.max_ulps = float(ulps.max())
    if bad.any():
        row.note = f"{int(bad.sum())} of {bad.size} beyond tolerance"
    return row


# --- runtimes ----------------------------------------------------------------------------------


def adapter_rows(
    model: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    refs: Sequence[np.ndarray],
    tols: Sequence[np.ndarray],
    np_dtype: np.dtype,
    *,
    baseline: bool = True,
) -> list[Row]:
    """One row per adapter of :mod:`kldiv_onnx.runtimes`, ONNX runtimes then frameworks: "not
    available" with the reason (e.g. "tract not installed"), "not supported" for a model or
    inputs it does not take (e.g. bfloat16 on tract), else its comparison output by output.
    ``baseline=False`` leaves out onnx.reference."""
    adapters = [*runtimes(), *frameworks()]
    if not baseline:
        adapters = [a for a in adapters if not isinstance(a, OnnxReference)]
    return [_adapter_row(a, model, feeds, refs, tols, np_dtype) for a in adapters]


def _adapter_row(
    adapter: Runtime,
    model: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    refs: Sequence[np.ndarray],
    tols: Sequence[np.ndarray],
    np_dtype: np.dtype,
) -> Row:
    label = adapter.name
    reason = adapter.unavailable()
    if reason is not None:
        return Row(label, UNAVAILABLE, note=reason)
    reason = adapter.unsupported(model)
    if reason is not None:
        return Row(label, UNSUPPORTED, note=reason)
    try:
        with _quiet_numerics():
            outputs = adapter.load(model)(feeds)
    except Unsupported as exc:
        return Row(label, UNSUPPORTED, note=str(exc))
    except Exception as exc:
        return Row(label, ERROR, note=f"{type(exc).__name__}: {first_line(exc)[:160]}")
    rows = [
        compare(label, np.asarray(o), r, tl, np_dtype)
        for o, r, tl in zip(outputs, refs, tols, strict=True)
    ]
    if len(rows) == 1:
        return rows[0]
    worst = max(rows, key=lambda r: (r.status == FAIL, r.max_abs_err or 0.0))
    ulps = [r.max_ulps for r in rows if r.max_ulps is not None]
    return Row(
        label,
        FAIL if any(r.status == FAIL for r in rows) else OK,
        max((r.max_abs_err or 0.0) for r in rows),
        max((r.max_rel_err or 0.0) for r in rows),
        max(ulps) if ulps else None,
        worst.note,
    )


@contextlib.contextmanager
def _quiet_numerics() -> Iterator[None]:
    """A runtime's own floating-point warnings (onnx.reference's numpy on NaN or -inf inputs)
    are part of its result, not the report's output."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


# --- the two entry points ----------------------------------------------------------------------


def validate_op(
    reduction: str = "batchmean",
    log_target: bool = False,
    dtype: str | np.dtype = "float32",
    input_shape: Sequence[int] = (8, 10),
    target_shape: Sequence[int] | None = None,
    *,
    seed: int = 0,
    inputs: tuple[np.ndarray, np.ndarray] | None = None,
    model: onnx.ModelProto | None = None,
    rtol: float | None = None,
) -> Report:
    """Validate one op configuration on seeded log-probabilities and (log-)probabilities
    (or the given ``inputs``), on every runtime. ``model``: use this single-node model instead
    of building one (its inputs must be ``input`` and ``target``). ``rtol``: compare with
    ``rtol * (|ref| + max |ref|)`` instead of the error bound of :mod:`kldiv_onnx.tolerance`."""
    variant = Variant(reduction, log_target)
    _check_rtol(rtol)
    name = dtype_name(dtype)
    if inputs is None:
        x_shape = tuple(int(d) for d in input_shape)
        t_shape = x_shape if target_shape is None else tuple(int(d) for d in target_shape)
        check_shape_memory(x_shape, "input_shape")
        check_shape_memory(t_shape, "target_shape")
        x, t = sample_inputs(x_shape, t_shape, DTYPES[name], variant.log_target, seed)
    else:
        x, t = _given(inputs, name)
    return _validate_variant(variant, name, x, t, model, rtol)


def check_shape_memory(shape: Sequence[int], what: str) -> None:
    """``ValueError`` naming ``what`` when seeded inputs of ``shape`` could not be held: each is
    made and checked in float64, two arrays of its elements at least."""
    elements = math.prod(int(d) for d in shape)
    check_memory(16 * elements, f"{what} {list(shape)} ({elements} elements, in float64)")


def _given(inputs: tuple[np.ndarray, np.ndarray], name: str) -> tuple[np.ndarray, np.ndarray]:
    x, t = (np.asarray(a) for a in inputs)
    if x.dtype != DTYPES[name] or t.dtype != DTYPES[name]:
        raise TypeError(f"inputs must be {name}, got {x.dtype} and {t.dtype}")
    return x, t


def _validate_variant(
    variant: Variant,
    name: str,
    x: np.ndarray,
    t: np.ndarray,
    model: onnx.ModelProto | None,
    rtol: float | None,
) -> Report:
    """:func:`validate_op` on a parsed variant, checked inputs of dtype ``name`` and a checked
    ``rtol``."""
    if model is None:
        model = variant_model(variant, name, list(x.shape), list(t.shape))
    report = Report(f"{variant.label} input {list(x.shape)} target {list(t.shape)}", name)
    ref = reference_kl_div(x, t, variant.reduction, variant.log_target)
    tol = tolerance(x, t, variant, ref) if rtol is None else model_tolerance(ref, rtol)
    report.rows.append(Row("numpy float64", REFERENCE, note="the reference"))
    feeds = {"input": x, "target": t}
    report.rows += adapter_rows(model, feeds, [ref], [tol], DTYPES[name])
    return report


def _check_rtol(rtol: float | None) -> None:
    if rtol is None:
        return
    if isinstance(rtol, bool) or not isinstance(rtol, (int, float)):
        raise TypeError(f"rtol must be a number, got {rtol!r}")
    if not math.isfinite(rtol) or rtol < 0:
        raise ValueError(f"rtol must be finite and >= 0, got {rtol!r}")


def validate_model(
    model: ModelLike,
    inputs: Mapping[str, np.ndarray] | None = None,
    *,
    seed: int = 0,
    rtol: float | None = None,
) -> Report:
    """Validate a model file's outputs across the ONNX runtimes (``onnx.reference`` as the
    baseline); a single-KLDivLoss model is validated as an op configuration. ``rtol``
    overrides :data:`kldiv_onnx.tolerance.MODEL_RTOL` for the outputs' dtype."""
    _check_rtol(rtol)
    proto = load_model(model)
    specs = declared_inputs(proto)
    feeds = check_feeds(inputs if inputs is not None else sample_feeds(proto, seed), specs)
    single = single_kldiv(proto)
    if single is not None:
        variant, x_name, t_name = single
        name = dtype_name(feeds[x_name].dtype)
        x, t = _given((feeds[x_name], feeds[t_name]), name)
        rename_values(proto.graph, {x_name: "input", t_name: "target"})
        return _validate_variant(variant, name, x, t, proto, rtol)
    outputs = list(proto.graph.output)
    dtype = next(
        (
            ONNX_TYPE_NAMES[o.type.tensor_type.elem_type]
            for o in outputs
            if o.type.tensor_type.elem_type in ONNX_TYPE_NAMES
        ),
        "float32",
    )
    np_dtype = DTYPES[dtype]
    report = Report(
        f"model {proto.graph.name or '(unnamed)'}: outputs {[o.name for o in outputs]}", dtype
    )
    try:
        with _quiet_numerics():
            baseline = [np.asarray(o) for o in OnnxReference().load(proto)(feeds)]
    except Exception as exc:
        report.rows.append(
            Row("onnx.reference (inlined)", ERROR, note=f"{type(exc).__name__}: {exc}")
        )
        return report
    refs = [b.astype(np.float64) for b in baseline]
    tols = [model_tolerance(b, rtol) for b in baseline]
    report.rows.append(Row("onnx.reference (inlined)", REFERENCE, note="the baseline"))
    report.rows += adapter_rows(proto, feeds, refs, tols, np_dtype, baseline=False)
    return report


def validate(
    model: ModelLike | None = None,
    *,
    inputs: Mapping[str, np.ndarray] | None = None,
    reduction: str = "batchmean",
    log_target: bool = False,
    dtype: str | np.dtype = "float32",
    input_shape: Sequence[int] = (8, 10),
    target_shape: Sequence[int] | None = None,
    seed: int = 0,
    rtol: float | None = None,
) -> Report:
    """:func:`validate_model` when ``model`` is given, else :func:`validate_op`; the
    returned :class:`Report` has ``ok``, ``table()`` and ``to_dict()``."""
    if model is not None:
        return validate_model(model, inputs, seed=seed, rtol=rtol)
    return validate_op(
        reduction, log_target, dtype, input_shape, target_shape, seed=seed, rtol=rtol
    )


def write_json(report: Report, path: str | os.PathLike) -> None:
    """Write ``report.to_dict()`` as JSON, atomically."""
    write_bytes(path, (json.dumps(report.to_dict(), indent=2) + "\n").encode(), "JSON file")
