"""``build_model``: a KLDivLoss ONNX model in function form (one custom node + its body) or
inline form (standard ops only); :func:`add_function`: a variant's function attached to any
model (``build_model``, ``embed`` and ``fuse`` all attach it this way).

``build_model`` is the edge that takes a reduction string and a ``log_target`` bool; the
layers under it (:func:`variant_model`, :func:`output_shape`, :func:`add_function`) take the
:class:`~kldiv_onnx._contract.Variant` parsed there."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnx.inliner
from onnx import ModelProto, helper

from ._contract import (
    DEFAULT_OPSET,
    DOMAIN,
    DOMAIN_VERSION,
    IR_VERSION,
    MIN_OPSET,
    ONNX_TYPES,
    Variant,
    dtype_name,
)
from ._version import __version__

Dim = int | str | None
Shape = Sequence[Dim] | None
FORMS = ("function", "inline")
DEFAULT_SHAPE = ("batch", "classes")


def opset_of(model: ModelProto) -> int | None:
    """The model's ai.onnx opset (None when it imports none)."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def add_function(model: ModelProto, variant: Variant, dtype: str) -> str:
    """Attach the variant's function for ``dtype`` (at the model's ai.onnx opset) and the
    domain import, each once, to ``model`` in place; return the op name.

    ``ValueError`` when the model already holds the variant's function for another dtype (a
    body is specialised to one dtype) or imports the domain at another version.
    """
    # onnxscript (with onnx_ir and sympy, half a second to import) loads only here, where a
    # function body is first built
    from .composite import function_proto

    name = variant.op_name
    wanted = function_proto(variant, dtype, opset_of(model) or DEFAULT_OPSET)
    for existing in model.functions:
        if existing.domain == DOMAIN and existing.name == name:
            if list(existing.node) != list(wanted.node):
                raise ValueError(
                    f"the model already holds {name} for another dtype; one model holds each "
                    f"variant for one dtype only (wanted {dtype})"
                )
            break
    else:
        model.functions.append(wanted)
    imports = {o.domain: o.version for o in model.opset_import}
    if DOMAIN not in imports:
        model.opset_import.append(helper.make_opsetid(DOMAIN, DOMAIN_VERSION))
    elif imports[DOMAIN] != DOMAIN_VERSION:
        raise ValueError(f"the model imports {DOMAIN} version {imports[DOMAIN]}, not 1")
    model.ir_version = max(model.ir_version, IR_VERSION)
    return name


def _check_shape(name: str, shape: Sequence[Dim]) -> list[Dim]:
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence):
        raise ValueError(f"{name} must be a sequence of dims or None, got {shape!r}")
    dims = list(shape)
    for dim in dims:
        ok = dim is None or isinstance(dim, str) or (isinstance(dim, int) and dim >= 0)
        if not ok or isinstance(dim, bool):
            raise ValueError(f"{name} dims must be ints >= 0, names or None, got {shape!r}")
    return dims


def output_shape(
    variant: Variant, input_shape: Sequence[Dim], target_shape: Sequence[Dim]
) -> list[Dim]:
    """The output shape of ``variant`` as far as it is known statically; ``ValueError`` if the
    shapes are not broadcastable."""
    a, b = list(input_shape), list(target_shape)
    rank = max(len(a), len(b))
    a = [1] * (rank - len(a)) + a
    b = [1] * (rank - len(b)) + b
    out: list[Dim] = []
    for da, db in zip(a, b, strict=True):
        if da == db or db == 1:
            out.append(da)
        elif da == 1:
            out.append(db)
        elif isinstance(da, int) and isinstance(db, int):
            raise ValueError(
                f"input shape {tuple(input_shape)} and target shape {tuple(target_shape)} "
                "are not broadcastable"
            )
        else:
            out.append(None)  # decided at run time
    return out if variant.reduction == "none" else []


def build_model(
    reduction: str = "mean",
    log_target: bool = False,
    dtype: str | np.dtype = "float32",
    input_shape: Shape = None,
    target_shape: Shape = None,
    *,
    form: str = "function",
    opset: int = DEFAULT_OPSET,
) -> ModelProto:
    """A model computing ``KLDivLoss(reduction, log_target)`` of inputs ``input`` and ``target``
    into the output ``loss``.

    ``form='function'``: the graph is one ``kldiv_onnx`` node whose body travels as a
    model-local function (onnxruntime runs the native kernel for it where the library is
    registered). ``form='inline'``: the body's standard ops only, no functions. Shapes are
    sequences of ints, dim names or ``None`` (an unnamed dim); onnx's checker requires graph
    inputs of known rank, so ``input_shape=None`` means ``DEFAULT_SHAPE`` (batch × classes) and
    ``target_shape=None`` means the input's shape.
    """
    return variant_model(
        Variant(reduction, log_target), dtype, input_shape, target_shape, form=form, opset=opset
    )


def variant_model(
    variant: Variant,
    dtype: str | np.dtype = "float32",
    input_shape: Shape = None,
    target_shape: Shape = None,
    *,
    form: str = "function",
    opset: int = DEFAULT_OPSET,
    body: bool = True,
) -> ModelProto:
    """:func:`build_model` of a parsed ``variant``. ``body=False`` leaves the function out:
    the node alone, for a session that registers the native library (its kernel runs the
    node; the model is built without onnxscript, and without onnx's checker, whose first call
    costs more than the session); such a model runs nowhere else."""
    dtype = dtype_name(dtype)
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    if not body and form != "function":
        raise ValueError(f"form {form!r} needs the function body")
    if isinstance(opset, bool) or not isinstance(opset, int):
        raise ValueError(f"opset must be an int, got {opset!r}")
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset must lie in [{MIN_OPSET}, {newest}], got {opset}")
    in_dims = _check_shape("input_shape", DEFAULT_SHAPE if input_shape is None else input_shape)
    tgt_dims = _check_shape("target_shape", in_dims if target_shape is None else target_shape)
    out_dims = output_shape(variant, in_dims, tgt_dims)

    elem = ONNX_TYPES[dtype]
    name = variant.op_name
    graph = helper.make_graph(
        [helper.make_node(name, ["input", "target"], ["loss"], name="kldiv_loss", domain=DOMAIN)],
        f"kldiv_{variant.reduction}{'_logtarget' if variant.log_target else ''}_{dtype}",
        [
            helper.make_tensor_value_info("input", elem, in_dims),
            helper.make_tensor_value_info("target", elem, tgt_dims),
        ],
        [helper.make_tensor_value_info("loss", elem, out_dims)],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        ir_version=IR_VERSION,
        producer_name="kldiv-onnx",
        producer_version=__version__,
    )
    if body:
        add_function(model, variant, dtype)
    else:
        model.opset_import.append(helper.make_opsetid(DOMAIN, DOMAIN_VERSION))
    if form == "inline":
        model = onnx.inliner.inline_local_functions(model)
        del model.opset_import[:]
        model.opset_import.append(helper.make_opsetid("", opset))
    if body:  # a node alone holds nothing onnx's checker knows: the session's loader checks it
        onnx.checker.check_model(model, full_check=True)
    return model
