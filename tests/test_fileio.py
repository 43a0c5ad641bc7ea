"""fileio: permissions of what we write (umask for new files, the old mode for replaced ones) and disk-full errors
that name the file and leave the old one alone."""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
import torch
from ppyoloe_sod import fileio
from ppyoloe_sod.errors import DiskFullError, PPYOLOESODError
from ppyoloe_sod.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text, current_umask
from ppyoloe_sod.train.checkpoint import load_checkpoint, save_checkpoint


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    """Set the process umask for one test: ``umask(0o077)``."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o027, 0o640), (0o002, 0o664)])
def test_new_files_follow_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    atomic_write_text(tmp_path / "a.txt", "x")
    atomic_write_json(tmp_path / "sub" / "b.json", {"a": 1})
    assert mode(tmp_path / "a.txt") == expected
    assert mode(tmp_path / "sub" / "b.json") == expected


def test_replaced_file_keeps_its_mode(tmp_path, umask):
    umask(0o077)
    path = tmp_path / "shared.json"
    path.write_text("old")
    path.chmod(0o640)
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and mode(path) == 0o640


def test_umask_without_proc(umask, monkeypatch):
    """Where /proc cannot tell it, the umask is read by setting it back at once: same value, left unchanged."""
    umask(0o027)

    def no_proc(*args, **kwargs):
        raise OSError("no /proc here")

    monkeypatch.setattr(fileio, "open", no_proc, raising=False)
    assert current_umask() == 0o027
    monkeypatch.undo()
    assert current_umask() == 0o027


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("write", [lambda p: atomic_write_bytes(p, b"x" * 100_000),
                                   lambda p: atomic_write_text(p, "y" * 100_000)])
def test_disk_full_names_the_file_and_keeps_the_old_one(tmp_path, full_disk, write):
    path = tmp_path / "result.json"
    path.write_text("previous")
    full_disk()
    with pytest.raises(DiskFullError, match="disk is full") as info:
        write(path)
    assert str(path) in str(info.value) and info.value.filename == str(path)
    assert isinstance(info.value, PPYOLOESODError) and info.value.errno == errno.ENOSPC
    assert path.read_text() == "previous"
    assert leftovers(tmp_path) == []


def test_disk_full_during_a_checkpoint_write(tmp_path, monkeypatch, full_disk):
    """torch.save wraps the ENOSPC in a RuntimeError; the user still gets the clear error naming the file."""
    path = tmp_path / "latest" / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 1, "w": torch.zeros(3)})
    full_disk()
    with pytest.raises(DiskFullError, match="checkpoint.pt.*disk is full"):
        save_checkpoint(path, {"epoch": 2, "w": torch.zeros(100_000)})
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert leftovers(path.parent) == []


def test_write_file_durably_sets_the_mode_and_reports_disk_full(tmp_path, umask, full_disk):
    umask(0o077)
    path = tmp_path / "staged.tmp"
    fileio.write_file_durably(path, b"abc", 0o644)
    assert path.read_bytes() == b"abc" and mode(path) == 0o644
    full_disk()
    with pytest.raises(DiskFullError, match="staged.tmp"):
        fileio.write_file_durably(path, b"def", 0o644)
