"""COCO detection json: what a valid file looks like, and the reader training and evaluation use.

The reader follows PaddleDetection's ``COCODataSet`` (which PaddleX's ``COCODetDataset`` reuses):
- class ids are contiguous, 0..C-1, in the order pycocotools' ``getCatIds()`` returns the categories, which is
  the order of the json's ``categories`` list (PaddleDetection does not sort them; for VisDrone's json, listed
  1..10, the two orders agree);
- images are visited in ascending image id;
- ``iscrowd=1`` annotations, annotations with a true ``ignore`` flag, annotations without a ``bbox`` or with an
  all-zero one, and boxes with ``area <= 0`` or width/height <= 1e-5 are skipped;
- box corners are rounded to 3 decimals and are not clipped to the image;
- images whose file is missing are skipped with a warning; images left without boxes are dropped unless
  ``allow_empty`` (evaluation keeps them so that false positives on them count);
- beyond PaddleDetection, a ``file_name`` that is absolute or leads out of the image folder (``..``, a symlink)
  is an error listing every such entry, and nothing outside is opened (see ``paths``).

Beyond PaddleDetection, a json may carry top-level per-image lists written by the VisDrone converter, entries
``{"id", "image_id", "bbox": [x, y, w, h], ...}``: ``ignored_regions`` (not objects to learn; evaluation can use
them to drop detections that fall inside) and ``other_objects`` (VisDrone's "others", kept for the record).
"""
from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError
from .paths import inside_path

log = logging.getLogger(__name__)

# COCO's object-size buckets (by annotation area, as pycocotools' COCOeval uses them).
SMALL_AREA = 32 ** 2
MEDIUM_AREA = 96 ** 2
SIZE_BUCKETS = ("small", "medium", "large")

_BOX_EPS = 1e-5  # PaddleDetection's minimum box width/height
# Far above any real annotation file (COCO train2017's is 0.45 GB, LVIS's 1.1 GB); parsing more would exhaust
# memory long before it finished.
MAX_JSON_BYTES = 4 * 1024 ** 3
# Top-level lists of per-image entries that travel with their image (split, converters).
PER_IMAGE_LISTS = ("ignored_regions", "other_objects")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset, located as precisely as we can."""

    file: str
    message: str
    image_id: Any = None
    annotation_id: Any = None

    def __str__(self) -> str:
        where = []
        if self.image_id is not None:
            where.append(f"image id {self.image_id}")
        if self.annotation_id is not None:
            where.append(f"annotation id {self.annotation_id}")
        loc = f" ({', '.join(where)})" if where else ""
        return f"{self.file}{loc}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "image_id": self.image_id, "annotation_id": self.annotation_id,
                "message": self.message}


def problems_error(problems: list[Problem], headline: str, show: int = 20) -> DatasetError:
    """A DatasetError whose message lists the problems (the first ``show``) and carries all of them."""
    lines = [f"{headline} ({len(problems)} problem{'s' if len(problems) != 1 else ''}):"]
    lines += [f"  - {p}" for p in problems[:show]]
    if len(problems) > show:
        lines.append(f"  ... and {len(problems) - show} more")
    err = DatasetError("\n".join(lines))
    err.problems = list(problems)  # type: ignore[attr-defined]
    return err


def size_bucket(area: float) -> str:
    """COCO size name of an object of this area: small < 32^2 <= medium < 96^2 <= large."""
    if area < SMALL_AREA:
        return "small"
    return "medium" if area < MEDIUM_AREA else "large"


def load_json(path: str | os.PathLike, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Read a json file; a missing, unreadable, oversized, malformed or absurdly nested file raises DatasetError
    saying where (the size is checked before anything is read)."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"File {str(p)!r} does not exist.")
    try:
        size = p.stat().st_size
        if size > max_bytes:
            raise DatasetError(f"{p} is {size} bytes, over the {max_bytes}-byte limit for a json file of a "
                               f"dataset; is it the right file?")
        with open(p, "r", encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{p} is not valid JSON: malformed json at line {e.lineno}, column {e.colno}: {e.msg}. "
                           f"Fix the file or regenerate it.") from e
    except RecursionError:
        raise DatasetError(f"{p}: the json is nested too deeply to be read (lists or objects inside each other "
                           f"hundreds of levels deep); a dataset file never needs that: regenerate it.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{p}: cannot read it as UTF-8 json: {e}") from e


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def structure_problems(data: Any, file: str) -> list[Problem]:
    """Every schema, id-uniqueness and cross-reference problem of a COCO detection json (files on disk and
    box geometry are the checker's business)."""
    if not isinstance(data, dict):
        return [Problem(file, f"top level must be a json object with images/annotations/categories, "
                              f"got {type(data).__name__}")]
    problems: list[Problem] = []
    for key in ("images", "annotations", "categories"):
        if key not in data:
            problems.append(Problem(file, f"missing top-level key {key!r}"))
        elif not isinstance(data[key], list):
            problems.append(Problem(file, f"top-level {key!r} must be a list, got {type(data[key]).__name__}"))
    if problems:
        return problems

    cat_ids = _entries(data["categories"], "category", {"id": _is_int, "name": lambda v: isinstance(v, str)},
                       file, problems)
    img_ids = _entries(data["images"], "image", {
        "id": _is_int,
        "file_name": lambda v: isinstance(v, str) and v != "",
        "width": lambda v: is_number(v) and v > 0,
        "height": lambda v: is_number(v) and v > 0,
    }, file, problems)
    if not data["categories"]:
        problems.append(Problem(file, "'categories' is empty; list every class as {\"id\": int, \"name\": str}"))
    _entries(data["annotations"], "annotation", {
        "id": _is_int,
        "image_id": _is_int,
        "category_id": _is_int,
        "bbox": lambda v: isinstance(v, list) and len(v) == 4 and all(is_number(x) for x in v),
        "area": is_number,
        "iscrowd": lambda v: v in (0, 1),
    }, file, problems)
    for ann in data["annotations"]:
        if not isinstance(ann, dict):
            continue
        aid = ann.get("id")
        if _is_int(ann.get("image_id")) and ann["image_id"] not in img_ids:
            problems.append(Problem(file, f"image_id {ann['image_id']} is not in 'images'", annotation_id=aid))
        if _is_int(ann.get("category_id")) and ann["category_id"] not in cat_ids:
            problems.append(Problem(file, f"category_id {ann['category_id']} is not in 'categories' "
                                          f"(known ids: {sorted(cat_ids)})", annotation_id=aid))
    for key in PER_IMAGE_LISTS:
        entries = data.get(key, [])
        if not isinstance(entries, list):
            problems.append(Problem(file, f"top-level {key!r} must be a list"))
            continue
        for i, entry in enumerate(entries):
            ok = (isinstance(entry, dict) and _is_int(entry.get("image_id")) and isinstance(entry.get("bbox"), list)
                  and len(entry["bbox"]) == 4 and all(is_number(v) for v in entry["bbox"]))
            if not ok:
                problems.append(Problem(file, f"{key}[{i}] = {entry!r} is not {{'image_id': int, "
                                              f"'bbox': [x, y, w, h]}}"))
            elif entry["image_id"] not in img_ids:
                problems.append(Problem(file, f"{key}[{i}] refers to image_id {entry['image_id']}, which is not "
                                              f"in 'images'", image_id=entry["image_id"]))
    return problems


def _entries(items: list, kind: str, fields: dict, file: str, problems: list[Problem]) -> set[int]:
    """Check each entry's required fields and id uniqueness; return the set of valid ids."""
    ids: Counter = Counter()
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            problems.append(Problem(file, f"{kind} #{i} must be a json object, got {type(item).__name__}"))
            continue
        ident = item.get("id")
        loc = {"image_id": ident} if kind == "image" else {"annotation_id": ident} if kind == "annotation" else {}
        for key, ok in fields.items():
            if key not in item:
                problems.append(Problem(file, f"{kind} #{i} is missing key {key!r}{_FIELD_HINTS.get(key, '')}",
                                        **loc))
            elif not ok(item[key]):
                problems.append(Problem(file, f"{kind} #{i} has an invalid {key!r}: {item[key]!r}"
                                              f"{_FIELD_HINTS.get(key, '')}", **loc))
        if _is_int(ident):
            ids[ident] += 1
    for ident, n in ids.items():
        if n > 1:
            loc = {"image_id": ident} if kind == "image" else {"annotation_id": ident} if kind == "annotation" else {}
            problems.append(Problem(file, f"{kind} id {ident} is used {n} times; ids must be unique", **loc))
    return set(ids)


_FIELD_HINTS = {
    "bbox": " (expected [x, y, width, height], four finite numbers)",
    "iscrowd": " (expected 0 or 1; PaddleDetection needs it, 0 for an ordinary box)",
    "width": " (expected a positive number of pixels)",
    "height": " (expected a positive number of pixels)",
    "area": " (expected a finite number, width * height for a box; PaddleDetection needs it)",
    "id": " (expected an integer)",
    "image_id": " (expected an integer)",
    "category_id": " (expected an integer)",
}


def load_coco(path: str | os.PathLike) -> dict:
    """Load a COCO json and insist it is structurally sound (raises DatasetError listing every problem)."""
    data = load_json(path)
    problems = structure_problems(data, str(path))
    if problems:
        raise problems_error(problems, f"{path} is not a valid COCO detection file")
    return data


# --------------------------------------------------------------------------------------------------- reader


@dataclass
class CocoRecord:
    """One image with its usable boxes (xyxy pixels) and contiguous class ids."""

    image_path: str
    image_id: int
    width: int
    height: int
    boxes: np.ndarray  # float32 [n, 4] x1, y1, x2, y2
    classes: np.ndarray  # int64 [n]
    ignored_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))  # float32 [k, 4]
    file_name: str = ""


@dataclass
class CocoData:
    """What a COCO json yields for training or evaluation."""

    records: list[CocoRecord]
    class_names: list[str]
    cat_ids: list[int]  # cat_ids[class id] = COCO category id
    json_path: str = ""
    skipped_images: int = 0  # missing files, bad sizes, or (without allow_empty) no usable box

    @property
    def catid2clsid(self) -> dict[int, int]:
        return {c: i for i, c in enumerate(self.cat_ids)}

    @property
    def num_classes(self) -> int:
        return len(self.cat_ids)

    def __len__(self) -> int:
        return len(self.records)


def ignored_regions_by_image(data: dict, source: str = "ground truth") -> dict[int, np.ndarray]:
    """The json's ``ignored_regions`` list of {image_id, bbox [x, y, w, h]} grouped by image id, as float64
    [k, 4] xyxy arrays (float64: the VisDrone protocol computes exact covered fractions from them)."""
    entries = data.get("ignored_regions") or []
    if not isinstance(entries, list):
        raise DatasetError(f"{source}: 'ignored_regions' must be a list of {{image_id, bbox}} entries")
    out: dict[int, list[list[float]]] = {}
    for i, reg in enumerate(entries):
        try:
            x, y, w, h = (float(v) for v in reg["bbox"])
            out.setdefault(int(reg["image_id"]), []).append([x, y, x + w, y + h])
        except (KeyError, TypeError, ValueError) as e:
            raise DatasetError(f"{source}: ignored_regions[{i}] = {reg!r} is malformed ({e}); expected "
                               f"{{\"image_id\": int, \"bbox\": [x, y, w, h]}}") from e
    return {k: np.asarray(v, np.float64).reshape(-1, 4) for k, v in out.items()}


def usable_box(ann: dict) -> list[float] | None:
    """PaddleDetection's filter for one annotation: the xyxy box rounded to 3 decimals, or None if skipped."""
    if ann.get("iscrowd", 0) or ann.get("ignore", False) or "bbox" not in ann:
        return None
    x, y, w, h = (float(v) for v in ann["bbox"])
    if not any((x, y, w, h)):
        return None
    area = float(ann.get("area", w * h))
    x2, y2 = x + w, y + h
    if not (area > 0 and x2 - x > _BOX_EPS and y2 - y > _BOX_EPS):
        return None
    return [round(v, 3) for v in (x, y, x2, y2)]


def image_paths(images: list[dict], image_dir: str | os.PathLike, source: str) -> list[Path]:
    """The file of each COCO image entry, in order; DatasetError listing every ``file_name`` that is missing,
    absolute or leads out of ``image_dir`` (nothing outside is ever opened)."""
    paths: list[Path] = []
    problems: list[Problem] = []
    for img in images:
        img = img if isinstance(img, dict) else {}
        try:
            paths.append(inside_path(image_dir, img.get("file_name"), "file_name"))
        except DatasetError as e:
            problems.append(Problem(source, str(e), image_id=img.get("id")))
    if problems:
        raise problems_error(problems, f"{source} names image files outside {image_dir}")
    return paths


def read_coco(json_path: str | os.PathLike, image_dir: str | os.PathLike, allow_empty: bool = False) -> CocoData:
    """Read a COCO json into typed records with PaddleDetection's rules (see the module docstring)."""
    data = load_coco(json_path)
    image_dir = Path(image_dir)
    cat_ids = [int(c["id"]) for c in data["categories"]]
    names = [str(c["name"]) for c in data["categories"]]
    catid2clsid = {c: i for i, c in enumerate(cat_ids)}
    anns_by_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        anns_by_image.setdefault(ann["image_id"], []).append(ann)
    ignored = ignored_regions_by_image(data)

    paths = image_paths(data["images"], image_dir, str(json_path))
    records: list[CocoRecord] = []
    skipped = 0
    dropped_boxes = 0
    for img, path in sorted(zip(data["images"], paths), key=lambda pair: pair[0]["id"]):
        if not path.exists():
            log.warning("Image file %s (image id %s) does not exist; it is skipped.", path, img["id"])
            skipped += 1
            continue
        boxes: list[list[float]] = []
        classes: list[int] = []
        for ann in anns_by_image.get(img["id"], []):
            box = usable_box(ann)
            if box is None:
                dropped_boxes += not (ann.get("iscrowd", 0) or ann.get("ignore", False))
                continue
            boxes.append(box)
            classes.append(catid2clsid[ann["category_id"]])
        if not boxes and not allow_empty:
            skipped += 1
            continue
        records.append(CocoRecord(
            image_path=str(path),
            image_id=int(img["id"]),
            width=int(round(float(img["width"]))),
            height=int(round(float(img["height"]))),
            boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
            classes=np.asarray(classes, np.int64),
            ignored_boxes=ignored.get(int(img["id"]), np.zeros((0, 4), np.float32)),
            file_name=str(img["file_name"]),
        ))
    if dropped_boxes:
        log.warning("%s: %d boxes with zero area or size <= 1e-5 were skipped.", json_path, dropped_boxes)
    if not records:
        raise DatasetError(f"{json_path}: no usable image (of {len(data['images'])}) "
                           f"{'' if allow_empty else 'with at least one valid box '}was found; "
                           f"check the image files under {image_dir} and the annotations.")
    return CocoData(records=records, class_names=names, cat_ids=cat_ids, json_path=str(json_path),
                    skipped_images=skipped)

