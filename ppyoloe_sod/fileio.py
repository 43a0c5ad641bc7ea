"""Crash-safe file writing: every file the package writes goes through here.

A write goes to a temporary file in the destination folder and is renamed over the target only once it is
complete, so an interrupted run never leaves a half-written file (or a damaged original) behind.

Permissions: a new file gets what the user's umask allows (``0o666 & ~umask``, like ``open()``); a file that
is replaced keeps the mode it had. A write that fails because the disk is full raises
:class:`~ppyoloe_sod.errors.DiskFullError` naming the file, even when a library (torch) wraps the OSError.
"""
from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, IO

from .errors import DiskFullError

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})
_UMASK_LOCK = threading.Lock()


# ----------------------------------------------------------------------------------------------- modes


def current_umask() -> int:
    """The process umask, read without changing it where the OS tells it (Linux), else set back at once."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # os.umask can only be read by setting it; hold the lock so threads here agree
        old = os.umask(0o077)
        os.umask(old)
    return old


def mode_for(path: str | os.PathLike) -> int:
    """Permission bits for writing ``path``: the existing file's, or ``0o666 & ~umask`` for a new file."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return 0o666 & ~current_umask()


def _set_mode(fd: int, path: str | os.PathLike, mode: int) -> None:
    if hasattr(os, "fchmod"):
        os.fchmod(fd, mode)
    else:  # pragma: no cover - Windows
        os.chmod(path, mode)


# ------------------------------------------------------------------------------------------- disk full


def _disk_full_cause(exc: BaseException) -> OSError | None:
    """The ENOSPC/EDQUOT OSError behind ``exc`` (itself, or its cause/context chain), if any."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


@contextmanager
def reporting_disk_full(path: str | os.PathLike) -> Iterator[None]:
    """Turn a disk-full failure while writing ``path`` into a DiskFullError that names it."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as e:
        cause = _disk_full_cause(e)
        if cause is None:
            raise
        raise DiskFullError(cause.errno, f"Cannot write {str(path)!r}: the disk is full "
                                         f"({os.strerror(cause.errno)}). Free some space on it and run again; the "
                                         f"existing file, if any, is unchanged.", str(path)) from e


# ---------------------------------------------------------------------------------------------- writing


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make renames and new entries in ``folder`` durable (best effort: not every OS can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # pragma: no cover - Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on folders
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; rename it onto ``path`` on success only."""
    if not any(m in mode for m in "wax"):
        raise ValueError(f"atomic_open is for writing, got mode {mode!r}")
    path = Path(path)
    with reporting_disk_full(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        file_mode = mode_for(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, mode.replace("a", "w").replace("x", "w"), **kwargs) as f:
                _set_mode(f.fileno(), tmp, file_mode)  # mkstemp made it 0600
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            _remove_if_present(tmp)
            raise
        fsync_dir(path.parent)


def _remove_if_present(path: str | os.PathLike) -> None:
    """Drop a temporary file left by a failed write (it may already be gone)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary sibling file name ending in ``path``'s suffix, for writers that take a name, not a file object
    (OpenCV's VideoWriter picks the container from the suffix); renamed onto ``path`` when the block succeeds,
    removed when it fails."""
    path = Path(path)
    with reporting_disk_full(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        file_mode = mode_for(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
        os.close(fd)
        try:
            yield Path(tmp)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                _set_mode(fd, tmp, file_mode)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            _remove_if_present(tmp)
            raise
        fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    with atomic_open(path, "w", encoding=encoding) as f:
        f.write(text)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 4, ensure_ascii: bool = False) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=ensure_ascii) + "\n")


def write_file_durably(path: str | os.PathLike, data: bytes, mode: int) -> None:
    """Create (or truncate) ``path`` holding ``data`` with permission bits ``mode``, flushed to disk.

    Not atomic by itself: it is for files staged under a fixed name that a journal lists before they exist
    (see ``data.layout.replace_files``), so an interrupted write can be found and removed.
    """
    path = Path(path)
    with reporting_disk_full(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o600)
        try:
            _set_mode(fd, path, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
