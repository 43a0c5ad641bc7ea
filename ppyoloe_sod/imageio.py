"""Reading images from disk the way the whole package expects them: BGR uint8, HxWx3.

OpenCV decodes from the file's bytes (not ``cv2.imread``) so that paths with non-ASCII characters work on every
platform. Decoding uses ``IMREAD_COLOR``, as PaddleX does: grayscale becomes 3-channel, an alpha channel is
dropped, 16-bit samples are scaled to 8 bits and the EXIF orientation is applied. Formats OpenCV cannot decode
(GIF on some builds, for instance) fall back to Pillow.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import cv2
import numpy as np

from .errors import ImageReadError

# Suffixes treated as images when a directory is listed (decoding decides in the end).
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".jp2", ".pbm", ".pgm", ".ppm"}
)


def is_image_file(path: str | os.PathLike) -> bool:
    """True if ``path`` has an image suffix (case-insensitive); says nothing about the content."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes to BGR uint8 HxWx3; ``name`` is used in the error message."""
    if not data:
        raise ImageReadError(f"Image {name} is empty (0 bytes); pass a valid image file.")
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        img = _decode_with_pil(data)
    if img is None:
        raise ImageReadError(
            f"Cannot decode {name} as an image (corrupt file or unsupported format); "
            f"supported suffixes: {', '.join(sorted(IMAGE_SUFFIXES))}."
        )
    return to_bgr_uint8(img, name)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file into a BGR uint8 HxWx3 array; raise ImageReadError naming the file otherwise."""
    p = Path(path)
    if not p.exists():
        raise ImageReadError(f"Image file not found: {str(path)!r}. Check the path.")
    if p.is_dir():
        raise ImageReadError(f"Expected an image file but {str(path)!r} is a directory.")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ImageReadError(f"Cannot read image file {str(path)!r}: {e}") from e
    return decode_image(data, repr(str(path)))


def to_bgr_uint8(img: np.ndarray, name: str = "<array>") -> np.ndarray:
    """Bring an array to BGR uint8 HxWx3: gray -> BGR, BGRA -> BGR, 16-bit / float -> 8-bit."""
    if not isinstance(img, np.ndarray):
        raise ImageReadError(f"Image {name} must be a numpy array, got {type(img).__name__}.")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4) or img.shape[0] == 0 or img.shape[1] == 0:
        raise ImageReadError(f"Image {name} has shape {img.shape}; expected HxW, HxWx1, HxWx3 or HxWx4.")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif np.issubdtype(img.dtype, np.floating):
        # Floats are taken as 0..1 when they fit there, else as 0..255.
        scale = 255.0 if float(np.nanmax(img, initial=0.0)) <= 1.0 else 1.0
        img = np.clip(np.nan_to_num(img.astype(np.float32)) * scale + 0.5, 0, 255).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ImageReadError(f"Image {name} has unsupported dtype {img.dtype}; use uint8, uint16 or float.")
    if img.shape[2] == 1:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(img)


def _decode_with_pil(data: bytes) -> np.ndarray | None:
    """Second chance for formats OpenCV lacks; first frame only, EXIF orientation applied."""
    try:
        from PIL import Image, ImageOps

        with Image.open(io.BytesIO(data)) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            return np.asarray(im)[:, :, ::-1].copy()
    except Exception:
        return None
