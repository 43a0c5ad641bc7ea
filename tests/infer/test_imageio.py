"""read_image: BGR uint8 HxWx3 from every kind of file a user may have, clear errors otherwise."""
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
