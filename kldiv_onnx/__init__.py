"""kldiv-onnx: MindSpore ``mint.nn.KLDivLoss`` for ONNX and onnxruntime.

The public names are imported on first use (PEP 562): ``import kldiv_onnx`` costs almost
nothing, ``kldiv_onnx.kl_div`` imports onnxruntime and onnx, and only what needs them loads
onnxscript, PyTorch, MindSpore or the other runtimes.
"""

from __future__ import annotations

from ._version import __version__

TYPE_CHECKING = False  # typing's own constant, without importing typing (type checkers know it)
if TYPE_CHECKING:  # what the lazy names below stand for, for type checkers and IDEs
    from ._contract import DOMAIN, REDUCTIONS, Variant, op_name
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

_LAZY = {
    "DOMAIN": "_contract",
    "REDUCTIONS": "_contract",
    "Variant": "_contract",
    "op_name": "_contract",
    "KLDivLoss": "api",
    "kl_div": "api",
    "compare": "comparison",
    "build_model": "export",
    "distill": "interop.distill",
    "embed": "interop.embed",
    "fuse": "interop.fuse",
    "validate": "interop.validate",
    "library_path": "native",
    "inline": "portable",
    "prepare": "prepare",
    "reference_kl_div": "reference",
    "clear_cache": "runtime",
    "session": "runtime",
}
"""Public name → the module (under this package) that defines it."""

_RENAMED = {"reference_kl_div": "kl_div"}

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


def __getattr__(name: str) -> object:
    """Import the module behind a public name on its first use, and keep the name here."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # the same import statement as `from .x import y`, done once (the name is then a global)
    value = getattr(__import__(f"{__name__}.{module}", fromlist=["_"]), _RENAMED.get(name, name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
