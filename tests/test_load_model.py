"""load_model's sources end to end: the official-weights download (against a local HTTP server), the cache,
URLs, folders, and failing fast offline with a message that says which file to fetch and where to put it."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import socket
import struct
from pathlib import Path
from typing import Iterator

import pytest
import torch

from ppyoloe_sod import zoo
from ppyoloe_sod.errors import WeightsError
from ppyoloe_sod.models import load_model
from ppyoloe_sod.weights.convert import torch_to_paddle
from ppyoloe_sod.weights.pdparams import save_pdparams
from ppyoloe_sod.weights.store import CACHE_ENV, cache_path_for, load_safetensors

from local_http import LocalServer
from weights_synth import randomized_model, write_safetensors

S = "PP-YOLOE_plus_SOD-S"
PD_NAME = "PP-YOLOE_plus_SOD-S_pretrained.pdparams"  # the official file's name, as in the published URL


@pytest.fixture(scope="module")
def model():
    return randomized_model(S, seed=11)


@pytest.fixture(scope="module")
def files(model, tmp_path_factory) -> dict[str, bytes]:
    """The bytes the server offers: a Paddle file (as published) and one of ours."""
    d = tmp_path_factory.mktemp("served")
    save_pdparams(torch_to_paddle(model.state_dict()), d / PD_NAME)
    write_safetensors(model, d / "mine.safetensors")
    return {f"/official/{PD_NAME}": (d / PD_NAME).read_bytes(),
            "/shared/mine.safetensors": (d / "mine.safetensors").read_bytes()}


@pytest.fixture
def server(files, monkeypatch) -> Iterator[LocalServer]:
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    srv = LocalServer(files).start()
    yield srv
    srv.close()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def point_zoo_at(monkeypatch, url: str, sha256: str | None = None) -> None:
    spec = dataclasses.replace(zoo.get_spec(S), weights_url=url, sha256=sha256)
    monkeypatch.setitem(zoo._MODELS, S, spec)


def assert_same_weights(loaded: torch.nn.Module, model: torch.nn.Module) -> None:
    ref = model.state_dict()
    for k, v in loaded.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(v, ref[k]), k


def test_official_weights_download_once_then_cache(server, files, cache, model, monkeypatch) -> None:
    body = files[f"/official/{PD_NAME}"]
    point_zoo_at(monkeypatch, server.url(f"/official/{PD_NAME}"), hashlib.sha256(body).hexdigest())

    first = load_model(S)
    assert server.hits == {f"/official/{PD_NAME}": 1}
    assert not first.training
    assert_same_weights(first, model)
    cached = cache / f"{S}.safetensors"
    _, meta = load_safetensors(cached)
    assert meta["model_name"] == S and json.loads(meta["classes"])[0] == "pedestrian"
    assert meta["source_sha256"] == hashlib.sha256(body).hexdigest()
    assert (cache / PD_NAME).read_bytes() == body

    second = load_model(S)
    assert server.hits == {f"/official/{PD_NAME}": 1}  # no new request
    assert_same_weights(second, model)


def test_a_url_as_weights(server, cache, model) -> None:
    url = server.url("/shared/mine.safetensors")
    loaded = load_model(S, weights=url)
    assert server.hits == {"/shared/mine.safetensors": 1}
    assert_same_weights(loaded, model)
    assert cache_path_for(url).is_file() and cache_path_for(url).is_relative_to(cache)
    with pytest.raises(WeightsError, match="404"):
        load_model(S, weights=server.url("/shared/absent.safetensors"))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("how", ["closed port", "server shut down"])
def test_offline_fails_with_what_to_fetch_and_where(how, files, cache, model, monkeypatch) -> None:
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    if how == "closed port":
        url = f"http://127.0.0.1:{_closed_port()}/official/{PD_NAME}"
    else:
        srv = LocalServer(files).start()
        url = srv.url(f"/official/{PD_NAME}")
        srv.close()
    point_zoo_at(monkeypatch, url)
    with pytest.raises(WeightsError) as err:
        load_model(S)
    msg = str(err.value)
    assert url in msg and PD_NAME in msg and str(cache / PD_NAME) in msg, msg
    assert not cache.exists() or not any(cache.iterdir())  # nothing half-written left behind

    # following the message's advice works without the network
    cache.mkdir(parents=True, exist_ok=True)
    (cache / PD_NAME).write_bytes(files[f"/official/{PD_NAME}"])
    if how == "closed port":  # (once is enough: a load costs seconds)
        assert_same_weights(load_model(S), model)
        assert (cache / f"{S}.safetensors").is_file()


def test_a_folder_with_one_weights_file(model, tmp_path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "notes.txt").write_text("not weights")
    write_safetensors(model, folder / "epoch_12.safetensors")
    assert_same_weights(load_model(S, weights=folder), model)


def test_a_folder_with_no_or_two_weights_files(model, tmp_path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsError) as err:
        load_model(S, weights=empty)
    assert str(empty) in str(err.value) and "no weights file" in str(err.value)

    two = tmp_path / "two"
    two.mkdir()
    write_safetensors(model, two / "a.safetensors")
    save_pdparams({"x": torch.zeros(1).numpy()}, two / "b.pdparams")
    with pytest.raises(WeightsError) as err:
        load_model(S, weights=two)
    assert str(two) in str(err.value) and "a.safetensors" in str(err.value) and "b.pdparams" in str(err.value)


def test_finetuned_class_list_travels_in_safetensors(tmp_path):
    """A model trained on 3 classes: the safetensors metadata carries them and load_model sizes the head."""
    from ppyoloe_sod.models import build_model, safetensors_metadata
    from ppyoloe_sod.weights.store import save_safetensors
    from ppyoloe_sod.zoo import get_spec

    spec = get_spec("PP-YOLOE_plus_SOD-S").with_classes(["tree", "roof", "pool"])
    net = build_model(spec)
    path = tmp_path / "tuned.safetensors"
    save_safetensors(net.state_dict(), path, safetensors_metadata(spec))
    model = load_model("PP-YOLOE_plus_SOD-S", path)
    assert model.spec.classes == ("tree", "roof", "pool") and model.spec.num_classes == 3
    assert model.yolo_head.pred_cls[0].out_channels == 3
    # the same weights claimed to be 10-class are refused with the shape mismatch named
    bad = tmp_path / "bad.safetensors"
    meta = safetensors_metadata(get_spec("PP-YOLOE_plus_SOD-S"))
    save_safetensors(net.state_dict(), bad, meta)
    with pytest.raises(WeightsError, match="pred_cls"):
        load_model("PP-YOLOE_plus_SOD-S", bad)
    assert json.loads(meta["classes"])[0] == "pedestrian"


def test_a_trained_model_folder_whose_header_length_starts_with_0x80_loads(tmp_path) -> None:
    """About 1 in 32 files we write start with the byte 0x80 (the header length's low byte), depending on the
    class names; ``best_model/model.safetensors`` after training must load whatever they are."""
    from ppyoloe_sod.models import build_model
    from ppyoloe_sod.train.checkpoint import save_model_dir
    from ppyoloe_sod.zoo import get_spec

    folder = tmp_path / "best_model"
    net = build_model(get_spec(S).with_classes(["x"]))
    save_model_dir(folder, net.state_dict(), net.spec)
    weights = folder / "model.safetensors"
    (length,) = struct.unpack("<Q", weights.read_bytes()[:8])
    unpadded = len(weights.read_bytes()[8:8 + length].rstrip(b" "))
    name = "x" * (1 + (0x80 - unpadded) % 256)  # one more letter, one more header byte
    net = build_model(get_spec(S).with_classes([name]))
    save_model_dir(folder, net.state_dict(), net.spec)
    assert weights.read_bytes()[0] == 0x80
    loaded = load_model(S, folder)
    assert loaded.spec.classes == (name,)
    assert_same_weights(loaded, net)


@pytest.mark.parametrize("classes, num_classes, reason", [
    ("car, van", None, "not valid JSON"),
    ('{"car": 0}', None, "non-empty list of non-empty strings"),
    ('["car", ""]', None, "non-empty list of non-empty strings"),
    ('["car", 3]', None, "non-empty list of non-empty strings"),
    ("[]", None, "non-empty list of non-empty strings"),
    ("[" * 100_000, None, "not valid JSON"),
    ('["car", "van"]', "3", "num_classes='3' but lists 2 classes"),
], ids=["not-json", "dict", "empty-name", "number", "empty-list", "deep", "count"])
def test_malformed_class_metadata_is_a_weights_error(tmp_path, classes, num_classes, reason) -> None:
    from ppyoloe_sod.weights.store import save_safetensors

    meta = {"model_name": S, "classes": classes, **({"num_classes": num_classes} if num_classes else {})}
    path = tmp_path / "tuned.safetensors"
    save_safetensors({"w": torch.ones(1)}, path, meta)
    with pytest.raises(WeightsError) as err:
        load_model(S, path)
    assert str(path) in str(err.value) and reason in str(err.value)
