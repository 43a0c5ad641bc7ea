"""Exceptions a user may see. Each message names the offending thing and what to do about it.

A suggested fix is written in the language of the interface in use: ``hint(python="device='cpu'",
cli="-o Global.device=cpu")`` gives the Python form by default and the config form inside
``with interface("cli"):``, which the command lines enter (``tools/convert_weights.py`` enters
``"convert_weights"``, whose flags are its own). Library code names every form it knows; the entry point,
which alone knows how the user is talking to us, picks one.
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

INTERFACES = ("python", "cli", "convert_weights")
_interface: ContextVar[str] = ContextVar("ppyoloe_sod_interface", default="python")


@contextmanager
def interface(name: str) -> Iterator[None]:
    """Phrase the hints of errors raised inside this block for ``name`` (one of ``INTERFACES``)."""
    if name not in INTERFACES:
        raise ValueError(f"interface must be one of {INTERFACES}, got {name!r}")
    token = _interface.set(name)
    try:
        yield
    finally:
        _interface.reset(token)


def hint(python: str, cli: str, convert_weights: str | None = None) -> str:
    """The form of a suggested fix for the interface in use (the Python form where no other is given)."""
    forms = {"python": python, "cli": cli, "convert_weights": convert_weights}
    return forms[_interface.get()] or python


class PPYOLOESODError(Exception):
    """Base class of every error this package raises on purpose."""


class WeightsError(PPYOLOESODError, ValueError):
    """A weights file is missing, corrupt, unsafe, or belongs to another model."""


class ImageReadError(PPYOLOESODError, ValueError):
    """An input image could not be found or decoded."""


class DatasetError(PPYOLOESODError, ValueError):
    """A dataset is malformed; the message lists what is wrong and where."""


class ConfigError(PPYOLOESODError, ValueError):
    """A config file or a -o override is invalid."""


class NonFiniteLossError(PPYOLOESODError, FloatingPointError):
    """The training loss became NaN or infinite; training stopped before the bad step changed any weight."""


class DiskFullError(PPYOLOESODError, OSError):
    """A file could not be written because its disk (or the user's quota) is full; the old file is unchanged.

    Built as ``DiskFullError(errno, message, path)``: ``errno`` and ``filename`` are set like any OSError's, and
    the message is shown alone.
    """

    def __str__(self) -> str:
        return self.strerror or super().__str__()
