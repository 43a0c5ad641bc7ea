"""Synthetic scenes for the augmentation and loader tests: solid rectangles whose colour encodes the class, so
that after any geometric transform the pixels inside each box can be checked against the box's class."""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

# RGB colour of class k; the background is dark grey and distinct from all of them and from the expand fill.
COLOURS = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255)], dtype=np.float32)
BACKGROUND = (20, 20, 20)


def scene(h: int, w: int, boxes, classes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RGB uint8 image with each box (integer xyxy, exclusive x2/y2) filled with its class colour."""
    img = np.empty((h, w, 3), dtype=np.uint8)
    img[...] = BACKGROUND
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    c = np.asarray(classes, dtype=np.int64).reshape(-1)
    for (x1, y1, x2, y2), k in zip(b.astype(int), c):
        img[y1:y2, x1:x2] = COLOURS[k]
    return img, b, c


def default_scene(h: int = 96, w: int = 128):
    """Three non-overlapping objects of different classes and sizes (one small), laid out for 96 x 128 and
    scaled to (h, w)."""
    base = np.array([[8, 10, 40, 50], [60, 20, 100, 44], [110, 70, 118, 80]], np.float32)
    return scene(h, w, np.round(base * np.float32([w / 128, h / 96] * 2)), [0, 1, 2])


def check_box_colours(img: np.ndarray, boxes: np.ndarray, classes: np.ndarray, colours=COLOURS, margin: int = 0,
                      atol: float = 1e-3) -> int:
    """Assert every pixel inside each box (shrunk by ``margin``) has its class colour; return how many boxes had
    a non-empty interior to check."""
    checked = 0
    for (x1, y1, x2, y2), k in zip(boxes, classes):
        xa, ya = math.ceil(x1) + margin, math.ceil(y1) + margin
        xb, yb = math.floor(x2) - margin, math.floor(y2) - margin
        if xb <= xa or yb <= ya:
            continue
        patch = img[ya:yb, xa:xb].reshape(-1, 3)
        err = np.abs(patch - np.asarray(colours[k], dtype=np.float32)).max()
        assert err <= atol, f"box {(x1, y1, x2, y2)} class {k}: pixel differs from its colour by {err}"
        checked += 1
    return checked


def check_inside(boxes: np.ndarray, h: int, w: int) -> None:
    assert boxes.dtype == np.float32
    assert np.all(boxes[:, 0] >= 0) and np.all(boxes[:, 1] >= 0), boxes
    assert np.all(boxes[:, 2] <= w) and np.all(boxes[:, 3] <= h), (boxes, h, w)
    assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1]), boxes


def write_rgb(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
