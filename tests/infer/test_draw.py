"""draw_detections: class colours, labels inside the image, the input left untouched."""
import numpy as np
from PIL import Image

from ppyoloe_sod.draw import PALETTE, class_color, draw_detections


def _box(cls_id, coord, score=0.9, label="car"):
    return {"cls_id": cls_id, "label": label, "score": score, "coordinate": coord}


def test_box_outline_uses_class_colour_and_input_is_not_modified():
    img = np.zeros((200, 300, 3), np.uint8)
    before = img.copy()
    out = draw_detections(img, [_box(3, [100, 120, 160, 180])])
    assert isinstance(out, Image.Image) and out.size == (300, 200) and out.mode == "RGB"
    np.testing.assert_array_equal(img, before)
    arr = np.asarray(out)
    # The bottom edge of the box (no label there) is in class 3's colour; the box interior stays black.
    assert tuple(arr[180, 130]) == PALETTE[3]
    assert tuple(arr[150, 130]) == (0, 0, 0)


def test_colour_depends_on_class_id_not_order():
    img = np.zeros((100, 100, 3), np.uint8)
    a = np.asarray(draw_detections(img, [_box(7, [10, 50, 40, 90])]))
    b = np.asarray(draw_detections(img, [_box(1, [60, 50, 90, 90]), _box(7, [10, 50, 40, 90])]))
    assert tuple(a[90, 25]) == tuple(b[90, 25]) == class_color(7)
    assert class_color(27) == class_color(7)


def test_label_stays_inside_image_at_every_edge():
    # A box touching the top-right corner: the label cannot go above it nor run off the right edge.
    img = np.zeros((120, 160, 3), np.uint8)
    out = np.asarray(draw_detections(img, [_box(0, [150, 0, 160, 8], label="awning-tricycle")]))
    red = np.all(out == PALETTE[0], axis=-1)
    ys, xs = np.nonzero(red)
    # The filled label background is wide (text) and starts well left of the box so it fits.
    assert xs.max() <= 159 and xs.min() < 100
    assert ys.min() >= 0 and ys.max() < 60


def test_label_goes_above_box_when_room():
    img = np.zeros((300, 300, 3), np.uint8)
    out = np.asarray(draw_detections(img, [_box(0, [100, 200, 140, 240])]))
    red_rows = np.nonzero(np.all(out == PALETTE[0], axis=-1)[:, 120])[0]
    assert red_rows.min() < 200  # label background above the box's top edge


def test_ground_truth_without_score_and_empty_list():
    img = np.full((64, 64, 3), 50, np.uint8)
    np.testing.assert_array_equal(np.asarray(draw_detections(img, [])), img)
    out = np.asarray(draw_detections(img, [_box(2, [5, 30, 40, 60], score=None, label="bicycle")]))
    assert np.any(np.all(out == PALETTE[2], axis=-1))


def test_accepts_pil_image():
    out = draw_detections(Image.new("L", (50, 40), 0), [_box(4, [5, 20, 30, 35])])
    assert out.mode == "RGB" and out.size == (50, 40)
