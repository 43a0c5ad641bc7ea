"""Reading images from disk the way the whole package expects them: BGR uint8, HxWx3.

OpenCV decodes from the file's bytes (not ``cv2.imread``) so that paths with non-ASCII characters work on every
platform. Decoding uses ``IMREAD_COLOR``, as PaddleX does: grayscale becomes 3-channel, an alpha channel is
dropped, 16-bit samples are scaled to 8 bits and the EXIF orientation is applied. Formats OpenCV cannot decode
(GIF on some builds, for instance) fall back to Pillow.

Before decoding, an image's width and height are read from its header (PNG and JPEG here, other formats through
Pillow's lazy ``Image.open``) and an image above ``PixelLimit.max_pixels`` is refused: a small file can declare
a huge size (a 1.2 MB PNG of 20000x20000 decodes to 1.2 GB). The default, 178,956,970 pixels, is PaddleX
serving's limit and Pillow's decompression-bomb error threshold (2 * ``Image.MAX_IMAGE_PIXELS``). Only regular
files are read: a FIFO or a device such as ``/dev/zero`` would block or never end.
"""
from __future__ import annotations

import io
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import ImageReadError

# Suffixes treated as images when a directory is listed (decoding decides in the end).
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".jp2", ".pbm", ".pgm", ".ppm"}
)

DEFAULT_MAX_PIXELS = 178_956_970
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (they carry the size): C0-CF except DHT (C4), JPG (C8) and DAC (CC).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


@dataclass(frozen=True)
class PixelLimit:
    """The largest image read, in pixels (width * height; None: no limit), and how the user raises it.

    ``hint`` is quoted in the error in the words of the interface in use (``-o Predict.max_pixels=N`` on the
    command line, ``create_model(..., max_pixels=N)`` in Python); without one the error says to resize.
    """

    max_pixels: int | None = DEFAULT_MAX_PIXELS
    hint: str | None = None

    def check(self, width: int, height: int, name: str) -> None:
        """ImageReadError naming the image, its size and the way out when it is above the limit."""
        if self.max_pixels is None or width * height <= self.max_pixels:
            return
        raise self.error(name, f"is {width}x{height} = {width * height:,} pixels")

    def error(self, name: str, size_text: str) -> ImageReadError:
        way_out = (f"if you trust it, raise the limit with {self.hint} (None: no limit)" if self.hint
                   else "resize it first")
        return ImageReadError(f"Image {name} {size_text}, over the limit of {self.max_pixels:,} pixels (a guard "
                              f"against decompression bombs); {way_out}.")


def is_image_file(path: str | os.PathLike) -> bool:
    """True if ``path`` has an image suffix (case-insensitive); says nothing about the content."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def decode_image(data: bytes, name: str = "<bytes>", limit: PixelLimit = PixelLimit()) -> np.ndarray:
    """Decode encoded image bytes to BGR uint8 HxWx3; ``name`` is used in the error message.

    The size is checked against ``limit`` from the header, before any pixel is decoded (and once more after
    decoding, for formats whose header could not be read).
    """
    if not data:
        raise ImageReadError(f"Image {name} is empty (0 bytes); pass a valid image file.")
    size = header_size(data, name, limit)
    if size is not None:
        limit.check(*size, name)
    try:
        img, reason = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR), None
    except cv2.error as e:  # OpenCV's own size limit and other refusals
        img, reason = None, _opencv_refusal(e, size)
    if img is None:
        img = _decode_with_pil(data)
    if img is None:
        reason = reason or ("corrupt file or unsupported format; supported suffixes: "
                            f"{', '.join(sorted(IMAGE_SUFFIXES))}")
        raise ImageReadError(f"Cannot decode {name} as an image: {reason}.")
    limit.check(img.shape[1], img.shape[0], name)
    return to_bgr_uint8(img, name)


def _opencv_refusal(error: cv2.error, size: tuple[int, int] | None) -> str:
    """Why OpenCV refused to decode, in words (its exception text is a C++ assertion)."""
    text = str(error)
    if "CV_IO_MAX_IMAGE_PIXELS" in text:
        dims = f"it is {size[0]}x{size[1]}; " if size else ""
        return (f"{dims}OpenCV decodes at most 2**30 pixels (set the environment variable "
                f"OPENCV_IO_MAX_IMAGE_PIXELS before starting Python to raise that)")
    return f"OpenCV: {text.strip().splitlines()[-1]}"


def header_size(data: bytes, name: str = "<bytes>", limit: PixelLimit = PixelLimit()) -> tuple[int, int] | None:
    """(width, height) read from the encoded header without decoding pixels; None when it cannot be read.

    PNG and JPEG are parsed here; other formats go through Pillow, which refuses to open an image above its
    own bomb threshold: that refusal means "over the limit" whenever the limit is at or below that threshold.
    """
    size = _png_size(data) or _jpeg_size(data)
    if size is not None:
        return size
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                return im.size
    except Image.DecompressionBombError as e:
        pil_limit = 2 * Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS else None
        if limit.max_pixels is not None and pil_limit is not None and limit.max_pixels <= pil_limit:
            raise limit.error(name, f"is more than {pil_limit:,} pixels (Pillow read its header)") from e
        return None
    except Exception:  # not an image Pillow knows: decoding decides
        return None


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR" or len(data) < 24:
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Walk the JPEG marker segments up to the first start-of-frame, which holds the height and width."""
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
        elif marker in _JPEG_SOF:
            if i + 9 > len(data):
                return None
            height, width = int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9], "big")
            return (width, height) if height else None  # height 0: defined later (DNL), leave it to decoding
        else:
            i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def require_regular_file(path: str | os.PathLike, what: str = "image file") -> None:
    """ImageReadError unless ``path`` is an existing regular file (not a directory, FIFO, device or socket)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ImageReadError(f"{what.capitalize()} not found: {str(path)!r}. Check the path.") from None
    except OSError as e:
        raise ImageReadError(f"Cannot access {what} {str(path)!r}: {e.strerror or e}.") from e
    if stat.S_ISDIR(mode):
        raise ImageReadError(f"Expected an {what} but {str(path)!r} is a directory.")
    if not stat.S_ISREG(mode):
        raise ImageReadError(f"Expected an {what} but {str(path)!r} is {_file_kind(mode)}, not a regular file; "
                             f"pass a regular file.")


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((text for test, text in kinds if test(mode)), "a special file")


def read_image(path: str | os.PathLike, limit: PixelLimit = PixelLimit()) -> np.ndarray:
    """Read an image file into a BGR uint8 HxWx3 array; raise ImageReadError naming the file otherwise."""
    require_regular_file(path)
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ImageReadError(f"Cannot read image file {str(path)!r}: {e}") from e
    return decode_image(data, repr(str(path)), limit)


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
