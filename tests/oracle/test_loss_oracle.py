"""Our assigner and loss against ppdet's PPYOLOEHead.get_loss / TaskAlignedAssigner_CR on the same batch.

The ppdet head (SOD-S settings) gets randomised prediction layers and random features for a 4-image batch at
320x320 with different box counts, tiny boxes, a duplicated box and one image without boxes. Its logits are fed
to our loss; a torch copy of the head (our nn.PPYOLOEHead with the same weights) checks parameter gradients.
"""
from __future__ import annotations

import numpy as np
import paddle
import pytest
import torch
from ppdet.modeling.assigners import ATSSAssigner, TaskAlignedAssigner_CR
from ppdet.modeling.assigners.utils import generate_anchors_for_grid_cell
from ppdet.modeling.heads.ppyoloe_head import PPYOLOEHead as PaddleHead

from ppyoloe_sod.nn.head import PPYOLOEHead as TorchHead
from ppyoloe_sod.train.assigner import TaskAlignedAssignerCR
from ppyoloe_sod.train.losses import DetectionLoss
from ppyoloe_sod.weights.convert import paddle_key_to_torch

pytestmark = pytest.mark.oracle

IN_CHANNELS = [384, 192, 96]
NUM_CLASSES = 10
REG_RANGE = (-2, 8)
SIZE = 320
STRIDES = (32, 16, 8)
WEIGHTS = {"class": 1.0, "iou": 2.5, "dfl": 0.5}


def _gt_batch() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """4 images: 5 boxes (incl. tiny), 2 boxes, none, 8 boxes (a duplicate with another class, tiny, border)."""
    rng = np.random.default_rng(1)
    per_image = [
        [[10, 12, 60, 80], [100, 100, 104, 103], [150, 40, 300, 200], [33, 200, 35.5, 202], [250, 250, 319, 318]],
        [[40, 40, 90, 70], [200, 10, 240, 30]],
        [],
        [[5, 5, 25, 20], [5, 5, 25, 20], [120, 130, 126, 139], [0, 290, 30, 320], [64, 64, 128, 128],
         [70, 60, 120, 140], [160, 161, 163, 162.5], [300, 0, 320, 8]],
    ]
    n = max(len(b) for b in per_image)
    labels = np.zeros((len(per_image), n, 1), np.int64)
    boxes = np.zeros((len(per_image), n, 4), np.float32)
    mask = np.zeros((len(per_image), n, 1), np.float32)
    for i, b in enumerate(per_image):
        if b:
            boxes[i, : len(b)] = np.asarray(b, np.float32)
            labels[i, : len(b), 0] = rng.integers(0, NUM_CLASSES, len(b))
            mask[i, : len(b)] = 1
    labels[3, 1, 0] = (labels[3, 0, 0] + 3) % NUM_CLASSES  # same box, different class
    return labels, boxes, mask


def _paddle_head() -> PaddleHead:
    paddle.seed(0)
    head = PaddleHead(
        in_channels=IN_CHANNELS, num_classes=NUM_CLASSES, act="swish", fpn_strides=list(STRIDES),
        grid_cell_scale=5.0, grid_cell_offset=0.5, reg_range=list(REG_RANGE), static_assigner_epoch=-1,
        use_varifocal_loss=True, static_assigner=ATSSAssigner(topk=9, num_classes=NUM_CLASSES),
        assigner=TaskAlignedAssigner_CR(topk=13, alpha=1.0, beta=6.0, center_radius=1.0),
        eval_size=None, loss_weight=dict(WEIGHTS), trt=False)
    rng = np.random.default_rng(2)
    for name, p in head.named_parameters():
        if name.startswith("pred_cls") or name.startswith("pred_reg"):
            if name.endswith("weight"):
                v = rng.normal(0, 0.01, p.shape)
            else:
                v = rng.normal(-1.0, 0.3, p.shape) if name.startswith("pred_cls") else rng.normal(0, 0.5, p.shape)
            p.set_value(v.astype("float32"))
    head.eval()  # BN on running statistics (the features are random anyway)
    return head


class Reference:
    """Everything ppdet computes for the batch, as numpy."""

    def __init__(self) -> None:
        self.head = head = _paddle_head()
        rng = np.random.default_rng(3)
        batch = 4
        self.feats_np = [rng.normal(0, 1, (batch, c, SIZE // s, SIZE // s)).astype("float32")
                         for c, s in zip(IN_CHANNELS, STRIDES)]
        self.labels, self.boxes, self.mask = _gt_batch()
        feats = [paddle.to_tensor(f) for f in self.feats_np]

        # the inputs of the prediction convs, then the convs themselves so their weights get gradients
        self.x_cls, self.x_reg = [], []
        cls_list, reg_list = [], []
        for i, f in enumerate(feats):
            avg = paddle.nn.functional.adaptive_avg_pool2d(f, (1, 1))
            xc = (head.stem_cls[i](f, avg) + f).detach()
            xr = head.stem_reg[i](f, avg).detach()
            self.x_cls.append(xc.numpy())
            self.x_reg.append(xr.numpy())
            cls_list.append(head.pred_cls[i](xc).flatten(2).transpose([0, 2, 1]))
            reg_list.append(head.pred_reg[i](xr).flatten(2).transpose([0, 2, 1]))
        cls_logits = paddle.concat(cls_list, 1)
        reg_logits = paddle.concat(reg_list, 1)
        anchors, points, num_list, strides = generate_anchors_for_grid_cell(
            feats, head.fpn_strides, head.grid_cell_scale, head.grid_cell_offset)
        gt = {"gt_class": paddle.to_tensor(self.labels), "gt_bbox": paddle.to_tensor(self.boxes),
              "pad_gt_mask": paddle.to_tensor(self.mask), "epoch_id": 0}
        scores = paddle.nn.functional.sigmoid(cls_logits)
        losses = head.get_loss([scores, reg_logits, anchors, points, num_list, strides], gt)
        params = [p for i in range(3) for p in (head.pred_cls[i].weight, head.pred_cls[i].bias,
                                                head.pred_reg[i].weight, head.pred_reg[i].bias)]
        grads = paddle.grad([losses["loss"]], [cls_logits, reg_logits, *params])
        self.losses = {k: float(v.numpy().reshape(-1)[0]) for k, v in losses.items()}
        self.grad_cls, self.grad_reg = grads[0].numpy(), grads[1].numpy()
        self.param_grads = {n: g.numpy() for n, g in zip(self._param_names(), grads[2:])}
        self.cls_logits, self.reg_logits = cls_logits.numpy(), reg_logits.numpy()
        self.points, self.strides = points.numpy(), strides.numpy()

        # the assigner on exactly what get_loss gives it
        pred_boxes = head._bbox_decode(points / strides, reg_logits)
        self.pred_boxes_px = (pred_boxes * strides).numpy()
        out = head.assigner(scores.detach(), (pred_boxes * strides).detach(), points, strides,
                            gt["gt_class"], gt["gt_bbox"], gt["pad_gt_mask"], bg_index=NUM_CLASSES)
        self.assigned = [o.numpy() for o in out[:3]]
        self.num_positive_per_gt = out[3].numpy().sum(-1)

    @staticmethod
    def _param_names() -> list[str]:
        return [n for i in range(3) for n in (f"pred_cls.{i}.weight", f"pred_cls.{i}.bias",
                                              f"pred_reg.{i}.weight", f"pred_reg.{i}.bias")]


@pytest.fixture(scope="module")
def ref() -> Reference:
    return Reference()


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| relative to the largest magnitude of the reference b."""
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x))


def test_assigner_matches_ppdet(ref: Reference) -> None:
    loss = DetectionLoss(NUM_CLASSES, REG_RANGE)
    points, strides = _t(ref.points), _t(ref.strides)
    boxes = loss.decode(_t(ref.reg_logits), points / strides) * strides
    box_diff = float(np.abs(boxes.numpy() - ref.pred_boxes_px).max())
    print(f"decoded boxes max diff {box_diff:.2e} px")
    assert box_diff < 1e-4

    # exactly ppdet's decoded boxes in, so that top-k near-ties cannot flip on rounding
    labels, assigned_boxes, scores = TaskAlignedAssignerCR(topk=13, alpha=1.0, beta=6.0, center_radius=1.0)(
        _t(ref.cls_logits).sigmoid(), _t(ref.pred_boxes_px), points, strides,
        _t(ref.labels), _t(ref.boxes), _t(ref.mask), bg_index=NUM_CLASSES)
    ref_labels, ref_boxes, ref_scores = ref.assigned
    num_fg = int((ref_labels != NUM_CLASSES).sum())
    print(f"positives {num_fg}; per gt {ref.num_positive_per_gt.astype(int).tolist()}")
    print(f"box diff {np.abs(assigned_boxes.numpy() - ref_boxes).max():.2e}, "
          f"score diff {np.abs(scores.numpy() - ref_scores).max():.2e}")
    assert num_fg > 20
    assert (ref_labels[2] == NUM_CLASSES).all()  # the image without boxes
    np.testing.assert_array_equal(labels.numpy(), ref_labels.astype(np.int64))
    np.testing.assert_allclose(assigned_boxes.numpy(), ref_boxes, rtol=0, atol=1e-5)
    np.testing.assert_allclose(scores.numpy(), ref_scores, rtol=0, atol=1e-5)


def test_loss_and_logit_gradients_match_ppdet(ref: Reference) -> None:
    cls_logits = _t(ref.cls_logits).requires_grad_()
    reg_logits = _t(ref.reg_logits).requires_grad_()
    out = DetectionLoss(NUM_CLASSES, REG_RANGE, WEIGHTS)(
        (cls_logits, reg_logits), _t(ref.points), _t(ref.strides), _t(ref.labels), _t(ref.boxes), _t(ref.mask))
    out["loss"].backward()
    for key in ("loss", "loss_cls", "loss_iou", "loss_dfl"):
        ours, theirs = out[key].item(), ref.losses[key]
        print(f"{key}: ours {ours:.7f} ppdet {theirs:.7f} rel {abs(ours - theirs) / abs(theirs):.2e}")
        assert theirs > 0
        assert abs(ours - theirs) <= 1e-4 * abs(theirs)
    g_cls, g_reg = _rel(cls_logits.grad.numpy(), ref.grad_cls), _rel(reg_logits.grad.numpy(), ref.grad_reg)
    print(f"d loss / d cls_logits rel {g_cls:.2e}; d loss / d reg_logits rel {g_reg:.2e}")
    assert g_cls <= 1e-4 and g_reg <= 1e-4
    assert np.abs(ref.grad_reg).max() > 0


def test_parameter_gradients_match_ppdet(ref: Reference) -> None:
    head = TorchHead(IN_CHANNELS, NUM_CLASSES, REG_RANGE, STRIDES)
    state = {paddle_key_to_torch(k): torch.from_numpy(v.numpy()) for k, v in ref.head.state_dict().items()}
    missing, unexpected = head.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing)
    cls_list, reg_list = [], []
    for i in range(3):
        cls_list.append(head.pred_cls[i](_t(ref.x_cls[i])).flatten(2).transpose(1, 2))
        reg_list.append(head.pred_reg[i](_t(ref.x_reg[i])).flatten(2).transpose(1, 2))
    cls_logits, reg_logits = torch.cat(cls_list, 1), torch.cat(reg_list, 1)
    assert _rel(cls_logits.detach().numpy(), ref.cls_logits) < 1e-5
    points, strides = head.anchors(SIZE, SIZE)
    assert np.array_equal(points.numpy(), ref.points) and np.array_equal(strides.numpy(), ref.strides)
    out = DetectionLoss(NUM_CLASSES, REG_RANGE, WEIGHTS)(
        (cls_logits, reg_logits), points, strides, _t(ref.labels), _t(ref.boxes), _t(ref.mask))
    out["loss"].backward()
    rel_loss = abs(out["loss"].item() - ref.losses["loss"]) / ref.losses["loss"]
    print(f"loss rel diff (torch convs) {rel_loss:.2e}")
    assert rel_loss <= 1e-4
    named = dict(head.named_parameters())
    for name, g_ref in ref.param_grads.items():
        rel = _rel(named[name].grad.numpy(), g_ref)
        print(f"grad {name}: rel {rel:.2e} (max |g| {np.abs(g_ref).max():.2e})")
        assert rel <= 1e-4, name


def test_batch_without_boxes_matches_ppdet(ref: Reference) -> None:
    """ppdet crashes on n = 0, so its all-padding batch (n = 1) is the reference for our n = 0 and n = 1."""
    head = ref.head
    cls_logits = paddle.to_tensor(ref.cls_logits, stop_gradient=False)
    reg_logits = paddle.to_tensor(ref.reg_logits, stop_gradient=False)
    feats = [paddle.to_tensor(f) for f in ref.feats_np]
    anchors, points, num_list, strides = generate_anchors_for_grid_cell(
        feats, head.fpn_strides, head.grid_cell_scale, head.grid_cell_offset)
    batch = ref.cls_logits.shape[0]
    gt = {"gt_class": paddle.zeros([batch, 1, 1], "int64"), "gt_bbox": paddle.zeros([batch, 1, 4]),
          "pad_gt_mask": paddle.zeros([batch, 1, 1]), "epoch_id": 0}
    losses = head.get_loss([paddle.nn.functional.sigmoid(cls_logits), reg_logits, anchors, points, num_list,
                            strides], gt)
    g_ref = paddle.grad([losses["loss"]], [cls_logits])[0].numpy()
    theirs = float(losses["loss"].numpy().reshape(-1)[0])
    loss_fn = DetectionLoss(NUM_CLASSES, REG_RANGE, WEIGHTS)
    for n in (0, 1):
        cls_t = _t(ref.cls_logits).requires_grad_()
        reg_t = _t(ref.reg_logits).requires_grad_()
        out = loss_fn((cls_t, reg_t), _t(ref.points), _t(ref.strides), torch.zeros(batch, n, 1, dtype=torch.long),
                      torch.zeros(batch, n, 4), torch.zeros(batch, n, 1))
        out["loss"].backward()
        print(f"n={n}: ours {out['loss'].item():.7f} ppdet {theirs:.7f}")
        assert abs(out["loss"].item() - theirs) <= 1e-4 * theirs
        assert out["loss_iou"].item() == 0 and out["loss_dfl"].item() == 0
        assert _rel(cls_t.grad.numpy(), g_ref) <= 1e-4
        assert reg_t.grad is not None and float(reg_t.grad.abs().max()) == 0
