"""Cross-runtime validation: every runtime at hand against the float64 reference.

For an op configuration (reduction, log_target, dtype, shapes) the runtimes are the float64
numpy reference (the truth), then every ONNX runtime adapter of :mod:`kldiv_onnx.runtimes`:
``onnx.reference`` on the inlined model, onnxruntime with the composite body, onnxruntime with
the fused kernel (when the native library is built), OpenVINO through the registration and
tract on the inlined file (each "not available" when not installed; "not supported" for a
dtype it lacks, never counted as agreeing); then PyTorch eager (when installed) and MindSpore (when
installed; ``ops.kl_div`` runs only equal shapes with ``log_target=False`` and
float16/float32: other cases are reported "not supported", never as agreeing).

For a model file the baseline is ``onnx.reference`` (the ONNX specification's evaluator) on
the inlined model, and every other ONNX runtime is compared with it, output by output. A
model whose graph is one KLDivLoss node on its inputs is validated as an op configuration.

Tolerances: :mod:`kldiv_onnx.tolerance`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import ml_dtypes
import numpy as np
import onnx
import onnx.inliner
import onnx.reference

from .._contract import DOMAIN, DTYPES, ONNX_TYPE_NAMES, Variant, dtype_name, variant_of
from ..arrays import from_torch, to_torch
from ..data_files import check_feeds, declared_inputs
from ..export import build_model
from ..graph import rename_values
from ..model_io import ModelLike, load_model, write_bytes
from ..reference import kl_div as reference_kl_div
from ..reference import sample, sample_inputs
from ..runtimes import OnnxReference, runtimes
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


def _onnx_reference(model: onnx.ModelProto) -> Callable[[Mapping[str, np.ndarray]], list]:
    return OnnxReference().load(model)


def onnx_runtime_rows(
    model: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    refs: Sequence[np.ndarray],
    tols: Sequence[np.ndarray],
    np_dtype: np.dtype,
    *,
    baseline: bool = True,
) -> list[Row]:
    """One row per ONNX runtime adapter (:mod:`kldiv_onnx.runtimes`): "not available" with
    the reason (e.g. "tract not installed"), "not supported" for a model it cannot run (e.g.
    bfloat16 on tract), else its comparison. ``baseline=False`` leaves out onnx.reference."""
    rows = []
    for adapter in runtimes():
        if not baseline and isinstance(adapter, OnnxReference):
            continue
        reason = adapter.unavailable()
        if reason is not None:
            rows.append(Row(adapter.name, UNAVAILABLE, note=reason))
            continue
        reason = adapter.unsupported(model)
        if reason is not None:
            rows.append(Row(adapter.name, UNSUPPORTED, note=reason))
            continue
        make = functools.partial(adapter.load, model)
        rows.append(_run_row(adapter.name, make, "", feeds, refs, tols, np_dtype))
    return rows


@contextlib.contextmanager
def _quiet_numerics() -> Iterator[None]:
    """A runtime's own floating-point warnings (onnx.reference's numpy on NaN or -inf inputs)
    are part of its result, not the report's output."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence a library writing to fd 2 (MindSpore 2.10 under NumPy 2 prints a traceback)."""
    try:
        fd = os.dup(2)
    except OSError:
        yield
        return
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(fd, 2)
            os.close(fd)


def _torch_run(x: np.ndarray, t: np.ndarray, reduction: str, log_target: bool) -> np.ndarray:
    import torch.nn.functional as F

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch announces a change of its 'mean'
        out = F.kl_div(
            to_torch(x, copy=True),
            to_torch(t, copy=True),
            reduction=reduction,
            log_target=log_target,
        )
    return from_torch(out)


def _mindspore_run(x: np.ndarray, t: np.ndarray, reduction: str, log_target: bool) -> np.ndarray:
    with _quiet_stderr():
        from mindspore import Tensor, ops

        out = ops.kl_div(Tensor(x), Tensor(t), reduction)
        if reduction != "none" and out.ndim:
            out = out.reshape(())
        return out.asnumpy()


def _mindspore_unsupported(x: np.ndarray, t: np.ndarray, log_target: bool) -> str | None:
    if log_target:
        return "ops.kl_div has no log_target"
    if x.shape != t.shape:
        return "ops.kl_div takes equal shapes only"
    if x.dtype == DTYPES["bfloat16"]:
        return "ops.kl_div on CPU takes float16/float32 only"
    if x.ndim == 0 or x.size == 0:
        return "0-d or empty inputs"
    return None


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    import importlib.util

    return importlib.util.find_spec(module) is not None


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
    np_dtype = DTYPES[name]
    if inputs is None:
        x_shape = tuple(int(d) for d in input_shape)
        t_shape = x_shape if target_shape is None else tuple(int(d) for d in target_shape)
        x, t = sample_inputs(x_shape, t_shape, np_dtype, variant.log_target, seed)
    else:
        x, t = (np.asarray(a) for a in inputs)
        if x.dtype != np_dtype or t.dtype != np_dtype:
            raise TypeError(f"inputs must be {name}, got {x.dtype} and {t.dtype}")
    if model is None:
        model = build_model(
            variant.reduction, variant.log_target, name, list(x.shape), list(t.shape)
        )
    case = f"{variant.label} input {list(x.shape)} target {list(t.shape)}"
    report = Report(case, name)
    ref = reference_kl_div(x, t, variant.reduction, variant.log_target)
    tol = tolerance(x, t, variant, ref) if rtol is None else model_tolerance(ref, rtol)
    report.rows.append(Row("numpy float64", REFERENCE, note="the reference"))
    feeds = {"input": x, "target": t}
    report.rows += onnx_runtime_rows(model, feeds, [ref], [tol], np_dtype)
    optional: list[tuple[str, str, Callable, str | None]] = [
        ("PyTorch eager", "torch", _torch_run, None),
        (
            "MindSpore",
            "mindspore",
            _mindspore_run,
            _mindspore_unsupported(x, t, variant.log_target),
        ),
    ]
    for label, module, run, unsupported in optional:
        if not installed(module):
            report.rows.append(Row(label, UNAVAILABLE, note=f"{module} not installed"))
        elif unsupported:
            report.rows.append(Row(label, UNSUPPORTED, note=unsupported))
        else:
            try:
                got = run(x, t, variant.reduction, variant.log_target)
            except Exception as exc:  # a runtime refusing the case is not a disagreement
                first = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ""
                report.rows.append(Row(label, UNSUPPORTED, note=f"{type(exc).__name__}: {first}"))
                continue
            report.rows.append(compare(label, got, ref, tol, np_dtype))
    return report


def _check_rtol(rtol: float | None) -> None:
    if rtol is None:
        return
    if isinstance(rtol, bool) or not isinstance(rtol, (int, float)):
        raise TypeError(f"rtol must be a number, got {rtol!r}")
    if not math.isfinite(rtol) or rtol < 0:
        raise ValueError(f"rtol must be finite and >= 0, got {rtol!r}")


def _run_row(
    label: str,
    make: Callable | None,
    note: str,
    feeds: Mapping[str, np.ndarray],
    refs: Sequence[np.ndarray],
    tols: Sequence[np.ndarray],
    np_dtype: np.dtype,
) -> Row:
    if make is None:
        return Row(label, UNAVAILABLE, note=note)
    try:
        with _quiet_numerics():
            outputs = make()(feeds)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        return Row(label, ERROR, note=f"{type(exc).__name__}: {first}")
    rows = [
        compare(label, np.asarray(o), r, tl, np_dtype)
        for o, r, tl in zip(outputs, refs, tols, strict=True)
    ]
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


def _single_kldiv(model: onnx.ModelProto) -> tuple[Variant, str, str] | None:
    """(variant, input name, target name) if the graph is one KLDivLoss node reading two
    graph inputs."""
    graph = model.graph
    if len(graph.node) != 1 or len(graph.output) != 1:
        return None
    node = graph.node[0]
    variant = variant_of(node.op_type)
    inputs = [i.name for i in graph.input]
    if node.domain != DOMAIN or variant is None or list(node.input) != inputs:
        return None
    return variant, inputs[0], inputs[1]


def model_inputs(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """Generated inputs: log-probabilities and (log-)probabilities for the inputs that feed a
    KLDivLoss node directly, standard normal values elsewhere; symbolic dims of size 4."""
    rng = np.random.default_rng(seed)
    roles: dict[str, str] = {}
    for node in model.graph.node:
        variant = variant_of(node.op_type)
        if node.domain == DOMAIN and variant is not None and len(node.input) == 2:
            roles.setdefault(node.input[0], "log_probs")
            roles.setdefault(node.input[1], "log_probs" if variant.log_target else "probs")
    initializers = {i.name for i in model.graph.initializer}
    feeds: dict[str, np.ndarray] = {}
    for i, vi in enumerate(model.graph.input):
        if vi.name in initializers:
            continue
        tensor = vi.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else 4 for d in tensor.shape.dim)
        elem = tensor.elem_type
        np_dtype = onnx.helper.tensor_dtype_to_np_dtype(elem)
        if elem == onnx.TensorProto.BFLOAT16:
            np_dtype = DTYPES["bfloat16"]
        role = roles.get(vi.name)
        if role is not None and np_dtype in DTYPES.values():
            log_p, probs = sample(shape, np.dtype(np.float64), seed + i)
            value = log_p if role == "log_probs" else probs
        elif np.issubdtype(np_dtype, np.integer):
            value = rng.integers(0, 2, size=shape)
        elif np_dtype == np.bool_:
            value = np.zeros(shape, bool)
        else:
            value = rng.standard_normal(shape)
        feeds[vi.name] = np.asarray(value).astype(np_dtype)
    return feeds


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
    feeds = check_feeds(inputs if inputs is not None else model_inputs(proto, seed), specs)
    single = _single_kldiv(proto)
    if single is not None:
        variant, x_name, t_name = single
        x, t = feeds[x_name], feeds[t_name]
        rename_values(proto.graph, {x_name: "input", t_name: "target"})
        return validate_op(
            variant.reduction, variant.log_target, x.dtype, inputs=(x, t), model=proto, rtol=rtol
        )
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
            baseline = [np.asarray(o) for o in _onnx_reference(proto)(feeds)]
    except Exception as exc:
        report.rows.append(
            Row("onnx.reference (inlined)", ERROR, note=f"{type(exc).__name__}: {exc}")
        )
        return report
    refs = [b.astype(np.float64) for b in baseline]
    tols = [model_tolerance(b, rtol) for b in baseline]
    report.rows.append(Row("onnx.reference (inlined)", REFERENCE, note="the baseline"))
    report.rows += onnx_runtime_rows(proto, feeds, refs, tols, np_dtype, baseline=False)
    for label in ("PyTorch eager", "MindSpore"):
        report.rows.append(Row(label, UNSUPPORTED, note="runs single-KLDivLoss models only"))
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
