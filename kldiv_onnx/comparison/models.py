"""The two compared models (their inputs, the compared output, checks against each other and
the data) and the KL model that measures them with the project's op.

The KL model takes both outputs as float32 ``(n, classes)`` and gives, per row, the KL
divergence in float64:

    log P = LogSoftmax(base / T) (kind 'logits'), base ('log-probs'), Log(base) ('probs')
    terms = kldiv_onnx.KLDivLoss_none_logtarget(input=log Q, target=log P)  # P (log P − log Q)
    terms = Where(log P == -inf, 0, terms)          # masked model only: the limit 0·log 0 = 0,
                                                    # not exp(-inf)·inf (unless log Q is NaN)
    kl    = ReduceSum(Cast(terms, double), axis=-1) # float32 math, float64 accumulation

The mask costs more than the op itself, and a batch needs it only where the base gives a class
probability 0 (a zero probability, a -inf log-probability or logit): the engines check that
with numpy and run the masked model only then. For every other row the two models give the
same bits. Top-1 agreement is numpy's ``argmax`` of both raw outputs (first index on ties).

``KLDivLoss_none_logtarget`` runs as the fused native kernel where the library is built
(:mod:`kldiv_onnx.native`), otherwise as its function body.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

import ml_dtypes
import numpy as np
import onnx
from onnx import TensorProto, helper

from .._contract import DEFAULT_OPSET, DOMAIN, DOMAIN_VERSION, IR_VERSION, op_name
from ..export import build_model
from ..model_io import load_model
from .data import Column

KINDS = ("logits", "log-probs", "probs")
"""What the compared outputs hold along their last axis."""

_FLOAT_TYPES = {
    TensorProto.FLOAT: np.dtype(np.float32),
    TensorProto.FLOAT16: np.dtype(np.float16),
    TensorProto.BFLOAT16: np.dtype(ml_dtypes.bfloat16),
    TensorProto.DOUBLE: np.dtype(np.float64),
}

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
    dtype = None
    if t.elem_type:
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type))
        except (KeyError, TypeError):
            dtype = None
        if t.elem_type == TensorProto.BFLOAT16:
            dtype = np.dtype(ml_dtypes.bfloat16)
    if not t.HasField("shape"):
        return Tensor(dtype, None)
    dims = tuple(
        d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim
    )
    return Tensor(dtype, dims)


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
        if t.dtype is not None and t.dtype not in _FLOAT_TYPES.values():
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
    base: ModelInfo, candidate: ModelInfo, columns: Mapping[str, Column], batch_size: int
) -> dict[str, np.dtype]:
    """Check that the data has a column for every model input, of a compatible shape and dtype;
    the dtype each input is fed as."""
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
                want = t.dtype
                if want != column.dtype and not np.can_cast(column.dtype, want, "same_kind"):
                    raise ValueError(
                        f"column {name!r} holds {column.dtype}; the {role} model's input "
                        f"{name!r} takes {want}"
                    )
                feed_types[name] = want
        feed_types.setdefault(name, column.dtype)
    return feed_types


def kl_model(
    kind: str, temperature: float, opset: int = DEFAULT_OPSET, *, masked: bool = False
) -> onnx.ModelProto:
    """The KL model of the module doc for outputs of ``kind`` at ``temperature``; ``masked``
    adds the mask for zero base probabilities."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    function = build_model("none", True, "float32", form="function", opset=opset).functions[0]
    nodes = []
    initializers = [helper.make_tensor("last_axis", TensorProto.INT64, [1], [-1])]
    scaled = kind == "logits" and temperature != 1.0
    if scaled:
        initializers.append(helper.make_tensor("temperature", TensorProto.FLOAT, [], [temperature]))
    logs = {}
    for name in ("base", "candidate"):
        source = name
        if kind == "logits":
            if scaled:
                nodes.append(helper.make_node("Div", [source, "temperature"], [f"{name}_scaled"]))
                source = f"{name}_scaled"
            nodes.append(helper.make_node("LogSoftmax", [source], [f"{name}_log"], axis=-1))
        elif kind == "probs":
            nodes.append(helper.make_node("Log", [source], [f"{name}_log"]))
        else:
            nodes.append(helper.make_node("Identity", [source], [f"{name}_log"]))
        logs[name] = f"{name}_log"
    terms = "terms"
    nodes.append(
        helper.make_node(
            op_name("none", True),
            [logs["candidate"], logs["base"]],
            [terms],
            domain=DOMAIN,
            name="kldiv",
        )
    )
    if masked:
        initializers += [
            helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
            helper.make_tensor("minus_inf", TensorProto.FLOAT, [], [-math.inf]),
        ]
        nodes += [
            helper.make_node("Equal", [logs["base"], "minus_inf"], ["base_zero"]),
            helper.make_node("IsNaN", [logs["candidate"]], ["candidate_nan"]),
            helper.make_node("Not", ["candidate_nan"], ["candidate_number"]),
            helper.make_node("And", ["base_zero", "candidate_number"], ["masked"]),
            helper.make_node("Where", ["masked", "zero", terms], ["terms_masked"]),
        ]
        terms = "terms_masked"
    nodes += [
        helper.make_node("Cast", [terms], ["terms64"], to=TensorProto.DOUBLE),
        helper.make_node("ReduceSum", ["terms64", "last_axis"], ["kl"], keepdims=0),
    ]
    dims = ["n", "classes"]
    graph = helper.make_graph(
        nodes,
        f"compare_{kind.replace('-', '_')}" + ("_masked" if masked else ""),
        [
            helper.make_tensor_value_info("base", TensorProto.FLOAT, dims),
            helper.make_tensor_value_info("candidate", TensorProto.FLOAT, dims),
        ],
        [helper.make_tensor_value_info("kl", TensorProto.DOUBLE, ["n"])],
        initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(DOMAIN, DOMAIN_VERSION)],
        functions=[function],
        ir_version=IR_VERSION,
        producer_name="kldiv-onnx compare",
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def needs_mask(kind: str, temperature: float, base: np.ndarray) -> bool:
    """Whether a batch of base outputs has a zero class probability, so that the masked KL
    model must run (a temperature other than 1 may overflow logits to -inf: always)."""
    if kind == "probs":
        return bool(np.any(base == 0))
    return temperature != 1.0 or bool(np.any(np.isneginf(base)))
