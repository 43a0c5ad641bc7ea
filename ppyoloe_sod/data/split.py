"""Re-split a COCO dataset's train and val images at new percentages (PaddleX's ``CheckDataset.split``).

Rules (PaddleX's, except where noted):
- the images of ``instance_train.json`` and ``instance_val.json`` (either may be missing) are pooled; val image
  ids are shifted by train's largest id so they stay unique, and their annotations follow them;
- the pool is shuffled (here with a fixed seed, so a split can be reproduced) and cut: train gets
  round(total * train_percent / 100) images and val the rest (PaddleX rounds val separately and can drop an
  image);
- categories are the union by id (a clash, one id with two names, is an error here); annotation ids are
  renumbered from 1 in each file; ``ignored_regions`` and ``other_objects`` (VisDrone) move with their images;
- the old jsons are kept as ``*.json.bak`` and the new ones put in place all-or-nothing, even if the process is
  killed (see ``layout.replace_files``).
"""
from __future__ import annotations

import copy
import json
import logging
import os
import random
from pathlib import Path
from typing import Any, Sequence, TypeVar

from ..errors import ConfigError, DatasetError
from .coco import PER_IMAGE_LISTS, load_coco
from .layout import SPLIT_FILES, annotation_path, recover_dataset, replace_files

log = logging.getLogger(__name__)

SPLIT_SEED = 0
T = TypeVar("T")


def seeded_shuffle(items: Sequence[T], seed: int = SPLIT_SEED) -> list[T]:
    """A shuffled copy of ``items``, the same for the same seed and input order."""
    out = list(items)
    random.Random(seed).shuffle(out)
    return out


def validate_percentages(train_percent: Any, val_percent: Any) -> tuple[int, int]:
    """Both integers, both > 0, summing to 100; otherwise a ConfigError saying which rule is broken."""
    for name, v in (("train_percent", train_percent), ("val_percent", val_percent)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"CheckDataset.split.{name} must be an integer between 1 and 99, got {v!r}.")
    if train_percent + val_percent != 100:
        raise ConfigError(f"CheckDataset.split.train_percent ({train_percent}) + val_percent ({val_percent}) "
                          f"= {train_percent + val_percent}; they must sum to 100.")
    if train_percent <= 0 or val_percent <= 0:
        raise ConfigError(f"CheckDataset.split.train_percent ({train_percent}) and val_percent ({val_percent}) "
                          f"must both be greater than 0.")
    return train_percent, val_percent


def split_dataset(root: str | os.PathLike, train_percent: int, val_percent: int,
                  seed: int = SPLIT_SEED) -> dict[str, Any]:
    """Pool both splits of the dataset at ``root`` and cut them again; return counts and backup paths."""
    validate_percentages(train_percent, val_percent)
    root = Path(root)
    recover_dataset(root)  # read a whole dataset, not one an earlier run left half-changed
    pool: list[tuple[dict, list[dict], dict[str, list[dict]]]] = []  # (image, annotations, per-image lists)
    categories: dict[int, dict] = {}
    extras: dict[str, Any] = {}
    lists_present: set[str] = set()
    offset = 0
    found = []
    for split in ("train", "val"):
        path = annotation_path(root, split)
        if not path.exists():
            log.warning("%s does not exist; splitting the other file only.", path)
            continue
        found.append(path)
        data = load_coco(path)
        for cat in data["categories"]:
            old = categories.setdefault(cat["id"], cat)
            if old["name"] != cat["name"]:
                raise DatasetError(f"Category id {cat['id']} is {old['name']!r} in one file and {cat['name']!r} "
                                   f"in {path}; make the category lists agree before splitting.")
        for key in ("info", "licenses", "type"):
            if key in data:
                extras.setdefault(key, data[key])
        anns: dict[int, list[dict]] = {}
        for ann in data["annotations"]:
            anns.setdefault(ann["image_id"], []).append(ann)
        lists_present.update(k for k in PER_IMAGE_LISTS if k in data)
        extra_lists: dict[str, dict[int, list[dict]]] = {k: {} for k in PER_IMAGE_LISTS}
        for key in PER_IMAGE_LISTS:
            for entry in data.get(key) or []:
                extra_lists[key].setdefault(entry["image_id"], []).append(entry)
        max_id = offset
        for img in data["images"]:
            new_id = img["id"] + offset
            max_id = max(max_id, new_id)
            moved = [dict(a, image_id=new_id) for a in anns.get(img["id"], [])]
            regs = {k: [dict(r, image_id=new_id) for r in by_img.get(img["id"], [])]
                    for k, by_img in extra_lists.items()}
            pool.append((dict(img, id=new_id), moved, regs))
        offset = max_id
    if not found:
        raise DatasetError(f"Nothing to split: neither {SPLIT_FILES['train']} nor {SPLIT_FILES['val']} exists "
                           f"under {root / 'annotations'}.")
    total = len(pool)
    n_train = round(total * train_percent / 100)
    if n_train == 0 or n_train == total:
        raise DatasetError(f"Cannot split {total} image(s) at {train_percent}/{val_percent}: the "
                           f"{'train' if n_train == 0 else 'val'} split would be empty. Add images or change "
                           f"the percentages.")
    shuffled = seeded_shuffle(pool, seed)
    parts = {"train": shuffled[:n_train], "val": shuffled[n_train:]}
    cat_list = list(categories.values())
    files: dict[Path, bytes] = {}
    summary: dict[str, Any] = {}
    for split, items in parts.items():
        out = _assemble(items, cat_list, extras, lists_present)
        files[annotation_path(root, split)] = json.dumps(out, ensure_ascii=False).encode("utf-8")
        summary[f"{split}_images"] = len(out["images"])
        summary[f"{split}_annotations"] = len(out["annotations"])
    backups = replace_files(root, files)
    summary["backups"] = [str(b) for b in backups.values()]
    log.info("Split %d images into %d train / %d val (seed %d).", total, summary["train_images"],
             summary["val_images"], seed)
    return summary


def _assemble(items: list[tuple[dict, list[dict], dict[str, list[dict]]]], categories: list[dict],
              extras: dict[str, Any], lists_present: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = copy.deepcopy(extras)
    out["images"] = [img for img, _, _ in items]
    out["annotations"] = [dict(a, id=i) for i, a in enumerate((a for _, anns, _ in items for a in anns), 1)]
    out["categories"] = categories
    for key in PER_IMAGE_LISTS:
        entries = [r for _, _, regs in items for r in regs[key]]
        if key in lists_present:
            out[key] = [dict(r, id=i) for i, r in enumerate(entries, 1)]
    return out
