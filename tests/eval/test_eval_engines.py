"""The optional faster-coco-eval engine against pycocotools: same matches, precision equal to the last bit or so.

faster-coco-eval is not bit-identical (its precision differs from pycocotools' by up to an ulp), which is why
pycocotools stays the default; these tests bound the difference so that the opt-in engine can be trusted.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest

from eval_synth import make_detections, make_gt
from ppyoloe_sod.eval.metrics import (
    _COCO_AREAS,
    MAX_DETS_500,
    SMALL_OBJECT_BANDS,
    detections_to_coco_results,
    evaluate_detections,
    load_gt_dict,
    run_cocoeval,
)

pytest.importorskip("faster_coco_eval", reason="faster-coco-eval is an optional engine")

AREAS = list(_COCO_AREAS) + [(b.name, b.lo, b.hi) for b in SMALL_OBJECT_BANDS]
TOL = 1e-12


def tricky_case(seed: int):
    gt = make_gt(seed=seed, num_images=10, crowd=True)
    gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] != gt["images"][1]["id"]]  # an image without gt
    dets = make_detections(gt, seed=seed + 1, many_on=2)
    for d in dets.values():
        d[:, 1] = np.round(d[:, 1], 1)  # many tied scores: ties must be ordered the same way
        if len(d) > 3:
            d[0, 4] = d[0, 2]  # a zero-width box
    dets[gt["images"][2]["id"]] = np.zeros((0, 6), dtype=np.float32)  # an image without detections
    return gt, dets


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_precision_recall_arrays_agree(seed):
    gt, dets = tricky_case(seed)
    cat_ids = [c["id"] for c in gt["categories"]]
    results = detections_to_coco_results(dets, cat_ids, {im["id"] for im in gt["images"]})
    ref = run_cocoeval(load_gt_dict(gt)[0], copy.deepcopy(results), MAX_DETS_500, AREAS, "pycocotools").eval
    fast = run_cocoeval(load_gt_dict(gt)[0], copy.deepcopy(results), MAX_DETS_500, AREAS, "faster").eval
    diff = np.abs(ref["precision"] - fast["precision"])
    print(f"seed {seed}: precision max |diff| {diff.max():.3g}, recall max |diff| "
          f"{np.abs(ref['recall'] - fast['recall']).max():.3g}")
    assert ref["precision"].shape == fast["precision"].shape
    assert np.array_equal(ref["precision"] > -1, fast["precision"] > -1)  # same defined entries
    assert diff.max() <= TOL
    assert np.array_equal(ref["recall"], fast["recall"])  # recall = matched count / gt count: exactly the same


def test_metrics_agree():
    gt, dets = tricky_case(5)
    ref = evaluate_detections(gt, dets, MAX_DETS_500, SMALL_OBJECT_BANDS)
    fast = evaluate_detections(gt, dets, MAX_DETS_500, SMALL_OBJECT_BANDS, engine="faster")
    assert fast.engine == "faster" and ref.engine == "pycocotools"
    np.testing.assert_allclose(fast.stats, ref.stats, rtol=0, atol=TOL)
    np.testing.assert_allclose(list(fast.at_max.values()), list(ref.at_max.values()), rtol=0, atol=TOL)
    np.testing.assert_allclose([b.AP for b in fast.size_bands], [b.AP for b in ref.size_bands], rtol=0, atol=TOL)
    np.testing.assert_allclose([c.AP for c in fast.per_class], [c.AP for c in ref.per_class], rtol=0, atol=TOL)


def test_empty_results_agree():
    gt = make_gt(seed=4)
    assert evaluate_detections(gt, {}, engine="faster").stats == evaluate_detections(gt, {}).stats
