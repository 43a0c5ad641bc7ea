"""Task-aligned label assignment with a centre region (TOOD + "CR"), as PP-YOLOE+ SOD trains.

Each ground-truth box picks the ``topk`` anchors with the best alignment metric
``score^alpha * IoU^beta`` among all levels; a pick counts as positive only if the anchor point lies in the
box or in a square of half-side ``center_radius * stride`` around the box centre. Tiny boxes that contain no
anchor point get a +1 bonus on centre-region anchors so they always find some. Behaviour (tie rules, padding,
the IoU flavour) follows ppdet's ``TaskAlignedAssigner_CR`` so the targets are identical.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..boxes import box_iou


class Assignment(NamedTuple):
    """Per-anchor training targets."""

    labels: Tensor  # [B, L] int64, background = bg_index
    boxes: Tensor  # [B, L, 4] xyxy, same units as the gt boxes (gt 0 of the image for background anchors)
    scores: Tensor  # [B, L, C] soft IoU-aware targets, 0 for background


def _points_in_boxes(points: Tensor, boxes: Tensor, radius: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """(inside the box, inside the centre square of half-side ``radius``), each bool ``[B, n, L]``.

    "Inside" means every one of the four distances to the sides exceeds ``eps``.
    """
    x = points[:, 0].view(1, 1, -1)
    y = points[:, 1].view(1, 1, -1)
    x1, y1, x2, y2 = (boxes[..., i : i + 1] for i in range(4))  # [B, n, 1]
    inside = ((x - x1) > eps) & ((y - y1) > eps) & ((x2 - x) > eps) & ((y2 - y) > eps)
    cx = (x1 + x2) * 0.5
    cy = (y1 + y2) * 0.5
    r = radius.view(1, 1, -1)
    in_center = ((x - (cx - r)) > eps) & ((y - (cy - r)) > eps) & (((cx + r) - x) > eps) & (((cy + r) - y) > eps)
    return inside, in_center


class TaskAlignedAssignerCR(nn.Module):
    """Assigns each anchor to at most one gt box; see the module docstring. Has no parameters."""

    def __init__(
        self,
        topk: int = 13,
        alpha: float = 1.0,
        beta: float = 6.0,
        center_radius: float = 1.0,
        eps: float = 1e-9,
    ) -> None:
        super().__init__()
        self.topk = topk
        self.alpha = alpha
        self.beta = beta
        self.center_radius = center_radius
        self.eps = eps

    @torch.no_grad()
    def forward(
        self,
        pred_scores: Tensor,
        pred_boxes: Tensor,
        points: Tensor,
        strides: Tensor,
        gt_labels: Tensor,
        gt_boxes: Tensor,
        pad_mask: Tensor,
        bg_index: int,
    ) -> Assignment:
        """Targets for one batch.

        Args:
            pred_scores: sigmoid class scores ``[B, L, C]``.
            pred_boxes: predicted xyxy boxes in input pixels ``[B, L, 4]``.
            points: anchor centres in pixels ``[L, 2]``; strides: ``[L, 1]``.
            gt_labels: ``[B, n, 1]`` int class ids; gt_boxes: ``[B, n, 4]`` xyxy pixels;
            pad_mask: ``[B, n, 1]``, 1 for a real box, 0 for padding.
            bg_index: label given to background anchors (the number of classes).
        """
        if pred_scores.dim() != 3 or pred_boxes.shape != (*pred_scores.shape[:2], 4):
            raise ValueError(
                f"pred_scores must be [B, L, C] and pred_boxes [B, L, 4]; got {tuple(pred_scores.shape)} "
                f"and {tuple(pred_boxes.shape)}"
            )
        if gt_boxes.dim() != 3 or gt_labels.shape[:2] != gt_boxes.shape[:2] or pad_mask.shape[:2] != gt_boxes.shape[:2]:
            raise ValueError(
                f"gt_labels [B, n, 1], gt_boxes [B, n, 4] and pad_mask [B, n, 1] must agree; got "
                f"{tuple(gt_labels.shape)}, {tuple(gt_boxes.shape)}, {tuple(pad_mask.shape)}"
            )
        batch, num_anchors, num_classes = pred_scores.shape
        num_gt = gt_boxes.shape[1]
        device, dtype = pred_scores.device, pred_scores.dtype
        if num_gt == 0:
            return Assignment(
                torch.full((batch, num_anchors), bg_index, dtype=torch.long, device=device),
                torch.zeros(batch, num_anchors, 4, dtype=dtype, device=device),
                torch.zeros(batch, num_anchors, num_classes, dtype=dtype, device=device),
            )
        labels = gt_labels.reshape(batch, num_gt).long()
        valid = pad_mask.reshape(batch, num_gt, 1) > 0
        # Padded rows get finite junk metrics; they are excluded from ``positive`` and nothing else reads them.

        ious = box_iou(gt_boxes, pred_boxes)  # [B, n, L]; eps 1e-9, inverted boxes count as empty
        # score of each gt's class at every anchor
        cls_scores = pred_scores.transpose(1, 2).gather(1, labels.unsqueeze(-1).expand(-1, -1, num_anchors))
        metric = cls_scores.pow(self.alpha) * ious.pow(self.beta)

        in_gt, in_center = _points_in_boxes(points, gt_boxes, strides * self.center_radius, 1e-9)
        no_point_inside = ~in_gt.any(-1, keepdim=True)
        candidate = torch.where(no_point_inside & in_center, metric + 1.0, metric)

        k = min(self.topk, num_anchors)
        topk_idx = candidate.topk(k, dim=-1).indices
        in_topk = torch.zeros_like(in_gt).scatter_(-1, topk_idx, True)
        positive = in_topk & (in_gt | in_center) & valid  # [B, n, L] bool

        # an anchor claimed by several gts keeps the one it overlaps most (first on ties)
        claims = positive.sum(-2)  # [B, L]
        multiple = claims > 1
        if bool(multiple.any()):
            best = torch.where(positive, ious, 0.0).argmax(-2)  # [B, L]
            best_onehot = torch.zeros_like(positive).scatter_(1, best.unsqueeze(1), True)
            positive = torch.where(multiple.unsqueeze(1), best_onehot, positive)
        gt_index = positive.to(torch.uint8).argmax(-2)  # [B, L]; 0 where nothing is assigned

        is_fg = claims > 0
        assigned_labels = torch.where(is_fg, labels.gather(1, gt_index), torch.full_like(gt_index, bg_index))
        assigned_boxes = gt_boxes.gather(1, gt_index.unsqueeze(-1).expand(-1, -1, 4))

        keep = [c for c in range(num_classes + 1) if c != bg_index]
        onehot = torch.nn.functional.one_hot(assigned_labels, num_classes + 1)[..., keep].to(dtype)

        metric = torch.where(positive, metric, 0.0)
        max_metric = metric.amax(-1, keepdim=True)
        max_iou = torch.where(positive, ious, 0.0).amax(-1, keepdim=True)
        soft = (metric / (max_metric + self.eps) * max_iou).amax(-2).unsqueeze(-1)  # [B, L, 1]
        return Assignment(assigned_labels, assigned_boxes, onehot * soft)
