"""Validation and statistics of one COCO split on disk: every problem is collected, none stops the check.

What is checked, beyond the json structure (``coco.structure_problems``): each ``file_name`` stays inside
``images/`` (``paths.inside_path``: a file outside is never opened), each image file exists, decodes, and
has the width/height the json states (after EXIF rotation, as decoders see it); each box has a positive width
and height and lies inside its image up to ``tolerance`` pixels; the split has images and annotations; train and
val list the same categories in the same order (class ids follow that order, so a difference would silently mix
up classes between training and evaluation).
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..errors import DatasetError, ImageReadError
from ..imageio import read_image
from .coco import SIZE_BUCKETS, Problem, load_json, size_bucket, structure_problems
from .layout import IMAGES_DIR, annotation_path
from .paths import inside_path

DEFAULT_TOLERANCE = 1.0  # pixels a box may reach outside its image


@dataclass
class SplitCheck:
    """Outcome of checking one split: its problems and what it contains."""

    split: str
    json_path: str
    data: dict | None = None
    problems: list[Problem] = field(default_factory=list)
    num_images: int = 0
    num_annotations: int = 0
    class_names: list[str] = field(default_factory=list)
    instances: dict[str, int] = field(default_factory=dict)  # per class name, json category order
    sizes: dict[str, dict[str, int]] = field(default_factory=dict)  # class name -> {small, medium, large}
    box_wh: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))  # non-crowd boxes
    box_areas: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    images_without_boxes: int = 0

    def size_totals(self) -> dict[str, int]:
        return {b: sum(s[b] for s in self.sizes.values()) for b in SIZE_BUCKETS}


def decoded_size(path: Path) -> tuple[int, int] | str:
    """(width, height) of a fully decoded image, or the reason it cannot be decoded."""
    try:
        img = read_image(path)
    except ImageReadError as e:
        return str(e)
    return int(img.shape[1]), int(img.shape[0])


def check_split(root: str | os.PathLike, split: str, tolerance: float = DEFAULT_TOLERANCE,
                size_cache: dict[Path, Any] | None = None) -> SplitCheck:
    """Check ``root/annotations/instance_<split>.json`` against the images under ``root/images``."""
    root = Path(root)
    path = annotation_path(root, split)
    res = SplitCheck(split=split, json_path=str(path))
    if not path.is_file():
        res.problems.append(Problem(str(path), f"not found; the layout needs annotations/instance_train.json and "
                                               f"annotations/instance_val.json (convert or split can create them)"))
        return res
    try:
        data = load_json(path)
    except DatasetError as e:
        res.problems.append(Problem(str(path), str(e)))
        return res
    res.problems += structure_problems(data, str(path))
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations",
                                                                                     "categories")):
        return res
    res.data = data
    images = [im for im in data["images"] if isinstance(im, dict)]
    anns = [a for a in data["annotations"] if isinstance(a, dict)]
    cats = [c for c in data["categories"] if isinstance(c, dict)]
    res.num_images, res.num_annotations = len(data["images"]), len(data["annotations"])
    if not images:
        res.problems.append(Problem(str(path), "has no images; an empty split cannot be trained or evaluated"))
    elif not anns:
        res.problems.append(Problem(str(path), "has no annotations; there is nothing to learn or to measure"))

    # Image files: exist, decode, size as stated.
    cache = size_cache if size_cache is not None else {}
    sizes: dict[Any, tuple[float, float]] = {}  # image id -> stated size, for the box checks
    id_counts = Counter(im.get("id") for im in images)
    for img in tqdm(images, desc=f"check {split} images", unit="img", leave=False):
        name, iid = img.get("file_name"), img.get("id")
        if not isinstance(name, str) or not name:
            continue
        w, h = img.get("width"), img.get("height")
        if isinstance(w, (int, float)) and isinstance(h, (int, float)) and id_counts[iid] == 1:
            sizes[iid] = (float(w), float(h))  # a duplicated id has no single size: its boxes are not placed
        try:
            file = inside_path(root / IMAGES_DIR, name, "file_name")
        except DatasetError as e:
            res.problems.append(Problem(str(path), str(e), image_id=iid))
            continue
        if not file.is_file():
            res.problems.append(Problem(str(path), f"image file {file} does not exist", image_id=iid))
            continue
        if file not in cache:
            cache[file] = decoded_size(file)
        got = cache[file]
        if isinstance(got, str):
            res.problems.append(Problem(str(path), f"image file {file} cannot be decoded: {got}", image_id=iid))
        elif iid in sizes and (round(sizes[iid][0]), round(sizes[iid][1])) != got:
            res.problems.append(Problem(str(path), f"width x height in the json is {w} x {h} but {file} is "
                                                   f"{got[0]} x {got[1]}; fix the json", image_id=iid))

    # Boxes: positive size, inside the image; statistics.
    names = {c.get("id"): str(c.get("name")) for c in cats}
    res.class_names = [str(c.get("name")) for c in cats]
    counts: Counter = Counter()
    per_size: dict[str, Counter] = {n: Counter() for n in res.class_names}
    wh, areas, with_boxes = [], [], set()
    for ann in anns:
        aid, iid = ann.get("id"), ann.get("image_id")
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            continue  # already reported by the structure check
        x, y, w, h = (float(v) for v in bbox)
        if w <= 0 or h <= 0:
            res.problems.append(Problem(str(path), f"box {bbox} has no area (width and height must be > 0)",
                                        image_id=iid, annotation_id=aid))
        elif iid in sizes:
            iw, ih = sizes[iid]
            if x < -tolerance or y < -tolerance or x + w > iw + tolerance or y + h > ih + tolerance:
                res.problems.append(Problem(
                    str(path), f"box [x={x:g}, y={y:g}, w={w:g}, h={h:g}] reaches outside the {iw:g} x {ih:g} "
                               f"image by more than {tolerance:g} px; clip or fix it", image_id=iid,
                    annotation_id=aid))
        name = names.get(ann.get("category_id"))
        if name is None:
            continue
        counts[name] += 1
        area = float(ann["area"]) if isinstance(ann.get("area"), (int, float)) else w * h
        if not ann.get("iscrowd", 0):
            per_size.setdefault(name, Counter())[size_bucket(area)] += 1
            wh.append((w, h))
            areas.append(area)
            with_boxes.add(iid)
    res.instances = {n: counts.get(n, 0) for n in res.class_names}
    res.sizes = {n: {b: per_size.get(n, Counter()).get(b, 0) for b in SIZE_BUCKETS} for n in res.class_names}
    res.box_wh = np.asarray(wh, np.float32).reshape(-1, 2)
    res.box_areas = np.asarray(areas, np.float32)
    res.images_without_boxes = sum(1 for im in images if im.get("id") not in with_boxes)
    return res


def category_problems(train: SplitCheck, val: SplitCheck) -> list[Problem]:
    """Train and val must list the same (id, name) categories in the same order."""
    if train.data is None or val.data is None:
        return []

    def cats(d: dict) -> list[tuple[Any, Any]]:
        return [(c.get("id"), c.get("name")) for c in d["categories"] if isinstance(c, dict)]

    a, b = cats(train.data), cats(val.data)
    if a == b:
        return []
    if sorted(map(str, a)) == sorted(map(str, b)):
        what = "the same categories in a different order (class ids follow the json order)"
    else:
        only_t = [c for c in a if c not in b]
        only_v = [c for c in b if c not in a]
        what = f"different categories: only in train {only_t}, only in val {only_v}"
    return [Problem(val.json_path, f"train and val list {what}; give both files the same 'categories' list")]
