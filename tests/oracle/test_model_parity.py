"""Stage-by-stage parity with PaddleDetection's modules on the same (random) weights and input.

Weights travel the user's path: ppdet model -> paddle.save(.pdparams) -> our restricted reader -> converter.
Tolerances (issue 2): features relative 1e-4 (max |diff| / max |ref|), scores 1e-5 absolute, boxes 1e-3 px,
identical classes and detection counts after NMS.
"""
from __future__ import annotations

import numpy as np
import paddle
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from ppyoloe_sod import boxes as B
from ppyoloe_sod.models import load_model

from .ppdet_reference import build

pytestmark = pytest.mark.oracle

FEATURE_RTOL = 1e-4
SCORE_ATOL = 1e-5
BOX_ATOL = 1e-3


def rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.abs(ours - ref).max() / (np.abs(ref).max() + 1e-12))


def match_detections(ours: np.ndarray, ref: np.ndarray) -> tuple[float, float, int]:
    """Max score and box differences after pairing detections class by class; also the near-tie count at the cut.

    Paddle and we sort float32 scores computed in a different order, so candidates whose scores differ by less
    than that noise (~1e-7) may come out in swapped order: rows are paired per class by a minimum-cost assignment
    rather than by position. At the keep_top_k cut such a near-tie decides which of two candidates (possibly of
    different classes) is the 500th detection; rows whose score is within 1e-6 of the lowest kept score are
    therefore compared as a group (same count, scores within tolerance) and everything above must match exactly
    in class and count.
    """
    assert ours.shape == ref.shape, f"detection count differs: ours {ours.shape[0]}, Paddle {ref.shape[0]}"
    assert len(ref) > 0, "no detections: the comparison would be empty"
    cutoff = ref[:, 1].min() + 1e-6
    core_a, core_b = ours[ours[:, 1] > cutoff], ref[ref[:, 1] > cutoff]
    assert core_a.shape == core_b.shape, f"detections above the cut: ours {len(core_a)}, Paddle {len(core_b)}"
    np.testing.assert_array_equal(core_a[:, 0], core_b[:, 0])  # same class grouping and count per class
    edge_a, edge_b = ours[ours[:, 1] <= cutoff], ref[ref[:, 1] <= cutoff]
    max_score = float(np.abs(np.sort(edge_a[:, 1]) - np.sort(edge_b[:, 1])).max(initial=0.0))
    max_box = 0.0
    for c in np.unique(core_b[:, 0]):
        a, b = core_a[core_a[:, 0] == c], core_b[core_b[:, 0] == c]
        cost = np.abs(a[:, None, 2:] - b[None, :, 2:]).max(-1) + 1e3 * np.abs(a[:, None, 1] - b[None, :, 1])
        rows, cols = linear_sum_assignment(cost)
        max_score = max(max_score, float(np.abs(a[rows, 1] - b[cols, 1]).max()))
        max_box = max(max_box, float(np.abs(a[rows, 2:] - b[cols, 2:]).max()))
    return max_score, max_box, len(edge_b)


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
    score_diff, box_diff, swaps = match_detections(dets.numpy(), pd_dets)
    report["near-ties at the keep_top_k cut"] = swaps
    report["NMS scores (abs)"] = score_diff
    report["NMS boxes (px)"] = box_diff
    report["detections"] = dets.shape[0]
    print(f"\n{name} {height}x{width}: " + ", ".join(f"{k} {v:.3g}" for k, v in report.items()))
    return report


def check(report: dict, box_atol: float = BOX_ATOL) -> None:
    for key, value in report.items():
        if key.startswith(("backbone", "neck", "head distances")):
            assert value < FEATURE_RTOL, (key, value)
    assert report["head scores (abs)"] < SCORE_ATOL
    assert report["NMS scores (abs)"] < SCORE_ATOL
    assert report["decoded boxes (px)"] < box_atol
    assert report["NMS boxes (px)"] < box_atol
    assert report["detections"] > 0
    assert report["near-ties at the keep_top_k cut"] <= 5


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
    assert report["detections"] < 500


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
