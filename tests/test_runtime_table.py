"""scripts/runtime_table.py: the README's runtime × form × dtype table, on one case per cell."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
runtime_table = pytest.importorskip("runtime_table")


def test_quick_table():
    pytest.importorskip("openvino")
    pytest.importorskip("tract")
    result = runtime_table.table(quick=True)
    n = result["cases_per_cell"]
    rows = {r["runtime"]: r["cells"] for r in result["rows"]}
    everything = f"{n}/{n}"
    for name in ("onnx.reference (inlined)", "onnxruntime composite", "OpenVINO"):
        assert set(rows[name].values()) == {everything}, rows[name]
    assert rows["tract (inlined)"]["function float32"] == everything
    assert rows["tract (inlined)"]["inline float16"] == everything
    assert rows["tract (inlined)"]["function bfloat16"].startswith("not supported")
    assert "No conversion rule" in rows["OpenVINO, no registration"]["function float32"]
    assert rows["OpenVINO, no registration"]["inline float32"] == everything
    assert "Unimplemented" in rows["tract, file as is"]["function float16"]
    text = runtime_table.markdown(result)
    assert text.count("\n") == len(result["rows"]) + 1
