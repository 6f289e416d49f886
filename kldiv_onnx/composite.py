"""KLDivLoss as onnxscript functions: the portable definition, standard ONNX ops only.

Each variant (reduction × log_target) is its own function in the ``kldiv_onnx`` domain, named
by its :class:`kldiv_onnx._contract.Variant`; no ``overload`` field is used (onnxruntime 1.24 and
``onnx.reference`` ignore it). The bodies use only ops of the CANN graph-mode list (no
``CastLike``, ``IsNaN``, ``If`` or ``Loop``): float16/bfloat16 are cast to float32 on entry and
the result is cast back once, so the body is specialised to one dtype.

The pieces below are written once as onnxscript functions and composed per variant; onnx's
inliner then flattens each variant into a single function body.
"""

from __future__ import annotations

import functools

import onnx
import onnx.inliner
from onnx import FunctionProto, TensorProto, helper
from onnxscript import opset15 as op
from onnxscript import script
from onnxscript.values import Opset

from ._contract import DOMAIN, DOMAIN_VERSION, MIN_OPSET, ONNX_TYPES, Variant, dtype_name
from .graph import rename_values

_kl = Opset(DOMAIN, DOMAIN_VERSION)
_parts = Opset(f"{DOMAIN}.parts", 1)  # only while composing: inlined away below
_FLOAT = TensorProto.FLOAT  # the float32 every body computes in


@script(_parts, default_opset=op)
def Pointwise(x, t):
    """t * (log t - x), exactly 0 where t == 0 (the limit), NaN where t < 0 or NaN."""
    zero = op.Constant(value_float=0.0)
    one = op.Constant(value_float=1.0)
    is_zero = op.Equal(t, zero)
    log_t = op.Log(op.Where(is_zero, one, t))
    return op.Where(is_zero, zero, op.Mul(t, op.Sub(log_t, x)))


@script(_parts, default_opset=op)
def PointwiseLogTarget(x, t):
    """exp(t) * (t - x): the target given as log-probabilities."""
    return op.Mul(op.Exp(t), op.Sub(t, x))


@script(_parts, default_opset=op)
def ReduceNone(loss, input):
    return op.Identity(loss)


@script(_parts, default_opset=op)
def ReduceTotal(loss, input):
    return op.ReduceSum(loss, keepdims=0)


@script(_parts, default_opset=op)
def ReduceMean(loss, input):
    """Sum / element count (onnxruntime's ReduceMean gives 0, not NaN, for an empty tensor)."""
    count = op.ReduceProd(op.Shape(loss), keepdims=0)  # 1 for a 0-d loss
    return op.Div(op.ReduceSum(loss, keepdims=0), op.Cast(count, to=_FLOAT))


@script(_parts, default_opset=op)
def ReduceBatchMean(loss, input):
    """Sum / input.shape[0]; a 0-d input has shape [] and divides by the appended 1."""
    rows = op.Gather(
        op.Concat(op.Shape(input), op.Constant(value_ints=[1]), axis=0),
        op.Constant(value_int=0),
    )
    return op.Div(op.ReduceSum(loss, keepdims=0), op.Cast(rows, to=_FLOAT))


_POINTWISE = {False: Pointwise, True: PointwiseLogTarget}
_REDUCE = {"none": ReduceNone, "sum": ReduceTotal, "mean": ReduceMean, "batchmean": ReduceBatchMean}


@functools.cache
def _variant(variant: Variant, dtype: str) -> FunctionProto:
    pointwise = _POINTWISE[variant.log_target]
    reduce = _REDUCE[variant.reduction]
    out_type = ONNX_TYPES[dtype]

    @script(_kl, default_opset=op)
    def body(input, target):
        loss = pointwise(op.Cast(input, to=_FLOAT), op.Cast(target, to=_FLOAT))
        return op.Cast(reduce(loss, input), to=out_type)

    # Flatten the calls to the parts with onnx's inliner, then read the graph back as the body.
    graph = onnx.inliner.inline_local_functions(body.to_model_proto()).graph
    return helper.make_function(
        DOMAIN,
        variant.op_name,
        inputs=["input", "target"],
        outputs=["output"],
        nodes=list(rename_values(graph, {"return_val": "output"}).node),
        opset_imports=[helper.make_opsetid("", 15)],
        doc_string=f"{variant.label}, {dtype}",
    )


def function_proto(variant: Variant, dtype: str = "float32", opset: int = 15) -> FunctionProto:
    """The model-local function of one variant, importing ai.onnx at ``opset`` (>= 13).

    The body's ops have kept their semantics from opset 13 on, so only the import changes.
    """
    if opset < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET}, got {opset}")
    function = FunctionProto()
    function.CopyFrom(_variant(variant, dtype_name(dtype)))
    del function.opset_import[:]
    function.opset_import.append(helper.make_opsetid("", opset))
    return function
