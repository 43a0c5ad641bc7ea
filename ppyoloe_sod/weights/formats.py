"""What a weights file is, told from its structure, and what its tensors may hold.

Formats are recognised by their layout, never by one byte:
- safetensors: an 8-byte little-endian header length N, then N bytes of JSON starting with ``{``, then the
  tensor data. This test runs first: N's low byte can be 0x80, a pickle's first byte.
- pickle (``.pdparams``): protocol 2 or later, i.e. 0x80 then the protocol number 2..5.
- zip (``torch.save`` checkpoints): ``PK\\x03\\x04``.

A safetensors header is checked against the file size (every tensor's dtype, shape and byte range) before any
tensor is read, and the weights themselves must be floats (integers only for BatchNorm's step counter) and
finite: a model with a NaN weight predicts nothing useful, so it is refused rather than loaded.
"""
from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Mapping

import torch

from ..errors import WeightsError

__all__ = ["MAX_SAFETENSORS_HEADER", "SafetensorsHeader", "sniff_format", "describe_format",
           "read_safetensors_header", "require_file", "check_weight_dtypes", "check_finite"]

#: Largest safetensors JSON header accepted (the safetensors library's own limit).
MAX_SAFETENSORS_HEADER = 100_000_000

# safetensors dtype -> (bytes per element, numpy-style kind: f float, i/u integer, b bool)
_SAFETENSORS_DTYPES: dict[str, tuple[int, str]] = {
    "BOOL": (1, "b"), "U8": (1, "u"), "I8": (1, "i"), "F8_E5M2": (1, "f"), "F8_E4M3": (1, "f"),
    "I16": (2, "i"), "U16": (2, "u"), "F16": (2, "f"), "BF16": (2, "f"),
    "I32": (4, "i"), "U32": (4, "u"), "F32": (4, "f"), "I64": (8, "i"), "U64": (8, "u"), "F64": (8, "f"),
}

_DESCRIPTIONS = {
    "safetensors": "a safetensors file",
    "pickle": "a pickle (a Paddle .pdparams file?)",
    "zip": "a zip archive (a torch.save checkpoint?)",
    "html": "an HTML page",
    "text": "a text file",
    "empty": "an empty file",
    "unknown": "unrecognised binary data",
}

#: Only BatchNorm's step counter is an integer in a state dict; every weight is a float.
_INTEGER_KEY_SUFFIX = "num_batches_tracked"
_KIND_NAMES = {"i": "integer", "u": "unsigned integer", "b": "bool", "c": "complex", "O": "object"}


def require_file(path: Path) -> None:
    """Raise the common 'not found' error for a weights path that is missing or a folder."""
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found" + (" (it is a directory)." if path.is_dir() else "."))


def _safetensors_header_length(head: bytes, size: int) -> int | None:
    """N if ``head`` starts like a safetensors file of ``size`` bytes (N fits in the file, JSON object next)."""
    if len(head) < 9:
        return None
    (length,) = struct.unpack("<Q", head[:8])
    fits = 2 <= length <= min(MAX_SAFETENSORS_HEADER, size - 8)
    return length if fits and head[8:9] == b"{" else None


def sniff_format(f: BinaryIO, size: int) -> str:
    """The format of an open file of ``size`` bytes: a key of ``_DESCRIPTIONS``. Leaves ``f`` at offset 0."""
    f.seek(0)
    head = f.read(1024)
    f.seek(0)
    if not head:
        return "empty"
    if _safetensors_header_length(head, size) is not None:
        return "safetensors"
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html")) or b"<html" in text or b"<head" in text:
        return "html"
    try:
        decoded = head.decode("utf-8")
    except UnicodeDecodeError as e:  # a multi-byte character cut at the end of the sample is still text
        decoded = head[:e.start].decode("utf-8") if e.start >= len(head) - 3 else "\0"
    if decoded and all(c.isprintable() or c in "\t\r\n" for c in decoded):
        return "text"
    return "unknown"


def describe_format(kind: str) -> str:
    return _DESCRIPTIONS[kind]


@dataclass(frozen=True)
class SafetensorsHeader:
    """A checked safetensors header: tensor name -> (dtype name, kind letter, shape), and the metadata."""

    tensors: dict[str, tuple[str, str, tuple[int, ...]]]
    metadata: dict[str, str]


def read_safetensors_header(f: BinaryIO, size: int, path: Path) -> SafetensorsHeader:
    """Parse and check the header of an open safetensors file against its size; WeightsError naming ``path``."""
    def bad(detail: str) -> WeightsError:
        return WeightsError(f"{path}: not a valid safetensors file ({detail}). Re-create it, e.g. by converting "
                            "the .pdparams file again, or download it again.")

    f.seek(0)
    length = _safetensors_header_length(f.read(9), size)
    if length is None:
        raise bad(f"it is {describe_format(sniff_format(f, size))}")
    f.seek(8)
    try:
        header = json.loads(f.read(length).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise bad(f"its header is not valid JSON: {e}") from e
    if not isinstance(header, dict):
        raise bad("its header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not (isinstance(metadata, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
        raise bad("its __metadata__ is not a map of strings to strings")
    data_size = size - 8 - length
    tensors = {}
    for name, entry in header.items():
        try:
            tensors[name] = _check_entry(entry, data_size)
        except ValueError as e:
            raise bad(f"tensor {name!r}: {e}") from None
    return SafetensorsHeader(tensors, metadata)


def _check_entry(entry: object, data_size: int) -> tuple[str, str, tuple[int, ...]]:
    """(dtype, kind, shape) of one header entry whose byte range fits the data and matches dtype x shape."""
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise ValueError("expected exactly the fields dtype, shape, data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in _SAFETENSORS_DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise ValueError(f"shape {shape!r} is not a list of sizes")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
        raise ValueError(f"data_offsets {offsets!r} is not a [begin, end] pair")
    begin, end = offsets
    if not 0 <= begin <= end <= data_size:
        raise ValueError(f"bytes {begin}..{end} lie outside the {data_size} data bytes the file holds")
    itemsize, kind = _SAFETENSORS_DTYPES[dtype]
    if end - begin != math.prod(shape) * itemsize:
        raise ValueError(f"shape {shape} of {dtype} needs {math.prod(shape) * itemsize} bytes, the file gives "
                         f"{end - begin}")
    return dtype, kind, tuple(shape)


def check_weight_dtypes(kinds: Mapping[str, str], source: str) -> None:
    """Weights must be floats; integers only for BatchNorm's step counter. ``kinds``: name -> kind letter
    (``numpy.dtype.kind``: f float, i/u integer, b bool, c complex...)."""
    bad = [f"'{name}' ({_KIND_NAMES.get(kind, kind)})" for name, kind in kinds.items()
           if not (kind == "f" or (kind in "iu" and name.endswith(_INTEGER_KEY_SUFFIX)))]
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise WeightsError(f"{source}: weights must be floating point; {len(bad)} tensor(s) are not: {shown}. "
                           "This is not a model weights file (or it was saved with the wrong dtype).")


def check_finite(state: Mapping[str, torch.Tensor], source: str) -> None:
    """Refuse weights holding NaN or infinity, naming the first such tensor and how many there are."""
    bad = [(name, t) for name, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        name, t = bad[0]
        count = int(t.numel() - torch.isfinite(t).sum())
        raise WeightsError(
            f"{source}: {len(bad)} tensor(s) hold NaN or infinite values, the first '{name}' ({count} of its "
            f"{t.numel()} values). The weights are unusable (training diverged, or the file is damaged); use an "
            "earlier checkpoint or the original file.")
