"""Stage-by-stage parity with PaddleDetection's modules on the same (random) weights and input.

Weights travel the user's path: ppdet model -> paddle.save(.pdparams) -> our restricted reader -> converter.
Tolerances (issue 2): features relative 1e-4 (max |diff| / max |ref|), scores 1e-5 absolute, boxes 1e-3 px.

NMS is checked apart from the float noise upstream. Paddle's and our scores differ by up to ~2e-7 (different
summation order), while overlapping same-class candidates in the part of the list that decides the output are
as close as 0 to 3e-7 apart (measured: exactly equal at SOD-S 640, 9e-8 non-square, 6e-8 COCO base, 3e-7 with
few candidates, plus a candidate 4e-6 above the 0.01 cutoff). Which of two such candidates survives NMS depends
on the CPU's rounding, so the detection lists of two full pipelines are not comparable row for row. Instead:
1. the NMS input (scores, decoded boxes) matches within the tolerances above;
2. our NMS on Paddle's own boxes and scores returns Paddle's detections exactly (same rows, same order, same
   bits): no noise enters, so this holds on every CPU (tests/test_nms_fast.py proves the same on adversarial
   inputs: exact ties, IoU at the threshold to the last bit);
3. every detection of our full pipeline (postprocess on our own head output) is one of Paddle's candidates of the
   same class, score and box within the tolerances: the glue between the two (rescaling by (sy, sx), the
   score/box/class pairing) is ours, with no NMS decision involved.
Together: our output is Paddle's NMS applied to inputs within tolerance of Paddle's.
"""
from __future__ import annotations

import numpy as np
import paddle
import pytest
import torch

from ppyoloe_sod import boxes as B
from ppyoloe_sod.models import load_model

from .ppdet_reference import build, nms_inputs

pytestmark = pytest.mark.oracle

FEATURE_RTOL = 1e-4
SCORE_ATOL = 1e-5
BOX_ATOL = 1e-3


def rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.abs(ours - ref).max() / (np.abs(ref).max() + 1e-12))


def nearest_candidates(dets: np.ndarray, boxes: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """For each detection (class, score, box), the Paddle candidate of that class closest in box and score.

    Returns the largest (score, box) distance over the detections: small only if each detection is a candidate
    of the same class that Paddle scored and placed within the tolerances. A near-tie decides at most which
    candidates are kept, never whether a kept one is a candidate, so this does not depend on float noise.
    """
    worst_score = worst_box = 0.0
    for cls, score, *box in dets:
        box_diff = np.abs(boxes - np.asarray(box, dtype=boxes.dtype)).max(-1)
        score_diff = np.abs(scores[:, int(cls)] - score)
        best = int(np.argmin(box_diff / BOX_ATOL + score_diff / SCORE_ATOL))
        worst_score, worst_box = max(worst_score, float(score_diff[best])), max(worst_box, float(box_diff[best]))
    return worst_score, worst_box


def run_both(name: str, height: int, width: int, tmp_path, scale_factor=(0.5, 0.8), seed: int = 0,
             cls_bias: float = -1.0, head_scale: float = 1.0, cls_std: float = 0.005):
    pd_model = build(name, seed=seed, cls_bias=cls_bias, head_scale=head_scale, cls_std=cls_std)
    weights = tmp_path / f"{name}.pdparams"
    paddle.save(pd_model.state_dict(), str(weights))
    model = load_model(name, weights)

    rng = np.random.default_rng(seed + 1)
    image = rng.uniform(0, 1, (1, 3, height, width)).astype("float32")
    sf = np.array([scale_factor], dtype="float32")
    with paddle.no_grad():
        pd_c, pd_p = pd_model.features(image)
        head_outs = pd_model.yolo_head(pd_p)
        pd_bbox, pd_num, _ = pd_model.yolo_head.post_process(head_outs, paddle.to_tensor(sf))
        pd_nms_boxes, pd_nms_scores = nms_inputs(pd_model.yolo_head, head_outs, sf)

    with torch.no_grad():
        x = torch.from_numpy(image)
        stage_out = {}  # one forward through Detector.forward; the stages' outputs are taken on the way
        hooks = [m.register_forward_hook(lambda mod, inp, out, key=key: stage_out.__setitem__(key, out))
                 for key, m in (("backbone", model.backbone), ("neck", model.neck))]
        raw = model(x)
        for h in hooks:
            h.remove()
        c, p = stage_out["backbone"], stage_out["neck"]
        points, strides = model.anchors(height, width)
        dets = B.postprocess(raw.cls_logits, raw.reg_logits, points, strides, model.proj, torch.from_numpy(sf))[0]

    report = {}
    for i in range(3):
        report[f"backbone C{i + 3}"] = rel_err(c[i].numpy(), pd_c[i].numpy())
        report[f"neck P{5 - i}"] = rel_err(p[i].numpy(), pd_p[i].numpy())
    pd_scores, pd_dist, pd_points, pd_strides = (t.numpy() for t in head_outs)
    report["head scores (abs)"] = float(np.abs(raw.cls_logits.sigmoid().transpose(1, 2).numpy() - pd_scores).max())
    report["head distances"] = rel_err(B.dfl_distances(raw.reg_logits, model.proj).numpy(), pd_dist)
    np.testing.assert_allclose(points.numpy(), pd_points * pd_strides)
    np.testing.assert_allclose(strides.numpy(), pd_strides)
    boxes, _ = B.decode(raw.cls_logits, raw.reg_logits, points, strides, model.proj)
    ref_boxes = np.concatenate([pd_points - pd_dist[0, :, :2], pd_points + pd_dist[0, :, 2:]], -1) * pd_strides
    report["decoded boxes (px)"] = float(np.abs(boxes[0].numpy() - ref_boxes).max())
    pd_dets = pd_bbox.numpy()[: int(pd_num.numpy()[0])]
    nms_on_paddle_input = B.multiclass_nms(torch.from_numpy(pd_nms_boxes), torch.from_numpy(pd_nms_scores)).numpy()
    report["NMS on Paddle's input: rows identical"] = (nms_on_paddle_input.shape == pd_dets.shape
                                                       and np.array_equal(nms_on_paddle_input, pd_dets))
    score_diff, box_diff = nearest_candidates(dets.numpy(), pd_nms_boxes, pd_nms_scores)
    report["detections vs Paddle's candidates: scores (abs)"] = score_diff
    report["detections vs Paddle's candidates: boxes (px)"] = box_diff
    report["detections"] = dets.shape[0]
    report["Paddle's detections"] = pd_dets.shape[0]
    print(f"\n{name} {height}x{width}: " + ", ".join(f"{k} {v}" if isinstance(v, bool) else f"{k} {v:.3g}"
                                                      for k, v in report.items()))
    return report


def check(report: dict, box_atol: float = BOX_ATOL) -> None:
    for key, value in report.items():
        if key.startswith(("backbone", "neck", "head distances")):
            assert value < FEATURE_RTOL, (key, value)
    assert report["head scores (abs)"] < SCORE_ATOL
    assert report["decoded boxes (px)"] < box_atol
    assert report["NMS on Paddle's input: rows identical"]
    assert report["detections vs Paddle's candidates: scores (abs)"] < SCORE_ATOL
    assert report["detections vs Paddle's candidates: boxes (px)"] < box_atol
    assert report["detections"] > 0 and report["Paddle's detections"] > 0


@pytest.mark.parametrize("name", ["PP-YOLOE_plus_SOD-S", "PP-YOLOE_plus_SOD-L"])
def test_parity_at_eval_size(name, tmp_path):
    check(run_both(name, 640, 640, tmp_path))


def test_parity_non_square_input(tmp_path):
    """Any multiple of 32 works: positional embedding and anchors follow the actual size."""
    check(run_both("PP-YOLOE_plus_SOD-S", 384, 640, tmp_path, scale_factor=(0.4, 0.6), seed=3))


def test_parity_when_nms_decides(tmp_path):
    """Few candidates above the score threshold: the kept set is NMS's choice, not the keep_top_k cut."""
    report = run_both("PP-YOLOE_plus_SOD-S", 640, 640, tmp_path, seed=11, cls_bias=-6.0, cls_std=0.03)
    check(report)
    assert report["Paddle's detections"] < 500


def test_parity_coco_base_model(tmp_path):
    """The plain PP-YOLOE+ (no transformer, reg_max 16, 80 classes) that SOD training starts from."""
    check(run_both("PP-YOLOE_plus-S", 320, 320, tmp_path, seed=5))


@pytest.mark.slow
def test_parity_largesize_at_1920(tmp_path):
    """At 1920 px a float32 step (ulp) of a coordinate is 1.2e-4 px and the 22-bin DFL sums values up to 19
    strides, so the two frameworks' equally valid rounding differs by ~2e-3 px (measured 1.7e-3); the box
    tolerance is 5e-3 px here (still 1/6000 of the 32 px stride), 1e-3 px at 640."""
    check(run_both("PP-YOLOE_plus_SOD-largesize-L", 1920, 1920, tmp_path, seed=7, cls_bias=-3.0, head_scale=0.1),
          box_atol=5e-3)
