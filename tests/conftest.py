"""Fixtures shared by test folders."""
from __future__ import annotations

import errno
import io
import os

import pytest


class FullDiskFile(io.RawIOBase):
    """A file on a full disk: every write fails with ENOSPC, as the kernel reports it."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        if not self.closed:
            os.close(self.fd)
        super().close()


@pytest.fixture
def full_disk(monkeypatch):
    """Call ``full_disk()`` to make every write the package does (file objects and ``os.write``) fail with
    ENOSPC from then on, until the test ends or ``monkeypatch.undo()``."""
    def fdopen(fd, mode="r", *args, **kwargs):
        buffered = io.BufferedWriter(FullDiskFile(fd))
        return buffered if "b" in mode else io.TextIOWrapper(buffered, encoding=kwargs.get("encoding"))

    def write(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def start() -> None:
        monkeypatch.setattr(os, "fdopen", fdopen)
        monkeypatch.setattr(os, "write", write)
    return start
