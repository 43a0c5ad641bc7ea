"""LabelMe json to COCO, with PaddleX's layout and rules.

Layout::

    DATASET/
      images/              the image files
      annotations/*.json   one LabelMe json per image
      train_anno_list.txt  one json path per line, relative to DATASET (required)
      val_anno_list.txt    optional; without it the train list is cut 80/20 (see ``common``)
      unlabeled.txt        optional, ``LabelMeWithUnlabeled`` only: copied to annotations/unlabeled.txt

Rules: only ``rectangle`` shapes (anything else is an error naming the file and shape); each rectangle's two
points are sorted per axis; bbox = [x1, y1, x2 - x1, y2 - y1] as floats, area w * h, iscrowd 0, ignore 0.
``file_name`` is the base name of ``imagePath`` (``/`` or ``\\`` separated; one that leads out of ``images/``,
``..`` or a symlink, is a problem), the size is ``imageWidth`` x ``imageHeight``. Category ids are 1-based by
first appearance of the label over train then val; image ids 1-based by first appearance of ``imagePath`` over
both; annotation ids 1-based in each file. Both jsons get the full category list.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from tqdm import tqdm

from ...errors import DatasetError
from ..coco import Problem, is_number, load_json
from ..layout import IMAGES_DIR
from ..paths import base_name, inside_path
from .common import ConvertedDataset, IdIndexer, as_number, box_annotation, coco_json, copy_unlabeled, fail_if, \
    parse_float, resolve_lists


def _parse(path: Path, problems: list[Problem]) -> dict[str, Any] | None:
    """The LabelMe fields we use, or None after recording what is wrong."""
    try:
        data = load_json(path)
    except DatasetError as e:
        problems.append(Problem(str(path), str(e)))
        return None
    if not isinstance(data, dict):
        problems.append(Problem(str(path), "a LabelMe file must be a json object"))
        return None
    n_before = len(problems)
    for key in ("imagePath", "imageWidth", "imageHeight", "shapes"):
        if key not in data:
            problems.append(Problem(str(path), f"missing key {key!r} (is this a LabelMe file?)"))
    if len(problems) > n_before:
        return None
    if not isinstance(data["imagePath"], str) or not data["imagePath"]:
        problems.append(Problem(str(path), f"invalid imagePath {data['imagePath']!r}"))
    for key in ("imageWidth", "imageHeight"):
        if not (is_number(data[key]) and data[key] > 0):
            problems.append(Problem(str(path), f"invalid {key} {data[key]!r}; expected a positive number"))
    if not isinstance(data["shapes"], list):
        problems.append(Problem(str(path), "'shapes' must be a list"))
        return None
    boxes = []
    for i, shape in enumerate(data["shapes"], 1):
        kind = shape.get("shape_type", "polygon") if isinstance(shape, dict) else None
        if kind != "rectangle":
            problems.append(Problem(str(path), f"shape #{i} ({shape.get('label') if isinstance(shape, dict) else shape!r}) "
                                               f"is a {kind!r}; only rectangles can be converted to boxes"))
            continue
        label = shape.get("label")
        try:
            (x1, y1), (x2, y2) = [(parse_float(p[0]), parse_float(p[1])) for p in shape["points"]]
        except (KeyError, TypeError, ValueError, IndexError) as e:
            problems.append(Problem(str(path), f"shape #{i} ({label}) needs 'points' with two [x, y] pairs ({e})"))
            continue
        if not isinstance(label, str) or not label:
            problems.append(Problem(str(path), f"shape #{i} has no label"))
            continue
        x1, x2 = sorted((x1, x2))
        y1, y2 = sorted((y1, y2))
        boxes.append((label, x1, y1, x2, y2))
    if len(problems) > n_before:
        return None
    return {"image_path": data["imagePath"], "width": data["imageWidth"], "height": data["imageHeight"],
            "boxes": boxes}


def convert(root: Path, with_unlabeled: bool = False) -> ConvertedDataset:
    """Read every listed LabelMe json of ``root`` into train and val COCO jsons (nothing is written here)."""
    problems: list[Problem] = []
    warnings: list[str] = []
    lists, list_files = resolve_lists(root, ".json", problems, warnings)
    fail_if(problems, "LabelMe")
    cats, img_ids = IdIndexer(), IdIndexer()
    parts: dict[str, tuple[list[dict], list[dict]]] = {}
    for split in ("train", "val"):
        images: list[dict[str, Any]] = []
        anns: list[dict[str, Any]] = []
        seen: dict[int, str] = {}
        for rel in tqdm(lists[split], desc=f"LabelMe {split}", unit="json", leave=False):
            parsed = _parse(root / rel, problems)
            if parsed is None:
                continue
            file_name = base_name(parsed["image_path"])
            try:
                inside_path(root / IMAGES_DIR, file_name, "its file name")
            except DatasetError as e:
                problems.append(Problem(str(root / rel), f"imagePath {parsed['image_path']!r}: {e}"))
                continue
            image_id = img_ids(parsed["image_path"])
            if image_id in seen:
                problems.append(Problem(str(root / rel), f"image {parsed['image_path']} is also annotated by "
                                                         f"{seen[image_id]} in the {split} list"))
                continue
            seen[image_id] = rel
            images.append({"id": image_id, "file_name": file_name,
                           "width": as_number(parsed["width"]), "height": as_number(parsed["height"])})
            for label, x1, y1, x2, y2 in parsed["boxes"]:
                anns.append(box_annotation(len(anns) + 1, image_id, cats(label), x1, y1, x2 - x1, y2 - y1))
        parts[split] = (images, anns)
    fail_if(problems, "LabelMe")
    out = ConvertedDataset(
        splits={s: coco_json(imgs, anns, cats.categories()) for s, (imgs, anns) in parts.items()},
        extra_files=list_files, warnings=warnings,
    )
    if with_unlabeled:
        copy_unlabeled(root, out)
    return out
