"""Ignored-region filtering (the VisDrone toolkit's >= 50%-of-own-area rule) and the VisDrone summary."""
from __future__ import annotations

import json

import numpy as np
import pytest

from eval_synth import make_detections, make_gt
from ppyoloe_sod.errors import DatasetError
from ppyoloe_sod.eval.metrics import MAX_DETS_500, evaluate_detections
from ppyoloe_sod.data.coco import ignored_regions_by_image
from ppyoloe_sod.eval.visdrone import covered_fraction, evaluate_visdrone, filter_ignored


def raster_fraction(box, regions, size=64):
    """Brute force on the integer pixel grid (exact for integer coordinates)."""
    mask = np.zeros((size, size), dtype=bool)
    for x1, y1, x2, y2 in regions.astype(int):
        mask[y1:y2, x1:x2] = True
    x1, y1, x2, y2 = box.astype(int)
    area = (x2 - x1) * (y2 - y1)
    return mask[y1:y2, x1:x2].sum() / area if area > 0 else 0.0


def random_int_boxes(rng, n, size=64):
    a = rng.integers(0, size, size=(n, 2, 2))
    lo, hi = a.min(axis=1), a.max(axis=1) + 1
    return np.concatenate([lo, hi], axis=1).astype(np.float64)


def test_covered_fraction_equals_pixel_count():
    rng = np.random.default_rng(0)
    for _ in range(20):
        regions = random_int_boxes(rng, int(rng.integers(1, 6)))  # overlapping regions: the union counts once
        boxes = random_int_boxes(rng, 30)
        ours = covered_fraction(boxes, regions)
        ref = np.array([raster_fraction(b, regions) for b in boxes])
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)
        assert ((ref > 0) & (ref < 1)).any()


def test_covered_fraction_fractional_coordinates():
    regions = np.array([[10.25, 0.0, 20.75, 100.0]])
    box = np.array([[0.0, 0.0, 20.0, 10.0]])  # 9.75 of 20 px wide inside
    assert covered_fraction(box, regions)[0] == pytest.approx(9.75 / 20, abs=1e-12)
    assert covered_fraction(box, np.zeros((0, 4)))[0] == 0.0
    assert covered_fraction(np.array([[5.0, 5, 5, 9]]), regions)[0] == 0.0  # zero area: nothing to cover


def test_union_not_sum_and_threshold_rule():
    # two overlapping regions each cover 30% of the box; together only 40% (kept), a sum would say 60%
    regions = {7: np.array([[0.0, 0, 30, 10], [10, 0, 40, 10]])}
    gt = {"images": [{"id": 7, "file_name": "a.jpg", "width": 200, "height": 100}],
          "categories": [{"id": 1, "name": "car"}], "annotations": []}
    box = [0.0, 0.9, 0, 0, 100, 10]  # covered 0..40 of 100 px
    dets = {7: np.array([
        box,
        [0, 0.8, 0, 0, 80, 10],  # exactly 50% covered: the toolkit drops it (keeps only < 0.5)
        [0, 0.7, 0, 0, 81, 10],  # 49.4%: kept
        [0, 0.6, 5, 2, 35, 8],  # fully inside: dropped
        [-1, 0.0, 0, 0, 10, 10],  # Paddle's empty marker is not counted as removed
    ])}
    _, kept, report = filter_ignored(gt, dets, regions)
    np.testing.assert_array_equal(kept[7][:, 1], [0.9, 0.7, 0.0])
    assert report.removed_detections == 2 and report.num_regions == 2 and report.images_with_regions == 1


def make_visdrone_case(seed=0):
    """Ground truth with one ignored region per image on some images, false positives planted inside them."""
    rng = np.random.default_rng(seed)
    gt = make_gt(seed=seed, num_images=10, crowd=False)
    dets = make_detections(gt, seed=seed + 1)
    regions_xywh = {}
    for im in gt["images"][::2]:
        w, h = im["width"] * 0.4, im["height"] * 0.4
        x, y = rng.uniform(0, im["width"] - w), rng.uniform(0, im["height"] - h)
        regions_xywh[im["id"]] = [x, y, w, h]
        planted = [[int(rng.integers(0, 4)), rng.uniform(0.5, 1.0), x + 0.1 * w, y + 0.1 * h, x + 0.2 * w + 5 * i,
                    y + 0.3 * h] for i in range(10)]
        dets[im["id"]] = np.concatenate([dets[im["id"]], np.asarray(planted, dtype=np.float32)])
    gt["ignored_regions"] = [{"image_id": k, "bbox": v} for k, v in regions_xywh.items()]
    return gt, dets, regions_xywh


def single_region_fraction(x1, y1, x2, y2, region_xywh):
    rx, ry, rw, rh = region_xywh
    iw = max(0.0, min(x2, rx + rw) - max(x1, rx))
    ih = max(0.0, min(y2, ry + rh) - max(y1, ry))
    area = (x2 - x1) * (y2 - y1)
    return iw * ih / area if area > 0 else 0.0


def test_visdrone_equals_coco_on_hand_filtered_data(tmp_path):
    gt, dets, regions = make_visdrone_case()
    path = tmp_path / "val.json"
    path.write_text(json.dumps(gt))

    # the expected filtering, written independently with one rectangle per image
    keep_dets, removed = {}, 0
    for image_id, arr in dets.items():
        ok = [r for r in arr.tolist() if image_id not in regions or single_region_fraction(*r[2:], regions[image_id]) < 0.5]
        removed += len(arr) - len(ok)
        keep_dets[image_id] = np.asarray(ok, dtype=np.float64).reshape(-1, 6)
    anns = [a for a in gt["annotations"] if a["image_id"] not in regions or single_region_fraction(
        a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3], regions[a["image_id"]]) < 0.5]
    expected = evaluate_detections({**gt, "annotations": anns}, keep_dets, MAX_DETS_500)

    vis = evaluate_visdrone(path, dets)
    print("removed dets", vis.ignored.removed_detections, "gt", vis.ignored.removed_gt, "AP", vis.AP)
    assert vis.ignored.removed_detections == removed >= 50  # at least the planted ones
    assert vis.ignored.removed_gt == len(gt["annotations"]) - len(anns) > 0
    assert (vis.AP, vis.AP50, vis.AP75) == (expected.at_max["AP@500"], expected.at_max["AP50@500"],
                                             expected.at_max["AP75@500"])
    assert (vis.AR1, vis.AR10, vis.AR100, vis.AR500) == tuple(expected.AR_at[m] for m in MAX_DETS_500)
    # the planted false positives cost AP when regions are not applied
    plain = evaluate_detections(gt, dets, MAX_DETS_500)
    assert plain.at_max["AP@500"] < vis.AP
    text = vis.table()
    assert "AR500" in text and f"removed {removed} detections" in text


def test_explicit_regions_and_no_regions():
    gt, dets, regions = make_visdrone_case(seed=2)
    xyxy = {k: np.array([[x, y, x + w, y + h]]) for k, (x, y, w, h) in regions.items()}
    from_json = evaluate_visdrone(gt, dets)
    explicit = evaluate_visdrone({k: v for k, v in gt.items() if k != "ignored_regions"}, dets, ignored_regions=xyxy)
    assert explicit.as_dict() == from_json.as_dict()
    none = evaluate_visdrone(gt, dets, ignored_regions={})
    assert none.ignored.removed_detections == 0 and none.AP == evaluate_detections(gt, dets, MAX_DETS_500).at_max["AP@500"]


def test_bad_ignored_regions():
    gt, dets, _ = make_visdrone_case()
    with pytest.raises(DatasetError, match=r"ignored_regions\[1\]"):
        ignored_regions_by_image({"ignored_regions": [{"image_id": 1, "bbox": [0, 0, 1, 1]}, {"bbox": [0, 0, 1, 1]}]})
    with pytest.raises(DatasetError, match="12345"):
        evaluate_visdrone(gt, dets, ignored_regions={12345: np.array([[0, 0, 5, 5]])})
