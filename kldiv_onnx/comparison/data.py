"""Data sets for ``compare``: one ``.npz``, a folder of ``.npz`` shards, or Parquet (a file or a
folder), read in row slices so that a batch is all that is ever in memory.

A data set is a list of shards (files) read in name order; rows are numbered across the shards.
The batch plan cuts that numbering into batches of ``batch_size`` rows (the last one shorter),
across shard boundaries, so the same rows form the same batches whatever the files' layout and
whichever engine reads them: a model whose output for a row depends on its batch (dynamic
quantization takes its activation scale from the whole batch) gives the same figures on every
engine.

* ``.npz``: keys are the models' input names; every array has the rows on its first axis. Array
  members are read in place (header parsed once, then a seek and a read per slice); a
  compressed archive is decompressed up to the slice, so prefer uncompressed shards for size.
* Parquet: one column per model input; a scalar column for a 1-d input, a fixed-size list
  column (nested for more dims) or a list column whose rows all have the same length for a
  multi-dimensional input. Read by row group (pyarrow, imported where used).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data_files import npz_member_header

Piece = tuple[int, int, int]
"""(shard index, first row, end row) of one shard's part of a batch."""


@dataclass(frozen=True)
class Column:
    """One input as the data holds it: per-row shape (``None`` where a list column's length is
    only known once read) and dtype."""

    shape: tuple[int, ...] | None
    dtype: np.dtype


# ---------------------------------------------------------------------------------------------
# .npz


class _NpzShard:
    """One ``.npz`` file: each member's ``.npy`` header parsed once, rows read by seeking."""

    kind = "npz"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._members: dict[str, tuple[str, tuple[int, ...], np.dtype, bool, int]] = {}
        try:
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    if not info.filename.endswith(".npy"):
                        continue
                    key = info.filename[: -len(".npy")]
                    # checked against the member's size: a header declaring more rows is refused
                    shape, fortran, dtype, offset = npz_member_header(archive, info, path)
                    self._members[key] = (info.filename, shape, dtype, fortran, offset)
        except (zipfile.BadZipFile, OSError) as exc:
            raise ValueError(f"cannot read {path} as .npz: {exc}") from exc
        if not self._members:
            raise ValueError(f"{path}: no arrays in the archive")
        lengths = {key: m[1][0] if m[1] else None for key, m in self._members.items()}
        if any(n is None for n in lengths.values()) or len(set(lengths.values())) != 1:
            raise ValueError(
                f"{path}: every array needs the samples on its first axis, with the same count; "
                f"lengths {lengths}"
            )
        self.rows = int(next(iter(lengths.values())))
        self._archive: zipfile.ZipFile | None = None
        self._open: dict[str, tuple[object, int]] = {}  # key -> (member file, next row)
        self._whole: dict[str, np.ndarray] = {}

    def columns(self) -> dict[str, Column]:
        return {k: Column(m[1][1:], m[2]) for k, m in self._members.items()}

    def read(self, start: int, stop: int, names: Sequence[str]) -> dict[str, np.ndarray]:
        out = {}
        for name in names:
            member, shape, dtype, fortran, offset = self._members[name]
            if fortran and len(shape) > 1:  # rows are not contiguous: read the array once
                if name not in self._whole:
                    with np.load(self.path, allow_pickle=False) as npz:
                        self._whole[name] = np.ascontiguousarray(npz[name])
                out[name] = self._whole[name][start:stop]
                continue
            row_bytes = dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
            if self._archive is None:
                self._archive = zipfile.ZipFile(self.path)
            f, row = self._open.get(name, (None, -1))
            if f is None:
                f = self._archive.open(member)
            if row != start:  # a sequential read needs no seek
                f.seek(offset + start * row_bytes)  # type: ignore[attr-defined]
            count = stop - start
            buffer = f.read(count * row_bytes)  # type: ignore[attr-defined]
            if len(buffer) != count * row_bytes:
                raise ValueError(f"{self.path}: array {name!r} is truncated")
            self._open[name] = (f, stop)
            out[name] = np.frombuffer(buffer, dtype=dtype).reshape((count, *shape[1:]))
        return out

    def close(self) -> None:
        for f, _ in self._open.values():
            f.close()  # type: ignore[attr-defined]
        self._open.clear()
        if self._archive is not None:
            self._archive.close()
            self._archive = None


# ---------------------------------------------------------------------------------------------
# Parquet


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as exc:
        raise ImportError(
            "reading Parquet needs pyarrow, which is not installed: pip install 'kldiv-onnx[ray]'"
        ) from exc
    return pyarrow


def _arrow_column(pa, arrow_type) -> Column:  # noqa: ANN001
    shape: list[int] = []
    t = arrow_type
    while True:
        if pa.types.is_fixed_size_list(t):
            shape.append(t.list_size)
            t = t.value_type
        elif pa.types.is_list(t) or pa.types.is_large_list(t):
            return Column(None, np.dtype(_leaf_dtype(pa, t)))
        else:
            break
    return Column(tuple(shape), _leaf_dtype(pa, t))


def _leaf_dtype(pa, t) -> np.dtype:  # noqa: ANN001
    while pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        t = t.value_type
    try:
        return np.dtype(t.to_pandas_dtype())
    except (NotImplementedError, TypeError) as exc:
        raise ValueError(f"Parquet type {t} is not a numeric tensor type") from exc


def _arrow_to_numpy(pa, array, name: str, where: Path, first_row: int = 0) -> np.ndarray:  # noqa: ANN001
    """A (combined) Arrow array of scalars or (nested) lists → a numpy array (rows, *dims);
    ``ValueError`` for nulls or a ragged list column."""
    if array.null_count:
        raise ValueError(f"{where}: column {name!r} has {array.null_count} null values")
    rows = len(array)
    dims: list[int] = []
    while True:
        t = array.type
        if pa.types.is_fixed_size_list(t):
            dims.append(t.list_size)
            array = array.flatten()
        elif pa.types.is_list(t) or pa.types.is_large_list(t):
            offsets = np.asarray(array.offsets)
            lengths = np.diff(offsets)
            if lengths.size and np.any(lengths != lengths[0]):
                bad = int(np.flatnonzero(lengths != lengths[0])[0])
                raise ValueError(
                    f"{where}: column {name!r} is ragged: row {first_row + bad} has "
                    f"{int(lengths[bad])} values, row {first_row} has {int(lengths[0])}"
                )
            dims.append(int(lengths[0]) if lengths.size else 0)
            array = array.flatten()
        else:
            break
        if array.null_count:
            raise ValueError(f"{where}: column {name!r} has null values inside its lists")
    values = array.to_numpy(zero_copy_only=False)
    return values.reshape((rows, *dims))


class _ParquetShard:
    """One Parquet file: its row groups, read whole and sliced (the last one kept for the next
    slice of a sequential read)."""

    kind = "parquet"

    def __init__(self, path: Path) -> None:
        pa = _pyarrow()
        self.path = path
        try:
            self._file = pa.parquet.ParquetFile(path)
        except (OSError, pa.ArrowException) as exc:
            raise ValueError(f"cannot read {path} as Parquet: {exc}") from exc
        meta = self._file.metadata
        self.rows = int(meta.num_rows)
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        self._starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        names = self._file.schema_arrow.names
        twice = next((n for n in names if names.count(n) > 1), None)
        if twice is not None:
            raise ValueError(f"{path}: column {twice!r} is in it twice: name each column once")
        self._columns = {
            field.name: _arrow_column(pa, field.type) for field in self._file.schema_arrow
        }
        self._cached: tuple[tuple[int, ...], object] | None = None

    def columns(self) -> dict[str, Column]:
        return dict(self._columns)

    def read(self, start: int, stop: int, names: Sequence[str]) -> dict[str, np.ndarray]:
        pa = _pyarrow()
        first = int(np.searchsorted(self._starts, start, side="right")) - 1
        last = int(np.searchsorted(self._starts, stop, side="left")) - 1
        groups = tuple(range(first, max(last, first) + 1))
        if self._cached is None or self._cached[0] != (groups, tuple(names)):
            table = self._file.read_row_groups(list(groups), columns=list(names))
            self._cached = ((groups, tuple(names)), table)
        table = self._cached[1]
        offset = int(self._starts[first])
        part = table.slice(start - offset, stop - start)  # type: ignore[attr-defined]
        return {
            name: _arrow_to_numpy(pa, part.column(name).combine_chunks(), name, self.path, start)
            for name in names
        }

    def close(self) -> None:
        self._cached = None


# ---------------------------------------------------------------------------------------------
# the data set


_NPZ = (".npz",)
_PARQUET = (".parquet", ".pq")


def _sniff(path: Path) -> str | None:
    if path.suffix.lower() in _NPZ:
        return "npz"
    if path.suffix.lower() in _PARQUET:
        return "parquet"
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError:
        return None
    return {b"PK\x03\x04": "npz", b"PAR1": "parquet"}.get(magic)


class Dataset:
    """The shards of one data path, their rows numbered across them (see the module doc)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise ValueError(f"data {str(path)!r}: no such file or folder")
        if self.path.is_dir():
            files = sorted(
                p
                for p in self.path.rglob("*")
                if p.is_file() and p.suffix.lower() in _NPZ + _PARQUET
            )
            kinds = {_sniff(p) for p in files}
            if not files:
                raise ValueError(f"data folder {str(path)!r} holds no .npz or .parquet files")
            if len(kinds) > 1:
                raise ValueError(f"data folder {str(path)!r} mixes .npz and .parquet files")
        else:
            files = [self.path]
            kinds = {_sniff(self.path)}
            if None in kinds:
                raise ValueError(f"data {str(path)!r} is neither an .npz nor a Parquet file")
        self.kind = kinds.pop()
        shard_type = _NpzShard if self.kind == "npz" else _ParquetShard
        self.shards = [shard_type(p) for p in files]
        self.files = [str(p) for p in files]
        self._columns = self.shards[0].columns()
        for shard in self.shards[1:]:
            other = shard.columns()
            if other != self._columns:
                raise ValueError(
                    f"shards differ: {shard.path} has {_describe(other)}, "
                    f"{self.shards[0].path} has {_describe(self._columns)}"
                )
        self.rows = sum(s.rows for s in self.shards)
        self._starts = np.concatenate([[0], np.cumsum([s.rows for s in self.shards])])

    def columns(self) -> dict[str, Column]:
        """Column (or key) name → per-row shape and dtype."""
        return dict(self._columns)

    def plan(self, batch_size: int, rows: int | None = None) -> list[list[Piece]]:
        """The first ``rows`` rows (all by default) cut into batches of ``batch_size`` rows,
        each a list of (shard, start, stop) pieces."""
        total = self.rows if rows is None else min(rows, self.rows)
        batches = []
        for begin in range(0, total, batch_size):
            end = min(begin + batch_size, total)
            pieces = []
            for shard in range(len(self.shards)):
                lo, hi = int(self._starts[shard]), int(self._starts[shard + 1])
                a, b = max(begin, lo), min(end, hi)
                if a < b:
                    pieces.append((shard, a - lo, b - lo))
            batches.append(pieces)
        return batches

    def read(self, pieces: Sequence[Piece], names: Sequence[str]) -> dict[str, np.ndarray]:
        """One batch: its pieces read and joined."""
        parts = [self.shards[s].read(a, b, names) for s, a, b in pieces]
        if len(parts) == 1:
            return parts[0]
        return {name: np.concatenate([p[name] for p in parts]) for name in names}

    def close(self) -> None:
        for shard in self.shards:
            shard.close()


def _describe(columns: dict[str, Column]) -> str:
    return ", ".join(
        f"{name} {c.dtype}{list(c.shape) if c.shape is not None else '[?]'}"
        for name, c in columns.items()
    )
