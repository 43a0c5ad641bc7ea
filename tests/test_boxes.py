"""Decode, IoU and NMS behaviour on hand-made cases (tests/test_nms_fast.py proves NMS exact against oracles)."""
import torch

from ppyoloe_sod import boxes as B
from ppyoloe_sod.zoo import NMSSpec


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
