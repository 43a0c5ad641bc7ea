"""YOLO (darknet / Ultralytics txt) to COCO.

Layout::

    DATASET/
      images/<name>.<ext>
      labels/<name>.txt     one object a line: ``class cx cy w h``, class 0-based, the rest normalized to 0..1
      classes.txt           class names, one a line, line i = class i   (or data.yaml with ``names:``, a list
                            or a {index: name} mapping, as Ultralytics writes it)
      train_anno_list.txt   optional: label txt paths relative to DATASET (e.g. labels/<name>.txt)
      val_anno_list.txt     optional

Train/val: with no lists, all ``labels/*.txt`` are cut 80/20 with a fixed seed and the lists are written (see
``common``). A label file defines an image (an empty file is an image without objects); an image with no label
file is not part of the dataset.

Rules: category id = class + 1 and every class of the names file is listed, in order, used or not; boxes are
scaled by the image size read from the image file, clipped to the image, and dropped (counted) if nothing is
left. Lines must have exactly 5 values (segmentation polygons are refused), the class must be in the names file,
and coordinates must lie in [-0.01, 1.01]: pixel coordinates are refused rather than guessed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..coco import Problem
from .common import (ConvertedDataset, IdIndexer, box_annotation, clip_xywh, coco_json, fail_if, iter_label_files,
                     parse_float, resolve_lists)

LABELS_DIR = "labels"
NAMES_FILES = ("classes.txt", "data.yaml", "dataset.yaml")
_NORM_TOL = 0.01


def read_class_names(root: Path, problems: list[Problem]) -> list[str]:
    """Class names from classes.txt or data.yaml; records a problem and returns [] if there are none."""
    txt = root / NAMES_FILES[0]
    if txt.is_file():
        names = [ln.strip() for ln in txt.read_text(encoding="utf-8").splitlines() if ln.strip()]
        if not names:
            problems.append(Problem(str(txt), "is empty; write one class name per line"))
        return names
    for name in NAMES_FILES[1:]:
        path = root / name
        if not path.is_file():
            continue
        try:
            names = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("names")
        except (yaml.YAMLError, AttributeError) as e:
            problems.append(Problem(str(path), f"cannot read 'names' from it: {e}"))
            return []
        if isinstance(names, dict) and sorted(names) == list(range(len(names))):
            names = [names[i] for i in range(len(names))]
        if not isinstance(names, list) or not names:
            problems.append(Problem(str(path), "'names' must be a non-empty list (or a mapping 0..n-1 to names)"))
            return []
        return [str(n) for n in names]
    problems.append(Problem(str(txt), f"no class names: write {NAMES_FILES[0]} (one name a line, line i = class i) "
                                      f"or data.yaml with 'names'"))
    return []


def parse_labels(path: Path, num_classes: int, problems: list[Problem]) -> list[tuple[int, list[float]]] | None:
    """(class, [cx, cy, w, h]) of each line, or None after recording what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        problems.append(Problem(str(path), f"cannot read: {e}"))
        return None
    out, bad = [], False
    for n, line in enumerate(text.splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        try:
            if len(tokens) != 5:
                raise ValueError(f"{len(tokens)} values; expected 'class cx cy w h'"
                                 + (" (segmentation polygons are not supported)" if len(tokens) > 5 else ""))
            cls_f = parse_float(tokens[0])
            if not cls_f.is_integer() or not 0 <= cls_f < num_classes:
                raise ValueError(f"class {tokens[0]} is not an index into the {num_classes} class names")
            vals = [parse_float(t) for t in tokens[1:]]
            if any(v < -_NORM_TOL or v > 1 + _NORM_TOL for v in vals):
                raise ValueError("coordinates must be normalized to 0..1 (these look like pixels)")
        except ValueError as e:
            problems.append(Problem(str(path), f"line {n}: {line.strip()!r}: {e}"))
            bad = True
            continue
        out.append((int(cls_f), vals))
    return None if bad else out


def convert(root: Path, with_unlabeled: bool = False) -> ConvertedDataset:
    """Read the YOLO label files of ``root`` into train and val COCO jsons (nothing is written here)."""
    del with_unlabeled
    problems: list[Problem] = []
    warnings: list[str] = []
    names = read_class_names(root, problems)

    def discover() -> list[str]:
        return sorted(p.relative_to(root).as_posix() for p in (root / LABELS_DIR).glob("*.txt"))

    lists, list_files = resolve_lists(root, ".txt", problems, warnings, discover)
    fail_if(problems, "YOLO")
    categories = [{"id": i, "name": n} for i, n in enumerate(names, 1)]
    img_ids = IdIndexer()
    stats = {"boxes": 0, "clipped_boxes": 0, "dropped_boxes": 0, "skipped_files": 0}
    splits: dict[str, dict[str, Any]] = {}
    for split in ("train", "val"):
        images: list[dict] = []
        anns: list[dict] = []
        for path, file_name, width, height in iter_label_files(root, lists[split], f"YOLO {split}", problems,
                                                              warnings, stats):
            labels = parse_labels(path, len(names), problems)
            if labels is None:
                continue
            image_id = img_ids(file_name)
            images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
            for cls, (cx, cy, w, h) in labels:
                x, y, bw, bh = (cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height
                box, clipped = clip_xywh(x, y, bw, bh, width, height)
                if box[2] <= 0 or box[3] <= 0:
                    stats["dropped_boxes"] += 1
                    continue
                stats["clipped_boxes"] += clipped
                anns.append(box_annotation(len(anns) + 1, image_id, cls + 1, *box))
                stats["boxes"] += 1
        splits[split] = coco_json(images, anns, [dict(c) for c in categories])
    fail_if(problems, "YOLO")
    if stats["dropped_boxes"]:
        warnings.append(f"{stats['dropped_boxes']} YOLO boxes had no area inside their image and were dropped.")
    return ConvertedDataset(splits=splits, extra_files=list_files, warnings=warnings, stats=stats)
