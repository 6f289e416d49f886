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
import struct
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .. import arrow_data
from ..data_files import npz_member_header

Piece = tuple[int, int, int]
"""(shard index, first row, end row) of one shard's part of a batch."""

READ_BUFFER = 1 << 20
"""Bytes Parquet column chunks are read in (pyarrow's ``buffer_size``): without it pyarrow
reads a whole column chunk of a row group at once."""


READ_AHEAD, READ_AHEAD_ROWS = 1 << 20, 4096
"""Parquet is read in record batches of up to this many bytes and rows (or a batch, if more)."""


@dataclass(frozen=True)
class Column:
    """One input as the data holds it: per-row shape (``None`` where a list column's length is
    only known once read) and dtype."""

    shape: tuple[int, ...] | None
    dtype: np.dtype


@dataclass(frozen=True)
class Shard:
    """One file as planning saw it: its rows, the first row of each Parquet row group (with the
    end row last; empty for ``.npz``) and the identity of the file (device, inode, size,
    modification time) that reading checks."""

    path: str
    rows: int
    groups: tuple[int, ...]
    identity: tuple[int, int, int, int]


@dataclass(frozen=True)
class Layout:
    """Everything planning learns from the headers: the kind, the shards, the columns."""

    kind: str
    shards: tuple[Shard, ...]
    columns: dict[str, Column]


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _open(path: str, planned: Shard | None = None) -> BinaryIO:
    """``path`` opened for reading (without blocking on a FIFO); ``ValueError`` unless it is a
    regular file and, given the ``planned`` shard, still the file planning saw."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise ValueError(f"cannot read data file {path}: {exc.strerror or exc}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"data {path!r} is not a regular file")
        if planned is not None and _identity(st) != planned.identity:
            raise ValueError(
                f"data file {path} changed while compare was reading the data set (replaced or "
                "rewritten since its batches were planned): run compare again on data that "
                "stays put"
            )
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _changed(shard: Shard) -> ValueError:
    return ValueError(
        f"data file {shard.path} changed while compare was reading the data set: run compare "
        "again on data that stays put"
    )


# ---------------------------------------------------------------------------------------------
# .npz

_Member = tuple[str, tuple[int, ...], np.dtype, bool, int]
"""(member name, array shape, dtype, Fortran order, data offset in the member)."""


def _npz_members(archive: zipfile.ZipFile, path: str) -> dict[str, _Member]:
    members: dict[str, _Member] = {}
    for info in archive.infolist():
        if not info.filename.endswith(".npy"):
            continue
        key = info.filename[: -len(".npy")]
        # checked against the member's size: a header declaring more rows is refused
        shape, fortran, dtype, offset = npz_member_header(archive, info, path)
        members[key] = (info.filename, tuple(shape), dtype, fortran, offset)
    if not members:
        raise ValueError(f"{path}: no arrays in the archive")
    return members


def _npz_header(path: str) -> tuple[Shard, dict[str, Column]]:
    with _open(path) as f:
        identity = _identity(os.fstat(f.fileno()))
        try:
            with zipfile.ZipFile(f) as archive:
                members = _npz_members(archive, path)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise ValueError(f"cannot read {path} as .npz: {exc}") from exc
    lengths = {key: m[1][0] if m[1] else None for key, m in members.items()}
    if any(n is None for n in lengths.values()) or len(set(lengths.values())) != 1:
        raise ValueError(
            f"{path}: every array needs the samples on its first axis, with the same count; "
            f"lengths {lengths}"
        )
    rows = int(next(iter(lengths.values())))
    columns = {k: Column(m[1][1:], m[2]) for k, m in members.items()}
    return Shard(path, rows, (), identity), columns


_LOCAL_HEADER = struct.Struct("<4s5H3L2H")
"""A zip member's local file header (APPNOTE 4.3.7): its name and extra field lengths last."""


def _member_start(f: BinaryIO, info: zipfile.ZipInfo) -> int:
    """The file offset of a zip member's data: after its local header, name and extra field."""
    header = os.pread(f.fileno(), _LOCAL_HEADER.size, info.header_offset)
    fields = _LOCAL_HEADER.unpack(header)
    if fields[0] != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"bad local header for {info.filename}")
    return info.header_offset + _LOCAL_HEADER.size + fields[-2] + fields[-1]


class _NpzReader:
    """One open ``.npz`` shard: its members' headers parsed again from the handle its rows are
    read through, rows read by seeking."""

    def __init__(self, shard: Shard) -> None:
        self.shard = shard
        self._file = _open(shard.path, shard)
        self._open: dict[str, tuple[Any, int]] = {}  # key -> (member file, next row)
        self._whole: dict[str, np.ndarray] = {}
        # an uncompressed member's rows are read straight from the file: key -> the file offset
        # of its first row (no zipfile reader: its CRC, over every byte read, took a third of
        # the reading time, and a sliced read could check it only at the member's end anyway)
        self._stored: dict[str, int] = {}
        try:
            self._archive = zipfile.ZipFile(self._file)
            self._members = _npz_members(self._archive, shard.path)
            for key, (member, _, _, _, offset) in self._members.items():
                info = self._archive.getinfo(member)
                if info.compress_type == zipfile.ZIP_STORED and hasattr(os, "pread"):
                    self._stored[key] = _member_start(self._file, info) + offset
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, struct.error) as exc:
            self._file.close()
            raise _changed(shard) from exc

    def read(self, start: int, stop: int, names: Sequence[str]) -> dict[str, np.ndarray]:
        out = {}
        for name in names:
            member, shape, dtype, fortran, offset = self._members[name]
            if shape[0] != self.shard.rows:
                raise _changed(self.shard)
            if fortran and len(shape) > 1:  # rows are not contiguous: read the array once
                if name not in self._whole:
                    with self._archive.open(member) as f:
                        whole = np.lib.format.read_array(f, allow_pickle=False)
                    self._whole[name] = np.ascontiguousarray(whole)
                out[name] = self._whole[name][start:stop]
                continue
            row_bytes = dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
            count = stop - start
            at = self._stored.get(name)
            if at is not None:  # an uncompressed member: read from the file in place
                buffer = os.pread(self._file.fileno(), count * row_bytes, at + start * row_bytes)
                if len(buffer) != count * row_bytes:
                    raise ValueError(f"{self.shard.path}: array {name!r} is truncated")
                out[name] = np.frombuffer(buffer, dtype=dtype).reshape((count, *shape[1:]))
                continue
            f, row = self._open.get(name, (None, -1))
            if f is None:
                f = self._archive.open(member)
            if row != start:  # a sequential read needs no seek
                f.seek(offset + start * row_bytes)
            buffer = f.read(count * row_bytes)
            if len(buffer) != count * row_bytes:
                raise ValueError(f"{self.shard.path}: array {name!r} is truncated")
            self._open[name] = (f, stop)
            out[name] = np.frombuffer(buffer, dtype=dtype).reshape((count, *shape[1:]))
        return out

    def close(self) -> None:
        for f, _ in self._open.values():
            f.close()
        self._open.clear()
        self._whole.clear()
        self._archive.close()
        self._file.close()


# ---------------------------------------------------------------------------------------------
# Parquet


def _parquet_header(path: str) -> tuple[Shard, Any]:
    """The shard and its Parquet schema (compared across shards before it is converted)."""
    pa = arrow_data.pyarrow()
    # read by path (pyarrow's own file: half the time of a Python file object), the file's
    # identity taken before and after: a file replaced meanwhile is refused
    before = _identity(os.stat(path))
    try:
        meta = pa.parquet.read_metadata(path)
    except (OSError, pa.ArrowException) as exc:
        raise ValueError(f"cannot read {path} as Parquet: {exc}") from exc
    identity = _identity(os.stat(path))
    if identity != before:
        raise ValueError(f"data file {path} changed while compare was reading its header")
    names = meta.schema.to_arrow_schema().names
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice is not None:
        raise ValueError(f"{path}: column {twice!r} is in it twice: name each column once")
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    groups = tuple(int(s) for s in np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]))
    return Shard(path, int(meta.num_rows), groups, identity), meta.schema


def _parquet_columns(pa, schema) -> dict[str, Column]:  # noqa: ANN001
    return {
        field.name: Column(*arrow_data.row_type(pa, field.type))
        for field in schema.to_arrow_schema()
    }


class _ParquetReader:
    """One open Parquet shard, read in record batches from the row group where a read starts
    (so a reader handed some row groups reads only those), the batches read ahead of the next
    slice kept for it."""

    def __init__(self, shard: Shard, until: int, ahead: int = 1) -> None:
        self.pa = arrow_data.pyarrow()
        self.shard = shard
        self.until = until
        self.ahead = ahead
        """Rows per record batch at least (a read of more rows takes that many)."""
        self._handle = _open(shard.path, shard)
        try:
            self._file = self.pa.parquet.ParquetFile(
                self._handle, buffer_size=READ_BUFFER, pre_buffer=False
            )
        except (OSError, self.pa.ArrowException) as exc:
            self._handle.close()
            raise _changed(shard) from exc
        if self._file.metadata.num_rows != shard.rows:
            self.close()
            raise _changed(shard)
        self._batches: list[Any] = []  # record batches holding rows [_start, _end)
        self._start = self._end = -1
        self._iter: Iterator[Any] | None = None
        self._names: tuple[str, ...] = ()

    def _group(self, row: int) -> int:
        return int(np.searchsorted(self.shard.groups, row, side="right")) - 1

    def read(self, start: int, stop: int, names: Sequence[str]) -> dict[str, np.ndarray]:
        pa = self.pa
        if tuple(names) != self._names or not self._start <= start <= self._end:
            self._names = tuple(names)
            self._batches, self._iter = [], None
            self._start = self._end = self.shard.groups[self._group(start)]
        fresh = False  # an iterator just opened: it must give rows
        while self._end < stop:
            if self._iter is None:
                fresh = True
                first = self._group(self._end)
                last = self._group(max(stop, min(self.until, self.shard.rows)) - 1)
                if self.shard.groups[first] != self._end:
                    raise _changed(self.shard)
                self._iter = self._file.iter_batches(
                    batch_size=max(stop - start, self.ahead),
                    row_groups=range(first, last + 1),
                    columns=list(names),
                )
            try:
                batch = next(self._iter, None)
            except (OSError, pa.ArrowException) as exc:
                raise ValueError(f"cannot read {self.shard.path} as Parquet: {exc}") from exc
            if batch is None:
                if fresh:  # the row groups the metadata names hold fewer rows
                    raise _changed(self.shard)
                self._iter = None
                continue
            if not batch.num_rows:
                raise _changed(self.shard)
            fresh = False
            self._batches.append(batch)
            self._end += batch.num_rows
            self._drop(start)
        table = pa.Table.from_batches(self._batches).slice(start - self._start, stop - start)
        self._drop(stop)
        return {
            name: arrow_data.to_numpy(
                pa, table.column(name).combine_chunks(), name, self.shard.path, start
            )
            for name in names
        }

    def _drop(self, row: int) -> None:
        """Forget the batches that end at or before ``row``."""
        while self._batches and self._start + self._batches[0].num_rows <= row:
            self._start += self._batches.pop(0).num_rows

    def close(self) -> None:
        self._batches, self._iter = [], None
        self._file.close()
        self._handle.close()


# ---------------------------------------------------------------------------------------------
# the data set


_NPZ = (".npz",)
_PARQUET = (".parquet", ".pq")


def _sniff(path: Path) -> str | None:
    if path.suffix.lower() in _NPZ:
        return "npz"
    if path.suffix.lower() in _PARQUET:
        return "parquet"
    with _open(str(path)) as f:
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
            shard, cols = _npz_header(str(p))
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
            shard, other = _parquet_header(str(p))
            if schema is None:
                schema, columns = other, _parquet_columns(pa, other)
            elif not other.equals(schema):  # converted only where the schemas differ
                cols = _parquet_columns(pa, other)
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
        self._reader: tuple[int, _NpzReader | _ParquetReader] | None = None
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
        parts = [self._open(s).read(a, b, names) for s, a, b in pieces]
        if len(parts) == 1:
            return parts[0]
        return {name: np.concatenate([p[name] for p in parts]) for name in names}

    def _open(self, index: int) -> _NpzReader | _ParquetReader:
        if self._reader is not None:
            if self._reader[0] == index:
                reader = self._reader[1]
                if isinstance(reader, _ParquetReader):
                    reader.until = self._until - int(self._starts[index])
                return reader
            self.close()
        shard = self.shards[index]
        until = self._until - int(self._starts[index])
        if self.kind == "npz":
            reader: _NpzReader | _ParquetReader = _NpzReader(shard)
        else:
            reader = _ParquetReader(shard, until, self._ahead)
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
