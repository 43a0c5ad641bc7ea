"""The near-tie-aware matcher of the parity tests (tests/parity_match.py) must not pass or fail on a coin toss."""
from __future__ import annotations

import numpy as np
import pytest

from parity_match import match_detections

KEEP = 6


def _cut_lists() -> tuple[np.ndarray, np.ndarray]:
    """Two NMS outputs cut at KEEP rows: the last candidate differs (scores 4e-7 apart at the cut)."""
    boxes = [[10.0 * i, 0.0, 10.0 * i + 8, 8.0] for i in range(KEEP + 1)]
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4000003, 0.4]
    classes = [0, 1, 0, 1, 0, 1, 0]
    rows = np.array([[c, s, *b] for c, s, b in zip(classes, scores, boxes)])
    ref = rows[:KEEP]
    got = np.concatenate([rows[:KEEP - 1], rows[KEEP:]])  # its 6th box is the other candidate at the cut
    return ref, got


def test_a_keep_top_k_cut_above_a_per_class_floor_is_a_near_tie_not_a_mismatch():
    ref, got = _cut_lists()
    stats = match_detections(ref, got, 1e-5, 1e-3, floor={0: 0.2, 1: 0.9}, keep_top_k=KEEP, score_margin=1e-4)
    assert stats["decided"] == 3  # classes 0 at 0.9, 0.7, 0.5; class 1's floor 0.9 leaves none decided
    assert stats["undecided"] == 1  # class 0's candidate at the cut (class 1's is under its own floor)


def test_a_real_difference_above_the_cut_still_fails():
    ref, got = _cut_lists()
    got = got.copy()
    got[2, 2:] += 5.0  # a box that moved by 5 px above the cut
    with pytest.raises(AssertionError, match="no twin"):
        match_detections(ref, got, 1e-5, 1e-3, floor={0: 0.2, 1: 0.9}, keep_top_k=KEEP, score_margin=1e-4)
