"""A model's inputs, written once for ``run``, ``validate`` and ``compare``: what the model
declares (names, dtypes, dims), seeded inputs for it, and its feeds read from ``.npy``/``.npz``
files and checked against what it declares (``compare`` streams its data sets, ``.npz`` or
Parquet, through :mod:`kldiv_onnx.comparison.data` and describes the models' inputs with
:func:`elem_dtype` and :func:`declared_dims`).

ONNX's bfloat16 is ``ml_dtypes.bfloat16`` everywhere (:func:`elem_dtype`; onnx before 1.19 maps
it to a ``uint16`` stand-in). ``np.save`` of an ``ml_dtypes.bfloat16`` array stores it as
2-byte void data (``|V2``): such data is read as bfloat16 wherever the model input is
bfloat16, and bfloat16 outputs saved with ``np.savez`` read back the same way. Every mismatch
(an unknown or missing input name, one file too many, a dtype, a rank or a static dim other than
the model's) is a ``ValueError`` or ``TypeError`` naming the input, what the model expects and
what was given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from ._contract import DOMAIN, DTYPES, variant_of
from .model_io import check_input_file
from .reference import sample

_ORT_TYPES = {"float": "float32", "double": "float64"}
"""onnxruntime's element type names where they differ from numpy's."""


def ort_dtype(type_name: str) -> np.dtype:
    """The numpy dtype of an onnxruntime type string such as ``tensor(float)``."""
    name = type_name.removeprefix("tensor(").removesuffix(")")
    name = _ORT_TYPES.get(name, name)
    return DTYPES[name] if name in DTYPES else np.dtype(name)


@dataclass(frozen=True)
class InputSpec:
    """A model input as declared: name, dtype and dims (ints, dim names, or None)."""

    name: str
    dtype: np.dtype
    dims: tuple[int | str | None, ...]


def session_inputs(sess: Any) -> list[InputSpec]:
    """The inputs of an onnxruntime session (``get_inputs()``)."""
    return [InputSpec(i.name, ort_dtype(i.type), tuple(i.shape)) for i in sess.get_inputs()]


def elem_dtype(elem_type: int) -> np.dtype | None:
    """The numpy dtype of an ONNX element type (bfloat16: ``ml_dtypes.bfloat16``), None for an
    undefined type or one numpy cannot hold."""
    if elem_type == onnx.TensorProto.BFLOAT16:
        return DTYPES["bfloat16"]
    if not elem_type:
        return None
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, TypeError):
        return None


def declared_dims(tensor: onnx.TypeProto.Tensor) -> tuple[int | str | None, ...] | None:
    """A tensor type's dims (ints, dim names, or None for an unnamed dim); None for an unknown
    rank."""
    if not tensor.HasField("shape"):
        return None
    return tuple(
        d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim
    )


def declared_inputs(model: onnx.ModelProto) -> list[InputSpec]:
    """The graph inputs of a model that are not initializers (``ValueError`` for an element
    type with no numpy dtype)."""
    initializers = {i.name for i in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in initializers:
            continue
        tensor = vi.type.tensor_type
        dtype = elem_dtype(tensor.elem_type)
        if dtype is None:
            raise ValueError(
                f"input {vi.name!r}: element type {tensor.elem_type} has no numpy dtype"
            )
        dims = declared_dims(tensor)
        specs.append(InputSpec(vi.name, dtype, () if dims is None else dims))
    return specs


def sample_feeds(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs for ``model``: log-probabilities and (log-)probabilities for the inputs
    that feed a KLDivLoss node directly, standard normal values elsewhere (0/1 for integers,
    False for booleans); dims other than fixed ones of size 4."""
    rng = np.random.default_rng(seed)
    roles: dict[str, str] = {}
    for node in model.graph.node:
        variant = variant_of(node.op_type)
        if node.domain == DOMAIN and variant is not None and len(node.input) == 2:
            roles.setdefault(node.input[0], "log_probs")
            roles.setdefault(node.input[1], "log_probs" if variant.log_target else "probs")
    position = {vi.name: i for i, vi in enumerate(model.graph.input)}
    feeds: dict[str, np.ndarray] = {}
    for spec in declared_inputs(model):
        shape = tuple(d if isinstance(d, int) else 4 for d in spec.dims)
        role = roles.get(spec.name)
        if role is not None and spec.dtype in DTYPES.values():
            log_p, probs = sample(shape, np.dtype(np.float64), seed + position[spec.name])
            value = log_p if role == "log_probs" else probs
        elif np.issubdtype(spec.dtype, np.integer):
            value = rng.integers(0, 2, size=shape)
        elif spec.dtype == np.bool_:
            value = np.zeros(shape, bool)
        else:
            value = rng.standard_normal(shape)
        feeds[spec.name] = np.asarray(value).astype(spec.dtype)
    return feeds


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


def check_feed(spec: InputSpec, array: np.ndarray) -> np.ndarray:
    """``array`` if it fits ``spec`` (2-byte void data read as bfloat16 where it is
    bfloat16), else ``TypeError`` (dtype) or ``ValueError`` (rank, static dim)."""
    name, dtype, dims = spec.name, spec.dtype, spec.dims
    array = np.asarray(array)
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


def check_feeds(feeds: Mapping[str, np.ndarray], specs: Sequence[InputSpec]) -> dict:
    """``feeds`` checked against ``specs``: every input given, no other name, each fitting."""
    order = [s.name for s in specs]
    unknown = [n for n in feeds if n not in order]
    if unknown:
        raise ValueError(f"the model has no input {unknown[0]!r} (inputs: {order})")
    missing = [n for n in order if n not in feeds]
    if missing:
        raise ValueError(f"no value given for model inputs {missing}")
    return {s.name: check_feed(s, feeds[s.name]) for s in specs}


def read_feeds(paths: Sequence[str], specs: Sequence[InputSpec]) -> dict[str, np.ndarray]:
    """The feeds for a model whose inputs are ``specs``, read from ``paths``: ``file.npz``
    (keys are input names), ``file.npy`` (taken in input order) or ``NAME=file.npy``."""
    declared = {s.name for s in specs}
    order = [s.name for s in specs]
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
    return check_feeds(feeds, specs)
