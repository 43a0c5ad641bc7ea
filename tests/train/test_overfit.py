"""Evidence that training learns: SOD-S (the real architecture, random init) overfits 4 generated 128 px images
with 12 small objects (10-24 px) through the loop's own step (SGD + warmup + EMA), without augmentation.

The loss must fall block by block, and the exported EMA weights (what training saves) must find the boxes
again: right class, IoU > 0.5, score > 0.3. About 40 s on one shared core (90 steps of batch 4 at 128 px).
"""
from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest
import torch

from ppyoloe_sod import boxes as box_ops
from ppyoloe_sod.eval.evaluate import evaluate
from ppyoloe_sod.train.detect import make_detect_fn
from ppyoloe_sod.train.engine import Trainer
from ppyoloe_sod.models import build_model
from ppyoloe_sod.zoo import get_spec

from train_synth import CLASSES, draw_image

SIZE, IMAGES, STEPS, BLOCK = 128, 4, 90, 18


def _batch(folder):
    """The images as a tensor batch and as a COCO val set on disk (for the evaluation the loop runs)."""
    rng = np.random.default_rng(0)
    images, gts, coco_images, anns = [], [], [], []
    for i in range(IMAGES):
        im, boxes, classes = draw_image(rng, SIZE, 3, 10, 24)
        images.append(cv2.cvtColor(im, cv2.COLOR_BGR2RGB))
        gts.append((boxes, classes))
        cv2.imwrite(str(folder / f"{i}.png"), im)
        coco_images.append({"id": i + 1, "file_name": f"{i}.png", "width": SIZE, "height": SIZE})
        for b, c in zip(boxes, classes):
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": c + 1, "iscrowd": 0,
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": (b[2] - b[0]) * (b[3] - b[1])})
    (folder / "val.json").write_text(json.dumps({"images": coco_images, "annotations": anns, "categories": [
        {"id": i + 1, "name": n} for i, n in enumerate(CLASSES)]}))
    n = max(len(b) for b, _ in gts)
    labels = torch.zeros(IMAGES, n, 1, dtype=torch.long)
    boxes = torch.zeros(IMAGES, n, 4)
    mask = torch.zeros(IMAGES, n, 1)
    for i, (b, c) in enumerate(gts):
        boxes[i, : len(b)] = torch.tensor(b)
        labels[i, : len(b), 0] = torch.tensor(c)
        mask[i, : len(b)] = 1
    x = torch.from_numpy(np.stack(images).transpose(0, 3, 1, 2).astype(np.float32) / 255)
    return {"images": x, "gt_labels": labels, "gt_boxes": boxes, "pad_mask": mask}, gts


def _recovered(model, batch, gts, score=0.3):
    model.eval()
    with torch.no_grad():
        raw = model(batch["images"])
    points, strides = model.anchors(SIZE, SIZE)
    dets = box_ops.postprocess(raw.cls_logits, raw.reg_logits, points, strides, model.proj, torch.ones(IMAGES, 2))
    hits, total, false_pos = 0, 0, 0
    for d, (boxes, classes) in zip(dets, gts):
        d = d[d[:, 1] > score]
        matched = torch.zeros(len(d), dtype=torch.bool)
        for b, c in zip(boxes, classes):
            total += 1
            same = d[:, 0] == c
            if same.any():
                iou = box_ops.box_iou(torch.tensor([b]), d[:, 2:])[0]
                iou[~same] = 0
                if float(iou.max()) > 0.5:
                    hits += 1
                    matched[int(iou.argmax())] = True
        false_pos += int((~matched).sum())
    return hits, total, false_pos


@pytest.mark.slow
def test_sod_s_overfits_small_objects(tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        batch, gts = _batch(tmp_path)
        torch.manual_seed(0)
        spec = get_spec("PP-YOLOE_plus_SOD-S").with_classes(CLASSES)
        spec = dataclasses.replace(spec, input_size=(SIZE, SIZE))  # evaluated at the size it was trained at
        trainer = Trainer.build(build_model(spec), 0.01, iters_per_epoch=1, warmup_iters=10,
                                cosine_epochs=10_000)
        losses = [trainer.step(batch, i)["loss"] for i in range(STEPS)]
        blocks = [float(np.mean(losses[i: i + BLOCK])) for i in range(0, STEPS, BLOCK)]
        print("loss per block of", BLOCK, "steps:", [round(b, 3) for b in blocks])
        assert all(b < a for a, b in zip(blocks, blocks[1:])), f"loss did not fall steadily: {blocks}"
        assert blocks[-1] < 0.35 * blocks[0]

        ema_model = build_model(spec)
        ema_model.load_state_dict(trainer.ema.state_dict_for_export())
        hits, total, false_pos = _recovered(ema_model, batch, gts)
        print(f"EMA weights: {hits}/{total} boxes recovered (class, IoU > 0.5, score > 0.3), "
              f"{false_pos} unmatched detections")
        assert total == 12 and hits >= 10
        assert false_pos <= total // 2

        # The loop's evaluation path (predictor preprocessing from BGR files, NMS, COCO metrics) agrees.
        report = evaluate(make_detect_fn(ema_model), tmp_path / "val.json", tmp_path, batch_size=2, plot=False,
                          progress=False, verbose=False)
        print("COCO metrics of the EMA weights on the training images:",
              {k: round(report["metrics"][k], 3) for k in ("AP", "AP50")})
        assert report["metrics"]["AP50"] > 0.7
    finally:
        torch.set_num_threads(before)
