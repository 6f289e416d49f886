"""MindSpore: ``KLDivLoss`` on CPU through the native core, and networks with it to ONNX.

MindSpore's own ``mint.nn.KLDivLoss`` runs only on Ascend (on CPU, 2.10 fails with "kernel
KLDiv unregistered"). :class:`KLDivLoss` is a ``mindspore.nn.Cell`` with its signature and
semantics that runs on CPU through this project's numeric core, loaded by
``ops.Custom(func_type="aot")`` from ``libkldiv_mindspore_aot.so`` (built from
``custom_ops/mindspore/kldiv_aot.cc``, installed beside this module), in ``GRAPH_MODE`` and
``PYNATIVE_MODE``; on Ascend it is ``mint.nn.KLDivLoss``.

* Reductions ``none``, ``mean`` (sum over the broadcast element count), ``sum``, ``batchmean``
  (sum over ``input.shape[0]``; the plain sum for a 0-d input); ``log_target``; numpy
  broadcasting of input and target; float32, float16 and bfloat16 (computed in float32 inside,
  rounded once to the dtype), the same dtype for both (``TypeError`` otherwise).
* Gradients (a Python bprop, MindSpore ops in float32): for the input, ``-t`` (``-exp(t)`` with
  a log-target) times the incoming gradient, divided like the loss and summed over broadcast
  dims; for the target, the true gradient, as PyTorch computes it: ``log(t) + 1 - x`` or
  ``exp(t) * (t - x + 1)`` with a log-target, the same reductions applied; where ``t == 0``
  (the one-sided derivative is -inf) it is 0 here, NaN in PyTorch 2.13. (MindSpore's CPU
  ``ops.kl_div`` gives the target a zero gradient.)

:func:`export_onnx` takes a network to ONNX: ``mindspore.export`` fails on a network holding a
KL loss ("Can not find key KLDivLoss in convert map"), so it exports the backbone and adds the
loss to the file with :func:`kldiv_onnx.interop.embed.embed`.

MindSpore 2.10's wheels are built for numpy 1: under numpy 2 its import prints "compiled using
NumPy 1.x" and "Numpy init failed" warnings (its tensors still run); the ``mindspore`` extra pins
numpy < 2.
"""

from __future__ import annotations

import functools
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import onnx

from kldiv_onnx._contract import Variant
from kldiv_onnx.interop.embed import embed
from kldiv_onnx.model_io import load_model, save_model

try:
    import mindspore as ms
    from mindspore import mint, nn, ops
except ImportError as exc:
    raise ImportError(
        "kldiv_onnx.mindspore needs MindSpore, which is not installed: "
        "pip install 'kldiv-onnx[mindspore]'"
    ) from exc

LIBRARY_NAME = "libkldiv_mindspore_aot.so"
ENV_VAR = "KLDIV_ONNX_MINDSPORE_LIBRARY"
_FLOATS = (ms.float32, ms.float16, ms.bfloat16)


def library_path() -> str:
    """The aot library: ``$KLDIV_ONNX_MINDSPORE_LIBRARY`` when set, else the file beside this
    module; ``FileNotFoundError`` naming where it looked."""
    override = os.environ.get(ENV_VAR)
    path = Path(override).expanduser() if override else Path(__file__).parent / LIBRARY_NAME
    if not path.is_file():
        where = f"{ENV_VAR}={override!r}" if override else str(path.parent)
        raise FileNotFoundError(
            f"{LIBRARY_NAME} not found ({where}): build it with `pip install .` (the "
            "KLDIV_MINDSPORE_AOT CMake option)"
        )
    return str(path.resolve())


def _broadcast(a: tuple, b: tuple) -> tuple:
    """numpy's broadcast of two shapes, ``ValueError`` naming both when impossible."""
    rank = max(len(a), len(b))
    a = (1,) * (rank - len(a)) + tuple(a)
    b = (1,) * (rank - len(b)) + tuple(b)
    out = []
    for da, db in zip(a, b, strict=True):
        if da != db and 1 not in (da, db):
            raise ValueError(f"KLDivLoss: input shape {a} and target shape {b} do not broadcast")
        out.append(db if da == 1 else da)
    return tuple(out)


def _element(dtype: Any) -> Any:
    """The element type of a ``Tensor[...]`` type (what ``out_dtype`` receives)."""
    return dtype.element_type() if hasattr(dtype, "element_type") else dtype


def _infer_dtype(x: Any, t: Any) -> Any:
    if _element(x) not in _FLOATS or _element(t) != _element(x):
        raise TypeError(
            "KLDivLoss: input and target must both be float32, float16 or bfloat16, got "
            f"{_element(x)} and {_element(t)}"
        )
    return x


def _sum_to(grad: Any, shape: tuple) -> Any:
    """``grad`` summed over the dims broadcasting added to ``shape``, reshaped to it."""
    lead = grad.ndim - len(shape)
    axes = list(range(lead))
    for i, dim in enumerate(shape):
        if dim == 1 and grad.shape[lead + i] != 1:
            axes.append(lead + i)
    if axes:
        grad = grad.sum(axis=tuple(axes), keepdims=True)
    return grad.reshape(shape)


def _make_bprop(variant: Variant) -> Any:
    reduction, log_target = variant.reduction, variant.log_target

    def bprop(x: Any, t: Any, out: Any, dout: Any) -> tuple[Any, Any]:
        x32, t32 = x.astype(ms.float32), t.astype(ms.float32)
        zero = ops.zeros_like(x32) + ops.zeros_like(t32)  # the broadcast shape
        if log_target:
            e = ops.exp(t32)
            gx, gt = zero - e, zero + e * (t32 - x32 + 1.0)
        else:
            safe = ops.where(t32 == 0.0, ops.ones_like(t32), t32)
            gx = zero - t32
            gt = ops.where(zero + t32 == 0.0, zero, zero + ops.log(safe) + 1.0 - x32)
        g = dout.astype(ms.float32)
        if reduction == "mean":
            g = g / float(max(math.prod(zero.shape), 1) if zero.shape else 1)
        elif reduction == "batchmean" and x.ndim > 0:
            g = g / float(x.shape[0])
        gx = _sum_to(gx * g, x.shape)
        gt = _sum_to(gt * g, t.shape)
        return gx.astype(x.dtype), gt.astype(t.dtype)

    return bprop


@functools.cache
def _custom(variant: Variant) -> Any:
    """The aot primitive of one variant (one per variant and process)."""
    reduction = variant.reduction

    def out_shape(x: Any, t: Any) -> list[int]:
        shape = _broadcast(tuple(x), tuple(t))
        return list(shape) if reduction == "none" else []

    return ops.Custom(
        f"{library_path()}:{variant.op_name}",
        out_shape=out_shape,
        out_dtype=_infer_dtype,
        func_type="aot",
        bprop=_make_bprop(variant),
    )


class KLDivLoss(nn.Cell):
    """``mint.nn.KLDivLoss(reduction='mean', log_target=False)`` on CPU (see the module
    docstring); ``ValueError`` for an unknown reduction or a log_target other than a bool/0/1.
    Call it as ``loss(input, target)``: ``input`` holds log-probabilities."""

    def __init__(self, reduction: str = "mean", log_target: bool = False) -> None:
        super().__init__()
        variant = Variant(reduction, log_target)
        self.reduction, self.log_target = variant.reduction, variant.log_target
        self.on_ascend = ms.get_context("device_target") == "Ascend"
        if self.on_ascend:
            self.loss = mint.nn.KLDivLoss(reduction=self.reduction, log_target=self.log_target)
        else:
            self.loss = _custom(variant)

    def construct(self, input: Any, target: Any) -> Any:
        return self.loss(input, target)


def export_onnx(
    backbone: Any,
    loss: KLDivLoss,
    *inputs: Any,
    file_name: str | os.PathLike,
    output: str | None = None,
    log_softmax: bool = False,
    form: str = "function",
) -> onnx.ModelProto:
    """Write ``backbone`` (a ``Cell``, exported with ``mindspore.export(file_format="ONNX")``
    on the example ``inputs``) plus ``loss`` applied to its output ``output`` (default: its
    first) to ``file_name``, and return the model. The loss is the output ``kldiv_loss`` of the
    new input ``target`` (the output's shape and dtype); ``log_softmax=True`` when the backbone
    gives logits. ``form``: ``'function'`` (one kldiv_onnx node with its body) or ``'inline'``
    (standard ops only). The file is written once complete (never half-written)."""
    if not isinstance(loss, KLDivLoss):
        raise TypeError(f"loss must be a kldiv_onnx.mindspore.KLDivLoss, got {type(loss)!r}")
    with tempfile.TemporaryDirectory(prefix="kldiv_onnx_ms_") as tmp:
        base = Path(tmp) / "backbone"
        ms.export(backbone, *inputs, file_name=str(base), file_format="ONNX")
        model = load_model(str(base) + ".onnx")
    name = output if output is not None else model.graph.output[0].name
    model = embed(
        model,
        name,
        reduction=loss.reduction,
        log_target=loss.log_target,
        log_softmax=log_softmax,
        form=form,
    )
    save_model(model, file_name)
    return model
