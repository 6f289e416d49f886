"""scripts/runtime_table.py: the runtime × form × dtype table of docs/runtimes.md, on one case per
cell, and the table as the page shows it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
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


def test_page_shows_the_recorded_table():
    """docs/runtimes.md holds exactly the table of docs/runtime_table.json."""
    result = json.loads((ROOT / "docs" / "runtime_table.json").read_text(encoding="utf-8"))
    page = (ROOT / "docs" / "runtimes.md").read_text(encoding="utf-8")
    assert runtime_table.into_doc(page, runtime_table.markdown(result)) == page
    assert runtime_table.markdown(result) in page


def test_doc_writes_between_the_markers_only(tmp_path):
    result = json.loads((ROOT / "docs" / "runtime_table.json").read_text(encoding="utf-8"))
    page = tmp_path / "page.md"
    before = "# Title\n\ntext\n<!-- runtime-table: generated -->\nold | table\n"
    after = "<!-- /runtime-table -->\n\nmore text\n"
    page.write_text(before + after, encoding="utf-8")
    source = tmp_path / "table.json"
    source.write_text(json.dumps(result), encoding="utf-8")
    assert runtime_table.main(["--from-json", str(source), "--doc", str(page)]) == 0
    text = page.read_text(encoding="utf-8")
    table = runtime_table.markdown(result)
    assert text == before.replace("old | table\n", table + "\n") + after
    page.write_text("# no markers\n", encoding="utf-8")
    with pytest.raises(ValueError, match="runtime-table"):
        runtime_table.main(["--from-json", str(source), "--doc", str(page)])
    assert page.read_text(encoding="utf-8") == "# no markers\n"
