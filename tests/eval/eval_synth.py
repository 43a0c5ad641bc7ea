"""Generated COCO ground truth and detections for the evaluation tests (no files from outside the test)."""
from __future__ import annotations

import contextlib
import io

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

CAT_IDS = (7, 1, 8, 3)  # not contiguous, not sorted: class index k maps to the k-th id of the category list
CAT_NAMES = ("pedestrian", "car", "bus", "motor")


def make_gt(seed: int = 0, num_images: int = 12, max_objects: int = 40, crowd: bool = True) -> dict:
    """Images of several sizes with boxes whose sides span ~2..400 px (log-uniform), a few crowd boxes."""
    rng = np.random.default_rng(seed)
    images, anns = [], []
    cats = [{"id": c, "name": n, "supercategory": "none"} for c, n in zip(CAT_IDS, CAT_NAMES)]
    for i in range(num_images):
        image_id = 100 + 3 * i  # ids not 0..N-1 either
        w, h = int(rng.integers(320, 1400)), int(rng.integers(240, 1000))
        images.append({"id": image_id, "file_name": f"img_{image_id}.jpg", "width": w, "height": h})
        for _ in range(int(rng.integers(0 if i == 0 else 1, max_objects))):
            bw, bh = np.exp(rng.uniform(np.log(2), np.log(min(400, w - 1, h - 1)), size=2))
            x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            anns.append({
                "id": len(anns) + 1, "image_id": image_id, "category_id": int(rng.choice(CAT_IDS)),
                "bbox": [float(x), float(y), float(bw), float(bh)], "area": float(bw * bh),
                "iscrowd": int(crowd and rng.random() < 0.03),
            })
    return {"images": images, "annotations": anns, "categories": cats}


def make_detections(gt: dict, seed: int = 1, extra_fp: int = 30, many_on: int | None = None) -> dict[int, np.ndarray]:
    """Jittered ground truth (some missed, some with the wrong class) plus random false positives.

    ``many_on`` gives that many images more than 100 detections of class 0, so 100 and 500 per image differ.
    Rows are float32, as a model produces them.
    """
    rng = np.random.default_rng(seed)
    index = {c["id"]: k for k, c in enumerate(gt["categories"])}
    by_image: dict[int, list] = {im["id"]: [] for im in gt["images"]}
    for a in gt["annotations"]:
        if rng.random() < 0.15:
            continue  # missed
        x, y, w, h = a["bbox"]
        j = rng.normal(0, 0.06, size=4) * np.array([w, h, w, h])
        cls = index[a["category_id"]] if rng.random() > 0.1 else int(rng.integers(0, len(index)))
        by_image[a["image_id"]].append([cls, rng.uniform(0.2, 1.0), x + j[0], y + j[1], x + w + j[2], y + h + j[3]])
    sizes = {im["id"]: (im["width"], im["height"]) for im in gt["images"]}
    many = set(list(by_image)[: many_on or 0])
    for image_id, rows in by_image.items():
        W, H = sizes[image_id]
        # pycocotools caps detections per image *and class*, so the extra ones all get class 0 and high scores
        extra = [(int(rng.integers(0, len(index))), 0.01) for _ in range(extra_fp)]
        extra += [(0, 0.3)] * (250 if image_id in many else 0)
        for cls, low in extra:
            bw, bh = np.exp(rng.uniform(np.log(2), np.log(300), size=2))
            x, y = rng.uniform(0, W), rng.uniform(0, H)
            rows.append([cls, rng.uniform(low, 0.9), x, y, x + bw, y + bh])
    out = {}
    for image_id, rows in by_image.items():
        arr = np.asarray(rows, dtype=np.float32).reshape(-1, 6)
        out[image_id] = arr[np.argsort(-arr[:, 1], kind="stable")]
    return out


def gt_as_detections(gt: dict, class_shift: int = 0) -> dict[int, np.ndarray]:
    """The ground truth itself as [N, 6] rows (score 0.9), optionally with every class index shifted."""
    index = {c: k for k, c in enumerate(CAT_IDS)}
    out = {im["id"]: [] for im in gt["images"]}
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        out[a["image_id"]].append([(index[a["category_id"]] + class_shift) % 4, 0.9, x, y, x + w, y + h])
    return {k: np.asarray(v, dtype=np.float64).reshape(-1, 6) for k, v in out.items()}


def direct_cocoeval(gt_path, dets, max_dets=None, cat_ids=None, area_rng=None) -> COCOeval:
    """The reference: pycocotools as a user would call it, results built row by row from the arrays."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(gt_path))
        cats = coco.getCatIds()  # list order: the class-index rule of PaddleDetection
        res = []
        for image_id, arr in dets.items():
            for c, s, x1, y1, x2, y2 in np.asarray(arr).tolist():
                res.append({"image_id": image_id, "category_id": cats[int(c)], "bbox": [x1, y1, x2 - x1, y2 - y1],
                            "score": s})
        ev = COCOeval(coco, coco.loadRes(res), "bbox")
        if max_dets is not None:
            ev.params.maxDets = list(max_dets)
        if cat_ids is not None:
            ev.params.catIds = list(cat_ids)
        if area_rng is not None:
            ev.params.areaRng = area_rng
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev
