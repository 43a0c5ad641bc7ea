"""VisDrone-DET (native txt) to COCO.

Layout (one VisDrone folder as released, e.g. ``VisDrone2019-DET-train``, plus optional lists)::

    DATASET/
      images/<name>.jpg
      annotations/<name>.txt   one object a line: x,y,w,h,score,category,truncation,occlusion
      train_anno_list.txt      optional: txt paths relative to DATASET (e.g. annotations/<name>.txt)
      val_anno_list.txt        optional

Train/val: with no lists, all ``annotations/*.txt`` are cut 80/20 with a fixed seed and the lists are written
(see ``common``). To keep the official train/val split, put both releases' images and txt files into one
DATASET and write the lists, e.g. ``ls annotations | grep -f val_names.txt | sed 's|^|annotations/|'``.

Rows:
- categories 1..10 (pedestrian, people, bicycle, car, van, truck, tricycle, awning-tricycle, bus, motor) become
  COCO annotations with category ids 1..10; all 10 categories are always listed, in this order;
- category 0 (ignored region) and any row with score 0 are kept out of the annotations and recorded in a
  top-level ``ignored_regions`` list, ``{"id", "image_id", "bbox": [x, y, w, h], "area", "visdrone_category"}``,
  so evaluation can discount detections there (the DET toolkit's ignored regions are category 0);
- category 11 (others) is kept out too and recorded, in the same form, in a top-level ``other_objects`` list:
  the DET toolkit neither scores nor ignores them, so they are not mixed with the ignored regions;
- boxes are clipped to the image; a box left with no width or height is dropped (counted in the stats);
  ``truncation`` and ``occlusion`` are kept on each annotation.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


from ...zoo import VISDRONE_CLASSES
from ..coco import Problem
from ..layout import ANNOTATIONS_DIR
from .common import (ConvertedDataset, IdIndexer, box_annotation, clip_xywh, coco_json, fail_if, iter_label_files,
                     parse_float, resolve_lists)

IGNORED_CATEGORY = 0
OTHERS_CATEGORY = 11
CATEGORIES = [{"id": i, "name": name} for i, name in enumerate(VISDRONE_CLASSES, 1)]


def parse_rows(path: Path, problems: list[Problem]) -> list[list[float]] | None:
    """The numeric rows of a VisDrone txt (at least 6 fields; a trailing comma is fine)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        problems.append(Problem(str(path), f"cannot read: {e}"))
        return None
    rows, bad = [], False
    for n, line in enumerate(text.splitlines(), 1):
        fields = [f.strip() for f in line.strip().split(",")]
        while fields and fields[-1] == "":
            fields.pop()
        if not fields:
            continue
        try:
            if len(fields) < 6:
                raise ValueError(f"{len(fields)} fields")
            rows.append([parse_float(f) for f in fields[:8]])
        except ValueError as e:
            problems.append(Problem(str(path), f"line {n}: {line.strip()!r} is not "
                                               f"'x,y,w,h,score,category,truncation,occlusion' ({e})"))
            bad = True
    return None if bad else rows


def convert(root: Path, with_unlabeled: bool = False) -> ConvertedDataset:
    """Read the VisDrone txt files of ``root`` into train and val COCO jsons (nothing is written here)."""
    del with_unlabeled  # no unlabeled variant for VisDrone
    problems: list[Problem] = []
    warnings: list[str] = []

    def discover() -> list[str]:
        return sorted(p.relative_to(root).as_posix() for p in (root / ANNOTATIONS_DIR).glob("*.txt"))

    lists, list_files = resolve_lists(root, ".txt", problems, warnings, discover)
    fail_if(problems, "VisDrone")
    img_ids = IdIndexer()
    stats = {"boxes": 0, "ignored_regions": 0, "other_objects": 0, "clipped_boxes": 0, "dropped_boxes": 0,
             "skipped_files": 0}
    splits: dict[str, dict[str, Any]] = {}
    for split in ("train", "val"):
        images: list[dict] = []
        anns: list[dict] = []
        extras: dict[str, list[dict]] = {"ignored_regions": [], "other_objects": []}
        for path, file_name, width, height in iter_label_files(root, lists[split], f"VisDrone {split}", problems,
                                                              warnings, stats):
            rows = parse_rows(path, problems)
            if rows is None:
                continue
            image_id = img_ids(file_name)
            images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
            for n, row in enumerate(rows, 1):
                x, y, w, h, score, category = row[:6]
                category = int(category)
                if category == IGNORED_CATEGORY or score == 0 or category == OTHERS_CATEGORY:
                    kind = "ignored_regions" if category == IGNORED_CATEGORY or score == 0 else "other_objects"
                    stats[kind] += 1
                    extras[kind].append({"id": len(extras[kind]) + 1, "image_id": image_id, "bbox": [x, y, w, h],
                                         "area": w * h, "visdrone_category": category})
                    continue
                if not 1 <= category <= len(VISDRONE_CLASSES):
                    problems.append(Problem(str(path), f"line {n}: category {category} is not a VisDrone "
                                                       f"category (0..11)"))
                    continue
                (cx, cy, cw, ch), clipped = clip_xywh(x, y, w, h, width, height)
                if cw <= 0 or ch <= 0:
                    stats["dropped_boxes"] += 1
                    continue
                stats["clipped_boxes"] += clipped
                extra = {"truncation": int(row[6]), "occlusion": int(row[7])} if len(row) >= 8 else {}
                anns.append(box_annotation(len(anns) + 1, image_id, category, cx, cy, cw, ch, **extra))
                stats["boxes"] += 1
        splits[split] = coco_json(images, anns, [dict(c) for c in CATEGORIES], **extras)
    fail_if(problems, "VisDrone")
    if stats["dropped_boxes"]:
        warnings.append(f"{stats['dropped_boxes']} VisDrone boxes had no area inside their image and were dropped.")
    return ConvertedDataset(splits=splits, extra_files=list_files, warnings=warnings, stats=stats)
