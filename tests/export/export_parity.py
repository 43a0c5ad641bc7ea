"""Detection lists compared with tolerances, without depending on near-ties.

Two float32 implementations of one network differ by float noise (here about 3e-4 in a logit, 4e-5 in a
score: the same as PyTorch float32 against float64). Noise can only change which boxes are kept where a box
sits on an edge: its score next to the floor compared, or its IoU with a higher-scoring box of its class next
to the NMS threshold (then the boxes that one would have suppressed change too). Those boxes are "undecided"
and left out; every other box must have a twin in the other list.
"""
from __future__ import annotations

import numpy as np
import torch

from ppyoloe_sod.boxes import box_iou

SIZE = (320, 320)  # (h, w) the export tests run at: the inference tests' size, 4x cheaper than 640


def undecided(rows: np.ndarray, floor: float, nms_iou: float, score_margin: float, iou_margin: float) -> np.ndarray:
    """Flags over ``rows`` (class, score, x1, y1, x2, y2; both lists together) of boxes whose fate float noise
    could change: score within ``score_margin`` of ``floor``, IoU within ``iou_margin`` of ``nms_iou`` with a
    higher-scoring box of its class, or above ``nms_iou - iou_margin`` with an undecided one."""
    order = np.argsort(-rows[:, 1], kind="stable")
    rows = rows[order]
    iou = box_iou(torch.from_numpy(rows[:, 2:]).double(), torch.from_numpy(rows[:, 2:]).double()).numpy()
    flags = np.abs(rows[:, 1] - floor) < score_margin
    for i in range(len(rows)):
        higher = np.flatnonzero((rows[:i, 0] == rows[i, 0]) & (rows[:i, 1] > rows[i, 1]))
        near = np.abs(iou[i, higher] - nms_iou) < iou_margin
        chained = flags[higher] & (iou[i, higher] > nms_iou - iou_margin)
        flags[i] |= bool(near.any() or chained.any())
    out = np.empty_like(flags)
    out[order] = flags
    return out


def match_detections(ref: np.ndarray, got: np.ndarray, score_tol: float, box_tol: float, floor: float = 0.5,
                     nms_iou: float = 0.6, keep_top_k: int = 500, score_margin: float = 1e-3,
                     iou_margin: float = 1e-2) -> dict:
    """Compare two NMS outputs above ``floor``; returns counts and the worst differences of the matched boxes.

    Raises AssertionError for a decided box of either list without a twin in the other (same class, score
    within ``score_tol``, every corner within ``box_tol`` px), or when a list was cut at ``keep_top_k`` above
    ``floor`` (which boxes make the cut would be another near-tie: raise ``floor``).
    """
    ref, got = (np.asarray(d, np.float64) for d in (ref, got))
    for rows in (ref, got):
        assert len(rows) < keep_top_k or rows[:, 1].min() < floor - score_margin, "cut at keep_top_k above floor"
    ref, got = ref[ref[:, 1] > floor - score_margin], got[got[:, 1] > floor - score_margin]
    flags = undecided(np.concatenate([ref, got]), floor, nms_iou, score_margin, iou_margin)
    worst = {"score": 0.0, "box": 0.0}
    for a, b, a_flags, name in ((ref, got, flags[:len(ref)], "reference"), (got, ref, flags[len(ref):], "other")):
        for row in a[~a_flags & (a[:, 1] > floor)]:
            same = b[b[:, 0] == row[0]]
            d_score = np.abs(same[:, 1] - row[1])
            d_box = np.abs(same[:, 2:] - row[2:]).max(axis=1) if len(same) else np.zeros(0)
            twins = np.flatnonzero((d_score <= score_tol) & (d_box <= box_tol))
            assert len(twins), (f"{name} box {row.tolist()} has no twin (closest of its class: score diff "
                                f"{d_score.min() if len(same) else None}, box diff {d_box.min() if len(same) else None})")
            k = twins[np.argmin(d_box[twins])]
            worst = {"score": max(worst["score"], d_score[k]), "box": max(worst["box"], d_box[k])}
    decided = int((~flags[:len(ref)] & (ref[:, 1] > floor)).sum())
    return {"decided": decided, "undecided": int(flags.sum()), **worst}


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
