"""Loss pieces against independent formulas, DetectionLoss bookkeeping, and a tiny fit that must learn."""
from __future__ import annotations

import math

import pytest
import torch
import torchvision

from ppyoloe_sod.errors import ConfigError
from ppyoloe_sod.train.losses import DetectionLoss, dfl_loss, giou_loss, varifocal_loss

C = 4
REG = (-2, 8)


def _anchors(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    pts, strd = [], []
    for s in (32, 16, 8):
        n = size // s
        ys, xs = torch.meshgrid(torch.arange(n) + 0.5, torch.arange(n) + 0.5, indexing="ij")
        pts.append(torch.stack([xs, ys], -1).reshape(-1, 2) * s)
        strd.append(torch.full((n * n, 1), float(s)))
    return torch.cat(pts), torch.cat(strd)


def test_giou_loss_matches_torchvision() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.rand(50, 2, generator=g) * 10
    b = torch.rand(50, 2, generator=g) * 10
    pred = torch.cat([a, a + 0.5 + torch.rand(50, 2, generator=g) * 5], 1)
    gt = torch.cat([b, b + 0.5 + torch.rand(50, 2, generator=g) * 5], 1)
    expected = torchvision.ops.generalized_box_iou_loss(pred, gt, reduction="none")
    torch.testing.assert_close(giou_loss(pred, gt).squeeze(-1), expected, rtol=1e-5, atol=1e-6)
    assert giou_loss(gt, gt).abs().max() < 1e-6


def test_dfl_loss_splits_target_between_neighbouring_bins() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 4, 10, generator=g)
    target = torch.tensor([[-2.0, 0.0, 3.0, 6.99]] * 3 + [[-1.75, 0.5, 2.25, 6.0]] * 3)
    logp = logits.log_softmax(-1)
    expected = torch.zeros(6)
    for n in range(6):
        for side in range(4):
            t = float(target[n, side])
            k = math.floor(t)
            frac = t - k
            expected[n] -= ((1 - frac) * logp[n, side, k + 2] + frac * logp[n, side, k + 3]) / 4
    torch.testing.assert_close(dfl_loss(logits, target, lo=-2).squeeze(-1), expected, rtol=1e-5, atol=1e-6)


def test_varifocal_loss_equals_bce_on_probabilities() -> None:
    g = torch.Generator().manual_seed(2)
    logits = (torch.randn(2, 30, C, generator=g) * 3).requires_grad_()
    labels = torch.randint(0, C + 1, (2, 30), generator=g)
    onehot = torch.nn.functional.one_hot(labels, C + 1)[..., :C].float()
    soft = onehot * torch.rand(2, 30, 1, generator=g)
    ours = varifocal_loss(logits, soft, onehot)
    (g_ours,) = torch.autograd.grad(ours, logits)
    p = logits.sigmoid()
    weight = 0.75 * p**2 * (1 - onehot) + soft * onehot
    reference = (-(soft * p.log() + (1 - soft) * (1 - p).log()) * weight).sum()
    (g_ref,) = torch.autograd.grad(reference, logits)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-4, atol=1e-5)


def _batch(size: int = 64):
    points, strides = _anchors(size)
    g = torch.Generator().manual_seed(3)
    cls = torch.randn(2, len(points), C, generator=g) * 0.5 - 2
    reg = torch.randn(2, len(points), 4 * (REG[1] - REG[0]), generator=g)
    labels = torch.tensor([[[1], [3]], [[0], [0]]])
    boxes = torch.tensor([[[10.0, 10.0, 30.0, 26.0], [40.0, 36.0, 44.0, 41.0]], [[5.0, 40.0, 60.0, 60.0], [0, 0, 0, 0]]])
    mask = torch.tensor([[[1.0], [1.0]], [[1.0], [0.0]]])
    return cls, reg, points, strides, labels, boxes, mask


def test_total_is_weighted_sum_and_normaliser_hook_applies() -> None:
    cls, reg, points, strides, labels, boxes, mask = _batch()
    out = DetectionLoss(C, REG)((cls, reg), points, strides, labels, boxes, mask)
    assert all(out[k].item() > 0 for k in ("loss_cls", "loss_iou", "loss_dfl"))
    expected = out["loss_cls"] + 2.5 * out["loss_iou"] + 0.5 * out["loss_dfl"]
    torch.testing.assert_close(out["loss"], expected)
    w = {"class": 2.0, "iou": 0.0, "dfl": 1.0}
    out_w = DetectionLoss(C, REG, loss_weights=w)((cls, reg), points, strides, labels, boxes, mask)
    torch.testing.assert_close(out_w["loss"], 2 * out["loss_cls"] + out["loss_dfl"])

    seen = []

    def normaliser(s: torch.Tensor) -> torch.Tensor:
        seen.append(s.item())
        return s * 10  # e.g. a DDP mean over ranks holding more positives

    out_n = DetectionLoss(C, REG, normalizer=normaliser)((cls, reg), points, strides, labels, boxes, mask)
    assert len(seen) == 1 and seen[0] > 0
    scale = max(seen[0], 1.0) / max(10 * seen[0], 1.0)
    for k in ("loss_cls", "loss_iou", "loss_dfl"):
        torch.testing.assert_close(out_n[k], out[k] * scale)


def test_half_precision_logits_and_bad_shapes() -> None:
    cls, reg, points, strides, labels, boxes, mask = _batch()
    loss = DetectionLoss(C, REG)
    out32 = loss((cls, reg), points, strides, labels, boxes, mask)
    out16 = loss((cls.bfloat16(), reg.bfloat16()), points, strides, labels, boxes, mask)
    assert out16["loss"].dtype == torch.float32
    assert abs(out16["loss"].item() - out32["loss"].item()) < 0.05 * out32["loss"].item()
    with pytest.raises(ValueError, match="reg_logits"):
        loss((cls, reg[..., :-1]), points, strides, labels, boxes, mask)
    with pytest.raises(ValueError, match="num_classes"):
        loss((cls[..., :-1], reg), points, strides, labels, boxes, mask)
    with pytest.raises(ConfigError, match="loss_weights"):
        DetectionLoss(C, REG, loss_weights={"class": 1.0, "giou": 2.5, "dfl": 0.5})


def test_fitting_free_logits_recovers_the_boxes() -> None:
    """Gradient descent on per-anchor logits alone must drive the loss down and put the best box on the gt."""
    cls, reg, points, strides, labels, boxes, mask = _batch()
    cls = cls.clone().requires_grad_()
    reg = (reg * 0.1).requires_grad_()
    loss_fn = DetectionLoss(C, REG)
    opt = torch.optim.Adam([cls, reg], lr=0.05)
    history = []
    for _ in range(100):
        out = loss_fn((cls, reg), points, strides, labels, boxes, mask)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        history.append(out["loss"].item())
    assert history[-1] < 0.3 * history[0]
    assert sum(history[-10:]) < sum(history[:10])
    with torch.no_grad():
        pred = loss_fn.decode(reg, points / strides) * strides
        scores = cls.sigmoid()
    for b, n in ((0, 0), (0, 1), (1, 0)):
        k = int(labels[b, n])
        best = int(scores[b, :, k].argmax())
        iou = torchvision.ops.box_iou(pred[b, best : best + 1], boxes[b, n : n + 1]).item()
        assert iou > 0.7, (b, n, iou)
        assert scores[b, best, k] > 0.5
    assert scores[1, :, 1:].max() < 0.2  # classes nobody has in image 1 are pushed down


def test_loss_on_the_real_detector_backpropagates() -> None:
    from ppyoloe_sod.nn.detector import Detector
    from ppyoloe_sod.zoo import get_spec

    torch.manual_seed(0)
    model = Detector(get_spec("PP-YOLOE_plus_SOD-S").arch).train()
    for conv in [*model.yolo_head.pred_cls, *model.yolo_head.pred_reg]:
        torch.nn.init.normal_(conv.weight, std=0.01)  # the reference init (zeros) would stop gradients here
    images = torch.rand(2, 3, 64, 96)
    raw = model(images)
    points, strides = model.anchors(64, 96)
    boxes = torch.tensor([[[10.0, 10.0, 30.0, 26.0]], [[50.0, 5.0, 90.0, 60.0]]])
    out = DetectionLoss(10, model.reg_range)(raw, points, strides, torch.tensor([[[3]], [[7]]]), boxes,
                                             torch.ones(2, 1, 1))
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    assert model.backbone.stem[0].conv.weight.grad.abs().sum() > 0
    assert model.yolo_head.pred_reg[2].weight.grad.abs().sum() > 0


def _ddp_worker(rank: int, init_file: str, results) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        cls, reg, points, strides, labels, boxes, mask = _batch()
        # each rank holds one image; the normaliser is the mean of both ranks' assigned-score sums
        out = DetectionLoss(C, REG)((cls[rank : rank + 1], reg[rank : rank + 1]), points, strides,
                                    labels[rank : rank + 1], boxes[rank : rank + 1], mask[rank : rank + 1])
        results[rank] = {k: v.item() for k, v in out.items()}
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow  # two spawned processes import torch (~40 s on 2 busy cores)
def test_normaliser_is_averaged_over_ddp_ranks(tmp_path) -> None:
    import torch.multiprocessing as mp

    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_ddp_worker, args=(str(tmp_path / "init"), results), nprocs=2, join=True)
        results = dict(results)
    cls, reg, points, strides, labels, boxes, mask = _batch()
    sums, singles = [], []
    for r in range(2):
        seen = []
        single = DetectionLoss(C, REG, normalizer=lambda s: seen.append(s.item()) or s)(
            (cls[r : r + 1], reg[r : r + 1]), points, strides, labels[r : r + 1], boxes[r : r + 1], mask[r : r + 1])
        sums.append(seen[0])
        singles.append(single)
    mean = max(sum(sums) / 2, 1.0)
    for r in range(2):
        for k in ("loss_cls", "loss_iou", "loss_dfl"):
            expected = singles[r][k].item() * max(sums[r], 1.0) / mean
            assert results[r][k] == pytest.approx(expected, rel=1e-5), (r, k)
    assert sums[0] != sums[1]
