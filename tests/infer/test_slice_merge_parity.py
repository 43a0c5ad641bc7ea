"""Sliced inference against the installed SAHI (0.12.8, the dev extra), on the same inputs: the slice grid
(``sahi.slicing.get_slice_bboxes``), the merges (SAHI's NMS / GREEDYNMM / NMM postprocess classes) and the whole
pipeline (``sahi.predict.get_sliced_prediction`` driving a scripted model).

Results must be equal exactly and in SAHI's order: our merges reproduce SAHI's float32 / float64 arithmetic and
its tie-breaks, and the inputs (quarter-pixel boxes, 1/40 scores) put many overlaps exactly on the thresholds.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from sahi.models.base import DetectionModel
from sahi.postprocess.combine import GreedyNMMPostprocess, NMMPostprocess, NMSPostprocess
from sahi.predict import get_sliced_prediction
from sahi.prediction import ObjectPrediction
from sahi.slicing import get_slice_bboxes
from sahi.utils.compatibility import fix_full_shape_list, fix_shift_amount_list

from ppyoloe_sod.infer.merge import sahi_merge
from ppyoloe_sod.infer.slicing import SliceConfig, slice_grid, sliced_detect
from slice_synth import ADVERSARIAL, adversarial_rows, blob_image, cluster_rows, scripted_detect

POSTPROCESS = {"nms": NMSPostprocess, "greedynmm": GreedyNMMPostprocess, "nmm": NMMPostprocess}
SAHI_NAMES = {"nms": "NMS", "greedynmm": "GREEDYNMM", "nmm": "NMM"}


pytestmark = pytest.mark.usefixtures("sahi_numpy_backend")


def to_sahi(rows: np.ndarray) -> list[ObjectPrediction]:
    return [ObjectPrediction(bbox=[float(v) for v in r[2:]], category_id=int(r[0]), score=float(r[1])) for r in rows]


def from_sahi(predictions: list[ObjectPrediction]) -> np.ndarray:
    rows = [[p.category.id, p.score.value, *p.bbox.to_xyxy()] for p in predictions]
    return np.array(rows, dtype=np.float64).reshape(-1, 6)


def sahi_reference(rows: np.ndarray, method: str, metric: str, threshold: float, agnostic: bool) -> np.ndarray:
    post = POSTPROCESS[method](match_threshold=threshold, match_metric=metric.upper(), class_agnostic=agnostic)
    return from_sahi(post(to_sahi(rows)))


def assert_same_merge(rows: np.ndarray, method: str, metric: str, threshold: float, agnostic: bool) -> None:
    ours = sahi_merge(torch.from_numpy(rows), method, metric, threshold, agnostic)
    assert ours.dtype == torch.float32
    expected = sahi_reference(rows, method, metric, threshold, agnostic)
    np.testing.assert_array_equal(ours.numpy().astype(np.float64), expected,
                                  err_msg=f"{method} {metric} thr={threshold} agnostic={agnostic}")


IMAGE_SIDES = [1, 37, 255, 256, 257, 511, 640, 641, 1000, 1279, 1920]
SLICE_SIDES = [64, 256, 320, 511, 640]
OVERLAPS = [0.0, 0.1, 0.2, 0.25, 0.29, 0.5, 0.7, 0.9, 0.99]  # 0.29 * 100 = 28.999...: int() truncates


def test_grid_equals_sahi_get_slice_bboxes():
    cases = 0
    for (ih, iw), (sh, sw), (oh, ow) in itertools.product(
            itertools.product(IMAGE_SIDES, IMAGE_SIDES[::3]), [(640, 640), (256, 320), (511, 64), (70, 50)],
            [(0.2, 0.2), (0.29, 0.0), (0.9, 0.25)]):
        cfg = SliceConfig(size=(sh, sw), overlap=(oh, ow))
        assert [list(b) for b in slice_grid(ih, iw, cfg)] == get_slice_bboxes(ih, iw, sh, sw, False, oh, ow), \
            (ih, iw, sh, sw, oh, ow)
        cases += 1
    rng = np.random.default_rng(0)
    for _ in range(300):
        ih, iw = (int(v) for v in rng.integers(1, 2500, 2))
        sh, sw = int(rng.choice(SLICE_SIDES)), int(rng.integers(40, 900))
        oh, ow = float(rng.choice(OVERLAPS)), float(rng.uniform(0, 0.99))
        cfg = SliceConfig(size=(sh, sw), overlap=(oh, ow))
        assert [list(b) for b in slice_grid(ih, iw, cfg)] == get_slice_bboxes(ih, iw, sh, sw, False, oh, ow), \
            (ih, iw, sh, sw, oh, ow)
        cases += 1
    assert cases > 500


@pytest.mark.parametrize("method", ["nms", "greedynmm", "nmm"])
@pytest.mark.parametrize("metric", ["ios", "iou"])
def test_merges_equal_sahi_on_random_clusters(method, metric):
    for seed in range(12):
        rows = cluster_rows(seed)
        for agnostic, threshold in itertools.product((False, True), (0.5, 0.3, 0.8)):
            assert_same_merge(rows, method, metric, threshold, agnostic)


@pytest.mark.parametrize("case", sorted(ADVERSARIAL))
def test_merges_equal_sahi_on_adversarial_boxes(case):
    rows = adversarial_rows(case)
    for method, metric, agnostic, threshold in itertools.product(
            ("nms", "greedynmm", "nmm"), ("ios", "iou"), (False, True), (0.5, 1 / 3, 0.25, 1.0)):
        assert_same_merge(rows, method, metric, threshold, agnostic)


def test_merge_rules_on_hand_made_cases():
    """The rules themselves, readable without SAHI: NMM is transitive and GREEDYNMM is not; a claimed box that
    no longer matches the grown box is dropped; class-agnostic ties take the absorbed box's class."""
    chain = torch.from_numpy(adversarial_rows("chain"))
    assert sahi_merge(chain, "nmm", "ios", 0.5)[:, 2:].tolist() == [[0, 0, 18, 10], [15, 0, 25, 10]]
    assert sahi_merge(chain, "greedynmm", "ios", 0.5)[:, 2:].tolist() == [
        [0, 0, 14, 10], [8, 0, 18, 10], [15, 0, 25, 10]]
    regrown = sahi_merge(torch.from_numpy(adversarial_rows("regrown")), "greedynmm", "ios", 0.5)
    assert regrown[:, 2:].tolist() == [[0, 0, 10, 40]]  # the third box matched the keeper, then was dropped
    identical = sahi_merge(torch.from_numpy(adversarial_rows("identical")), "greedynmm", "ios", 0.5,
                           class_agnostic=True)
    assert identical[:, 0].tolist() == [2.0]  # the last of the tied boxes claimed gives its class


def test_merges_equal_sahi_beyond_its_sparse_threshold():
    """From 2000 boxes per class SAHI switches to its sparse (STRtree) code path: still the same result."""
    rows = cluster_rows(1, objects=600, classes=1)
    rows[:, 2:] *= 4
    assert len(rows) > 2000
    for method in ("nms", "greedynmm", "nmm"):
        assert_same_merge(rows, method, "ios", 0.5, False)


class ScriptedModel(DetectionModel):
    """A SAHI detection model whose 'network' is ``scripted_detect``; boxes go to SAHI as its model wrappers pass
    them (clipped to [0, full image size] in slice pixels, empty ones dropped)."""

    def load_model(self) -> None:
        self.model = scripted_detect

    def perform_inference(self, image: np.ndarray) -> None:
        self._original_predictions = [scripted_detect(image)]

    def _create_object_prediction_list_from_original_predictions(self, shift_amount_list=[[0, 0]],
                                                                  full_shape_list=None) -> None:
        shift = fix_shift_amount_list(shift_amount_list)[0]
        height, width = fix_full_shape_list(full_shape_list)[0]
        predictions = []
        for row in self._original_predictions[0]:
            x1, y1, x2, y2 = (max(0.0, float(v)) for v in row[2:])
            x1, x2, y1, y2 = min(width, x1), min(width, x2), min(height, y1), min(height, y2)
            if x1 < x2 and y1 < y2:
                predictions.append(ObjectPrediction(bbox=[x1, y1, x2, y2], category_id=int(row[0]),
                                                    score=float(row[1]), shift_amount=shift,
                                                    full_shape=[height, width]))
        self._object_prediction_list_per_image = [predictions]


@pytest.mark.parametrize("method,metric,standard_pred,agnostic", [
    ("greedynmm", "ios", True, False), ("nmm", "ios", True, True), ("nms", "iou", True, False),
    ("greedynmm", "iou", False, True), ("nms", "ios", False, False)])
def test_sliced_detect_equals_sahi_get_sliced_prediction(method, metric, standard_pred, agnostic):
    image = blob_image(300, 410, seed=3)
    model = ScriptedModel(confidence_threshold=0.3, load_at_init=True)
    sahi_result = get_sliced_prediction(
        image, model, slice_height=128, slice_width=160, overlap_height_ratio=0.2, overlap_width_ratio=0.25,
        perform_standard_pred=standard_pred, postprocess_type=SAHI_NAMES[method],
        postprocess_match_metric=metric.upper(), postprocess_match_threshold=0.5, postprocess_class_agnostic=agnostic, verbose=0, force_postprocess_type=True)
    expected = from_sahi(sahi_result.object_prediction_list)
    cfg = SliceConfig(size=(128, 160), overlap=(0.2, 0.25), merge=method, match_metric=metric,
                      standard_pred=standard_pred, class_agnostic=agnostic, batch_size=3)
    ours = sliced_detect(lambda images: [scripted_detect(im) for im in images], image, cfg)
    assert len(expected) > 20
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, expected.astype(np.float32))
