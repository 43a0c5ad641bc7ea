"""``Global.mode=check_dataset``: convert -> split -> check -> analyse, then the report PaddleX writes.

Outputs under ``output_dir`` (PaddleX's names):
- ``check_dataset_result.json``: done_flag, check_pass, attributes {num_classes, train_samples,
  train_sample_paths, val_samples, val_sample_paths}, analysis {histogram}, dataset_path, show_type,
  dataset_type "COCODetDataset". Added here: ``analysis.instances`` and ``analysis.object_sizes`` (COCO
  small/medium/large counts per class and split), ``analysis.box_sizes`` (a plot), ``warnings``, and on
  failure ``problems`` (every one found: file, image id, annotation id, message) next to err_type/err_msg;
- ``check_dataset/demo_img/<file_name>``: the first 10 images of each split with their boxes drawn
  (ignored regions, where the json has them, in a box labelled ``ignored``); ``file_name`` normalized by
  ``paths.relative_entry``, so a drawing never lands outside ``demo_img`` (the check refuses any other);
- ``check_dataset/histogram.png`` (instances per class, train and val side by side, by train count) and
  ``check_dataset/box_sizes.png`` (box size distribution and COCO size classes per class).

The user's dataset is only changed when conversion or split is asked for (see ``layout.replace_files``).
"""
from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..draw import draw_detections
from ..errors import ConfigError, DatasetError
from ..fileio import atomic_write_bytes, atomic_write_json
from ..imageio import read_image
from .check import DEFAULT_TOLERANCE, SplitCheck, category_problems, check_split
from .coco import MEDIUM_AREA, SIZE_BUCKETS, SMALL_AREA, Problem, ignored_regions_by_image, problems_error
from .converters import convert_dataset, resolve_source_type
from .layout import IMAGES_DIR, find_dataset_root
from .paths import inside_path, relative_entry
from .split import split_dataset, validate_percentages

log = logging.getLogger(__name__)

RESULT_FILE = "check_dataset_result.json"
ARTIFACTS_DIR = "check_dataset"
SAMPLE_NUM = 10
PASSED_MESSAGE = "Check dataset passed !"


def run_check_dataset(dataset_dir: str | None, output: str, convert_enable: bool, src_dataset_type: str | None,
                      split_enable: bool, train_percent: int | None, val_percent: int | None) -> dict:
    """The CLI's entry: PaddleX's CheckDataset options as plain arguments (see :func:`check_dataset`)."""
    if not dataset_dir:
        raise ConfigError("Global.dataset_dir is not set; pass -o Global.dataset_dir=DIR (the folder that holds "
                          "images/ and annotations/).")
    convert_type = None
    if convert_enable:
        if not src_dataset_type:
            raise ConfigError("CheckDataset.convert.enable is True but CheckDataset.convert.src_dataset_type is "
                              "not set; set it to the format of the source annotations.")
        convert_type = src_dataset_type
    split = (train_percent, val_percent) if split_enable else None
    return check_dataset(dataset_dir, output, convert_type=convert_type, split=split)


def check_dataset(dataset_dir: str | os.PathLike, output_dir: str | os.PathLike, convert_type: str | None = None,
                  split: tuple[int, int] | None = None, tolerance: float = DEFAULT_TOLERANCE,
                  sample_num: int = SAMPLE_NUM) -> dict[str, Any]:
    """Convert (if asked), split (if asked), check and analyse; write and return the result dict.

    Bad arguments (unknown convert type, percentages) raise ConfigError before anything is touched. Problems
    with the dataset do not raise: the result has ``check_pass: false`` and lists them all.
    """
    if convert_type is not None:
        convert_type = resolve_source_type(convert_type)
    if split is not None:
        split = validate_percentages(*split)
    output_dir = Path(output_dir)
    base = {"dataset_path": str(dataset_dir), "show_type": "image", "dataset_type": "COCODetDataset"}
    warnings: list[str] = []
    try:
        root = find_dataset_root(dataset_dir)
        if convert_type is not None:
            summary = convert_dataset(root, convert_type)
            warnings += summary["warnings"]
            log.info("Convert dataset successfully !")
        if split is not None:
            split_dataset(root, *split)
            log.info("Split dataset successfully !")
        checks = _check_both(root, tolerance)
    except DatasetError as e:
        problems = getattr(e, "problems", None) or [Problem(str(dataset_dir), str(e))]
        return _fail(output_dir, base, problems, e, warnings)
    logged = len(warnings)  # the converter logged its warnings already
    problems = [p for c in checks.values() for p in c.problems] + category_problems(checks["train"], checks["val"])
    if problems:
        err = problems_error(problems, f"Dataset {dataset_dir} failed the check")
        return _fail(output_dir, base, problems, err, warnings, checks)

    art = output_dir / ARTIFACTS_DIR
    attributes = {"num_classes": len(checks["val"].class_names)}
    for split_name, chk in checks.items():
        attributes[f"{split_name}_samples"] = chk.num_images
        attributes[f"{split_name}_sample_paths"] = _draw_samples(root, chk, art, sample_num)
    for split_name, chk in checks.items():
        if chk.images_without_boxes:
            warnings.append(f"{chk.json_path}: {chk.images_without_boxes} of {chk.num_images} images have no "
                            f"box; training skips them, evaluation keeps them.")
    atomic_write_bytes(art / "histogram.png", _histogram_png(checks))
    atomic_write_bytes(art / "box_sizes.png", _box_sizes_png(checks))
    result = {
        "done_flag": True,
        "check_pass": True,
        "attributes": attributes,
        "analysis": {
            "histogram": f"{ARTIFACTS_DIR}/histogram.png",
            "box_sizes": f"{ARTIFACTS_DIR}/box_sizes.png",
            **_statistics(checks),
        },
        **base,
        "warnings": warnings,
    }
    atomic_write_json(output_dir / RESULT_FILE, result, indent=2)
    for w in warnings[logged:]:
        log.warning(w)
    print(PASSED_MESSAGE)
    return result


def _check_both(root: Path, tolerance: float) -> dict[str, SplitCheck]:
    cache: dict[Path, Any] = {}
    return {s: check_split(root, s, tolerance, size_cache=cache) for s in ("train", "val")}


def _fail(output_dir: Path, base: dict, problems: list[Problem], err: Exception, warnings: list[str],
          checks: dict[str, SplitCheck] | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {
        "done_flag": False,
        "check_pass": False,
        "err_type": type(err).__name__,
        "err_msg": str(err),
        "problems": [p.to_dict() for p in problems],
        **base,
        "warnings": warnings,
    }
    if checks:
        result["attributes"] = {"num_classes": len(checks["val"].class_names),
                                **{f"{s}_samples": c.num_images for s, c in checks.items()}}
    atomic_write_json(output_dir / RESULT_FILE, result, indent=2)
    log.error("%s\nThe full list is in %s", err, output_dir / RESULT_FILE)
    return result


def _statistics(checks: dict[str, SplitCheck]) -> dict[str, Any]:
    return {
        "instances": {s: c.instances for s, c in checks.items()},
        "object_sizes": {
            s: {"thresholds": {"small": f"area < {SMALL_AREA}", "medium": f"{SMALL_AREA} <= area < {MEDIUM_AREA}",
                               "large": f"area >= {MEDIUM_AREA}"},
                "all": c.size_totals(), "per_class": c.sizes}
            for s, c in checks.items()
        },
        "images_without_boxes": {s: c.images_without_boxes for s, c in checks.items()},
    }


# ----------------------------------------------------------------------------------------------- samples


def _draw_samples(root: Path, chk: SplitCheck, art: Path, sample_num: int) -> list[str]:
    """Draw the first ``sample_num`` images of the split; return their paths relative to the output dir."""
    data = chk.data or {}
    cls_of = {c["id"]: (i, str(c["name"])) for i, c in enumerate(data.get("categories", []))}
    ignored = ignored_regions_by_image(data)
    by_image: dict[Any, list[dict]] = {}
    for ann in data.get("annotations", []):
        by_image.setdefault(ann["image_id"], []).append(ann)
    paths = []
    for img in data.get("images", [])[:sample_num]:
        rgb = read_image(inside_path(root / IMAGES_DIR, img["file_name"], "file_name"))[:, :, ::-1]
        boxes = []
        for ann in by_image.get(img["id"], []):
            cls_id, label = cls_of[ann["category_id"]]
            x, y, w, h = ann["bbox"]
            boxes.append({"cls_id": cls_id, "label": label, "score": None, "coordinate": [x, y, x + w, y + h]})
        for x1, y1, x2, y2 in ignored.get(img["id"], np.zeros((0, 4))).tolist():
            boxes.append({"cls_id": len(cls_of), "label": "ignored", "score": None, "coordinate": [x1, y1, x2, y2]})
        rel = Path(ARTIFACTS_DIR, "demo_img", *relative_entry(img["file_name"]).parts)  # never leaves demo_img
        rel = _save_image(draw_detections(rgb, boxes), art.parent / rel, rel)
        paths.append(rel.as_posix())
    return paths


def _save_image(im: Image.Image, path: Path, rel: Path) -> Path:
    """Save in the format the suffix names (PNG, with .png appended, if Pillow cannot write it)."""
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        fmt, path, rel = "PNG", path.with_name(path.name + ".png"), rel.with_name(rel.name + ".png")
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    atomic_write_bytes(path, buf.getvalue())
    return rel


# ------------------------------------------------------------------------------------------------- plots


def _figure(width: float, height: float):
    # The object-oriented API with the Agg canvas: no pyplot, no global backend switch.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _histogram_png(checks: dict[str, SplitCheck]) -> bytes:
    """Instances per class, train and val side by side, classes by train count (descending), as PaddleX."""
    names = checks["train"].class_names + [n for n in checks["val"].class_names
                                           if n not in checks["train"].class_names]
    train = [checks["train"].instances.get(n, 0) for n in names]
    order = sorted(range(len(names)), key=lambda i: -train[i])
    names = [names[i] for i in order]
    t = np.array([checks["train"].instances.get(n, 0) for n in names])
    v = np.array([checks["val"].instances.get(n, 0) for n in names])
    x = np.arange(len(names))
    fig = _figure(max(8.0, len(names) / 5), 5)
    ax = fig.add_subplot()
    ax.bar(x, t, width=0.4, label="train")
    ax.bar(x + 0.4, v, width=0.4, label="val")
    ax.set_xticks(x + 0.2, names, rotation=90)
    ax.set_ylabel("Counts")
    ax.set_title("Instances per class")
    ax.legend()
    return _png(fig)


def _box_sizes_png(checks: dict[str, SplitCheck]) -> bytes:
    """Left: distribution of sqrt(box area) with COCO's 32/96 px limits. Right: small/medium/large per class."""
    fig = _figure(14, 5)
    ax1, ax2 = fig.subplots(1, 2)
    sides = {s: np.sqrt(np.maximum(c.box_areas, 0)) for s, c in checks.items()}
    top = max([float(v.max()) for v in sides.values() if v.size] + [128.0])
    bins = np.geomspace(1.0, top * 1.05, 50)
    for s, v in sides.items():
        ax1.hist(np.clip(v, 1.0, None), bins=bins, alpha=0.6, label=f"{s} ({v.size} boxes)")
    ax1.set_xscale("log")
    for limit, name in ((32, "small | medium"), (96, "medium | large")):
        ax1.axvline(limit, color="k", linestyle="--", linewidth=1)
        ax1.text(limit, ax1.get_ylim()[1] * 0.95, f" {name}", rotation=90, va="top", fontsize=8)
    ax1.set_xlabel("sqrt(box area) in pixels")
    ax1.set_ylabel("boxes")
    ax1.set_title("Box size distribution")
    ax1.legend()

    names = list(dict.fromkeys(checks["train"].class_names + checks["val"].class_names))
    x = np.arange(len(names))
    bottom = np.zeros(len(names))
    for bucket in SIZE_BUCKETS:
        counts = np.array([sum(c.sizes.get(n, {}).get(bucket, 0) for c in checks.values()) for n in names])
        ax2.bar(x, counts, bottom=bottom, label=bucket)
        bottom += counts
    ax2.set_xticks(x, names, rotation=90)
    ax2.set_ylabel("boxes (train + val)")
    ax2.set_title("COCO size classes per class")
    ax2.legend()
    return _png(fig)
