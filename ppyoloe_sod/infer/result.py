"""DetResult: one image's detections, shaped like PaddleX's so code written for PaddleX keeps working.

It is a dict with the keys ``input_path``, ``page_index``, ``input_img`` (the BGR array, left out of printing and
JSON) and ``boxes`` (a list of ``{cls_id, label, score, coordinate: [xmin, ymin, xmax, ymax]}``), plus
attribute access, ``print``, ``save_to_json``, ``save_to_img`` and the ``json`` / ``img`` properties.

Saved files are named as PaddleX names them: ``<input stem>_res.json`` and ``<input stem>_res<input suffix or
.png>``, with ``_<page>`` after the stem for PDF pages. Two differences: results of one ``predict`` call never
share a name (inputs ``a/x.png`` and ``b/x.png`` give ``x_res.png`` and ``x-2_res.png``: see
:func:`distinct_names`), and an input without a file name (a numpy array) is named ``array_0000``,
``array_0001``, ... in the order of this process, not by a timestamp and a random number.
"""
from __future__ import annotations

import io
import itertools
import json
import mimetypes
import os
import re
from pathlib import Path
from typing import Any, Collection, Sequence

import numpy as np
from PIL import Image

from ..draw import draw_detections
from ..fileio import atomic_write_bytes

_array_numbers = itertools.count()


def to_plain(obj: Any) -> Any:
    """numpy scalars and arrays, tuples and Paths -> plain JSON-ready Python values."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return to_plain(obj.tolist())
    if isinstance(obj, Path):
        return obj.as_posix()
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


def _is_mime(path: str | os.PathLike, prefix: str) -> bool:
    mime, _ = mimetypes.guess_type(str(path))
    return mime is not None and mime.startswith(prefix)


def printable(text: str) -> str:
    """``text`` with undecodable file-name bytes (lone surrogates, from a non-UTF-8 name) shown as ``\\udcXX``.

    Inside JSON that is a valid escape which reads back as the same string, so the original bytes are kept.
    """
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def paddlex_name(input_path: str | None, page_index: int | None) -> str | None:
    """PaddleX's base name of a result: the input's file name (a URL's without its query), with ``_<page>``
    before the suffix for a PDF page; None for an input without a path (a numpy array)."""
    if input_path is None:
        return None
    name = Path(input_path.split("?")[0]).name or "result"
    if page_index is not None:
        p = Path(name)
        name = f"{p.stem}_{page_index}{p.suffix}"
    return name


def array_name() -> str:
    """A readable name for a result without an input file: ``array_0000``, ``array_0001``, ... in this process."""
    return f"array_{next(_array_numbers):04d}"


def _stem_key(name: str) -> str:
    """What two saved names must differ in: the stem (``x.png`` and ``x.jpg`` both write ``x_res.json``),
    compared without case (as on macOS and Windows file systems)."""
    return Path(name).stem.casefold()


def distinct_names(inputs: Sequence[tuple[str | None, int | None]], videos: Collection[int] = ()) -> list[str]:
    """One base name per (input_path, page_index), distinct within the list, deterministic.

    PaddleX's name where it is unique; a name already used earlier in the list gets ``-2``, ``-3``, ... after its
    stem (the first number not taken by any other name in the list), so no result overwrites another. The inputs
    at the positions ``videos`` name their frames' results ``<stem>_<frame>``: such a stem is numbered the same
    way when another input's name has that form (``clip_3.jpg`` beside ``clip.mp4``: the frames become
    ``clip-2_<frame>``).
    """
    names = [paddlex_name(path, page) or array_name() for path, page in inputs]
    taken = {_stem_key(n) for n in names}
    stills = [_stem_key(n) for i, n in enumerate(names) if i not in videos]
    used: set[str] = set()
    out = []
    for i, name in enumerate(names):
        frames_of = stills if i in videos else []
        if _clashes(name, used, frames_of):
            stem, suffix = Path(name).stem, Path(name).suffix
            number = 2
            while _clashes(f"{stem}-{number}", taken | used, frames_of):
                number += 1
            name = f"{stem}-{number}{suffix}"
        used.add(_stem_key(name))
        out.append(name)
    return out


def _clashes(name: str, others: set[str], stills: Sequence[str]) -> bool:
    """Whether ``name`` would share a stem with ``others``, or its frames (``<stem>_<frame>``) with ``stills``."""
    key = _stem_key(name)
    frame = re.compile(re.escape(key) + r"_[0-9]+")
    return key in others or any(frame.fullmatch(still) for still in stills)


class DetResult(dict):
    """Detections for one image (or one PDF page)."""

    def __init__(self, input_path: str | None, page_index: int | None, input_img: np.ndarray | None,
                 boxes: list[dict[str, Any]], *, save_name: str | None = None):
        """``save_name``: the base name saved files derive from (``predict`` passes one distinct per result);
        None: PaddleX's, from ``input_path`` and ``page_index``."""
        super().__init__(input_path=input_path, page_index=page_index, input_img=input_img, boxes=boxes)
        self.save_name = save_name

    # --- attribute access ------------------------------------------------------------------------------
    @property
    def input_path(self) -> str | None:
        return self["input_path"]

    @property
    def page_index(self) -> int | None:
        return self["page_index"]

    @property
    def boxes(self) -> list[dict[str, Any]]:
        return self["boxes"]

    @property
    def input_img(self) -> np.ndarray | None:
        return self["input_img"]

    # --- views ----------------------------------------------------------------------------------------
    def _document(self) -> dict[str, Any]:
        return to_plain({k: v for k, v in self.items() if k != "input_img"})

    @property
    def json(self) -> dict[str, dict[str, Any]]:
        """``{"res": {input_path, page_index, boxes}}`` in plain Python types."""
        return {"res": self._document()}

    @property
    def img(self) -> dict[str, Image.Image]:
        """``{"res": PIL image}``: the input with the boxes drawn on it."""
        if self.input_img is None:
            raise ValueError("This result holds no input image to draw on.")
        return {"res": draw_detections(self.input_img[:, :, ::-1], self.boxes)}

    def __str__(self) -> str:
        return str({"res": self._document()})

    def print(self, json_format: bool = True, indent: int = 4, ensure_ascii: bool = False, *,
              format_json: bool | None = None) -> None:
        """Print the result (JSON by default; ``json_format=False`` prints the Python dict as PaddleX does).

        ``format_json`` is accepted as an alias of ``json_format``.
        """
        as_json = json_format if format_json is None else format_json
        if as_json:
            print(printable(json.dumps(self.json, indent=indent, ensure_ascii=ensure_ascii)))
        else:
            print(str(self))

    # --- saving ---------------------------------------------------------------------------------------
    def _input_name(self) -> str:
        """File name the saved files derive from (set once, so the JSON and the drawing always match)."""
        if self.save_name is None:
            self.save_name = paddlex_name(self.input_path, self.page_index) or array_name()
        return self.save_name

    def save_to_json(self, save_path: str | os.PathLike, indent: int = 4, ensure_ascii: bool = False) -> Path:
        """Write the JSON document; a directory gets ``<stem>_res.json``. Returns the file written.

        UTF-8; bytes of a non-UTF-8 file name are written as ``\\udcXX`` escapes, which ``json.load`` turns back
        into the same ``input_path`` string (``os.fsencode`` gives the original bytes).
        """
        path = Path(save_path)
        if not _is_mime(path, "application/json"):
            path = path / f"{Path(self._input_name()).stem}_res.json"
        text = json.dumps(self._document(), indent=indent, ensure_ascii=ensure_ascii) + "\n"
        atomic_write_bytes(path, text.encode("utf-8", "backslashreplace"))
        return path

    def save_to_img(self, save_path: str | os.PathLike) -> Path:
        """Write the drawing; a directory gets ``<stem>_res<input suffix, or .png>``. Returns the file written."""
        path = Path(save_path)
        if not _is_mime(path, "image/"):
            name = Path(self._input_name())
            suffix = name.suffix if _is_mime(name, "image/") else ".png"
            path = path / f"{name.stem}_res{suffix}"
        image = self.img["res"]
        fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
        buf = io.BytesIO()
        image.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
        atomic_write_bytes(path, buf.getvalue())
        return path
