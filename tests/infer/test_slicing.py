"""Sliced inference (ppyoloe_sod/infer/slicing.py): the config and its errors, the grid, and ``sliced_detect``'s
batching, shifting, clipping and full-image pass with scripted detect functions and with a real predictor.
(Parity with SAHI and ppdet: test_slice_merge_parity.py and tests/oracle/test_slice_ppdet_oracle.py.)"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from ppyoloe_sod.errors import ConfigError
from ppyoloe_sod.infer.slicing import SliceConfig, merge_detections, slice_grid, sliced_detect
from infer_synth import scene

LOCAL_BOX = [10.0, 20.0, 30.0, 40.0]


def test_presets_fill_each_tools_defaults():
    sahi = SliceConfig()
    assert (sahi.size, sahi.overlap, sahi.merge, sahi.match_metric, sahi.match_threshold, sahi.class_agnostic,
            sahi.standard_pred, sahi.batch_size) == ((640, 640), (0.2, 0.2), "greedynmm", "ios", 0.5, False, True, None)
    ppdet = SliceConfig(preset="ppdet")
    assert (ppdet.size, ppdet.overlap, ppdet.merge, ppdet.match_metric, ppdet.match_threshold,
            ppdet.standard_pred) == ((640, 640), (0.25, 0.25), "nms", "ios", 0.6, False)
    custom = SliceConfig(preset="PPDET", size=(512, 320), overlap=0.1, match_threshold=1, standard_pred=True)
    assert (custom.preset, custom.size, custom.overlap, custom.match_threshold, custom.standard_pred) == (
        "ppdet", (512, 320), (0.1, 0.1), 1.0, True)


def test_merge_and_metric_names_are_case_insensitive():
    cfg = SliceConfig(merge="GREEDY_NMM", match_metric="IOU", size=np.int64(256))
    assert (cfg.merge, cfg.match_metric, cfg.size) == ("greedynmm", "iou", (256, 256))


@pytest.mark.parametrize("kwargs,words", [
    (dict(overlap=1.0), ["overlap", "[0, 1)", "1.0"]),
    (dict(overlap=(0.2, -0.1)), ["overlap", "[0, 1)"]),
    (dict(size=0), ["size", "positive"]),
    (dict(size=(640,)), ["size", "(height, width)"]),
    (dict(size=640.0), ["size", "positive integer"]),
    (dict(size=True), ["size"]),
    (dict(merge="wbf"), ["merge", "'wbf'", "greedynmm, nmm, nms, concat"]),
    (dict(preset="ppdet", merge="nmm"), ["merge", "'ppdet'", "nms, concat"]),
    (dict(match_metric="giou"), ["match_metric", "ios, iou"]),
    (dict(match_threshold=0), ["match_threshold", "(0, 1]"]),
    (dict(match_threshold=1.5), ["match_threshold"]),
    (dict(class_agnostic="yes"), ["class_agnostic", "true or false"]),
    (dict(batch_size=0), ["batch_size", "positive"]),
    (dict(preset="yolo"), ["preset", "sahi, ppdet"]),
])
def test_bad_options_are_config_errors_naming_the_key_and_the_choices(kwargs, words):
    with pytest.raises(ConfigError) as err:
        SliceConfig(**kwargs)
    for word in words:
        assert word in str(err.value)


def test_from_mapping_refuses_unknown_keys_and_config_is_frozen():
    assert SliceConfig.from_mapping({"preset": "ppdet", "size": [320, 480]}).size == (320, 480)
    with pytest.raises(ConfigError, match="'slice_size'.*known: preset, size"):
        SliceConfig.from_mapping({"slice_size": 320})
    with pytest.raises(dataclasses.FrozenInstanceError):
        SliceConfig().size = (1, 1)


def test_grid_rows_then_columns_with_full_size_edge_slices():
    grid = slice_grid(1000, 1500, SliceConfig(preset="ppdet"))
    assert grid == [(x, y, x + 640, y + 640) for y in (0, 360) for x in (0, 480, 860)]


def test_image_smaller_than_a_slice_is_one_slice():
    assert slice_grid(300, 200, SliceConfig()) == [(0, 0, 200, 300)]
    assert slice_grid(300, 2000, SliceConfig(size=640, overlap=0)) == [
        (0, 0, 640, 300), (640, 0, 1280, 300), (1280, 0, 1920, 300), (1360, 0, 2000, 300)]


def test_grid_refuses_an_empty_image():
    with pytest.raises(ValueError, match="positive"):
        slice_grid(0, 100, SliceConfig())


@pytest.mark.parametrize("preset,merge", [("sahi", "greedynmm"), ("sahi", "nmm"), ("sahi", "nms"),
                                          ("sahi", "concat"), ("ppdet", "nms"), ("ppdet", "concat")])
def test_merge_keeps_the_container_and_empty_stays_empty(preset, merge):
    cfg = SliceConfig(preset=preset, merge=merge)
    empty = merge_detections(np.zeros((0, 6), np.float32), cfg)
    assert isinstance(empty, np.ndarray) and empty.shape == (0, 6)
    rows = np.array([[1, 0.9, 0, 0, 10, 10], [1, 0.8, 1, 1, 10, 10], [0, 0.7, 1, 1, 10, 10]], np.float32)
    out = merge_detections(torch.from_numpy(rows), cfg)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert len(out) == (3 if merge == "concat" else 2)  # the two class-1 boxes match; class 0 stays apart
    with pytest.raises(ValueError, match=r"\[N, 6\]"):
        merge_detections(np.zeros((3, 5), np.float32), cfg)


class ScriptedDetect:
    """A detect_batch that records its calls and answers per image with ``rows_for(image_index)``."""

    def __init__(self, rows_for=lambda i: [[0, 0.5, *LOCAL_BOX]], as_tensor: bool = False):
        self.calls: list[list[tuple[int, ...]]] = []
        self.rows_for = rows_for
        self.as_tensor = as_tensor
        self.count = 0

    def __call__(self, images):
        self.calls.append([im.shape for im in images])
        out = []
        for im in images:
            assert im.flags["C_CONTIGUOUS"] and im.dtype == np.uint8
            rows = np.array(self.rows_for(self.count), np.float32).reshape(-1, 6)
            out.append(torch.from_numpy(rows) if self.as_tensor else rows)
            self.count += 1
        return out


def test_slices_go_through_in_batches_then_the_full_image():
    image = np.zeros((300, 410, 3), np.uint8)
    cfg = SliceConfig(size=(128, 160), overlap=(0.2, 0.25), batch_size=4, merge="concat")
    grid = slice_grid(300, 410, cfg)
    detect = ScriptedDetect(rows_for=lambda i: [[0, 0.5 + i / 64, *LOCAL_BOX]])
    out = sliced_detect(detect, image, cfg)
    shapes = [s for call in detect.calls for s in call]
    assert [len(c) for c in detect.calls] == [4, 4, 4, 1] and len(grid) == 12
    assert shapes == [(y2 - y1, x2 - x1, 3) for x1, y1, x2, y2 in grid] + [(300, 410, 3)]
    expected = [[0, 0.5 + i / 64, x1 + 10, y1 + 20, x1 + 30, y1 + 40] for i, (x1, y1, _, _) in
                enumerate(grid + [(0, 0, 410, 300)])]
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.array(expected, np.float32))


@pytest.mark.parametrize("device,batches", [("cpu", [2, 2, 2, 2, 2, 2, 1]), (torch.device("cuda", 0), [8, 5])])
def test_default_batch_size_follows_the_device(device, batches):
    """batch_size None: 2 slices per forward on a CPU (bigger batches of slices run slower per slice there, see
    CPU_BATCH_SIZE), 8 elsewhere; an explicit size wins on any device. The merged rows do not depend on it."""
    image = np.zeros((300, 410, 3), np.uint8)
    results = []
    for cfg, expected in ((SliceConfig(size=(128, 160), overlap=(0.2, 0.25)), batches),
                          (SliceConfig(size=(128, 160), overlap=(0.2, 0.25), batch_size=5), [5, 5, 3])):
        detect = ScriptedDetect(rows_for=lambda i: [[0, 0.5 + i / 64, *LOCAL_BOX]])
        results.append(sliced_detect(detect, image, cfg, device=device))
        assert [len(c) for c in detect.calls] == expected
    np.testing.assert_array_equal(results[0], results[1])


def test_one_slice_images_skip_the_full_image_pass():
    detect = ScriptedDetect()
    out = sliced_detect(detect, np.zeros((100, 120, 3), np.uint8), SliceConfig())
    assert detect.calls == [[(100, 120, 3)]]
    np.testing.assert_array_equal(out, np.array([[0, 0.5, *LOCAL_BOX]], np.float32))


def test_sahi_clips_slice_boxes_and_drops_empty_ones_ppdet_shifts_them_as_they_are():
    rows = [[0, 0.75, -5, -6, 8, 9], [1, 0.5, -10, 0, -2, 5], [2, 0.25, 100, 0, 700, 30]]
    image = np.zeros((200, 600, 3), np.uint8)
    sahi = sliced_detect(ScriptedDetect(lambda i: rows), image,
                         SliceConfig(size=(200, 400), overlap=0, merge="concat", standard_pred=False))
    # slices at x 0 and 200; SAHI clips in slice pixels to [0, image size], so x2 = 600 + 200 past the image
    assert sahi.tolist() == [[0, 0.75, 0, 0, 8, 9], [2, 0.25, 100, 0, 600, 30],
                             [0, 0.75, 200, 0, 208, 9], [2, 0.25, 300, 0, 800, 30]]
    ppdet = sliced_detect(ScriptedDetect(lambda i: rows), image,
                          SliceConfig(preset="ppdet", size=(200, 400), overlap=0, merge="concat"))
    assert ppdet[:, 2:].tolist() == [r[2:] for r in rows] + [[r[2] + 200, r[3], r[4] + 200, r[5]] for r in rows]


def test_no_detection_anywhere_is_an_empty_result():
    out = sliced_detect(ScriptedDetect(lambda i: []), np.zeros((700, 900, 3), np.uint8), SliceConfig())
    assert isinstance(out, np.ndarray) and out.shape == (0, 6) and out.dtype == np.float32


def test_tensor_detections_give_a_tensor_and_bad_answers_are_errors():
    out = sliced_detect(ScriptedDetect(as_tensor=True), np.zeros((700, 900, 3), np.uint8), SliceConfig())
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and len(out) >= 1
    with pytest.raises(ValueError, match="returned 0 results for 5 images"):
        sliced_detect(lambda images: [], np.zeros((700, 900, 3), np.uint8), SliceConfig(batch_size=8))
    with pytest.raises(ValueError, match="HxWx3"):
        sliced_detect(ScriptedDetect(), np.zeros((10, 10), np.uint8), SliceConfig())


def test_real_predictor_plugs_in(small_predictor):
    """DetPredictor.detect_batch is a detect function as it is: it gets the crops (resizing them to the model's
    input size itself) and its rows are shifted into the image and merged."""
    image = scene(320, 560, seed=7)
    cfg = SliceConfig(size=320, overlap=0.2, batch_size=8)
    seen = []

    def detect(images):
        dets = small_predictor.detect_batch(images)
        seen.append((images, dets))
        return dets

    out = sliced_detect(detect, image, cfg)
    grid = slice_grid(320, 560, cfg) + [(0, 0, 560, 320)]
    assert len(seen) == 1 and len(grid) == 3
    rows = []
    for (x1, y1, x2, y2), crop, dets in zip(grid, *seen[0]):
        np.testing.assert_array_equal(crop, image[y1:y2, x1:x2])
        d = dets.astype(np.float64)
        d[:, 2:] = np.minimum(np.maximum(d[:, 2:], 0), [560, 320, 560, 320])
        d = d[(d[:, 2] < d[:, 4]) & (d[:, 3] < d[:, 5])]
        rows.append(d + [0, 0, x1, y1, x1, y1])
    expected = merge_detections(np.concatenate(rows), cfg).astype(np.float32)
    assert 0 < len(out) < sum(len(d) for d in seen[0][1])
    np.testing.assert_array_equal(out, expected)
