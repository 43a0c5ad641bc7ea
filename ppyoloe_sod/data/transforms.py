"""Per-sample training augmentations of the PP-YOLOE+ reader (spec A.3), with an explicit random generator.

Every function takes a ``numpy.random.Generator`` (or any object with the same ``uniform``, ``integers`` and
``permutation`` methods) and draws from it in the same order and with the same kinds of draws as
PaddleDetection 2.6's operators draw from ``np.random``, so a run is reproducible from its seed and can be
compared draw for draw with the reference.

Images are RGB HxWx3 (uint8 or float); the functions return float32 images because the colour distortion and
the expansion canvas are float in the reference too. Nothing is clipped or rounded, as in the reference: strong
contrast, saturation and hue draws push values well outside 0..255 (up to about 2.5 times). Boxes are float32 ``[n, 4]`` xyxy pixels, classes int64 ``[n]``.

Behaviour of the reference that the spec's wording does not show (ppdet 2.6 ``RandomDistort``):
- each of the four colour ops is applied with probability 0.5 (skipped when a uniform draw is below 0.5), in a
  random order;
- brightness *adds* a value from [0.5, 1.5] to the 0..255 pixels and contrast multiplies by a factor from
  [0.5, 1.5] (no mean subtraction); saturation blends with the luma (0.299, 0.587, 0.114);
- hue rotates the chroma plane of YIQ space by ``delta * pi`` radians with ``delta`` in [-18, 18], which spans
  18 full turns, so the hue rotation is in effect uniform over the whole circle.
We reproduce that behaviour, since it is what the published weights were trained with.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# ImageNet mean in 0..255, RGB: the reader's RandomExpand fill.
EXPAND_FILL = (123.675, 116.28, 103.53)
CROP_THRESHOLDS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)
# BatchRandomResize draws one of these OpenCV interpolations per batch (this order).
RESIZE_INTERPS = (cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_AREA, cv2.INTER_CUBIC, cv2.INTER_LANCZOS4)

# RGB <-> YIQ (NTSC) matrices, three-decimal constants as the reference uses them.
_RGB2YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.321], [0.211, -0.523, 0.311]])
_YIQ2RGB = np.array([[1.0, 0.956, 0.621], [1.0, -0.272, -0.647], [1.0, -1.107, 1.705]])
_LUMA = np.array([0.299, 0.587, 0.114])


@dataclass(frozen=True)
class DistortConfig:
    """(low, high, skip probability) per colour op, the reference's defaults."""

    brightness: tuple[float, float, float] = (0.5, 1.5, 0.5)
    contrast: tuple[float, float, float] = (0.5, 1.5, 0.5)
    saturation: tuple[float, float, float] = (0.5, 1.5, 0.5)
    hue: tuple[float, float, float] = (-18.0, 18.0, 0.5)


# Every colour op is an affine map of the RGB vector (x -> m @ x + t), so the drawn sequence is composed into one
# 3x4 matrix and applied in a single pass (cv2.transform) instead of four passes over a float image.
def _brightness(m: np.ndarray, t: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    return m, t + delta  # adds delta to every 0..255 channel value


def _contrast(m: np.ndarray, t: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    return m * delta, t * delta


def _saturation(m: np.ndarray, t: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    a = delta * np.eye(3) + (1.0 - delta) * np.outer(np.ones(3), _LUMA)  # blend with the luma
    return a @ m, a @ t


def _hue(m: np.ndarray, t: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    angle = delta * np.pi
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    a = _YIQ2RGB @ rot @ _RGB2YIQ  # rotate the chroma (I, Q) plane
    return a @ m, a @ t


def draw_distort(rng: np.random.Generator, cfg: DistortConfig = DistortConfig()) -> np.ndarray | None:
    """Draw RandomDistort's ops; the composed colour map as a 3x4 affine matrix, or None if none applies."""
    ops = ((_brightness, cfg.brightness), (_contrast, cfg.contrast), (_saturation, cfg.saturation),
           (_hue, cfg.hue))
    m, t, applied = np.eye(3), np.zeros(3), False
    for k in rng.permutation(len(ops)):
        fn, (low, high, skip_p) = ops[int(k)]
        if rng.uniform(0.0, 1.0) < skip_p:
            continue
        m, t = fn(m, t, rng.uniform(low, high))
        applied = True
    return np.concatenate([m, t[:, None]], axis=1) if applied else None


def apply_colour(image: np.ndarray, colour: np.ndarray | None) -> np.ndarray:
    """A float32 copy of ``image`` with the colour map of ``draw_distort`` applied (pixel by pixel)."""
    img = np.array(image, dtype=np.float32)  # a copy: callers keep their image
    return img if colour is None else cv2.transform(img, colour)


def random_distort(image: np.ndarray, rng: np.random.Generator, cfg: DistortConfig = DistortConfig()) -> np.ndarray:
    """Brightness, contrast, saturation and hue, each with probability 1 - p, in random order; float32 out."""
    return apply_colour(image, draw_distort(rng, cfg))


@dataclass(frozen=True)
class Expansion:
    """Where the image sits on the enlarged canvas: canvas (h, w) and the image's top-left (x, y)."""

    canvas_h: int
    canvas_w: int
    x: int
    y: int


def draw_expansion(height: int, width: int, rng: np.random.Generator, max_ratio: float = 4.0,
                   skip_p: float = 0.5) -> Expansion | None:
    """Draw RandomExpand's canvas, or None when this sample is not expanded."""
    if rng.uniform(0.0, 1.0) < skip_p:
        return None
    ratio = rng.uniform(1.0, max_ratio)
    h, w = int(height * ratio), int(width * ratio)
    if h <= height or w <= width:
        return None
    y = int(rng.integers(0, h - height))
    x = int(rng.integers(0, w - width))
    return Expansion(h, w, x, y)


def canvas_window(image: np.ndarray, exp: Expansion, window: tuple[int, int, int, int] | None = None,
                  fill: tuple[float, float, float] = EXPAND_FILL, colour: np.ndarray | None = None) -> np.ndarray:
    """The part ``window`` (x1, y1, x2, y2, canvas pixels; default all) of the expansion canvas, float32, with
    the colour map ``colour`` (see ``draw_distort``) applied to the pasted image only.

    Only the window is allocated: an expanded-then-cropped VisDrone image would otherwise need a canvas of up
    to 16 times the image.
    """
    x1, y1, x2, y2 = window if window is not None else (0, 0, exp.canvas_w, exp.canvas_h)
    out = np.empty((y2 - y1, x2 - x1, 3), dtype=np.float32)
    out[...] = np.asarray(fill, dtype=np.float32)
    ih, iw = image.shape[:2]
    # Intersection of the window with the pasted image, in canvas coordinates.
    px1, py1 = max(x1, exp.x), max(y1, exp.y)
    px2, py2 = min(x2, exp.x + iw), min(y2, exp.y + ih)
    if px2 > px1 and py2 > py1:
        patch = image[py1 - exp.y:py2 - exp.y, px1 - exp.x:px2 - exp.x]
        out[py1 - y1:py2 - y1, px1 - x1:px2 - x1] = apply_colour(patch, colour) if colour is not None else patch
    return out


def expand_boxes(boxes: np.ndarray, exp: Expansion) -> np.ndarray:
    """Boxes moved by the image's offset on the canvas."""
    return (boxes + np.array([exp.x, exp.y, exp.x, exp.y], dtype=np.float32)).astype(np.float32)


def random_expand(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, max_ratio: float = 4.0,
                  skip_p: float = 0.5, fill: tuple[float, float, float] = EXPAND_FILL
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Place the image on a canvas up to ``max_ratio`` times larger, filled with ``fill`` (probability 0.5)."""
    exp = draw_expansion(image.shape[0], image.shape[1], rng, max_ratio, skip_p)
    if exp is None:
        return np.asarray(image, dtype=np.float32), np.asarray(boxes, dtype=np.float32)
    return canvas_window(image, exp, fill=fill), expand_boxes(boxes, exp)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix [len(a), len(b)] of xyxy boxes, no +1, as RandomCrop computes it (float32)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(rb - lt, axis=2) * (lt < rb).all(axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / (area_a[:, None] + area_b[None, :] - inter + 1e-10)


def crop_boxes(boxes: np.ndarray, crop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boxes clipped to ``crop`` (x1, y1, x2, y2) in crop coordinates, and the indices of those kept: centre
    inside the crop (half-open, x1 <= cx < x2) and a non-empty clipped box."""
    out = boxes.copy()
    out[:, :2] = np.maximum(boxes[:, :2], crop[:2]) - crop[:2]
    out[:, 2:] = np.minimum(boxes[:, 2:], crop[2:]) - crop[:2]
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    keep = ((crop[:2] <= centres) & (centres < crop[2:])).all(axis=1)
    keep &= (out[:, :2] < out[:, 2:]).all(axis=1)
    return out, np.flatnonzero(keep)


@dataclass(frozen=True)
class CropConfig:
    """SSD-style crop search of the reference's RandomCrop (defaults of the PP-YOLOE+ reader)."""

    thresholds: tuple[float, ...] = CROP_THRESHOLDS
    scale: tuple[float, float] = (0.3, 1.0)
    aspect: tuple[float, float] = (0.5, 2.0)
    attempts: int = 50
    allow_no_crop: bool = True


def draw_crop(height: int, width: int, boxes: np.ndarray, rng: np.random.Generator,
              cfg: CropConfig = CropConfig()) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Search a crop window; return (window int [4], clipped boxes [n, 4], kept indices) or None for no crop.

    Thresholds are tried in a random order ("no crop" being one of them); for each, up to ``attempts`` windows
    are drawn and the first whose best IoU with a box reaches the threshold and keeps at least one box wins.
    An image without boxes is never cropped (and draws nothing).
    """
    if len(boxes) == 0:
        return None
    options: list[float | None] = list(cfg.thresholds) + ([None] if cfg.allow_no_crop else [])
    order = rng.permutation(len(options))
    for k in order:
        thresh = options[int(k)]
        if thresh is None:
            return None
        for _ in range(cfg.attempts):
            scale = rng.uniform(*cfg.scale)
            aspect = rng.uniform(max(cfg.aspect[0], scale ** 2), min(cfg.aspect[1], scale ** -2))
            crop_h = int(height * (scale / np.sqrt(aspect)))
            crop_w = int(width * (scale * np.sqrt(aspect)))
            # The reference's randint(0, 0) would raise when the window is the whole side; stay at 0 then.
            crop_y = int(rng.integers(0, max(height - crop_h, 1)))
            crop_x = int(rng.integers(0, max(width - crop_w, 1)))
            window = np.array([crop_x, crop_y, crop_x + crop_w, crop_y + crop_h], dtype=np.float32)
            if box_iou(boxes, window[None]).max() < thresh:
                continue
            clipped, keep = crop_boxes(boxes, window)
            if keep.size > 0:
                return window.astype(np.int64), clipped[keep], keep
    return None


def random_crop(image: np.ndarray, boxes: np.ndarray, classes: np.ndarray, rng: np.random.Generator,
                cfg: CropConfig = CropConfig()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SSD-style random crop (see ``draw_crop``); kept boxes are clipped to the crop, the others dropped."""
    image = np.asarray(image, dtype=np.float32)
    found = draw_crop(image.shape[0], image.shape[1], boxes, rng, cfg)
    if found is None:
        return image, boxes, classes
    (x1, y1, x2, y2), new_boxes, keep = found
    return np.ascontiguousarray(image[y1:y2, x1:x2]), new_boxes, classes[keep]


def flip_boxes(boxes: np.ndarray, width: int) -> np.ndarray:
    """Boxes of a horizontally mirrored image of this width."""
    out = boxes.copy()
    out[:, 0] = width - boxes[:, 2]
    out[:, 2] = width - boxes[:, 0]
    return out


def random_flip(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, p: float = 0.5
                ) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right with probability ``p``."""
    image = np.asarray(image, dtype=np.float32)
    if rng.uniform(0.0, 1.0) < p:
        return np.ascontiguousarray(image[:, ::-1]), flip_boxes(boxes, image.shape[1])
    return image, boxes


def train_augment(image: np.ndarray, boxes: np.ndarray, classes: np.ndarray, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reader's per-sample chain: RandomDistort, RandomExpand, RandomCrop, RandomFlip.

    Same draws and result as calling the four functions in turn, but only the crop window is built: the colour
    map is applied to the part of the image inside it, and the expansion canvas is only allocated there.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    colour = draw_distort(rng)
    h, w = image.shape[:2]
    exp = draw_expansion(h, w, rng)
    if exp is not None:
        boxes = expand_boxes(boxes, exp)
        h, w = exp.canvas_h, exp.canvas_w
    found = draw_crop(h, w, boxes, rng)
    if found is not None:
        window, boxes, keep = found
        classes = classes[keep]
    else:
        window = np.array([0, 0, w, h], dtype=np.int64)
    x1, y1, x2, y2 = (int(v) for v in window)
    if exp is not None:
        img = canvas_window(image, exp, (x1, y1, x2, y2), colour=colour)
    else:
        img = apply_colour(image[y1:y2, x1:x2], colour)
    img, boxes = random_flip(img, boxes, rng)
    return img, boxes, classes


def resize_sample(image: np.ndarray, boxes: np.ndarray, size: int, interp: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize to ``size`` x ``size`` (aspect not kept) with an OpenCV interpolation; boxes scaled and clipped."""
    h, w = image.shape[:2]
    sx, sy = size / w, size / h
    out = cv2.resize(image, (size, size), interpolation=interp).astype(np.float32, copy=False)
    b = boxes.astype(np.float32, copy=True)
    b[:, 0::2] = np.clip(b[:, 0::2] * np.float32(sx), 0, size)
    b[:, 1::2] = np.clip(b[:, 1::2] * np.float32(sy), 0, size)
    return out, b
