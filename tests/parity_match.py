"""Detection lists compared with tolerances, without depending on near-ties.

Two float32 implementations of one network differ by float noise (torch against ONNX Runtime / OpenVINO: about
3e-4 in a logit, 4e-5 in a score; ours against PaddleX: under 1e-5). Noise can only change which boxes are kept
where a box sits on an edge: its score next to the floor compared, its IoU with a higher-scoring box of its class
next to the NMS threshold, or its score next to that of a box of its class it overlaps at about the NMS threshold
or more (which of the two suppresses the other is a coin toss); then the boxes that one would have suppressed
change too. Those boxes are "undecided" and left out; every other box must have its own twin in the other list.
Used by the export tests (backends against torch) and the PaddleX oracle (their pipeline against ours).
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from ppyoloe_sod.boxes import box_iou

Floor = float | Mapping[int, float]  # a score floor, or one per class (unlisted classes: 0.5, as predict does)


def row_floors(rows: np.ndarray, floor: Floor) -> np.ndarray:
    """The floor each row (class, score, ...) is compared with."""
    if isinstance(floor, Mapping):
        return np.array([floor.get(int(c), 0.5) for c in rows[:, 0]], np.float64)
    return np.full(len(rows), float(floor))


def undecided(rows: np.ndarray, floor: Floor, nms_iou: float, score_margin: float, iou_margin: float,
              twin_iou: float = 0.95) -> np.ndarray:
    """Flags over ``rows`` (class, score, x1, y1, x2, y2; both lists together) of boxes whose fate float noise
    could change: score within ``score_margin`` of ``floor``, IoU within ``iou_margin`` of ``nms_iou`` with a
    higher-scoring box of its class, score within ``score_margin`` of a box of its class that it overlaps above
    ``nms_iou - iou_margin`` and at most ``twin_iou`` (more is taken for one box seen in both lists: a moved
    box must fail to match, not pass as a tie), or above ``nms_iou - iou_margin`` with a higher-scoring
    undecided one."""
    order = np.argsort(-rows[:, 1], kind="stable")
    rows = rows[order]
    iou = box_iou(torch.from_numpy(rows[:, 2:]).double(), torch.from_numpy(rows[:, 2:]).double()).numpy()
    same_class = rows[:, None, 0] == rows[None, :, 0]
    overlapping = same_class & (iou > nms_iou - iou_margin)
    tied = overlapping & (iou <= twin_iou) & (np.abs(rows[:, None, 1] - rows[None, :, 1]) < score_margin)
    flags = (np.abs(rows[:, 1] - row_floors(rows, floor)) < score_margin) | tied.any(axis=1)
    for i in range(len(rows)):
        higher = np.flatnonzero(same_class[i, :i] & (rows[:i, 1] > rows[i, 1]))
        near = np.abs(iou[i, higher] - nms_iou) < iou_margin
        chained = flags[higher] & overlapping[i, higher]
        flags[i] |= bool(near.any() or chained.any())
    out = np.empty_like(flags)
    out[order] = flags
    return out


def above_cut(floor: Floor, ref: np.ndarray, got: np.ndarray, keep_top_k: int) -> Floor:
    """``floor``, raised for every class to the lowest score of a list that NMS cut at ``keep_top_k``.

    The cut falls at one score for all classes, so a per-class floor below it (0.2 for one class, 0.9 for
    another) would compare boxes that one list lost at the cut and the other kept."""
    cut = max((rows[:, 1].min() for rows in (ref, got) if len(rows) >= keep_top_k), default=None)
    if cut is None:
        return floor
    classes = np.unique(np.concatenate([ref[:, 0], got[:, 0]]))
    floors = row_floors(classes[:, None], floor)
    return {int(c): max(float(f), float(cut)) for c, f in zip(classes, floors)}


def match_detections(ref: np.ndarray, got: np.ndarray, score_tol: float, box_tol: float, floor: Floor = 0.5,
                     nms_iou: float = 0.6, keep_top_k: int = 500, score_margin: float = 1e-3,
                     iou_margin: float = 1e-2) -> dict:
    """Compare two NMS outputs above ``floor``; returns counts (``decided`` boxes of ``ref``, ``undecided`` and
    ``rows`` over both lists near or above the floor) and the worst differences of the matched boxes.

    A list cut at ``keep_top_k`` is compared only above its lowest score (plus ``score_margin``), for every class:
    which boxes make that cut is another near-tie (the 500th and 501st candidates may differ by 4e-7 in score).

    Raises AssertionError for a decided box of either list without a twin of its own in the other (same class,
    score within ``score_tol``, every corner within ``box_tol`` px; one twin per box).
    """
    ref, got = (np.asarray(d, np.float64).reshape(-1, 6) for d in (ref, got))
    floor = above_cut(floor, ref, got, keep_top_k)
    ref, got = (rows[rows[:, 1] > row_floors(rows, floor) - score_margin] for rows in (ref, got))
    flags = undecided(np.concatenate([ref, got]), floor, nms_iou, score_margin, iou_margin)
    worst = {"score": 0.0, "box": 0.0}
    for a, b, a_flags, name in ((ref, got, flags[:len(ref)], "reference"), (got, ref, flags[len(ref):], "other")):
        taken = np.zeros(len(b), bool)
        for row in a[~a_flags & (a[:, 1] > row_floors(a, floor))]:
            same = (b[:, 0] == row[0]) & ~taken
            d_score = np.where(same, np.abs(b[:, 1] - row[1]), np.inf)
            d_box = np.where(same, np.abs(b[:, 2:] - row[2:]).max(axis=1), np.inf)
            twins = np.flatnonzero((d_score <= score_tol) & (d_box <= box_tol))
            assert len(twins), (f"{name} box {row.tolist()} has no twin (closest of its class: score diff "
                                f"{d_score.min(initial=np.inf)}, box diff {d_box.min(initial=np.inf)})")
            k = twins[np.argmin(d_box[twins])]
            taken[k] = True
            worst = {"score": max(worst["score"], d_score[k]), "box": max(worst["box"], d_box[k])}
    decided = int((~flags[:len(ref)] & (ref[:, 1] > row_floors(ref, floor))).sum())
    return {"decided": decided, "undecided": int(flags.sum()), "rows": len(flags), **worst}


def kept_fraction(ref: np.ndarray, got: np.ndarray, floor: float, min_iou: float = 0.5,
                  score_tol: float = 0.15) -> float:
    """Loose agreement for reduced precision: the fraction of ``ref`` boxes above ``floor`` that ``got`` has
    too (same class, IoU above ``min_iou``, score within ``score_tol``)."""
    ref = ref[ref[:, 1] > floor]
    if not len(ref):
        return 1.0
    iou = box_iou(torch.from_numpy(ref[:, 2:]).double(), torch.from_numpy(got[:, 2:]).double()).numpy()
    same = (ref[:, None, 0] == got[None, :, 0]) & (np.abs(ref[:, None, 1] - got[None, :, 1]) < score_tol)
    return float(((iou > min_iou) & same).any(axis=1).mean())
