"""The merges find matching pairs in one of two ways, chosen for speed only: the dense N x N matrix (few boxes,
a crowd) or a band-and-sweep keeping just the pairs that meet (many spread-out boxes, the usual sliced image).
Both must give exactly SAHI's (and, for ppdet's +1 pixel NMS, each other's) result, ties and thresholds included.

``pair_search`` forces one way for every input size; SAHI itself (test_slice_merge_parity.py's reference) is the
judge. Inputs lie on a quarter-pixel grid with 1/8 scores, so overlaps land exactly on the thresholds and scores
tie (the arithmetic is exact up to one correctly rounded division: the same on every CPU).
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from ppyoloe_sod.infer import merge
from ppyoloe_sod.infer.merge import ppdet_merge, sahi_merge
from slice_synth import ADVERSARIAL, cluster_rows
from test_slice_merge_parity import assert_same_merge

pytestmark = pytest.mark.usefixtures("sahi_numpy_backend")

# More hand-made cases on top of slice_synth's (class, score, x1, y1, x2, y2).
EXTRA = {
    # IoU exactly 0.5 (union 2 x intersection) and IoS exactly 0.25
    "iou_half": [[0, 0.75, 0, 0, 12, 6], [0, 0.75, 4, 0, 12, 6], [0, 0.5, 0, 0, 8, 6]],
    "ios_quarter": [[1, 0.5, 0, 0, 8, 8], [1, 0.5, 6, 0, 14, 8], [1, 0.25, 0, 6, 8, 14]],
    # a tall box crossing many bands, meeting boxes above, inside and below it
    "tall": [[0, 0.875, 0, 0, 6, 90], [0, 0.625, 1, 0.25, 5, 4], [0, 0.625, 1, 40, 5, 44], [0, 0.625, 0, 86, 6, 90]],
    # empty, inverted and zero-height boxes among real ones: they match nothing
    "degenerate": [[0, 0.75, 2, 2, 2, 9], [0, 0.75, 5, 5, 3, 9], [0, 0.5, 2, 2, 9, 2], [0, 0.5, 2, 2, 9, 9]],
    # five identical boxes, identical scores, three classes
    "pile": [[c, 0.5, 3, 3, 11, 11] for c in (0, 1, 0, 2, 1)],
}
CASES = {**ADVERSARIAL, **EXTRA}


@pytest.fixture(params=["dense", "sweep"])
def pair_search(request, monkeypatch):
    """Force the dense matrix or the sweep for every number of boxes."""
    if request.param == "dense":
        monkeypatch.setattr(merge, "SPARSE_MIN_BOXES", 10 ** 9)
    else:
        monkeypatch.setattr(merge, "SPARSE_MIN_BOXES", 0)
        monkeypatch.setattr(merge, "DENSE_FRACTION", 1e9)
    return request.param


def mosaic(seed: int, copies: int = 4) -> np.ndarray:
    """Every hand-made case ``copies`` times at random quarter-pixel offsets, some copies overlapping others
    (so cases interact), some boxes crossing the sweep's band edges."""
    g = np.random.default_rng(seed)
    rows = []
    for _ in range(copies):
        for case in CASES.values():
            shift = g.integers(0, 4 * 240, 2) / 4
            for c, s, x1, y1, x2, y2 in case:
                rows.append([c, s, x1 + shift[0], y1 + shift[1], x2 + shift[0], y2 + shift[1]])
    return np.array(rows, dtype=np.float32)


@pytest.mark.parametrize("seed", range(3))
def test_both_pair_searches_equal_sahi_on_hand_made_mosaics(pair_search, seed):
    rows = mosaic(seed)
    for method, metric, agnostic, threshold in itertools.product(
            ("nms", "greedynmm", "nmm"), ("ios", "iou"), (False, True), (0.5, 0.25, 1 / 3, 1.0)):
        assert_same_merge(rows, method, metric, threshold, agnostic)


def test_both_pair_searches_equal_sahi_on_random_clusters(pair_search):
    for seed in range(4):
        rows = cluster_rows(seed, objects=40)
        rows[:, 2:] *= 3  # spread: the sweep keeps few of the pairs
        for method, metric, agnostic in itertools.product(("nms", "greedynmm", "nmm"), ("ios", "iou"),
                                                          (False, True)):
            assert_same_merge(rows, method, metric, 0.5, agnostic)


def odd_rows() -> np.ndarray:
    """Values SAHI's reference is not asked about: NaN, infinite, huge and negative coordinates."""
    rows = mosaic(7, copies=2)
    rows[::17, 2:] -= 500
    rows[1::23, 4] = np.inf
    rows[2::29, 3] = -np.inf
    rows[3::31, 5] = np.nan
    rows[4::37, 2:] *= 1e6
    return rows


@pytest.mark.parametrize("merge_fn,methods", [(sahi_merge, ("nms", "greedynmm", "nmm")), (ppdet_merge, ("nms",))])
def test_sweep_equals_dense_on_odd_coordinates(monkeypatch, merge_fn, methods):
    """Including ppdet's +1 pixel convention, where boxes a pixel apart still meet."""
    rows = torch.from_numpy(odd_rows())
    gapped = rows.clone()
    gapped[:, 2::2] += torch.arange(len(rows))[:, None] % 2 * 0.5  # half-pixel gaps: only +1 closes them
    stretched = rows.clone()
    stretched[::2, 5] += 800  # half the boxes tall: too many band copies, the sweep falls back to one band
    results = {}
    for way in ("dense", "sweep"):
        monkeypatch.setattr(merge, "SPARSE_MIN_BOXES", 10 ** 9 if way == "dense" else 0)
        monkeypatch.setattr(merge, "DENSE_FRACTION", 1e9)
        results[way] = [merge_fn(r, m, metric, thr, agnostic) for r in (rows, gapped, stretched) for m in methods
                        for metric in ("ios", "iou") for thr in (0.5, 0.25) for agnostic in (False, True)]
    for dense, sweep in zip(results["dense"], results["sweep"]):
        torch.testing.assert_close(sweep, dense, rtol=0, atol=0, equal_nan=True)


def spread_rows(boxes: int, seed: int = 0) -> np.ndarray:
    """One class of slice-like detections (1-6 jittered copies per object) spread over a 4000x3000 image."""
    g = np.random.default_rng(seed)
    objects = []
    while sum(len(o) for o in objects) < boxes:
        cx, cy = g.integers(0, 4 * 4000) / 4, g.integers(0, 4 * 3000) / 4
        w, h = g.integers(4, 60, 2)
        copies = []
        for _ in range(int(g.integers(1, 7))):
            j = g.integers(-12, 13, 4) / 4
            x1, y1 = max(0.0, cx + j[0]), max(0.0, cy + j[1])  # SAHI's predictions clip at 0
            copies.append([0, g.integers(1, 40) / 40, x1, y1, x1 + w + j[2], y1 + h + j[3]])
        objects.append(copies)
    return np.array([r for o in objects for r in o][:boxes], dtype=np.float32)


def test_many_spread_boxes_never_build_the_dense_matrix(monkeypatch):
    """2500 boxes in a class (SAHI's own sparse path from 2000): the sweep alone, same result as SAHI."""
    def no_matrix(*args, **kwargs):
        raise AssertionError("rows of the dense N x N matrix were computed")
    rows = spread_rows(2500)
    assert_same_merge(rows, "greedynmm", "ios", 0.5, False)  # the default way, before the matrix is forbidden
    monkeypatch.setattr(merge._DenseMatches, "prepare", no_matrix)
    for method, metric in itertools.product(("nms", "greedynmm", "nmm"), ("ios", "iou")):
        assert_same_merge(rows, method, metric, 0.5, False)
    ppdet_merge(torch.from_numpy(rows), "nms", "ios", 0.6)
