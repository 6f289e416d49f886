"""The files of a ``compare`` data set: what planning learns of each (:class:`Shard`, its
:class:`Column` types) and the readers of its rows, ``.npz`` (:class:`NpzReader`) and Parquet
(:class:`ParquetReader`), each reading through the handle it opened and refusing a file that
changed since planning (see :mod:`.data` for how a data set uses them).
"""

from __future__ import annotations

import os
import stat
import struct
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from .. import arrow_data
from ..data_files import npz_member_header

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


def open_checked(path: str, planned: Shard | None = None) -> BinaryIO:
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


def npz_header(path: str) -> tuple[Shard, dict[str, Column]]:
    with open_checked(path) as f:
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


class NpzReader:
    """One open ``.npz`` shard: its members' headers parsed again from the handle its rows are
    read through, rows read by seeking."""

    def __init__(self, shard: Shard) -> None:
        self.shard = shard
        self._file = open_checked(shard.path, shard)
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


def parquet_header(path: str) -> tuple[Shard, Any]:
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


def parquet_columns(pa, schema, path: str) -> dict[str, Column]:  # noqa: ANN001
    """Each column's per-row shape and dtype; ``ValueError`` naming the file and the column
    where one is not a numeric tensor."""
    columns = {}
    for field in schema.to_arrow_schema():
        try:
            columns[field.name] = Column(*arrow_data.row_type(pa, field.type))
        except ValueError as exc:
            raise ValueError(f"{path}: column {field.name!r}: {exc}") from None
    return columns


class ParquetReader:
    """One open Parquet shard, read in record batches from the row group where a read starts
    (so a reader handed some row groups reads only those), the batches read ahead of the next
    slice kept for it. A read further on in the row groups being read goes on reading to it
    (pyarrow cannot start within a row group): a Ray worker handed every other run of a file
    that is one large row group decodes each row once, not the group again from its start for
    every run."""

    def __init__(self, shard: Shard, until: int, ahead: int = 1) -> None:
        self.pa = arrow_data.pyarrow()
        self.shard = shard
        self.until = until
        self.ahead = ahead
        """Rows per record batch at least (a read of more rows takes that many)."""
        self._handle = open_checked(shard.path, shard)
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
        self._iter_stop = -1  # the end of the row groups self._iter reads
        self._names: tuple[str, ...] = ()

    def _group(self, row: int) -> int:
        return int(np.searchsorted(self.shard.groups, row, side="right")) - 1

    def read(self, start: int, stop: int, names: Sequence[str]) -> dict[str, np.ndarray]:
        pa = self.pa
        ahead = self._iter is not None and self._end < start < self._iter_stop
        if tuple(names) != self._names or not (self._start <= start <= self._end or ahead):
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
                self._iter_stop = self.shard.groups[last + 1]
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
