"""Conversion of other annotation formats to the COCO layout (``CheckDataset.convert``).

``convert_dataset(root, src_type)`` reads everything first (every problem of every file is reported at once),
then writes ``annotations/instance_train.json`` and ``instance_val.json`` (and the list files a split creates)
together through ``layout.replace_files``: originals kept as ``.bak``, all-or-nothing even if the process is killed.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Callable

from ...errors import ConfigError
from ..layout import annotation_path, recover_dataset, replace_files
from . import labelme, visdrone, voc, yolo
from .common import ConvertedDataset

log = logging.getLogger(__name__)

# src_dataset_type -> (reader, with_unlabeled)
SOURCE_TYPES: dict[str, tuple[Callable[[Path, bool], ConvertedDataset], bool]] = {
    "VOC": (voc.convert, False),
    "VOCWithUnlabeled": (voc.convert, True),
    "LabelMe": (labelme.convert, False),
    "LabelMeWithUnlabeled": (labelme.convert, True),
    "VisDrone": (visdrone.convert, False),
    "YOLO": (yolo.convert, False),
}


def resolve_source_type(src_type: Any) -> str:
    """The canonical spelling of a source type (case-insensitive); ConfigError listing the choices otherwise."""
    if isinstance(src_type, str):
        for name in SOURCE_TYPES:
            if name.lower() == src_type.strip().lower():
                return name
    raise ConfigError(f"CheckDataset.convert.src_dataset_type {src_type!r} is not supported; "
                      f"choose one of {', '.join(SOURCE_TYPES)}.")


def convert_dataset(root: str | os.PathLike, src_type: str) -> dict[str, Any]:
    """Convert the dataset at ``root`` to COCO in place; return counts, warnings and backups made."""
    name = resolve_source_type(src_type)
    reader, with_unlabeled = SOURCE_TYPES[name]
    root = Path(root)
    recover_dataset(root)  # read a whole dataset, not one an earlier run left half-changed
    converted = reader(root, with_unlabeled)
    files = dict(converted.extra_files)
    summary: dict[str, Any] = {"src_dataset_type": name}
    for split, data in converted.splits.items():
        files[annotation_path(root, split)] = json.dumps(data, ensure_ascii=False).encode("utf-8")
        summary[f"{split}_images"] = len(data["images"])
        summary[f"{split}_annotations"] = len(data["annotations"])
    summary["num_classes"] = len(converted.splits["train"]["categories"])
    summary.update(converted.stats)
    for w in converted.warnings:
        log.warning(w)
    backups = replace_files(root, files)
    summary["warnings"] = list(converted.warnings)
    summary["backups"] = [str(b) for b in backups.values()]
    log.info("Converted %s dataset at %s: %s", name, root,
             {k: v for k, v in summary.items() if k not in ("warnings", "backups")})
    return summary
