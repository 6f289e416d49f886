"""A model's inputs, written once for ``run``, ``validate`` and ``compare``: what the model
declares (names, dtypes, dims), seeded inputs for it, its feeds read from files, and the rules
that fit data to the model: the bfloat16 rule and the dtype check.

Choice: ``run`` and ``validate --inputs`` read their files whole here (``.npy``, ``.npz``, or
one Parquet file, whose columns are the inputs: they are one batch); ``compare`` streams its
data sets (``.npz``, Parquet, a folder of shards) through :mod:`kldiv_onnx.comparison.data`,
which parses ``.npz`` members with :func:`npz_member_header` and Parquet columns with
:mod:`kldiv_onnx.arrow_data` as this module does, and fits them to the models with
:func:`feedable` and :func:`cast_feed`, the same rules :func:`check_feed` applies.

ONNX's bfloat16 is ``ml_dtypes.bfloat16`` everywhere (:func:`elem_dtype`; onnx before 1.19 maps
it to a ``uint16`` stand-in). ``np.save`` of an ``ml_dtypes.bfloat16`` array stores it as
2-byte void data (``|V2``): such data is read as bfloat16 wherever the model input is bfloat16
(:func:`fed_dtype`), and bfloat16 outputs saved with ``np.savez`` read back the same way. Data
of another dtype than the input's is refused, or cast by :data:`CASTS`. Every mismatch (an
unknown or missing input name, one file too many, a dtype, a rank or a static dim other than
the model's) is a ``ValueError`` or ``TypeError`` naming the input, what the model expects and
what was given.

Every ``.npy`` header (a file's, or an ``.npz`` member's) is read and checked before its data
(:func:`npy_header`): a damaged or pickled (object) array, a header declaring more data than the
file or member holds, a member the archive says inflates beyond what deflate can give, or data
beyond this machine's memory is a ``ValueError`` naming the file, never numpy's pickle path or
an allocation the data does not need.
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import onnx

from . import arrow_data
from ._contract import DOMAIN, DTYPES, variant_of
from .errors import first_line
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


def _not_a_tensor(name: str, kind: str) -> ValueError:
    return ValueError(
        f"model input {name!r} is a {kind}, not a tensor: run and validate feed tensors only "
        "(.npy/.npz arrays)"
    )


def session_inputs(sess: Any) -> list[InputSpec]:
    """The inputs of an onnxruntime session (``get_inputs()``); ``ValueError`` for one that is
    not a tensor (a sequence, a map, an optional)."""
    specs = []
    for i in sess.get_inputs():
        if not i.type.startswith("tensor("):
            raise _not_a_tensor(i.name, i.type.partition("(")[0].replace("seq", "sequence"))
        specs.append(InputSpec(i.name, ort_dtype(i.type), tuple(i.shape)))
    return specs


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
    """The graph inputs of a model that are not initializers (``ValueError`` for one that is
    not a tensor, or of an element type with no numpy dtype)."""
    initializers = {i.name for i in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in initializers:
            continue
        kind = vi.type.WhichOneof("value")
        if kind != "tensor_type":
            what = (kind or "value of no type").removesuffix("_type").replace("_", " ")
            raise _not_a_tensor(vi.name, what)
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


BFLOAT16 = DTYPES["bfloat16"]
FLOAT_DTYPES = (*DTYPES.values(), np.dtype(np.float64))
"""The floating-point dtypes of model inputs and outputs."""
CASTS = ("no", "exact", "any")
"""How data of another dtype than a model's input is fed: ``no`` refuses it, ``exact`` casts
values that survive the cast unchanged (float64 values float32 holds exactly, int64 below
2**24 to float32, bool, float16 to float32) and refuses any other, ``any`` casts as numpy does
(rounding, wrapping)."""


def fed_dtype(dtype: np.dtype, want: np.dtype | None) -> np.dtype:
    """The dtype that data of ``dtype`` is read as for an input of ``want``: 2-byte void data
    (what ``np.save`` stores for ``ml_dtypes.bfloat16``) is bfloat16 where the input is, other
    data is what it says."""
    return BFLOAT16 if dtype == np.dtype("V2") and want == BFLOAT16 else dtype


def _numeric(dtype: np.dtype) -> bool:
    return dtype.kind in "biuf" or dtype == BFLOAT16


def feedable(dtype: np.dtype, want: np.dtype, cast: str) -> bool:
    """Whether data of ``dtype`` feeds an input of ``want`` by ``cast`` (:data:`CASTS`): the
    same dtype (:func:`fed_dtype`), or both numeric and ``cast`` other than ``no``."""
    dtype = fed_dtype(dtype, want)
    return dtype == want or (cast != "no" and _numeric(dtype) and _numeric(want))


def cast_hint(dtype: np.dtype, want: np.dtype) -> str:
    """How to feed data of ``dtype`` to an input of ``want`` where ``cast`` refused it."""
    if not (_numeric(fed_dtype(dtype, want)) and _numeric(want)):
        return ""
    return (
        f": convert the data, or cast it with --cast exact (values {want} holds exactly) or "
        "--cast any"
    )


def cast_feed(name: str, x: np.ndarray, dtype: np.dtype, cast: str) -> np.ndarray:
    """``x`` as ``dtype`` by ``cast`` (:data:`CASTS`; :func:`feedable` allowed it): with
    ``exact``, ``ValueError`` naming the input and a value that the cast would change."""
    x = np.asarray(x)
    if fed_dtype(x.dtype, dtype) != x.dtype:
        x = x.view(dtype)
    if x.dtype == dtype:
        return x
    with np.errstate(invalid="ignore", over="ignore"):
        y = x.astype(dtype)
        if cast != "exact":
            return y
        back = y.astype(x.dtype)
    same = back == x
    if x.dtype.kind == "f":
        same |= np.isnan(x) & np.isnan(back)
    if not same.all():
        bad = x[tuple(np.argwhere(~same)[0])]
        raise ValueError(
            f"input {name!r}: {dtype} cannot hold the data's {x.dtype} value {bad} exactly "
            "(cast exact); cast it with --cast any to round it"
        )
    return y


NPY_MAGIC = b"\x93NUMPY"
DEFLATE_MAX_RATIO = 1032
"""The most deflate expands its input (zlib's technical notes: 1032:1): an ``.npz`` member said
to inflate to more than this times its compressed size is damaged, or a zip bomb."""


def _bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # the loop always returns


def memory_bytes() -> int | None:
    """This machine's physical memory in bytes, None where the system does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def check_memory(nbytes: int, what: str) -> None:
    """``ValueError`` naming ``what`` when ``nbytes`` pass this machine's physical memory."""
    memory = memory_bytes()
    if memory is not None and nbytes > memory:
        raise ValueError(
            f"{what} needs {_bytes(nbytes)}, more than this machine's {_bytes(memory)} of memory"
        )


def npy_header(f: BinaryIO, size: int, where: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """Shape, Fortran order, dtype and data offset of the ``.npy`` array that starts ``f`` (of
    ``size`` bytes in all), read without reading its data. ``ValueError`` naming ``where``
    unless it is an array of numbers whose declared data fits in ``size``: a damaged header, a
    pickled (object) array, a header declaring more data than the file holds."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(
                f".npy format version {version[0]}.{version[1]} (numpy writes 1.0 or 2.0)"
            )
        offset = f.tell()
    except (ValueError, TypeError, SyntaxError, EOFError, OSError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{where} is not an array numpy.save wrote: {first_line(exc)}") from exc
    if dtype.hasobject:
        raise ValueError(
            f"{where} holds Python objects (a pickled array), which are never loaded: save an "
            "array of numbers"
        )
    need = math.prod(shape) * dtype.itemsize
    if need > size - offset:
        raise ValueError(
            f"{where}: its header declares shape {list(shape)} of {dtype} ({_bytes(need)}) but "
            f"the file holds {_bytes(max(size - offset, 0))} of data: it is truncated or damaged"
        )
    return tuple(shape), fortran, dtype, offset


def npz_member_header(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: str | os.PathLike
) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """:func:`npy_header` of one ``.npz`` member, checked against what the archive's directory
    says of it first (a stored member's two sizes agree; a deflated one inflates at most
    :data:`DEFLATE_MAX_RATIO` times), so that a lying header is refused before any data is
    read or any memory given to it."""
    where = f"{os.fspath(path)}: array {info.filename.removesuffix('.npy')!r}"
    stored = info.compress_type == zipfile.ZIP_STORED
    if (stored and info.file_size != info.compress_size) or (
        info.compress_type == zipfile.ZIP_DEFLATED
        and info.file_size > DEFLATE_MAX_RATIO * info.compress_size + 1024
    ):
        raise ValueError(
            f"{where}: the archive says {_bytes(info.compress_size)} unpack to "
            f"{_bytes(info.file_size)}, which {'differ' if stored else 'deflate cannot give'}: "
            "the archive is damaged (or a zip bomb)"
        )
    try:
        with archive.open(info) as f:
            return npy_header(f, info.file_size, where)
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError, EOFError) as exc:
        raise ValueError(f"{where}: {first_line(exc)}") from exc


def _read_npy(f: BinaryIO, path: str) -> np.ndarray:
    where = f"data file {path!r}"
    header = npy_header(f, os.fstat(f.fileno()).st_size, where)
    check_memory(math.prod(header[0]) * header[2].itemsize, where)
    f.seek(0)
    try:
        return np.lib.format.read_array(f, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"cannot read {where}: {first_line(exc)}") from exc


def _read_npz(f: BinaryIO, path: str) -> dict[str | None, np.ndarray]:
    try:
        archive = zipfile.ZipFile(f)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ValueError(
            f"cannot read data file {path!r} as .npz: {first_line(exc)} (truncated or damaged)"
        ) from exc
    with archive:
        infos = archive.infolist()
        names = [i.filename for i in infos]
        for name in names:
            if not name.endswith(".npy"):
                raise ValueError(
                    f"data file {path!r}: member {name!r} is not a .npy array (an .npz holds "
                    "the arrays numpy.savez writes)"
                )
            if names.count(name) > 1:
                raise ValueError(f"data file {path!r}: member {name!r} is in it twice")
        sizes = [npz_member_header(archive, i, path) for i in infos]
        check_memory(
            sum(math.prod(shape) * dtype.itemsize for shape, _, dtype, _ in sizes),
            f"data file {path!r}",
        )
        arrays: dict[str | None, np.ndarray] = {}
        for info in infos:
            key = info.filename.removesuffix(".npy")
            try:
                with archive.open(info) as member:
                    arrays[key] = np.lib.format.read_array(member, allow_pickle=False)
            except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
                raise ValueError(
                    f"cannot read data file {path!r}: array {key!r}: {first_line(exc)}"
                ) from exc
        return arrays


def _read_parquet(path: str) -> dict[str | None, np.ndarray]:
    """A Parquet file's columns by name, read whole (:mod:`kldiv_onnx.arrow_data`)."""
    pa = arrow_data.pyarrow()
    where = f"data file {path!r}"
    try:
        parquet = pa.parquet.ParquetFile(path)
        rows = parquet.metadata.num_rows
        schema = parquet.schema_arrow
        names = schema.names
        twice = next((n for n in names if names.count(n) > 1), None)
        if twice is not None:
            raise ValueError(f"{where}: column {twice!r} is in it twice: name each column once")
        need = 0
        for field in schema:
            try:
                shape, dtype = arrow_data.row_type(pa, field.type)
            except ValueError as exc:
                raise ValueError(f"{where}: column {field.name!r}: {exc}") from exc
            need += rows * dtype.itemsize * math.prod(shape or ())
        check_memory(need, where)
        table = parquet.read()
    except (OSError, pa.ArrowException) as exc:
        raise ValueError(f"cannot read {where} as Parquet: {first_line(exc)}") from exc
    return {
        name: arrow_data.to_numpy(pa, table.column(name).combine_chunks(), name, where)
        for name in names
    }


def _read(path: str) -> dict[str | None, np.ndarray] | np.ndarray:
    """An ``.npy`` file's array, or an ``.npz`` or Parquet file's arrays by name, each header
    checked before its data is read (:func:`npy_header`): never numpy's pickle path, never more
    memory than the data holds."""
    check_input_file(path, "data file")
    try:
        with open(path, "rb") as f:
            magic = f.read(len(NPY_MAGIC))
            f.seek(0)
            if magic.startswith(b"PK"):
                return _read_npz(f, path)
            if magic == NPY_MAGIC:
                return _read_npy(f, path)
    except OSError as exc:
        raise ValueError(f"cannot read data file {path!r}: {first_line(exc)}") from exc
    if magic.startswith(b"PAR1"):
        return _read_parquet(path)
    raise ValueError(
        f"cannot read data file {path!r}: not a .npy, .npz or Parquet file (numpy.save, "
        "numpy.savez and pyarrow.parquet.write_table write them)"
    )


def check_feed(spec: InputSpec, array: np.ndarray, cast: str = "no") -> np.ndarray:
    """``array`` fitted to ``spec``: of its dtype (:func:`fed_dtype`), or cast to it by ``cast``
    (:data:`CASTS`); else ``TypeError`` (dtype) or ``ValueError`` (rank, static dim)."""
    name, dtype, dims = spec.name, spec.dtype, spec.dims
    array = np.asarray(array)
    if not feedable(array.dtype, dtype, cast):
        raise TypeError(
            f"input {name!r}: the model takes {dtype}, got {array.dtype}"
            f"{cast_hint(array.dtype, dtype)}"
        )
    want = [d if isinstance(d, int) else "?" if d is None else d for d in dims]
    wrong_rank = len(dims) != array.ndim
    if wrong_rank or any(
        isinstance(d, int) and d != g for d, g in zip(dims, array.shape, strict=False)
    ):
        what = f"rank {len(dims)} " if wrong_rank else ""
        raise ValueError(
            f"input {name!r}: the model takes {what}shape {want}, got {list(array.shape)}"
        )
    return cast_feed(name, array, dtype, cast)


def check_feeds(
    feeds: Mapping[str, np.ndarray], specs: Sequence[InputSpec], cast: str = "no"
) -> dict:
    """``feeds`` checked against ``specs``: every input given, no other name, each fitting
    (:func:`check_feed`)."""
    order = [s.name for s in specs]
    unknown = [n for n in feeds if n not in order]
    if unknown:
        raise ValueError(f"the model has no input {unknown[0]!r} (inputs: {order})")
    missing = [n for n in order if n not in feeds]
    if missing:
        raise ValueError(f"no value given for model inputs {missing}")
    return {s.name: check_feed(s, feeds[s.name], cast) for s in specs}


def read_feeds(
    paths: Sequence[str], specs: Sequence[InputSpec], cast: str = "no"
) -> dict[str, np.ndarray]:
    """The feeds for a model whose inputs are ``specs``, read from ``paths``: ``file.npz`` or a
    Parquet file (keys or columns are input names), ``file.npy`` (taken in input order) or
    ``NAME=file.npy``; fitted by :func:`check_feeds`."""
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
    return check_feeds(feeds, specs, cast)
