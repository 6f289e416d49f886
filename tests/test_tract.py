"""tract: the portable file (every function inlined) runs every variant; no bfloat16."""

from __future__ import annotations

import pytest
from runtime_cases import MATRIX, check_model_file, check_variant, model_cases

from kldiv_onnx.export import build_model
from kldiv_onnx.runtimes import Tract

pytest.importorskip("tract")


def _run(model, feeds):
    return Tract().load(model)(feeds)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize(("reduction", "log_target", "shape"), MATRIX)
def test_every_variant_from_the_inlined_file(reduction, log_target, dtype, shape):
    check_variant(_run, reduction, log_target, dtype, shape)


def test_the_function_form_alone_is_unimplemented_in_tract(tmp_path):
    import tract

    path = tmp_path / "function.onnx"
    path.write_bytes(build_model("batchmean").SerializeToString())
    with pytest.raises(Exception, match="KLDivLoss_batchmean"):
        tract.onnx().load(str(path)).into_model()


def test_bfloat16_is_not_supported():
    assert Tract().unsupported(build_model("sum", dtype="bfloat16")) == "tract has no bfloat16"
    assert Tract().unsupported(build_model("sum", dtype="float16")) is None


@pytest.mark.parametrize("case", list(model_cases()))
def test_model_files_of_embed_distill_fuse(case):
    if case == "fuse":
        pytest.importorskip("torch")
    check_model_file(_run, model_cases()[case])
