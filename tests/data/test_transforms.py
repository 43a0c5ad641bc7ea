"""Per-sample augmentations keep boxes on their objects (colour checks on drawn rectangles), stay inside the
image, handle images without boxes, and the colour ops do what the reference's formulas say."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from aug_synth import COLOURS, check_box_colours, check_inside, default_scene, scene
from ppyoloe_sod.data.transforms import (EXPAND_FILL, RESIZE_INTERPS, CropConfig, DistortConfig, crop_boxes,
                                         random_crop, random_distort, random_expand, random_flip, resize_sample,
                                         train_augment)

SEEDS = range(60)
OFF = (0.0, 0.0, 1.0)  # an op that is always skipped (the uniform draw is always < 1)


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_flip_keeps_objects_and_mirrors_exactly():
    img, boxes, classes = default_scene()
    flipped = 0
    for s in SEEDS:
        out, ob = random_flip(img, boxes, rng(s))
        assert out.dtype == np.float32 and out.shape == img.shape
        check_inside(ob, *img.shape[:2])
        assert check_box_colours(out, ob, classes) == 3
        if not np.array_equal(ob, boxes):
            flipped += 1
            np.testing.assert_array_equal(out, img[:, ::-1].astype(np.float32))
            np.testing.assert_array_equal(ob[:, [0, 2]], img.shape[1] - boxes[:, [2, 0]])
        else:
            np.testing.assert_array_equal(out, img.astype(np.float32))
    assert 15 < flipped < 45, flipped  # p = 0.5 over 60 draws


def test_expand_keeps_objects_and_fills_the_rest():
    img, boxes, classes = default_scene(48, 64)
    expanded = 0
    for s in SEEDS:
        out, ob = random_expand(img, boxes, rng(s))
        h, w = out.shape[:2]
        check_inside(ob, h, w)
        assert check_box_colours(out, ob, classes) == 3
        if (h, w) == img.shape[:2]:
            np.testing.assert_array_equal(ob, boxes)
            continue
        expanded += 1
        assert img.shape[0] < h <= 4 * img.shape[0] and img.shape[1] < w <= 4 * img.shape[1]
        dx, dy = ob[0, 0] - boxes[0, 0], ob[0, 1] - boxes[0, 1]
        np.testing.assert_array_equal(ob - boxes, np.tile([dx, dy], 2)[None].repeat(3, 0))
        x, y = int(dx), int(dy)
        np.testing.assert_array_equal(out[y:y + 48, x:x + 64], img.astype(np.float32))
        mask = np.ones((h, w), bool)
        mask[y:y + 48, x:x + 64] = False
        np.testing.assert_allclose(out[mask], np.broadcast_to(np.float32(EXPAND_FILL), (mask.sum(), 3)))
    assert 15 < expanded < 45, expanded


def test_crop_keeps_objects_clips_boxes_and_keeps_centred_ones():
    img, boxes, classes = default_scene()
    cropped = 0
    for s in range(120):
        out, ob, oc = random_crop(img, boxes, classes, rng(s))
        h, w = out.shape[:2]
        assert ob.dtype == np.float32 and oc.dtype == np.int64 and len(ob) == len(oc) >= 1
        check_inside(ob, h, w)
        check_box_colours(out, ob, oc)  # the class colour is under every kept (clipped) box
        if out.shape == img.shape:
            continue
        cropped += 1
        # Locate the window in the original image and re-derive which boxes the centre rule keeps.
        assert 0.3 * 0.7 * min(img.shape[:2]) <= min(h, w)
        found = np.argwhere(np.all(_windows(img, h, w) == out, axis=(2, 3, 4)))
        assert len(found) >= 1
        y0, x0 = found[0]
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        inside = np.all((centres >= [x0, y0]) & (centres < [x0 + w, y0 + h]), axis=1)
        np.testing.assert_array_equal(oc, classes[inside])
    assert cropped > 60, cropped  # 6 of 7 thresholds crop (0 always finds a window)


def _windows(img: np.ndarray, h: int, w: int) -> np.ndarray:
    return np.lib.stride_tricks.sliding_window_view(img.astype(np.float32), (h, w, 3))[:, :, 0]


def test_crop_boxes_rule_on_hand_cases():
    boxes = np.array([[0, 0, 10, 10], [18, 18, 30, 30], [25, 5, 29, 9], [5, 5, 15, 15]], np.float32)
    out, keep = crop_boxes(boxes, np.array([5, 5, 25, 25], np.float32))
    # box 0: centre (5, 5) on the inclusive edge -> kept; box 1 centre (24, 24) kept and clipped;
    # box 2 centre (27, 7) outside; box 3 fully inside.
    np.testing.assert_array_equal(keep, [0, 1, 3])
    np.testing.assert_array_equal(out[keep], [[0, 0, 5, 5], [13, 13, 20, 20], [0, 0, 10, 10]])
    _, keep = crop_boxes(np.array([[0, 0, 10, 10]], np.float32), np.array([0, 0, 5, 5], np.float32))
    assert keep.size == 0  # centre (5, 5) is on the exclusive edge


def test_crop_high_threshold_only_keeps_large_overlap():
    img, boxes, classes = scene(100, 100, [[10, 10, 90, 90]], [3])
    cfg = CropConfig(thresholds=(0.9,), allow_no_crop=False)
    cropped = 0
    for s in range(100):
        out, ob, _ = random_crop(img, boxes, classes, rng(s), cfg)
        if out.shape != img.shape:
            cropped += 1
            # The window had IoU >= 0.9 with the box, so the kept box covers most of the window.
            area = (ob[0, 2] - ob[0, 0]) * (ob[0, 3] - ob[0, 1])
            assert area / (out.shape[0] * out.shape[1]) > 0.85
    assert cropped >= 5, cropped  # the check above must actually run (13 of these 100 seeds find a window)


@pytest.mark.parametrize("fn", ["flip", "expand", "crop", "augment"])
def test_zero_box_images(fn):
    img, boxes, classes = scene(40, 50, [], [])
    assert boxes.shape == (0, 4) and classes.shape == (0,)
    for s in range(10):
        r = rng(s)
        if fn == "flip":
            out, ob = random_flip(img, boxes, r)
        elif fn == "expand":
            out, ob = random_expand(img, boxes, r)
        elif fn == "crop":
            out, ob, oc = random_crop(img, boxes, classes, r)
            np.testing.assert_array_equal(out, img)  # nothing to keep, so never cropped
            assert oc.shape == (0,)
        else:
            out, ob, oc = train_augment(img, boxes, classes, r)
            assert oc.shape == (0,) and oc.dtype == np.int64
        assert ob.shape == (0, 4) and out.ndim == 3 and out.shape[2] == 3


def test_train_augment_equals_the_four_steps_in_turn():
    img, boxes, classes = default_scene(48, 64)
    for s in range(40):
        r = rng(s)
        a = random_distort(img, r)
        a, b = random_expand(a, boxes, r)
        a, b, c = random_crop(a, b, classes, r)
        a, b = random_flip(a, b, r)
        out, ob, oc = train_augment(img, boxes, classes, rng(s))
        # train_augment colours only the cropped part: OpenCV's vector and scalar loops round differently.
        np.testing.assert_allclose(out, a, rtol=0, atol=1e-4)
        np.testing.assert_array_equal(ob, b)
        np.testing.assert_array_equal(oc, c)


def test_train_augment_boxes_stay_on_their_distorted_colour():
    img, boxes, classes = default_scene()
    checked = 0
    for s in range(60):
        out, ob, oc = train_augment(img, boxes, classes, rng(s))
        check_inside(ob, *out.shape[:2])
        # Distortion is the first step and acts per pixel: the same draws on a strip of the class colours
        # give the colour each object must have now.
        colours = random_distort(COLOURS[None].copy(), rng(s))[0]
        checked += check_box_colours(out, ob, oc, colours=colours, atol=1e-3)
    assert checked > 60


def test_distort_brightness_adds_and_contrast_scales():
    img = np.random.default_rng(0).integers(0, 256, (8, 9, 3)).astype(np.uint8)
    f = img.astype(np.float32)
    applied = 0
    for s in range(100):
        out = random_distort(img, rng(s), DistortConfig(contrast=OFF, saturation=OFF, hue=OFF))
        d = out - f
        assert np.ptp(d) < 1e-4
        if d.flat[0] != 0:
            applied += 1
            assert 0.5 <= d.flat[0] <= 1.5  # the reference adds the "brightness" factor to 0..255 pixels
        out = random_distort(img, rng(s), DistortConfig(brightness=OFF, saturation=OFF, hue=OFF))
        nz = f > 0
        ratio = out[nz] / f[nz]
        assert np.ptp(ratio) < 1e-5 and 0.5 <= ratio[0] <= 1.5
    assert 30 < applied < 70, applied  # each op with probability 0.5


def test_distort_saturation_keeps_grey_and_luma():
    img = np.random.default_rng(1).integers(0, 256, (8, 9, 3)).astype(np.uint8)
    img[0, 0] = (77, 77, 77)
    luma = img.astype(np.float32) @ np.float32([0.299, 0.587, 0.114])
    changed = 0
    for s in range(40):
        out = random_distort(img, rng(s), DistortConfig(brightness=OFF, contrast=OFF, hue=OFF))
        np.testing.assert_allclose(out[0, 0], 77, atol=1e-3)
        np.testing.assert_allclose(out @ np.float32([0.299, 0.587, 0.114]), luma, atol=1e-2)
        changed += not np.allclose(out, img)
    assert changed > 10


def test_distort_hue_rotates_chroma_and_keeps_luma_roughly():
    img = np.random.default_rng(2).integers(0, 256, (8, 9, 3)).astype(np.uint8)
    img[0, 0] = (100, 100, 100)
    f = img.astype(np.float32)
    luma = f @ np.float32([0.299, 0.587, 0.114])
    for s in range(40):
        out = random_distort(img, rng(s), DistortConfig(brightness=OFF, contrast=OFF, saturation=OFF))
        # The YIQ matrices are 3-decimal approximations, so grey and luma are preserved to ~1 level.
        np.testing.assert_allclose(out[0, 0], 100, atol=1.0)
        np.testing.assert_allclose(out @ np.float32([0.299, 0.587, 0.114]), luma, atol=1.5)
        # Chroma magnitude (I, Q) is preserved by a rotation.
        iq = np.array([[0.596, -0.274, -0.321], [0.211, -0.523, 0.311]], np.float32)
        np.testing.assert_allclose(np.linalg.norm(out @ iq.T, axis=-1), np.linalg.norm(f @ iq.T, axis=-1),
                                   rtol=0.02, atol=1.5)


def test_distort_is_deterministic_per_generator():
    img, _, _ = default_scene(16, 16)
    a = random_distort(img, rng(5))
    np.testing.assert_array_equal(a, random_distort(img, rng(5)))
    assert any(not np.array_equal(a, random_distort(img, rng(s))) for s in range(6, 10))
    assert a.dtype == np.float32 and a.shape == img.shape


@pytest.mark.parametrize("interp", RESIZE_INTERPS)
@pytest.mark.parametrize("size", [64, 96, 160])
def test_resize_scales_boxes_onto_their_objects(size, interp):
    img, boxes, classes = scene(72, 120, [[6, 6, 46, 40], [60, 30, 110, 70]], [0, 4])
    out, ob = resize_sample(img.astype(np.float32), boxes, size, interp)
    assert out.shape == (size, size, 3) and out.dtype == np.float32
    np.testing.assert_allclose(ob, boxes * np.float32([size / 120, size / 72] * 2), rtol=1e-6)
    # Interpolation blends across object edges (Lanczos-4 rings over 4 source pixels): skip that border, in
    # output pixels (exact for nearest).
    margin = 0 if interp == cv2.INTER_NEAREST else math.ceil(4 * max(1.0, size / 72))
    assert check_box_colours(out, ob, classes, margin=margin, atol=1.0 if margin else 1e-3) == 2


def test_resize_clips_boxes_to_the_image():
    boxes = np.array([[-5, -5, 30, 30], [50, 50, 90, 70]], np.float32)  # the reference does not clip earlier
    _, ob = resize_sample(np.zeros((60, 80, 3), np.float32), boxes, 40, cv2.INTER_LINEAR)
    np.testing.assert_allclose(ob, [[0, 0, 15, 20], [25, 33.333332, 40, 40]], rtol=1e-6)
