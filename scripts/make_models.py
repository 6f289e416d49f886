"""Write the small example models of models/ (deterministic: the same bytes on every run).

Usage: python scripts/make_models.py [--check]   (--check: exit 1 if models/ is stale)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kldiv_onnx import build_model

MODELS = Path(__file__).resolve().parent.parent / "models"

# name: (reduction, log_target, dtype, input_shape, target_shape, form)
SPECS = {
    "kldiv_batchmean_float32.onnx": (
        "batchmean",
        False,
        "float32",
        ["batch", 10],
        None,
        "function",
    ),
    "kldiv_mean_seed_float32.onnx": ("mean", False, "float32", [2, 2], [2, 2], "function"),
    "kldiv_none_logtarget_float16.onnx": (
        "none",
        True,
        "float16",
        ["batch", 10],
        [1, 10],
        "function",
    ),
    "kldiv_sum_bfloat16.onnx": ("sum", False, "bfloat16", ["batch", 10], None, "function"),
    "kldiv_batchmean_float32_inline.onnx": (
        "batchmean",
        False,
        "float32",
        ["batch", 10],
        None,
        "inline",
    ),
}


def generate() -> dict[str, bytes]:
    """Every model's serialised bytes."""
    out = {}
    for name, (reduction, log_target, dtype, x_shape, t_shape, form) in SPECS.items():
        model = build_model(reduction, log_target, dtype, x_shape, t_shape, form=form)
        model.producer_version = ""  # keep the files independent of the package version
        out[name] = model.SerializeToString(deterministic=True)
    return out


def write_or_check(files: dict[str, bytes], folder: Path, script: str, argv: list[str]) -> int:
    """Write ``files`` into ``folder``, or with ``--check`` in ``argv`` exit 1 if any differs."""
    parser = argparse.ArgumentParser(description=f"writes {folder.name}/ (see {script})")
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    stale = []
    for name, data in files.items():
        path = folder / name
        if args.check:
            if not path.is_file() or path.read_bytes() != data:
                stale.append(name)
        else:
            folder.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            print(f"wrote {path} ({len(data)} bytes)")
    if stale:
        print(f"stale: {stale}; run python scripts/{script}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(write_or_check(generate(), MODELS, "make_models.py", sys.argv[1:]))
