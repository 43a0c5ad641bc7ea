"""PP-YOLOE+ SOD training loss: varifocal classification + GIoU + distribution focal loss.

Numbers follow ppdet's ``PPYOLOEHead.get_loss`` (reference spec B.6): boxes are decoded in stride units,
the assigner sees them in pixels, every term is normalised by the sum of the assigned soft scores
(averaged over ranks under DDP, then clamped at 1), and the total is ``1.0 cls + 2.5 iou + 0.5 dfl``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..boxes import box_to_distance, dfl_distances, distance_to_box
from ..errors import ConfigError
from .assigner import Assignment, TaskAlignedAssignerCR

DEFAULT_LOSS_WEIGHTS = {"class": 1.0, "iou": 2.5, "dfl": 0.5}


def giou_loss(pred: Tensor, target: Tensor, eps: float = 1e-10) -> Tensor:
    """``1 - GIoU`` per row of ``[N, 4]`` xyxy boxes -> ``[N, 1]``.

    Areas are not clipped, as in the reference: an inverted predicted box (negative DFL distances) gives a
    negative area and is pushed back by the gradient.
    """
    px1, py1, px2, py2 = pred.unbind(-1)
    gx1, gy1, gx2, gy2 = target.unbind(-1)
    inter_w = (torch.minimum(px2, gx2) - torch.maximum(px1, gx1)).clamp(min=0)
    inter_h = (torch.minimum(py2, gy2) - torch.maximum(py1, gy1)).clamp(min=0)
    overlap = inter_w * inter_h
    union = (px2 - px1) * (py2 - py1) + (gx2 - gx1) * (gy2 - gy1) - overlap + eps
    iou = overlap / union
    hull = (torch.maximum(px2, gx2) - torch.minimum(px1, gx1)) * (torch.maximum(py2, gy2) - torch.minimum(py1, gy1))
    hull = hull + eps
    giou = iou - (hull - union) / hull
    return (1.0 - giou).unsqueeze(-1)


def dfl_loss(logits: Tensor, target: Tensor, lo: int) -> Tensor:
    """Distribution focal loss of ``logits [N, 4, bins]`` for continuous ``target [N, 4]`` -> ``[N, 1]``.

    The target (already clipped to ``[lo, hi - 1 - 0.01]``) is split between its two neighbouring bins,
    linearly; the loss is averaged over the four sides.
    """
    bins = logits.shape[-1]
    left = target.floor().long()
    right = left + 1
    w_left = right.to(target.dtype) - target
    w_right = 1.0 - w_left
    flat = logits.reshape(-1, bins)
    ce_left = F.cross_entropy(flat, (left - lo).reshape(-1), reduction="none").view_as(target)
    ce_right = F.cross_entropy(flat, (right - lo).reshape(-1), reduction="none").view_as(target)
    return (ce_left * w_left + ce_right * w_right).mean(-1, keepdim=True)


def varifocal_loss(logits: Tensor, soft: Tensor, onehot: Tensor, alpha: float = 0.75, gamma: float = 2.0) -> Tensor:
    """Summed varifocal loss; BCE with logits is used for stability (equal to BCE on sigmoid scores).

    The weight keeps its gradient through the predicted score, as in the reference.
    """
    p = logits.sigmoid()
    weight = alpha * p.pow(gamma) * (1.0 - onehot) + soft * onehot
    bce = F.binary_cross_entropy_with_logits(logits, soft, reduction="none")
    return (bce * weight).sum()


def ddp_mean(value: Tensor) -> Tensor:
    """Average a scalar over ranks when torch.distributed runs with several processes; else unchanged."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        world = torch.distributed.get_world_size()
        if world > 1:
            value = value.clone()
            torch.distributed.all_reduce(value)
            value = value / world
    return value


class DetectionLoss(nn.Module):
    """Loss of PP-YOLOE+ SOD from the raw head output and padded ground truth.

    ``normalizer`` maps the local sum of assigned scores to the value every term is divided by before the
    clamp at 1; the default averages it over DDP ranks as the reference does.
    """

    def __init__(
        self,
        num_classes: int,
        reg_range: Sequence[int],
        loss_weights: Mapping[str, float] | None = None,
        assigner: nn.Module | None = None,
        normalizer: Callable[[Tensor], Tensor] = ddp_mean,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        lo, hi = (int(v) for v in reg_range)
        if hi - lo < 2:
            raise ConfigError(f"reg_range must be (lo, hi) with hi - lo >= 2, got {tuple(reg_range)}")
        weights = dict(DEFAULT_LOSS_WEIGHTS if loss_weights is None else loss_weights)
        if set(weights) != set(DEFAULT_LOSS_WEIGHTS):
            raise ConfigError(
                f"loss_weights must have exactly the keys {sorted(DEFAULT_LOSS_WEIGHTS)}, got {sorted(weights)}"
            )
        self.num_classes = num_classes
        self.reg_range = (lo, hi)
        self.bins = hi - lo
        self.loss_weights = {k: float(v) for k, v in weights.items()}
        self.assigner = assigner if assigner is not None else TaskAlignedAssignerCR()
        self.normalizer = normalizer
        self.register_buffer("proj", torch.linspace(lo, hi - 1, self.bins), persistent=False)

    def decode(self, reg_logits: Tensor, points_s: Tensor) -> Tensor:
        """DFL logits ``[B, L, 4*bins]`` + anchor points in stride units ``[L, 2]`` -> xyxy boxes (stride units)."""
        return distance_to_box(points_s, dfl_distances(reg_logits, self.proj))

    def forward(
        self,
        raw: Any,
        points: Tensor,
        strides: Tensor,
        gt_labels: Tensor,
        gt_boxes: Tensor,
        pad_mask: Tensor,
    ) -> dict[str, Tensor]:
        """Loss terms for one batch.

        Args:
            raw: the model output ``RawOutput(cls_logits [B, L, C], reg_logits [B, L, 4*bins])`` (any pair).
            points: anchor centres in input pixels ``[L, 2]``; strides: ``[L, 1]``.
            gt_labels ``[B, n, 1]`` int, gt_boxes ``[B, n, 4]`` xyxy input pixels, pad_mask ``[B, n, 1]``.
        Returns:
            ``loss`` (weighted total), ``loss_cls``, ``loss_iou``, ``loss_dfl`` as 0-dim tensors.
        """
        cls_logits, reg_logits = raw
        cls_logits = cls_logits.float()
        reg_logits = reg_logits.float()
        self._check(cls_logits, reg_logits, points)
        points = points.float()
        strides = strides.float()
        points_s = points / strides
        pred_boxes = self.decode(reg_logits, points_s)

        target = self.assigner(
            cls_logits.detach().sigmoid(),
            pred_boxes.detach() * strides,
            points,
            strides,
            gt_labels,
            gt_boxes.float(),
            pad_mask.float(),
            bg_index=self.num_classes,
        )
        target = Assignment(target.labels, target.boxes / strides, target.scores)
        return self.loss_from_assignment(cls_logits, reg_logits, pred_boxes, points_s, target)

    def loss_from_assignment(
        self, cls_logits: Tensor, reg_logits: Tensor, pred_boxes: Tensor, points_s: Tensor, target: Assignment
    ) -> dict[str, Tensor]:
        """Loss terms given targets whose boxes are in stride units."""
        onehot = F.one_hot(target.labels, self.num_classes + 1)[..., : self.num_classes].to(cls_logits.dtype)
        loss_cls = varifocal_loss(cls_logits, target.scores, onehot)

        score_sum = self.normalizer(target.scores.sum()).clamp(min=1.0)
        loss_cls = loss_cls / score_sum

        positive = target.labels != self.num_classes
        if bool(positive.any()):
            weight = target.scores.sum(-1)[positive].unsqueeze(-1)  # [N, 1]
            box_target = target.boxes[positive]
            loss_iou = (giou_loss(pred_boxes[positive], box_target) * weight).sum() / score_sum
            lo, hi = self.reg_range
            anchors = points_s.unsqueeze(0).expand(positive.shape[0], -1, -1)[positive]
            ltrb = box_to_distance(anchors, box_target).clamp(lo, hi - 1 - 0.01)
            logits = reg_logits[positive].view(-1, 4, self.bins)
            loss_dfl = (dfl_loss(logits, ltrb, lo) * weight).sum() / score_sum
        else:
            loss_iou = cls_logits.new_zeros(())
            loss_dfl = reg_logits.sum() * 0.0  # keeps the regression branch in the graph (DDP)

        w = self.loss_weights
        total = w["class"] * loss_cls + w["iou"] * loss_iou + w["dfl"] * loss_dfl
        return {"loss": total, "loss_cls": loss_cls, "loss_iou": loss_iou, "loss_dfl": loss_dfl}

    def _check(self, cls_logits: Tensor, reg_logits: Tensor, points: Tensor) -> None:
        if cls_logits.dim() != 3 or cls_logits.shape[-1] != self.num_classes:
            raise ValueError(
                f"cls_logits must be [B, L, {self.num_classes}], got {tuple(cls_logits.shape)}; "
                "does the model's num_classes match the loss?"
            )
        expected = (*cls_logits.shape[:2], 4 * self.bins)
        if tuple(reg_logits.shape) != expected:
            raise ValueError(
                f"reg_logits must be {expected} for reg_range {self.reg_range}, got {tuple(reg_logits.shape)}"
            )
        if points.shape != (cls_logits.shape[1], 2):
            raise ValueError(f"points must be [{cls_logits.shape[1]}, 2], got {tuple(points.shape)}")
