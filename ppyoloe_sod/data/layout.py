"""PaddleX's COCO dataset layout, and the one safe way to change files inside a user's dataset.

Layout::

    DATASET/
      images/...                        image files (``file_name`` in the jsons is relative to this folder)
      annotations/instance_train.json   COCO detection
      annotations/instance_val.json

``dataset_dir`` may also be a folder above DATASET: as in PaddleX, the root is the parent of the one and only
``images`` folder found below it.

Changes (conversion, split) go through :func:`replace_files`, a small transaction: each replaced original is
kept as ``<name>.bak`` (``.bak1``, ``.bak2``... when a backup already exists, so an older backup is never
overwritten), and the dataset is seen either as it was or with every new file in place, even after a kill or
a power cut at any moment. How:

1. a journal, ``DATASET/.ppyoloe_sod_txn.json``, is written (atomically) in state ``staging``, listing every
   staged file and where it goes;
2. every new file and every backup is written completely under a staged name (``.<name>.ppyoloe_sod.tmp``
   next to its destination) and flushed to disk;
3. the journal is rewritten in state ``committing``: this is the commit point;
4. the staged files are renamed onto their destinations, then the journal is removed.

:func:`recover_dataset` finishes whatever an interrupted run left, and every dataset command calls it first
(:func:`find_dataset_root` does): a ``staging`` journal is rolled back (staged files removed), a
``committing`` one rolled forward (the renames not yet done are done). Recovery is idempotent, so a kill
during recovery is recovered by the next run too.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from ..errors import DatasetError, DiskFullError
from ..fileio import atomic_write_json, fsync_dir, mode_for, write_file_durably

log = logging.getLogger(__name__)

IMAGES_DIR = "images"
ANNOTATIONS_DIR = "annotations"
SPLIT_FILES = {"train": "instance_train.json", "val": "instance_val.json"}
JOURNAL_NAME = ".ppyoloe_sod_txn.json"
STAGED_SUFFIX = ".ppyoloe_sod.tmp"
JOURNAL_FORMAT = 1


def find_dataset_root(dataset_dir: str | os.PathLike) -> Path:
    """The folder holding ``images/``: ``dataset_dir`` itself or the parent of its only ``images`` folder.

    A change to that dataset that an earlier run left unfinished is completed or undone first (see
    :func:`recover_dataset`), so every command reads a whole dataset.
    """
    root = _locate_root(Path(dataset_dir))
    recover_dataset(root)
    return root


def _locate_root(d: Path) -> Path:
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


def staged_path(dest: Path) -> Path:
    """Where the new content of ``dest`` waits for the commit: a hidden sibling."""
    return dest.with_name(f".{dest.name}{STAGED_SUFFIX}")


def replace_files(root: str | os.PathLike, files: dict[Path, bytes], backup: bool = True) -> dict[Path, Path]:
    """Put all ``files`` (inside the dataset at ``root``) in place, or none; return {replaced original: backup}.

    Files whose content does not change are left alone. A failure before the commit point leaves the dataset
    as it was (a disk-full error becomes a DatasetError naming the file); see the module docstring.
    """
    root = Path(root)
    recover_dataset(root)
    staged, moves, backups = _plan(root, {Path(p): data for p, data in files.items()}, backup)
    if not moves:
        return backups
    journal = root / JOURNAL_NAME
    try:
        _write_journal(root, "staging", moves)
        for path, (data, mode) in staged.items():
            write_file_durably(path, data, mode)
        for folder in {p.parent for p in staged}:
            fsync_dir(folder)
        _write_journal(root, "committing", moves)  # the commit point
    except BaseException as e:
        try:
            _roll_back(root, moves)
        except OSError as cleanup_error:  # pragma: no cover - the journal stays: the next command cleans up
            log.error("Could not remove the staged files of the dataset at %s (%s); the next dataset command "
                      "will.", root, cleanup_error)
        if isinstance(e, DiskFullError):
            dest = dict(moves).get(Path(e.filename or ""), e.filename)
            raise DatasetError(f"Cannot write {str(dest)!r}: the disk is full. Free some space on it and run "
                               f"again; the dataset at {str(root)!r} was left as it was.") from e
        raise
    try:
        _roll_forward(root, moves)
    except OSError as e:
        raise DatasetError(f"The new files of the dataset at {str(root)!r} could not all be put in place ({e}); "
                           f"the change is recorded in {str(journal)!r} and the next dataset command (e.g. "
                           f"check_dataset) completes it once the cause is fixed.") from e
    for p, b in backups.items():
        log.info("Kept the original %s as %s", p, b.name)
    return backups


def _plan(root: Path, files: dict[Path, bytes], backup: bool
          ) -> tuple[dict[Path, tuple[bytes, int]], list[tuple[Path, Path]], dict[Path, Path]]:
    """Staged files {path: (content, mode)}, moves [(staged, destination)]: backups first, and backups made.

    A new file keeps the mode of the file it replaces, as does its backup.
    """
    staged: dict[Path, tuple[bytes, int]] = {}
    backup_moves: list[tuple[Path, Path]] = []
    new_moves: list[tuple[Path, Path]] = []
    backups: dict[Path, Path] = {}
    for dest, data in files.items():
        _inside(root, dest)
        old = dest.read_bytes() if dest.exists() else None
        if old == data:
            continue
        if backup and old is not None:
            backups[dest] = free_backup_path(dest)
            staged[staged_path(backups[dest])] = (old, mode_for(dest))
            backup_moves.append((staged_path(backups[dest]), backups[dest]))
        staged[staged_path(dest)] = (data, mode_for(dest))
        new_moves.append((staged_path(dest), dest))
    return staged, backup_moves + new_moves, backups


def recover_dataset(root: str | os.PathLike) -> str | None:
    """Finish a change that a killed run left in the dataset at ``root``: "rolled forward", "rolled back", or None.

    Also removes a half-written journal's temporary file. Safe to run again if interrupted.
    """
    root = Path(root)
    journal = root / JOURNAL_NAME
    outcome = None
    try:
        if journal.exists():
            state, moves = _read_journal(root)
            if state == "committing":
                _roll_forward(root, moves)
                outcome = "rolled forward"
                log.warning("Completed a change of the dataset at %s that an earlier run left unfinished: its "
                            "new files are now in place (the replaced ones kept as .bak).", root)
            else:
                _roll_back(root, moves)
                outcome = "rolled back"
                log.warning("Undid a change of the dataset at %s that an earlier run left unfinished: the "
                            "dataset is as it was before that run.", root)
        for leftover in root.glob(f".{JOURNAL_NAME}.*.tmp"):  # from a journal write that was cut short
            leftover.unlink(missing_ok=True)
    except OSError as e:
        raise DatasetError(f"The dataset at {str(root)!r} has an unfinished change recorded in {JOURNAL_NAME} that "
                           f"could not be completed ({e}); make the folder writable (or free disk space) and run "
                           f"again.") from e
    return outcome


def _inside(root: Path, path: Path) -> Path:
    """``path`` if it names a place under ``root`` (by its spelling: an annotations/ folder may be a symlink)."""
    if not Path(os.path.normpath(path)).is_relative_to(os.path.normpath(root)) or path == root:
        raise ValueError(f"{path} is outside the dataset at {root}")
    return path


def _write_journal(root: Path, state: str, moves: list[tuple[Path, Path]]) -> None:
    rel = [[p.relative_to(root).as_posix() for p in move] for move in moves]
    atomic_write_json(root / JOURNAL_NAME, {"format": JOURNAL_FORMAT, "state": state, "moves": rel}, indent=1)


def _read_journal(root: Path) -> tuple[str, list[tuple[Path, Path]]]:
    """The journal's state and moves, each path checked to lie in ``root`` (a staged file to end as staged)."""
    journal = root / JOURNAL_NAME
    try:
        doc: Any = json.loads(journal.read_text(encoding="utf-8"))
        state, moves = doc["state"], [(root / src, root / dst) for src, dst in doc["moves"]]
        if state not in ("staging", "committing") or not all(
                s.name.endswith(STAGED_SUFFIX) and _inside(root, s) and _inside(root, d) for s, d in moves):
            raise ValueError("unexpected content")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DatasetError(f"{str(journal)!r} records an unfinished change of this dataset but cannot be read "
                           f"({e}). Check the files in {str(root / ANNOTATIONS_DIR)!r} (the .bak files hold the "
                           f"previous versions), then delete {JOURNAL_NAME}.") from e
    return state, moves


def _roll_forward(root: Path, moves: list[tuple[Path, Path]]) -> None:
    for src, dst in moves:
        if src.exists():  # a move already done has no staged file left
            os.replace(src, dst)
    for folder in {dst.parent for _, dst in moves}:
        fsync_dir(folder)
    _remove_journal(root)


def _roll_back(root: Path, moves: list[tuple[Path, Path]]) -> None:
    """Remove the staged files, then the journal (last, so an interrupted roll-back is redone)."""
    for src, _ in moves:
        src.unlink(missing_ok=True)
    _remove_journal(root)


def _remove_journal(root: Path) -> None:
    (root / JOURNAL_NAME).unlink(missing_ok=True)
    fsync_dir(root)
