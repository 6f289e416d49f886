"""``prepare``: make a model ready for one runtime.

=================  ===========================================================================
target             what it does
=================  ===========================================================================
``onnxruntime``    fuse torch's KL subgraphs into ``kldiv_onnx`` nodes (function form: the
                   native kernel where it is registered, the body elsewhere)
``openvino``       the same file: OpenVINO runs it through :mod:`kldiv_onnx.openvino` (read
                   once with the registration where OpenVINO is installed)
``portable``       fused, then every function inlined: standard ops only (tract and any
                   runtime without an extension mechanism)
``cann``           fused, the ai.onnx opset brought down to 15 (the CANN graph mode takes
                   8–15: :mod:`.lower`), then the placement check: every node that would still
                   leave the NPU is reported
=================  ===========================================================================

The rules lower ``Gelu`` (Erf or tanh form), ``LayerNormalization`` (ReduceMean, Sub, Mul,
Sqrt, Div, Add; Cast around it for float16/bfloat16), the opset-18 reductions (axes input →
attribute) and ``Split`` with ``num_outputs`` (constant sizes); ops whose older version means
the same for the types and attributes used are relabelled (:mod:`.relabel`); anything else is a
``ValueError`` naming the node and the reason.
"""

from __future__ import annotations

from typing import NamedTuple

import onnx

from ..cann import check_placement, tables
from ..export import opset_of
from ..interop.fuse import fuse
from ..model_io import ModelLike, load_model
from ..openvino import read_model
from ..portable import inline
from .lower import Lowered, lower, rules

TARGETS = ("cann", "onnxruntime", "openvino", "portable")


class Prepared(NamedTuple):
    """The result of :func:`prepare`."""

    model: onnx.ModelProto
    target: str
    fused: int
    """KL-divergence subgraphs fused into one node."""
    rewritten: dict[str, int]
    """Op type → nodes rewritten into older ops (target ``cann``)."""
    relabelled: dict[str, tuple[int, int]]
    """Op type → (version before, version after) for ops relabelled (target ``cann``)."""
    placement: object | None
    """The :class:`kldiv_onnx.cann.PlacementReport` (target ``cann``), else None."""

    @property
    def ok(self) -> bool:
        """False when the placement check found a node that would leave the NPU."""
        return self.placement is None or bool(self.placement.ok)  # type: ignore[attr-defined]

    def summary(self) -> str:
        """One line of what was done."""
        parts = [f"{self.fused} KL subgraph(s) fused"]
        if self.rewritten:
            parts.append("rewritten " + ", ".join(f"{k} ×{v}" for k, v in self.rewritten.items()))
        if self.relabelled:
            parts.append(
                "relabelled "
                + ", ".join(f"{k} {a}→{b}" for k, (a, b) in sorted(self.relabelled.items()))
            )
        return f"target {self.target}: " + "; ".join(parts)


def prepare(model: ModelLike, target: str = "onnxruntime") -> Prepared:
    """``model`` (a ``ModelProto``, bytes or a path; never modified) made ready for
    ``target`` (one of :data:`TARGETS`; see the module docstring).

    ``ValueError`` for an unknown target, a file that is not an ONNX model, and a node that
    cannot be brought to the target (named, with the reason). For ``cann`` the placement
    check's verdict is in ``Prepared.placement``/``Prepared.ok``, not an error.
    """
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    proto = load_model(model)
    fused = fuse(proto)
    out, count = fused.model, fused.count
    if target == "portable":
        return Prepared(inline(out), target, count, {}, {}, None)
    if target == "openvino":
        _check_openvino(out)
    if target != "cann":
        return Prepared(out, target, count, {}, {}, None)
    low, high = tables().opset_min, tables().opset_max  # 8-15 in onnxruntime-cann 1.24.4
    opset = opset_of(out)
    lowered = lower(out, high) if opset is None or not low <= opset <= high else None
    if lowered is not None:
        out = lowered.model
    report = check_placement(out)
    return Prepared(
        out,
        target,
        count,
        lowered.rewritten if lowered else {},
        lowered.relabelled if lowered else {},
        report,
    )


def _check_openvino(model: onnx.ModelProto) -> None:
    """Read ``model`` with the registration where OpenVINO is installed: ``ValueError`` with
    OpenVINO's reason (the node it could not convert) if it cannot."""
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        return
    read_model(model)


__all__ = ["TARGETS", "Lowered", "Prepared", "lower", "prepare", "rules"]
