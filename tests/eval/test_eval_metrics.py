"""Our COCO numbers against direct pycocotools runs on the same generated detections."""
from __future__ import annotations

import json

import numpy as np
import pytest
from eval_synth import CAT_IDS, direct_cocoeval, gt_as_detections, make_detections, make_gt
from ppyoloe_sod.errors import DatasetError
from ppyoloe_sod.eval.metrics import COCO_MAX_DETS, MAX_DETS_500, SMALL_OBJECT_BANDS, SizeBand, evaluate_detections

NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    gt = make_gt(seed=0)
    path = tmp_path_factory.mktemp("gt") / "instance_val.json"
    path.write_text(json.dumps(gt))
    return gt, path, make_detections(gt, seed=1, many_on=3)


def test_standard_stats_equal_pycocotools(case):
    gt, path, dets = case
    ours = evaluate_detections(path, dets)
    ref = direct_cocoeval(path, dets).stats
    diff = np.abs(np.asarray(ours.stats) - ref).max()
    print("max |ours - pycocotools| over the 12 stats:", diff)
    assert ours.stats == ref.tolist()  # exact
    assert [getattr(ours, n) for n in NAMES] == ref.tolist()
    assert 0.05 < ours.AP < 0.95 and ours.AP50 > ours.AP75  # a non-trivial case
    assert ours.num_detections == sum(len(d) for d in dets.values())


def test_extended_run_keeps_standard_stats(case):
    """500 detections and the size bands share one COCOeval run; the COCO numbers must not move."""
    gt, path, dets = case
    ours = evaluate_detections(gt, dets, MAX_DETS_500, SMALL_OBJECT_BANDS)
    assert ours.stats == direct_cocoeval(path, dets).stats.tolist()
    assert ours.AR_at[100] == ours.AR100 and set(ours.AR_at) == {1, 10, 100, 500}


def test_500_detections_equal_pycocotools(case):
    gt, path, dets = case
    ours = evaluate_detections(gt, dets, MAX_DETS_500)
    ref = direct_cocoeval(path, dets, max_dets=[1, 10, 500])
    # summarize() reads AP@[.5:.95] at a hardcoded 100: with maxDets [1, 10, 500] it finds nothing
    assert ref.stats[0] == -1
    assert ours.at_max["AP50@500"] == ref.stats[1]
    assert ours.at_max["AP75@500"] == ref.stats[2]
    assert [ours.at_max[f"AP{s}@500"] for s in "sml"] == ref.stats[3:6].tolist()
    assert ours.AR_at[500] == ref.stats[8]
    assert [ours.at_max[f"AR{s}@500"] for s in "sml"] == ref.stats[9:12].tolist()
    p = ref.eval["precision"][:, :, :, 0, 2]
    assert ours.at_max["AP@500"] == float(np.mean(p[p > -1]))
    # the case has > 100 detections of one class on some images, so 500 really differs from 100
    assert ours.AR_at[500] > ours.AR_at[100]


def test_per_class_equals_single_category_runs(case):
    gt, path, dets = case
    ours = evaluate_detections(gt, dets)
    assert [c.category_id for c in ours.per_class] == list(CAT_IDS)
    for row in ours.per_class:
        ref = direct_cocoeval(path, dets, cat_ids=[row.category_id]).stats
        assert (row.AP, row.AP50, row.AP75) == (ref[0], ref[1], ref[2]), row
        assert row.num_gt == sum(1 for a in gt["annotations"] if a["category_id"] == row.category_id and not a["iscrowd"])
    assert len({c.AP for c in ours.per_class}) > 1


def test_size_bands_equal_pycocotools_area_ranges(case):
    gt, path, dets = case
    ours = evaluate_detections(gt, dets, MAX_DETS_500, SMALL_OBJECT_BANDS)
    assert [b.name for b in ours.size_bands] == [b.name for b in SMALL_OBJECT_BANDS]
    for band in ours.size_bands:
        # put the band where summarize() looks for 'small'
        ref = direct_cocoeval(path, dets, max_dets=[1, 10, 500],
                              area_rng=[[0, 1e10], [band.lo, band.hi], [0, 1], [0, 1]]).stats
        assert (band.AP, band.AR) == (ref[3], ref[9]), band.name
        assert band.num_gt == sum(1 for a in gt["annotations"] if not a["iscrowd"] and band.lo <= a["area"] <= band.hi)
    assert all(b.num_gt > 0 for b in ours.size_bands)


def test_perfect_detections_score_one_and_wrong_classes_zero():
    gt = make_gt(seed=3, crowd=False)
    perfect = evaluate_detections(gt, gt_as_detections(gt))
    assert perfect.AP == perfect.AP75 == perfect.AR100 == 1.0  # xyxy -> xywh without +1, index -> category id
    assert all(c.AP == 1.0 for c in perfect.per_class)
    shifted = evaluate_detections(gt, gt_as_detections(gt, class_shift=1))
    assert shifted.AP < 0.01 and shifted.AR100 < 0.05  # only chance overlaps with other-class boxes remain


def test_no_detections_and_negative_class_rows():
    gt = make_gt(seed=3)
    empty = evaluate_detections(gt, {})
    assert empty.AP == 0.0 and empty.AR100 == 0.0 and empty.num_detections == 0
    # Paddle emits a single class -1 row for "nothing found"; it must be dropped, not mapped to a category
    dets = gt_as_detections(gt)
    with_marker = {k: np.concatenate([v, [[-1, 0.99, 0, 0, 50, 50]]]) for k, v in dets.items()}
    assert evaluate_detections(gt, with_marker).stats == evaluate_detections(gt, dets).stats


def test_inputs_are_not_modified():
    gt = make_gt(seed=4)
    before = json.dumps(gt, sort_keys=True)
    dets = gt_as_detections(gt)
    copies = {k: v.copy() for k, v in dets.items()}
    evaluate_detections(gt, dets, MAX_DETS_500, SMALL_OBJECT_BANDS)
    assert json.dumps(gt, sort_keys=True) == before  # pycocotools writes 'ignore' into annotations it sees
    assert all(np.array_equal(copies[k], dets[k]) for k in dets)


def test_torch_tensors_are_accepted():
    torch = pytest.importorskip("torch")
    gt = make_gt(seed=5)
    dets = make_detections(gt, seed=6)
    as_tensors = {k: torch.from_numpy(v) for k, v in dets.items()}
    assert evaluate_detections(gt, as_tensors).stats == evaluate_detections(gt, dets).stats


# ------------------------------------------------------------------------------------------------ bad input


def test_gt_without_images(tmp_path):
    gt = make_gt(seed=0)
    gt["images"] = []
    path = tmp_path / "val.json"
    path.write_text(json.dumps(gt))
    with pytest.raises(DatasetError, match=r"val\.json.*'images'"):
        evaluate_detections(path, {})


def test_gt_file_missing_or_broken(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        evaluate_detections(tmp_path / "nope.json", {})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        evaluate_detections(bad, {})


def test_gt_annotation_without_area():
    gt = make_gt(seed=0)
    del gt["annotations"][2]["area"]
    with pytest.raises(DatasetError, match=r"annotation id 3 lacks \['area'\]"):
        evaluate_detections(gt, {})


def test_gt_duplicate_annotation_ids():
    gt = make_gt(seed=0)
    gt["annotations"][5]["id"] = gt["annotations"][4]["id"]
    with pytest.raises(DatasetError, match=r"annotation id 5 occurs twice"):
        evaluate_detections(gt, {})


def test_unknown_image_id():
    gt = make_gt(seed=0)
    dets = {gt["images"][0]["id"]: np.zeros((0, 6)), 999999: np.array([[0, 0.5, 0, 0, 10, 10]])}
    with pytest.raises(DatasetError, match="999999"):
        evaluate_detections(gt, dets)


def test_non_integer_image_key():
    gt = make_gt(seed=0)
    with pytest.raises(DatasetError, match="img_100.jpg"):
        evaluate_detections(gt, {"img_100.jpg": np.zeros((0, 6))})


def test_class_index_out_of_range():
    gt = make_gt(seed=0)
    image_id = gt["images"][1]["id"]
    with pytest.raises(DatasetError, match=r"class index 4.*only 4 categories"):
        evaluate_detections(gt, {image_id: np.array([[4, 0.5, 0, 0, 10, 10]])})


def test_bad_detection_shape_and_nan():
    gt = make_gt(seed=0)
    image_id = gt["images"][1]["id"]
    with pytest.raises(DatasetError, match=r"shape \(2, 5\)"):
        evaluate_detections(gt, {image_id: np.zeros((2, 5))})
    with pytest.raises(DatasetError, match="NaN"):
        evaluate_detections(gt, {image_id: np.array([[0, np.nan, 0, 0, 10, 10]])})


def test_max_dets_must_include_coco_values():
    gt = make_gt(seed=0)
    with pytest.raises(ValueError, match="1, 10 and 100"):
        evaluate_detections(gt, {}, max_dets=(1, 10, 500))
    with pytest.raises(ValueError, match="unique"):
        evaluate_detections(gt, {}, size_bands=[SizeBand("small", 0, 10)])
    with pytest.raises(ValueError, match="engine must be one of"):
        evaluate_detections(gt, {}, engine="fast")
    assert COCO_MAX_DETS == (1, 10, 100)
