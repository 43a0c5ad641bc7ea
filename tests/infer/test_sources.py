"""Input expansion for predict: every accepted kind, lazily, and a clear error for each bad one."""
from __future__ import annotations

import http.server
import logging
import socket
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from ppyoloe_sod.data import sources
from ppyoloe_sod.data.sources import expand_inputs, fetch_url, iter_inputs, load_source
from ppyoloe_sod.errors import ImageReadError


def _png(path: Path, value: int, h: int = 8, w: int = 12) -> Path:
    img = np.full((h, w, 3), value, np.uint8)
    img[0, 0] = (1, 2, 3)  # B, G, R marker
    cv2.imwrite(str(path), img)
    return path


def _pdf(path: Path) -> Path:
    """Two pages: a 200x100 pt red page and a 100x300 pt blue one."""
    red, blue = Image.new("RGB", (200, 100), (255, 0, 0)), Image.new("RGB", (100, 300), (0, 0, 255))
    red.save(path, save_all=True, append_images=[blue], resolution=72)
    return path


def test_ndarray_is_bgr_and_has_no_path():
    arr = np.zeros((5, 6, 3), np.uint8)
    arr[..., 2] = 200
    [(img, path, page)] = list(iter_inputs(arr))
    assert path is None and page is None
    np.testing.assert_array_equal(img, arr)


def test_gray_ndarray_becomes_bgr():
    [(img, _, _)] = list(iter_inputs(np.full((4, 4), 77, np.uint8)))
    assert img.shape == (4, 4, 3) and (img == 77).all()


def test_file_path_and_pathlike(tmp_path):
    p = _png(tmp_path / "a.png", 10)
    for inp in (str(p), p):
        [(img, path, page)] = list(iter_inputs(inp))
        assert path == str(p) and page is None
        assert tuple(img[0, 0]) == (1, 2, 3)


def test_directory_sorted_recursive_and_skips_non_images(tmp_path, caplog):
    _png(tmp_path / "b.png", 20)
    _png(tmp_path / "a.jpg", 10)
    (tmp_path / "sub").mkdir()
    _png(tmp_path / "sub" / "c.bmp", 30)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "labels.json").write_text("{}")
    with caplog.at_level(logging.WARNING):
        got = [(Path(p).name, int(img[4, 4, 0])) for img, p, _ in iter_inputs(str(tmp_path))]
    assert got == [("a.jpg", got[0][1]), ("b.png", 20), ("c.bmp", 30)]
    assert abs(got[0][1] - 10) <= 2  # jpeg
    assert "skipped 2 entries" in caplog.text and "notes.txt (not an image suffix)" in caplog.text


def test_pdf_pages_rendered_at_scale_2(tmp_path):
    pdf = _pdf(tmp_path / "doc.pdf")
    items = list(iter_inputs(str(pdf)))
    assert [(p, i) for _, p, i in items] == [(str(pdf), 0), (str(pdf), 1)]
    (red, _, _), (blue, _, _) = items
    assert red.shape == (200, 400, 3) and blue.shape == (600, 200, 3)
    assert red[100, 200, 2] > 240 and red[100, 200, 0] < 15  # BGR: red in channel 2
    assert blue[300, 100, 0] > 240 and blue[300, 100, 2] < 15


def test_list_mixing_kinds_keeps_order(tmp_path):
    a = _png(tmp_path / "a.png", 10)
    d = tmp_path / "d"
    d.mkdir()
    _png(d / "x.png", 40)
    pdf = _pdf(tmp_path / "p.pdf")
    arr = np.full((3, 3, 3), 5, np.uint8)
    got = [(p, i) for _, p, i in iter_inputs([arr, str(a), str(d), str(pdf)])]
    assert got == [(None, None), (str(a), None), (str(d / "x.png"), None), (str(pdf), 0), (str(pdf), 1)]


def test_expansion_is_lazy(tmp_path, monkeypatch):
    for i in range(5):
        _png(tmp_path / f"{i}.png", i)
    reads = []
    real = sources.read_image
    monkeypatch.setattr(sources, "read_image", lambda p, *a: reads.append(p) or real(p, *a))
    srcs = expand_inputs(str(tmp_path))
    assert len(srcs) == 5 and reads == []
    it = iter_inputs(str(tmp_path))
    next(it)
    assert len(reads) == 1


@pytest.mark.parametrize("bad", [42, 3.5, {"a": 1}, None, b"bytes"])
def test_unsupported_type(bad):
    with pytest.raises(ImageReadError, match="Unsupported input"):
        expand_inputs(bad)


def test_missing_path_names_it(tmp_path):
    with pytest.raises(ImageReadError, match="nothere.png"):
        expand_inputs(str(tmp_path / "nothere.png"))


def test_empty_directory_and_directory_without_images(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageReadError, match="empty"):
        expand_inputs(str(tmp_path / "empty"))
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("x")
    with pytest.raises(ImageReadError, match="no image"):
        expand_inputs(str(tmp_path / "docs"))


def test_empty_list():
    with pytest.raises(ImageReadError, match="empty"):
        expand_inputs([])


def test_corrupt_file_raises_when_read(tmp_path):
    p = tmp_path / "bad.png"
    p.write_bytes(b"garbage")
    with pytest.raises(ImageReadError, match="bad.png"):
        list(iter_inputs(str(p)))


def test_corrupt_pdf(tmp_path):
    p = tmp_path / "bad.pdf"
    p.write_bytes(b"%PDF-1.4 broken")
    with pytest.raises(ImageReadError, match="bad.pdf"):
        expand_inputs(str(p))


# --- URLs, served from a local thread ---------------------------------------------------------------------

@pytest.fixture()
def http_dir(tmp_path):
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path), **k)  # noqa: E731
    http.server.SimpleHTTPRequestHandler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_url_image_and_pdf(http_dir):
    root, base = http_dir
    _png(root / "img.png", 50)
    _pdf(root / "doc.pdf")
    [(img, path, page)] = list(iter_inputs(f"{base}/img.png"))
    assert path == f"{base}/img.png" and page is None and tuple(img[0, 0]) == (1, 2, 3)
    pages = list(iter_inputs(f"{base}/doc.pdf"))
    assert [(p, i) for _, p, i in pages] == [(f"{base}/doc.pdf", 0), (f"{base}/doc.pdf", 1)]


def test_url_not_found_and_size_cap(http_dir):
    root, base = http_dir
    (root / "big.bin").write_bytes(b"x" * 5000)
    with pytest.raises(ImageReadError, match="missing.png"):
        list(iter_inputs(f"{base}/missing.png"))
    with pytest.raises(ImageReadError, match="limit"):
        fetch_url(f"{base}/big.bin", max_bytes=1000)


def test_unreachable_url_fails_fast():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/img.jpg"
    with pytest.raises(ImageReadError, match=f"127.0.0.1:{port}"):
        list(iter_inputs(url))


def test_load_source_of_array_validates_shape():
    [src] = expand_inputs(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ImageReadError, match="shape"):
        load_source(src)


# --- what a directory expands to, and what is refused ---------------------------------------------------------

def test_hidden_files_and_folders_are_left_out_alike(tmp_path, caplog):
    _png(tmp_path / "a.png", 10)
    _png(tmp_path / ".b.png", 20)  # hidden file
    for hidden_dir in (tmp_path / ".cache", tmp_path / "sub" / ".thumbs"):
        hidden_dir.mkdir(parents=True)
        _png(hidden_dir / "c.png", 30)  # a visible name inside a hidden folder
    _png(tmp_path / "sub" / "d.png", 40)
    with caplog.at_level(logging.INFO):
        got = [Path(s.input_path).relative_to(tmp_path).as_posix() for s in expand_inputs(str(tmp_path))]
    assert got == ["a.png", "sub/d.png"]
    assert "left out 3 hidden" in caplog.text
    # Given explicitly, a hidden folder or file is used.
    assert [Path(s.input_path).name for s in expand_inputs(str(tmp_path / ".cache"))] == ["c.png"]
    assert [s.input_path for s in expand_inputs(str(tmp_path / ".b.png"))] == [str(tmp_path / ".b.png")]


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="no FIFOs on this OS")
def test_special_files_are_refused_when_given_and_named_when_found(tmp_path, caplog):
    import os

    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(ImageReadError, match=r"pipe\.png.* is a FIFO"):
        expand_inputs(str(tmp_path / "pipe.png"))  # refused before anything is read: no hang
    os.mkfifo(tmp_path / "doc.pdf")
    with pytest.raises(ImageReadError, match=r"doc\.pdf.* is a FIFO"):
        expand_inputs(str(tmp_path / "doc.pdf"))
    if os.path.exists("/dev/zero"):
        with pytest.raises(ImageReadError, match="/dev/zero.* is a character device"):
            expand_inputs("/dev/zero")
    _png(tmp_path / "a.png", 10)
    with caplog.at_level(logging.WARNING):
        got = [Path(s.input_path).name for s in expand_inputs(str(tmp_path))]
    assert got == ["a.png"]
    assert "doc.pdf (not a regular file)" in caplog.text and "pipe.png (not a regular file)" in caplog.text


def test_pdf_page_rendered_within_the_pixel_limit(tmp_path):
    from ppyoloe_sod.imageio import PixelLimit

    [red, _] = expand_inputs(str(_pdf(tmp_path / "doc.pdf")))  # 200x100 pt: 400x200 px at PaddleX's scale 2
    assert load_source(red, PixelLimit(None)).shape == (200, 400, 3)
    small = load_source(red, PixelLimit(20_000))
    assert small.shape[0] * small.shape[1] <= 20_000 and small.shape[1] > 150  # scaled down, not refused


def test_image_file_over_the_pixel_limit(tmp_path):
    from ppyoloe_sod.imageio import PixelLimit

    [src] = expand_inputs(str(_png(tmp_path / "a.png", 10, h=8, w=12)))
    with pytest.raises(ImageReadError, match=r"a\.png.* 12x8 = 96 pixels.*limit of 50"):
        load_source(src, PixelLimit(50))
