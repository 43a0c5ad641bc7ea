"""Box geometry and post-processing: DFL decode, IoU, and multi-class NMS with Paddle's semantics."""
from __future__ import annotations

import numpy as np
import torch
import torchvision

from .zoo import NMSSpec


def dfl_distances(reg_logits: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:
    """[..., 4 * bins] DFL logits -> [..., 4] expected distances (in stride units) via softmax and projection."""
    bins = proj.numel()
    probs = reg_logits.reshape(*reg_logits.shape[:-1], 4, bins).softmax(dim=-1)
    return probs @ proj.to(probs.dtype)


def distance_to_box(points: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """Anchor points [..., 2] and (l, t, r, b) distances [..., 4] -> xyxy boxes."""
    lt, rb = dist.chunk(2, dim=-1)
    return torch.cat([points - lt, points + rb], dim=-1)


def box_to_distance(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Inverse of distance_to_box: xyxy boxes -> (l, t, r, b) distances from the points."""
    x1y1, x2y2 = boxes.chunk(2, dim=-1)
    return torch.cat([points - x1y1, x2y2 - points], dim=-1)


def decode(cls_logits: torch.Tensor, reg_logits: torch.Tensor, points: torch.Tensor, strides: torch.Tensor,
           proj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw head outputs -> (boxes [B, L, 4] xyxy in input pixels, scores [B, L, C] in 0..1)."""
    dist = dfl_distances(reg_logits, proj)
    boxes = distance_to_box(points / strides, dist) * strides
    return boxes, cls_logits.sigmoid()


def box_iou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """Pairwise IoU of xyxy boxes [..., N, 4] x [..., M, 4] -> [..., N, M] (no +1 on widths)."""
    area_a = (a[..., 2] - a[..., 0]).clamp(min=0) * (a[..., 3] - a[..., 1]).clamp(min=0)
    area_b = (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)
    lt = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
    rb = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=-1)
    return inter / (area_a[..., :, None] + area_b[..., None, :] - inter + eps)


def multiclass_nms(boxes: torch.Tensor, scores: torch.Tensor, nms: NMSSpec = NMSSpec()) -> torch.Tensor:
    """One image: boxes [L, 4], scores [L, C] -> detections [N, 6] = (class, score, x1, y1, x2, y2).

    Paddle's multiclass_nms3: per class keep scores > threshold (strict), the nms_top_k best, greedy NMS at a fixed
    IoU threshold (no +1); then the keep_top_k best over all classes; rows grouped by class ascending and by
    score descending within a class.
    """
    cand_idx, cand_cls = (scores > nms.score_threshold).nonzero(as_tuple=True)
    if cand_idx.numel() == 0:
        return boxes.new_zeros((0, 6))
    cand_scores = scores[cand_idx, cand_cls]
    # Per class top-k: sort by (class, -score) stably, then rank within class.
    order = torch.argsort(cand_scores, descending=True, stable=True)
    order = order[torch.argsort(cand_cls[order], stable=True)]
    cand_idx, cand_cls, cand_scores = cand_idx[order], cand_cls[order], cand_scores[order]
    counts = torch.bincount(cand_cls, minlength=scores.shape[1])
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(cand_cls.numel(), device=cand_cls.device) - starts[cand_cls]
    top = rank < nms.nms_top_k
    cand_idx, cand_cls, cand_scores = cand_idx[top], cand_cls[top], cand_scores[top]
    cand_boxes = boxes[cand_idx]
    # torchvision suppresses IoU > threshold, Paddle keeps IoU <= threshold: the same rule, once the threshold is
    # the float32 value Paddle compares against (torchvision compares the float IoU with a double).
    iou_thr = float(np.float32(nms.iou_threshold))
    keep = torchvision.ops.batched_nms(cand_boxes.float(), cand_scores.float(), cand_cls, iou_thr)
    if keep.numel() > nms.keep_top_k:
        best = torch.argsort(cand_scores[keep], descending=True, stable=True)[: nms.keep_top_k]
        keep = keep[best]
    # Regroup: class ascending, score descending (stable on the per-class order above).
    keep = keep.sort().values
    dets = torch.cat([cand_cls[keep, None].to(boxes.dtype), cand_scores[keep, None], cand_boxes[keep]], dim=1)
    return dets


def postprocess(cls_logits: torch.Tensor, reg_logits: torch.Tensor, points: torch.Tensor, strides: torch.Tensor,
                proj: torch.Tensor, scale_factor: torch.Tensor, nms: NMSSpec = NMSSpec()) -> list[torch.Tensor]:
    """Decode, map boxes to original-image pixels (divide by scale_factor (sy, sx)), NMS per image.

    Boxes are not clipped to the image (as in PaddleDetection); the predictor clips, as PaddleX does.
    """
    boxes, scores = decode(cls_logits, reg_logits, points, strides, proj)
    sy, sx = scale_factor[:, 0], scale_factor[:, 1]
    boxes = boxes / torch.stack([sx, sy, sx, sy], dim=1)[:, None, :].to(boxes.dtype)
    return [multiclass_nms(boxes[i], scores[i], nms) for i in range(boxes.shape[0])]
