"""``python -m kldiv_onnx.bench ...``: the same as ``kldiv-onnx bench ...`` (an entry point,
like ``python -m kldiv_onnx``)."""

import sys

from kldiv_onnx.cli import main

sys.exit(main(["bench", *sys.argv[1:]]))
