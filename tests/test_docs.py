"""The documentation as a user reads it: the Python examples run and give the reference's
answers, and every relative link of README.md and docs/*.md leads to a file and heading."""

from __future__ import annotations

import re
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from kldiv_onnx.reference import kl_div as reference

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(encoding="utf-8"), re.S | re.M)


@pytest.fixture(scope="module")
def python_api() -> dict:
    """The namespace after running every python block of docs/python-api.md, in order."""
    blocks = python_blocks(ROOT / "docs" / "python-api.md")
    assert len(blocks) >= 2, "docs/python-api.md lost its examples"
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/python-api.md", "exec"), namespace)
    return namespace


def test_first_example_matches_reference(python_api):
    x, t = python_api["x"], python_api["t"]
    got = python_api["loss"](x, t)
    want = reference(x.astype(np.float64), t.astype(np.float64), "mean")
    assert got.dtype == np.float32 and got.shape == ()
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(got, -0.225, rtol=1e-6)  # the value the page shows


def test_bfloat16_session_fed_from_numpy(python_api):
    """The page's bfloat16 session example feeds numpy data and reads the loss back."""
    xb, tb, out = python_api["xb"], python_api["tb"], python_api["out"]
    assert xb.dtype == ml_dtypes.bfloat16 and tb.dtype == ml_dtypes.bfloat16
    got = np.float64(out.view(ml_dtypes.bfloat16))
    want = float(reference(xb.astype(np.float64), tb.astype(np.float64), "batchmean"))
    # computed in float32 and rounded once to bfloat16 (8 significant bits): half a unit
    assert abs(got - want) <= 2.0**-8 * abs(want), (got, want)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    return {_slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path):
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # a web address
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        missing = not dest.exists()
        if missing or (anchor and dest.suffix == ".md" and anchor not in _anchors(dest)):
            broken.append(target)
    assert not broken, f"{page.name}: links to nothing: {broken}"


def test_readme_tour_runs():
    namespace: dict = {}
    blocks = python_blocks(ROOT / "README.md")
    assert blocks, "README.md lost its Python tour"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    x, t, kldiv_onnx = namespace["x"], namespace["t"], namespace["kldiv_onnx"]
    want = reference(x.astype(np.float64), t.astype(np.float64), "batchmean")
    np.testing.assert_allclose(kldiv_onnx.kl_div(x, t, "batchmean"), want, rtol=1e-6)
    graph = namespace["model"].graph
    assert [i.type.tensor_type.elem_type for i in graph.input] == [16, 16]  # BFLOAT16
