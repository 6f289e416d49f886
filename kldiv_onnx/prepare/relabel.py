"""Relabelling: an op whose version at the target opset means the same as its newer version
for the types and attributes a node uses, so that only the opset import changes.

An ONNX node carries no version of its own: it means what its op's schema says at the model's
opset. Lowering the opset therefore "relabels" every node that the rules did not rewrite. That
is sound only for the ops listed in :data:`SAME_MEANING`, whose versions after their target
version (read in onnx's operator changelog) added element types, or attributes whose default
keeps the old behaviour, and nothing else. For them :func:`reason` also checks the node itself:
every attribute it sets exists in the older schema, every element type it uses is allowed by
the older schema's type constraints, and the few value checks below hold. Any other op whose
version differs is reported: prepare has no rule for it.
"""

from __future__ import annotations

from collections.abc import Callable

import onnx
import onnx.defs
import onnx_ir as ir

SAME_MEANING: dict[str, str] = {
    # op: what its versions after opset 13-15 changed (onnx's Changelog.md)
    "Cast": "19: saturate (float8 only), float8 types; 21/23/24: int4/float4/float8e8m0 types",
    "CastLike": "19: saturate (float8 only), float8 types; 21/23/24: more types",
    "Constant": "19/21/23/24: more tensor types",
    "ConstantOfShape": "20/21/23/24: more value types",
    "Identity": "16: optional types; 19/21/23/24: more types",
    "Reshape": "19/21/23/24: more types",
    "Shape": "19/21/23/24: more types",
    "Size": "19/21/23/24: more types",
    "Squeeze": "21/23/24: more types",
    "Unsqueeze": "21/23/24: more types",
    "Transpose": "21/23/24: more types",
    "Flatten": "21/23/24: more types",
    "Where": "16: bfloat16",
    "Equal": "19: string",
    "GreaterOrEqual": "16: bfloat16",
    "LessOrEqual": "16: bfloat16",
    "LeakyRelu": "16: bfloat16",
    "PRelu": "16: bfloat16",
    "IsNaN": "20: bfloat16, float8 types",
    "IsInf": "20: bfloat16, float16, float8 types",
    "ReduceMax": "20: bool (18's axes input is rewritten first)",
    "ReduceMin": "20: bool (18's axes input is rewritten first)",
    "Pad": "18: axes input; 19: mode 'wrap'; 21/23/24: more types",
    "AveragePool": "19: dilations; 22: bfloat16",
    "LpPool": "18: ceil_mode; 22: bfloat16",
    "ScatterElements": "16/18: reduction",
    "ScatterND": "16/18: reduction",
    "Split": "18: num_outputs (split given as an input means the same)",
    "Resize": "18: antialias, axes, keep_aspect_ratio_policy; 19: half_pixel_symmetric",
    # 22: bfloat16 added, nothing else
    **dict.fromkeys(
        (
            "Acos",
            "Acosh",
            "Asin",
            "Asinh",
            "Atan",
            "Atanh",
            "Cos",
            "Cosh",
            "Sin",
            "Sinh",
            "Tan",
            "Conv",
            "ConvTranspose",
            "Det",
            "Dropout",
            "Elu",
            "EyeLike",
            "GlobalAveragePool",
            "GlobalLpPool",
            "GlobalMaxPool",
            "HardSigmoid",
            "HardSwish",
            "InstanceNormalization",
            "LpNormalization",
            "MaxPool",
            "MaxRoiPool",
            "MaxUnpool",
            "Mish",
            "Multinomial",
            "RandomNormal",
            "RandomNormalLike",
            "RandomUniform",
            "RandomUniformLike",
            "Round",
            "Selu",
            "Softplus",
            "Softsign",
            "ThresholdedRelu",
            "GRU",
            "LSTM",
            "RNN",
            "Bernoulli",
        ),
        "22: bfloat16",
    ),
}

_TYPE_NAMES = {onnx.TensorProto.FLOAT: "float", onnx.TensorProto.DOUBLE: "double"}


def _type_str(dtype: ir.DataType | None) -> str | None:
    if dtype is None:
        return None
    code = int(dtype)
    name = _TYPE_NAMES.get(code) or onnx.TensorProto.DataType.Name(code).lower()
    return f"tensor({name})"


def _types_allowed(node: ir.Node, schema: onnx.defs.OpSchema) -> str | None:
    constraints = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}

    def check(values: list, formals: list, what: str) -> str | None:
        for i, value in enumerate(values):
            if value is None or not formals:
                continue
            formal = formals[min(i, len(formals) - 1)]
            allowed = constraints.get(formal.type_str, {formal.type_str})
            used = _type_str(value.dtype)
            if used is not None and used not in allowed:
                return f"{what} {i} is {used}, which version {schema.since_version} does not take"
        return None

    return check(list(node.inputs), list(schema.inputs), "input") or check(
        list(node.outputs), list(schema.outputs), "output"
    )


def _string(node: ir.Node, name: str) -> str | None:
    found = node.attributes.get(name)
    return None if found is None else found.value


_EXTRA: dict[str, Callable[[ir.Node], str | None]] = {
    "Pad": lambda n: (
        "Pad with an axes input"
        if len(n.inputs) > 3 and n.inputs[3] is not None
        else "Pad mode 'wrap'"
        if _string(n, "mode") == "wrap"
        else None
    ),
    "Resize": lambda n: (
        "Resize coordinate_transformation_mode 'half_pixel_symmetric'"
        if _string(n, "coordinate_transformation_mode") == "half_pixel_symmetric"
        else None
    ),
}


def schema(op_type: str, opset: int, domain: str = "") -> onnx.defs.OpSchema | None:
    """The op's schema in force at ``opset`` (None where the op does not exist yet)."""
    try:
        return onnx.defs.get_schema(op_type, opset, domain)
    except onnx.defs.SchemaError:
        return None


def reason(node: ir.Node, source: int, target: int) -> str | None:
    """Why ``node`` (meaning what it means at opset ``source``) cannot simply be read at opset
    ``target``; None when it means the same there."""
    new = schema(node.op_type, source)
    if new is None:
        return f"no schema for {node.op_type} at opset {source}"
    old = schema(node.op_type, target)
    if old is None:
        return (
            f"{node.op_type} (since opset {new.since_version}) has no version at opset {target} "
            "and prepare has no expansion for it"
        )
    if old.since_version == new.since_version:
        return None
    if node.op_type not in SAME_MEANING:
        return (
            f"{node.op_type} version {new.since_version} differs from version "
            f"{old.since_version} (opset {target}) and prepare has no rule for it"
        )
    known = {a for a in old.attributes}
    extra = sorted(a for a in node.attributes if a not in known)
    if extra:
        return (
            f"{node.op_type} attribute(s) {extra} do not exist in version {old.since_version} "
            f"(opset {target})"
        )
    why = _types_allowed(node, old)
    if why is None and node.op_type in _EXTRA:
        why = _EXTRA[node.op_type](node)
    return f"{node.op_type}: {why}" if why else None
