"""The real use of ``kldiv-onnx compare``: how far do an int8 and a float16 copy of a small
classifier drift from the float32 original?

scikit-learn's bundled digits data set (1,797 8×8 images, shipped in its wheel: no download)
→ a small torch MLP trained in a few seconds → its ONNX export → an int8 copy
(``onnxruntime.quantization.quantize_dynamic``) and a float16 copy (onnxconverter-common's
``convert_float_to_float16``, float32 inputs and outputs kept) → ``compare`` of each against
the original on every image, with both engines (they must give the same figures).

Needs the extras ``torch``, ``ray`` and ``examples``:
``pip install '.[cpu,torch,ray,examples]'``, then ``python scripts/digits_compare.py [--out DIR]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def train(x: np.ndarray, y: np.ndarray, seed: int = 0):  # noqa: ANN201
    """A 64-128-10 MLP, full-batch Adam; a few seconds on a CPU."""
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(1)  # a model this small gains nothing from more
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(300):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(xt), yt)
        loss.backward()
        opt.step()
    return model.eval()


def export(model, path: Path) -> None:  # noqa: ANN001
    import torch

    torch.onnx.export(
        model,
        (torch.zeros(1, 64),),
        str(path),
        input_names=["pixels"],
        output_names=["logits"],
        dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )


def quantized_copies(fp32: Path, folder: Path) -> dict[str, Path]:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        from onnxconverter_common import float16
    except ImportError as exc:
        raise SystemExit(
            "the float16 copy needs onnxconverter-common: pip install 'kldiv-onnx[examples]'"
        ) from exc
    int8 = folder / "digits_int8.onnx"
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    fp16 = folder / "digits_fp16.onnx"
    onnx.save(float16.convert_float_to_float16(onnx.load(fp32), keep_io_types=True), fp16)
    return {"int8": int8, "float16": fp16}


def accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return float(np.mean(sess.run(None, {"pixels": x})[0].argmax(-1) == y))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder for the models, data and reports")
    parser.add_argument("--batch-size", type=int, default=256, help="rows per batch")
    parser.add_argument("--engines", default="local,ray", help="comma-separated engines")
    args = parser.parse_args(argv)
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from kldiv_onnx.comparison import compare

    folder = args.out or Path(tempfile.mkdtemp(prefix="digits_compare."))
    folder.mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=0)
    t0 = time.perf_counter()
    model = train(x_train, y_train)
    train_s = time.perf_counter() - t0
    fp32 = folder / "digits_fp32.onnx"
    export(model, fp32)
    copies = quantized_copies(fp32, folder)
    data = folder / "digits.npz"
    np.savez(data, pixels=x)  # every image: compare needs no labels
    print(f"trained in {train_s:.1f} s; data {data} ({len(x)} images); models in {folder}")
    for name, path in {"float32": fp32, **copies}.items():
        print(
            f"  {name:8s} {path.stat().st_size:7d} bytes, test accuracy "
            f"{100 * accuracy(path, x_test, y_test):.2f} %"
        )
    engines = args.engines.split(",")
    if "ray" in engines:  # one cluster for every comparison (RAY_ADDRESS: an existing one)
        import ray

        ray.init(include_dashboard=False)
    summary: dict[str, dict] = {}
    for name, path in copies.items():
        reports = {}
        for engine in engines:
            report = compare(fp32, path, data, batch_size=args.batch_size, engine=engine)
            reports[engine] = report
            print(f"\n== {name} copy vs float32, engine {engine}")
            print(report.table())
            summary[f"{name}/{engine}"] = report.to_dict()
        first, *others = reports.values()
        for other in others:
            same = (
                np.array_equal(first.values, other.values, equal_nan=True)
                and first.kl == other.kl
                and first.top1_agree == other.top1_agree
            )
            print(f"{name}: {first.engine} and {other.engine} give the same figures: {same}")
            if not same:
                return 1
    (folder / "digits_compare.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nwrote {folder / 'digits_compare.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
