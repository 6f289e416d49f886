"""The float64 numpy reference: the one definition every other layer is checked against.

Semantics (MindSpore ``mint.nn.KLDivLoss``), pointwise on the broadcast of ``input`` (``x``)
and ``target`` (``t``):

* ``log_target=False``: ``L = t * (log(t) - x)``; ``L = 0`` wherever ``t == 0``, whatever
  ``x`` is (also ``-inf`` or NaN: PyTorch 2.13 eager gives NaN there, as ``0 * -inf``);
  NaN where ``t < 0`` or ``t`` is NaN.
* ``log_target=True``: ``L = exp(t) * (t - x)`` (as PyTorch: ``t = -inf`` gives NaN).

Reductions: ``none`` (the broadcast shape), ``sum``, ``mean`` (sum / number of broadcast
elements: NaN when empty), ``batchmean`` (sum / ``input.shape[0]``, the plain sum for a 0-d
``input``; NaN for 0 rows).
"""

from __future__ import annotations

import numpy as np

from ._contract import DOMAIN, GENERIC_OP, REDUCTIONS, check_reduction, variant_ops

SEED_INPUT = np.array([[0.5, 0.5], [0.4, 0.6]], dtype=np.float32)
"""The spec page's example input (MindSpore ``mint.nn.KLDivLoss``)."""
SEED_TARGET = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32)


def sample(shape: tuple[int, ...], dtype: np.dtype, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded log-probabilities and probabilities over the last axis (some target entries
    exactly 0): the inputs every layer's checks and the benchmark use. A 0-d shape is one
    class (log-probability 0)."""
    if not shape:
        log_p, q = sample((1,), dtype, seed)
        return log_p.reshape(()), q.reshape(())
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal(shape)
    with np.errstate(divide="ignore"):  # an empty last axis
        log_p = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    q = np.exp(rng.standard_normal(shape))
    q[rng.random(shape) < 0.1] = 0.0
    q /= np.maximum(q.sum(axis=-1, keepdims=True), 1e-30)
    return log_p.astype(dtype), q.astype(dtype)


def sample_inputs(
    x_shape: tuple[int, ...],
    t_shape: tuple[int, ...],
    dtype: np.dtype,
    log_target: bool = False,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded inputs of one loss: log-probabilities of ``x_shape`` and probabilities of
    ``t_shape`` (their logs, floored at log 1e-4, for a log-target), in ``dtype``. A 0-d shape,
    which has no class axis, gets a fixed valid value (input -1.3, target 0.3)."""
    x = sample(x_shape, dtype, seed)[0] if x_shape else np.array(-1.3, dtype)
    t = sample(t_shape, np.dtype(np.float64), seed + 1)[1] if t_shape else np.array(0.3)
    if log_target:
        with np.errstate(divide="ignore"):
            t = np.log(np.maximum(t, 1e-4))
    return x, np.asarray(t, dtype=dtype)


def pointwise(input: np.ndarray, target: np.ndarray, log_target: bool = False) -> np.ndarray:
    """Elementwise loss in float64, broadcast like numpy."""
    x = np.asarray(input, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    with np.errstate(all="ignore"):
        if log_target:
            loss = np.exp(t) * (t - x)
        else:
            zero = t == 0
            loss = np.where(zero, 0.0, t * (np.log(np.where(zero, 1.0, t)) - x))
    return np.broadcast_to(loss, np.broadcast_shapes(x.shape, t.shape))


def kl_div(
    input: np.ndarray, target: np.ndarray, reduction: str = "mean", log_target: bool = False
) -> np.ndarray:
    """KLDivLoss in float64: the broadcast loss for ``'none'``, else a 0-d array."""
    check_reduction(reduction)
    x_shape = np.shape(input)
    try:
        shape = np.broadcast_shapes(x_shape, np.shape(target))
    except ValueError as exc:
        raise ValueError(
            f"input shape {x_shape} and target shape {np.shape(target)} are not broadcastable"
        ) from exc
    loss = pointwise(input, target, log_target)
    if reduction == "none":
        return np.array(loss, dtype=np.float64)
    total = loss.sum(dtype=np.float64)
    with np.errstate(all="ignore"):
        if reduction == "mean":
            total = total / np.float64(int(np.prod(shape, dtype=np.int64)))
        elif reduction == "batchmean" and len(x_shape) > 0:
            total = total / np.float64(x_shape[0])
    return np.array(total, dtype=np.float64)


def error_scale(
    input: np.ndarray, target: np.ndarray, reduction: str = "mean", log_target: bool = False
) -> np.ndarray:
    """The magnitude rounding errors of a computation of the loss scale with: per element, the
    size of the terms before they cancel (``|t|·(|log t| + |x|)``, or ``exp(t)·(|t| + |x|)``
    with a log-target), in the broadcast shape for ``'none'``; for a reduction their sum,
    divided like the loss (a 0-d array). Non-finite terms count as 0."""
    check_reduction(reduction)
    x = np.asarray(input, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    with np.errstate(all="ignore"):
        if log_target:
            terms = np.exp(t) * (np.abs(t) + np.abs(x))
        else:
            terms = np.abs(t) * (np.abs(np.log(np.where(t > 0, t, 1.0))) + np.abs(x))
    terms = np.broadcast_to(
        np.where(np.isfinite(terms), terms, 0.0), np.broadcast_shapes(x.shape, t.shape)
    )
    if reduction == "none":
        return terms
    total = terms.sum()
    if reduction == "mean":
        total = total / max(terms.size, 1)
    elif reduction == "batchmean" and x.ndim:
        total = total / max(x.shape[0], 1)
    return np.asarray(total, dtype=np.float64)


def reference_ops() -> list[type]:
    """``onnx.reference`` implementations of every ``kldiv_onnx`` op, computed by
    :func:`kl_div` and rounded to the input's dtype: ``ReferenceEvaluator(model,
    new_ops=reference_ops())`` then runs a node without inlining its function, and the generic
    ``KLDivLoss`` (attributes ``reduction``, ``log_target``), which has no function body."""
    from onnx import AttributeProto
    from onnx.reference.op_run import OpRun  # onnx.reference is heavy: only when asked

    class _KLDivLoss(OpRun):
        op_domain = DOMAIN
        fixed: tuple[str, bool] | None = None

        def _config(self) -> tuple[str, bool]:
            """(reduction, log_target) from the node's attributes, checked as the native kernel
            checks them: a wrong type, a NUL byte, invalid UTF-8, an unknown value or, on a
            variant, a value contradicting the op name is a ValueError naming the attribute."""
            reduction, log_target = self.fixed or ("mean", False)
            name = type(self).__name__
            for attr in self.onnx_node.attribute:
                kind = AttributeProto.AttributeType.Name(attr.type)
                if attr.name == "reduction":
                    if attr.type != AttributeProto.STRING:
                        raise ValueError(
                            f"{name}: attribute 'reduction' must be a string (one of "
                            f"{', '.join(REDUCTIONS)}), got {kind}"
                        )
                    if b"\0" in attr.s:
                        raise ValueError(
                            f"{name}: attribute 'reduction' contains a NUL byte: {attr.s!r}"
                        )
                    try:
                        value = attr.s.decode("utf-8")
                    except UnicodeDecodeError:
                        raise ValueError(
                            f"{name}: attribute 'reduction' is not valid UTF-8: {attr.s!r}"
                        ) from None
                    if value not in REDUCTIONS:
                        raise ValueError(
                            f"{name}: attribute reduction={value!r} is not one of {REDUCTIONS}"
                        )
                    if self.fixed is not None and value != self.fixed[0]:
                        raise ValueError(
                            f"{name}: attribute reduction={value!r} contradicts the op name"
                        )
                    reduction = value
                elif attr.name == "log_target":
                    if attr.type != AttributeProto.INT:
                        raise ValueError(
                            f"{name}: attribute 'log_target' must be an int (0 or 1), got {kind}"
                        )
                    if attr.i not in (0, 1):
                        raise ValueError(f"{name}: attribute log_target={attr.i} must be 0 or 1")
                    if self.fixed is not None and bool(attr.i) != self.fixed[1]:
                        raise ValueError(
                            f"{name}: attribute log_target={attr.i} contradicts the op name"
                        )
                    log_target = bool(attr.i)
            return reduction, log_target

        def _run(self, input, target, **_attributes):  # noqa: ANN001
            reduction, log_target = self._config()
            out = kl_div(input, target, reduction, log_target)
            return (out.astype(np.asarray(input).dtype),)

    ops: list[type] = [type(GENERIC_OP, (_KLDivLoss,), {})]
    for name, config in variant_ops().items():
        ops.append(type(name, (_KLDivLoss,), {"fixed": config}))
    return ops
