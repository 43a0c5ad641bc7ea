"""Synthetic datasets and a tiny architecture for the training-loop tests.

The tiny spec is SOD-S's architecture at 1/8 width with a small transformer feed-forward: the same code
paths (CSPResNet, transformer encoder, ET-head, DFL with reg_range (-2, 8)) at a fraction of the cost, so the
loop, resume and DDP tests take seconds.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np

from ppyoloe_sod.zoo import get_spec

CLASSES = ("box", "disc")
COLOURS = ((40, 200, 240), (230, 60, 60))  # BGR per class


def tiny_spec(size: int = 64):
    base = get_spec("PP-YOLOE_plus_SOD-S")
    arch = dataclasses.replace(base.arch, width_mult=0.125, transformer_ffn=64, num_classes=len(CLASSES))
    return dataclasses.replace(base, name="tiny-sod-test", arch=arch, classes=CLASSES, input_size=(size, size),
                               train_sizes=(size,), base_lr=0.01, pretrain_from=None)


def draw_image(rng: np.random.Generator, size: int, n_objects: int, min_side: int = 8, max_side: int = 20
               ) -> tuple[np.ndarray, list[list[float]], list[int]]:
    """A noisy background with ``n_objects`` filled rectangles / discs that do not overlap much."""
    img = rng.integers(70, 110, (size, size, 3), dtype=np.uint8)
    boxes: list[list[float]] = []
    classes: list[int] = []
    tries = 0
    while len(boxes) < n_objects and tries < 200:
        tries += 1
        w, h = (int(v) for v in rng.integers(min_side, max_side + 1, 2))
        x, y = int(rng.integers(1, size - w - 1)), int(rng.integers(1, size - h - 1))
        if any(x < b[2] + 2 and b[0] < x + w + 2 and y < b[3] + 2 and b[1] < y + h + 2 for b in boxes):
            continue
        c = int(rng.integers(0, len(CLASSES)))
        if c == 0:
            cv2.rectangle(img, (x, y), (x + w - 1, y + h - 1), COLOURS[c], -1)
        else:
            cv2.ellipse(img, (x + w // 2, y + h // 2), (w // 2, h // 2), 0, 0, 360, COLOURS[c], -1)
        boxes.append([float(x), float(y), float(x + w), float(y + h)])
        classes.append(c)
    return img, boxes, classes


def make_dataset(root: Path, n_train: int = 4, n_val: int = 2, size: int = 64, seed: int = 0,
                 objects: int = 3) -> Path:
    """PaddleX layout: root/images/*.png, root/annotations/instance_{train,val}.json."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    ann_id = 1
    for split, count, offset in (("train", n_train, 0), ("val", n_val, 1000)):
        images, anns = [], []
        for i in range(count):
            img, boxes, classes = draw_image(rng, size, objects)
            name = f"{split}_{i}.png"
            cv2.imwrite(str(root / "images" / name), img)
            images.append({"id": offset + i + 1, "file_name": name, "width": size, "height": size})
            for b, c in zip(boxes, classes):
                w, h = b[2] - b[0], b[3] - b[1]
                anns.append({"id": ann_id, "image_id": offset + i + 1, "category_id": c + 1,
                             "bbox": [b[0], b[1], w, h], "area": w * h, "iscrowd": 0})
                ann_id += 1
        if count:
            data = {"images": images, "annotations": anns,
                    "categories": [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)]}
            (root / "annotations" / f"instance_{split}.json").write_text(json.dumps(data))
    return root
