"""Pascal VOC xml to COCO, with PaddleX's layout and rules.

Layout::

    DATASET/
      images/             the image files
      annotations/*.xml   one VOC xml per image (any folder works: the lists name the files)
      train_anno_list.txt one xml path per line, relative to DATASET (required)
      val_anno_list.txt   optional; without it the train list is cut 80/20 (see ``common``)
      unlabeled.txt       optional, ``VOCWithUnlabeled`` only: copied to annotations/unlabeled.txt

Rules: the image is ``images/<stem of <filename>>.<ext>`` or else ``images/<xml stem>.<ext>`` (ext in jpg, png,
jpeg, upper case too, then other image suffixes; only the base name of ``<filename>``, ``/`` or ``\\``
separated, counts, so it never names a file outside ``images/``); an xml whose image is not found is skipped
with a warning.
Objects without ``<bndbox>`` are skipped; inverted corners are swapped; bbox = [xmin, ymin, xmax - xmin,
ymax - ymin] (no +1); size from ``<size>``. Category ids are 1-based in order of first appearance over train
then val, image ids 1-based by first appearance of the file name over both splits, annotation ids 1-based in
each file. Unlike PaddleX, both jsons get the full category list (PaddleX writes train's before val's new
classes are seen, so the two files can disagree).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ...errors import DatasetError
from ..coco import Problem
from ..paths import base_name
from .common import (ConvertedDataset, IdIndexer, as_number, box_annotation, coco_json, copy_unlabeled, fail_if,
                     find_image, parse_float, resolve_lists)


def _parse(path: Path, problems: list[Problem]) -> tuple[str, float, float, list[tuple[str, list[float]]]] | None:
    """(filename, width, height, [(name, [xmin, ymin, xmax, ymax])]) or None after recording the problems."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        problems.append(Problem(str(path), f"not a readable xml file: {e}"))
        return None
    n_before = len(problems)
    filename = (root.findtext("filename") or "").strip()
    if not filename:
        problems.append(Problem(str(path), "has no <filename>; add the image's file name"))
    size = root.find("size")
    width = height = 0.0
    if size is None:
        problems.append(Problem(str(path), "has no <size>; add <size><width>W</width><height>H</height></size> "
                                           "with the image's size in pixels"))
    else:
        try:
            width, height = parse_float(size.findtext("width")), parse_float(size.findtext("height"))
            if width <= 0 or height <= 0:
                raise ValueError("width and height must be positive")
        except (TypeError, ValueError) as e:
            problems.append(Problem(str(path), f"<size> has no valid <width>/<height> ({e})"))
    objects = []
    for i, obj in enumerate(root.findall("object"), 1):
        box = obj.find("bndbox")
        if box is None:
            continue
        name = (obj.findtext("name") or "").strip()
        if not name:
            problems.append(Problem(str(path), f"object #{i} has no <name>"))
            continue
        try:
            xmin, ymin, xmax, ymax = (parse_float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError) as e:
            problems.append(Problem(str(path), f"object #{i} ({name}) has an invalid <bndbox> ({e}); it needs "
                                               f"numeric xmin, ymin, xmax, ymax"))
            continue
        xmin, xmax = sorted((xmin, xmax))
        ymin, ymax = sorted((ymin, ymax))
        objects.append((name, [xmin, ymin, xmax, ymax]))
    if len(problems) > n_before:
        return None
    return filename, width, height, objects


def convert(root: Path, with_unlabeled: bool = False) -> ConvertedDataset:
    """Read every listed xml of ``root`` into train and val COCO jsons (nothing is written here)."""
    problems: list[Problem] = []
    warnings: list[str] = []
    lists, list_files = resolve_lists(root, ".xml", problems, warnings)
    fail_if(problems, "VOC")
    cats, img_ids = IdIndexer(), IdIndexer()
    parts: dict[str, tuple[list[dict], list[dict]]] = {}
    skipped = 0
    for split in ("train", "val"):
        images: list[dict[str, Any]] = []
        anns: list[dict[str, Any]] = []
        seen: dict[int, str] = {}
        for rel in tqdm(lists[split], desc=f"VOC {split}", unit="xml", leave=False):
            parsed = _parse(root / rel, problems)
            if parsed is None:
                continue
            filename, width, height, objects = parsed
            stem = Path(base_name(filename)).stem
            try:
                file_name = find_image(root, [stem, Path(rel).stem])
            except DatasetError as e:
                problems.append(Problem(str(root / rel), str(e)))
                continue
            if file_name is None:
                warnings.append(f"{root / rel}: no image images/{stem}.* or "
                                f"images/{Path(rel).stem}.* was found; the file is skipped.")
                skipped += 1
                continue
            image_id = img_ids(file_name)
            if image_id in seen:
                problems.append(Problem(str(root / rel), f"image {file_name} is also annotated by {seen[image_id]} "
                                                         f"in the {split} list; keep one xml per image"))
                continue
            seen[image_id] = rel
            images.append({"id": image_id, "file_name": file_name, "width": as_number(width),
                           "height": as_number(height)})
            for name, (x1, y1, x2, y2) in objects:
                anns.append(box_annotation(len(anns) + 1, image_id, cats(name), x1, y1, x2 - x1, y2 - y1))
        parts[split] = (images, anns)
    fail_if(problems, "VOC")
    out = ConvertedDataset(
        splits={s: coco_json(imgs, anns, cats.categories(), type="instances") for s, (imgs, anns) in parts.items()},
        extra_files=list_files, warnings=warnings, stats={"skipped_files": skipped},
    )
    if with_unlabeled:
        copy_unlabeled(root, out)
    return out
