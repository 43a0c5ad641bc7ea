"""Render the README's example picture: SOD-S trained here on synthetic aerial-style scenes, drawn by DetResult.

The official weights cannot be fetched from the machines this project is built on and VisDrone images may not
be redistributed, so the picture shows a model trained for a few minutes on generated scenes (small cars and
pedestrians on a textured ground, 8-26 px), predicting on a scene it was not trained on. Run:

    python docs/make_example_figure.py            # writes docs/images/example_result.png (about 5 min on 2 cores)
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ppyoloe_sod.infer.backends import TorchBackend  # noqa: E402
from ppyoloe_sod.infer.predictor import DetPredictor  # noqa: E402
from ppyoloe_sod.models import build_model  # noqa: E402
from ppyoloe_sod.train.engine import Trainer  # noqa: E402
from ppyoloe_sod.zoo import get_spec  # noqa: E402

CLASSES = ("pedestrian", "car", "van")
SIZE = 320


def scene(rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[list[float]], list[int]]:
    """A BGR ground texture with a road, and ``n`` small non-overlapping objects seen from above."""
    img = rng.normal(0, 1, (SIZE // 8, SIZE // 8, 3))
    img = cv2.resize(img, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)
    img = np.clip(img * 14 + np.array([70, 105, 85]) + rng.normal(0, 6, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    y0 = int(rng.integers(60, 200))
    cv2.rectangle(img, (0, y0), (SIZE, y0 + 70), (105, 105, 110), -1)
    for x in range(0, SIZE, 40):
        cv2.line(img, (x, y0 + 35), (x + 20, y0 + 35), (230, 230, 230), 2)
    boxes: list[list[float]] = []
    classes: list[int] = []
    for _ in range(200):
        if len(boxes) == n:
            break
        c = int(rng.integers(0, 3))
        w, h = [(5, 9), (22, 11), (26, 13)][c]
        w, h = w + int(rng.integers(-1, 3)), h + int(rng.integers(-1, 3))
        if c and rng.random() < 0.5:
            w, h = h, w
        x, y = int(rng.integers(2, SIZE - w - 2)), int(rng.integers(2, SIZE - h - 2))
        if any(x < b[2] + 3 and b[0] < x + w + 3 and y < b[3] + 3 and b[1] < y + h + 3 for b in boxes):
            continue
        if c == 0:
            cv2.ellipse(img, (x + w // 2, y + h // 2), (w // 2, h // 2), 0, 0, 360, (40, 40, 200), -1)
            cv2.circle(img, (x + w // 2, y + 2), 2, (60, 170, 230), -1)
        else:
            colour = [int(v) for v in rng.integers(30, 240, 3)]
            cv2.rectangle(img, (x, y), (x + w - 1, y + h - 1), colour, -1)
            cv2.rectangle(img, (x + 2, y + 2), (x + w - 3, y + h - 3), (40, 40, 40) if c == 1 else (200, 200, 200), 1)
        boxes.append([float(x), float(y), float(x + w), float(y + h)])
        classes.append(c)
    return img, boxes, classes


def batch_of(scenes):
    n = max(len(b) for _, b, _ in scenes)
    labels = torch.zeros(len(scenes), n, 1, dtype=torch.long)
    boxes = torch.zeros(len(scenes), n, 4)
    mask = torch.zeros(len(scenes), n, 1)
    for i, (_, b, c) in enumerate(scenes):
        boxes[i, : len(b)] = torch.tensor(b)
        labels[i, : len(b), 0] = torch.tensor(c)
        mask[i, : len(b)] = 1
    rgb = np.stack([cv2.cvtColor(im, cv2.COLOR_BGR2RGB) for im, _, _ in scenes])
    images = torch.from_numpy(rgb.transpose(0, 3, 1, 2).astype(np.float32) / 255)
    return {"images": images, "gt_labels": labels, "gt_boxes": boxes, "pad_mask": mask}


def train_predictor(steps: int = 240, threshold: float = 0.4) -> DetPredictor:
    """SOD-S trained for ``steps`` iterations on eight generated scenes (seeded), as a predictor at SIZE x SIZE."""
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    train = [scene(rng, 25) for _ in range(8)]
    spec = dataclasses.replace(get_spec("PP-YOLOE_plus_SOD-S").with_classes(CLASSES), input_size=(SIZE, SIZE))
    trainer = Trainer.build(build_model(spec), 0.01, iters_per_epoch=1, warmup_iters=20, cosine_epochs=10_000)
    for i in range(steps):
        idx = rng.choice(len(train), 4, replace=False)
        loss = trainer.step(batch_of([train[j] for j in idx]), i)["loss"]
        if i % 20 == 0:
            print(f"step {i}: loss {loss:.3f}", flush=True)
    model = build_model(spec)
    model.load_state_dict(trainer.ema.state_dict_for_export())
    model.eval()
    return DetPredictor(model, TorchBackend(model, torch.device("cpu")), spec.name, spec.classes, spec.input_size,
                        threshold=threshold)


def main(steps: int = 240, out: Path = ROOT / "docs" / "images" / "example_result.png") -> None:
    predictor = train_predictor(steps)
    test_image, _, _ = scene(np.random.default_rng(123), 25)  # not one of the training scenes
    result = next(iter(predictor.predict(test_image)))
    print(f"{len(result['boxes'])} boxes above 0.4")
    big = cv2.resize(test_image, (SIZE * 2, SIZE * 2), interpolation=cv2.INTER_NEAREST)
    scaled = dict(result)
    scaled["boxes"] = [dict(b, coordinate=[v * 2 for v in b["coordinate"]]) for b in result["boxes"]]
    from ppyoloe_sod.draw import draw_detections
    out.parent.mkdir(parents=True, exist_ok=True)
    draw_detections(cv2.cvtColor(big, cv2.COLOR_BGR2RGB), scaled["boxes"]).save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
