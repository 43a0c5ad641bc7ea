"""Decode and NMS semantics, checked against small independent reference implementations written here."""
import numpy as np
import pytest
import torch

from ppyoloe_sod import boxes as B
from ppyoloe_sod.zoo import NMSSpec


def reference_nms(boxes: np.ndarray, scores: np.ndarray, spec: NMSSpec) -> np.ndarray:
    """Paddle multiclass_nms3 semantics as plain loops: per class threshold, top-k, greedy IoU <= thr keeps."""
    def iou(a, b):
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = iw * ih
        area = lambda r: (r[2] - r[0]) * (r[3] - r[1])
        return inter / (area(a) + area(b) - inter)

    rows = []
    for c in range(scores.shape[1]):
        idx = [i for i in range(len(boxes)) if scores[i, c] > spec.score_threshold]
        idx.sort(key=lambda i: -scores[i, c])  # Python's sort is stable: ties keep index order
        kept = []
        for i in idx[: spec.nms_top_k]:
            if all(iou(boxes[i], boxes[j]) <= spec.iou_threshold for j in kept):
                kept.append(i)
        rows += [(c, scores[i, c], *boxes[i]) for i in kept]
    if len(rows) > spec.keep_top_k:
        order = sorted(range(len(rows)), key=lambda r: -rows[r][1])[: spec.keep_top_k]
        rows = [rows[r] for r in sorted(order)]  # back to class-grouped order
    return np.array(rows, dtype=np.float64).reshape(-1, 6)


def random_scene(n: int, classes: int, seed: int):
    rng = np.random.default_rng(seed)
    centres = rng.uniform(20, 300, (6, 2))
    c = centres[rng.integers(0, 6, n)] + rng.normal(0, 6, (n, 2))
    wh = rng.uniform(4, 40, (n, 2))
    boxes = np.concatenate([c - wh / 2, c + wh / 2], 1).astype(np.float32)
    scores = rng.uniform(0, 1, (n, classes)).astype(np.float32) ** 3
    return boxes, scores


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("spec", [NMSSpec(), NMSSpec(score_threshold=0.2, nms_top_k=30, keep_top_k=40, iou_threshold=0.5)])
def test_nms_matches_reference(seed, spec):
    boxes, scores = random_scene(300, 4, seed)
    ours = B.multiclass_nms(torch.from_numpy(boxes), torch.from_numpy(scores), spec).numpy()
    ref = reference_nms(boxes, scores, spec)
    assert ours.shape == ref.shape
    np.testing.assert_array_equal(ours[:, 0], ref[:, 0])
    np.testing.assert_allclose(ours[:, 1:], ref[:, 1:], rtol=0, atol=1e-5)


def test_nms_threshold_is_strict_and_empty_case():
    boxes = torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60]])
    scores = torch.tensor([[0.01], [0.0100001]])
    dets = B.multiclass_nms(boxes, scores)
    assert dets.shape == (1, 6) and dets[0, 2] == 50
    assert B.multiclass_nms(boxes, torch.zeros(2, 1)).shape == (0, 6)


def test_nms_iou_equal_to_threshold_is_kept():
    # IoU of these two is exactly 0.6 (intersection 60, union 100): Paddle keeps a box when IoU <= threshold.
    boxes = torch.tensor([[0.0, 0, 8, 10], [2, 0, 10, 10]])  # inter 6*10=60, union 100
    scores = torch.tensor([[0.9], [0.8]])
    assert B.multiclass_nms(boxes, scores).shape[0] == 2
    assert B.multiclass_nms(boxes, scores, NMSSpec(iou_threshold=0.59)).shape[0] == 1


def test_decode_matches_hand_computation():
    proj = torch.linspace(-2, 7, 10)
    logits = torch.full((1, 1, 40), -30.0)
    # one-hot bins: l -> -1, t -> 0, r -> 3, b -> 7 (bin index = value + 2)
    for side, value in enumerate([-1, 0, 3, 7]):
        logits[0, 0, side * 10 + value + 2] = 30.0
    points, strides = torch.tensor([[48.0, 80.0]]), torch.tensor([[16.0]])
    boxes, scores = B.decode(torch.zeros(1, 1, 3), logits, points, strides, proj)
    torch.testing.assert_close(boxes[0, 0], torch.tensor([48 + 16.0, 80, 48 + 48, 80 + 112]))
    assert torch.allclose(scores, torch.full_like(scores, 0.5))
    torch.testing.assert_close(B.box_to_distance(points, boxes[0]) / 16, torch.tensor([[-1.0, 0, 3, 7]]))


def test_postprocess_divides_by_scale_factor():
    proj = torch.linspace(0, 16, 17)
    logits = torch.full((1, 1, 68), -30.0)
    for side in range(4):
        logits[0, 0, side * 17 + 2] = 30.0  # distance 2 strides per side
    points, strides = torch.tensor([[40.0, 40.0]]), torch.tensor([[8.0]])
    dets = B.postprocess(torch.full((1, 1, 2), 3.0), logits, points, strides, proj,
                         torch.tensor([[0.5, 0.25]]))[0]  # (sy, sx)
    assert dets.shape == (2, 6)
    torch.testing.assert_close(dets[0, 2:], torch.tensor([24 / 0.25, 24 / 0.5, 56 / 0.25, 56 / 0.5]))


def test_box_iou():
    a = torch.tensor([[0.0, 0, 10, 10]])
    b = torch.tensor([[5.0, 5, 15, 15], [20, 20, 30, 30], [0, 0, 10, 10]])
    torch.testing.assert_close(B.box_iou(a, b), torch.tensor([[25 / 175, 0.0, 1.0]]))
