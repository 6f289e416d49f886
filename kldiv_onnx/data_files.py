"""Reading a model's inputs from ``.npy``/``.npz`` files, checked against what it declares.

``np.save`` of an ``ml_dtypes.bfloat16`` array stores it as 2-byte void data (``|V2``): such
data is read as bfloat16 wherever the model input is bfloat16, and bfloat16 outputs saved with
``np.savez`` read back the same way. Every mismatch (an unknown or missing input name, one file
too many, a dtype, a rank or a static dim other than the model's) is a ``ValueError`` or
``TypeError`` naming the input, what the model expects and what was given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._contract import DTYPES
from .model_io import check_input_file

_ORT_TYPES = {"float": "float32", "double": "float64"}
"""onnxruntime's element type names where they differ from numpy's."""


def ort_dtype(type_name: str) -> np.dtype:
    """The numpy dtype of an onnxruntime type string such as ``tensor(float)``."""
    name = type_name.removeprefix("tensor(").removesuffix(")")
    name = _ORT_TYPES.get(name, name)
    return DTYPES[name] if name in DTYPES else np.dtype(name)


def _read(path: str) -> dict[str | None, np.ndarray] | np.ndarray:
    check_input_file(path, "data file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read data file {path!r}: {exc}") from exc
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            return {k: loaded[k] for k in loaded.files}
    return loaded


def _check(name: str, array: np.ndarray, dtype: np.dtype, dims: Sequence[Any]) -> np.ndarray:
    if array.dtype == np.dtype("V2") and dtype == DTYPES["bfloat16"]:
        array = array.view(DTYPES["bfloat16"])
    if array.dtype != dtype:
        raise TypeError(f"input {name!r}: the model takes {dtype}, got {array.dtype}")
    want = [d if isinstance(d, int) else "?" if d is None else d for d in dims]
    wrong_rank = len(dims) != array.ndim
    if wrong_rank or any(
        isinstance(d, int) and d != g for d, g in zip(dims, array.shape, strict=False)
    ):
        what = f"rank {len(dims)} " if wrong_rank else ""
        raise ValueError(
            f"input {name!r}: the model takes {what}shape {want}, got {list(array.shape)}"
        )
    return array


def read_feeds(paths: Sequence[str], inputs: Sequence[Any]) -> dict[str, np.ndarray]:
    """The feeds for a model whose inputs are ``inputs`` (objects with ``name``, ``type`` and
    ``shape``, as onnxruntime's ``get_inputs()`` returns), read from ``paths``: ``file.npz``
    (keys are input names), ``file.npy`` (taken in input order) or ``NAME=file.npy``."""
    declared = {i.name: i for i in inputs}
    order = [i.name for i in inputs]
    feeds: dict[str, np.ndarray] = {}
    positional = 0
    for spec in paths:
        name, _, path = spec.rpartition("=") if "=" in spec else (None, "", spec)
        loaded = _read(path)
        if isinstance(loaded, dict):
            items = list(loaded.items())
        elif name:
            items = [(name, loaded)]
        else:
            if positional >= len(order):
                raise ValueError(
                    f"{len(paths)} data files for a model with {len(order)} inputs {order}"
                )
            items = [(order[positional], loaded)]
            positional += 1
        for key, array in items:
            if key not in declared:
                raise ValueError(f"{path}: the model has no input {key!r} (inputs: {order})")
            if key in feeds:
                raise ValueError(f"input {key!r} is given twice")
            feeds[key] = array
    missing = [n for n in order if n not in feeds]
    if missing:
        raise ValueError(f"no value given for model inputs {missing}")
    return {n: _check(n, feeds[n], ort_dtype(declared[n].type), declared[n].shape) for n in order}
