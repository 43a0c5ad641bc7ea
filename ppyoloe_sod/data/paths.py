"""The one rule for paths written inside dataset files (COCO ``file_name``, list entries, ``imagePath``...).

Such a path is data, not a place the user chose: it may only name a file inside the folder it is relative to.
So it must be relative (no leading ``/`` or ``\\``, no drive letter such as ``C:``), must not climb above that
folder with ``..``, and the file it names must still be inside the folder once symlinks are followed. ``\\`` is
read as a separator, as on Windows where such files are often written, so ``..\\x.jpg`` is refused everywhere.
The folder itself may be a symlink (e.g. ``images/`` on another disk): containment is judged against its real
location.
"""
from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

from ..errors import DatasetError

_DRIVE = re.compile(r"^[A-Za-z]:")
_SEPARATORS = re.compile(r"[\\/]")


def relative_entry(entry: str, what: str = "path", folder: str = "the dataset folder") -> PurePosixPath:
    """``entry`` as a normalized relative path (``.`` and ``a/..`` folded away); DatasetError if it is absolute,
    climbs out, or names no file (empty, ``.``)."""
    if not isinstance(entry, str):
        raise DatasetError(f"{what} {entry!r} is not a string; write a path relative to {folder}")
    if "\x00" in entry:
        raise DatasetError(f"{what} {entry!r} contains a NUL character; write a plain relative path")
    if entry[:1] in ("/", "\\") or _DRIVE.match(entry):
        raise DatasetError(f"{what} {entry!r} is an absolute path; dataset files may only name files by a path "
                           f"relative to {folder} (move the file there and write that path)")
    parts: list[str] = []
    for part in _SEPARATORS.split(entry):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise DatasetError(f"{what} {entry!r} climbs out of {folder} with '..'; dataset files may only "
                                   f"name files inside it")
            parts.pop()
        else:
            parts.append(part)
    if not parts:
        raise DatasetError(f"{what} {entry!r} names {folder} itself, not a file in it")
    return PurePosixPath(*parts)


def base_name(entry: str) -> str:
    """The last component of a path written on any system (``/`` or ``\\`` separated): the file name that
    formats which only name an image (LabelMe's ``imagePath``, VOC's ``<filename>``) are looked up by."""
    return _SEPARATORS.split(entry)[-1]


def inside_path(base: str | os.PathLike, entry: str, what: str = "path") -> Path:
    """``base / entry`` if the entry stays inside ``base`` (see the module docstring); DatasetError otherwise.

    Nothing is opened: only the path and the symlinks on it are looked at, so a refused entry is never read.
    """
    base = Path(base)
    path = base.joinpath(*relative_entry(entry, what, str(base)).parts)
    real_base, real_path = os.path.realpath(base), os.path.realpath(path)
    if not _contains(real_base, real_path):
        raise DatasetError(f"{what} {entry!r} leads out of {base} through a symbolic link (to {real_path}); "
                           f"dataset files may only name files inside it: copy the file there")
    return path


def _contains(folder: str, path: str) -> bool:
    try:
        return os.path.commonpath([folder, path]) == folder
    except ValueError:  # Windows: different drives
        return False
