"""DetResult: one image's detections, shaped like PaddleX's so code written for PaddleX keeps working.

It is a dict with the keys ``input_path``, ``page_index``, ``input_img`` (the BGR array, left out of printing and
JSON) and ``boxes`` (a list of ``{cls_id, label, score, coordinate: [xmin, ymin, xmax, ymax]}``), plus
attribute access, ``print``, ``save_to_json``, ``save_to_img`` and the ``json`` / ``img`` properties.
"""
from __future__ import annotations

import io
import json
import mimetypes
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..draw import draw_detections
from ..fileio import atomic_write_bytes, atomic_write_json


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


class DetResult(dict):
    """Detections for one image (or one PDF page)."""

    def __init__(self, input_path: str | None, page_index: int | None, input_img: np.ndarray | None,
                 boxes: list[dict[str, Any]]):
        super().__init__(input_path=input_path, page_index=page_index, input_img=input_img, boxes=boxes)
        self._fallback_name: str | None = None

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
            print(json.dumps(self.json, indent=indent, ensure_ascii=ensure_ascii))
        else:
            print(str(self))

    # --- saving ---------------------------------------------------------------------------------------
    def _input_name(self) -> str:
        """File name the saved files derive from: the input's, with ``_<page>`` for PDF pages."""
        if self.input_path is None:
            if self._fallback_name is None:
                self._fallback_name = f"{int(time.time())}_{random.randint(1000, 9999)}"
            name = self._fallback_name
        else:
            name = Path(self.input_path.split("?")[0]).name or "result"
        if self.page_index is not None:
            p = Path(name)
            name = f"{p.stem}_{self.page_index}{p.suffix}"
        return name

    def save_to_json(self, save_path: str | os.PathLike, indent: int = 4, ensure_ascii: bool = False) -> Path:
        """Write the JSON document; a directory gets ``<stem>_res.json``. Returns the file written."""
        path = Path(save_path)
        if not _is_mime(path, "application/json"):
            path = path / f"{Path(self._input_name()).stem}_res.json"
        atomic_write_json(path, self._document(), indent=indent, ensure_ascii=ensure_ascii)
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
