"""Data sets for ``compare``: one ``.npz``, a folder of ``.npz`` shards, or Parquet (a file or a
folder), read in row slices so that about one batch per reader is all that is ever in memory.

A data set is a list of shards (files) read in name order; rows are numbered across the shards.
The batch plan cuts that numbering into batches of ``batch_size`` rows (the last one shorter),
across shard boundaries, so the same rows form the same batches whatever the files' layout and
whichever engine reads them: a model whose output for a row depends on its batch (dynamic
quantization takes its activation scale from the whole batch) gives the same figures on every
engine.

Planning reads each shard's header (Parquet metadata, ``.npy`` headers) once, into a
:class:`Layout` (picklable: Ray workers plan from the driver's instead of reading every header
again). A shard is opened when it is first read and closed when reading moves on to another, so
a folder of any number of shards needs one open file at a time. A shard is read through the
handle opened for it (header and data alike), and that handle is checked against the file
planning saw: a file replaced or rewritten since is refused, never read half old, half new.

* ``.npz``: keys are the models' input names; every array has the rows on its first axis. Array
  members are read in place (a seek and a read per slice); a compressed archive is decompressed
  up to the slice, so prefer uncompressed shards for size.
* Parquet: one column per model input; a scalar column for a 1-d input, a fixed-size list
  column (nested for more dims) or a list column whose rows all have the same length for a
  multi-dimensional input. Read in record batches of about a batch's rows (pyarrow's
  ``ParquetFile.iter_batches``, through a small read buffer), not whole row groups: a file with
  large row groups costs no more memory than one with small ones.

The file formats are parsed as ``run`` and ``validate`` parse them (:mod:`kldiv_onnx.data_files`:
``.npy`` headers checked before any data; :mod:`kldiv_onnx.arrow_data`: Parquet columns as
numpy), and the columns are fitted to the models by the same rules (bfloat16, ``--cast``:
:func:`kldiv_onnx.data_files.feedable`, :func:`kldiv_onnx.data_files.cast_feed`).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from .. import arrow_data
from .shards import (
    READ_AHEAD,
    READ_AHEAD_ROWS,
    Column,
    Layout,
    NpzReader,
    ParquetReader,
    npz_header,
    open_checked,
    parquet_columns,
    parquet_header,
)

Piece = tuple[int, int, int]
"""(shard index, first row, end row) of one shard's part of a batch."""

# ---------------------------------------------------------------------------------------------
# the data set


_NPZ = (".npz",)
_PARQUET = (".parquet", ".pq")


def _sniff(path: Path) -> str | None:
    if path.suffix.lower() in _NPZ:
        return "npz"
    if path.suffix.lower() in _PARQUET:
        return "parquet"
    with open_checked(str(path)) as f:
        magic = f.read(4)
    return {b"PK\x03\x04": "npz", b"PAR1": "parquet"}.get(magic)


def scan(path: str | os.PathLike) -> Layout:
    """Plan a data path: its files, every shard's header read once (see the module doc)."""
    where = Path(os.path.abspath(path))  # shards named alike on every worker
    try:
        st = os.stat(where)
    except FileNotFoundError:
        raise ValueError(f"data {str(path)!r}: no such file or folder") from None
    except OSError as exc:
        raise ValueError(f"cannot read data {str(path)!r}: {exc.strerror or exc}") from exc
    if stat.S_ISDIR(st.st_mode):
        files = sorted(
            p for p in where.rglob("*") if p.suffix.lower() in _NPZ + _PARQUET and p.is_file()
        )
        kinds = {_sniff(p) for p in files}
        if not files:
            raise ValueError(f"data folder {str(path)!r} holds no .npz or .parquet files")
        if len(kinds) > 1:
            raise ValueError(f"data folder {str(path)!r} mixes .npz and .parquet files")
    elif not stat.S_ISREG(st.st_mode):
        raise ValueError(f"data {str(path)!r} is not a regular file or a folder")
    else:
        files = [where]
        kinds = {_sniff(where)}
        if None in kinds:
            raise ValueError(f"data {str(path)!r} is neither an .npz nor a Parquet file")
    kind = kinds.pop()
    shards = []
    columns: dict[str, Column] = {}
    if kind == "npz":
        for p in files:
            shard, cols = npz_header(str(p))
            if shards and cols != columns:
                raise ValueError(
                    f"shards differ: {p} has {_describe(cols)}, "
                    f"{shards[0].path} has {_describe(columns)}"
                )
            shards.append(shard)
            columns = cols
    else:
        pa = arrow_data.pyarrow()
        schema = None
        for p in files:
            shard, other = parquet_header(str(p))
            if schema is None:
                schema, columns = other, parquet_columns(pa, other, str(p))
            elif not other.equals(schema):  # converted only where the schemas differ
                cols = parquet_columns(pa, other, str(p))
                if cols != columns:
                    raise ValueError(
                        f"shards differ: {p} has {_describe(cols)}, "
                        f"{shards[0].path} has {_describe(columns)}"
                    )
            shards.append(shard)
    return Layout(kind, tuple(shards), columns)


class Dataset:
    """The shards of one data path, their rows numbered across them (see the module doc).

    ``layout``: a :class:`Layout` already planned (``path`` is then only its name)."""

    def __init__(self, path: str | os.PathLike, layout: Layout | None = None) -> None:
        self.path = Path(path)
        self.layout = scan(path) if layout is None else layout
        self.kind = self.layout.kind
        self.shards = self.layout.shards
        self.rows = sum(s.rows for s in self.shards)
        self._starts = np.concatenate([[0], np.cumsum([s.rows for s in self.shards])])
        self._reader: tuple[int, NpzReader | ParquetReader] | None = None
        self._until = self.rows
        # Parquet record batches of READ_AHEAD bytes (at most READ_AHEAD_ROWS rows): pyarrow's
        # cost per record batch makes batches of a few hundred rows read 3x slower
        row_bytes = sum(
            c.dtype.itemsize * int(np.prod(c.shape, dtype=np.int64))
            if c.shape is not None
            else READ_AHEAD
            for c in self.layout.columns.values()
        )
        self._ahead = max(1, min(READ_AHEAD_ROWS, READ_AHEAD // max(row_bytes, 1)))

    def columns(self) -> dict[str, Column]:
        """Column (or key) name → per-row shape and dtype."""
        return dict(self.layout.columns)

    def batches(self, batch_size: int, rows: int | None = None) -> int:
        """How many batches :meth:`plan` cuts."""
        total = self.rows if rows is None else min(rows, self.rows)
        return -(-total // batch_size)

    def plan(
        self, batch_size: int, rows: int | None = None, first: int = 0, count: int | None = None
    ) -> Iterator[list[Piece]]:
        """The first ``rows`` rows (all by default) cut into batches of ``batch_size`` rows,
        each a list of (shard, start, stop) pieces: ``count`` batches (all by default) from
        batch number ``first``. Reads through this data set stay within the rows planned last
        (a Parquet reader reads no row group past them)."""
        total = self.rows if rows is None else min(rows, self.rows)
        end_batch = self.batches(batch_size, total)
        if count is not None:
            end_batch = min(end_batch, first + count)
        self._until = min(total, end_batch * batch_size)
        return self._plan(batch_size, total, first, end_batch)

    def _plan(self, batch_size: int, total: int, first: int, end: int) -> Iterator[list[Piece]]:
        starts = self._starts
        for number in range(first, end):
            begin = number * batch_size
            stop = min(begin + batch_size, total)
            shard = int(np.searchsorted(starts, begin, side="right")) - 1
            pieces = []
            while begin < stop:
                hi = int(starts[shard + 1])
                if hi > begin:
                    lo = int(starts[shard])
                    pieces.append((shard, begin - lo, min(stop, hi) - lo))
                    begin = min(stop, hi)
                shard += 1
            yield pieces

    def read(self, pieces: Sequence[Piece], names: Sequence[str]) -> dict[str, np.ndarray]:
        """One batch: its pieces read and joined (a shard opened when first read, the one read
        before closed)."""
        parts = [self.open_checked(s).read(a, b, names) for s, a, b in pieces]
        if len(parts) == 1:
            return parts[0]
        return {name: np.concatenate([p[name] for p in parts]) for name in names}

    def open_checked(self, index: int) -> NpzReader | ParquetReader:
        if self._reader is not None:
            if self._reader[0] == index:
                reader = self._reader[1]
                if isinstance(reader, ParquetReader):
                    reader.until = self._until - int(self._starts[index])
                return reader
            self.close()
        shard = self.shards[index]
        until = self._until - int(self._starts[index])
        if self.kind == "npz":
            reader: NpzReader | ParquetReader = NpzReader(shard)
        else:
            reader = ParquetReader(shard, until, self._ahead)
        self._reader = (index, reader)
        return reader

    def close(self) -> None:
        if self._reader is not None:
            reader, self._reader = self._reader[1], None
            reader.close()


def _describe(columns: dict[str, Column]) -> str:
    return ", ".join(
        f"{name} {c.dtype}{list(c.shape) if c.shape is not None else '[?]'}"
        for name, c in columns.items()
    )
