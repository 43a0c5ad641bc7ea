"""Sliced inference through ``predict(..., slice=...)`` and ``-o Predict.slice...``: same result form as unsliced,
slice detections thresholded before merging, warnings instead of silent switches, errors naming the key.
(The merge itself: test_slicing.py, test_slice_merge_parity.py; SAHI end to end: test_sahi_wrapper.py.)"""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from ppyoloe_sod.errors import ConfigError
from ppyoloe_sod.infer import predictor as predictor_module
from ppyoloe_sod.infer.slicing import PRESETS, SliceConfig, slice_grid
from infer_synth import scene

STRONG = [0, 0.9, 10, 10, 30, 30]  # in each crop's pixels
WEAK_BIGGER = [0, 0.3, 10, 10, 60, 60]  # contains STRONG (IoS 1, IoU 0.16): greedynmm would grow STRONG into it
IMAGE = np.zeros((200, 300, 3), np.uint8)
CFG = dict(size=100, overlap=0.2, standard_pred=False)


@pytest.fixture()
def two_box_predictor(blind_predictor):
    """Every image (slice) gets STRONG and WEAK_BIGGER in its own pixels."""
    blind_predictor.detect_batch = lambda images: [np.array([STRONG, WEAK_BIGGER], np.float32) for _ in images]
    return blind_predictor


def strong_boxes_of_each_slice(image_h: int, image_w: int, cfg: SliceConfig) -> list[list[float]]:
    return sorted([x + STRONG[2], y + STRONG[3], x + STRONG[4], y + STRONG[5]]
                  for x, y, _, _ in slice_grid(image_h, image_w, cfg))


def coordinates(result) -> list[list[float]]:
    return sorted(b["coordinate"] for b in result.boxes)


def test_slice_detections_at_or_below_the_threshold_are_dropped_before_merging(two_box_predictor):
    """As SAHI's model filters by its confidence threshold before merging: the weak box never grows the strong
    one (merged first and thresholded after, each strong box would come out as the weak box's outline)."""
    [res] = two_box_predictor.predict(IMAGE, threshold=0.5, slice=CFG)
    assert coordinates(res) == strong_boxes_of_each_slice(200, 300, SliceConfig(**CFG))
    assert {b["score"] for b in res.boxes} == {float(np.float32(0.9))}


def test_a_low_threshold_warns_and_keeps_the_merge_asked_for(two_box_predictor, caplog):
    with caplog.at_level(logging.WARNING):
        [res] = two_box_predictor.predict(IMAGE, threshold=0.05, slice=CFG)
    assert "slice merge 'greedynmm' with a score threshold of 0.05 (under 0.1)" in caplog.text
    assert "Kept as asked" in caplog.text
    grid = slice_grid(200, 300, SliceConfig(**CFG))
    grown = sorted([x + 10, y + 10, min(x + 60, 300), min(y + 60, 200)] for x, y, _, _ in grid)
    assert coordinates(res) == grown  # greedynmm, not SAHI's switch to nms/iou (which would keep both boxes)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        [res] = two_box_predictor.predict(IMAGE, threshold={0: 0.05}, slice=dict(CFG, merge="nms", match_metric="iou"))
    assert caplog.text == "" and len(res.boxes) == 2 * len(grown)


def test_dict_and_dataclass_give_the_same_results_in_the_unsliced_form(small_predictor):
    image = scene(420, 700, seed=5)
    as_dict = list(small_predictor.predict(image, slice={"size": 320, "overlap": 0.25}, threshold=0.3))
    as_config = list(small_predictor.predict(image, slice=SliceConfig(size=320, overlap=0.25), threshold=0.3))
    [plain] = small_predictor.predict(image, threshold=0.3)
    assert as_dict[0].boxes == as_config[0].boxes
    assert len(as_config[0].boxes) > 0
    assert set(as_config[0]) == set(plain) and as_config[0].json.keys() == plain.json.keys()
    for box in as_config[0].boxes:
        assert box.keys() == {"cls_id", "label", "score", "coordinate"}
        x1, y1, x2, y2 = box["coordinate"]
        assert 0 <= x1 < x2 <= 700 and 0 <= y1 < y2 <= 420 and box["score"] > 0.3
        assert box["label"] == small_predictor.labels[box["cls_id"]]


def test_no_detection_in_any_slice_is_an_empty_result(blind_predictor):
    [res] = blind_predictor.predict(np.zeros((1500, 1700, 3), np.uint8), slice={"preset": "ppdet"})
    assert res.boxes == [] and res.json["res"]["boxes"] == []


@pytest.mark.parametrize("options,words", [
    ({"size": 0}, ["slice size", "positive integer"]),
    ({"overlap": 1.0}, ["slice overlap", "[0, 1)"]),
    ({"overlap": -0.1}, ["slice overlap", "[0, 1)"]),
    ({"merge": "wbf"}, ["slice merge 'wbf'", "greedynmm, nmm, nms, concat"]),
    ({"slice_size": 640}, ["'slice_size'", "known: preset, size, overlap"]),
    ("640", ["slice must be a SliceConfig, a dict"]),
])
def test_bad_slice_options_name_the_key_and_the_allowed_values(blind_predictor, options, words):
    with pytest.raises(ConfigError) as err:
        list(blind_predictor.predict(IMAGE, slice=options))
    for word in words:
        assert word in str(err.value)


def test_an_image_smaller_than_a_slice_is_predicted_whole_and_said_once(two_box_predictor, caplog):
    with caplog.at_level(logging.WARNING):
        results = list(two_box_predictor.predict([IMAGE, IMAGE], threshold=0.5, slice={"size": 640}))
    assert [coordinates(r) for r in results] == [[STRONG[2:]]] * 2
    assert caplog.text.count("image 300x200 is smaller than the slice size 640x640") == 1


def test_a_progress_bar_over_the_slices_of_a_big_image(blind_predictor, capsys):
    list(blind_predictor.predict(np.zeros((3000, 4000, 3), np.uint8), slice={}))  # 48 slices of 640
    assert "slices:" in capsys.readouterr().err
    list(blind_predictor.predict(np.zeros((1080, 1920, 3), np.uint8), slice={}))  # 8 slices
    assert "slices:" not in capsys.readouterr().err


@pytest.fixture()
def cli_predict(two_box_predictor, monkeypatch, tmp_path):
    """run_predict with create_model replaced by the two-box predictor; returns the boxes of the JSON written."""
    import cv2

    from ppyoloe_sod.config import load_config
    from ppyoloe_sod.errors import interface

    monkeypatch.setattr(predictor_module, "create_model", lambda name, **kwargs: two_box_predictor)
    cv2.imwrite(str(tmp_path / "big.png"), IMAGE)

    def run(*overrides):
        out = tmp_path / "out"
        with interface("cli"):
            predictor_module.run_predict(load_config(None, [
                "Global.mode=predict", f"Predict.input={tmp_path / 'big.png'}", f"Global.output={out}",
                "Predict.threshold=0.5", "Predict.print=none", *overrides]))
        return json.loads((out / "big_res.json").read_text())["boxes"]

    return run


def test_cli_slice_keys_reach_predict(cli_predict, two_box_predictor):
    boxes = cli_predict("Predict.slice.enable=True", "Predict.slice.size=100", "Predict.slice.overlap=0.2",
                        "Predict.slice.standard_pred=False", "Predict.slice.batch_size=2")
    [expected] = two_box_predictor.predict(IMAGE, threshold=0.5, slice=CFG)
    assert boxes == expected.json["res"]["boxes"] and len(boxes) == len(slice_grid(200, 300, SliceConfig(**CFG)))
    assert len(cli_predict("Predict.slice.size=100")) == 1  # not enabled: one unsliced pass


@pytest.mark.parametrize("override,message", [
    ("Predict.slice.size=0", "Predict.slice: slice size must be a positive integer"),
    ("Predict.slice.overlap=1", r"Predict.slice: slice overlap must be a ratio in \[0, 1\)"),
    ("Predict.slice.merge=wbf", "Predict.slice: slice merge 'wbf' is not known.*greedynmm, nmm, nms, concat"),
    ("Predict.slice.preset=yolo", "Predict.slice: slice preset 'yolo' is not known; use one of sahi, ppdet"),
])
def test_cli_bad_slice_values_name_the_key(cli_predict, override, message):
    with pytest.raises(ConfigError, match=message):
        cli_predict("Predict.slice.enable=True", override)


def test_config_help_states_the_presets_defaults():
    """The help of each Predict.slice key quotes the presets' values: they must not drift apart."""
    import dataclasses

    from ppyoloe_sod.config import SliceSection

    helps = {f.name: f.metadata["help"] for f in dataclasses.fields(SliceSection)}
    for name in ("overlap", "merge", "match_metric", "match_threshold", "standard_pred", "class_agnostic", "size"):
        for preset, values in PRESETS.items():
            value = values[name]
            text = str(value[0]) if isinstance(value, tuple) else str(value).lower()
            assert text in helps[name], (name, preset, text)
    assert SliceSection().batch_size == SliceConfig().batch_size


@pytest.mark.parametrize("device,batch", [("cpu", 2), ("cuda", 8)])
def test_predict_slices_in_batches_the_backends_device_suits(blind_predictor, device, batch):
    """predict passes where its network runs: CPUs get the small default batch, GPUs the big one."""
    from types import SimpleNamespace

    calls = []
    blind_predictor.backend = SimpleNamespace(device=device)
    blind_predictor.detect_batch = lambda images: calls.append(len(images)) or [np.zeros((0, 6), np.float32)
                                                                                for _ in images]
    next(iter(blind_predictor.predict(np.zeros((300, 500, 3), np.uint8), slice=dict(size=100, overlap=0.0))))
    assert calls[0] == batch and sum(calls) == 15 + 1
