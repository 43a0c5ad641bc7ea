"""Our training augmentations and batch operators against ppdet 2.6's operators, draw for draw.

ppdet draws from the global ``np.random``; ours from a generator passed in. Handing ours an adapter over the
global legacy generator (``integers`` -> ``randint``) and re-seeding it to the same value before each side runs
makes both consume the same random numbers, so images, boxes and classes must agree for every seed. This
checks the draw order and kinds (probabilities, random op order, threshold shuffle, attempt loop), the box
arithmetic (IoU, centre rule, clipping, offsets, flip, resize scaling) and the pixel ops.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
from ppdet.data.transform.batch_operators import BatchRandomResize, PadGT
from ppdet.data.transform.operators import (NormalizeImage, Permute, RandomCrop, RandomDistort, RandomExpand,
                                            RandomFlip)

from ppyoloe_sod.data.loader import collate_train
from ppyoloe_sod.data.transforms import (EXPAND_FILL, box_iou, crop_boxes, random_crop, random_distort,
                                         random_expand, random_flip, train_augment)

pytestmark = pytest.mark.oracle

SIZES = [64, 96, 128]


class GlobalDraws:
    """Generator-like view of ``np.random``'s global legacy state, for lockstep runs with ppdet."""

    def uniform(self, low=0.0, high=1.0):
        return np.random.uniform(low, high)

    def integers(self, low, high):
        return np.random.randint(low, high)

    def permutation(self, n):
        return np.random.permutation(n)


def _samples() -> list[dict]:
    """Noise images of several sizes with 0-5 boxes (one crossing the border, as unclipped COCO boxes can)."""
    gen = np.random.default_rng(0)
    out = []
    for i, (h, w) in enumerate([(48, 64), (80, 60), (64, 64), (40, 96), (72, 100), (56, 56)]):
        img = gen.integers(0, 256, (h, w, 3), dtype=np.uint8)
        k = i % 6 if i != 5 else 0
        x1 = gen.uniform(0, w * 0.7, k)
        y1 = gen.uniform(0, h * 0.7, k)
        boxes = np.stack([x1, y1, x1 + gen.uniform(2, w * 0.5, k), y1 + gen.uniform(2, h * 0.5, k)], 1)
        if k:
            boxes[0, 2] = w + 3.5  # beyond the right edge
        out.append({"image": img, "gt_bbox": boxes.astype(np.float32).reshape(-1, 4),
                    "gt_class": gen.integers(0, 10, (k, 1)).astype(np.int32)})
    return out


def _ppdet(op, sample: dict, seed: int) -> dict:
    np.random.seed(seed)
    return op(copy.deepcopy(sample))


def _ours(fn, seed: int):
    np.random.seed(seed)
    return fn(GlobalDraws())


def _close_images(a: np.ndarray, b: np.ndarray, atol: float) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    diff = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if a.size else 0.0
    assert diff <= atol, diff
    return diff


def test_distort_matches_ppdet():
    op = RandomDistort()
    worst = 0.0
    for seed in range(60):
        for s in _samples()[:3]:
            ref = _ppdet(op, s, seed)["image"]
            out = _ours(lambda r: random_distort(s["image"], r), seed)
            # ppdet mixes float32 images with a float64 hue matrix; we stay in float32.
            worst = max(worst, _close_images(out, ref, atol=2e-3))
    print(f"RandomDistort: max |ours - ppdet| = {worst:.2e} (0..255 scale)")


def test_expand_matches_ppdet():
    op = RandomExpand(fill_value=list(EXPAND_FILL))
    expanded = 0
    for seed in range(60):
        for s in _samples():
            ref = _ppdet(op, s, seed)
            img, boxes = _ours(lambda r: random_expand(s["image"], s["gt_bbox"], r), seed)
            _close_images(img, ref["image"], atol=0.0)
            np.testing.assert_array_equal(boxes, ref["gt_bbox"])
            expanded += img.shape != s["image"].shape
    assert expanded > 50
    print(f"RandomExpand: identical images and boxes on 360 draws ({expanded} expanded)")


def test_crop_matches_ppdet():
    op = RandomCrop()
    cropped = 0
    for seed in range(80):
        for s in _samples():
            ref = _ppdet(op, s, seed)
            img, boxes, classes = _ours(
                lambda r: random_crop(s["image"], s["gt_bbox"], s["gt_class"][:, 0].astype(np.int64), r), seed)
            _close_images(img, ref["image"], atol=0.0)
            np.testing.assert_array_equal(boxes, ref["gt_bbox"])
            np.testing.assert_array_equal(classes, ref["gt_class"][:, 0])
            cropped += img.shape != s["image"].shape
    assert cropped > 200
    print(f"RandomCrop: identical on 480 draws ({cropped} cropped)")


def test_crop_box_math_matches_ppdet_on_fixed_windows():
    gen = np.random.default_rng(5)
    op = RandomCrop()
    worst = 0.0
    for t in range(200):
        # Integer corners half of the time, so that centres fall exactly on window edges.
        xy = gen.uniform(-10, 90, (12, 2)) if t % 2 else gen.integers(-10, 90, (12, 2)).astype(np.float64)
        wh = gen.uniform(0, 40, (12, 2)) if t % 2 else 2.0 * gen.integers(0, 20, (12, 2))
        boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        x, y = gen.integers(0, 60, 2)
        window = np.array([x, y, x + gen.integers(1, 60), y + gen.integers(1, 60)], np.float32)
        ours, keep = crop_boxes(boxes, window)
        ref, ref_keep = op._crop_box_with_center_constraint(boxes, window)
        np.testing.assert_array_equal(keep, ref_keep)
        np.testing.assert_array_equal(ours, ref)
        iou, ref_iou = box_iou(boxes, window[None]), op._iou_matrix(boxes, window[None])
        worst = max(worst, float(np.abs(iou - ref_iou).max()))
    assert worst <= 1e-7
    print(f"crop box math: identical on 200 windows; IoU max diff {worst:.1e}")


def test_flip_matches_ppdet():
    op = RandomFlip()
    for seed in range(30):
        for s in _samples():
            ref = _ppdet(op, s, seed)
            img, boxes = _ours(lambda r: random_flip(s["image"], s["gt_bbox"], r), seed)
            _close_images(img, ref["image"], atol=0.0)
            np.testing.assert_array_equal(boxes, ref["gt_bbox"])


def _chain(s: dict, seed: int) -> dict:
    np.random.seed(seed)
    out = copy.deepcopy(s)
    for op in (RandomDistort(), RandomExpand(fill_value=list(EXPAND_FILL)), RandomCrop(), RandomFlip()):
        out = op(out)
    return out


def test_train_augment_matches_ppdet_chain():
    worst = 0.0
    for seed in range(60):
        for s in _samples():
            ref = _chain(s, seed)
            img, boxes, classes = _ours(
                lambda r: train_augment(s["image"], s["gt_bbox"], s["gt_class"][:, 0], r), seed)
            worst = max(worst, _close_images(img, ref["image"], atol=2e-3))
            np.testing.assert_array_equal(boxes, ref["gt_bbox"])
            np.testing.assert_array_equal(classes, ref["gt_class"][:, 0])
    print(f"Distort+Expand+Crop+Flip: boxes/classes identical, image max diff {worst:.2e} (0..255)")


def test_batch_operators_match_ppdet():
    resize = BatchRandomResize(target_size=SIZES, keep_ratio=False, random_size=True, random_interp=True)
    norm = NormalizeImage(mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0], norm_type="none")
    permute, pad = Permute(), PadGT()
    base = _samples()
    worst, seen, uint8_inputs = 0.0, set(), 0
    for seed in range(40):
        batch = [_chain(s, 1000 + seed + i) for i, s in enumerate(base[seed % 3:seed % 3 + 3])]
        ref = copy.deepcopy(batch)
        np.random.seed(seed)
        ref = pad([permute(norm(x)) for x in resize(ref)])
        ours = _ours(lambda r: collate_train(
            [{"image": x["image"].astype(np.float32), "boxes": x["gt_bbox"], "classes": x["gt_class"][:, 0],
              "image_id": i} for i, x in enumerate(batch)], SIZES, r), seed)
        seen.add(ours["images"].shape[-1])
        n_ref = ref[0]["pad_gt_mask"].shape[0]
        for i, x in enumerate(ref):
            # When no op of the chain produced a float image (~3% of samples) ppdet resizes uint8, so OpenCV
            # clamps to 0..255 and rounds (fixed-point for some filters); we resize in float.
            if batch[i]["image"].dtype == np.uint8:
                uint8_inputs += 1
                _close_images(np.clip(ours["images"][i].numpy() * 255, 0, 255), x["image"] * 255, atol=1.0)
            else:
                worst = max(worst, _close_images(ours["images"][i].numpy(), x["image"], atol=1e-4))
            if n_ref == 0:  # ppdet keeps n = 0; we pad one masked row
                assert ours["pad_mask"].shape[1] == 1 and float(ours["pad_mask"].sum()) == 0
                continue
            np.testing.assert_array_equal(ours["pad_mask"][i].numpy(), x["pad_gt_mask"])
            np.testing.assert_array_equal(ours["gt_labels"][i].numpy(), x["gt_class"])
            np.testing.assert_allclose(ours["gt_boxes"][i].numpy(), x["gt_bbox"], rtol=1e-6, atol=1e-5)
    assert seen == set(SIZES)
    print(f"BatchRandomResize+Normalize+Permute+PadGT: max image diff {worst:.2e} (0..1 scale, float inputs); "
          f"{uint8_inputs} uint8 inputs within 1 level after clamping")
