"""boxes.multiclass_nms, which stops at keep_top_k, proven equal (exactly) to slower implementations of Paddle's NMS.

Three oracles: the torchvision implementation it replaced, where that one is exact (distinct scores, proper
boxes), on inputs of many sizes; Paddle's kernel written as plain float32 loops, on adversarial inputs (exact
score ties, identical boxes, IoU at the threshold to the last bit, inverted and zero-area boxes, per-class caps);
and Paddle's own kernel on the same adversarial inputs when paddle is installed. Small batch and block sizes make
small inputs cross every batch and block boundary of the search.
"""
from __future__ import annotations

import functools
import zlib
from typing import Callable

import numpy as np
import pytest
import torch
import torchvision

from ppyoloe_sod import boxes as B
from ppyoloe_sod.zoo import NMSSpec


def previous_multiclass_nms(boxes: torch.Tensor, scores: torch.Tensor, nms: NMSSpec = NMSSpec()) -> torch.Tensor:
    """The implementation multiclass_nms replaced (torchvision NMS over each class's full list), as an oracle.

    torchvision.ops.nms runs class by class, as batched_nms did above 1000 candidates (below, batched_nms shifts
    boxes by class and the rounded coordinates can flip an IoU at the threshold). It matches Paddle only for
    distinct scores (torchvision sorts ties in no set order) and proper boxes (its areas of inverted boxes are
    negative, Paddle's 0). Also the baseline of benchmarks/nms.py.
    """
    cand_idx, cand_cls = (scores > nms.score_threshold).nonzero(as_tuple=True)
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
    cand_boxes = boxes[cand_idx].float()
    iou_thr = float(np.float32(nms.iou_threshold))
    kept_mask = torch.zeros_like(cand_cls, dtype=torch.bool)
    for c in cand_cls.unique():
        members = (cand_cls == c).nonzero()[:, 0]
        kept_mask[members[torchvision.ops.nms(cand_boxes[members], cand_scores[members].float(), iou_thr)]] = True
    keep = kept_mask.nonzero()[:, 0]  # class ascending, score descending
    if keep.numel() > nms.keep_top_k:
        keep = keep[torch.argsort(cand_scores[keep], descending=True, stable=True)[: nms.keep_top_k]].sort().values
    return torch.cat([cand_cls[keep, None].to(boxes.dtype), cand_scores[keep, None], boxes[cand_idx[keep]]], dim=1)


def paddle_overlap(box: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Paddle's JaccardOverlap(box, kept[k]) for each kept box, in float32 (NaN for two touching zero-area boxes)."""
    def area(b: np.ndarray) -> np.ndarray:
        w, h = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]
        return np.where((w < 0) | (h < 0), np.float32(0), w * h)

    apart = (kept[:, 0] > box[2]) | (kept[:, 2] < box[0]) | (kept[:, 1] > box[3]) | (kept[:, 3] < box[1])
    inter = ((np.minimum(box[2], kept[:, 2]) - np.maximum(box[0], kept[:, 0]))
             * (np.minimum(box[3], kept[:, 3]) - np.maximum(box[1], kept[:, 1])))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(apart, np.float32(0), inter / (area(box) + area(kept) - inter))


def plain_paddle_nms(boxes: np.ndarray, scores: np.ndarray, spec: NMSSpec) -> np.ndarray:
    """Paddle's multiclass_nms3 CPU kernel as plain loops over float32 numpy arrays: the semantics, not the speed."""
    score_thr, iou_thr = np.float32(spec.score_threshold), np.float32(spec.iou_threshold)
    kept_rows: list[tuple[int, int]] = []  # (class, anchor), class by class in NMS order
    for c in range(scores.shape[1]):
        # sorted() is stable: equal scores keep the lower anchor first, like Paddle's std::stable_sort.
        ranked = sorted((i for i in range(len(boxes)) if scores[i, c] > score_thr), key=lambda i: -scores[i, c])
        kept: list[int] = []
        for i in ranked[: spec.nms_top_k]:
            if np.all(paddle_overlap(boxes[i], boxes[kept].reshape(-1, 4)) <= iou_thr):  # NaN fails: suppressed
                kept.append(i)
        kept_rows += [(c, i) for i in kept]
    if len(kept_rows) > spec.keep_top_k:  # stable again: equal scores keep the lower class, then the NMS order
        best = sorted(range(len(kept_rows)), key=lambda r: -scores[kept_rows[r][1], kept_rows[r][0]])
        kept_rows = [kept_rows[r] for r in sorted(best[: spec.keep_top_k])]
    return np.array([(c, scores[i, c], *boxes[i]) for c, i in kept_rows], dtype=np.float32).reshape(-1, 6)


def ours(boxes: np.ndarray, scores: np.ndarray, spec: NMSSpec = NMSSpec()) -> np.ndarray:
    return B.multiclass_nms(torch.from_numpy(boxes), torch.from_numpy(scores), spec).numpy()


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


#: (first batch, chunk, block) sizes of the search: its defaults, and small ones that small inputs cross many times.
SEARCH_SIZES = {"default-sizes": None, "small-blocks": (40, 31, 17), "tiny-blocks": (3, 5, 2)}


@pytest.fixture(params=["default-sizes", "small-blocks"])
def search_sizes(request, monkeypatch):
    use_search_sizes(monkeypatch, request.param)


@pytest.fixture(params=list(SEARCH_SIZES))
def all_search_sizes(request, monkeypatch):
    """As search_sizes, with blocks of 2 too: for the small adversarial inputs."""
    use_search_sizes(monkeypatch, request.param)


def use_search_sizes(monkeypatch, name: str) -> None:
    if SEARCH_SIZES[name]:
        for attr, value in zip(["_NMS_FIRST_BATCH", "_NMS_CHUNK", "_NMS_BLOCK"], SEARCH_SIZES[name]):
            monkeypatch.setattr(B, attr, value)


# ---- inputs -------------------------------------------------------------------------------------------------

def clustered_boxes(rng: np.random.Generator, n: int, clusters: int = 8) -> np.ndarray:
    """Boxes around a few centres, so that NMS has overlaps to resolve."""
    centres = rng.uniform(20, 300, (clusters, 2))
    c = centres[rng.integers(0, clusters, n)] + rng.normal(0, 6, (n, 2))
    wh = rng.uniform(4, 40, (n, 2))
    return np.concatenate([c - wh / 2, c + wh / 2], 1).astype(np.float32)


def distinct_scores(rng: np.random.Generator, n: int, classes: int, low: float = 0.0) -> np.ndarray:
    """n x classes scores in (low, 1), all different (a permutation of a fine grid)."""
    grid = (rng.permutation(n * classes) + 1.0) / (n * classes + 1)
    scores = (low + (1 - low) * grid).astype(np.float32).reshape(n, classes)
    assert np.unique(scores).size == scores.size
    return scores


def decoded_boxes(rng: np.random.Generator, size: int) -> np.ndarray:
    """Boxes of a random head decoded at size x size (strides 8, 16, 32; DFL bins -2..7 as SOD's): neighbours
    overlap, as in a real head's dense output."""
    points, strides = [], []
    for s in (8, 16, 32):
        ys, xs = np.meshgrid(np.arange(size // s) + 0.5, np.arange(size // s) + 0.5, indexing="ij")
        points.append(np.stack([xs, ys], -1).reshape(-1, 2) * s)
        strides.append(np.full((xs.size, 1), s))
    points_t = torch.from_numpy(np.concatenate(points)).float()
    strides_t = torch.from_numpy(np.concatenate(strides)).float()
    reg = torch.from_numpy(rng.normal(0, 1, (1, len(points_t), 40))).float()
    boxes, _ = B.decode(torch.zeros(1, len(points_t), 1), reg, points_t, strides_t, torch.linspace(-2, 7, 10))
    return boxes[0].numpy()


# ---- against the previous implementation ------------------------------------------------------------------------

PREVIOUS_CASES = {
    "one box": (1, 1, 0.0, NMSSpec()),
    "40 x 1": (40, 1, 0.0, NMSSpec()),
    "300 x 3": (300, 3, 0.0, NMSSpec()),
    "2000 x 4 dense": (2000, 4, 0.02, NMSSpec()),
    "2000 x 4 sparse, under 500 kept": (2000, 4, 0.0, NMSSpec(score_threshold=0.9)),
    "nothing above the threshold": (50, 2, 0.0, NMSSpec(score_threshold=1.0)),
    "small caps": (600, 5, 0.0, NMSSpec(score_threshold=0.2, nms_top_k=30, keep_top_k=40, iou_threshold=0.5)),
    "12000 x 1, over 10000 in a class": (12000, 1, 0.02, NMSSpec()),
}


@pytest.mark.parametrize("case", PREVIOUS_CASES, ids=list(PREVIOUS_CASES))
def test_equals_previous_implementation(case, search_sizes):
    n, classes, low, spec = PREVIOUS_CASES[case]
    rng = np.random.default_rng(n * 10 + classes)
    boxes, scores = clustered_boxes(rng, n), distinct_scores(rng, n, classes, low)
    want = previous_multiclass_nms(torch.from_numpy(boxes), torch.from_numpy(scores), spec)
    assert torch.equal(B.multiclass_nms(torch.from_numpy(boxes), torch.from_numpy(scores), spec), want)


@pytest.mark.parametrize("size,classes", [(256, 10), (320, 3)])
def test_equals_previous_implementation_on_a_decoded_dense_head(size, classes, search_sizes):
    rng = np.random.default_rng(size)
    boxes = decoded_boxes(rng, size)
    scores = distinct_scores(rng, len(boxes), classes, low=0.02)
    assert (scores > 0.01).all()
    want = previous_multiclass_nms(torch.from_numpy(boxes), torch.from_numpy(scores))
    assert want.shape[0] == 500
    assert torch.equal(B.multiclass_nms(torch.from_numpy(boxes), torch.from_numpy(scores)), want)


# ---- adversarial inputs, against Paddle's semantics ---------------------------------------------------------------

def grid_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    """8 x 8 boxes on a 2-pixel grid: many identical boxes and many overlaps of exactly representable IoU."""
    corner = rng.integers(0, 20, (n, 2)).astype(np.float32) * 2
    return np.concatenate([corner, corner + 8], 1)


def quantised_scores(rng: np.random.Generator, n: int, classes: int, levels: int = 5) -> np.ndarray:
    """Scores from a few levels: exact ties everywhere, at the nms_top_k and keep_top_k cuts too."""
    return (rng.integers(0, levels, (n, classes)) / (levels - 1)).astype(np.float32)


def near_threshold_pairs(rng: np.random.Generator, count: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of boxes whose float32 IoU is the float32 threshold 0.6 or one ulp from it, apart from other pairs.

    Non-integer coordinates: whether the second box of a pair survives is decided by the last bit of the IoU, as
    Paddle computes it from the boxes as given (no shifted copies of them). Each class scores every pair alike.
    """
    thr = np.float32(0.6)
    pairs: list[np.ndarray] = []
    at, above = 0, 0
    while len(pairs) < count:
        x, y, w, h = rng.uniform(0, 50), 60.0 * len(pairs), rng.uniform(5, 40), rng.uniform(5, 40)
        first = np.array([x, y, x + w, y + h], dtype=np.float32)
        shift = np.float32((first[2] - first[0]) / 4)  # same-size box shifted by a quarter width: IoU 0.6
        for nudge in range(-3, 4):
            moved = np.float32(shift + nudge * np.spacing(shift))
            second = first + np.array([moved, 0, moved, 0], dtype=np.float32)
            iou = paddle_overlap(second, first[None])[0]
            if abs(int(iou.view(np.int32)) - int(thr.view(np.int32))) <= 1:
                pairs.append(np.stack([first, second]))
                at, above = at + (iou == thr), above + (iou > thr)
                break
    assert at > 0 and above > 0, "the pairs must include IoU exactly at and just above the threshold"
    boxes = np.concatenate(pairs)
    scores = np.tile(np.array([[0.9], [0.8]], dtype=np.float32), (count, classes))
    return boxes, scores


def inverted_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    """A third of the boxes with x2 < x1 or y2 < y1 (Paddle gives them area 0) and some of zero width."""
    boxes = clustered_boxes(rng, n)
    flip = rng.uniform(size=n) < 0.33
    boxes[flip] = boxes[flip][:, [2, 3, 0, 1]]
    boxes[: n // 10, 2] = boxes[: n // 10, 0]
    return boxes


ADVERSARIAL: dict[str, Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray, NMSSpec]]] = {
    "ties at the keep_top_k cut": lambda rng: (grid_boxes(rng, 700), quantised_scores(rng, 700, 4), NMSSpec()),
    "ties at the nms_top_k cut": lambda rng: (grid_boxes(rng, 400), quantised_scores(rng, 400, 3),
                                              NMSSpec(nms_top_k=37, keep_top_k=90)),
    "identical boxes, tied scores": lambda rng: (np.tile(np.float32([[3, 4, 20, 30]]), (500, 1)),
                                                 quantised_scores(rng, 500, 3, levels=3), NMSSpec()),
    "IoU exactly 0.6 (integer grid)": lambda rng: (grid_boxes(rng, 300) * np.float32([1, 0, 1, 0]) + np.float32(
        [0, 0, 0, 10]), quantised_scores(rng, 300, 2), NMSSpec()),
    "IoU at 0.6 to the last bit, 3 classes": lambda rng: (*near_threshold_pairs(rng, 40, 3), NMSSpec()),
    "inverted and zero-area boxes": lambda rng: (inverted_boxes(rng, 600), quantised_scores(rng, 600, 3, 7),
                                                 NMSSpec()),
    "zero-area boxes on one point": lambda rng: (np.tile(np.float32([[5, 5, 5, 5]]), (30, 1)),
                                                 quantised_scores(rng, 30, 2), NMSSpec()),
    "single class, fewer than 500 kept": lambda rng: (grid_boxes(rng, 800), quantised_scores(rng, 800, 1),
                                                      NMSSpec()),
    "no candidate": lambda rng: (grid_boxes(rng, 20), np.zeros((20, 3), np.float32), NMSSpec()),
}


def adversarial_case(case: str) -> tuple[np.ndarray, np.ndarray, NMSSpec]:
    return ADVERSARIAL[case](np.random.default_rng(zlib.crc32(case.encode())))


@functools.cache
def plain_paddle_answer(case: str) -> np.ndarray:
    """plain_paddle_nms of a case, computed once for all search sizes (it is the slow part)."""
    return plain_paddle_nms(*adversarial_case(case))


@pytest.mark.parametrize("case", ADVERSARIAL, ids=list(ADVERSARIAL))
def test_equals_paddle_semantics_on_adversarial_inputs(case, all_search_sizes):
    assert_same(ours(*adversarial_case(case)), plain_paddle_answer(case))


def test_no_anchors():
    assert B.multiclass_nms(torch.zeros(0, 4), torch.zeros(0, 3)).shape == (0, 6)


@pytest.mark.oracle
@pytest.mark.parametrize("case", ADVERSARIAL, ids=list(ADVERSARIAL))
def test_equals_paddle_kernel_on_adversarial_inputs(case):
    paddle = pytest.importorskip("paddle")
    boxes, scores, spec = adversarial_case(case)
    want, _, _ = paddle._C_ops.multiclass_nms3(
        paddle.to_tensor(boxes[None]), paddle.to_tensor(np.ascontiguousarray(scores.T[None])), None,
        spec.score_threshold, spec.nms_top_k, spec.keep_top_k, spec.iou_threshold, True, 1.0, -1)
    assert_same(ours(boxes, scores, spec), want.numpy().reshape(-1, 6))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("case", ["ties at the keep_top_k cut", "IoU at 0.6 to the last bit, 3 classes",
                                  "inverted and zero-area boxes"])
def test_cuda_equals_cpu(case):
    boxes, scores, spec = adversarial_case(case)
    cpu = B.multiclass_nms(torch.from_numpy(boxes), torch.from_numpy(scores), spec)
    cuda = B.multiclass_nms(torch.from_numpy(boxes).cuda(), torch.from_numpy(scores).cuda(), spec)
    assert torch.equal(cuda.cpu(), cpu)
