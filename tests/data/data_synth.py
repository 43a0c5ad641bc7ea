"""Tiny synthetic datasets for the dataset-layer tests: one ground truth written in every supported format.

Images are small PNG/JPEG files with the objects drawn as filled rectangles, so decoding and sizes are real.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

VISDRONE = ["pedestrian", "people", "bicycle", "car", "van", "truck", "tricycle", "awning-tricycle", "bus", "motor"]


@dataclass(frozen=True)
class Obj:
    label: str
    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def xywh(self) -> tuple[float, float, float, float]:
        return (self.x1, self.y1, self.x2 - self.x1, self.y2 - self.y1)


@dataclass(frozen=True)
class Img:
    name: str  # file name under images/
    width: int
    height: int
    objects: tuple[Obj, ...]


def scene(n: int = 6) -> list[Img]:
    """n images of distinct sizes (w != h) with 1-3 objects each, integer boxes well inside the image."""
    labels = ["car", "pedestrian", "van"]
    out = []
    for i in range(n):
        w, h = 64 + 8 * i, 48 + 4 * i
        objs = tuple(Obj(labels[(i + k) % 3], 4 + 10 * k, 3 + 6 * k, 4 + 10 * k + 8 + 2 * i, 3 + 6 * k + 6 + i)
                     for k in range(1 + i % 3))
        out.append(Img(f"img_{i:02d}.{'png' if i % 2 else 'jpg'}", w, h, objs))
    return out


def draw_image(path: Path, width: int, height: int, objects=(), seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 60, size=(height, width, 3), dtype=np.uint8)
    im = Image.fromarray(arr)
    d = ImageDraw.Draw(im)
    for k, o in enumerate(objects):
        d.rectangle([o.x1, o.y1, o.x2 - 1, o.y2 - 1], fill=(200, 40 * k % 255, 90))
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def write_images(root: Path, imgs: list[Img]) -> None:
    for i, img in enumerate(imgs):
        draw_image(root / "images" / img.name, img.width, img.height, img.objects, seed=i)


def coco_dict(imgs: list[Img], categories: list[str], first_image_id: int = 1, **extra) -> dict:
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(categories)]
    cid = {n: i + 1 for i, n in enumerate(categories)}
    images, anns = [], []
    for k, img in enumerate(imgs):
        iid = first_image_id + k
        images.append({"id": iid, "file_name": img.name, "width": img.width, "height": img.height})
        for o in img.objects:
            x, y, w, h = o.xywh
            anns.append({"id": len(anns) + 1, "image_id": iid, "category_id": cid[o.label], "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": 0})
    return {"images": images, "annotations": anns, "categories": cats, **extra}


def write_coco_dataset(root: Path, train: list[Img], val: list[Img], categories: list[str] | None = None) -> None:
    categories = categories or sorted({o.label for im in train + val for o in im.objects})
    write_images(root, train + val)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "instance_train.json").write_text(json.dumps(coco_dict(train, categories)))
    (root / "annotations" / "instance_val.json").write_text(
        json.dumps(coco_dict(val, categories, first_image_id=len(train) + 1)))


def write_lists(root: Path, train: list[str], val: list[str] | None) -> None:
    (root / "train_anno_list.txt").write_text("".join(f"{p}\n" for p in train))
    if val is not None:
        (root / "val_anno_list.txt").write_text("".join(f"{p}\n" for p in val))


def voc_xml(img: Img, filename: str | None = None, with_size: bool = True) -> str:
    objs = "".join(
        f"<object><name>{o.label}</name><difficult>0</difficult><bndbox><xmin>{o.x1:g}</xmin><ymin>{o.y1:g}</ymin>"
        f"<xmax>{o.x2:g}</xmax><ymax>{o.y2:g}</ymax></bndbox></object>" for o in img.objects)
    size = f"<size><width>{img.width}</width><height>{img.height}</height><depth>3</depth></size>" if with_size else ""
    return f"<annotation><folder>images</folder><filename>{filename or img.name}</filename>{size}{objs}</annotation>"


def write_voc(root: Path, train: list[Img], val: list[Img] | None) -> None:
    write_images(root, train + (val or []))
    for img in train + (val or []):
        p = root / "annotations" / (Path(img.name).stem + ".xml")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(voc_xml(img))
    rel = lambda imgs: [f"annotations/{Path(i.name).stem}.xml" for i in imgs]  # noqa: E731
    write_lists(root, rel(train), rel(val) if val is not None else None)


def labelme_dict(img: Img) -> dict:
    return {"version": "5.2.1", "flags": {}, "imagePath": f"..\\images\\{img.name}", "imageData": None,
            "imageWidth": img.width, "imageHeight": img.height,
            "shapes": [{"label": o.label, "points": [[o.x2, o.y1], [o.x1, o.y2]], "group_id": None,
                        "shape_type": "rectangle", "flags": {}} for o in img.objects]}


def write_labelme(root: Path, train: list[Img], val: list[Img] | None) -> None:
    write_images(root, train + (val or []))
    for img in train + (val or []):
        p = root / "annotations" / (Path(img.name).stem + ".json")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(labelme_dict(img)))
    rel = lambda imgs: [f"annotations/{Path(i.name).stem}.json" for i in imgs]  # noqa: E731
    write_lists(root, rel(train), rel(val) if val is not None else None)


def visdrone_rows(img: Img) -> list[str]:
    return [f"{o.x1:g},{o.y1:g},{o.x2 - o.x1:g},{o.y2 - o.y1:g},1,{VISDRONE.index(o.label) + 1},0,0"
            for o in img.objects]


def write_visdrone(root: Path, train: list[Img], val: list[Img] | None, extra_rows: dict[str, list[str]] | None = None,
                   lists: bool = True) -> None:
    write_images(root, train + (val or []))
    for img in train + (val or []):
        p = root / "annotations" / (Path(img.name).stem + ".txt")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("\n".join(visdrone_rows(img) + (extra_rows or {}).get(img.name, [])) + "\n")
    if lists:
        rel = lambda imgs: [f"annotations/{Path(i.name).stem}.txt" for i in imgs]  # noqa: E731
        write_lists(root, rel(train), rel(val) if val is not None else None)


def write_yolo(root: Path, train: list[Img], val: list[Img] | None, classes: list[str], lists: bool = True) -> None:
    write_images(root, train + (val or []))
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    for img in train + (val or []):
        lines = []
        for o in img.objects:
            cx, cy = (o.x1 + o.x2) / 2 / img.width, (o.y1 + o.y2) / 2 / img.height
            w, h = (o.x2 - o.x1) / img.width, (o.y2 - o.y1) / img.height
            lines.append(f"{classes.index(o.label)} {cx:.8f} {cy:.8f} {w:.8f} {h:.8f}")
        p = root / "labels" / (Path(img.name).stem + ".txt")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("\n".join(lines) + "\n")
    if lists:
        rel = lambda imgs: [f"labels/{Path(i.name).stem}.txt" for i in imgs]  # noqa: E731
        write_lists(root, rel(train), rel(val) if val is not None else None)


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under root (to prove nothing changed)."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def boxes_by_file(data: dict, ndigits: int = 3) -> dict[str, list[tuple]]:
    """file_name -> sorted [(category name, x, y, w, h)] of a COCO dict."""
    names = {c["id"]: c["name"] for c in data["categories"]}
    files = {im["id"]: im["file_name"] for im in data["images"]}
    out: dict[str, list[tuple]] = {f: [] for f in files.values()}
    for a in data["annotations"]:
        out[files[a["image_id"]]].append((names[a["category_id"]], *(round(v, ndigits) for v in a["bbox"])))
    return {k: sorted(v) for k, v in out.items()}


def truth_by_file(imgs: list[Img]) -> dict[str, list[tuple]]:
    return {im.name: sorted((o.label, *(float(v) for v in o.xywh)) for o in im.objects) for im in imgs}
