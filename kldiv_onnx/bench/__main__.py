"""``python -m kldiv_onnx.bench ...``: the same as ``kldiv-onnx bench ...``."""

import sys

from .cli import main

sys.exit(main())
