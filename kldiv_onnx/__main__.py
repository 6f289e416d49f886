"""``python -m kldiv_onnx``: the same as the ``kldiv-onnx`` command."""

import sys

from kldiv_onnx.cli import main

sys.exit(main())
