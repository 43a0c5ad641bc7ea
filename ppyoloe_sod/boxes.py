"""Box geometry and post-processing: DFL decode, IoU, and multi-class NMS with Paddle's semantics."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

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


_NMS_FIRST_BATCH = 1024  # best candidates ranked by top-k before the rest is sorted: usually all that is visited
_NMS_CHUNK = 4096  # candidates checked at once against the boxes already kept (at most keep_top_k)
_NMS_BLOCK = 512  # candidates resolved together: bounds the same-class pairs compared at once


def multiclass_nms(boxes: torch.Tensor, scores: torch.Tensor, nms: NMSSpec = NMSSpec()) -> torch.Tensor:
    """One image: boxes [L, 4], scores [L, C] -> detections [N, 6] = (class, score, x1, y1, x2, y2).

    Paddle's multiclass_nms3 CPU kernel, bit for bit: per class, scores > threshold (strict), the nms_top_k best
    (ties: lower anchor first), greedy NMS keeping a box while its overlap with every kept box is <= the IoU
    threshold (float32, no +1); then the keep_top_k best over all classes (ties: lower class, then lower anchor);
    rows grouped by class ascending and by score descending within a class. Decisions are made in float32 as
    Paddle's kernel does; the rows carry the input values.

    Per-class greedy NMS only looks at earlier boxes of the same class, so visiting all candidates in that global
    order gives every class the verdicts it would get alone, and the first keep_top_k kept are exactly Paddle's
    survivors: the search stops there instead of running NMS over every class's full list (84,000 candidates
    for a random head at 640 px).
    """
    num_anchors = scores.shape[0]
    corners = boxes.detach().float().T.contiguous()
    kept = _greedy_nms(corners, num_anchors, _ranked_candidates(scores, nms), float(np.float32(nms.iou_threshold)),
                       nms.keep_top_k)
    kept = kept[torch.argsort(kept // num_anchors, stable=True)]  # class ascending; score order within a class
    cls, anchor = kept // num_anchors, kept % num_anchors
    return torch.cat([cls[:, None].to(boxes.dtype), scores[anchor, cls][:, None], boxes[anchor]], dim=1)


def _ranked_candidates(scores: torch.Tensor, nms: NMSSpec) -> Iterator[torch.Tensor]:
    """Candidate ids (class * L + anchor) in Paddle's order (score descending, then class, then anchor), in 2 batches.

    The first batch is every candidate scoring at least the _NMS_FIRST_BATCH-th best score (ties whole), found by
    top-k; the second is the rest. Usually keep_top_k are kept within the first, and sorting all L x C scores
    (the second batch) would cost more than the NMS itself.
    """
    class_scores = scores.detach().float().T.contiguous()  # [C, L]: ascending ids follow Paddle's order among ties
    candidate = class_scores > nms.score_threshold
    if class_scores.shape[1] > nms.nms_top_k:
        candidate = _first_k_per_class(class_scores, candidate, nms.nms_top_k)
    ids = candidate.view(-1).nonzero()[:, 0]
    id_scores = class_scores.view(-1)[ids]
    if ids.numel() > _NMS_FIRST_BATCH:
        first = id_scores >= id_scores.topk(_NMS_FIRST_BATCH).values[-1]
        yield ids[first][torch.argsort(id_scores[first], descending=True, stable=True)]
        ids, id_scores = ids[~first], id_scores[~first]
    yield ids[torch.argsort(id_scores, descending=True, stable=True)]


def _first_k_per_class(class_scores: torch.Tensor, candidate: torch.Tensor, k: int) -> torch.Tensor:
    """Narrow the candidate mask [C, L] to each class's k best (nms_top_k), ties going to the lower anchor."""
    masked = torch.where(candidate, class_scores, float("-inf"))
    kth = masked.topk(k, dim=1).values[:, -1:]
    above = masked > kth
    at_kth = candidate & (masked == kth)
    room = k - above.sum(dim=1, keepdim=True)
    return candidate & (above | (at_kth & (at_kth.cumsum(dim=1) <= room)))


def _greedy_nms(corners: torch.Tensor, num_anchors: int, batches: Iterator[torch.Tensor], iou_threshold: float,
                limit: int) -> torch.Tensor:
    """Ids kept by per-class greedy NMS over candidates met in the given order, stopping once `limit` are kept.

    Candidates are first checked in large chunks against the boxes kept so far (cheap: those are few), which
    drops most of them in crowded scenes; the rest is resolved in blocks, each checked against what the blocks
    before it kept.
    """
    areas = _paddle_areas(corners)
    kept = torch.zeros(0, dtype=torch.long, device=corners.device)
    for batch in batches:
        for chunk in batch.split(_NMS_CHUNK):
            chunk = chunk[~_suppressed_by(corners, areas, chunk, kept, num_anchors, iou_threshold)]
            checked = kept.numel()
            for block in chunk.split(_NMS_BLOCK):
                block = block[~_suppressed_by(corners, areas, block, kept[checked:], num_anchors, iou_threshold)]
                kept = torch.cat([kept, block[_greedy_within(corners, areas, block, num_anchors, iou_threshold)]])
                if kept.numel() >= limit:
                    return kept[:limit]
    return kept


def _suppressed_by(corners: torch.Tensor, areas: torch.Tensor, ids: torch.Tensor, kept: torch.Tensor,
                   num_anchors: int, iou_threshold: float) -> torch.Tensor:
    """Mask over ids: suppressed by some kept box of the same class."""
    rows, cols = _same_class_pairs(ids, kept, num_anchors)
    hit = _paddle_suppresses(corners, areas, ids[rows] % num_anchors, kept[cols] % num_anchors, iou_threshold)
    return _rows_with(rows, hit, ids.numel())


def _greedy_within(corners: torch.Tensor, areas: torch.Tensor, block: torch.Tensor, num_anchors: int,
                   iou_threshold: float) -> torch.Tensor:
    """Greedy NMS inside a block of ids in visiting order -> keep mask, without a Python loop over boxes.

    A box is kept once every earlier box that would suppress it is dropped, and dropped once one of them is kept.
    Each round decides at least the first undecided box, and every round after the first needs a box kept in the
    round before, so there are at most (boxes kept) + 1 rounds.
    """
    n = block.numel()
    rows, cols = _same_class_pairs(block, block, num_anchors, earlier_only=True)
    hit = _paddle_suppresses(corners, areas, block[rows] % num_anchors, block[cols] % num_anchors, iou_threshold)
    rows, cols = rows[hit], cols[hit]
    keep = torch.zeros(n, dtype=torch.bool, device=block.device)
    drop = torch.zeros_like(keep)
    while True:
        undecided = ~(keep | drop)
        if not bool(undecided.any()):
            return keep
        drop |= undecided & _rows_with(rows, keep[cols], n)
        keep |= undecided & ~drop & ~_rows_with(rows, ~drop[cols], n)


def _same_class_pairs(ids: torch.Tensor, others: torch.Tensor, num_anchors: int,
                      earlier_only: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, col) positions of id pairs of the same class; with earlier_only (others is ids) only col < row."""
    same = (ids // num_anchors)[:, None] == (others // num_anchors)[None, :]
    if earlier_only:
        same = same.tril(diagonal=-1)
    rows, cols = same.nonzero(as_tuple=True)
    return rows, cols


def _rows_with(rows: torch.Tensor, flags: torch.Tensor, n: int) -> torch.Tensor:
    """[n] mask: which rows have at least one pair whose flag is set."""
    counts = torch.zeros(n, dtype=torch.int32, device=rows.device)
    return counts.index_add_(0, rows, flags.to(torch.int32)) > 0


def _paddle_areas(corners: torch.Tensor) -> torch.Tensor:
    """Box areas [L] from corners [4, L] as Paddle's BBoxArea: 0 for an inverted box (x2 < x1 or y2 < y1)."""
    x1, y1, x2, y2 = corners
    inverted = (x2 < x1) | (y2 < y1)
    return torch.where(inverted, torch.zeros_like(x1), (x2 - x1) * (y2 - y1))


def _paddle_suppresses(corners: torch.Tensor, areas: torch.Tensor, cand: torch.Tensor, kept: torch.Tensor,
                       iou_threshold: float) -> torch.Tensor:
    """Does kept box `kept[i]` suppress candidate `cand[i]`? Paddle's JaccardOverlap(candidate, kept) > threshold.

    Same float32 operations in the same order as Paddle: boxes apart (an edge strictly beyond the other box)
    overlap 0; otherwise the intersection is w * h unclamped, over (area + area - intersection). A NaN overlap
    (0 / 0, two zero-area boxes that touch) suppresses, since Paddle keeps only when `overlap <= threshold`.
    """
    cx1, cy1, cx2, cy2 = corners[:, cand]
    kx1, ky1, kx2, ky2 = corners[:, kept]
    apart = (kx1 > cx2) | (kx2 < cx1) | (ky1 > cy2) | (ky2 < cy1)
    inter = (torch.minimum(cx2, kx2) - torch.maximum(cx1, kx1)) * (torch.minimum(cy2, ky2) - torch.maximum(cy1, ky1))
    overlap = inter / (areas[cand] + areas[kept] - inter)
    return ~apart & ~(overlap <= iou_threshold)


def postprocess(cls_logits: torch.Tensor, reg_logits: torch.Tensor, points: torch.Tensor, strides: torch.Tensor,
                proj: torch.Tensor, scale_factor: torch.Tensor, nms: NMSSpec = NMSSpec()) -> list[torch.Tensor]:
    """Decode, map boxes to original-image pixels (divide by scale_factor (sy, sx)), NMS per image.

    Boxes are not clipped to the image (as in PaddleDetection); the predictor clips, as PaddleX does.
    """
    boxes, scores = decode(cls_logits, reg_logits, points, strides, proj)
    sy, sx = scale_factor[:, 0], scale_factor[:, 1]
    boxes = boxes / torch.stack([sx, sy, sx, sy], dim=1)[:, None, :].to(boxes.dtype)
    return [multiclass_nms(boxes[i], scores[i], nms) for i in range(boxes.shape[0])]
