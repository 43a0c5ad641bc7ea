"""One drawing style for detections and ground truth, readable on small objects.

The look follows PaddleX's detection drawing (20-colour palette, line width and font size from the image size,
"label score" on a filled box in the box colour), with two deliberate differences:
- the colour is picked by class id (``cls_id % 20``), not by the order in which labels first appear in the box
  list, so a class keeps its colour across images;
- the label is kept fully inside the image (PaddleX lets it run off the right edge).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# PaddleX's detection palette (RGB).
PALETTE: tuple[tuple[int, int, int], ...] = tuple(
    (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16))
    for h in (
        "FF0000", "CCFF00", "00FF66", "0066FF", "CC00FF", "FF4D00", "80FF00", "00FFB2", "001AFF", "FF00E5",
        "FF9900", "33FF00", "00FFFF", "3300FF", "FF0099", "FFE500", "00FF1A", "00B2FF", "8000FF", "FF004D",
    )
)
# Palette entries dark enough for white text; the others get a dark ink.
_WHITE_TEXT = frozenset({0, 3, 4, 8, 9, 13, 14, 18, 19})
_DARK_INK = (0x14, 0x0E, 0x35)


def class_color(cls_id: int) -> tuple[int, int, int]:
    """The RGB colour of a class id."""
    return PALETTE[int(cls_id) % len(PALETTE)]


def text_color(cls_id: int) -> tuple[int, int, int]:
    """White or dark ink, whichever reads better on the class colour."""
    return (255, 255, 255) if int(cls_id) % len(PALETTE) in _WHITE_TEXT else _DARK_INK


@lru_cache(maxsize=16)
def get_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled font at ``size`` px (Pillow >= 10.1); the fixed-size bitmap font on older Pillow."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no size argument
        return ImageFont.load_default()


def _label_text(box: dict[str, Any]) -> str:
    label = str(box.get("label", box.get("cls_id", "")))
    score = box.get("score")
    return label if score is None else f"{label} {float(score):.2f}"


def draw_detections(image_rgb: np.ndarray | Image.Image, boxes: Sequence[dict[str, Any]]) -> Image.Image:
    """Draw ``boxes`` (dicts with cls_id, label, score or None, coordinate [x1, y1, x2, y2]) on a copy of the image.

    Line width is int(0.002 * max(w, h)) (at least 1) and the font size int(0.018 * w) + 2 (at least 10), as in
    PaddleX. Boxes are drawn first and labels after, so no box line crosses a label.
    """
    img = image_rgb.convert("RGB") if isinstance(image_rgb, Image.Image) else Image.fromarray(
        np.ascontiguousarray(image_rgb, dtype=np.uint8)
    ).convert("RGB")
    img = img.copy()
    w, h = img.size
    line = max(1, int(0.002 * max(w, h)))
    font = get_font(max(10, int(0.018 * w) + 2))
    draw = ImageDraw.Draw(img)

    for box in boxes:
        x1, y1, x2, y2 = (float(v) for v in box["coordinate"])
        draw.rectangle([x1, y1, max(x1, x2), max(y1, y2)], outline=class_color(box["cls_id"]), width=line)

    for box in boxes:
        x1, y1, _, _ = (float(v) for v in box["coordinate"])
        text = _label_text(box)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left + 2 * line + 2, bottom - top + 2 * line + 2
        # Above the box when there is room, else just inside its top edge; always inside the image.
        tx = min(max(0.0, x1), max(0.0, w - tw))
        ty = y1 - th if y1 - th >= 0 else max(0.0, y1)
        ty = min(ty, max(0.0, h - th))
        draw.rectangle([tx, ty, tx + tw - 1, ty + th - 1], fill=class_color(box["cls_id"]))
        draw.text((tx + line + 1 - left, ty + line + 1 - top), text, fill=text_color(box["cls_id"]), font=font)
    return img
