"""The reductions that took their axes as an input from ai.onnx 18 on, written in their
opset-13 form (axes as an attribute).

``ReduceMean(data, axes)`` (18) → ``ReduceMean(data, axes=[...])`` (13) when ``axes`` is a
constant; with no axes (or empty constant axes) the reduction is over all axes, unless
``noop_with_empty_axes=1`` makes it elementwise (``ReduceL2`` → ``Sqrt(x * x)``,
``ReduceMean`` → ``Identity``, ...). ``ReduceSum`` took its axes as an input already at 13 and
is left alone.
"""

# Rule methods take pattern variables bound by name (onnxscript values or ir.Value); typing
# each one adds noise, as in interop/fuse.py.
# ruff: noqa: ANN001, ANN201

from __future__ import annotations

from onnxscript.rewriter import pattern

from ._common import attr

OPS = (
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSumSquare",
)
"""Reductions whose opset-18 version moved ``axes`` from an attribute to an input."""


def _axes(value: object) -> list[int] | None:
    const = getattr(value, "const_value", None)
    return None if const is None else [int(a) for a in const.numpy().reshape(-1)]


def reason(node: object) -> str | None:
    """Why a Reduce* node (opset >= 18) cannot be written in its opset-13 form."""
    inputs = [v for v in node.inputs if v is not None]  # type: ignore[attr-defined]
    if len(inputs) > 1 and _axes(inputs[1]) is None:
        return f"{node.op_type}'s axes are computed at run time, not a constant"  # type: ignore[attr-defined]
    return None


def _elementwise(op, op_type: str, data):
    """A reduction over no axes: the op applied to each element alone (as onnx's reference
    and onnxruntime compute it)."""
    if op_type in ("ReduceL1",):
        return op.Abs(data)
    if op_type == "ReduceL2":
        return op.Sqrt(op.Mul(data, data))
    if op_type == "ReduceLogSum":
        return op.Log(data)
    if op_type == "ReduceLogSumExp":
        return op.Log(op.Exp(data))
    if op_type == "ReduceSumSquare":
        return op.Mul(data, data)
    return op.Identity(data)  # Mean, Max, Min, Prod of one element


class _Reduction(pattern.RewriteRuleClassBase):
    def __init__(self, op_type: str) -> None:
        super().__init__(f"{type(self).__name__}_{op_type}")
        self.op_type = op_type

    def _write(self, op, data, out, values: list[int]):
        keepdims = attr(out, "keepdims", 1)
        if not values and attr(out, "noop_with_empty_axes", 0):
            return _elementwise(op, self.op_type, data)
        make = getattr(op, self.op_type)
        if values:
            return make(data, axes=values, keepdims=keepdims)
        return make(data, keepdims=keepdims)


class AxesToAttribute(_Reduction):
    """``ReduceX(data, axes)`` with constant axes → ``ReduceX(data, axes=[...])``."""

    def pattern(self, op, data, axes):
        return getattr(op, self.op_type)(data, axes, _outputs=["out"])

    def check(self, context, data, axes, out, **_) -> pattern.MatchResult:
        result = pattern.MatchResult()
        if _axes(axes) is None:
            return result.fail(f"{self.op_type}'s axes are not a constant")
        return result

    def rewrite(self, op, data, axes, out, **_):
        return self._write(op, data, out, _axes(axes) or [])


class DropNoop(_Reduction):
    """``ReduceX(data, noop_with_empty_axes=n)`` (no axes) → the opset-13 node, or its
    elementwise form."""

    def pattern(self, op, data):
        return getattr(op, self.op_type)(data, _outputs=["out"])

    def check(self, context, data, out, **_) -> pattern.MatchResult:
        result = pattern.MatchResult()
        if attr(out, "noop_with_empty_axes") is None:
            return result.fail("already in its opset-13 form")
        return result

    def rewrite(self, op, data, out, **_):
        return self._write(op, data, out, [])


def rules() -> list[pattern.RewriteRule]:
    out: list[pattern.RewriteRule] = []
    for op_type in OPS:
        out += [AxesToAttribute.rule(op_type), DropNoop.rule(op_type)]
    return out
