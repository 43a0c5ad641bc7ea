"""Behaviour of TaskAlignedAssignerCR on hand-made geometry (the ppdet parity test lives in tests/oracle)."""
from __future__ import annotations

import torch

from ppyoloe_sod.train.assigner import TaskAlignedAssignerCR

C = 3


def _grid(size: int = 64, stride: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    n = size // stride
    ys, xs = torch.meshgrid(torch.arange(n) + 0.5, torch.arange(n) + 0.5, indexing="ij")
    points = torch.stack([xs, ys], -1).reshape(-1, 2) * stride
    return points, torch.full((n * n, 1), float(stride))


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of one box b with boxes a [L, 4]."""
    w = (torch.minimum(a[:, 2], b[2]) - torch.maximum(a[:, 0], b[0])).clamp(min=0)
    h = (torch.minimum(a[:, 3], b[3]) - torch.maximum(a[:, 1], b[1])).clamp(min=0)
    inter = w * h
    area = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    return inter / (area + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _preds(points: torch.Tensor, half: float = 10.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    boxes = torch.cat([points - half, points + half], -1) + torch.rand(len(points), 4, generator=g) * 4
    scores = torch.rand(1, len(points), C, generator=g) * 0.8 + 0.1
    return scores, boxes.unsqueeze(0)


def test_positives_are_topk_inside_box_or_centre_and_soft_scores_peak_at_max_iou() -> None:
    points, strides = _grid()
    scores, boxes = _preds(points)
    gt = torch.tensor([[[16.0, 12.0, 44.0, 40.0]]])
    labels, assigned, soft = TaskAlignedAssignerCR(topk=5)(
        scores, boxes, points, strides, torch.tensor([[[2]]]), gt, torch.ones(1, 1, 1), bg_index=C)
    fg = labels[0] != C
    assert 0 < int(fg.sum()) <= 5
    assert (labels[0][fg] == 2).all()
    assert torch.equal(assigned[0][fg], gt[0].expand(int(fg.sum()), 4))
    x, y = points[:, 0], points[:, 1]
    inside = (x > 16) & (x < 44) & (y > 12) & (y < 40)
    assert inside[fg].all()
    # the positives are the best anchors by score * IoU^6 among the inside ones
    iou = _iou(boxes[0], gt[0, 0])
    metric = scores[0, :, 2] * iou**6
    best = torch.where(inside, metric, torch.tensor(-1.0)).topk(5).indices
    assert set(best.tolist()) == set(fg.nonzero().flatten().tolist())
    # soft target: metric / max metric * max IoU among positives, only in the gt's class column
    expected = metric[fg] / metric[fg].max() * iou[fg].max()
    torch.testing.assert_close(soft[0, fg, 2], expected, rtol=1e-5, atol=1e-7)
    assert soft[0, fg][:, :2].abs().max() == 0 and soft[0, ~fg].abs().max() == 0


def test_tiny_box_without_anchor_inside_gets_centre_anchors() -> None:
    points, strides = _grid()
    scores, boxes = _preds(points)
    gt = torch.tensor([[[25.0, 25.0, 27.0, 27.0]]])  # no anchor point (4 + 8k) lies inside
    labels, _, _ = TaskAlignedAssignerCR(topk=13)(
        scores, boxes, points, strides, torch.tensor([[[0]]]), gt, torch.ones(1, 1, 1), bg_index=C)
    fg = (labels[0] != C).nonzero().flatten()
    near = ((points - 26.0).abs() < 8.0).all(-1).nonzero().flatten()  # within one stride of the centre
    assert set(fg.tolist()) == set(near.tolist()) and len(fg) == 4


def test_shared_anchor_goes_to_the_gt_it_overlaps_most() -> None:
    points, strides = _grid()
    _, boxes = _preds(points)
    scores = torch.full((1, len(points), C), 0.5)
    gts = torch.tensor([[[8.0, 8.0, 40.0, 40.0], [12.0, 12.0, 48.0, 48.0]]])
    # top-k over every anchor: each anchor inside a box is a candidate of that box, so those inside both compete
    labels, assigned, _ = TaskAlignedAssignerCR(topk=len(points))(
        scores, boxes, points, strides, torch.tensor([[[0], [1]]]), gts, torch.ones(1, 2, 1), bg_index=C)
    fg = labels[0] != C
    iou = torch.stack([_iou(boxes[0], gts[0, 0]), _iou(boxes[0], gts[0, 1])])
    assert fg.sum() > 0
    for a in fg.nonzero().flatten().tolist():
        k = int(labels[0, a])
        assert torch.equal(assigned[0, a], gts[0, k])
    x, y = points[:, 0], points[:, 1]
    in_first = (x > 8) & (x < 40) & (y > 8) & (y < 40)
    in_second = (x > 12) & (x < 48) & (y > 12) & (y < 48)
    assert torch.equal(fg, in_first | in_second)
    only_second = in_second & ~in_first
    assert (labels[0][only_second] == 1).all() and (labels[0][in_first & ~in_second] == 0).all()
    both = (in_first & in_second).nonzero().flatten()
    assert len(both) >= 9
    torch.testing.assert_close(labels[0, both], iou[:, both].argmax(0))


def test_padding_and_empty_images() -> None:
    points, strides = _grid()
    s1, b1 = _preds(points, seed=1)
    s2, b2 = _preds(points, seed=2)
    assigner = TaskAlignedAssignerCR(topk=7)
    gt = torch.tensor([[[8.0, 20.0, 30.0, 50.0], [33.0, 3.0, 60.0, 20.0]]])
    alone = assigner(s1, b1, points, strides, torch.tensor([[[1], [2]]]), gt, torch.ones(1, 2, 1), bg_index=C)
    # same image in a batch next to an image without boxes, padded to 3 gts
    gt_b = torch.zeros(2, 3, 4)
    gt_b[0, :2] = gt[0]
    lab_b = torch.zeros(2, 3, 1, dtype=torch.long)
    lab_b[0, :2, 0] = torch.tensor([1, 2])
    mask_b = torch.zeros(2, 3, 1)
    mask_b[0, :2] = 1
    batch = assigner(torch.cat([s1, s2]), torch.cat([b1, b2]), points, strides, lab_b, gt_b, mask_b, bg_index=C)
    assert torch.equal(batch.labels[0], alone.labels[0])
    assert torch.equal(batch.scores[0], alone.scores[0])
    fg = alone.labels[0] != C
    assert torch.equal(batch.boxes[0][fg], alone.boxes[0][fg])
    assert (batch.labels[1] == C).all() and batch.scores[1].abs().max() == 0
    # no gt at all in the batch
    empty = assigner(s1, b1, points, strides, torch.zeros(1, 0, 1, dtype=torch.long), torch.zeros(1, 0, 4),
                     torch.zeros(1, 0, 1), bg_index=C)
    assert empty.labels.shape == (1, len(points)) and (empty.labels == C).all()
    assert empty.boxes.shape == (1, len(points), 4) and empty.scores.shape == (1, len(points), C)
    assert empty.scores.abs().max() == 0
