"""Our COCO metrics against PaddleDetection's COCOMetric (get_det_res -> bbox.json -> cocoapi_eval).

The same generated detections go through ppdet's metric exactly as its trainer feeds it (batches of
``bbox`` [sum N, 6] float32 rows, ``bbox_num``, ``im_id``), including Paddle's class -1 "no detection" row.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from ppdet.metrics.metrics import COCOMetric

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))
from eval_synth import make_detections, make_gt  # noqa: E402

from ppyoloe_sod.eval.metrics import MAX_DETS_500, SMALL_OBJECT_BANDS, evaluate_detections  # noqa: E402

pytestmark = pytest.mark.oracle
TOL = 1e-9


def ppdet_stats(ann_file: Path, dets: dict[int, np.ndarray], out_dir: Path, batch: int = 3) -> np.ndarray:
    metric = COCOMetric(anno_file=str(ann_file), output_eval=str(out_dir))
    ids = list(dets)
    for i in range(0, len(ids), batch):
        chunk = ids[i : i + batch]
        metric.update(
            {"im_id": np.asarray([[k] for k in chunk], dtype=np.int64)},
            {"bbox": np.concatenate([dets[k] for k in chunk]).astype(np.float32),
             "bbox_num": np.asarray([len(dets[k]) for k in chunk], dtype=np.int32)},
        )
    metric.accumulate()
    return np.asarray(metric.get_results()["bbox"], dtype=np.float64)


@pytest.mark.parametrize("seed", [0, 7])
def test_coco_metrics_equal_ppdet(tmp_path, seed):
    gt = make_gt(seed=seed, num_images=14)
    ann_file = tmp_path / "instance_val.json"
    ann_file.write_text(json.dumps(gt))
    dets = make_detections(gt, seed=seed + 1, many_on=2)
    # an image where the model found nothing: Paddle's NMS emits one class -1 row
    dets[gt["images"][-1]["id"]] = np.array([[-1, 0.0, 0, 0, 0, 0]], dtype=np.float32)

    ref = ppdet_stats(ann_file, dets, tmp_path)
    ours = evaluate_detections(ann_file, dets)
    extended = evaluate_detections(gt, dets, MAX_DETS_500, SMALL_OBJECT_BANDS)
    diff = np.abs(np.asarray(ours.stats) - ref).max()
    diff_ext = np.abs(np.asarray(extended.stats) - ref).max()
    print(f"seed {seed}: ppdet AP {ref[0]:.6f}; max |ours - ppdet| = {diff:.3g} (standard), {diff_ext:.3g} (500 + bands)")
    assert ref[0] > 0.05  # a non-trivial case, so equality means something
    assert diff <= TOL and diff_ext <= TOL
