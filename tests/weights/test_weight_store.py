"""Cache folder, downloads against a local HTTP server, checksums and safetensors files."""
from __future__ import annotations

import hashlib
import json
import socket
import struct
import threading
from pathlib import Path
from typing import Iterator

import pytest
import torch

from ppyoloe_sod.errors import WeightsError
from local_http import LocalServer

from ppyoloe_sod import netio
from ppyoloe_sod.weights import store
from ppyoloe_sod.weights.pdparams import save_pdparams
from ppyoloe_sod.weights.store import (cache_dir, download, fetch_weights, load_safetensors, save_safetensors,
                                       sha256_file)

# ~1 MB, not a multiple of the read chunk; they start like a protocol-4 pickle, as a .pdparams file must
PAYLOAD = b"\x80\x04" + bytes(range(256)) * 4099
OTHER_PAYLOAD = b"\x80\x04" + bytes(range(255, -1, -1)) * 4099


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalServer]:
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    srv = LocalServer({"/w/model.pdparams": PAYLOAD}).start()
    yield srv
    srv.close()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv(store.CACHE_ENV, str(d))
    return d


def test_cache_dir_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(store.CACHE_ENV, str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    monkeypatch.delenv(store.CACHE_ENV)
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert cache_dir() == tmp_path / "h" / ".cache" / "ppyoloe_sod"


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    data = PAYLOAD * 3  # spans several read chunks
    p = tmp_path / "f.bin"
    p.write_bytes(data)
    assert sha256_file(p) == hashlib.sha256(data).hexdigest()


def test_download_writes_file_and_verifies_sha(server: LocalServer, tmp_path: Path) -> None:
    dst = tmp_path / "dl" / "model.pdparams"
    out = download(server.url("/w/model.pdparams"), dst, sha256=hashlib.sha256(PAYLOAD).hexdigest().upper())
    assert out == dst
    assert dst.read_bytes() == PAYLOAD
    assert [p.name for p in dst.parent.iterdir()] == ["model.pdparams"]  # no temp file left


def test_fetch_weights_downloads_once(server: LocalServer, home: Path) -> None:
    url = server.url("/w/model.pdparams")
    first = fetch_weights(url)
    second = fetch_weights(url)
    assert first == second == store.cache_path_for(url)
    assert first.is_relative_to(home) and first.name == "model.pdparams"
    assert first.read_bytes() == PAYLOAD
    assert server.hits == {"/w/model.pdparams": 1}
    assert fetch_weights(url, official=True) == home / "model.pdparams"  # published files: top level, by name


def test_urls_with_the_same_file_name_do_not_share_a_cache_entry(server: LocalServer, home: Path) -> None:
    server.files["/v/model.pdparams"] = OTHER_PAYLOAD
    a, b = fetch_weights(server.url("/w/model.pdparams")), fetch_weights(server.url("/v/model.pdparams"))
    assert a != b
    assert (a.read_bytes(), b.read_bytes()) == (PAYLOAD, OTHER_PAYLOAD)


def test_404_names_url_and_cache_path(server: LocalServer, home: Path) -> None:
    url = server.url("/w/missing.pdparams")
    with pytest.raises(WeightsError) as e:
        fetch_weights(url)
    msg = str(e.value)
    assert url in msg and "404" in msg
    assert str(store.cache_path_for(url)) in msg
    assert not store.cache_path_for(url).exists()


def test_sha_mismatch_leaves_no_file(server: LocalServer, home: Path) -> None:
    url = server.url("/w/model.pdparams")
    with pytest.raises(WeightsError, match="sha256") as e:
        fetch_weights(url, sha256="0" * 64)
    assert url in str(e.value) and str(store.cache_path_for(url)) in str(e.value)
    assert not any(p.is_file() for p in home.rglob("*"))
    # the right checksum then works, and the failed attempt did not poison the cache
    assert fetch_weights(url, sha256=hashlib.sha256(PAYLOAD).hexdigest()).read_bytes() == PAYLOAD


def test_short_response_is_rejected(server: LocalServer, tmp_path: Path) -> None:
    server.short.add("/w/model.pdparams")
    dst = tmp_path / "model.pdparams"
    with pytest.raises(WeightsError) as e:
        download(server.url("/w/model.pdparams"), dst)
    assert server.url("/w/model.pdparams") in str(e.value)
    assert not dst.exists() and list(tmp_path.iterdir()) == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_port_fails_with_manual_hint(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("http_proxy", raising=False)
    url = f"http://127.0.0.1:{_free_port()}/w/model.pdparams"
    with pytest.raises(WeightsError) as e:
        fetch_weights(url)
    msg = str(e.value)
    assert "Cannot reach" in msg and url in msg
    assert f"place it at {store.cache_path_for(url)}" in msg
    assert not home.exists() or not any(p.is_file() for p in home.rglob("*"))


def test_silent_server_times_out_instead_of_hanging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("http_proxy", raising=False)
    with socket.socket() as s:  # accepts TCP connections (kernel backlog) but never answers
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        url = f"http://127.0.0.1:{s.getsockname()[1]}/x.pdparams"
        with pytest.raises(WeightsError, match="timed out") as e:
            download(url, tmp_path / "x.pdparams", timeout=0.3)
    assert url in str(e.value)
    assert not (tmp_path / "x.pdparams").exists()


def test_connect_timeout_is_short(monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection is opened with the short connect timeout, then reads use the caller's timeout."""
    seen: list[float | None] = []

    def fake_create_connection(address, timeout=None, source_address=None, **kw):
        seen.append(timeout)
        raise ConnectionRefusedError("refused")

    monkeypatch.setattr(socket, "create_connection", fake_create_connection)
    with pytest.raises(WeightsError):
        download("http://192.0.2.1/x.pdparams", Path("/nonexistent/x.pdparams"), timeout=60)
    assert seen == [netio.CONNECT_TIMEOUT_S] and netio.CONNECT_TIMEOUT_S < 60


def test_stalled_dns_lookup_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Socket timeouts do not cover name lookups; an offline resolver must not make the download hang."""
    release = threading.Event()

    def stalled_getaddrinfo(*args, **kwargs):
        release.wait(30)
        raise socket.gaierror("released")

    monkeypatch.setattr(socket, "getaddrinfo", stalled_getaddrinfo)
    monkeypatch.setattr(netio, "CONNECT_TIMEOUT_S", 0.2)
    try:
        with pytest.raises(WeightsError, match="DNS lookup of weights.example.invalid timed out"):
            download("http://weights.example.invalid/m.pdparams", tmp_path / "m.pdparams")
    finally:
        release.set()
    assert not (tmp_path / "m.pdparams").exists()


# --- safetensors -------------------------------------------------------------------------------------------

def test_safetensors_round_trip(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 4, generator=g)
    state = {"a.weight": w, "a.tied": w, "b.bias": torch.randn(3, generator=g).double(),
             "bn.num_batches_tracked": torch.tensor(5), "t.transposed": w.t()}
    meta = {"model": "PP-YOLOE_plus_SOD-S", "classes": '["pedestrian"]', "source_sha256": "ab" * 32}
    path = tmp_path / "m.safetensors"
    save_safetensors(state, path, meta)
    loaded, loaded_meta = load_safetensors(path)
    assert loaded_meta == meta
    assert sorted(loaded) == sorted(state)
    for k, v in state.items():
        assert loaded[k].dtype == v.dtype and loaded[k].shape == v.shape, k
        assert torch.equal(loaded[k], v), k
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_safetensors_bad_metadata_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    with pytest.raises(WeightsError, match="'classes'"):
        save_safetensors({"w": torch.ones(1)}, path, {"classes": ["a", "b"]})  # type: ignore[dict-item]
    assert not path.exists()


def test_load_safetensors_errors(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not found"):
        load_safetensors(tmp_path / "none.safetensors")
    good = tmp_path / "good.safetensors"
    save_safetensors({"w": torch.arange(100.0)}, good, {})
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(good.read_bytes()[:-50])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"hello world, not a weights file" * 3)
    for bad in (truncated, garbage):
        with pytest.raises(WeightsError, match="not a valid safetensors file") as e:
            load_safetensors(bad)
        assert bad.name in str(e.value)
    pd = tmp_path / "model.pdparams"
    save_pdparams({"w": torch.ones(2).numpy()}, pd)
    with pytest.raises(WeightsError, match="pickle"):
        load_safetensors(pd)


def _save_with_header_length(path: Path, length: int) -> torch.Tensor:
    """Save a small file of ours whose JSON header is exactly ``length`` bytes, by padding a class name."""
    w = torch.arange(4.0)
    for pad in range(2 * length):
        save_safetensors({"w": w}, path, {"classes": json.dumps(["c" * pad])})
        if struct.unpack("<Q", path.read_bytes()[:8])[0] == length:
            return w
    raise AssertionError(f"no padding gives a {length}-byte header")


@pytest.mark.parametrize("length", [0x80, 0x380])  # 0x380: the file starts 0x80 0x03, like a protocol-3 pickle
def test_safetensors_whose_header_length_starts_with_0x80_loads(tmp_path: Path, length: int) -> None:
    path = tmp_path / "ours.safetensors"
    w = _save_with_header_length(path, length)
    assert path.read_bytes()[0] == 0x80
    state, meta = load_safetensors(path)
    assert torch.equal(state["w"], w) and json.loads(meta["classes"])[0].startswith("c")


def test_integer_and_bool_weights_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "ints.safetensors"
    save_safetensors({"conv.weight": torch.ones(2, dtype=torch.int32), "mask": torch.ones(2, dtype=torch.bool),
                      "bn.weight": torch.ones(2), "bn.num_batches_tracked": torch.tensor(3)}, path, {})
    with pytest.raises(WeightsError) as e:
        load_safetensors(path)
    msg = str(e.value)
    assert str(path) in msg and "'conv.weight' (integer)" in msg and "'mask' (bool)" in msg
    assert "bn.weight" not in msg and "num_batches_tracked" not in msg  # BatchNorm's step counter is an integer


def test_non_finite_weights_are_refused(tmp_path: Path) -> None:
    bad = torch.ones(10)
    bad[3], bad[7] = float("nan"), float("inf")
    path = tmp_path / "nan.safetensors"
    save_safetensors({"a.weight": torch.ones(2), "b.weight": bad, "c.bias": torch.tensor([float("-inf")])}, path, {})
    with pytest.raises(WeightsError) as e:
        load_safetensors(path)
    msg = str(e.value)
    assert str(path) in msg and "2 tensor(s)" in msg and "'b.weight' (2 of its 10 values)" in msg


def _raw_safetensors(header: object, data: bytes) -> bytes:
    text = json.dumps(header).encode() if not isinstance(header, bytes) else header
    return struct.pack("<Q", len(text)) + text + data


@pytest.mark.parametrize("header, data, reason", [
    ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, bytes(8), "lie outside the 8 data bytes"),
    ({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8), "needs 12 bytes"),
    ({"w": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}}, bytes(16), "unsupported dtype"),
    ({"w": {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}}, bytes(8), "not a list of sizes"),
    ({"__metadata__": {"classes": ["a"]}}, b"", "__metadata__"),
    (b'{"w": [' + b" " * 6, b"", "not valid JSON"),
], ids=["outside", "size", "dtype", "shape", "metadata", "json"])
def test_safetensors_header_is_checked_against_the_file(tmp_path: Path, header, data, reason) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(_raw_safetensors(header, data))
    with pytest.raises(WeightsError, match="not a valid safetensors file") as e:
        load_safetensors(path)
    assert str(path) in str(e.value) and reason in str(e.value)


# --- what a download may be -------------------------------------------------------------------------------

def test_an_html_page_is_not_cached_and_the_next_call_fetches_again(server: LocalServer, home: Path) -> None:
    path = "/w/model.pdparams"
    server.files[path] = b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Log in</body></html>\n"
    server.types[path] = "text/html; charset=utf-8"
    url = server.url(path)
    with pytest.raises(WeightsError) as e:
        fetch_weights(url)
    msg = str(e.value)
    assert url in msg and "an HTML page (served as text/html)" in msg and "not cached" in msg, msg
    assert not any(p.is_file() for p in home.rglob("*"))
    # the server is fixed: the next call downloads again instead of trusting a cached error page
    server.files[path] = PAYLOAD
    del server.types[path]
    assert fetch_weights(url).read_bytes() == PAYLOAD
    assert server.hits[path] == 2


@pytest.mark.parametrize("body, reason", [
    (PAYLOAD, "is a pickle (a Paddle .pdparams file?), not a safetensors file"),
    (_raw_safetensors({"w": {"dtype": "F32", "shape": [100], "data_offsets": [0, 400]}}, bytes(40)),
     "lie outside the 40 data bytes"),
], ids=["pickle", "truncated"])
def test_a_download_must_be_the_format_its_suffix_names(server: LocalServer, home: Path, body: bytes,
                                                         reason: str) -> None:
    server.files["/w/model.safetensors"] = body
    url = server.url("/w/model.safetensors")
    with pytest.raises(WeightsError) as e:
        fetch_weights(url)
    assert url in str(e.value) and reason in str(e.value)
    assert not any(p.is_file() for p in home.rglob("*"))


def test_a_download_over_the_size_limit_is_refused_before_reading(server: LocalServer, tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=f"it is {len(PAYLOAD)} bytes, over the 1000-byte limit"):
        download(server.url("/w/model.pdparams"), tmp_path / "model.pdparams", max_bytes=1000)
    assert list(tmp_path.iterdir()) == []
