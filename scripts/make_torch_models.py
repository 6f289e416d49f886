"""Write the small PyTorch-exported models of models/torch/ used by embed/distill/fuse/validate.

A seeded MLP classifier (the student, 16 → 32 → 10) and a wider one (the teacher,
16 → 128 → 10), both exported by torch's TorchScript exporter with a symbolic batch dim
(inputs ``features``, outputs ``logits``). Needs torch. Deterministic for one torch version.

Usage: python scripts/make_torch_models.py [--check]   (--check: exit 1 if models/torch/ is stale)
"""

from __future__ import annotations

import io
import sys
import warnings
from pathlib import Path

import torch

MODELS = Path(__file__).resolve().parent.parent / "models" / "torch"
FEATURES, CLASSES = 16, 10
# name: (hidden width, seed)
SPECS = {"student_mlp.onnx": (32, 0), "teacher_mlp.onnx": (128, 1)}


def mlp(hidden: int, seed: int) -> torch.nn.Module:
    """The seeded classifier: Linear → ReLU → Linear, returning logits."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(FEATURES, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, CLASSES)
    ).eval()


def export(module: torch.nn.Module) -> bytes:
    """The module exported with a symbolic batch dim, as bytes."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.zeros(2, FEATURES),),
            buffer,
            dynamo=False,
            input_names=["features"],
            output_names=["logits"],
            dynamic_axes={"features": {0: "batch"}, "logits": {0: "batch"}},
        )
    return buffer.getvalue()


def generate() -> dict[str, bytes]:
    return {name: export(mlp(hidden, seed)) for name, (hidden, seed) in SPECS.items()}


if __name__ == "__main__":
    from make_models import write_or_check  # this script's folder is on sys.path

    sys.exit(write_or_check(generate(), MODELS, "make_torch_models.py", sys.argv[1:]))
