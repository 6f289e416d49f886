"""What starting the package and the command imports: only what the work in hand needs.

Each case runs in a fresh interpreter and reads ``sys.modules`` afterwards: PyTorch, MindSpore,
Ray, OpenVINO, tract, matplotlib and onnxscript (with onnx_ir and sympy) load only where a call
needs them, and ``kldiv-onnx --version`` and ``--help`` load no onnx, onnxruntime or numpy.
(How long start-up takes is measured by ``scripts/bench_startup.py``, not here.)
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from child import child_env

import kldiv_onnx
from kldiv_onnx import native
from kldiv_onnx.cli.main import COMMANDS, GROUPS, build_parser

HEAVY = ("torch", "mindspore", "ray", "openvino", "tract", "matplotlib", "onnxscript", "sympy")
ONNXSCRIPT_BACKED = ("fuse", "prepare")
"""Public names whose modules rewrite graphs with onnxscript: they load it (and sympy)."""


def _loaded(code: str, watch: tuple[str, ...] = HEAVY) -> list[str]:
    """Run ``code`` in a fresh interpreter; the modules of ``watch`` it left in sys.modules."""
    probe = (
        f"{code}\nimport json, sys\nprint(json.dumps([m for m in {watch!r} if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env=child_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def _cli(argv: list[str]) -> str:
    """Code running ``kldiv-onnx ARGV`` in-process (its exit for --help and --version kept)."""
    return (
        f"from kldiv_onnx.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass"
    )


def test_import_loads_no_optional_runtime():
    assert _loaded("import kldiv_onnx") == []
    light = [n for n in kldiv_onnx.__all__ if n not in ONNXSCRIPT_BACKED]
    assert _loaded(f"import kldiv_onnx\nfor n in {light!r}: getattr(kldiv_onnx, n)") == []
    graph_rewriters = f"import kldiv_onnx\nfor n in {ONNXSCRIPT_BACKED!r}: getattr(kldiv_onnx, n)"
    assert set(_loaded(graph_rewriters)) == {"onnxscript", "sympy"}


def test_version_and_help_load_no_library():
    watch = ("numpy", "onnx", "onnxruntime", "ml_dtypes", *HEAVY)
    for argv in (["--version"], ["--help"]):
        assert _loaded(_cli(argv), watch) == [], argv


def test_a_subcommand_loads_only_its_group():
    others = tuple(f"kldiv_onnx.cli.{g}" for g in GROUPS if g != "core")
    watch = ("kldiv_onnx.cli.core", *others, *HEAVY)
    assert _loaded(_cli(["run", "--help"]), watch) == ["kldiv_onnx.cli.core"]


def test_command_table_matches_the_groups_parsers():
    """--help lists the table's lines; each group registers exactly those, in that order."""
    full = build_parser()
    sub = next(a for a in full._actions if a.dest == "command")
    registered = {c.dest: (c.help or "") for c in sub._choices_actions}
    assert list(registered) == list(COMMANDS)
    assert registered == {name: help for name, (_, help) in COMMANDS.items()}
    for name, (group, _) in COMMANDS.items():
        assert sub.choices[name].get_default("func").__module__ == f"kldiv_onnx.cli.{group}"
    light = build_parser("")
    listed = next(a for a in light._actions if a.dest == "command")
    assert {c.dest: c.help for c in listed._choices_actions} == registered


@pytest.mark.skipif(not native.available(), reason="native library not built")
def test_first_fused_call_builds_no_function_body():
    code = (
        "import numpy as np\nimport kldiv_onnx\n"
        "x = np.log(np.full((4, 10), 0.1, np.float32))\n"
        "out = kldiv_onnx.kl_div(x, np.full((4, 10), 0.1, np.float32), 'sum', backend='fused')\n"
        "assert abs(float(out)) < 1e-5, out\n"
    )
    assert _loaded(code) == []
