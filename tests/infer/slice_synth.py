"""Synthetic inputs for the sliced-inference tests: detection rows that exercise every merge rule, and a scripted
'detector' that reads its detections from the pixels (so two slicing pipelines fed the same crops agree)."""
from __future__ import annotations

import cv2
import numpy as np


def cluster_rows(seed: int, objects: int = 8, classes: int = 3, distinct_scores: bool = False) -> np.ndarray:
    """Rows (class, score, x1, y1, x2, y2) float32 as slices would give them: 1-6 jittered copies of each object.

    Coordinates lie on a quarter-pixel grid and scores on a 1/40 grid, so overlaps land exactly on thresholds
    (IoS 0.5...) and scores tie: the boundary cases, decided identically on every CPU (the arithmetic is exact up
    to the one correctly rounded division). ``distinct_scores``: no two rows share a score.
    """
    g = np.random.default_rng(seed)
    rows = []
    for _ in range(objects):
        cx, cy = g.integers(0, 200, 2)
        w, h = g.integers(4, 60, 2)
        for _ in range(int(g.integers(1, 7))):
            j = g.integers(-12, 13, 4) / 4
            x1, y1 = max(0.0, cx + j[0]), max(0.0, cy + j[1])
            rows.append([g.integers(0, classes), g.integers(1, 40) / 40, x1, y1, x1 + w + j[2], y1 + h + j[3]])
    out = np.array(rows, dtype=np.float32)
    if distinct_scores:
        out[:, 1] = (g.permutation(len(out)) + 1) / np.float32(4096)
    return out


# Hand-made cases, one rule each (class, score, x1, y1, x2, y2).
ADVERSARIAL = {
    # a small box inside a big one: IoS 1, IoU small
    "nested": [[0, 0.9, 10, 10, 50, 50], [0, 0.8, 20, 20, 30, 30], [0, 0.7, 22, 22, 28, 28]],
    # boxes sharing an edge: no overlap without +1, a 1-pixel-wide one with ppdet's +1
    "touching": [[1, 0.9, 0, 0, 10, 10], [1, 0.8, 10, 0, 20, 10], [1, 0.7, 0, 10, 10, 20]],
    # identical boxes and scores in different classes (class-agnostic: which class wins)
    "identical": [[2, 0.5, 5, 5, 15, 15], [0, 0.5, 5, 5, 15, 15], [1, 0.5, 5, 5, 15, 15], [2, 0.5, 5, 5, 15, 15]],
    # equal scores, different boxes (the coordinate tie-break, NMM's dominance rule)
    "tied_scores": [[0, 0.5, 0, 0, 10, 10], [0, 0.5, 2, 0, 12, 10], [0, 0.5, 4, 0, 14, 10], [0, 0.5, 1, 1, 9, 9]],
    # a chain A-B-C where A and C do not match (NMM is transitive, GREEDYNMM is not), then a weaker link D
    "chain": [[0, 0.9, 0, 0, 10, 10], [0, 0.8, 4, 0, 14, 10], [0, 0.7, 8, 0, 18, 10], [0, 0.6, 15, 0, 25, 10]],
    # B and C match the keeper A, but no longer the box A grows into after absorbing B (C is dropped)
    "regrown": [[0, 0.9, 0, 0, 10, 10], [0, 0.8, 0, 0, 10, 40], [0, 0.7, 5, 0, 25, 10]],
    # IoS exactly 0.5 and IoU exactly 1/3: on the threshold
    "on_threshold": [[0, 0.9, 0, 0, 10, 10], [0, 0.8, 5, 0, 15, 10], [0, 0.7, 0, 5, 10, 15]],
}


def adversarial_rows(name: str) -> np.ndarray:
    return np.array(ADVERSARIAL[name], dtype=np.float32)


def blob_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A gray image (all channels equal, so BGR and RGB read the same) of non-overlapping solid rectangles with
    distinct brightness on black, some of them cut by slice borders."""
    g = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    values = g.permutation(np.arange(20, 256))
    k = 0
    for y in range(3, h - 8, 37):
        for x in range(2, w - 8, 41):
            bw, bh = int(g.integers(5, 36)), int(g.integers(5, 33))
            img[y:min(h, y + bh), x:min(w, x + bw)] = values[k % len(values)]
            k += 1
    return img


def scripted_detect(image: np.ndarray) -> np.ndarray:
    """Rows read from the pixels: per blob a tight box (class and score from its brightness) and a looser, lower
    scored duplicate reaching 1.5 px past the blob (past the image's left and top edges for blobs touching them).

    Scores also carry the blob's position in the image given (exact float32 steps of 2**-22), so one blob seen by
    two slices scores differently in each: no ties between overlapping boxes, whose order numpy's unstable argsort
    (ppdet's NMS) would leave to the CPU's sort kernel.
    """
    gray = np.ascontiguousarray(image[:, :, 0])
    n, _, stats, _ = cv2.connectedComponentsWithStats((gray > 0).astype(np.uint8), connectivity=4)
    rows = []
    for x, y, w, h, _ in stats[1:n]:
        v = int(gray[y, x])
        place = (7919 * int(x) + 104729 * int(y)) % 4096 / 2**22
        rows.append([v % 3, v / 256 + place, x + 0.25, y + 0.25, x + w - 0.25, y + h - 0.5])
        rows.append([v % 3, v / 512 + place, x - 1.5, y - 0.75, x + w + 1.0, y + h + 0.25])
    return np.array(rows, dtype=np.float32).reshape(-1, 6)
