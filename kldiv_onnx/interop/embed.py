"""``embed``: add a KLDivLoss output to an existing model (exported from PyTorch, MindSpore, …).

The new model keeps every original output and adds the loss. The loss reads a value of the
model (a graph output or an intermediate) holding log-probabilities, or logits with
``log_softmax=True`` (a ``LogSoftmax`` over the last axis is inserted); the target is an
existing value or a new graph input of the same dtype and shape (symbolic dims kept).
"""

from __future__ import annotations

from collections.abc import Iterable

import onnx
import onnx.inliner
import onnx.shape_inference
import onnx.version_converter
from onnx import ModelProto, TensorProto, ValueInfoProto, helper

from .._contract import DOMAIN, MIN_OPSET, ONNX_TYPE_NAMES, ONNX_TYPES, Variant
from ..export import FORMS, Dim, add_function, opset_of, output_shape
from ..model_io import ModelLike, load_model


def value_names(graph: onnx.GraphProto) -> set[str]:
    """Every value name of the graph (inputs, initializers, node outputs, nested graphs)."""
    names = {v.name for v in graph.input} | {i.name for i in graph.initializer}
    for node in graph.node:
        names.update(o for o in node.output if o)
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                names |= value_names(sub)
    return names


def node_names(graph: onnx.GraphProto) -> set[str]:
    return {n.name for n in graph.node if n.name}


def unique(base: str, taken: Iterable[str]) -> str:
    """``base``, or ``base_1``, ``base_2``… whichever is not in ``taken``."""
    taken = set(taken)
    if base not in taken:
        return base
    i = 1
    while f"{base}_{i}" in taken:
        i += 1
    return f"{base}_{i}"


def value_info(model: ModelProto, name: str, role: str) -> ValueInfoProto:
    """The inferred type and shape of the value ``name`` (``ValueError`` if absent)."""
    graph = model.graph
    for vi in [*graph.input, *graph.output, *graph.value_info]:
        if vi.name == name and vi.type.HasField("tensor_type"):
            return vi
    if name in {i.name for i in graph.initializer}:
        init = next(i for i in graph.initializer if i.name == name)
        return helper.make_tensor_value_info(name, init.data_type, list(init.dims))
    if name not in value_names(graph):
        raise ValueError(f"{role} {name!r} is not a value of the model")
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as exc:  # inference of custom ops without functions can fail
        raise ValueError(f"cannot infer the type of {role} {name!r}: {exc}") from exc
    for vi in [*inferred.graph.value_info, *inferred.graph.output]:
        if vi.name == name and vi.type.HasField("tensor_type"):
            return vi
    raise ValueError(
        f"{role} {name!r} has no inferred tensor type (not a tensor in the main graph)"
    )


def dims_of(vi: ValueInfoProto) -> list[Dim] | None:
    """The shape as ints, dim names and None (unknown dim); None for an unknown rank."""
    tensor = vi.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    dims: list[Dim] = []
    for d in tensor.shape.dim:
        if d.HasField("dim_value"):
            dims.append(d.dim_value)
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return dims


def dtype_of(vi: ValueInfoProto, role: str) -> str:
    elem = vi.type.tensor_type.elem_type
    if elem not in ONNX_TYPE_NAMES:
        name = TensorProto.DataType.Name(elem) if elem else "unknown"
        raise TypeError(
            f"{role} {vi.name!r} has type {name}, KLDivLoss takes one of {tuple(ONNX_TYPES)}"
        )
    return ONNX_TYPE_NAMES[elem]


def ensure_opset(model: ModelProto, minimum: int = MIN_OPSET) -> ModelProto:
    """The model with ai.onnx >= ``minimum``: converted only when it is lower."""
    current = opset_of(model)
    if current is None:
        model.opset_import.append(helper.make_opsetid("", minimum))
        return model
    if current >= minimum:
        return model
    try:
        converted = onnx.version_converter.convert_version(model, minimum)
    except Exception as exc:
        raise ValueError(
            f"cannot raise the model's ai.onnx opset {current} to {minimum}: {exc}"
        ) from exc
    converted.ir_version = max(converted.ir_version, 7)
    return converted


def inline_kldiv(model: ModelProto) -> ModelProto:
    """Inline the kldiv_onnx functions (standard ops only) and drop them and their import."""
    ids = [(f.domain, f.name) for f in model.functions if f.domain == DOMAIN]
    model = onnx.inliner.inline_selected_functions(model, ids)
    keep = [f for f in model.functions if f.domain != DOMAIN]
    del model.functions[:]
    model.functions.extend(keep)
    imports = [o for o in model.opset_import if o.domain != DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(imports)
    return model


def embed(
    model: ModelLike,
    input: str,
    *,
    target: str | None = None,
    reduction: str = "batchmean",
    log_target: bool = False,
    log_softmax: bool = False,
    output_name: str = "kldiv_loss",
    form: str = "function",
) -> ModelProto:
    """A new model: ``model`` plus the output ``output_name`` = KLDivLoss(``input``, target).

    ``input`` names a value of the model holding log-probabilities (logits with
    ``log_softmax=True``). ``target`` names an existing value of the same dtype, or, when
    None, a new graph input (``target``, or ``<output_name>_target`` if that name is taken)
    of the input's dtype and shape. ``form``: ``'function'`` (one ``kldiv_onnx`` node and its
    model-local function) or ``'inline'`` (standard ops only). The ai.onnx opset is raised to
    13 only if it is lower; the IR version to 8 for the function form.

    Bad names or shapes raise ``ValueError``, unsupported dtypes ``TypeError``, both naming
    the value; ``model`` itself is never modified.
    """
    return embed_variant(
        model,
        input,
        Variant(reduction, log_target),
        target=target,
        log_softmax=log_softmax,
        output_name=output_name,
        form=form,
    )


def embed_variant(
    model: ModelLike,
    input: str,
    variant: Variant,
    *,
    target: str | None = None,
    log_softmax: bool = False,
    output_name: str = "kldiv_loss",
    form: str = "function",
) -> ModelProto:
    """:func:`embed` of a parsed ``variant``."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    for role, name in (("input", input), ("output_name", output_name)):
        if not isinstance(name, str) or not name:
            raise ValueError(f"{role} must be a non-empty value name, got {name!r}")
    if target is not None and (not isinstance(target, str) or not target):
        raise ValueError(f"target must be a value name or None, got {target!r}")
    model = load_model(model)
    graph = model.graph
    names = value_names(graph) | {o.name for o in graph.output}
    if output_name in names:
        raise ValueError(f"output_name {output_name!r} is already a value of the model")

    x_info = value_info(model, input, "input")
    dtype = dtype_of(x_info, "input")
    x_dims = dims_of(x_info)
    if target is None:
        t_name = "target" if "target" not in names else unique(f"{output_name}_target", names)
        if x_dims is None:
            raise ValueError(f"input {input!r} has an unknown rank; name an existing target")
        t_dims = list(x_dims)
    else:
        t_name = target
        if t_name == input:
            raise ValueError(f"target {t_name!r} is the input itself")
        t_info = value_info(model, t_name, "target")
        t_dtype = dtype_of(t_info, "target")
        if t_dtype != dtype:
            raise TypeError(f"target {t_name!r} is {t_dtype}, input {input!r} is {dtype}")
        t_dims = dims_of(t_info)
    if x_dims is not None and t_dims is not None:
        try:
            out_dims: list[Dim] | None = output_shape(variant, x_dims, t_dims)
        except ValueError as exc:
            raise ValueError(f"input {input!r} and target {t_name!r}: {exc}") from None
    else:
        out_dims = [] if variant.reduction != "none" else None

    model = ensure_opset(model)
    graph = model.graph
    taken_nodes = node_names(graph)
    if target is None:
        graph.input.append(helper.make_tensor_value_info(t_name, ONNX_TYPES[dtype], t_dims))
    x_name = input
    if log_softmax:
        x_name = unique(f"{output_name}_log_probs", names)
        node = helper.make_node(
            "LogSoftmax", [input], [x_name], name=unique(f"{output_name}_log_softmax", taken_nodes)
        )
        node.attribute.append(helper.make_attribute("axis", -1))
        graph.node.append(node)
    op = add_function(model, variant, dtype)
    graph.node.append(
        helper.make_node(
            op,
            [x_name, t_name],
            [output_name],
            name=unique(output_name, taken_nodes),
            domain=DOMAIN,
        )
    )
    graph.output.append(helper.make_tensor_value_info(output_name, ONNX_TYPES[dtype], out_dims))
    if form == "inline":
        model = inline_kldiv(model)
    onnx.checker.check_model(model)
    return model
