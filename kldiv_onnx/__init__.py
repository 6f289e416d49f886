"""kldiv-onnx: MindSpore ``mint.nn.KLDivLoss`` for ONNX and onnxruntime."""

from __future__ import annotations

from ._contract import DOMAIN, REDUCTIONS, Variant, op_name
from ._version import __version__
from .api import KLDivLoss, kl_div
from .comparison import compare
from .export import build_model
from .interop.distill import distill
from .interop.embed import embed
from .interop.fuse import fuse
from .interop.validate import validate
from .native import library_path
from .portable import inline
from .prepare import prepare
from .reference import kl_div as reference_kl_div
from .runtime import clear_cache, session

__all__ = [
    "DOMAIN",
    "REDUCTIONS",
    "KLDivLoss",
    "Variant",
    "__version__",
    "build_model",
    "clear_cache",
    "compare",
    "distill",
    "embed",
    "fuse",
    "inline",
    "kl_div",
    "library_path",
    "op_name",
    "prepare",
    "reference_kl_div",
    "session",
    "validate",
]
