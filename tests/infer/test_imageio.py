"""read_image: BGR uint8 HxWx3 from every kind of file a user may have, clear errors otherwise."""
import io
import os
import struct
import threading
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from ppyoloe_sod.errors import ImageReadError
from ppyoloe_sod.imageio import read_image, to_bgr_uint8


def _pattern(h=24, w=32):
    """A BGR image whose three channels differ everywhere, so a channel swap is visible."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 7 % 256, y * 11 % 256, (x + y) * 5 % 256], axis=-1).astype(np.uint8)


def test_png_round_trip_keeps_bgr_order(tmp_path):
    img = _pattern()
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), img)
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (24, 32, 3)
    np.testing.assert_array_equal(out, img)


def test_non_ascii_path(tmp_path):
    img = _pattern()
    path = tmp_path / "données_图像.png"
    path.write_bytes(cv2.imencode(".png", img)[1].tobytes())
    np.testing.assert_array_equal(read_image(str(path)), img)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = _pattern()[:, :, 0]
    path = tmp_path / "g.png"
    cv2.imwrite(str(path), gray)
    out = read_image(path)
    assert out.shape == (24, 32, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray)


def test_rgba_drops_alpha(tmp_path):
    bgr = _pattern()
    alpha = np.full(bgr.shape[:2], 7, np.uint8)
    path = tmp_path / "rgba.png"
    cv2.imwrite(str(path), np.dstack([bgr, alpha]))
    np.testing.assert_array_equal(read_image(path), bgr)


def test_16bit_scaled_to_8bit(tmp_path):
    bgr16 = _pattern().astype(np.uint16) * 256 + 3  # high byte = the 8-bit pattern
    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), bgr16)
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    np.testing.assert_array_equal(read_image(path), _pattern())


def test_gif_falls_back_to_pil(tmp_path):
    path = tmp_path / "flat.gif"
    Image.new("RGB", (10, 6), (200, 10, 30)).save(path)
    out = read_image(path)
    assert out.shape == (6, 10, 3)
    np.testing.assert_array_equal(out[0, 0], [30, 10, 200])


def test_missing_file_names_it(tmp_path):
    with pytest.raises(ImageReadError, match="nope.jpg"):
        read_image(tmp_path / "nope.jpg")


def test_corrupt_file_names_it(tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    with pytest.raises(ImageReadError, match="broken.jpg"):
        read_image(path)


def test_empty_file_and_text_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ImageReadError, match="empty.png"):
        read_image(tmp_path / "empty.png")
    with pytest.raises(ImageReadError, match="notes.txt"):
        read_image(tmp_path / "notes.txt")


def test_directory_is_refused(tmp_path):
    with pytest.raises(ImageReadError, match="directory"):
        read_image(tmp_path)


def test_to_bgr_uint8_conversions():
    np.testing.assert_array_equal(to_bgr_uint8(np.full((2, 3), 9, np.uint8)), np.full((2, 3, 3), 9, np.uint8))
    np.testing.assert_array_equal(to_bgr_uint8(np.full((2, 3, 3), 1.0, np.float32)), np.full((2, 3, 3), 255))
    np.testing.assert_array_equal(to_bgr_uint8(np.full((2, 3, 3), 0.5, np.float16)), np.full((2, 3, 3), 128))
    np.testing.assert_array_equal(to_bgr_uint8(np.full((2, 3, 3), 77.0, np.float64)), np.full((2, 3, 3), 77))
    with pytest.raises(ImageReadError, match="shape"):
        to_bgr_uint8(np.zeros((2, 3, 5), np.uint8))
    with pytest.raises(ImageReadError, match="dtype"):
        to_bgr_uint8(np.zeros((2, 3, 3), np.int8))


# --- the pixel limit, read from the header before decoding ---------------------------------------------------

def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _huge_png(width: int, height: int, with_pixels: bool = True) -> bytes:
    """A valid 1-bit grayscale PNG of all-black rows, a few kB even at 20000x20000; without pixels only the
    header is right (OpenCV checks the size before reading the data)."""
    ihdr = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
    rows = zlib.compressobj(9)
    block = bytes(1 + (width + 7) // 8) * 500  # 500 rows: a filter byte and the packed bits each
    idat = b"".join(rows.compress(block) for _ in range(height // 500)) + rows.flush() if with_pixels else b"\0"
    return b"\x89PNG\r\n\x1a\n" + ihdr + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


@pytest.fixture()
def no_decoding(monkeypatch):
    """Make any attempt to decode pixels fail the test: the limit must act on the header alone."""
    def refuse(*args, **kwargs):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(cv2, "imdecode", refuse)
    monkeypatch.setattr(Image.Image, "load", refuse)


def test_huge_png_refused_from_its_header(tmp_path, no_decoding):
    path = tmp_path / "bomb.png"
    path.write_bytes(_huge_png(20000, 20000))  # decodes to 1.2 GB
    assert path.stat().st_size < 100_000
    with pytest.raises(ImageReadError, match=r"bomb\.png.* 20000x20000 = 400,000,000 pixels.*178,956,970"):
        read_image(path)


def test_pixel_limit_is_set_by_the_caller_and_named_in_the_error(tmp_path):
    from ppyoloe_sod.imageio import DEFAULT_MAX_PIXELS, PixelLimit, decode_image

    assert DEFAULT_MAX_PIXELS == 178_956_970
    data = cv2.imencode(".png", _pattern(30, 40))[1].tobytes()  # 1200 pixels
    with pytest.raises(ImageReadError, match=r"x\.png.*40x30 = 1,200 pixels.*limit of 1,000.*max_pixels=N"):
        decode_image(data, "x.png", PixelLimit(1000, "max_pixels=N"))
    assert decode_image(data, "x.png", PixelLimit(1200)).shape == (30, 40, 3)
    assert decode_image(data, "x.png", PixelLimit(None)).shape == (30, 40, 3)


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".bmp", ".tif", ".webp", ".ppm"])
def test_header_size_of_each_format(suffix):
    from ppyoloe_sod.imageio import header_size

    data = cv2.imencode(suffix, _pattern(24, 32))[1].tobytes()
    assert header_size(data) == (32, 24)


def test_header_size_of_progressive_jpeg_and_gif():
    from ppyoloe_sod.imageio import header_size

    data = cv2.imencode(".jpg", _pattern(24, 32), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    assert header_size(data) == (32, 24)
    buf = io.BytesIO()
    Image.new("RGB", (10, 6)).save(buf, format="GIF")
    assert header_size(buf.getvalue()) == (10, 6)


def test_opencv_size_refusal_is_an_image_read_error(tmp_path):
    from ppyoloe_sod.imageio import PixelLimit

    path = tmp_path / "huge.png"
    path.write_bytes(_huge_png(40000, 40000, with_pixels=False))
    with pytest.raises(ImageReadError, match="40000x40000 = 1,600,000,000 pixels"):
        read_image(path)  # the default limit
    # Without our limit, OpenCV's own (2**30 pixels) refuses it: a clear error, not a raw cv2.error.
    with pytest.raises(ImageReadError, match="huge.png.*40000x40000.*OPENCV_IO_MAX_IMAGE_PIXELS"):
        read_image(path, PixelLimit(None))


# --- only regular files are read -----------------------------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this OS")
def test_fifo_is_refused_not_read(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)

    def unblock():  # if a regression opens the FIFO, give it an end of file instead of hanging the suite
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass  # nobody is reading: the good case

    valve = threading.Timer(3.0, unblock)
    valve.start()
    try:
        with pytest.raises(ImageReadError, match=r"pipe\.png.* is a FIFO \(named pipe\), not a regular file"):
            read_image(fifo)
    finally:
        valve.cancel()


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="no /dev/null")
def test_device_is_refused():
    # /dev/null, not /dev/zero: a regression reading it ends at once instead of filling the memory
    with pytest.raises(ImageReadError, match="/dev/null.* is a character device, not a regular file"):
        read_image("/dev/null")


def test_huge_bmp_refused_from_its_header_through_pillow(tmp_path, no_decoding):
    """Formats without a parser of ours are sized by Pillow, whose own refusal also means over the limit."""
    dib = struct.pack("<IiiHHIIiiII", 40, 20000, 20000, 1, 1, 0, 0, 2835, 2835, 2, 0)  # 1 bit per pixel
    palette = b"\0\0\0\0\xff\xff\xff\0"
    path = tmp_path / "bomb.bmp"
    path.write_bytes(b"BM" + struct.pack("<IHHI", 14 + len(dib) + len(palette), 0, 0, 14 + len(dib) + len(palette))
                     + dib + palette)
    with pytest.raises(ImageReadError, match=r"bomb\.bmp' is more than 178,956,970 pixels.*limit of 178,956,970"):
        read_image(path)
