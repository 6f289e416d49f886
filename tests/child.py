"""Child processes of the tests: a fresh interpreter running the very package the tests import.

The tests import the installed package (``pytest``, not ``python -m pytest``, keeps the source
tree off ``sys.path``); a child started from the repository root would import the source tree's
copy instead (Python puts the working directory first), which has no built library. So a child
gets the imported package's folder on ``PYTHONPATH`` and ``PYTHONSAFEPATH`` set (Python 3.11+:
the working directory is not put on ``sys.path``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import kldiv_onnx

PACKAGE_ROOT = Path(kldiv_onnx.__file__).resolve().parent.parent
"""The folder holding the package under test: a checkout on ``PYTHONPATH``, or site-packages."""

CLI = (sys.executable, "-m", "kldiv_onnx")
"""``kldiv-onnx`` as a child process runs it (before its arguments)."""


def child_env(**extra: str) -> dict[str, str]:
    """``os.environ`` with ``extra`` for a child that runs the package under test."""
    env = {**os.environ, **extra, "PYTHONSAFEPATH": "1"}
    if PACKAGE_ROOT.name != "site-packages":  # installed: the child finds it as this one did
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
    return env
