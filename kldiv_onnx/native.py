"""Locate the fused-kernel library (``libkldiv_onnx_ops.so``) that ``pip install .`` builds.

Register it with onnxruntime through
``SessionOptions.register_custom_ops_library(library_path())``: every ``kldiv_onnx`` node
(the eight ``KLDivLoss_<reduction>[_logtarget]`` variants and the generic ``KLDivLoss``) then
runs as one native kernel instead of its function body. ``library_path()`` checks the file
once per process (a damaged copy raises :class:`LibraryDamagedError` instead of crashing the
process) and then answers from memory.

The check has a cheap part, run in every process (the ELF headers and loadable segments lie
inside the file: a truncated copy fails it), and an expensive one (the SHA-256 against pip's
RECORD, or loading the file in a throw-away process) run once per file identity: a pass is
remembered in ``$XDG_CACHE_HOME/kldiv-onnx`` (else ``~/.cache/kldiv-onnx``) under the file's
device, inode, size, mtime and ctime, so any write to the file, a rename over it or a copy in
its place is checked again. A cache folder that cannot be written just means no memory.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import signal
import struct
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

try:  # built by the wheel beside the library; absent in a source tree that was not built
    import kldiv_onnx._core as _core
except ImportError:
    _core = None

LIBRARY_NAME = "libkldiv_onnx_ops.so"
"""File name of the custom-op library inside the installed package."""
ENV_VAR = "KLDIV_ONNX_LIBRARY"
"""Environment variable that overrides the library's location (a path to the .so)."""
ISA_ENV_VAR = "KLDIV_ONNX_ISA"
"""Environment variable capping the SIMD code path the library picks at load: ``avx3``
(AVX-512), ``avx2`` or ``scalar`` on x86-64, ``sve``, ``neon`` or ``scalar`` on aarch64; unset
means the best the CPU supports (``doctor`` shows it)."""


class LibraryDamagedError(FileNotFoundError):
    """The library file is there but cannot be loaded safely (truncated, corrupt, not the
    installed build). A :class:`FileNotFoundError`, so that every caller that copes with a
    missing library (``available()``, the CLI's one-line errors) copes with a damaged one."""


_RESOLVED: dict[str | None, str] = {}
"""``library_path()``'s answers, keyed by the value of ``$KLDIV_ONNX_LIBRARY`` (None: unset):
a path is resolved and checked once per process, then no call touches the file system."""
_WARNED: set[str] = set()
_PROBE = """
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
try:
    target = lib.KLDivOnnxActiveTarget
except AttributeError:
    print("unknown (a build without KLDivOnnxActiveTarget)")
else:
    target.restype = ctypes.c_char_p
    print(target().decode(errors="replace"))
"""


def library_path() -> str:
    """Absolute path of the custom-op library, checked before anything loads it.

    ``$KLDIV_ONNX_LIBRARY`` wins when set; otherwise the library next to this module. The
    answer is cached per value of the variable (a missing file is looked for again).

    Raises:
        FileNotFoundError: naming the place looked at, when the library is not there.
        LibraryDamagedError: naming the file and what is wrong with it (a truncated copy would
            otherwise kill the process with SIGBUS inside ``register_custom_ops_library``).
    """
    override = os.environ.get(ENV_VAR) or None
    cached = _RESOLVED.get(override)
    if cached is not None:
        return cached
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{ENV_VAR}={override!r}: no such file")
        path = path.resolve()
    else:
        path = Path(__file__).resolve().parent / LIBRARY_NAME
        if not path.is_file():
            raise FileNotFoundError(
                f"{LIBRARY_NAME} not found in {path.parent} (build it with `pip install .`, "
                f"or set {ENV_VAR} to its path)"
            )
    problem = _check(path)
    if problem:
        raise LibraryDamagedError(f"{path}: damaged native library, not loaded ({problem})")
    _RESOLVED[override] = str(path)
    return str(path)


def available() -> bool:
    """True when :func:`library_path` finds the library and it passes the check (it is not
    loaded here). A damaged library gives False and, once per path, a RuntimeWarning: the
    ``auto`` backend then runs the composite."""
    try:
        library_path()
    except LibraryDamagedError as exc:
        if str(exc) not in _WARNED:
            _WARNED.add(str(exc))
            warnings.warn(f"{exc}; using the composite instead", RuntimeWarning, stacklevel=2)
        return False
    except FileNotFoundError:
        return False
    return True


def active_target() -> str:
    """The SIMD path the kernels run in this process (``avx3``, ``avx2``, ``sve``, ``neon`` or
    ``scalar``, after ``$KLDIV_ONNX_ISA``; ``error: ...`` for a value naming no path), read
    from the checked library's ``KLDivOnnxActiveTarget``. Raises what :func:`library_path`
    raises."""
    target = _exported("KLDivOnnxActiveTarget", ctypes.c_char_p)
    if target is None:
        return "unknown (a build without KLDivOnnxActiveTarget)"
    return target.decode(errors="replace")


def api_version() -> int | None:
    """The onnxruntime C API version the library requests (``kOrtApiVersion`` in
    ``custom_ops/ort/kldiv_ops.h``; an onnxruntime older than that refuses it with a clear
    error), read from the checked library's ``KLDivOnnxOrtApiVersion``; None for a build
    without it. Raises what :func:`library_path` raises."""
    return _exported("KLDivOnnxOrtApiVersion", ctypes.c_uint32)


def _exported(name: str, restype: type) -> Any:
    """What the checked library's exported C function ``name`` (no arguments) returns, as
    ``restype``; None when the build does not export it. Loaded in this process: the library
    passed :func:`library_path`'s check, and loading an already loaded one costs nothing."""
    lib = ctypes.CDLL(library_path())
    try:
        function = getattr(lib, name)
    except AttributeError:
        return None
    function.restype = restype
    return function()


@functools.cache
def core() -> ModuleType | None:
    """``kldiv_onnx._core``, the numeric core's per-row KL called without onnxruntime (a
    nanobind module the wheel builds beside the library), with ``$KLDIV_ONNX_ISA`` applied as
    the library applies it; None where it is not built or the variable names no SIMD path (the
    library then reports that). Decided once per process, as the SIMD path is."""
    cap = os.environ.get(ISA_ENV_VAR)
    return None if _core is None or (cap and _core.cap_target(cap)) else _core


def _check(path: Path) -> str:
    """'' when the file looks loadable, else what is wrong: its ELF layout must fit in the
    file (every time), then, unless this very file (:func:`_identity`) passed before, its
    SHA-256 must match pip's RECORD when it is the installed package's library, and any other
    file (``$KLDIV_ONNX_LIBRARY``, a build in the source tree) must load in a throw-away
    process. A pass is remembered (:func:`_remember`); a failure never is."""
    try:
        identity = _identity(path)
        problem = _elf_problem(path)
        if problem:
            return problem
        cache = _cache_file(path)
        if cache is not None and _remembered(cache) == identity:
            return ""
        problem = _full_check(path)
    except OSError as exc:
        return f"unreadable: {exc}"
    if not problem and cache is not None and _identity(path) == identity:
        _remember(cache, identity)  # not when the file changed while it was checked
    return problem


CACHE_SCHEMA = "kldiv-onnx-native-check/1"
"""Tag of the remembered verdicts; a new way of checking gets a new tag (old entries then
count for nothing)."""


def _identity(path: Path) -> list[int]:
    """What tells this file from any other, or from itself after a write: device, inode, size,
    mtime and ctime in ns (a write or a rename over the file changes ctime, which no user
    call can set back)."""
    st = path.stat()
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _cache_file(path: Path) -> Path | None:
    """Where the verdict for ``path`` is remembered (one small file per library path, so that
    two processes checking two libraries never overwrite each other); None without a home."""
    base = os.environ.get("XDG_CACHE_HOME") or ""
    if not os.path.isabs(base):  # the XDG rule: a relative value is ignored
        try:
            base = str(Path.home() / ".cache")
        except RuntimeError:  # no home directory to be found
            return None
    key = hashlib.sha256(str(path).encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return Path(base) / "kldiv-onnx" / f"native-check-{key}.json"


def _remembered(cache: Path) -> list[int] | None:
    """The identity remembered as passing in ``cache``; None for none, or for an unreadable,
    foreign or older-schema file."""
    try:
        entry = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("schema") != CACHE_SCHEMA:
        return None
    identity = entry.get("identity")
    return identity if isinstance(identity, list) else None


def _remember(cache: Path, identity: list[int]) -> None:
    """Write ``identity`` as passing into ``cache`` atomically (a temporary file renamed over
    it: a reader sees the old entry or the new one, never half of one); a failure to write is
    ignored. Not ``model_io.atomic_write``: that one imports onnx and turns the failure into a
    user's error."""
    with contextlib.suppress(OSError):
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=".native-check-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"schema": CACHE_SCHEMA, "identity": identity}, f)
            os.replace(tmp, cache)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def _full_check(path: Path) -> str:
    """The expensive part of :func:`_check`: the RECORD hash, or else a throw-away process
    loading the file."""
    problem = _record_problem(path)
    if problem is not None:
        return problem  # a RECORD match ('') needs no probe
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE, str(path)],
            capture_output=True,
            encoding="utf-8",
            errors="replace",
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"loading it in a separate process failed: {exc}"
    if proc.returncode < 0:
        return f"loading it killed a separate process with {signal.Signals(-proc.returncode).name}"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        return f"loading it in a separate process failed: {last}"
    return ""


def _elf_problem(path: Path) -> str | None:
    """None when every loadable segment and the section table lie inside the file."""
    size = path.stat().st_size
    with path.open("rb") as f:
        header = f.read(64)
        if len(header) < 64 or header[:4] != b"\x7fELF":
            return f"not an ELF shared object ({size} bytes)"
        if header[4] != 2 or header[5] != 1:
            return "not a 64-bit little-endian ELF file"
        phoff, shoff = struct.unpack_from("<QQ", header, 0x20)
        phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", header, 0x36)
        end = max(phoff + phentsize * phnum, shoff + shentsize * shnum)
        if end > size:
            return f"truncated: {size} bytes, its headers reach byte {end}"
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    for i in range(phnum):
        kind, _, offset, _, _, filesz = struct.unpack_from("<IIQQQQ", table, i * phentsize)
        if kind == 1 and offset + filesz > size:  # PT_LOAD
            return f"truncated: {size} bytes, a loadable segment reaches byte {offset + filesz}"
    return None


def _record_problem(path: Path) -> str | None:
    """None when `path` is not the installed package's library (no RECORD entry), '' when its
    SHA-256 matches pip's RECORD, else what differs."""
    try:
        dist = importlib.metadata.distribution("kldiv_onnx")
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in dist.files or ():
        if entry.name != LIBRARY_NAME or entry.hash is None or entry.hash.mode != "sha256":
            continue
        if Path(dist.locate_file(entry)).resolve() != path:
            continue
        digest = hashlib.sha256(path.read_bytes()).digest()
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != entry.hash.value:
            return "its SHA-256 differs from the one pip recorded at install (RECORD)"
        return ""
    return None


def simd_level(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The widest vector extension the CPU reports, from the flags in ``/proc/cpuinfo``:
    avx512f, avx2 or sse4_2 on x86-64, sve or asimd on aarch64; the machine name elsewhere
    (also under QEMU 7.2's aarch64 emulation, which shows the host's x86 flags)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            flags = next(
                (
                    line.split(":", 1)[1].split()
                    for line in f
                    if line.startswith(("flags", "Features"))
                ),
                [],
            )
    except OSError:
        return f"unknown ({platform.machine()})"
    arm = platform.machine().lower() in ("aarch64", "arm64")
    for flag in ("sve", "asimd") if arm else ("avx512f", "avx2", "sse4_2"):
        if flag in flags:
            return flag
    return f"baseline ({platform.machine()})"
