"""``Gelu`` (ai.onnx 20) as opset-15 ops on the CANN graph-mode list.

``approximate='none'``: ``0.5 * x * (1 + Erf(x / sqrt(2)))``;
``approximate='tanh'``: ``0.5 * x * (1 + Tanh(sqrt(2 / pi) * (x + 0.044715 * x**3)))``
(``x**3`` as two ``Mul``), computed in ``x``'s type as onnx's function body of ``Gelu`` does.
"""

# Rule methods take pattern variables bound by name (onnxscript values or ir.Value); typing
# each one adds noise, as in interop/fuse.py.
# ruff: noqa: ANN001, ANN201

from __future__ import annotations

import math

from onnxscript.rewriter import pattern

from ._common import attr, constant

APPROXIMATIONS = ("none", "tanh")


def reason(out: object) -> str | None:
    """Why the rule cannot lower the ``Gelu`` producing ``out`` (None: it can)."""
    node = out.producer()  # type: ignore[attr-defined]
    if node is None or not node.inputs or node.inputs[0] is None or node.inputs[0].dtype is None:
        return "Gelu input of unknown element type"
    approximate = attr(out, "approximate", "none")  # type: ignore[arg-type]
    if approximate not in APPROXIMATIONS:
        return f"Gelu approximate={approximate!r} is neither 'none' nor 'tanh'"
    return None


class GeluToErfOrTanh(pattern.RewriteRuleClassBase):
    """``Gelu(x)`` → its Erf or tanh form."""

    def pattern(self, op, x):
        return op.Gelu(x, _outputs=["out"])

    def check(self, context, x, out, **_) -> pattern.MatchResult:
        result = pattern.MatchResult()
        why = reason(out)
        return result.fail(why) if why else result

    def rewrite(self, op, x, out, **_):
        dtype = x.dtype
        half = op.Mul(constant(op, 0.5, dtype), x)
        if attr(out, "approximate", "none") == "tanh":
            cube = op.Mul(op.Mul(x, x), x)
            inner = op.Add(x, op.Mul(constant(op, 0.044715, dtype), cube))
            core = op.Tanh(op.Mul(constant(op, math.sqrt(2.0 / math.pi), dtype), inner))
        else:
            core = op.Erf(op.Div(x, constant(op, math.sqrt(2.0), dtype)))
        return op.Mul(half, op.Add(constant(op, 1.0, dtype), core))


def rules() -> list[pattern.RewriteRule]:
    return [GeluToErfOrTanh.rule()]
