"""The two compared models (their inputs, the compared output, checks against each other and
the data) and the KL model that measures them with the project's op.

The KL model is one ``kldiv_onnx.KLDivRows`` node of the native library: both outputs as float32
``(n, classes)`` in, per row the KL divergence (float64) and whether the top-1 classes agree
(numpy's argmax: the first maximum) out. Each row becomes a distribution by its kind
(``softmax(z / T)`` for logits, ``softmax(z)`` for log-probabilities, ``z / sum z`` for
probabilities: normalised inputs stay as they are, and the float32 rounding of their normaliser
is not counted as divergence); a class the base gives probability 0 adds 0; a NaN makes the
row's KL NaN. The op works in float32 with float64 sums, and is accurate to about 1e-7 relative
at any KL size (``custom_ops/core/row_kl.h`` says how: the textbook float32 form cannot resolve a
KL below about 1e-7).

:class:`KLStage` runs it per batch: through the core directly (``kldiv_onnx._core``, no
session), or in a session of the KL model where that module is not built; both give the same
bits. Where the library is not built, :func:`kl_rows` computes the same in float64 with numpy.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from .. import native, runtime
from .._contract import DEFAULT_OPSET, DOMAIN, DOMAIN_VERSION, IR_VERSION, ROW_KINDS, ROWS_OP
from ..data_files import (
    FLOAT_DTYPES,
    cast_hint,
    declared_dims,
    elem_dtype,
    feedable,
)
from ..model_io import load_model
from .shards import Column

KINDS = ROW_KINDS
"""What the compared outputs hold along their last axis."""
Dim = int | str | None
ModelLike = onnx.ModelProto | bytes | str | os.PathLike


@dataclass(frozen=True)
class Tensor:
    """A graph input or output: element type (numpy dtype, ``None`` if not a tensor of a numpy
    type) and dims (ints, names or ``None``; ``None`` for an unknown rank)."""

    dtype: np.dtype | None
    dims: tuple[Dim, ...] | None

    def describe(self) -> str:
        dims = "?" if self.dims is None else "(" + ", ".join(map(_dim, self.dims)) + ")"
        return f"{self.dtype} {dims}"


def _dim(d: Dim) -> str:
    return "?" if d is None else str(d)


def _tensor(value: onnx.ValueInfoProto) -> Tensor:
    t = value.type.tensor_type
    return Tensor(elem_dtype(t.elem_type), declared_dims(t))


@dataclass
class ModelInfo:
    """One compared model: a label for the report, its serialized bytes (sessions are built
    from them, here and on Ray workers), its inputs and outputs."""

    label: str
    data: bytes
    inputs: dict[str, Tensor]
    outputs: dict[str, Tensor]


def _load_proto(model: object, what: str) -> onnx.ModelProto:
    """The project's one loader where it exists (external data read beside the file)."""
    try:
        return load_model(model, what)  # type: ignore[arg-type]
    except FileNotFoundError as exc:
        raise ValueError(str(exc)) from exc


def load(model: object, role: str) -> ModelInfo:
    """Read ``model`` (a path, bytes or ``ModelProto``); ``ValueError`` naming ``role`` and the
    file when it cannot be read."""
    if isinstance(model, (str, os.PathLike)):
        label = os.fspath(model)
    elif isinstance(model, onnx.ModelProto):
        label = f"<ModelProto {model.graph.name or 'graph'}>"
    elif isinstance(model, (bytes, bytearray)):
        label = f"<{len(model)} bytes>"
    else:
        raise TypeError(f"{role} model must be a path, bytes or a ModelProto, got {type(model)}")
    proto = _load_proto(model, f"{role} model")
    initializers = {i.name for i in proto.graph.initializer}
    inputs = {v.name: _tensor(v) for v in proto.graph.input if v.name not in initializers}
    outputs = {v.name: _tensor(v) for v in proto.graph.output}
    return ModelInfo(label, proto.SerializeToString(), inputs, outputs)


def pick_outputs(base: ModelInfo, candidate: ModelInfo, output: str | None) -> tuple[str, str]:
    """Check that the models take the same inputs and have comparable outputs; the compared
    output's name in each.

    ``output`` names it in both; by default a single output each (names may differ), or else the
    first output of the base, which the candidate must also have.
    """
    if set(base.inputs) != set(candidate.inputs):
        raise ValueError(
            f"the models take different inputs: base {sorted(base.inputs)}, "
            f"candidate {sorted(candidate.inputs)}"
        )
    if output is not None:
        for role, info in (("base", base), ("candidate", candidate)):
            if output not in info.outputs:
                raise ValueError(
                    f"the {role} model has no output {output!r}; its outputs are "
                    f"{list(info.outputs)}"
                )
        names = (output, output)
    elif len(base.outputs) == 1 and len(candidate.outputs) == 1:
        names = (next(iter(base.outputs)), next(iter(candidate.outputs)))
    else:
        first = next(iter(base.outputs))
        if first not in candidate.outputs:
            raise ValueError(
                f"the models have several outputs and the candidate has no {first!r}: "
                f"name the compared output (base {list(base.outputs)}, "
                f"candidate {list(candidate.outputs)})"
            )
        names = (first, first)
    b, c = base.outputs[names[0]], candidate.outputs[names[1]]
    for role, name, t in (("base", names[0], b), ("candidate", names[1], c)):
        if t.dtype is not None and t.dtype not in FLOAT_DTYPES:
            raise ValueError(
                f"the {role} model's output {name!r} is {t.dtype}, not a floating-point tensor"
            )
        if t.dims is not None and len(t.dims) < 2:
            raise ValueError(
                f"the {role} model's output {name!r} has shape {t.describe()}: it needs a "
                "batch axis and a class axis (the last)"
            )
    if b.dims is not None and c.dims is not None:
        same = len(b.dims) == len(c.dims) and all(
            not (isinstance(x, int) and isinstance(y, int)) or x == y
            for x, y in zip(b.dims, c.dims, strict=True)
        )
        if not same:
            raise ValueError(
                f"the models' outputs differ in shape: base {names[0]!r} {b.describe()}, "
                f"candidate {names[1]!r} {c.describe()}"
            )
    return names


def check_data(
    base: ModelInfo,
    candidate: ModelInfo,
    columns: Mapping[str, Column],
    batch_size: int,
    cast: str = "no",
) -> dict[str, np.dtype]:
    """Check that the data has a column for every model input, of a compatible shape and of the
    input's dtype (or, with ``cast`` of :data:`~kldiv_onnx.data_files.CASTS` other than ``no``,
    a numeric dtype: :func:`~kldiv_onnx.data_files.feedable`); the dtype each input is fed as."""
    missing = [name for name in base.inputs if name not in columns]
    if missing:
        raise ValueError(
            f"the data has no column for model input(s) {missing}; its columns are {list(columns)}"
        )
    feed_types: dict[str, np.dtype] = {}
    for name in base.inputs:
        column = columns[name]
        for role, info in (("base", base), ("candidate", candidate)):
            t = info.inputs[name]
            if t.dims is not None and column.shape is not None:
                row_dims = t.dims[1:]
                ok = len(row_dims) == len(column.shape) and all(
                    not isinstance(d, int) or d == s
                    for d, s in zip(row_dims, column.shape, strict=True)
                )
                if not ok:
                    raise ValueError(
                        f"column {name!r} has rows of shape {list(column.shape)}; the {role} "
                        f"model's input {name!r} is {t.describe()} (the first axis is the batch)"
                    )
            if t.dims and isinstance(t.dims[0], int) and t.dims[0] != batch_size:
                raise ValueError(
                    f"the {role} model's input {name!r} has a fixed batch of {t.dims[0]}: "
                    f"export it with a dynamic batch axis, or use a batch size of {t.dims[0]} "
                    "on a data set of a multiple of that many samples"
                )
            if t.dtype is not None:
                if not feedable(column.dtype, t.dtype, cast):
                    raise ValueError(
                        f"column {name!r} holds {column.dtype}; the {role} model's input "
                        f"{name!r} takes {t.dtype}{cast_hint(column.dtype, t.dtype)}"
                    )
                feed_types[name] = t.dtype
        feed_types.setdefault(name, column.dtype)
    return feed_types


def kl_model(kind: str, temperature: float, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """The KL model of the module doc for outputs of ``kind`` at ``temperature``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    dims = ["n", "classes"]
    node = helper.make_node(
        ROWS_OP,
        ["base", "candidate"],
        ["kl", "agree"],
        domain=DOMAIN,
        name="kl_rows",
        kind=kind,
        temperature=float(temperature),
    )
    graph = helper.make_graph(
        [node],
        f"compare_{kind.replace('-', '_')}",
        [
            helper.make_tensor_value_info("base", TensorProto.FLOAT, dims),
            helper.make_tensor_value_info("candidate", TensorProto.FLOAT, dims),
        ],
        [
            helper.make_tensor_value_info("kl", TensorProto.DOUBLE, ["n"]),
            helper.make_tensor_value_info("agree", TensorProto.BOOL, ["n"]),
        ],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(DOMAIN, DOMAIN_VERSION)],
        ir_version=IR_VERSION,
        producer_name="kldiv-onnx compare",
    )
    onnx.checker.check_model(model)
    return model


def log_softmax(z: np.ndarray) -> np.ndarray:
    """Log-softmax over the last axis, in float64."""
    z = np.asarray(z, dtype=np.float64)
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def kl_rows(
    base: np.ndarray, candidate: np.ndarray, kind: str, temperature: float
) -> tuple[np.ndarray, np.ndarray]:
    """The KL model's outputs in float64 with numpy: per row of ``(n, classes)`` the KL
    divergence and whether the top-1 classes agree."""
    with np.errstate(all="ignore"):
        logs = []
        for z in (base, candidate):
            z = np.asarray(z, dtype=np.float64)
            if kind == "probs":
                logs.append(np.log(z / z.sum(axis=-1, keepdims=True)))
                continue
            logs.append(log_softmax(z / temperature if kind == "logits" else z))
        lp, lq = logs
        p = np.exp(lp)
        terms = p * (lp - lq)
        terms[(p == 0) & ~np.isnan(lq) & ~np.isnan(lp)] = 0.0  # 0 log 0 = 0
        kl = terms.sum(axis=-1)
    agree = np.asarray(base).argmax(axis=-1) == np.asarray(candidate).argmax(axis=-1)
    return kl, agree


PROBS_SUM_TOLERANCE = 1e-2
"""How far from 1 a row of kind 'probs' may sum before :func:`check_probs` warns (float16
softmax rows are off by up to about 1e-3)."""


def check_probs(base: np.ndarray, candidate: np.ndarray, outputs: tuple[str, str]) -> None:
    """Check that a batch of both models' ``(n, classes)`` outputs (named ``outputs``),
    compared as kind 'probs', looks like probabilities. A negative value is an error: its row's
    KL is NaN, so a report of such outputs (logits, log-probabilities) would measure nothing. A
    row far from summing to 1 is divided by its sum, as the kind says, with one warning:
    non-negative scores may be meant, or may be logits that happen to be positive."""
    roles = (("base", base, outputs[0]), ("candidate", candidate, outputs[1]))
    for role, values, output in roles:
        negative = values < 0
        if negative.any():
            raise ValueError(
                f"kind probs takes probabilities, but the {role} model's output {output!r} "
                f"holds negative values (min {float(values[negative].min()):.4g}): compare "
                "logits with kind logits, log-probabilities with kind log-probs"
            )
    for role, values, output in roles:
        sums = values.sum(axis=-1, dtype=np.float64)
        off = np.abs(sums - 1) > PROBS_SUM_TOLERANCE
        if off.any():
            warnings.warn(
                f"kind probs: rows of the {role} model's output {output!r} sum to "
                f"{float(sums[off][0]):.4g}, not 1; each row is divided by its sum (if they "
                "are logits, compare with kind logits)",
                stacklevel=2,
            )
            return


KL_WAYS = {
    "core": "native KLDivRows, called directly (kldiv_onnx._core)",
    "session": "native KLDivRows op, in an onnxruntime session",
    "numpy": "numpy float64 (native library not built)",
}
"""How the KL stage runs (:attr:`KLStage.path`), as reports name it."""


def kl_way(library: str | None) -> str:
    """The :data:`KL_WAYS` key of a :class:`KLStage` on ``library`` in this process."""
    if library is None:
        return "numpy"
    return "core" if native.core() is not None else "session"


class KLStage:
    """The KL model's outputs for one batch of both models' float32 ``(n, classes)`` outputs:
    the core called directly (:func:`kldiv_onnx.native.core`: no session, whose run from Python
    costs about 20 µs on this project's machines, more than the KL of a 256 × 10 batch) on
    ``threads`` threads (None: every core), or, where that module is not built, a session of
    ``model`` (the KL model); both give the op's bits. :func:`kl_rows` where ``library`` (the
    native library's path) is None."""

    def __init__(
        self, model: bytes, kind: str, temperature: float, library: str | None, threads: int | None
    ) -> None:
        self.kind = kind
        self.temperature = temperature
        self.threads = 0 if threads is None else threads
        self.path = kl_way(library)
        """How the batches go: a key of :data:`KL_WAYS`."""
        self.core = native.core() if self.path == "core" else None
        self.session = None
        if self.path == "session":
            self.session = runtime.session(
                model, providers=["CPUExecutionProvider"], threads=threads, fused=True
            )

    def __call__(self, base: np.ndarray, candidate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.core is not None:
            rows = base.shape[0]
            kl, agree = np.empty(rows), np.empty(rows, dtype=bool)
            self.core.row_kl(
                np.ascontiguousarray(base),
                np.ascontiguousarray(candidate),
                self.kind,
                self.temperature,
                kl,
                agree,
                self.threads,
            )
            return kl, agree
        if self.session is not None:  # float32 in, float64 and bool out: the plain run
            kl, agree = self.session.run(None, {"base": base, "candidate": candidate})
            return kl, agree
        return kl_rows(base, candidate, self.kind, self.temperature)
