"""Merging the detections of overlapping slices into one set, with SAHI's or PaddleDetection's rules exactly.

Rows are (class, score, x1, y1, x2, y2) in image pixels, as everywhere in the package. The rules below were read
from the installed tools (sahi 0.12.8: ``postprocess/combine.py``, ``_numpy_backend.py``, ``utils.py``; ppdet 2.6.0:
``engine/trainer.py`` ``slice_predict``, ``modeling/post_process.py`` ``multiclass_nms``/``nms``) and are checked
against them on the same inputs by tests/infer/test_slice_merge_parity.py and tests/oracle/test_slice_ppdet_oracle.py.

SAHI (per class unless class-agnostic):
- boxes are taken in SAHI's order: score descending, then x1, y1, x2, y2 ascending, then input order;
- overlaps in float32, areas without +1, a ratio with a zero denominator is 0; a match is ``overlap >= threshold``;
- ``nms``: greedy suppression; the kept rows come out sorted by score (ties: class, then the order above);
- ``greedynmm``: each box not yet claimed becomes a keeper and claims every unclaimed box it matches;
- ``nmm``: as greedynmm, but claimed boxes claim too (for their keeper), and a box only claims boxes it
  dominates (a lower score, or an equal one and coordinates not lexicographically larger), in input order;
- then each keeper absorbs its claimed boxes one by one in claim order, re-checking the match in float64 against
  the box merged so far (a box that no longer matches is dropped): enclosing box, max score, and the class of
  the keeper if its score is higher, else the absorbed box's. Keepers come out by class, then in the order above.
PaddleDetection (per class): greedy NMS with ppdet's +1 pixel areas, ``overlap >= threshold`` in float32, boxes
taken by score descending (ties: the later row first, i.e. a stable ascending sort reversed; numpy's unstable
argsort may order exact ties differently); kept rows come out by class ascending, then in input order.
``concat`` (both) keeps every row.

The overlap matrices are computed in torch on the detections' device; the greedy claiming, sequential by nature,
runs on the thresholded boolean matrix on the CPU (one vector operation per box).
"""
from __future__ import annotations

import numpy as np
import torch

SAHI_METHODS = ("greedynmm", "nmm", "nms", "concat")
PPDET_METHODS = ("nms", "concat")
METRICS = ("ios", "iou")
MATRIX_BLOCK_ROWS = 512


def _extent(lo: torch.Tensor, hi: torch.Tensor, one: float) -> torch.Tensor:
    d = hi - lo
    return d.add_(one) if one else d


def overlap(a: torch.Tensor, b: torch.Tensor, metric: str, plus_one: bool = False) -> torch.Tensor:
    """Broadcast xyxy boxes a [..., 4] against b [..., 4] -> IoU or IoS (intersection over the smaller area).

    Computed in the boxes' dtype with the operation order of both tools, so the float results are theirs.
    ``plus_one``: ppdet's pixel convention (a box is x2 - x1 + 1 wide). A zero or negative denominator gives 0.
    """
    one = 1.0 if plus_one else 0.0
    area_a = _extent(a[..., 0], a[..., 2], one) * _extent(a[..., 1], a[..., 3], one)
    area_b = _extent(b[..., 0], b[..., 2], one) * _extent(b[..., 1], b[..., 3], one)
    inter = _extent(torch.maximum(a[..., 0], b[..., 0]), torch.minimum(a[..., 2], b[..., 2]), one).clamp_(min=0)
    inter.mul_(_extent(torch.maximum(a[..., 1], b[..., 1]), torch.minimum(a[..., 3], b[..., 3]), one).clamp_(min=0))
    denom = (area_a + area_b).sub_(inter) if metric == "iou" else torch.minimum(area_a, area_b)
    return torch.where(denom > 0, inter / denom, 0.0)


def _match_matrix(boxes: torch.Tensor, metric: str, threshold: float, plus_one: bool = False) -> np.ndarray:
    """[N, 4] -> [N, N] bool (overlap >= threshold) on the CPU, computed on the boxes' device in row blocks so
    that a few thousand boxes need no more than a few bigger-than-the-result temporaries."""
    n = len(boxes)
    out = torch.empty((n, n), dtype=torch.bool, device=boxes.device)
    for start in range(0, n, MATRIX_BLOCK_ROWS):
        block = boxes[start:start + MATRIX_BLOCK_ROWS]
        out[start:start + len(block)] = overlap(block[:, None, :], boxes[None, :, :], metric, plus_one) >= threshold
    return out.cpu().numpy()


def _class_groups(classes: torch.Tensor, class_agnostic: bool) -> list[torch.Tensor]:
    """Row indices per class (classes ascending, rows in input order); one group when class-agnostic."""
    if class_agnostic:
        return [torch.arange(len(classes), device=classes.device)]
    return [torch.nonzero(classes == c).flatten() for c in torch.unique(classes)]


def _sahi_order(scores: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Score descending, then x1, y1, x2, y2 ascending, then index: SAHI's ``np.lexsort`` order."""
    order = torch.arange(len(scores), device=scores.device)
    for key in (boxes[:, 3], boxes[:, 2], boxes[:, 1], boxes[:, 0], -scores):
        order = order[torch.sort(key[order], stable=True).indices]
    return order


def _dominates(scores: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """[N, N]: box i may claim box j in SAHI's NMM (lower score, or equal and coordinates not lexicographically
    larger than i's); never itself."""
    lower = scores[:, None] > scores[None, :]
    equal = scores[:, None] == scores[None, :]
    i_before_j = torch.zeros_like(lower)
    still_equal = torch.ones_like(lower)
    for col in range(4):
        c = boxes[:, col]
        i_before_j |= still_equal & (c[:, None] < c[None, :])
        still_equal &= c[:, None] == c[None, :]
    eye = torch.eye(len(scores), dtype=torch.bool, device=scores.device)
    return ~eye & (lower | (equal & ~i_before_j))


def _claim(match: np.ndarray, order: np.ndarray, transitive: bool) -> tuple[np.ndarray, np.ndarray]:
    """The greedy pass over boxes in ``order``; ``match[i, j]``: box i may claim box j.

    Returns (owner, claim_rank): owner[i] is the keeper box i joined (i for a keeper); claim_rank orders the boxes
    a keeper absorbs. Greedy: only keepers claim, their boxes in processing order. Transitive (NMM): claimed boxes
    claim too, for their keeper, appending the new boxes in index order.
    """
    n = len(order)
    owner = np.full(n, -1, dtype=np.int64)
    claim_rank = np.full(n, -1, dtype=np.int64)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    count = 0
    for cur in order.tolist():
        if owner[cur] < 0:
            owner[cur] = cur
        elif not transitive:
            continue
        new = np.flatnonzero(match[cur] & (owner < 0))  # every box earlier in `order` is already settled
        owner[new] = owner[cur]
        claim_rank[new] = count + np.arange(len(new)) if transitive else rank[new]
        count += len(new)
    return owner, claim_rank


def _absorb(dets64: torch.Tensor, keepers: np.ndarray, owner: np.ndarray, claim_rank: np.ndarray, metric: str,
            threshold: float) -> torch.Tensor:
    """SAHI's second pass, vectorised over keepers: round r merges each keeper's r-th claimed box if it still
    matches the box merged so far (float64). Returns the merged rows of ``keepers``, in that order."""
    device = dets64.device
    members = np.flatnonzero(owner != np.arange(len(owner)))
    slot_of_keeper = np.empty(len(owner), dtype=np.int64)
    slot_of_keeper[keepers] = np.arange(len(keepers))
    merged = dets64[torch.from_numpy(keepers).to(device)].clone()
    if len(members) == 0:
        return merged
    # table[k, r]: the r-th box keeper k absorbs (-1: none left)
    members = members[np.lexsort((claim_rank[members], slot_of_keeper[owner[members]]))]
    group = slot_of_keeper[owner[members]]
    turn = np.arange(len(members)) - np.searchsorted(group, group)  # position inside its (sorted) group
    table = np.full((len(keepers), int(turn.max()) + 1), -1, dtype=np.int64)
    table[group, turn] = members
    table_t = torch.from_numpy(table).to(device)
    for r in range(table.shape[1]):
        rows = torch.nonzero(table_t[:, r] >= 0).flatten()
        cand = dets64[table_t[rows, r]]
        ok = overlap(merged[rows, 2:], cand[:, 2:], metric) >= threshold
        rows, cand = rows[ok], cand[ok]
        cur = merged[rows]
        cls = torch.where(cur[:, 1] > cand[:, 1], cur[:, 0], cand[:, 0])
        score = torch.maximum(cur[:, 1], cand[:, 1])
        merged[rows] = torch.cat([cls[:, None], score[:, None], torch.minimum(cur[:, 2:4], cand[:, 2:4]),
                                  torch.maximum(cur[:, 4:6], cand[:, 4:6])], dim=1)
    return merged


def sahi_merge(dets: torch.Tensor, method: str = "greedynmm", metric: str = "ios", threshold: float = 0.5,
               class_agnostic: bool = False) -> torch.Tensor:
    """SAHI's ``NMSPostprocess`` / ``GreedyNMMPostprocess`` / ``NMMPostprocess`` (or ``concat``) on rows [N, 6].

    The first pass sees the rows in float32 (as SAHI's ``tonumpy``), the re-checks and merged boxes use the
    rows' own values in float64 (as SAHI's Python floats). Returns rows in ``dets``' dtype and device.
    """
    if method == "concat" or len(dets) == 0:
        return dets
    dets64 = dets.double()
    dets32 = dets.float()
    picked: list[torch.Tensor] = []
    for idx in _class_groups(dets32[:, 0], class_agnostic):
        boxes, scores = dets32[idx, 2:6], dets32[idx, 1]
        order = _sahi_order(scores, boxes).cpu().numpy()
        match = _match_matrix(boxes, metric, threshold)
        if method == "nmm":
            match &= _dominates(scores, boxes).cpu().numpy()
        owner, claim_rank = _claim(match, order, transitive=method == "nmm")
        keepers = order[owner[order] == order]
        if method == "nms":
            picked.append(dets64[idx[torch.from_numpy(keepers).to(idx.device)]])
        else:
            picked.append(_absorb(dets64[idx], keepers, owner, claim_rank, metric, threshold))
    out = torch.cat(picked)
    if method == "nms":  # SAHI's batched NMS sorts the kept rows by score (stable: class, then SAHI's order)
        out = out[torch.sort(-out[:, 1].float(), stable=True).indices]
    return out.to(dets.dtype)


def ppdet_merge(dets: torch.Tensor, method: str = "nms", metric: str = "ios", threshold: float = 0.6,
                class_agnostic: bool = False) -> torch.Tensor:
    """PaddleDetection's slice merge (``slice_predict``: ``multiclass_nms`` or ``concat``) on rows [N, 6],
    computed in float32 as ppdet's numpy does. Returns rows in ``dets``' dtype and device."""
    if method == "concat" or len(dets) == 0:
        return dets
    dets32 = dets.float()
    kept: list[torch.Tensor] = []
    for idx in _class_groups(dets32[:, 0], class_agnostic):
        order = torch.sort(dets32[idx, 1], stable=True).indices.flip(0).cpu().numpy()
        match = _match_matrix(dets32[idx, 2:6], metric, threshold, plus_one=True)
        owner, _ = _claim(match, order, transitive=False)
        keep = np.flatnonzero(owner == np.arange(len(owner)))
        kept.append(idx[torch.from_numpy(keep).to(idx.device)])
    return dets[torch.cat(kept)]
