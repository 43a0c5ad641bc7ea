"""The VisDrone protocol on top of the COCO metrics: ignored regions, and the toolkit's summary numbers.

The official VisDrone-DET toolkit (``dropObjectsInIgr.m``) removes, before matching, every detection *and* every
ground-truth box that has at least half of its own area inside the union of the image's ignored regions
(it keeps a box when ``covered / (w * h) < 0.5``). It reports AP@[.5:.95], AP50, AP75 with up to 500 detections
per image and AR@1/10/100/500. Here the covered area is computed exactly from the rectangles, where the toolkit
counts pixels of a rasterised mask; the two can differ only for boxes whose coverage is within a pixel's worth of
the threshold. Matching is pycocotools' (the toolkit's own matcher follows the same COCO rules).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ppyoloe_sod.data.coco import ignored_regions_by_image
from ppyoloe_sod.errors import DatasetError
from ppyoloe_sod.eval.metrics import (
    MAX_DETS_500,
    CocoMetrics,
    SizeBand,
    as_detection_array,
    as_image_id,
    evaluate_detections,
    load_gt_dict,
)

#: A box is dropped when at least this fraction of its area lies in ignored regions (the toolkit's rule).
IGNORE_THRESHOLD = 0.5


def covered_fraction(boxes: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Fraction of each xyxy box's area inside the union of the xyxy ``regions`` (0 for zero-area boxes).

    Exact: the region edges cut the plane into a grid whose cells are either fully covered or not; a box's
    covered area is the sum of its overlaps with the covered cells, which separates into x and y overlaps.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    regions = np.asarray(regions, dtype=np.float64).reshape(-1, 4)
    regions = regions[(regions[:, 2] > regions[:, 0]) & (regions[:, 3] > regions[:, 1])]
    if not len(boxes) or not len(regions):
        return np.zeros(len(boxes))
    xs = np.unique(regions[:, [0, 2]])
    ys = np.unique(regions[:, [1, 3]])
    # cell i spans xs[i]..xs[i+1]; a region covers it when it spans the whole cell
    cov_x = (regions[:, 0:1] <= xs[None, :-1]) & (xs[None, 1:] <= regions[:, 2:3])  # [R, Cx]
    cov_y = (regions[:, 1:2] <= ys[None, :-1]) & (ys[None, 1:] <= regions[:, 3:4])  # [R, Cy]
    covered = (cov_y[:, :, None] & cov_x[:, None, :]).any(axis=0).astype(np.float64)  # [Cy, Cx]
    ox = np.clip(np.minimum(boxes[:, 2:3], xs[None, 1:]) - np.maximum(boxes[:, 0:1], xs[None, :-1]), 0, None)
    oy = np.clip(np.minimum(boxes[:, 3:4], ys[None, 1:]) - np.maximum(boxes[:, 1:2], ys[None, :-1]), 0, None)
    inside = np.einsum("ny,yx,nx->n", oy, covered, ox)
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    return np.divide(inside, area, out=np.zeros_like(area), where=area > 0)


@dataclass
class IgnoreReport:
    """What the ignored-region rule removed."""

    removed_detections: int
    removed_gt: int
    images_with_regions: int
    num_regions: int
    threshold: float


def filter_ignored(
    data: Mapping[str, Any],
    detections: Mapping[Any, Any],
    regions: Mapping[int, np.ndarray],
    threshold: float = IGNORE_THRESHOLD,
    filter_gt: bool = True,
) -> tuple[dict[str, Any], dict[int, np.ndarray], IgnoreReport]:
    """Drop detections (and, as the toolkit does, ground truth) mostly inside ignored regions.

    Returns new (gt dict, detections, report); the inputs are not modified.
    """
    image_ids = {int(im["id"]) for im in data["images"]}
    unknown = sorted(set(regions) - image_ids)
    if unknown:
        raise DatasetError(f"ignored regions refer to image ids not in the ground truth: {unknown[:5]}")
    regions = {k: np.asarray(v, dtype=np.float64).reshape(-1, 4) for k, v in regions.items() if len(v)}

    kept_dets: dict[int, np.ndarray] = {}
    removed_dets = 0
    for key, dets in detections.items():
        image_id = as_image_id(key)
        arr = as_detection_array(dets, image_id)
        if image_id in regions and len(arr):
            drop = (covered_fraction(arr[:, 2:6], regions[image_id]) >= threshold) & (arr[:, 0] >= 0)
            removed_dets += int(drop.sum())
            arr = arr[~drop]
        kept_dets[image_id] = arr

    anns = list(data.get("annotations", []))
    removed_gt = 0
    if filter_gt and regions and anns:
        keep = np.ones(len(anns), dtype=bool)
        by_image: dict[int, list[int]] = {}
        for i, a in enumerate(anns):
            if int(a["image_id"]) in regions:
                by_image.setdefault(int(a["image_id"]), []).append(i)
        for image_id, idx in by_image.items():
            xywh = np.asarray([anns[i]["bbox"] for i in idx], dtype=np.float64).reshape(-1, 4)
            xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
            keep[np.asarray(idx)[covered_fraction(xyxy, regions[image_id]) >= threshold]] = False
        removed_gt = int((~keep).sum())
        anns = [a for a, k in zip(anns, keep) if k]
    report = IgnoreReport(removed_dets, removed_gt, len(regions), int(sum(len(v) for v in regions.values())), threshold)
    return {**data, "annotations": anns}, kept_dets, report


@dataclass
class VisDroneMetrics:
    """The VisDrone toolkit's summary (AP, AP50, AP75 at 500 detections per image; AR@1/10/100/500)."""

    AP: float
    AP50: float
    AP75: float
    AR1: float
    AR10: float
    AR100: float
    AR500: float
    ignored: IgnoreReport
    coco: CocoMetrics

    def as_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("AP", "AP50", "AP75", "AR1", "AR10", "AR100", "AR500")}
        out["ignored"] = asdict(self.ignored)
        return out

    def table(self) -> str:
        names = ["AP", "AP50", "AP75", "AR1", "AR10", "AR100", "AR500"]
        ig = self.ignored
        return "\n".join([
            "VisDrone protocol (up to 500 detections per image, ignored regions applied):",
            " ".join(n.rjust(8) for n in names),
            " ".join(f"{getattr(self, n):8.4f}" for n in names),
            f"ignored regions: {ig.num_regions} in {ig.images_with_regions} images; removed "
            f"{ig.removed_detections} detections and {ig.removed_gt} ground-truth boxes "
            f"(>= {ig.threshold:.0%} of their area inside)",
        ])  # fmt: skip


def evaluate_visdrone(
    gt: str | os.PathLike | Mapping[str, Any],
    detections: Mapping[Any, Any],
    ignored_regions: Mapping[int, np.ndarray] | None = None,
    threshold: float = IGNORE_THRESHOLD,
    filter_gt: bool = True,
    size_bands: Sequence[SizeBand] | None = None,
    class_names: Sequence[str] | None = None,
    engine: str = "pycocotools",
) -> VisDroneMetrics:
    """VisDrone-style evaluation. ``ignored_regions`` (image_id -> [R, 4] xyxy) defaults to the json's own
    top-level ``ignored_regions`` list; without any, this is the COCO evaluation at 500 detections per image."""
    data, source = load_gt_dict(gt)
    if ignored_regions is None:
        ignored_regions = ignored_regions_by_image(data, source)
    data, dets, report = filter_ignored(data, detections, ignored_regions, threshold, filter_gt)
    coco = evaluate_detections(data, dets, MAX_DETS_500, size_bands, class_names, engine)
    top = MAX_DETS_500[-1]
    return VisDroneMetrics(
        AP=coco.at_max[f"AP@{top}"],
        AP50=coco.at_max[f"AP50@{top}"],
        AP75=coco.at_max[f"AP75@{top}"],
        AR1=coco.AR_at[1],
        AR10=coco.AR_at[10],
        AR100=coco.AR_at[100],
        AR500=coco.AR_at[top],
        ignored=report,
        coco=coco,
    )
