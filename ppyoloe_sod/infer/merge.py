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

Which pairs match is computed in torch on the detections' device, one of two ways chosen for speed only (the
result is the same, tests/infer/test_merge_pair_search.py): many spread-out boxes (a sliced image; from
SPARSE_MIN_BOXES in a class) go through a band-and-sweep that lists only the pairs that meet, and only those get an
overlap; few boxes or a crowd use rows of the dense match matrix, computed a block at a time for the boxes the
greedy pass is about to read. The greedy claiming, sequential by nature, runs on the CPU (one vector operation per
box that claims).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

SAHI_METHODS = ("greedynmm", "nmm", "nms", "concat")
PPDET_METHODS = ("nms", "concat")
METRICS = ("ios", "iou")
CLAIM_BLOCK = 128  # boxes whose dense match rows are computed at once (bounds the temporaries)
SPARSE_MIN_BOXES = 256  # fewer boxes: the dense matrix costs less than the sweep's fixed steps
PAIR_CHUNK = 1 << 21  # candidate pairs per vectorised step of the sweep (bounds its temporaries)
MAX_BAND_COPIES = 4  # band copies per box beyond which the sweep uses one band
DENSE_FRACTION = 0.125  # a sweep leaving more than this share of all pairs: a crowd, the dense matrix is cheaper


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


@dataclass
class _Sweep:
    """Candidate pairs, not yet listed: the boxes cut into horizontal bands (a box tall enough is copied into
    every band it spans), each band swept along x. Copy p and the ``counts[p]`` copies after it, in sweep order,
    are the candidates of p. Per copy: ``box`` (its box's row), ``is_first`` (in its box's top band), ``y_lo``
    and ``y_hi`` (its box's vertical interval, +1 with ppdet's convention)."""

    box: torch.Tensor
    is_first: torch.Tensor
    y_lo: torch.Tensor
    y_hi: torch.Tensor
    counts: torch.Tensor

    @property
    def total(self) -> int:
        return int(self.counts.sum())


def _bands(lo: torch.Tensor, hi: torch.Tensor, max_bands: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(first, last) band of each [lo, hi] interval, bands twice the median height over the finite range;
    floor and clamp are monotone, so a point below another never gets a later band."""
    finite_lo, finite_hi, extents = lo[torch.isfinite(lo)], hi[torch.isfinite(hi)], hi - lo
    extents = extents[torch.isfinite(extents)]
    height = 2 * float(torch.median(extents)) if len(extents) else 0.0
    if len(finite_lo) == 0 or len(finite_hi) == 0 or not 0 < height < float("inf"):
        zeros = torch.zeros(len(lo), dtype=torch.long, device=lo.device)
        return zeros, zeros
    base = float(finite_lo.min())
    count = int(min(max_bands, max(1.0, math.ceil((float(finite_hi.max()) - base) / height))))

    def band(v: torch.Tensor) -> torch.Tensor:
        return ((v - base) / height).floor_().clamp_(0, count - 1).long()
    return band(lo), band(hi)


def _sweep_candidates(boxes: torch.Tensor, plus_one: bool) -> _Sweep:
    """Band-and-sweep over the boxes [N, 4].

    Decided in float64 with closed intervals (``lo <= hi + 1`` with ppdet's +1), a superset of the pairs whose
    float32 intersection can be positive; boxes that cannot intersect anything (empty, NaN) are left out.
    """
    wide = boxes.double()
    lo, hi = wide[:, :2], wide[:, 2:] + (1.0 if plus_one else 0.0)
    usable = torch.nonzero((lo <= hi).all(dim=1)).flatten()
    lo, hi = lo[usable], hi[usable]
    n, device = len(usable), boxes.device
    first, last = _bands(lo[:, 1], hi[:, 1], max_bands=max(1, n))
    copies = last - first + 1
    if int(copies.sum()) > MAX_BAND_COPIES * n:  # many tall boxes: one band
        first = torch.zeros_like(first)
        copies = torch.ones_like(copies)
    box = torch.repeat_interleave(torch.arange(n, device=device), copies)
    rank = _ranks_within(copies)
    band = first[box] + rank
    # x as exact integer ranks, so that (band, x) is one int64 key
    xs = torch.unique(torch.cat([lo[:, 0], hi[:, 0]]))
    x_lo, x_hi = torch.searchsorted(xs, lo[:, 0].contiguous()), torch.searchsorted(xs, hi[:, 0].contiguous())
    keys, order = torch.sort(band * len(xs) + x_lo[box])
    box, band = box[order], band[order]
    reach = torch.searchsorted(keys, band * len(xs) + x_hi[box], right=True)
    counts = reach - torch.arange(1, len(box) + 1, device=device)
    return _Sweep(usable[box], rank[order] == 0, lo[box, 1], hi[box, 1], counts)


def _ranks_within(counts: torch.Tensor) -> torch.Tensor:
    """0..count-1 for each count, concatenated: each repeated item's position in its run."""
    starts = torch.cumsum(counts, 0) - counts
    return torch.arange(int(counts.sum()), device=counts.device) - torch.repeat_interleave(starts, counts)


def _matching_pairs(boxes: torch.Tensor, metric: str, threshold: float, plus_one: bool,
                    sweep: _Sweep) -> tuple[torch.Tensor, torch.Tensor]:
    """Every unordered pair (i, j) with overlap >= threshold among the sweep's candidates, PAIR_CHUNK candidates
    at a time; the overlap is the one ``overlap`` computes for the dense matrix, element for element.

    A pair of boxes sharing several bands is kept in one: the top band of the lower box (where the two meet
    first), i.e. where one of the two copies is its box's first.
    """
    ends = torch.cumsum(sweep.counts, 0)
    marks = torch.arange(1, sweep.total // PAIR_CHUNK + 1, device=ends.device) * PAIR_CHUNK
    bounds = [0, *torch.unique(torch.searchsorted(ends, marks)).tolist(), len(sweep.box)]
    firsts, seconds = [sweep.box[:0]], [sweep.box[:0]]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        counts = sweep.counts[lo:hi]
        first = torch.repeat_interleave(torch.arange(lo, hi, device=counts.device), counts)
        second = first + 1 + _ranks_within(counts)
        keep = sweep.is_first[first] | sweep.is_first[second]
        keep &= torch.maximum(sweep.y_lo[first], sweep.y_lo[second]) <= torch.minimum(sweep.y_hi[first],
                                                                                      sweep.y_hi[second])
        a, b = sweep.box[first[keep]], sweep.box[second[keep]]
        match = overlap(boxes[a], boxes[b], metric, plus_one) >= threshold
        firsts.append(a[match])
        seconds.append(b[match])
    return torch.cat(firsts), torch.cat(seconds)


def _dominates(scores: torch.Tensor, boxes: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """Box i may claim box j in SAHI's NMM (a lower score, or an equal one and coordinates not lexicographically
    larger than i's), for index tensors i, j that broadcast; never itself."""
    lower = scores[i] > scores[j]
    equal = scores[i] == scores[j]
    i_before_j = torch.zeros_like(lower)
    still_equal = torch.ones_like(lower)
    for col in range(4):
        c = boxes[:, col]
        i_before_j |= still_equal & (c[i] < c[j])
        still_equal &= c[i] == c[j]
    return (i != j) & (lower | (equal & ~i_before_j))


class _DenseMatches:
    """Rows of the dense match matrix, computed a block at a time for the boxes the greedy pass is about to read
    and only against the boxes still unclaimed: in a crowd most boxes are claimed early, so most of the matrix is
    never computed."""

    def __init__(self, boxes: torch.Tensor, metric: str, threshold: float, plus_one: bool,
                 scores: torch.Tensor | None) -> None:
        self.boxes, self.metric, self.threshold, self.plus_one, self.scores = boxes, metric, threshold, plus_one, scores
        self.slot = np.full(len(boxes), -1, dtype=np.int64)
        self.columns = np.zeros(0, dtype=np.int64)
        self.rows = np.zeros((0, 0), dtype=bool)

    def prepare(self, wanted: np.ndarray, unclaimed: np.ndarray) -> None:
        device = self.boxes.device
        rows, cols = torch.from_numpy(wanted).to(device)[:, None], torch.from_numpy(unclaimed).to(device)[None, :]
        match = overlap(self.boxes[rows], self.boxes[cols], self.metric, self.plus_one) >= self.threshold
        match &= rows != cols
        if self.scores is not None:  # dominance only where boxes match: few pairs
            at_row, at_col = torch.nonzero(match, as_tuple=True)
            match[at_row, at_col] = _dominates(self.scores, self.boxes, rows[at_row, 0], cols[0, at_col])
        self.rows, self.columns = match.cpu().numpy(), unclaimed
        self.slot[wanted] = np.arange(len(wanted))

    def row(self, i: int) -> np.ndarray:
        return self.columns[np.flatnonzero(self.rows[self.slot[i]])]


class _SweptMatches:
    """The matching pairs the sweep found, as CSR rows (both directions, columns ascending)."""

    def __init__(self, boxes: torch.Tensor, metric: str, threshold: float, plus_one: bool,
                 scores: torch.Tensor | None, sweep: _Sweep) -> None:
        first, second = _matching_pairs(boxes, metric, threshold, plus_one, sweep)
        rows, cols = torch.cat([first, second]), torch.cat([second, first])
        if scores is not None:
            allowed = _dominates(scores, boxes, rows, cols)
            rows, cols = rows[allowed], cols[allowed]
        n = len(boxes)
        self.indices = cols[torch.argsort(rows * n + cols)].cpu().numpy()
        self.indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows.cpu().numpy(), minlength=n), out=self.indptr[1:])

    def prepare(self, wanted: np.ndarray, unclaimed: np.ndarray) -> None:
        pass

    def row(self, i: int) -> np.ndarray:
        return self.indices[self.indptr[i]:self.indptr[i + 1]]


def _matches(boxes: torch.Tensor, metric: str, threshold: float, plus_one: bool = False,
             scores: torch.Tensor | None = None) -> _DenseMatches | _SweptMatches:
    """Which boxes each box matches (overlap >= threshold), never itself; with ``scores``, only those it
    dominates (NMM). ``row(i)`` lists them ascending, at least those of ``unclaimed``, after ``prepare`` was
    given i and the boxes still unclaimed (ascending).

    Spread-out boxes (the usual case) go through the band-and-sweep, which keeps only the pairs that meet;
    few boxes, a threshold <= 0 (every pair matches, disjoint ones too) or a crowd (the sweep would keep more
    pair indices than the dense matrix has bytes) use the dense rows. The choice only changes the time.
    """
    n = len(boxes)
    if n >= SPARSE_MIN_BOXES and threshold > 0:
        sweep = _sweep_candidates(boxes, plus_one)
        if sweep.total <= DENSE_FRACTION * n * (n - 1) / 2:
            return _SweptMatches(boxes, metric, threshold, plus_one, scores, sweep)
    return _DenseMatches(boxes, metric, threshold, plus_one, scores)


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


def _claim(matches: _DenseMatches | _SweptMatches, order: np.ndarray,
           transitive: bool) -> tuple[np.ndarray, np.ndarray]:
    """The greedy pass over boxes in ``order``; ``matches.row(i)``: the boxes box i may claim.

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
    for start in range(0, n, CLAIM_BLOCK):
        block = order[start:start + CLAIM_BLOCK]
        unclaimed = np.flatnonzero(owner < 0)
        matches.prepare(block if transitive else block[owner[block] < 0], unclaimed)  # rows this block may read
        for cur in block.tolist():
            if owner[cur] < 0:
                owner[cur] = cur
            elif not transitive:
                continue
            candidates = matches.row(cur)
            new = candidates[owner[candidates] < 0]  # every box earlier in `order` is already settled
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
        matches = _matches(boxes, metric, threshold, scores=scores if method == "nmm" else None)
        owner, claim_rank = _claim(matches, order, transitive=method == "nmm")
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
        matches = _matches(dets32[idx, 2:6], metric, threshold, plus_one=True)
        owner, _ = _claim(matches, order, transitive=False)
        keep = np.flatnonzero(owner == np.arange(len(owner)))
        kept.append(idx[torch.from_numpy(keep).to(idx.device)])
    return dets[torch.cat(kept)]
