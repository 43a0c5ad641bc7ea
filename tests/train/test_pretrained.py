"""Partial-match pretrained start: a COCO-base-shaped .pdparams into SOD-S (and into a custom class count)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from ppyoloe_sod import build_model
from ppyoloe_sod.errors import WeightsError
from ppyoloe_sod import models
from ppyoloe_sod.models import load_weights, read_weights
from ppyoloe_sod.config import TrainConfig
from ppyoloe_sod.train.launch import train
from ppyoloe_sod.weights.convert import torch_to_paddle
from ppyoloe_sod.weights.pdparams import save_pdparams
from ppyoloe_sod.weights.store import save_safetensors
from ppyoloe_sod.zoo import get_spec

from train_synth import make_dataset, tiny_spec


@pytest.fixture(scope="module")
def coco_base_file(tmp_path_factory):
    """Our PP-YOLOE_plus-S (80 classes, reg 0..17, no transformer) with distinct weights, as Paddle writes it."""
    torch.manual_seed(11)
    coco = build_model("PP-YOLOE_plus-S")
    with torch.no_grad():
        for v in coco.state_dict().values():
            if v.is_floating_point():
                v.normal_(0.0, 0.05)
    path = tmp_path_factory.mktemp("w") / "ppyoloe_plus_crn_s_80e_coco.pdparams"
    save_pdparams(torch_to_paddle(coco.state_dict()), path)
    return path, {k: v.clone() for k, v in coco.state_dict().items()}


def _expected_loaded(model_state, file_state):
    """Independent of the matcher: same name and same shape (the files here have no prefixes)."""
    return {k for k, v in model_state.items()
            if k in file_state and tuple(file_state[k].shape) == tuple(v.shape) and not k.endswith("num_batches_tracked")}


@pytest.mark.parametrize("classes", [None, ("a", "b", "c")])
def test_coco_base_into_sod_s(coco_base_file, classes):
    path, coco_state = coco_base_file
    spec = get_spec("PP-YOLOE_plus_SOD-S")
    if classes:
        spec = spec.with_classes(classes)
    torch.manual_seed(0)
    model = build_model(spec)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_weights(model, path, strict=False)

    expected = _expected_loaded(init, coco_state)
    assert set(report.loaded) == expected
    assert report.total == 477  # SOD-S entries without num_batches_tracked (reference spec B.9)
    state = model.state_dict()
    for k in expected:
        torch.testing.assert_close(state[k], coco_state[k], rtol=0, atol=0)
    for k in init:
        if k not in expected:
            torch.testing.assert_close(state[k], init[k], rtol=0, atol=0)  # kept at init
    # What the reference keeps at init when starting SOD from the COCO base (spec A.4).
    assert any(k.startswith("neck.encoder.") for k in report.missing)
    n_cls = spec.num_classes
    assert report.mismatched["yolo_head.pred_cls.0.weight"] == ((80, 384, 3, 3), (n_cls, 384, 3, 3))
    assert report.mismatched["yolo_head.pred_reg.0.weight"][0][0] == 68
    assert "yolo_head.proj_conv.weight" in report.mismatched
    text = report.summary()
    assert f"loaded {len(expected)}/477 tensors" in text
    assert "neck.encoder.*" in text and "not in the file" in text
    assert f"yolo_head.pred_cls.* (6 tensors, 80->{n_cls} classes)" in text


def test_suffix_rule_and_safetensors_source(tmp_path):
    """A backbone-only file without the ``backbone.`` prefix loads by suffix, as ppdet's match_state_dict."""
    spec = tiny_spec()
    model = build_model(spec)
    backbone = {k[len("backbone."):]: torch.full_like(v, 0.5) for k, v in model.state_dict().items()
                if k.startswith("backbone.") and v.is_floating_point()}
    backbone["not.a.model.key"] = torch.zeros(3)
    save_safetensors(backbone, tmp_path / "bb.safetensors", {"format": "test"})
    report = load_weights(model, tmp_path / "bb.safetensors", strict=False)
    assert len(report.loaded) == len(backbone) - 1
    assert report.unused == ["not.a.model.key"]
    assert all(k.startswith("backbone.") for k in report.loaded)
    assert float(model.backbone.stem.conv1.conv.weight.detach().mean()) == 0.5


def test_model_name_source_fetches_the_published_file(coco_base_file, monkeypatch):
    path, _ = coco_base_file
    asked = []
    monkeypatch.setattr(models, "fetch_weights", lambda url, sha=None, official=False: asked.append(url) or path)
    weights = read_weights("PP-YOLOE_plus-S", get_spec("PP-YOLOE_plus_SOD-S"), strict=False)
    state, source = weights.state, str(weights.path)
    assert asked == [get_spec("PP-YOLOE_plus-S").weights_url] and source == str(path)
    assert state["yolo_head.pred_cls.0.weight"].shape == (80, 384, 3, 3)


def test_unrelated_or_missing_file_is_a_clear_error(tmp_path):
    model = build_model(tiny_spec())
    save_safetensors({"foo": torch.zeros(2)}, tmp_path / "x.safetensors", {"format": "test"})
    with pytest.raises(WeightsError, match="none of its 1 tensors fits"):
        load_weights(model, tmp_path / "x.safetensors", strict=False)
    with pytest.raises(WeightsError, match="not found"):
        load_weights(model, tmp_path / "missing.pdparams", strict=False)


def test_training_start_logs_the_summary(tmp_path):
    """Train.pretrain_weight_path goes through the partial load: an 80-class tiny file into a 2-class run."""
    torch.set_num_threads(1)
    make_dataset(tmp_path / "ds", n_train=2, n_val=0)
    spec = tiny_spec()
    other = dataclasses.replace(spec, arch=dataclasses.replace(spec.arch, num_classes=80))
    src = build_model(other)
    save_pdparams(torch_to_paddle(src.state_dict()), tmp_path / "base.pdparams")
    train(TrainConfig(epochs_iters=1, batch_size=2, num_workers=0, pretrain_weight_path=str(tmp_path / "base.pdparams")),
          tmp_path / "ds", output=tmp_path / "out", model=spec, progress=False)
    log = (tmp_path / "out" / "train.log").read_text()
    n = sum(1 for k in src.state_dict() if not k.endswith("num_batches_tracked"))
    assert f"loaded {n - 6}/{n} tensors" in log  # all but the 3 pred_cls weights + 3 biases
    assert "yolo_head.pred_cls.* (6 tensors, 80->2 classes)" in log


def test_one_loader_strict_or_partial(tmp_path):
    """``load_weights`` is the loader of both paths: strict refuses a file that does not cover the model (and
    changes nothing), partial takes what fits; a full file of the model loads strictly."""
    spec = tiny_spec()
    model = build_model(spec)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    backbone = {k: torch.full_like(v, 0.25) for k, v in model.state_dict().items() if k.startswith("backbone.")}
    save_safetensors(backbone, tmp_path / "bb.safetensors", {"format": "test"})
    with pytest.raises(WeightsError, match=r"(?s)bb.safetensors: .*missing \("):
        load_weights(model, tmp_path / "bb.safetensors", strict=True)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert len(load_weights(model, tmp_path / "bb.safetensors", strict=False).loaded) == sum(
        1 for k in backbone if not k.endswith("num_batches_tracked"))
    full = build_model(spec)
    save_safetensors(full.state_dict(), tmp_path / "full.safetensors", {"format": "test"})
    report = load_weights(model, tmp_path / "full.safetensors")
    assert len(report.loaded) == report.total
    assert all(torch.equal(v, full.state_dict()[k]) for k, v in model.state_dict().items())
