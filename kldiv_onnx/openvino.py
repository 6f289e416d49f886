"""OpenVINO: the ``kldiv_onnx`` ops registered with OpenVINO's ONNX frontend.

OpenVINO's ONNX frontend does not inline model-local functions of a custom domain, so a
function-form file fails with "No conversion rule found" until :func:`add_extension` registers a
converter per op (``openvino.frontend.onnx.ConversionExtension``): the OpenVINO twin of the
onnxruntime custom op. Each converter builds the loss from OpenVINO opset ops with the semantics
of :mod:`kldiv_onnx.reference`:

* float32 math inside: float16 and bfloat16 inputs are converted to float32 on entry and the
  result is converted back once (as the onnxscript body does);
* ``log_target=0``: ``t * (log t - x)``, exactly 0 where ``t == 0`` whatever ``x`` is, NaN where
  ``t < 0`` or NaN; ``log_target=1``: ``exp(t) * (t - x)``;
* numpy broadcasting; reductions ``none``, ``sum``, ``mean`` (sum / element count, NaN when
  empty) and ``batchmean`` (sum / ``input.shape[0]``, the plain sum for a 0-d input).

The nine variants take no attributes; the generic ``KLDivLoss`` reads ``reduction`` (string,
default ``'mean'``) and ``log_target`` (int 0/1, default 0).

bfloat16 (measured with OpenVINO 2026.4.1 on an AVX-512F Xeon without AVX512_BF16 or AMX, the
CPU plugin's default ``INFERENCE_PRECISION_HINT`` there being f32): OpenVINO reads bfloat16
model inputs and outputs and keeps them bfloat16 only at the graph's edges (its runtime model
shows bf16 on the Input/Output layers and the conversions beside them); the converters' float32
casts put every Eltwise and Reduce layer in f32, and the result is rounded to bfloat16 once, so
bfloat16 files agree with the float64 reference within one bfloat16 rounding (0.5 ULP in
``kldiv-onnx validate``). A bf16 precision hint is accepted there but the kernels stay f32 (no
native bfloat16); on CPUs with native bfloat16 it would lower float32 math, so
:func:`compiled` pins the hint to f32.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import ml_dtypes
import numpy as np
import onnx

from ._contract import DOMAIN, GENERIC_OP, REDUCTIONS, variant_ops

_BF16 = np.dtype(ml_dtypes.bfloat16)


def _ops() -> Any:
    from openvino import opset14

    return opset14


def _f32(ops: Any, value: Any) -> Any:
    from openvino import Type

    if value.get_element_type() == Type.f32:
        return value
    return ops.convert(value, Type.f32).output(0)


def _scalar(ops: Any, value: float) -> Any:
    return ops.constant(np.float32(value)).output(0)


def _i64(ops: Any, values: list[int]) -> Any:
    return ops.constant(np.asarray(values, dtype=np.int64)).output(0)


def build_loss(input: Any, target: Any, reduction: str, log_target: bool) -> Any:
    """The loss of two OpenVINO ``Output``s as an ``Output`` of the input's element type."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"{GENERIC_OP}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    ops = _ops()
    out_type = input.get_element_type()
    x = _f32(ops, input)
    t = _f32(ops, target)
    zero, one = _scalar(ops, 0.0), _scalar(ops, 1.0)
    if log_target:
        loss = ops.multiply(ops.exp(t), ops.subtract(t, x)).output(0)
    else:
        is_zero = ops.equal(t, zero).output(0)
        log_t = ops.log(ops.select(is_zero, one, t)).output(0)
        loss = ops.select(is_zero, zero, ops.multiply(t, ops.subtract(log_t, x))).output(0)
        # NaN where t < 0 explicitly: the CPU plugin's vectorised log need not give NaN there
        negative = ops.less(t, zero).output(0)
        loss = ops.select(negative, _scalar(ops, float("nan")), loss).output(0)
    if reduction != "none":
        flat = ops.reshape(loss, _i64(ops, [-1]), special_zero=False).output(0)
        total = ops.reduce_sum(flat, _i64(ops, [0]), keep_dims=False).output(0)
        if reduction == "mean":
            count = ops.reduce_prod(ops.shape_of(loss), _i64(ops, [0]), keep_dims=False)
            loss = ops.divide(total, _f32(ops, count.output(0))).output(0)
        elif reduction == "batchmean":
            dims = ops.concat([ops.shape_of(input).output(0), _i64(ops, [1])], axis=0)
            rows = ops.gather(dims, _i64(ops, [0]), _i64(ops, [0])).output(0)
            rows = ops.squeeze(rows, _i64(ops, [0])).output(0)
            loss = ops.divide(total, _f32(ops, rows)).output(0)
        else:
            loss = total
    if out_type != loss.get_element_type():
        loss = ops.convert(loss, out_type).output(0)
    return loss


def _converter(op: str, config: tuple[str, bool] | None) -> Callable[[Any], list]:
    def convert(ctx: Any) -> list:
        if ctx.get_input_size() != 2:
            raise ValueError(f"{op}: takes 2 inputs (input, target), got {ctx.get_input_size()}")
        if config is None:
            reduction = ctx.get_attribute("reduction", "mean")
            log_target = ctx.get_attribute("log_target", 0)
            if log_target not in (0, 1):
                raise ValueError(f"{op}: log_target must be 0 or 1, got {log_target!r}")
        else:
            reduction, log_target = config
        return [build_loss(ctx.get_input(0), ctx.get_input(1), reduction, bool(log_target))]

    return convert


def extensions() -> list[Any]:
    """One ``ConversionExtension`` per ``kldiv_onnx`` op: the nine variants and the generic
    op."""
    from openvino.frontend.onnx import ConversionExtension

    table: dict[str, tuple[str, bool] | None] = {GENERIC_OP: None, **variant_ops()}
    return [ConversionExtension(op, DOMAIN, _converter(op, cfg)) for op, cfg in table.items()]


def add_extension(core: Any) -> Any:
    """Register every ``kldiv_onnx`` op with ``core`` (an ``openvino.Core``); return it."""
    core.add_extension(extensions())
    return core


def core() -> Any:
    """A new ``openvino.Core`` with the ``kldiv_onnx`` ops registered."""
    import openvino

    return add_extension(openvino.Core())


ModelLike = onnx.ModelProto | bytes | str | os.PathLike


def read_model(model: ModelLike, ov_core: Any = None) -> Any:
    """An ``openvino.Model`` read from an ONNX ``ModelProto``, bytes or path, through a core
    with the registration (``ValueError`` with OpenVINO's first line when it cannot read it)."""
    ov_core = ov_core if ov_core is not None else core()
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    try:
        if isinstance(model, (bytes, bytearray)):
            return ov_core.read_model(bytes(model), b"")
        if isinstance(model, (str, os.PathLike)):
            return ov_core.read_model(os.fspath(model))
    except RuntimeError as exc:
        raise ValueError(f"OpenVINO cannot read the model: {_first_line(exc)}") from exc
    raise TypeError(f"model must be a ModelProto, bytes or a path, got {type(model).__name__}")


def _first_line(exc: BaseException) -> str:
    """OpenVINO's reason in one line: the failed node and its message where it names one."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if line.startswith("-- ") and " with a message:" in line and i + 1 < len(lines):
            return f"{line[3:].replace(' with a message:', ':')} {lines[i + 1]}"
        if line.startswith("-- No conversion rule found"):
            return line[3:]
    skip = ("Exception from", "Check '", "FrontEnd API failed", "Model wasn't fully")
    rest = [line for line in lines if not line.startswith(skip)]
    return (rest or lines or [type(exc).__name__])[0]


def compiled(model: ModelLike, device: str = "CPU", ov_core: Any = None) -> Any:
    """``model`` compiled on ``device`` with the float32 inference precision (an
    ``openvino.CompiledModel``)."""
    ov_core = ov_core if ov_core is not None else core()
    return ov_core.compile_model(
        read_model(model, ov_core), device, {"INFERENCE_PRECISION_HINT": "f32"}
    )


def compile_model(
    model: ModelLike, device: str = "CPU", ov_core: Any = None
) -> Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]:
    """Compile ``model`` (:func:`compiled`) and return ``run(feeds) -> outputs``: feeds by
    input name, bfloat16 arrays included."""
    model_on_device = compiled(model, device, ov_core)
    names = [port.get_any_name() for port in model_on_device.inputs]

    def run(feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        missing = [n for n in names if n not in feeds]
        if missing:
            raise ValueError(f"no value given for model inputs {missing}")
        request = model_on_device.create_infer_request()
        for i, name in enumerate(names):
            request.set_input_tensor(i, _to_tensor(np.asarray(feeds[name])))
        request.infer()
        count = len(model_on_device.outputs)
        return [_from_tensor(request.get_output_tensor(i)) for i in range(count)]

    return run


def _to_tensor(array: np.ndarray) -> Any:
    import openvino

    array = np.ascontiguousarray(array) if array.ndim else np.asarray(array)
    if array.dtype == _BF16:
        tensor = openvino.Tensor(openvino.Type.bf16, openvino.Shape(list(array.shape)))
        if array.size:
            np.copyto(tensor.data.view(np.uint16).reshape(array.shape), array.view(np.uint16))
        return tensor
    return openvino.Tensor(array, shared_memory=False)


def _from_tensor(tensor: Any) -> np.ndarray:
    import openvino

    shape = tuple(tensor.get_shape())
    if tensor.get_element_type() == openvino.Type.bf16:
        raw = np.array(tensor.data, copy=True).view(np.uint16).reshape(shape)
        return raw.view(_BF16)
    return np.array(tensor.data, copy=True).reshape(shape)
