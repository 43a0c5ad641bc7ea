"""What every converter to COCO shares: the train/val list files, id numbering, image lookup and sizes.

Train/val selection (PaddleX's rule for VOC and LabelMe, reused for VisDrone and YOLO):
- ``DATASET/train_anno_list.txt`` and ``val_anno_list.txt`` list annotation files, one a line, relative to
  DATASET; only the last space-separated token of a line counts (so ``image.jpg annotations/a.xml`` works);
  an entry that is absolute or leads out of DATASET (``..``, a symlink) is a problem and is not read, and so
  is an image or label file that a symlink leads out of the dataset (see ``paths``);
- without ``val_anno_list.txt`` the train list is shuffled (fixed seed) and cut 80/20 (train gets
  floor(0.8 n)); the new lists are written and the original train list is kept as ``train_anno_list.txt.bak``;
- VOC and LabelMe need ``train_anno_list.txt``. VisDrone and YOLO may go without lists: then every annotation
  file of the dataset is listed (sorted), cut 80/20 the same way, and both lists are written so the split is on
  record and a second conversion gives the same split.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, Iterator

from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from ...errors import DatasetError
from ...imageio import IMAGE_SUFFIXES
from ..coco import Problem, problems_error
from ..layout import ANNOTATIONS_DIR, IMAGES_DIR
from ..paths import inside_path
from ..split import seeded_shuffle

LIST_FILES = {"train": "train_anno_list.txt", "val": "val_anno_list.txt"}
TRAIN_FRACTION = 0.8
# PaddleX's lookup order for an image next to a VOC xml, then any other image suffix we can read.
_PADDLEX_EXTS = (".jpg", ".png", ".jpeg", ".JPG", ".PNG", ".JPEG")
IMAGE_EXTS = _PADDLEX_EXTS + tuple(
    s for suf in sorted(IMAGE_SUFFIXES) for s in (suf, suf.upper()) if s not in _PADDLEX_EXTS
)


@dataclass
class ConvertedDataset:
    """A conversion held in memory until every file has been read: nothing is written before that."""

    splits: dict[str, dict[str, Any]]  # "train"/"val" -> COCO json
    extra_files: dict[Path, bytes] = field(default_factory=dict)  # list files etc., written with the jsons
    warnings: list[str] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)


class IdIndexer:
    """1-based ids handed out in order of first appearance."""

    def __init__(self) -> None:
        self._ids: dict[Hashable, int] = {}

    def __call__(self, key: Hashable) -> int:
        return self._ids.setdefault(key, len(self._ids) + 1)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._ids

    def categories(self) -> list[dict[str, Any]]:
        return [{"id": i, "name": name} for name, i in self._ids.items()]


def fail_if(problems: list[Problem], what: str) -> None:
    """Raise one DatasetError listing every problem, if there are any."""
    if problems:
        raise problems_error(problems, f"Cannot convert the {what} dataset")


def resolve_lists(root: Path, suffix: str, problems: list[Problem], warnings: list[str],
                  discover: Callable[[], list[str]] | None = None) -> tuple[dict[str, list[str]], dict[Path, bytes]]:
    """Annotation files (relative to ``root``) of each split, and the list files to (re)write."""
    lists: dict[str, list[str]] = {}
    lines: dict[str, list[str]] = {}
    for split, name in LIST_FILES.items():
        path = root / name
        if not path.is_file():
            continue
        try:
            raw = [ln.rstrip("\r\n") for ln in path.read_text(encoding="utf-8").splitlines()]
        except (OSError, UnicodeDecodeError) as e:
            problems.append(Problem(str(path), f"cannot read the list: {e}"))
            continue
        kept_lines, entries = [], []
        for n, line in enumerate(raw, 1):
            if not line.strip():
                continue
            entry = line.strip().split(" ")[-1]
            if not entry.lower().endswith(suffix):
                warnings.append(f"{path}:{n}: {entry!r} is not a {suffix} file; the line is ignored.")
                continue
            try:
                file = inside_path(root, entry, "annotation file")
            except DatasetError as e:
                problems.append(Problem(str(path), f"line {n}: {e}"))
                continue
            if not file.is_file():
                problems.append(Problem(str(path), f"line {n}: annotation file {entry!r} does not exist "
                                                   f"(paths are relative to {root})"))
            kept_lines.append(line.strip())
            entries.append(file.relative_to(root).as_posix())
        lists[split], lines[split] = entries, kept_lines
    if "train" not in lists:
        if "val" in lists:
            problems.append(Problem(str(root / LIST_FILES["val"]), f"found without {LIST_FILES['train']}; "
                                    f"write both lists, or only {LIST_FILES['train']} for an 80/20 split"))
            return {"train": [], "val": []}, {}
        if discover is None:
            problems.append(Problem(str(root / LIST_FILES["train"]),
                                    f"not found; list the {suffix} annotation files of the training set in it, one "
                                    f"per line, relative to {root} (optionally {LIST_FILES['val']} for validation)"))
            return {"train": [], "val": []}, {}
        lines["train"] = lists["train"] = discover()
    to_write: dict[Path, bytes] = {}
    if "val" not in lists:
        order = seeded_shuffle(range(len(lists["train"])))
        cut = int(len(order) * TRAIN_FRACTION)
        pool_entries, pool_lines = lists["train"], lines["train"]
        for split, idx in (("train", order[:cut]), ("val", order[cut:])):
            lists[split] = [pool_entries[i] for i in idx]
            lines[split] = [pool_lines[i] for i in idx]
            to_write[root / LIST_FILES[split]] = "".join(f"{ln}\n" for ln in lines[split]).encode("utf-8")
        warnings.append(f"No {LIST_FILES['val']}: the {len(order)} annotation files were split 80/20 "
                        f"({cut} train, {len(order) - cut} val) and the lists written to {root}.")
    for split in ("train", "val"):
        if not lists[split]:
            problems.append(Problem(str(root / LIST_FILES[split]),
                                    f"the {split} split has no annotation files; add some (at least 2 files in all "
                                    f"are needed for an automatic 80/20 split)"))
    return lists, to_write


def find_image(root: Path, stems: list[str]) -> str | None:
    """File name (relative to ``root/images``) of the first image found for any stem, PaddleX's order.

    Raises DatasetError for a candidate that leads out of ``images/`` (a symlink), before anything is read.
    """
    images = root / IMAGES_DIR
    for ext in IMAGE_EXTS:
        for stem in stems:
            if stem and inside_path(images, f"{stem}{ext}", "image").is_file():
                return f"{stem}{ext}"
    return None


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) as decoders see it (EXIF rotation applied), read from the header only."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise ValueError(f"cannot read {path} as an image ({e})") from e
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def as_number(v: float) -> int | float:
    """Integers stay integers in the json, other values stay floats."""
    return int(v) if float(v).is_integer() else float(v)


def box_annotation(ann_id: int, image_id: int, category_id: int, x: float, y: float, w: float, h: float,
                   **extra: Any) -> dict[str, Any]:
    """A COCO box annotation in PaddleX's converted form (iscrowd 0, ignore 0, area = w * h)."""
    return {"id": ann_id, "image_id": image_id, "category_id": category_id,
            "bbox": [float(x), float(y), float(w), float(h)], "area": float(w) * float(h),
            "iscrowd": 0, "ignore": 0, **extra}


def clip_xywh(x: float, y: float, w: float, h: float, width: float, height: float
              ) -> tuple[tuple[float, float, float, float], bool]:
    """The part of a box inside the image (w or h may come out <= 0), and whether anything was cut off."""
    if x >= 0 and y >= 0 and x + w <= width and y + h <= height:
        return (x, y, w, h), False
    x1, y1 = min(max(x, 0.0), width), min(max(y, 0.0), height)
    x2, y2 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
    return (x1, y1, x2 - x1, y2 - y1), True


def parse_float(text: Any) -> float:
    """float() that refuses nan and inf."""
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"{text!r} is not a finite number")
    return v


def coco_json(images: list[dict], annotations: list[dict], categories: list[dict], **extra: Any) -> dict[str, Any]:
    return {"images": images, "annotations": annotations, "categories": categories, **extra}


def copy_unlabeled(root: Path, out: ConvertedDataset) -> None:
    """``*WithUnlabeled``: carry ``DATASET/unlabeled.txt`` (unlabeled image list) to annotations/unlabeled.txt.

    PaddleX moves the file; it is copied here so the user's original stays where it was.
    """
    src = root / "unlabeled.txt"
    if src.is_file():
        out.extra_files[root / ANNOTATIONS_DIR / "unlabeled.txt"] = src.read_bytes()
    else:
        out.warnings.append(f"{src} not found: no unlabeled image list is carried over.")


def iter_label_files(root: Path, rel_paths: list[str], desc: str, problems: list[Problem], warnings: list[str],
                     stats: dict[str, int]) -> Iterator[tuple[Path, str, int, int]]:
    """(label file, image file name, width, height) for each per-image label file (VisDrone, YOLO) whose image
    ``images/<stem>.*`` exists and decodes; a missing image is a warning (file skipped), a broken one a problem."""
    for rel in tqdm(rel_paths, desc=desc, unit="txt", leave=False):
        try:
            path = inside_path(root, rel, "label file")  # listed entries were checked; found ones may be links
            file_name = find_image(root, [path.stem])
        except DatasetError as e:
            problems.append(Problem(str(root / rel), str(e)))
            continue
        if file_name is None:
            warnings.append(f"{path}: no image images/{path.stem}.* was found; the file is skipped.")
            stats["skipped_files"] += 1
            continue
        try:
            width, height = image_size(root / IMAGES_DIR / file_name)
        except ValueError as e:
            problems.append(Problem(str(root / IMAGES_DIR / file_name), str(e)))
            continue
        yield path, file_name, width, height
