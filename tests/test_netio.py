"""Bounded downloads (ppyoloe_sod.netio) through both of their users: weights downloads and predict's URL inputs.

Loopback servers only. A trickling server sends a byte every 0.2 s against a deadline of 1 s: what is checked is
that the deadline error is raised (no timing is asserted).
"""
from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Iterator

import pytest

from ppyoloe_sod.data.sources import fetch_url, iter_inputs
from ppyoloe_sod.errors import ImageReadError, WeightsError
from ppyoloe_sod.weights import store
from ppyoloe_sod.weights.store import fetch_weights

from local_http import LocalServer

BODY = b"\x80\x04" + bytes(38)  # 40 bytes: trickled a byte every 0.2 s, 8 s in all


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalServer]:
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    srv = LocalServer({}).start()
    yield srv
    srv.close()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(store.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def _cached_files(home: Path) -> list[Path]:
    return [p for p in home.rglob("*") if p.is_file()] if home.exists() else []


def test_a_trickling_weights_download_ends_at_its_deadline(server: LocalServer, home: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    server.files["/slow/model.pdparams"] = BODY
    server.trickle["/slow/model.pdparams"] = 0.2
    monkeypatch.setenv("PPYOLOE_SOD_WEIGHTS_DEADLINE", "1")
    url = server.url("/slow/model.pdparams")
    with pytest.raises(WeightsError) as e:
        fetch_weights(url)
    msg = str(e.value)
    assert url in msg and "within its 1 s deadline" in msg and "PPYOLOE_SOD_WEIGHTS_DEADLINE" in msg, msg
    assert _cached_files(home) == []


def test_a_trickling_input_url_ends_at_its_deadline(server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    server.files["/slow/img.png"] = BODY
    server.trickle["/slow/img.png"] = 0.2
    url = server.url("/slow/img.png")
    monkeypatch.setenv("PPYOLOE_SOD_URL_DEADLINE", "1")
    with pytest.raises(ImageReadError, match="within its 1 s deadline; set PPYOLOE_SOD_URL_DEADLINE") as e:
        list(iter_inputs(url))
    assert url in str(e.value)
    with pytest.raises(ImageReadError, match="within its 0.5 s deadline"):
        fetch_url(url, deadline_s=0.5)


def test_trickled_headers_end_at_the_deadline_too() -> None:
    """A server that never finishes its header block (one byte of an endless header line every 0.2 s)."""
    stop = threading.Event()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)

        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.sendall(b"HTTP/1.0 200 OK\r\nX-Slow: ")
                while not stop.wait(0.2):
                    try:
                        conn.sendall(b"x")
                    except OSError:
                        return

        threading.Thread(target=serve, daemon=True).start()
        try:
            with pytest.raises(ImageReadError, match="within its 1 s deadline"):
                fetch_url(f"http://127.0.0.1:{listener.getsockname()[1]}/img.png", deadline_s=1)
        finally:
            stop.set()


def test_a_bad_deadline_setting_is_named(server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    server.files["/img.png"] = BODY
    monkeypatch.setenv("PPYOLOE_SOD_URL_DEADLINE", "soon")
    with pytest.raises(ImageReadError, match="PPYOLOE_SOD_URL_DEADLINE='soon' is not a positive number"):
        fetch_url(server.url("/img.png"))


@pytest.mark.parametrize("user", ["weights", "input"])
@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://127.0.0.1:{port}/model.pdparams",
                                    "data:text/plain,hello"], ids=["file", "ftp", "data"])
def test_redirects_are_followed_only_to_http(server: LocalServer, home: Path, user: str, target: str) -> None:
    path = "/r/model.pdparams" if user == "weights" else "/r/img.png"
    with socket.socket() as ftp:  # stands for an FTP server: nothing may connect to it
        ftp.bind(("127.0.0.1", 0))
        ftp.listen(1)
        ftp.setblocking(False)
        target = target.format(port=ftp.getsockname()[1])
        server.redirects[path] = target
        url = server.url(path)
        with pytest.raises(WeightsError if user == "weights" else ImageReadError) as e:
            fetch_weights(url) if user == "weights" else fetch_url(url)
        msg = str(e.value)
        assert url in msg and f"redirected to {target!r}, which is not an http(s) URL" in msg, msg
        with pytest.raises(BlockingIOError):
            ftp.accept()
    assert _cached_files(home) == []


def test_redirects_to_http_are_followed(server: LocalServer) -> None:
    server.files["/real/img.png"] = BODY
    server.redirects["/moved/img.png"] = "/real/img.png"
    assert fetch_url(server.url("/moved/img.png")) == BODY
    assert server.hits == {"/moved/img.png": 1, "/real/img.png": 1}
