"""Where a model's nodes would run under onnxruntime's CANN execution provider (Ascend NPUs).

The provider takes nodes in one of two ways (``enable_cann_graph``):

* **graph mode** (the default): a node stays on the NPU when its domain is ``ai.onnx``, the
  model's ``ai.onnx`` opset lies in 8–15 and its op type is in one fixed list; a node whose
  inputs are all initializers is left out too. The nodes left out cut the node order into
  partitions, each compiled into its own NPU model, with CPU work and copies in between.
* **single-operator mode**: only ops with a kernel in the provider's registry for the node's
  since-version and input type.

Both tables are data (:mod:`.tables`). :func:`check_placement` predicts the placement the way
the provider decides it; ``kldiv-onnx check --provider cann MODEL`` prints it.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
import onnx.inliner
import onnx.shape_inference
from onnx import ModelProto, TensorProto

from ..model_io import ModelLike, load_model
from .tables import tables

MODES = ("graph", "op")
ONNX_DOMAIN = "ai.onnx"
_NONDETERMINISTIC = frozenset(
    {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial"}
)


@dataclass(frozen=True)
class Leaving:
    """A node that would leave the NPU, and why."""

    op: str
    domain: str
    opset: int | None
    dtype: str | None
    """Element type of the node's first output (of its first input where unknown)."""
    name: str
    reason: str


@dataclass(frozen=True)
class PlacementReport:
    """What :func:`check_placement` predicts for one model."""

    mode: str
    opset: int | None
    """The model's ``ai.onnx`` opset."""
    nodes: int
    """Nodes the provider sees: after inlining, with constants folded away."""
    leaving: tuple[Leaving, ...]
    partitions: int
    """Runs of NPU nodes in node order: NPU models (graph mode) or kernel runs (op mode)."""
    blocker: str | None
    """Set when the opset alone keeps the model off the NPU."""
    onnxruntime: str

    @property
    def ok(self) -> bool:
        """Whether every node stays on the NPU."""
        return not self.leaving

    def format(self) -> str:
        """A few lines: the verdict, the blocker, one row per leaving node."""
        mode = "graph mode" if self.mode == "graph" else "single-operator mode"
        head = f"CANN {mode} (onnxruntime-cann {self.onnxruntime} tables), opset {self.opset}: "
        if self.ok:
            where = f"{self.partitions} NPU partition" + ("s" if self.partitions != 1 else "")
            return head + f"all {self.nodes} nodes stay on the NPU ({where})"
        lines = [
            head + f"{len(self.leaving)} of {self.nodes} nodes would leave the NPU; "
            f"the rest falls into {self.partitions} NPU partition"
            + ("s" if self.partitions != 1 else "")
        ]
        if self.blocker:
            lines.append(f"blocker: {self.blocker}")
        rows = [("op", "domain", "opset", "dtype", "node", "reason")]
        rows += [
            (
                n.op,
                n.domain,
                str(n.opset) if n.opset is not None else "-",
                n.dtype or "?",
                n.name or "-",
                n.reason,
            )
            for n in self.leaving
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines += [
            "  " + "  ".join(c.ljust(w) for c, w in zip(r[:5], widths, strict=True)) + "  " + r[5]
            for r in rows
        ]
        return "\n".join(lines)


def _dtypes(model: ModelProto) -> tuple[dict[str, str], dict[str, list]]:
    """Element type names and shapes (dim values or None) of every known value."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # a model shape inference cannot read: dtypes stay unknown
        inferred = model
    graph = inferred.graph
    types: dict[str, str] = {}
    shapes: dict[str, list] = {}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        tensor = info.type.tensor_type
        if tensor.elem_type:
            types[info.name] = TensorProto.DataType.Name(tensor.elem_type).lower()
        if tensor.HasField("shape"):
            shapes[info.name] = [
                d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim
            ]
    for init in graph.initializer:
        types[init.name] = TensorProto.DataType.Name(init.data_type).lower()
        shapes[init.name] = list(init.dims)
    # onnx spells float32 'float' and float64 'double': use the numpy names of the contract
    rename = {"float": "float32", "double": "float64"}
    return {k: rename.get(v, v) for k, v in types.items()}, shapes


def _graph_reason(op: str, domain: str, opset: int | None, all_constant: bool) -> str | None:
    low, high = tables().opset_min, tables().opset_max
    if domain != ONNX_DOMAIN:
        return f"domain {domain!r} is not ai.onnx: a custom op runs on CPU"
    if opset is None or opset < low:
        return f"ai.onnx opset {opset} is below {low}: the provider rejects every node"
    if opset > high:
        return (
            f"ai.onnx opset {opset} is above {high}: CANN's ONNX parser takes "
            f"{low}-{high}; export at opset <= {high}"
        )
    if op not in tables().graph_ops:
        return f"{op} is not in the CANN graph-mode op list"
    if all_constant:
        return "all inputs are initializers: the graph engine takes no constant-only node"
    return None


def _op_reason(op: str, domain: str, opset: int | None, dtype: str | None) -> str | None:
    if domain != ONNX_DOMAIN:
        return f"domain {domain!r} is not ai.onnx: a custom op runs on CPU"
    kernels = tables().kernels_of(op)
    if not kernels:
        return f"no CANN kernel for {op}"
    try:
        since = onnx.defs.get_schema(op, opset or 1, "").since_version
    except onnx.defs.SchemaError:
        return f"no ONNX schema for {op} at opset {opset}"
    match = [k for k in kernels if k.since <= since and (k.until is None or since <= k.until)]
    if not match:
        spans = ", ".join(f"{k.since}-{k.until or ''}" for k in kernels)
        return f"no CANN kernel for {op} version {since} (opset {opset}); kernels cover {spans}"
    types = match[0].types
    if dtype is not None and types is not None and dtype not in types:
        return f"CANN kernel {op} (version {since}) takes {', '.join(types)} inputs, not {dtype}"
    return None


def check_placement(
    model: ModelLike,
    mode: str = "graph",
    *,
    fold_constants: bool = True,
) -> PlacementReport:
    """Predict which nodes of ``model`` would leave the NPU under the CANN provider.

    The model's local functions are inlined first (onnxruntime inlines a function node that no
    provider claims; the wrapper never registers the CPU kernel on CANN sessions).
    ``Constant`` nodes count as initializers (onnxruntime turns them into initializers), and
    with ``fold_constants`` (onnxruntime's default optimisation level) nodes computed from
    constants alone — and ``Shape`` of a fully static shape — are folded away before placement.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    proto = onnx.inliner.inline_local_functions(load_model(model, external_data=False))
    opsets = {(o.domain or ONNX_DOMAIN): o.version for o in proto.opset_import}
    opset = opsets.get(ONNX_DOMAIN)
    types, shapes = _dtypes(proto)
    inputs = {i.name for i in proto.graph.input}
    constants = {i.name for i in proto.graph.initializer if i.name not in inputs}

    leaving: list[Leaving] = []
    on_npu: list[bool] = []
    for node in proto.graph.node:
        domain = node.domain or ONNX_DOMAIN
        names = [n for n in node.input if n]
        if domain == ONNX_DOMAIN and node.op_type == "Constant":
            constants.update(node.output)
            continue
        all_constant = all(n in constants for n in names)
        static_shape = (
            node.op_type == "Shape"
            and names
            and shapes.get(names[0]) is not None
            and all(d is not None for d in shapes[names[0]])
        )
        foldable = (
            domain == ONNX_DOMAIN
            and node.op_type not in _NONDETERMINISTIC
            and ((names and all_constant) or static_shape)
        )
        if fold_constants and foldable:
            constants.update(node.output)
            continue
        in_dtype = types.get(names[0]) if names else None  # kernels' type constraint
        out_dtype = types.get(node.output[0]) if node.output else None  # what it computes
        if mode == "graph":
            reason = _graph_reason(node.op_type, domain, opset, all_constant)
        else:
            reason = _op_reason(node.op_type, domain, opsets.get(domain), in_dtype)
        on_npu.append(reason is None)
        if reason is not None:
            leaving.append(
                Leaving(
                    node.op_type,
                    domain,
                    opsets.get(domain),
                    out_dtype or in_dtype,
                    node.name,
                    reason,
                )
            )
    partitions = sum(1 for i, here in enumerate(on_npu) if here and (i == 0 or not on_npu[i - 1]))
    low, high = tables().opset_min, tables().opset_max
    blocker = None
    if mode == "graph" and (opset is None or not low <= opset <= high):
        blocker = f"ai.onnx opset {opset}: the CANN graph mode needs opset {low}-{high}"
    return PlacementReport(
        mode, opset, len(on_npu), tuple(leaving), partitions, blocker, tables().onnxruntime
    )
