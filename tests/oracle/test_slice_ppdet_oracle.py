"""Our ``ppdet`` slicing preset against PaddleDetection 2.6.0's own code, on the same inputs: the slices its
``ImageFolder.set_slice_images`` makes (ppdet slices with SAHI), the merge of ``Trainer.slice_predict`` (ppdet's
numpy ``multiclass_nms``: +1 pixel areas, ``>=``), and slice_predict's loop re-run with ppdet's pieces around a
scripted detector.

Boxes that overlap never tie in score here: ppdet orders boxes with numpy's unstable argsort, whose order of equal
scores depends on the CPU's sort kernel (ties between disjoint boxes cannot change what NMS keeps). Everything
else is compared exactly, in ppdet's output order.
"""
from __future__ import annotations

import itertools
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from ppdet.data.source.dataset import ImageFolder
from ppdet.modeling.post_process import multiclass_nms

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "infer"))
from slice_synth import ADVERSARIAL, adversarial_rows, blob_image, cluster_rows, scripted_detect  # noqa: E402

from ppyoloe_sod.infer.merge import ppdet_merge  # noqa: E402
from ppyoloe_sod.infer.slicing import SliceConfig, slice_grid, sliced_detect  # noqa: E402

pytestmark = pytest.mark.oracle
NUM_CLASSES = 3


def ppdet_slices(tmp_path, image: np.ndarray, size: tuple[int, int], overlap: tuple[float, float]) -> list[dict]:
    """The sub-image records ppdet's --slice_infer reads (image, st_pix, h, w), for an image saved losslessly."""
    path = tmp_path / "image.png"
    assert cv2.imwrite(str(path), image)
    dataset = ImageFolder()
    dataset.set_slice_images([str(path)], list(size), list(overlap))
    return dataset.roidbs


def ppdet_reference(rows: np.ndarray, metric: str, threshold: float) -> np.ndarray:
    return np.concatenate(multiclass_nms(rows, NUM_CLASSES, threshold, metric))


def assert_no_overlapping_ties(rows: np.ndarray) -> None:
    """Rows of one class with equal scores must be disjoint even with ppdet's +1 pixel: then no order of them
    changes ppdet's result."""
    _, group, counts = np.unique(rows[:, :2], axis=0, return_inverse=True, return_counts=True)
    for tie in np.flatnonzero(counts > 1):
        for a, b in itertools.combinations(rows[group.ravel() == tie], 2):
            inter_w = min(a[4], b[4]) - max(a[2], b[2]) + 1
            inter_h = min(a[5], b[5]) - max(a[3], b[3]) + 1
            assert inter_w <= 0 or inter_h <= 0, f"overlapping boxes with tied scores: {a}, {b}"


def assert_same_nms(rows: np.ndarray, metric: str, threshold: float) -> None:
    ours = ppdet_merge(torch.from_numpy(rows), "nms", metric, threshold)
    np.testing.assert_array_equal(ours.numpy().astype(np.float64), ppdet_reference(rows, metric, threshold),
                                  err_msg=f"{metric} thr={threshold}")


@pytest.mark.parametrize("image_hw", [(1000, 1500), (640, 640), (300, 900), (1081, 1921), (641, 2000)])
def test_grid_equals_ppdet_set_slice_images(tmp_path, image_hw):
    image = np.zeros((*image_hw, 3), np.uint8)
    for cfg in (SliceConfig(preset="ppdet"), SliceConfig(preset="ppdet", size=(512, 384), overlap=(0.2, 0.3))):
        records = ppdet_slices(tmp_path, image, cfg.size, cfg.overlap)
        theirs = [(int(r["st_pix"][0]), int(r["st_pix"][1]), int(r["st_pix"][0]) + r["w"],
                   int(r["st_pix"][1]) + r["h"]) for r in records]
        assert slice_grid(*image_hw, cfg) == theirs
        assert [r["is_last"] for r in records] == [0] * (len(records) - 1) + [1]


@pytest.mark.parametrize("metric", ["ios", "iou"])
def test_nms_equals_ppdet_multiclass_nms_on_random_clusters(metric):
    for seed, threshold in itertools.product(range(10), (0.6, 0.3, 0.05)):
        assert_same_nms(cluster_rows(seed, distinct_scores=True), metric, threshold)


@pytest.mark.parametrize("case", sorted(ADVERSARIAL))
def test_nms_equals_ppdet_multiclass_nms_on_adversarial_boxes(case):
    rows = adversarial_rows(case)
    rows[:, 1] = np.arange(len(rows), 0, -1) / np.float32(8)  # distinct scores (see the module docstring)
    rows[:, 0] = np.minimum(rows[:, 0], NUM_CLASSES - 1)
    for metric, threshold in itertools.product(("ios", "iou"), (0.6, 0.5, 1 / 3, 0.05, 1.0)):
        assert_same_nms(rows, metric, threshold)


def test_plus_one_areas_make_touching_boxes_overlap():
    """ppdet's +1 convention: boxes sharing an edge overlap by one pixel column (IoS 11/121), so a low threshold
    suppresses the weaker one; SAHI's areas see no overlap."""
    touching = torch.from_numpy(adversarial_rows("touching")[:2])
    assert len(ppdet_merge(touching, "nms", "ios", 0.05)) == 1
    assert len(ppdet_merge(touching, "nms", "ios", 0.1)) == 2


@pytest.mark.parametrize("combine", ["nms", "concat"])
def test_sliced_detect_equals_ppdet_slice_predict(tmp_path, combine):
    """slice_predict's loop with ppdet's own slicing, shift (float32 ``bbox[:, 2:6] + st_pix``) and merge."""
    image = blob_image(700, 1000, seed=5)
    cfg = SliceConfig(preset="ppdet", merge=combine, batch_size=4)
    per_slice = []
    for record in ppdet_slices(tmp_path, image, cfg.size, cfg.overlap):
        bbox = scripted_detect(record["image"])
        bbox[:, 2:4] = bbox[:, 2:4] + record["st_pix"]
        bbox[:, 4:6] = bbox[:, 4:6] + record["st_pix"]
        per_slice.append(bbox)
    rows = np.concatenate(per_slice)
    assert_no_overlapping_ties(rows)
    expected = rows if combine == "concat" else ppdet_reference(rows, cfg.match_metric, cfg.match_threshold)
    ours = sliced_detect(lambda images: [scripted_detect(im) for im in images], image, cfg)
    assert len(expected) > 100
    np.testing.assert_array_equal(ours, expected.astype(np.float32))
