"""End to end against SAHI: ``predict(slice=preset "sahi")`` gives what ``sahi.predict.get_sliced_prediction``
gives when it drives our predictor through a small SAHI ``DetectionModel`` wrapper (below; it is also how to
plug this package into SAHI's own tools), once SAHI's merged boxes are clipped to the image as every predict
result is.

Both sides run the real (random-weight) network on the same crops. Equality is exact, with no tolerance, because
both run the same computation: SAHI's slices go through the wrapper in batches of the same slices as ours
(``batch_size`` slices, the image chosen so that they divide evenly, and the full-image pass alone in both), and
a network's float results can depend on the batch they are computed in (oneDNN picks kernels by shape).
"""
from __future__ import annotations

import numpy as np
import pytest
from sahi.models.base import DetectionModel
from sahi.predict import get_sliced_prediction
from sahi.prediction import ObjectPrediction
from sahi.utils.compatibility import fix_full_shape_list, fix_shift_amount_list

from ppyoloe_sod.infer.predictor import DetPredictor
from ppyoloe_sod.infer.slicing import SliceConfig, slice_grid
from infer_synth import scene

SLICE, OVERLAP, THRESHOLD = 320, 0.2, 0.3
HEIGHT, WIDTH = 500, 1000  # 2 rows x 4 columns of 320-pixel slices at 0.2 overlap: 8 slices


class PPYOLOESODDetectionModel(DetectionModel):
    """SAHI's view of a ``DetPredictor`` (pass it as ``model=``): BGR numpy images in, ObjectPredictions out.

    Boxes scoring at or below ``confidence_threshold`` are dropped (our threshold is strict, as PaddleX's) and
    the rest clipped to the full image, in slice pixels, dropping boxes left empty, as SAHI's own wrappers do.
    Slices are run ``len(images)`` per forward (``perform_batch_inference``).
    """

    def set_model(self, model: DetPredictor, **kwargs) -> None:
        self.model = model
        self.category_mapping = {str(i): label for i, label in enumerate(model.labels)}

    def load_model(self) -> None:
        raise ValueError("pass a DetPredictor as model=...")

    def perform_inference(self, image: np.ndarray) -> None:
        self.perform_batch_inference([image])

    def perform_batch_inference(self, images: list[np.ndarray]) -> None:
        self._original_predictions = self.model.detect_batch(list(images))
        self._batch_images = None  # ours runs natively in batches: no per-image replay

    def _create_object_prediction_list_from_original_predictions(self, shift_amount_list=[[0, 0]],
                                                                  full_shape_list=None) -> None:
        shifts = fix_shift_amount_list(shift_amount_list)
        shapes = fix_full_shape_list(full_shape_list)
        per_image = []
        for i, rows in enumerate(self._original_predictions):
            shift = shifts[i] if i < len(shifts) else [0, 0]
            height, width = shapes[i] if shapes else (None, None)
            per_image.append([prediction for row in rows if row[1] > self.confidence_threshold
                              if (prediction := self._prediction(row, shift, height, width)) is not None])
        self._object_prediction_list_per_image = per_image

    def _prediction(self, row: np.ndarray, shift: list[int], height: int | None, width: int | None):
        x1, y1, x2, y2 = (max(0.0, float(v)) for v in row[2:])
        if width is not None:
            x1, x2, y1, y2 = min(width, x1), min(width, x2), min(height, y1), min(height, y2)
        if not (x1 < x2 and y1 < y2):
            return None
        cls = int(row[0])
        return ObjectPrediction(bbox=[x1, y1, x2, y2], category_id=cls, category_name=self.category_mapping[str(cls)],
                                score=float(row[1]), shift_amount=shift,
                                full_shape=None if height is None else [height, width])


pytestmark = pytest.mark.usefixtures("sahi_numpy_backend")


def as_rows(boxes: list[dict]) -> np.ndarray:
    return np.array([[b["cls_id"], b["score"], *b["coordinate"]] for b in boxes], dtype=np.float32).reshape(-1, 6)


def sahi_rows(predictions: list[ObjectPrediction]) -> np.ndarray:
    rows = [[p.category.id, p.score.value, *p.bbox.to_xyxy()] for p in predictions]
    return np.array(rows, dtype=np.float32).reshape(-1, 6)


def by_box(rows: np.ndarray) -> np.ndarray:
    """Rows in one canonical order (the two tools list the same set in different orders)."""
    return rows[np.lexsort(rows.T[::-1])]


def test_sliced_predict_equals_sahi_get_sliced_prediction_with_our_model_wrapped(small_predictor):
    cfg = SliceConfig(preset="sahi", size=SLICE, overlap=OVERLAP, batch_size=4)
    assert len(slice_grid(HEIGHT, WIDTH, cfg)) % cfg.batch_size == 0  # see the module docstring
    image = scene(HEIGHT, WIDTH, seed=11)
    [ours] = small_predictor.predict(image, threshold=THRESHOLD, slice=cfg)

    wrapper = PPYOLOESODDetectionModel(model=small_predictor, confidence_threshold=THRESHOLD, device="cpu")
    theirs = get_sliced_prediction(
        image, wrapper, slice_height=SLICE, slice_width=SLICE, overlap_height_ratio=OVERLAP,
        overlap_width_ratio=OVERLAP, perform_standard_pred=True, postprocess_type="GREEDYNMM",
        postprocess_match_metric="IOS", postprocess_match_threshold=0.5, postprocess_class_agnostic=False,
        batch_size=cfg.batch_size, verbose=0)

    # SAHI leaves merged boxes reaching past the image (a slice's box may extend beyond the slice); predict clips
    # every result to the image (PaddleX's form) after merging and drops boxes left empty: the one step added.
    expected = sahi_rows(theirs.object_prediction_list)
    assert len(expected) >= 5 and (expected[:, 4] > WIDTH).any()
    expected[:, 2:] = np.clip(expected[:, 2:], 0, np.array([WIDTH, HEIGHT, WIDTH, HEIGHT], np.float32))
    expected = expected[(expected[:, 4] > expected[:, 2]) & (expected[:, 5] > expected[:, 3])]
    np.testing.assert_array_equal(by_box(as_rows(ours.boxes)), by_box(expected))
    assert [b["label"] for b in ours.boxes] == [small_predictor.labels[b["cls_id"]] for b in ours.boxes]
    names = {p.category.id: p.category.name for p in theirs.object_prediction_list}
    assert all(names[b["cls_id"]] == b["label"] for b in ours.boxes)


def test_the_merge_really_merged_something(small_predictor, monkeypatch):
    """The comparison above is not vacuous: more boxes come out of the slices than out of the merge."""
    detect, seen = small_predictor.detect_batch, {}

    def remembered(images):  # both runs below feed the same batches: the network runs once
        key = b"".join(im.tobytes() for im in images)
        return seen[key] if key in seen else seen.setdefault(key, detect(images))

    monkeypatch.setattr(small_predictor, "detect_batch", remembered)
    image = scene(HEIGHT, WIDTH, seed=11)
    options = {"size": SLICE, "overlap": OVERLAP, "batch_size": 4}
    [concatenated] = small_predictor.predict(image, threshold=THRESHOLD, slice={**options, "merge": "concat"})
    [merged] = small_predictor.predict(image, threshold=THRESHOLD, slice=options)
    assert len(seen) == 3 and len(merged.boxes) < len(concatenated.boxes)
