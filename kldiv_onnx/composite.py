"""KLDivLoss as onnxscript functions: the portable definition, standard ONNX ops only.

Each variant (reduction × log_target) is its own function in the ``kldiv_onnx`` domain, named
by its :class:`kldiv_onnx._contract.Variant`; no ``overload`` field is used (onnxruntime 1.24 and
``onnx.reference`` ignore it). The bodies use only ops of the CANN graph-mode list (no
``CastLike``, ``IsNaN``, ``If`` or ``Loop``): float16/bfloat16 are cast to float32 on entry and
the result is cast back once, so the body is specialised to one dtype. The reductions sum in
float32 in stages of 1024-term blocks, scaled against overflow (see "reductions" below).

The pieces below are written once as onnxscript functions and composed per variant; onnx's
inliner then flattens each variant into a single function body.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
import onnx.inliner
from onnx import FunctionProto, TensorProto, helper, numpy_helper
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


# --- reductions: a sum in stages, scaled against overflow ------------------------------------
#
# One ReduceSum over n float32 terms drifts by up to ~n/lanes roundings (1.7e-2 relative at
# 2**27 log-softmax terms in onnxruntime, where small terms stop registering against a large
# running sum), and it overflows to inf when a partial sum passes float32's 3.4e38 although the
# result does not. So the loss is flattened and summed in blocks of 1024 terms (the last one
# filled up with zeros), then 1024 block sums at a time: four such stages, each a short chain,
# leave one partial for up to 1024**4 = 2**40 terms (a last plain ReduceSum adds any further
# ones). At 2**27 terms the total is then 2e-8 to 7e-8 relative off float64.
#
# Overflow: the terms are multiplied by 2**-10 before the first stage (exact for every term
# above 2**-116), so each block sum is a block mean and cannot overflow. From there two rows
# are summed side by side: ``lo``, not scaled again (total / 2**10), and ``hi``, scaled by
# 2**-10 before each stage (total / 2**40: no partial exceeds the largest term). The result is
# ``lo * (2**10 / count)`` where ``lo`` is finite, else ``hi * (2**40 / count)``, with count 1
# for sum, the element count for mean and the rows for batchmean: one rounding of the factor
# and one of the product. So a mean or batch mean float32 can hold is finite (3e38 stays 3e38),
# and a sum is inf only where it is beyond float32's range (or a term is inf). ``hi`` alone
# would lose digits for totals below 2**-86 (its partials become subnormal); ``lo`` alone
# overflows when block means sum past 3.4e38. Terms below 2**-116 lose digits in the first
# scaling (as subnormals; a device that flushes them drops them), and the scaled terms need
# float32: on CANN, a precision mode that lowers float32 to float16 would make most of them
# float16 subnormals (the wrapper keeps the model's dtypes by default).
#
# Cost: the scaling and the zero fill are two more passes over the terms (onnxruntime CPU,
# one thread, 2**24 terms: 1.1 to 1.7 times the single ReduceSum body's time); the later
# stages work on 1/1024 of the terms and less.


@script(_parts, default_opset=op)
def FirstBlockSums(v):
    """[1, n] -> [1, ceil(n / 1024)]: sums of consecutive blocks of 1024, the last one
    filled up with zeros (concatenated: one copy of the terms, where Pad is slower in
    onnxruntime and tract takes only constant pads); n = 0 gives [1, 0]."""
    block = op.Constant(value_ints=[1024])
    n = op.Gather(op.Shape(v), op.Constant(value_ints=[1]))  # Shape(start=1) needs opset 15
    blocks = op.Div(op.Add(n, op.Constant(value_ints=[1023])), block)
    fill = op.Sub(op.Mul(blocks, block), n)
    zeros = op.ConstantOfShape(op.Concat(op.Constant(value_ints=[1]), fill, axis=0))
    rows = op.Concat(v, zeros, axis=1)
    shape = op.Concat(op.Constant(value_ints=[1]), blocks, block, axis=0)
    return op.ReduceSum(op.Reshape(rows, shape), op.Constant(value_ints=[2]), keepdims=0)


_ZEROS = numpy_helper.from_array(np.zeros((2, 1023), np.float32))


@script(_parts, default_opset=op)
def BlockSums(v):
    """[2, m] -> [2, ceil(m / 1024)] for the small later stages (two rows, ``lo`` and ``hi``):
    1023 constant zeros are appended and the rows cut to a multiple of 1024 (tract cannot
    prove the volume of the reshape after a computed fill there: its symbolic dims of nested
    divisions do not compare equal; onnxruntime 1.24's shape inference refuses a ``Pad``
    inside the function body)."""
    block = op.Constant(value_ints=[1024])
    shape = op.Shape(v)
    r = op.Gather(shape, op.Constant(value_ints=[0]))
    m = op.Gather(shape, op.Constant(value_ints=[1]))
    blocks = op.Div(op.Add(m, op.Constant(value_ints=[1023])), block)
    padded = op.Concat(v, op.Constant(value=_ZEROS), axis=1)
    cut = op.Slice(
        padded, op.Constant(value_ints=[0]), op.Mul(blocks, block), op.Constant(value_ints=[1])
    )
    rows = op.Reshape(cut, op.Concat(r, blocks, block, axis=0))
    return op.ReduceSum(rows, op.Constant(value_ints=[2]), keepdims=0)


_SCALES = numpy_helper.from_array(np.array([[1.0], [2.0**-10]], np.float32))
"""The factors of the two rows of the later stages: ``lo`` 1, ``hi`` 2**-10."""


@script(_parts, default_opset=op)
def StagedTotals(loss):
    """[lo, hi]: the total of ``loss`` (any rank) divided by 2**10 and by 2**40, summed in
    four stages of blocks of 1024 (see above)."""
    flat = op.Reshape(loss, op.Constant(value_ints=[1, -1]))
    means = FirstBlockSums(op.Mul(flat, op.Constant(value_float=0.0009765625)))  # 2**-10
    scales = op.Constant(value=_SCALES)
    partials = BlockSums(op.Mul(op.Concat(means, means, axis=0), scales))
    partials = BlockSums(op.Mul(partials, scales))
    partials = BlockSums(op.Mul(partials, scales))
    return op.ReduceSum(partials, op.Constant(value_ints=[1]), keepdims=0)


@script(_parts, default_opset=op)
def Rescaled(loss, lo_factor, hi_factor):
    """The total of ``loss`` times ``lo_factor`` (2**10 / count) from the ``lo`` row of
    :func:`StagedTotals` where that row is finite, else ``hi`` times ``hi_factor`` (2**40 /
    count). An empty loss divided by a count of 0 gives 0 * inf = NaN."""
    totals = StagedTotals(loss)
    lo = op.Gather(totals, op.Constant(value_int=0))
    hi = op.Gather(totals, op.Constant(value_int=1))
    finite = op.Less(op.Abs(lo), op.Constant(value_float=float("inf")))
    return op.Where(finite, op.Mul(lo, lo_factor), op.Mul(hi, hi_factor))


@script(_parts, default_opset=op)
def TotalOver(loss, count):
    """The total of ``loss`` divided by ``count``, a float32 scalar computed from shapes."""
    lo_factor = op.Div(op.Constant(value_float=1024.0), count)
    hi_factor = op.Div(op.Constant(value_float=1099511627776.0), count)  # 2**40
    return Rescaled(loss, lo_factor, hi_factor)


@script(_parts, default_opset=op)
def ReduceTotal(loss, input):
    """The total (constant factors: no node of the body is fed by constants alone)."""
    return Rescaled(loss, op.Constant(value_float=1024.0), op.Constant(value_float=1099511627776.0))


@script(_parts, default_opset=op)
def ReduceMean(loss, input):
    """Total / element count (onnxruntime's ReduceMean gives 0, not NaN, for an empty tensor)."""
    count = op.ReduceProd(op.Shape(loss), keepdims=0)  # 1 for a 0-d loss
    return TotalOver(loss, op.Cast(count, to=_FLOAT))


@script(_parts, default_opset=op)
def ReduceBatchMean(loss, input):
    """Total / input.shape[0]; a 0-d input has shape [] and divides by the appended 1."""
    rows = op.Gather(
        op.Concat(op.Shape(input), op.Constant(value_ints=[1]), axis=0),
        op.Constant(value_int=0),
    )
    return TotalOver(loss, op.Cast(rows, to=_FLOAT))


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
