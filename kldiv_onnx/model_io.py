"""Reading and writing files: the one model loader, and writes that never leave half a file.

:func:`load_model` takes a path, bytes or a ``ModelProto``. A path's external data is read
from the model's own folder, wherever the process runs; an empty file, a folder, random bytes
or a missing data file is a ``ValueError`` (a missing model file a ``FileNotFoundError``) that
names the path.

Every write goes to a temporary file in the target folder and is renamed over the target only
once complete (:func:`atomic_write`, :func:`save_model`): a failure (a full disk, a file-size
limit) leaves the target as it was and no partial file behind, so ``embed m.onnx m.onnx``
cannot destroy its input. A written file gets the mode of the file it replaces, else the
umask's (the external data file too).

External data. Every tensor may keep its bytes in another file: initializers, node attributes
(a ``Constant``'s ``value`` among them), sparse tensors, in subgraphs and in model-local
functions; :func:`load_model` reads them all from the model's folder, never from the working
directory. :func:`save_model` writes a model's data to ``<name>.<16 hex digits>.data``, a name
new to each write, and the ``.onnx`` names its own data file: concurrent writers to one
output each rename their data file in, then their ``.onnx`` (atomically, last), so the model
on disk always reads the data written with it, and a reader that opened one ``.onnx`` can
never read another write's data (at worst, while a newer write removes the older data file,
it fails to find it). Renaming in and removing the previous write's data file happen under an
exclusive ``flock`` on the folder, so that a writer never removes the data of the model that
won; only this naming scheme's files are removed, never a data file the user brought (a torch
export's ``model.onnx.data`` stays).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from itertools import chain
from pathlib import Path

import onnx
from onnx import GraphProto, ModelProto, TensorProto
from onnx import external_data_helper as _external

from .errors import first_line

ModelLike = ModelProto | bytes | str | os.PathLike
EXTERNAL_DATA_THRESHOLD = 2**31 - 2**20
"""Models whose serialised size would pass this (protobuf's 2 GiB limit, less a margin) are
saved with their tensors as external data."""


def check_input_file(path: str | os.PathLike, what: str = "file") -> Path:
    """``path`` as a ``Path`` if it names a readable, non-empty regular file.

    Raises ``FileNotFoundError`` when nothing is there, ``ValueError`` for a folder, a device,
    an empty or unreadable file; each message names the path.
    """
    p = Path(path)
    try:
        info = p.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"cannot read {what} {os.fspath(path)!r}: no such file") from None
    except OSError as exc:
        raise ValueError(f"cannot read {what} {os.fspath(path)!r}: {first_line(exc)}") from exc
    if stat.S_ISDIR(info.st_mode):
        raise ValueError(f"cannot read {what} {os.fspath(path)!r}: it is a directory")
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"cannot read {what} {os.fspath(path)!r}: not a regular file")
    if info.st_size == 0:
        raise ValueError(f"cannot read {what} {os.fspath(path)!r}: the file is empty")
    if not os.access(p, os.R_OK):
        raise ValueError(f"cannot read {what} {os.fspath(path)!r}: permission denied")
    return p


def _check_parsed(model: ModelProto, source: str) -> ModelProto:
    # protobuf parses many byte strings (an empty one among them) as a valid, empty message
    if not model.HasField("graph") or model.ir_version <= 0:
        raise ValueError(f"cannot read {source}: not an ONNX model (no graph or no IR version)")
    return _check_functions(model, source)


def _check_functions(model: ModelProto, source: str) -> ModelProto:
    cycle = recursive_functions(model)
    if cycle:
        raise ValueError(
            f"cannot read {source}: its model-local functions are recursive "
            f"({' -> '.join(cycle)}); ONNX does not allow a function to call itself"
        )
    return model


def recursive_functions(model: ModelProto) -> list[str]:
    """A cycle of calls among ``model``'s local functions as ``domain.name`` strings, the
    first repeated at the end (``[]`` if none). onnx's checker finds cycles too, but only as
    part of the whole model's check, which fails first on many other things."""
    functions = {(f.domain, f.name): f for f in model.functions}

    def calls(items: Iterable[onnx.NodeProto]) -> Iterator[tuple[str, str]]:
        for node in items:
            if (node.domain, node.op_type) in functions:
                yield (node.domain, node.op_type)
            for attr in node.attribute:
                for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    yield from calls(g.node)

    callees = {key: list(dict.fromkeys(calls(f.node))) for key, f in functions.items()}
    done: set[tuple[str, str]] = set()
    for start in functions:  # depth first, iterative: no Python recursion limit
        if start in done:
            continue
        path, stack = [start], [iter(callees[start])]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                done.add(path.pop())
                stack.pop()
            elif nxt in path:
                cycle = [*path[path.index(nxt) :], nxt]
                return [f"{d or 'ai.onnx'}.{n}" for d, n in cycle]
            elif nxt not in done:
                path.append(nxt)
                stack.append(iter(callees[nxt]))
    return []


def load_model(model: ModelLike, what: str = "model", *, external_data: bool = True) -> ModelProto:
    """A ``ModelProto`` from a path, serialised bytes or a ``ModelProto`` (then a copy, so the
    caller's is never modified).

    ``external_data``: read a path's external tensors from the model's folder (``False``
    leaves them as references, for checks that read only the graph).
    """
    if isinstance(model, ModelProto):
        copy = ModelProto()
        copy.CopyFrom(model)
        return _check_functions(copy, what)
    if isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
        if not data:
            raise ValueError(f"cannot read {what}: empty bytes are not an ONNX model")
        try:
            proto = onnx.load_from_string(data)
        except Exception as exc:  # protobuf's DecodeError and friends
            raise ValueError(f"cannot read {what}: not an ONNX model: {first_line(exc)}") from exc
        return _check_parsed(proto, what)
    if isinstance(model, (str, os.PathLike)):
        path = check_input_file(model, what)
        try:
            proto = onnx.load(os.fspath(path), load_external_data=False)
        except Exception as exc:
            raise ValueError(
                f"cannot read {what} {os.fspath(model)!r}: not an ONNX model: {first_line(exc)}"
            ) from exc
        _check_parsed(proto, f"{what} {os.fspath(model)!r}")
        if external_data and uses_external_data(proto):
            folder = str(path.resolve().parent)
            try:
                for tensor in all_tensors(proto):
                    if _external.uses_external_data(tensor):
                        _external.load_external_data_for_tensor(tensor, folder)
            except Exception as exc:
                raise ValueError(
                    f"cannot read {what} {os.fspath(model)!r}: its external data: {first_line(exc)}"
                ) from exc
        return proto
    raise TypeError(
        f"{what} must be an onnx.ModelProto, bytes or a path, got {type(model).__name__}"
    )


def all_tensors(model: ModelProto) -> Iterator[TensorProto]:
    """Every tensor of ``model``: onnx's own walk (initializers of the graph and its subgraphs,
    attribute tensors of the graph and of every function), plus what it leaves out: sparse
    tensors' values and indices, and the initializers of subgraphs inside functions."""
    return chain(_external._get_all_tensors(model), _missed_tensors(model))


def _missed_tensors(model: ModelProto) -> Iterator[TensorProto]:
    def sparse(s: onnx.SparseTensorProto) -> Iterator[TensorProto]:
        yield s.values
        yield s.indices

    def graph(g: GraphProto, in_function: bool) -> Iterator[TensorProto]:
        if in_function:
            yield from g.initializer
        for s in g.sparse_initializer:
            yield from sparse(s)
        yield from nodes(g.node, in_function)

    def nodes(items: Iterable[onnx.NodeProto], in_function: bool) -> Iterator[TensorProto]:
        for node in items:
            for attr in node.attribute:
                if attr.HasField("sparse_tensor"):
                    yield from sparse(attr.sparse_tensor)
                for s in attr.sparse_tensors:
                    yield from sparse(s)
                for g in [attr.g] if attr.HasField("g") else []:
                    yield from graph(g, in_function)
                for g in attr.graphs:
                    yield from graph(g, in_function)

    yield from graph(model.graph, False)
    for function in model.functions:
        yield from nodes(function.node, True)


def uses_external_data(model: ModelProto) -> bool:
    """Whether any tensor of ``model`` (see :func:`all_tensors`) keeps its data in another
    file."""
    return any(_external.uses_external_data(t) for t in all_tensors(model))


def saved_with_external_data(path: str | os.PathLike) -> bool:
    """Whether the model file at ``path`` keeps tensors in external data files."""
    return uses_external_data(load_model(path, external_data=False))


def check_output_path(
    path: str | os.PathLike, what: str = "output", *, inputs: Iterable[str | os.PathLike] = ()
) -> Path:
    """``path`` as a ``Path`` if a file can be written there: its folder exists and is
    writable, it is not a folder or a device (``/dev/full``), and it is none of ``inputs``
    (the files the command reads: a report written over one would destroy it). ``ValueError``
    otherwise."""
    p = Path(path)
    name = os.fspath(path)
    if not name:
        raise ValueError(f"cannot write {what}: empty path")
    with contextlib.suppress(FileNotFoundError):
        info = p.stat()
        if stat.S_ISDIR(info.st_mode):
            raise ValueError(f"cannot write {what} {name!r}: it is a directory")
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"cannot write {what} {name!r}: not a regular file")
        for source in inputs:
            with contextlib.suppress(OSError):
                if os.path.samefile(p, source):
                    raise ValueError(
                        f"cannot write {what} {name!r}: it is the input {os.fspath(source)!r}"
                    )
    folder = p.resolve().parent
    if not folder.is_dir():
        raise ValueError(f"cannot write {what} {name!r}: folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {what} {name!r}: folder {str(folder)!r} is not writable")
    return p


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, what: str = "output") -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; once the block ends without an error it
    replaces ``path`` (a rename), otherwise it is removed. ``OSError`` while writing becomes a
    ``ValueError`` naming ``path``."""
    target = check_output_path(path, what)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".tmp", dir=target.resolve().parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if target.exists():  # keep the permissions of a file being replaced
            shutil.copymode(target, tmp_path)
        else:
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, target)
    except OSError as exc:
        raise ValueError(f"cannot write {what} {os.fspath(path)!r}: {first_line(exc)}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike, data: bytes, what: str = "output") -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path, what) as tmp:
        tmp.write_bytes(data)


DATA_FILE = re.compile(r"(?P<model>.+)\.[0-9a-f]{16}\.data")
"""The name :func:`save_model` gives a model's data file: ``<model file name>.<token>.data``."""


def save_model(
    model: ModelProto, path: str | os.PathLike, *, external_data: bool | None = None
) -> None:
    """Save ``model`` to ``path`` atomically.

    ``external_data``: keep the initializers of 1 KiB and more in a data file beside the model
    (``None``: when the model already referenced external data or would pass 2 GiB). The data
    file's name is new to each write (see the module docstring) and relative to the model, so
    the two load from any folder; the previous write's data file is removed.
    """
    target = check_output_path(path, "model")
    for tensor in all_tensors(model):  # its data file, named relative to another folder
        if _external.uses_external_data(tensor) and not tensor.HasField("raw_data"):
            raise ValueError(
                f"cannot write model {os.fspath(path)!r}: the external data of tensor "
                f"{tensor.name!r} was not read"
            )
    if external_data is None:
        external_data = uses_external_data(model) or model.ByteSize() > EXTERNAL_DATA_THRESHOLD
    folder = target.resolve().parent
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=folder))
    try:
        copy = ModelProto()
        copy.CopyFrom(model)
        location = _write_external_data(copy, target.name, staging) if external_data else None
        try:
            data = copy.SerializeToString()
        except ValueError as exc:  # protobuf refuses messages over 2 GiB
            raise ValueError(f"cannot write model {os.fspath(path)!r}: {exc}") from exc
        (staging / target.name).write_bytes(data)
        with _locked(folder):
            mode = stat.S_IMODE(target.stat().st_mode) if target.exists() else 0o666 & ~_umask()
            written = [location] if location else []
            for name in [*written, target.name]:
                os.chmod(staging / name, mode)
            for name in written:
                os.replace(staging / name, folder / name)
            os.replace(staging / target.name, target)
            _remove_old_data(folder, target.name, keep=location)
    except OSError as exc:
        raise ValueError(f"cannot write model {os.fspath(path)!r}: {first_line(exc)}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_external_data(model: ModelProto, name: str, staging: Path) -> str | None:
    """Move ``model``'s initializers of 1 KiB and more to ``staging/<name>.<token>.data``, in
    place; return the data file's name (None when no tensor moved).

    onnx's ``convert_model_to_external_data`` is not used: it refuses a location that exists
    relative to the working directory, not to the model, so a file of that name where the
    command runs would stop the write."""
    location = f"{name}.{secrets.token_hex(8)}.data"
    moved = False
    for tensor in _external._get_initializer_tensors(model):
        if tensor.HasField("raw_data") and len(tensor.raw_data) >= 1024:
            _external.set_external_data(tensor, location)
            moved = True
    if not moved:
        return None
    _external.write_external_data_tensors(model, str(staging))
    return location


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``folder``, for the renames that replace a model."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _remove_old_data(folder: Path, name: str, keep: str | None) -> None:
    """Remove the data files earlier writes of model ``name`` left (see :data:`DATA_FILE`)."""
    for entry in os.scandir(folder):
        found = DATA_FILE.fullmatch(entry.name)
        if found and found["model"] == name and entry.name != keep and entry.is_file():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
