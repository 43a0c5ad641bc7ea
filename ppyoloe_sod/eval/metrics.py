"""COCO box metrics computed by pycocotools' own COCOeval, plus the views COCO's summary lacks.

Detections come per image as float arrays ``[N, 6]`` = (class_index, score, x1, y1, x2, y2) in original-image
pixels, with class_index contiguous 0..C-1 in the order of the json's category list (PaddleDetection's rule:
``getCatIds()`` order, the same mapping as ``ppyoloe_sod.data.coco``). They become COCO
results exactly as PaddleDetection writes them (xywh with ``w = x2 - x1``, no +1; rows with class < 0 skipped),
and pycocotools does all matching and accumulation. ``COCOeval.summarize`` hardcodes where it looks up maxDets
and area ranges, so the summary numbers are read here from ``eval['precision']`` / ``eval['recall']`` with the
same formula (mean over entries > -1); a test proves they equal ``summarize`` on the standard settings. One
COCOeval run can then serve the 100-detection COCO protocol, the 500-detection view and finer size bands at once.
"""
from __future__ import annotations

import contextlib
import io
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ppyoloe_sod.data.coco import load_json
from ppyoloe_sod.errors import DatasetError

#: COCO's protocol: AR@1, AR@10 and everything else at 100 detections per image.
COCO_MAX_DETS: tuple[int, ...] = (1, 10, 100)
#: What the model can produce (keep_top_k 500); the VisDrone toolkit also reports AR@500.
MAX_DETS_500: tuple[int, ...] = (1, 10, 100, 500)
_COCO_AREAS = (("all", 0.0, 1e10), ("small", 0.0, 32.0**2), ("medium", 32.0**2, 96.0**2), ("large", 96.0**2, 1e10))


@dataclass(frozen=True)
class SizeBand:
    """An object-area range [lo, hi] in pixels² (both ends inclusive, as COCOeval's areaRng)."""

    name: str
    lo: float
    hi: float


#: Bands finer than COCO's small/medium/large, for small-object work (side lengths 8, 16, 32, 96 px).
SMALL_OBJECT_BANDS: tuple[SizeBand, ...] = (
    SizeBand("<8²", 0.0, 8.0**2),
    SizeBand("8²-16²", 8.0**2, 16.0**2),
    SizeBand("16²-32²", 16.0**2, 32.0**2),
    SizeBand("32²-96²", 32.0**2, 96.0**2),
    SizeBand(">96²", 96.0**2, 1e10),
)


@dataclass
class ClassAP:
    """One row of the per-class table (COCO protocol: 100 detections per image, all areas)."""

    class_index: int
    category_id: int
    name: str
    AP: float
    AP50: float
    AP75: float
    num_gt: int
    num_dets: int


@dataclass
class BandMetrics:
    """AP and recall of one size band, at the largest max_dets evaluated."""

    name: str
    lo: float
    hi: float
    num_gt: int
    AP: float
    AP50: float
    AR: float
    AR50: float
    max_dets: int


@dataclass
class CocoMetrics:
    """COCO box metrics. -1 means "undefined" (no ground truth in that slice), as in pycocotools."""

    AP: float
    AP50: float
    AP75: float
    APs: float
    APm: float
    APl: float
    AR1: float
    AR10: float
    AR100: float
    ARs: float
    ARm: float
    ARl: float
    #: the 12 numbers of ``COCOeval.stats`` in pycocotools' order.
    stats: list[float]
    max_dets: tuple[int, ...]
    #: AR at every max_dets value evaluated (e.g. {1:, 10:, 100:, 500:}).
    AR_at: dict[int, float]
    #: AP, AP50, AP75, APs, APm, APl, ARs, ARm, ARl at the largest max_dets, when it exceeds 100 (else empty).
    at_max: dict[str, float]
    per_class: list[ClassAP]
    size_bands: list[BandMetrics]
    num_images: int
    num_detections: int
    #: precision [T, R, K] (IoU thresholds x recall thresholds x classes), all areas, 100 detections per image.
    precision: np.ndarray = field(repr=False)
    iou_thrs: np.ndarray = field(repr=False)
    rec_thrs: np.ndarray = field(repr=False)
    #: which COCOeval implementation produced the numbers ("pycocotools" or "faster").
    engine: str = "pycocotools"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready numbers (the PR arrays are left out; plot them instead)."""
        out = asdict(self)
        for key in ("precision", "iou_thrs", "rec_thrs"):
            out.pop(key)
        out["max_dets"] = list(self.max_dets)
        out["AR_at"] = {str(k): v for k, v in self.AR_at.items()}
        return out

    def table(self) -> str:
        """A plain-text report: summary, extra max_dets, size bands, per class."""
        lines = [f"COCO bbox metrics ({self.num_images} images, {self.num_detections} detections, {self.engine})"]
        lines.append(_row(["AP", "AP50", "AP75", "APs", "APm", "APl"]))
        lines.append(_row([self.AP, self.AP50, self.AP75, self.APs, self.APm, self.APl]))
        lines.append(_row([f"AR@{k}" for k in self.AR_at] + ["ARs", "ARm", "ARl"]))
        lines.append(_row(list(self.AR_at.values()) + [self.ARs, self.ARm, self.ARl]))
        if self.at_max:
            lines.append(f"at {max(self.max_dets)} detections per image:")
            lines.append(_row(list(self.at_max)))
            lines.append(_row(list(self.at_max.values())))
        if self.size_bands:
            lines.append(f"size bands (area px², at {self.size_bands[0].max_dets} detections per image):")
            lines.append(_row(["band", "num_gt", "AP", "AP50", "AR", "AR50"], first=12))
            for b in self.size_bands:
                lines.append(_row([b.name, b.num_gt, b.AP, b.AP50, b.AR, b.AR50], first=12))
        if self.per_class:
            lines.append("per class:")
            lines.append(_row(["class", "num_gt", "num_dets", "AP", "AP50", "AP75"], first=18))
            for c in self.per_class:
                lines.append(_row([c.name, c.num_gt, c.num_dets, c.AP, c.AP50, c.AP75], first=18))
        return "\n".join(lines)


def _row(cells: Sequence[Any], first: int = 8) -> str:
    out = []
    for i, c in enumerate(cells):
        text = f"{c:.4f}" if isinstance(c, float) else str(c)
        out.append(text.ljust(first) if i == 0 else text.rjust(9))
    return " ".join(out)


# --------------------------------------------------------------------------------------------- ground truth


def load_gt_dict(gt: str | os.PathLike | Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """Read (or copy) a COCO ground-truth dict and check what evaluation needs; returns (dict, source name).

    A dict is copied down to the annotation level, because pycocotools writes an 'ignore' key into every
    ground-truth annotation it evaluates.
    """
    if isinstance(gt, Mapping):
        source = "<ground-truth dict>"
        data = dict(gt)
    else:
        source = str(gt)
        data = load_json(gt)  # DatasetError naming the file: missing, malformed, oversized or nested too deeply
        if not isinstance(data, dict):
            raise DatasetError(f"ground-truth file {source} holds a {type(data).__name__}, not a COCO dict")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list) or not data[key]:
            raise DatasetError(
                f"{source} has no {key!r} (or an empty list); evaluation needs a COCO json with at least one "
                f"image and one category"
            )
    anns = data.get("annotations", [])
    if not isinstance(anns, list):
        raise DatasetError(f"{source}: 'annotations' must be a list, got {type(anns).__name__}")
    seen: set[Any] = set()
    for i, ann in enumerate(anns):
        missing = [k for k in ("id", "image_id", "category_id", "bbox", "area") if k not in ann]
        if missing:
            raise DatasetError(
                f"{source}: annotation id {ann.get('id', f'? (entry {i})')} lacks {missing}; COCO evaluation "
                f"needs them (area is normally w * h of the box)"
            )
        if ann["id"] in seen:
            raise DatasetError(f"{source}: annotation id {ann['id']} occurs twice; pycocotools would drop one "
                               f"of them silently; renumber the annotations")  # fmt: skip
        seen.add(ann["id"])
    data["annotations"] = [dict(a) for a in anns]
    return data, source


def coco_from_dict(data: Mapping[str, Any]):
    """A pycocotools COCO object over an in-memory dict, without its chatter on stdout."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


# --------------------------------------------------------------------------------------------- detections


def detections_to_coco_results(
    detections: Mapping[Any, Any], cat_ids: Sequence[int], image_ids: set[int], source: str = "ground truth"
) -> list[dict[str, Any]]:
    """[N, 6] (class, score, x1, y1, x2, y2) rows -> COCO result dicts, as ppdet's get_det_res writes them.

    Rows with class < 0 (Paddle's "no detection" row) are skipped; w = x2 - x1 is computed in float64.
    """
    unknown = [k for k in detections if as_image_id(k) not in image_ids]
    if unknown:
        raise DatasetError(
            f"detections given for {len(unknown)} image id(s) not in {source}: {sorted(map(str, unknown))[:5]}; "
            f"key detections by the json's image 'id' values"
        )
    results: list[dict[str, Any]] = []
    num_classes = len(cat_ids)
    for key, dets in detections.items():
        image_id = as_image_id(key)
        arr = as_detection_array(dets, image_id)
        arr = arr[arr[:, 0].astype(np.int64) >= 0]
        if not len(arr):
            continue
        if not np.isfinite(arr).all():
            raise DatasetError(f"detections of image {image_id} contain NaN or infinite values; check the model output")
        cls = arr[:, 0].astype(np.int64)
        bad = cls[cls >= num_classes]
        if bad.size:
            raise DatasetError(
                f"detections of image {image_id} have class index {int(bad[0])}, but {source} has only "
                f"{num_classes} categories (valid indices 0..{num_classes - 1}); the model and the dataset "
                f"disagree on the class list"
            )
        cats = np.asarray(cat_ids, dtype=np.int64)[cls].tolist()
        scores = arr[:, 1].tolist()
        x1, y1 = arr[:, 2], arr[:, 3]
        xywh = np.stack([x1, y1, arr[:, 4] - x1, arr[:, 5] - y1], axis=1).tolist()
        results.extend(
            {"image_id": image_id, "category_id": c, "bbox": b, "score": s} for c, b, s in zip(cats, xywh, scores)
        )
    return results


def as_image_id(key: Any) -> int:
    """A detections key as a plain int; anything but an integer (e.g. a file name) is a clear error."""
    if isinstance(key, (bool, np.bool_)) or not isinstance(key, (int, np.integer)):
        raise DatasetError(
            f"detections key {key!r} ({type(key).__name__}) is not an integer image id; key detections by the "
            f"json's image 'id' values"
        )
    return int(key)


def as_detection_array(dets: Any, image_id: int | str) -> np.ndarray:
    """One image's detections (ndarray, tensor or nested list) as float64 [N, 6]; float32 values stay exact."""
    if hasattr(dets, "detach"):  # a torch tensor, without importing torch here
        dets = dets.detach().cpu().numpy()
    arr = np.asarray(dets, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 6), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 6:
        raise DatasetError(
            f"detections of image {image_id} have shape {tuple(arr.shape)}; expected [N, 6] rows of "
            f"(class_index, score, x1, y1, x2, y2)"
        )
    return arr


# --------------------------------------------------------------------------------------------- evaluation


#: "pycocotools" is the reference and the default. "faster" is faster-coco-eval (a C++ port, ~20x faster on
#: VisDrone-sized runs, an optional dependency): the same matches and recall, but its precision can differ from
#: pycocotools' in the last bit (tests bound the difference by 1e-12), so it is opt-in, e.g. for periodic
#: evaluation during training.
ENGINES = ("pycocotools", "faster")


def resolve_engine(engine: str) -> str:
    """Check the engine name; say how to get faster-coco-eval when it is asked for but missing."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "faster":
        try:
            import faster_coco_eval  # noqa: F401
        except ImportError:
            raise ImportError("engine='faster' needs faster-coco-eval: pip install faster-coco-eval") from None
    return engine


def run_cocoeval(
    data: Mapping[str, Any],
    results: list[dict[str, Any]],
    max_dets: Sequence[int],
    area_rngs: Sequence[tuple],
    engine: str = "pycocotools",
):
    """Evaluate and accumulate ``results`` against the gt dict ``data``, quietly; returns the COCOeval object.

    Only ``params`` and ``eval['precision' | 'recall']`` of the result are used, which both engines share.
    """
    with contextlib.redirect_stdout(io.StringIO()):
        if resolve_engine(engine) == "faster":
            from faster_coco_eval import COCO as FasterCOCO, COCOeval_faster

            coco_gt = FasterCOCO(data)
            coco_dt = coco_gt.loadRes(results) if results else _empty_results(coco_gt, FasterCOCO)
            ev = COCOeval_faster(coco_gt, coco_dt, "bbox", print_function=lambda *a, **k: None)
        else:
            from pycocotools.cocoeval import COCOeval

            coco_gt = coco_from_dict(data)
            coco_dt = coco_gt.loadRes(results) if results else _empty_results(coco_gt)
            ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.maxDets = sorted(int(m) for m in max_dets)
        ev.params.areaRng = [[float(lo), float(hi)] for _, lo, hi in area_rngs]
        ev.params.areaRngLbl = [name for name, _, _ in area_rngs]
        ev.evaluate()
        ev.accumulate()
    return ev


def _empty_results(coco_gt, coco_cls=None):
    """loadRes cannot take an empty list; an empty result set scores 0 where ground truth exists."""
    empty = {"images": list(coco_gt.dataset["images"]), "categories": list(coco_gt.dataset["categories"]),
             "annotations": []}  # fmt: skip
    return coco_from_dict(empty) if coco_cls is None else coco_cls(empty)


def _mean_valid(values: np.ndarray) -> float:
    """pycocotools' summary formula: the mean over defined entries (> -1), or -1 if there are none."""
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else -1.0


class _Reader:
    """Index helper over a finished COCOeval: AP / AR for an (IoU, area, maxDets, class) slice."""

    def __init__(self, ev) -> None:
        p = ev.params
        self.precision = ev.eval["precision"]  # [T, R, K, A, M]
        self.recall = ev.eval["recall"]  # [T, K, A, M]
        self.area_index = {name: i for i, name in enumerate(p.areaRngLbl)}
        self.det_index = {m: i for i, m in enumerate(p.maxDets)}
        self.cat_index = {int(c): i for i, c in enumerate(p.catIds)}  # COCOeval sorts category ids
        self.iou_thrs = p.iouThrs

    def _t(self, iou: float | None) -> slice | np.ndarray:
        return slice(None) if iou is None else np.flatnonzero(np.isclose(self.iou_thrs, iou))

    def ap(self, iou: float | None = None, area: str = "all", max_dets: int = 100, cat_id: int | None = None) -> float:
        s = self.precision[self._t(iou), :, :, self.area_index[area], self.det_index[max_dets]]
        return _mean_valid(s if cat_id is None else s[..., self.cat_index[int(cat_id)]])

    def ar(self, iou: float | None = None, area: str = "all", max_dets: int = 100) -> float:
        return _mean_valid(self.recall[self._t(iou), :, self.area_index[area], self.det_index[max_dets]])


def evaluate_detections(
    gt: str | os.PathLike | Mapping[str, Any],
    detections: Mapping[Any, Any],
    max_dets: Sequence[int] = COCO_MAX_DETS,
    size_bands: Sequence[SizeBand] | None = None,
    class_names: Sequence[str] | None = None,
    engine: str = "pycocotools",
) -> CocoMetrics:
    """COCO bbox metrics of ``detections`` (image_id -> [N, 6] rows) against ``gt`` (json path or dict).

    ``max_dets`` must contain COCO's 1, 10 and 100; a larger value (e.g. 500) adds AR@500 and the ``at_max``
    numbers. ``size_bands`` (e.g. ``SMALL_OBJECT_BANDS``) adds AP / recall per object-area band, evaluated in
    the same pycocotools run at the largest max_dets. Images without an entry count as having no detections.
    ``engine``: see ``ENGINES``.
    """
    max_dets = tuple(sorted({int(m) for m in max_dets}))
    if not set(COCO_MAX_DETS) <= set(max_dets):
        raise ValueError(f"max_dets {max_dets} must include COCO's 1, 10 and 100 (extra values such as 500 are fine)")
    data, source = load_gt_dict(gt)
    coco_gt = coco_from_dict(data)
    cat_ids = list(coco_gt.getCatIds())  # list order, as PaddleDetection's reader maps class ids
    results = detections_to_coco_results(detections, cat_ids, set(coco_gt.getImgIds()), source)

    bands = list(size_bands or ())
    labels = [name for name, _, _ in _COCO_AREAS] + [b.name for b in bands]
    if len(set(labels)) != len(labels):
        raise ValueError(f"size band names must be unique and differ from COCO's all/small/medium/large: {labels}")
    area_rngs = list(_COCO_AREAS) + [(b.name, b.lo, b.hi) for b in bands]
    ev = run_cocoeval(data, results, max_dets, area_rngs, engine)
    r = _Reader(ev)

    stats = [
        r.ap(), r.ap(0.5), r.ap(0.75), r.ap(area="small"), r.ap(area="medium"), r.ap(area="large"),
        r.ar(max_dets=1), r.ar(max_dets=10), r.ar(max_dets=100),
        r.ar(area="small"), r.ar(area="medium"), r.ar(area="large"),
    ]  # fmt: skip
    top = max_dets[-1]
    at_max: dict[str, float] = {}
    if top > 100:
        at_max = {
            f"AP@{top}": r.ap(max_dets=top), f"AP50@{top}": r.ap(0.5, max_dets=top),
            f"AP75@{top}": r.ap(0.75, max_dets=top), f"APs@{top}": r.ap(area="small", max_dets=top),
            f"APm@{top}": r.ap(area="medium", max_dets=top), f"APl@{top}": r.ap(area="large", max_dets=top),
            f"ARs@{top}": r.ar(area="small", max_dets=top), f"ARm@{top}": r.ar(area="medium", max_dets=top),
            f"ARl@{top}": r.ar(area="large", max_dets=top),
        }  # fmt: skip

    names = _class_names(coco_gt, cat_ids, class_names)
    gt_per_cat = _count_gt(coco_gt, cat_ids)
    dets_per_cat = {c: 0 for c in cat_ids}
    for res in results:
        dets_per_cat[res["category_id"]] += 1
    per_class = [
        ClassAP(k, cid, names[k], r.ap(cat_id=cid), r.ap(0.5, cat_id=cid), r.ap(0.75, cat_id=cid), gt_per_cat[cid],
                dets_per_cat[cid])
        for k, cid in enumerate(cat_ids)
    ]
    band_rows = [
        BandMetrics(b.name, b.lo, b.hi, _count_in_band(coco_gt, b), r.ap(area=b.name, max_dets=top),
                    r.ap(0.5, area=b.name, max_dets=top), r.ar(area=b.name, max_dets=top),
                    r.ar(0.5, area=b.name, max_dets=top), top)
        for b in bands
    ]  # fmt: skip
    return CocoMetrics(
        *stats,
        stats=stats,
        max_dets=max_dets,
        AR_at={m: r.ar(max_dets=m) for m in max_dets},
        at_max=at_max,
        per_class=per_class,
        size_bands=band_rows,
        num_images=len(coco_gt.getImgIds()),
        num_detections=len(results),
        # reordered from COCOeval's sorted category ids to our class indices
        precision=r.precision[:, :, [r.cat_index[int(c)] for c in cat_ids], r.area_index["all"], r.det_index[100]],
        iou_thrs=np.asarray(ev.params.iouThrs).copy(),
        rec_thrs=np.asarray(ev.params.recThrs).copy(),
        engine=resolve_engine(engine),
    )


def _class_names(coco_gt, cat_ids: Sequence[int], class_names: Sequence[str] | None) -> list[str]:
    if class_names is None:
        return [str(coco_gt.cats[c].get("name", c)) for c in cat_ids]
    if len(class_names) != len(cat_ids):
        raise ValueError(f"{len(class_names)} class names given for {len(cat_ids)} categories in the ground truth")
    return [str(n) for n in class_names]


def _count_gt(coco_gt, cat_ids: Sequence[int]) -> dict[int, int]:
    counts = {c: 0 for c in cat_ids}
    for ann in coco_gt.dataset["annotations"]:
        if not ann.get("iscrowd", 0) and ann["category_id"] in counts:
            counts[ann["category_id"]] += 1
    return counts


def _count_in_band(coco_gt, band: SizeBand) -> int:
    return sum(
        1 for a in coco_gt.dataset["annotations"] if not a.get("iscrowd", 0) and band.lo <= a["area"] <= band.hi
    )

