"""PyTorch to ONNX in one call: every ``F.kl_div``/``nn.KLDivLoss`` becomes one KLDivLoss node.

:func:`export` runs ``torch.onnx.export(..., dynamo=True)`` with a translation of
``aten::kl_div`` (:func:`translate_kl_div`) that writes the ``kldiv_onnx`` node of the variant
in place of torch's decomposition, then finishes the file (:func:`finish`):

* ``batchmean`` reaches the translation as the ``sum`` variant followed by a ``Div`` by the
  batch size (torch decomposes it first): :func:`kldiv_onnx.interop.fuse.fuse` lifts the pair to
  ``KLDivLoss_batchmean[_logtarget]``, for a static batch (a constant divisor) and a dynamic one
  (``Cast(Squeeze(Shape(v, end=1)))`` or ``Cast(Gather(Shape(v), 0))`` of any value ``v`` whose
  first dim is the loss input's);
* the exporter keeps no function body, so each node's model-local function (the composite,
  standard ops only) is attached: the file then runs on onnxruntime with the native library
  (one fused kernel), without it (the function body), inlined (``kldiv-onnx inline``) and on
  ``onnx.reference``.

torch's reductions match the op's: ``'mean'`` is the sum over the element count, as MindSpore's
(torch warns that it may change its ``'mean'`` to the batch mean in a later major release; the
file keeps what the model computed at export). Each variant is held for one dtype per model
(``ValueError`` when a model uses one variant in two dtypes).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import onnx
import onnx.shape_inference
import onnx_ir as ir
from onnx import defs
from onnxscript import values

from kldiv_onnx._contract import DOMAIN, DOMAIN_VERSION, ONNX_TYPE_NAMES, ONNX_TYPES, Variant
from kldiv_onnx._contract import variant_of as _variant_of
from kldiv_onnx.export import add_function
from kldiv_onnx.interop.fuse import fuse
from kldiv_onnx.model_io import check_output_path

_TORCH_REDUCTIONS = {0: "none", 1: "mean", 2: "sum"}
"""aten::kl_div's integer reduction (torch's ``Reduction`` enum); ``batchmean`` never arrives."""


def _schema(name: str) -> defs.OpSchema:
    """The explicit schema of one variant op: the exporter's tracer types the node's output
    from it (an op without a schema cannot be called while tracing)."""
    types = [f"tensor({'float' if t == 'float32' else t})" for t in ONNX_TYPES]
    return defs.OpSchema(
        name,
        DOMAIN,
        DOMAIN_VERSION,
        inputs=[
            defs.OpSchema.FormalParameter("input", "T"),
            defs.OpSchema.FormalParameter("target", "T"),
        ],
        outputs=[defs.OpSchema.FormalParameter("loss", "T")],
        type_constraints=[("T", types, "float32, float16 or bfloat16")],
    )


_OPSET = values.Opset(DOMAIN, DOMAIN_VERSION)
_OPS = {
    (reduction, log_target): values.Op(_OPSET, name, op_schema=_schema(name))
    for reduction in _TORCH_REDUCTIONS.values()
    for log_target in (False, True)
    for name in [Variant(reduction, log_target).op_name]
}


def translate_kl_div(self: Any, target: Any, reduction: int = 1, log_target: bool = False) -> Any:
    """``aten::kl_div`` as one ``kldiv_onnx`` node (the entry of ``custom_translation_table``;
    the parameters are aten's, so the exporter binds them by name)."""
    if reduction not in _TORCH_REDUCTIONS:
        raise ValueError(f"aten::kl_div: reduction must be 0, 1 or 2, got {reduction!r}")
    return _OPS[(_TORCH_REDUCTIONS[reduction], bool(log_target))](self, target)


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise ImportError(
            "kldiv_onnx.torch needs PyTorch, which is not installed: "
            "pip install 'kldiv-onnx[torch]'"
        ) from exc
    return torch


def finish(model: onnx.ModelProto) -> onnx.ModelProto:
    """A new model: ``model`` (as :func:`export`'s exporter wrote it) with each ``sum`` node
    divided by the batch size lifted to ``batchmean``, every ``kldiv_onnx`` node's function
    attached, and checked by ``onnx.checker``."""
    out = fuse(_unshare_sums(model)).model
    typed = ir.serde.deserialize_model(onnx.shape_inference.infer_shapes(out, strict_mode=False))
    for node in ir.traversal.RecursiveGraphIterator(typed.graph):
        variant = _variant_of(node.op_type) if node.domain == DOMAIN else None
        if variant is None:
            continue
        dtype = ONNX_TYPE_NAMES.get(node.inputs[0].dtype)  # type: ignore[union-attr,arg-type]
        if dtype is None:
            raise ValueError(f"{node.op_type} node {node.name!r} has an unknown input type")
        add_function(out, variant, dtype)
    onnx.checker.check_model(out, full_check=True)
    return out


_DIVISOR_CHAIN = ("Cast", "Squeeze", "Gather", "Shape")
"""The ops between a value and the batch size ``batchmean`` divides by (dynamic batch)."""


def _unshare_sums(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` in which each ``Div`` of a ``sum`` node's output reads a ``sum``
    node and a batch-size chain (``Cast(Squeeze(Shape))``, ``Cast(Gather(Shape))``) of its
    own. The exporter merges equal calls: ``F.kl_div(x, t, reduction='sum')`` and a
    ``'batchmean'`` of the same tensors share one ``sum`` node, and two ``batchmean`` losses
    one batch size, which :func:`fuse` cannot lift while the shared values are used elsewhere.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    uses: dict[str, int] = {o.name: 1 for o in graph.output}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    producers = {v: n for n in graph.node for v in n.output}
    taken = set(producers) | {i.name for i in graph.input} | {i.name for i in graph.initializer}

    def is_sum(name: str) -> bool:
        node = producers.get(name)
        variant = _variant_of(node.op_type) if node is not None and node.domain == DOMAIN else None
        return variant is not None and variant.reduction == "sum"

    def own(consumer: onnx.NodeProto, index: int, chain: bool, added: list) -> None:
        """Give ``consumer`` its own copy of the producer of its ``index``-th input."""
        name = consumer.input[index]
        source = producers.get(name)
        if source is None or (chain and source.op_type not in _DIVISOR_CHAIN):
            return
        if uses[name] > 1:
            copy = onnx.NodeProto()
            copy.CopyFrom(source)
            fresh = next(f"{name}_{i}" for i in range(1, len(taken) + 2)
                         if f"{name}_{i}" not in taken)  # fmt: skip
            taken.add(fresh)
            copy.output[0] = fresh
            copy.name = f"{source.name}_{len(taken)}"
            uses[name] -= 1
            uses[fresh] = 1
            for value in copy.input:
                uses[value] = uses.get(value, 0) + 1
            consumer.input[index] = fresh
            source = copy
            if chain and source.op_type != "Shape":
                own(source, 0, True, added)
            added.append(copy)
        elif chain and source.op_type != "Shape":
            own(source, 0, True, added)

    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type == "Div" and node.domain == "" and is_sum(node.input[0]):
            added: list[onnx.NodeProto] = []
            own(node, 0, False, added)
            own(node, 1, True, added)
            nodes += added
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return out


def export(
    model: Any, args: tuple[Any, ...] = (), path: str | os.PathLike | None = None, **kwargs: Any
) -> Any:
    """``torch.onnx.export(model, args, path, dynamo=True, **kwargs)`` writing one KLDivLoss
    node per ``F.kl_div``/``nn.KLDivLoss`` call, each with its function body (see the module
    docstring). Returns the ``torch.onnx.ONNXProgram`` that ``torch.onnx.export`` returns,
    holding the finished model (so ``program.model_proto`` and ``program(...)`` use it).

    ``kwargs`` go to ``torch.onnx.export`` (``dynamic_shapes``, ``opset_version``,
    ``external_data``, ...); a ``custom_translation_table`` given is extended, and
    ``dynamo=False`` (the deprecated TorchScript exporter) is refused with ``ValueError``.
    ``path`` is written only once the model is finished, by a rename: never half-written.
    """
    torch = _torch()
    if kwargs.pop("dynamo", True) is not True:
        raise ValueError("kldiv_onnx.torch.export runs the dynamo exporter only (dynamo=True)")
    table = dict(kwargs.pop("custom_translation_table", None) or {})
    table[torch.ops.aten.kl_div.default] = translate_kl_div
    save = {
        "include_initializers": kwargs.pop("export_params", True),
        "keep_initializers_as_inputs": kwargs.pop("keep_initializers_as_inputs", False),
        "external_data": kwargs.pop("external_data", True),
    }
    target = None if path is None else check_output_path(path, "model")
    program = torch.onnx.export(
        model, args, None, dynamo=True, custom_translation_table=table, **kwargs
    )
    program.model = ir.serde.deserialize_model(finish(program.model_proto))
    if target is not None:
        _save(program, target, save)
    return program


def _save(program: Any, target: Path, options: dict[str, Any]) -> None:
    """``program.save`` into a new folder beside ``target``, then each file renamed into
    place (the weights file, if any, before the model that names it)."""
    folder = target.resolve().parent
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=folder))
    try:
        program.save(staging / target.name, **options)
        written = sorted(staging.iterdir(), key=lambda p: p.name == target.name)
        for item in written:
            os.replace(item, folder / item.name)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)
