"""PaddleX's COCO dataset layout, and the one safe way to change files inside a user's dataset.

Layout::

    DATASET/
      images/...                        image files (``file_name`` in the jsons is relative to this folder)
      annotations/instance_train.json   COCO detection
      annotations/instance_val.json

``dataset_dir`` may also be a folder above DATASET: as in PaddleX, the root is the parent of the one and only
``images`` folder found below it.

Changes (conversion, split) go through :func:`replace_files`: every new file is written completely before any
is put in place, each replaced original is kept as ``<name>.bak`` (``.bak1``, ``.bak2``... when a backup
already exists, so an older backup is never overwritten), and a failure on the way puts everything back.
"""
from __future__ import annotations

import logging
import os
from contextlib import ExitStack
from pathlib import Path

from ..errors import DatasetError
from ..fileio import atomic_open, atomic_write_bytes

log = logging.getLogger(__name__)

IMAGES_DIR = "images"
ANNOTATIONS_DIR = "annotations"
SPLIT_FILES = {"train": "instance_train.json", "val": "instance_val.json"}


def find_dataset_root(dataset_dir: str | os.PathLike) -> Path:
    """The folder holding ``images/``: ``dataset_dir`` itself or the parent of its only ``images`` folder."""
    d = Path(dataset_dir)
    if not d.is_dir():
        raise DatasetError(f"Dataset folder not found: {str(d)!r}. Set Global.dataset_dir to the folder that "
                           f"contains images/ and annotations/.")
    if (d / IMAGES_DIR).is_dir():
        return d
    found = sorted(p for p in d.glob(f"**/{IMAGES_DIR}") if p.is_dir())
    if not found:
        raise DatasetError(f"No '{IMAGES_DIR}' folder under {str(d)!r}. Expected DATASET/{IMAGES_DIR}/ with the "
                           f"image files and DATASET/{ANNOTATIONS_DIR}/instance_train.json, instance_val.json.")
    if len(found) > 1:
        listing = ", ".join(str(p) for p in found[:10])
        raise DatasetError(f"{len(found)} '{IMAGES_DIR}' folders under {str(d)!r} ({listing}); the dataset root "
                           f"must be unambiguous: point Global.dataset_dir at the folder that holds the right one.")
    return found[0].parent


def annotation_path(root: str | os.PathLike, split: str) -> Path:
    """``root/annotations/instance_<split>.json``."""
    return Path(root) / ANNOTATIONS_DIR / SPLIT_FILES[split]


def free_backup_path(path: Path) -> Path:
    """``path.bak``, or ``path.bak1``, ``path.bak2``... if taken."""
    cand = path.with_name(path.name + ".bak")
    i = 0
    while cand.exists():
        i += 1
        cand = path.with_name(f"{path.name}.bak{i}")
    return cand


def replace_files(files: dict[Path, bytes], backup: bool = True) -> dict[Path, Path]:
    """Write all ``files`` or none; return {replaced original: its backup}.

    Order: back up the originals (copies), stage every new file as a complete temporary sibling, then rename
    them into place. If anything fails, the targets already renamed get their old content back, files that did
    not exist before are removed, and the backups made here are deleted.
    """
    files = {Path(p): data for p, data in files.items()}
    originals = {p: (p.read_bytes() if p.exists() else None) for p in files}
    backups: dict[Path, Path] = {}
    try:
        if backup:
            for p, old in originals.items():
                if old is not None and old != files[p]:
                    b = free_backup_path(p)
                    atomic_write_bytes(b, old)
                    backups[p] = b
        with ExitStack() as stack:  # each atomic_open renames its file when the stack unwinds, none on error
            for p, data in files.items():
                stack.enter_context(atomic_open(p, "wb")).write(data)
    except BaseException:
        _roll_back(files, originals, backups)
        raise
    for p, b in backups.items():
        log.info("Kept the original %s as %s", p, b.name)
    return backups


def _roll_back(files: dict[Path, bytes], originals: dict[Path, bytes | None], backups: dict[Path, Path]) -> None:
    for p, old in originals.items():
        try:
            if not p.exists():
                continue
            current = p.read_bytes()
            if old is None:
                if current == files[p]:
                    p.unlink()
            elif current != old:
                atomic_write_bytes(p, old)
        except OSError as e:  # pragma: no cover - best effort, reported
            log.error("Could not restore %s (%s); its backup is kept.", p, e)
            backups.pop(p, None)
    for b in backups.values():
        try:
            b.unlink()
        except OSError:  # pragma: no cover
            pass
    # Folders created for new files are left; they are empty and harmless.
