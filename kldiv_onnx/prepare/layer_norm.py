"""``LayerNormalization`` (ai.onnx 17) as opset-15 ops on the CANN graph-mode list.

As onnx's function body of the op, with ``Div`` for its ``Reciprocal``/``Mul`` and no
``CastLike``: over the axes ``axis..rank-1``, in the ``stash_type`` (float32)::

    mean = ReduceMean(x); d = x - mean; var = ReduceMean(d * d)
    y = Cast(d / Sqrt(var + epsilon), to=x's type) * scale (+ bias)

Only the first output (``Y``) may be used: the ``Mean`` and ``InvStdDev`` outputs are reported.
"""

# Rule methods take pattern variables bound by name (onnxscript values or ir.Value); typing
# each one adds noise, as in interop/fuse.py.
# ruff: noqa: ANN001, ANN201

from __future__ import annotations

from onnxscript.rewriter import pattern

from ._common import attr, constant

_FLOAT = 1  # TensorProto.FLOAT: the stash type onnx allows


def axes_of(x: object, out: object) -> tuple[list[int] | None, str | None]:
    """The normalised axes (negative), or a reason they cannot be known statically."""
    axis = attr(out, "axis", -1)  # type: ignore[arg-type]
    if axis < 0:
        return list(range(axis, 0)), None
    shape = getattr(x, "shape", None)
    if shape is None:
        return None, f"LayerNormalization axis={axis} on an input of unknown rank"
    rank = len(shape)
    return list(range(axis - rank, 0)), None


def reason(x: object, out: object) -> str | None:
    """Why the rule cannot lower the ``LayerNormalization`` producing ``out`` (None: it can)."""
    node = out.producer()  # type: ignore[attr-defined]
    if getattr(x, "dtype", None) is None:
        return "LayerNormalization input of unknown element type"
    if any(o.uses() or o.is_graph_output() for o in node.outputs[1:]):
        return "LayerNormalization's Mean or InvStdDev output is used"
    if attr(out, "stash_type", _FLOAT) != _FLOAT:
        return "LayerNormalization stash_type is not float32"
    _, why = axes_of(x, out)
    return why


class LayerNormToReduceMean(pattern.RewriteRuleClassBase):
    """``LayerNormalization(x, scale[, bias])`` → ReduceMean/Sub/Mul/Sqrt/Div/Add."""

    def pattern(self, op, x, scale):
        return op.LayerNormalization(x, scale, _allow_other_inputs=True, _outputs=["out"])

    def check(self, context, x, scale, out, **_) -> pattern.MatchResult:
        result = pattern.MatchResult()
        why = reason(x, out)
        return result.fail(why) if why else result

    def rewrite(self, op, x, scale, out, **_):
        node = out.producer()
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        axes, _ = axes_of(x, out)
        epsilon = attr(out, "epsilon", 1e-5)
        wide = x.dtype is not None and x.dtype.numpy().itemsize < 4  # float16, bfloat16
        xf = op.Cast(x, to=_FLOAT) if wide else x
        stash = None if wide else x.dtype
        mean = op.ReduceMean(xf, axes=axes, keepdims=1)
        d = op.Sub(xf, mean)
        var = op.ReduceMean(op.Mul(d, d), axes=axes, keepdims=1)
        normalized = op.Div(d, op.Sqrt(op.Add(var, constant(op, epsilon, stash))))
        if wide:
            normalized = op.Cast(normalized, to=x.dtype)
        y = op.Mul(normalized, scale)
        return op.Add(y, bias) if bias is not None else y


def rules() -> list[pattern.RewriteRule]:
    return [LayerNormToReduceMean.rule()]
