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
    assert "skipped 2 non-image" in caplog.text and "notes.txt" in caplog.text


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
    monkeypatch.setattr(sources, "read_image", lambda p: reads.append(p) or real(p))
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
