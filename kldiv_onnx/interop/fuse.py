"""``fuse``: replace the KL-divergence subgraphs PyTorch exports with one KLDivLoss node.

``torch.onnx.export`` decomposes ``F.kl_div`` into standard ops. The rules below, written for
onnxscript's rewriter (one :class:`~onnxscript.rewriter.pattern.RewriteRuleClassBase` per
pattern), find them and put back the single ``kldiv_onnx`` node in function form (its
model-local function is added). Torch 2.13 writes, at its default opset (20 for both
exporters):

=====================  ===============================================================
pointwise, TorchScript ``Where(Greater(t, 0), Mul(t, Sub(Log(t), x)), ConstantOfShape(Shape(·)))``
pointwise, dynamo      ``Sub(Where(Equal(t, 0), t, Where(IsNaN(t), t, Mul(t, Log(t)))), Mul(t, x))``
log_target (both)      ``Mul(Exp(t), Sub(t, x))``
sum (both)             ``ReduceSum(L, keepdims=0)``
sum, dynamo, float16   ``ReduceSum(Cast(L, to=FLOAT), keepdims=0)``: the sum in float32, and
/bfloat16              the model's output float32 too (eager torch returns the input dtype)
mean                   ``ReduceMean(L, keepdims=0)`` (TorchScript);
                       ``Squeeze(ReduceMean(L, keepdims=1))`` (dynamo)
batchmean              ``Div(ReduceSum(L), n)`` with ``n`` = ``Cast(Gather(Shape(v), 0))``
                       (TorchScript), ``Cast(Squeeze(Shape(v, start=0, end=1)))`` (dynamo),
                       ``v`` being ``x`` or a value of the same first dim (the same int or
                       dim name: ``t``, the model's input), or a constant equal to the
                       static ``x.shape[0]``; dynamo
                       float16/bfloat16: ``Div(Cast(ReduceSum(Cast(L, to=FLOAT)), to=dtype), n)``
=====================  ===============================================================

The rules run in stages, each lifting the previous one's node: the pointwise patterns become
``KLDivLoss_none[_logtarget]``; a reduction over that becomes ``…_sum``/``…_mean`` (a float32
sum of a float16/bfloat16 loss cast back to the loss's type included); a float32 sum left over
(dynamo's float16/bfloat16 ``sum``) becomes ``Cast(…_sum, to=FLOAT)``, so that the model keeps
its float32 output; a division of ``…_sum`` by the batch size becomes ``…_batchmean``. So a
loss is fused as far as its pattern goes, and every stage's result is a valid model.

Where the fused graph differs from the exported one (on inputs outside the op's domain only):

* TorchScript export, ``log_target=False``: the graph gives 0 where ``target < 0`` or
  ``target`` is NaN (``Where(t > 0, …, 0)``); the op gives NaN there, like PyTorch eager.
* dynamo export, ``log_target=False``: where ``target == 0`` and ``input`` is ``-inf`` or NaN
  the graph gives NaN (``0 * -inf``, as PyTorch eager); the op gives 0, the limit.
* ``mean`` of an empty tensor: onnxruntime's ``ReduceMean`` gives 0, the op NaN.
* dynamo export, float16/bfloat16 ``sum``: the graph's float32 sum of the loss (rounded to its
  dtype term by term) becomes the op's sum rounded once to the dtype and cast to float32: the
  two differ by up to half an ulp of the dtype.

On valid inputs (``target >= 0`` and finite ``input``, or any log-target) the outputs agree
to rounding. Fusing needs ai.onnx >= 13 (the function body's opset) and a known float32,
float16 or bfloat16 input type; one model holds each variant for one dtype only, so a second
dtype of the same variant raises ``ValueError``.
"""

# Rule methods take pattern variables bound by name (onnxscript values or ir.Value); typing
# each one adds noise, as in composite.py.
# ruff: noqa: ANN001, ANN201

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import onnx
import onnx.shape_inference
import onnx_ir as ir
from onnxscript.rewriter import pattern

from .._contract import (
    DOMAIN,
    DOMAIN_VERSION,
    IR_VERSION,
    MIN_OPSET,
    ONNX_TYPE_NAMES,
    ONNX_TYPES,
    Variant,
    op_name,
    variant_of,
)
from ..export import add_function
from ..model_io import ModelLike, load_model

_DTYPES = ONNX_TYPE_NAMES  # ir.DataType is an int enum: it keys this dict as it is


class Fused(NamedTuple):
    """The result of :func:`fuse`: the new model, how many losses were fused, and into what."""

    model: onnx.ModelProto
    count: int
    ops: dict[str, int]
    """Op name → number of nodes of it in the fused model's main graph."""


# --- helpers used by the checks ---------------------------------------------------------------


def _scalar(value: ir.Value | None) -> float | None:
    """The value of a constant scalar (Constant node output or initializer), else None."""
    if value is None or value.const_value is None:
        return None
    array = value.const_value.numpy()
    return float(array.reshape(())) if array.size == 1 and array.ndim <= 1 else None


def _attr(value: ir.Value, name: str, default: Any = None) -> Any:
    attr = value.producer().attributes.get(name)  # type: ignore[union-attr]
    return default if attr is None else attr.value


def _loss_inputs(result: pattern.MatchResult, x: ir.Value, t: ir.Value) -> pattern.MatchResult:
    """Both inputs of one supported float dtype (the function body is specialised to it)."""
    if x.dtype not in _DTYPES:
        return result.fail(f"input {x.name!r} has type {x.dtype}, not one of {list(ONNX_TYPES)}")
    if t.dtype != x.dtype:
        return result.fail(f"target {t.name!r} has type {t.dtype}, input {x.dtype}")
    return result


def _same_dim(a: ir.Value, b: ir.Value, axis: int) -> bool:
    if a is b:
        return True
    if a.shape is None or b.shape is None or len(a.shape) <= axis or len(b.shape) <= axis:
        return False
    da, db = a.shape[axis], b.shape[axis]
    if isinstance(da, int) or isinstance(db, int):
        return da == db
    return da.value is not None and da.value == db.value


def _kl(op: Any, reduction: str, log_target: bool, x: ir.Value, t: ir.Value) -> ir.Value:
    """The fused node (rewrite side), or its pattern (pattern side: ``version`` is None)."""
    make = getattr(op, op_name(reduction, log_target))
    return make(x, t, _domain=DOMAIN, _version=DOMAIN_VERSION)


def _kl_pattern(op: Any, reduction: str, log_target: bool, x: Any, t: Any) -> Any:
    return getattr(op, op_name(reduction, log_target))(x, t, _domain=DOMAIN)


# --- stage 1: the pointwise loss --------------------------------------------------------------


class TorchScriptPointwise(pattern.RewriteRuleClassBase):
    """``F.kl_div(log_target=False)`` elementwise, as the TorchScript exporter writes it."""

    def pattern(self, op, x, t, zero):
        loss = op.Mul(t, op.Sub(op.Log(t), x))
        fill = op.ConstantOfShape(op.Shape(loss), _outputs=["fill"])
        return op.Where(op.Greater(t, zero), loss, fill)

    def check(self, context, x, t, zero, fill, **_) -> pattern.MatchResult:
        result = pattern.MatchResult()
        if _scalar(zero) != 0.0:
            return result.fail(f"Greater compares with {zero.name!r}, not the constant 0")
        value = _attr(fill, "value")
        if value is not None and np.any(value.numpy() != 0):
            return result.fail("ConstantOfShape does not fill with 0")
        return _loss_inputs(result, x, t)

    def rewrite(self, op, x, t, **_):
        return _kl(op, "none", False, x, t)


class DynamoPointwise(pattern.RewriteRuleClassBase):
    """``F.kl_div(log_target=False)`` elementwise, as the dynamo exporter writes it (xlogy)."""

    def pattern(self, op, x, t, zero):
        with_nans = op.Where(op.IsNaN(t), t, op.Mul(t, op.Log(t)))
        xlogy = op.Where(op.Equal(t, zero), t, with_nans)
        return op.Sub(xlogy, op.Mul(t, x))

    def check(self, context, x, t, zero, **_) -> pattern.MatchResult:
        result = pattern.MatchResult()
        if _scalar(zero) != 0.0:
            return result.fail(f"Equal compares with {zero.name!r}, not the constant 0")
        return _loss_inputs(result, x, t)

    def rewrite(self, op, x, t, **_):
        return _kl(op, "none", False, x, t)


class LogTargetPointwise(pattern.RewriteRuleClassBase):
    """``F.kl_div(log_target=True)`` elementwise (both exporters): ``exp(t) * (t - x)``."""

    def pattern(self, op, x, t):
        return op.Mul(op.Exp(t), op.Sub(t, x))

    def check(self, context, x, t, **_) -> pattern.MatchResult:
        return _loss_inputs(pattern.MatchResult(), x, t)

    def rewrite(self, op, x, t, **_):
        return _kl(op, "none", True, x, t)


# --- stage 2: sum and mean over the pointwise loss --------------------------------------------


def _reduces_all(result: pattern.MatchResult, out: ir.Value, keepdims: int) -> pattern.MatchResult:
    node = out.producer()
    assert node is not None
    if len(node.inputs) != 1 or "axes" in node.attributes:
        return result.fail(f"{node.op_type} {node.name!r} reduces over given axes, not all")
    if _attr(out, "keepdims", 1) != keepdims:
        return result.fail(f"{node.op_type} {node.name!r} has keepdims != {keepdims}")
    if _attr(out, "noop_with_empty_axes", 0) != 0:
        return result.fail(f"{node.op_type} {node.name!r} has noop_with_empty_axes=1")
    return result


class _Reduction(pattern.RewriteRuleClassBase):
    def __init__(self, log_target: bool) -> None:
        super().__init__(f"{type(self).__name__}{'_logtarget' if log_target else ''}")
        self.log_target = log_target


class SumOfLoss(_Reduction):
    """``ReduceSum(L, keepdims=0)`` of the pointwise loss: ``reduction='sum'``."""

    def pattern(self, op, x, t):
        loss = _kl_pattern(op, "none", self.log_target, x, t)
        return op.ReduceSum(loss, _outputs=["total"])

    def check(self, context, x, t, total, **_) -> pattern.MatchResult:
        return _reduces_all(pattern.MatchResult(), total, keepdims=0)

    def rewrite(self, op, x, t, **_):
        return _kl(op, "sum", self.log_target, x, t)


def _casts_around(
    result: pattern.MatchResult, x: ir.Value, up: ir.Value, down: ir.Value | None
) -> pattern.MatchResult:
    """``up`` casts the loss to float32 and ``down`` (if any) casts the sum back to the input's
    type: the float32 accumulation torch writes for a float16/bfloat16 sum."""
    if _attr(up, "to") != ir.DataType.FLOAT:
        return result.fail(f"{up.name!r} casts the loss to {_attr(up, 'to')}, not float32")
    if down is not None and _attr(down, "to") != x.dtype:
        return result.fail(f"{down.name!r} casts the sum to {_attr(down, 'to')}, not {x.dtype}")
    return result


class SumOfUpcastLoss(_Reduction):
    """``Cast(ReduceSum(Cast(L, to=FLOAT), keepdims=0), to=dtype)`` (dynamo, float16/bfloat16,
    the sum inside batchmean): the sum in float32, back in the loss's type: ``'sum'``."""

    def pattern(self, op, x, t):
        loss = _kl_pattern(op, "none", self.log_target, x, t)
        total = op.ReduceSum(op.Cast(loss, _outputs=["up"]), _outputs=["total"])
        return op.Cast(total, _outputs=["down"])

    def check(self, context, x, t, up, total, down, **_) -> pattern.MatchResult:
        result = _reduces_all(pattern.MatchResult(), total, keepdims=0)
        return _casts_around(result, x, up, down) if result else result

    def rewrite(self, op, x, t, **_):
        return _kl(op, "sum", self.log_target, x, t)


class Float32SumOfLoss(_Reduction):
    """``ReduceSum(Cast(L, to=FLOAT), keepdims=0)`` left as the result (dynamo, float16/bfloat16
    ``sum``: the model outputs float32): ``Cast(…_sum, to=FLOAT)`` keeps that output type."""

    def pattern(self, op, x, t):
        loss = _kl_pattern(op, "none", self.log_target, x, t)
        return op.ReduceSum(op.Cast(loss, _outputs=["up"]), _outputs=["total"])

    def check(self, context, x, t, up, total, **_) -> pattern.MatchResult:
        result = _reduces_all(pattern.MatchResult(), total, keepdims=0)
        if result and x.dtype == ir.DataType.FLOAT:
            return result.fail("the loss is float32 already")
        return _casts_around(result, x, up, None) if result else result

    def rewrite(self, op, x, t, **_):
        return op.Cast(_kl(op, "sum", self.log_target, x, t), to=ir.DataType.FLOAT)


class MeanOfLoss(_Reduction):
    """``ReduceMean(L, keepdims=0)`` (TorchScript): ``reduction='mean'``."""

    def pattern(self, op, x, t):
        loss = _kl_pattern(op, "none", self.log_target, x, t)
        return op.ReduceMean(loss, _outputs=["mean"])

    def check(self, context, x, t, mean, **_) -> pattern.MatchResult:
        return _reduces_all(pattern.MatchResult(), mean, keepdims=0)

    def rewrite(self, op, x, t, **_):
        return _kl(op, "mean", self.log_target, x, t)


class SqueezedMeanOfLoss(_Reduction):
    """``Squeeze(ReduceMean(L, keepdims=1))`` (dynamo): ``reduction='mean'``."""

    def pattern(self, op, x, t):
        loss = _kl_pattern(op, "none", self.log_target, x, t)
        return op.Squeeze(op.ReduceMean(loss, _outputs=["mean"]))

    def check(self, context, x, t, mean, **_) -> pattern.MatchResult:
        return _reduces_all(pattern.MatchResult(), mean, keepdims=1)

    def rewrite(self, op, x, t, **_):
        return _kl(op, "mean", self.log_target, x, t)


# --- stage 3: the sum divided by the batch size -----------------------------------------------


class _BatchMean(_Reduction):
    def _sum(self, op, x, t):
        return _kl_pattern(op, "sum", self.log_target, x, t)

    def _batch_of(self, result: pattern.MatchResult, x, t, source) -> pattern.MatchResult:
        """The divisor is ``input.shape[0]``: read from the input, or from any value whose
        first dim is known to equal it (the same int or dim name: dynamo reads the batch
        size from whichever value it met first, e.g. the model's input before its layers)."""
        if source is not x and not _same_dim(x, source, 0):
            return result.fail(f"divides by a size of {source.name!r}, not input.shape[0]")
        return result

    def rewrite(self, op, x, t, **_):
        return _kl(op, "batchmean", self.log_target, x, t)


class SumOverGatheredBatch(_BatchMean):
    """``Div(sum, Cast(Gather(Shape(x), 0)))`` (TorchScript, dynamic batch)."""

    def pattern(self, op, x, t, source, index):
        rows = op.Gather(op.Shape(source, _outputs=["shape"]), index, axis=0)
        return op.Div(self._sum(op, x, t), op.Cast(rows, _outputs=["rows"]))

    def check(self, context, x, t, source, index, shape, rows, **_) -> pattern.MatchResult:
        result = pattern.MatchResult()
        if _scalar(index) != 0 or (index.shape is not None and len(index.shape) != 0):
            return result.fail("Gather does not take element 0 of the shape")
        if _attr(shape, "start", 0) != 0 or _attr(shape, "end") is not None:
            return result.fail("Shape is sliced")
        if _attr(rows, "to") != x.dtype:
            return result.fail("batch size not cast to the input's type")
        return self._batch_of(result, x, t, source)


class SumOverSlicedBatch(_BatchMean):
    """``Div(sum, Cast(Squeeze(Shape(x, start=0, end=1))))`` (dynamo, dynamic batch)."""

    def pattern(self, op, x, t, source):
        rows = op.Squeeze(op.Shape(source, _outputs=["shape"]))
        return op.Div(self._sum(op, x, t), op.Cast(rows, _outputs=["rows"]))

    def check(self, context, x, t, source, shape, rows, **_) -> pattern.MatchResult:
        result = pattern.MatchResult()
        if _attr(shape, "start", 0) != 0 or _attr(shape, "end") != 1:
            return result.fail("Shape is not sliced to its first dim")
        if _attr(rows, "to") != x.dtype:
            return result.fail("batch size not cast to the input's type")
        return self._batch_of(result, x, t, source)


class SumOverConstantBatch(_BatchMean):
    """``Div(sum, n)`` with a constant ``n`` equal to the static ``input.shape[0]``."""

    def pattern(self, op, x, t, rows):
        return op.Div(self._sum(op, x, t), rows)

    def check(self, context, x, t, rows, **_) -> pattern.MatchResult:
        result = pattern.MatchResult()
        n = _scalar(rows)
        if n is None:
            return result.fail(f"divisor {rows.name!r} is not a constant")
        if x.shape is None or len(x.shape) == 0 or not isinstance(x.shape[0], int):
            return result.fail(f"input {x.name!r} has no static first dim")
        if n != x.shape[0]:
            return result.fail(f"divisor {n} is not input.shape[0] = {x.shape[0]}")
        return result


def rules() -> list[pattern.RewriteRuleSet]:
    """The stages of rule sets, applied in order (each with commuted variants). A float32 sum
    left as it is (:class:`Float32SumOfLoss`) has a stage of its own after the one that takes
    the sum cast back (:class:`SumOfUpcastLoss`): both start at the same ReduceSum."""
    stage1 = [TorchScriptPointwise.rule(), DynamoPointwise.rule(), LogTargetPointwise.rule()]
    stage2: list = []
    float32_sums: list = []
    stage3: list = []
    for log_target in (False, True):
        stage2 += [
            cls.rule(log_target)
            for cls in (SumOfLoss, SumOfUpcastLoss, MeanOfLoss, SqueezedMeanOfLoss)
        ]
        float32_sums.append(Float32SumOfLoss.rule(log_target))
        stage3 += [
            cls.rule(log_target)
            for cls in (SumOverGatheredBatch, SumOverSlicedBatch, SumOverConstantBatch)
        ]
    stages = (stage1, stage2, float32_sums, stage3)
    return [pattern.RewriteRuleSet(s, commute=True) for s in stages]


# --- the model-level functions ----------------------------------------------------------------


def _kldiv_nodes(graph: ir.Graph) -> list[ir.Node]:
    return [n for n in ir.traversal.RecursiveGraphIterator(graph) if n.domain == DOMAIN]


def fuse_kldiv(model: ir.Model) -> int:
    """Fuse in place (an ``onnx_ir`` model, onnxscript's ``fuse_*`` shape); return the count
    of losses replaced. The new nodes' functions are attached by :func:`fuse`."""
    opset = model.opset_imports.get("", 1)
    if opset < MIN_OPSET:
        return 0
    before = {id(n) for n in _kldiv_nodes(model.graph)}
    used_constants = _used_constants(model.graph)
    counts = [rule_set.apply_to_model(model) for rule_set in rules()]
    if not any(counts):
        return 0
    nodes = _kldiv_nodes(model.graph)
    # new losses, plus existing KLDivLoss nodes a later stage lifted (e.g. none → sum)
    count = counts[0] + len(before - {id(n) for n in nodes})
    _drop_orphaned(model.graph, used_constants)
    return count


def _used_constants(graph: ir.Graph) -> set[int]:
    ids = {id(v) for v in graph.initializers.values() if v.uses()}
    ids |= {
        id(n) for n in graph if n.op_type == "Constant" and n.domain == "" and n.outputs[0].uses()
    }
    return ids


def _drop_orphaned(graph: ir.Graph, used_before: set[int]) -> None:
    """Remove constants the matched subgraphs used and nothing uses any more (the rewriter
    leaves a matched constant's producer in place)."""
    outputs = {id(v) for v in graph.outputs}
    for node in list(graph):
        value = node.outputs[0] if node.outputs else None
        orphan = value is not None and not value.uses() and id(value) not in outputs
        if id(node) in used_before and orphan:
            graph.remove(node, safe=True)
    for name, value in list(graph.initializers.items()):
        orphan = not value.uses() and id(value) not in outputs and value not in graph.inputs
        if id(value) in used_before and orphan:
            del graph.initializers[name]


def _node_dtypes(graph: ir.Graph) -> dict[Variant, str]:
    """The dtype of every variant the graph's KLDivLoss nodes use (one per variant)."""
    dtypes: dict[Variant, str] = {}
    for node in _kldiv_nodes(graph):
        variant = variant_of(node.op_type)
        if variant is None:
            continue
        dtype = _DTYPES.get(node.inputs[0].dtype)  # type: ignore[union-attr,arg-type]
        if dtype is None:
            raise ValueError(f"fuse: {node.op_type} node {node.name!r} has an unknown input type")
        first = dtypes.setdefault(variant, dtype)
        if first != dtype:
            raise ValueError(
                f"fuse: {node.op_type} is used with {first} and {dtype}; one model holds each "
                "variant for one dtype only"
            )
    return dtypes


def fuse(model: ModelLike) -> Fused:
    """Replace every ``F.kl_div`` subgraph torch exported in ``model`` with one KLDivLoss node.

    ``model``: a ``ModelProto``, bytes or a path (external data read from its folder).
    Returns :class:`Fused` ``(model, count, ops)``; ``model`` is a new ``ModelProto`` (the
    argument is never modified) and, when ``count`` is 0, an unchanged copy of it. See the
    module docstring for the patterns matched and where the outputs differ on invalid inputs.
    """
    model = load_model(model)
    try:  # the checks need the types of intermediate values, which exporters may omit
        typed = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # a custom op without a schema or function: fuse what is typed
        typed = model
    ir_model = ir.serde.deserialize_model(typed)
    count = fuse_kldiv(ir_model)
    if count == 0:
        out = onnx.ModelProto()
        out.CopyFrom(model)
        return Fused(out, 0, _count_ops(out))
    ir_model.ir_version = max(ir_model.ir_version, IR_VERSION)
    dtypes = _node_dtypes(ir_model.graph)
    out = ir.serde.serialize_model(ir_model)
    for variant, dtype in dtypes.items():
        try:
            add_function(out, variant, dtype)
        except ValueError as exc:
            raise ValueError(f"fuse: {exc}") from None
    known = {vi.name for vi in model.graph.value_info}  # keep only the value_info it had
    kept = [vi for vi in out.graph.value_info if vi.name in known]
    del out.graph.value_info[:]
    out.graph.value_info.extend(kept)
    return Fused(out, count, _count_ops(out))


def _count_ops(model: onnx.ModelProto) -> dict[str, int]:
    ops: dict[str, int] = {}
    for node in model.graph.node:
        if node.domain == DOMAIN:
            ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return ops
