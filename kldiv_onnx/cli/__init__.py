"""The ``kldiv-onnx`` command line. It imports the library; nothing in the library imports it.

One module per group of subcommands (:mod:`.core`, :mod:`.interop`, :mod:`.cann`,
:mod:`.bench`), each with ``register(subparsers)``; :mod:`.common` holds what they share.
"""

from .common import UsageError
from .main import build_parser, main

__all__ = ["UsageError", "build_parser", "main"]
