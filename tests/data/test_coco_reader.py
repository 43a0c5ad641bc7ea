"""The COCO reader's PaddleDetection rules, on hand-made jsons (the ppdet comparison is in test_coco_oracle)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from data_synth import draw_image
from ppyoloe_sod.data.coco import load_coco, read_coco, size_bucket, structure_problems
from ppyoloe_sod.errors import DatasetError


def _ann(aid, iid, cid, bbox, **kw):
    return {"id": aid, "image_id": iid, "category_id": cid, "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": 0,
            **kw}


@pytest.fixture
def dataset(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        draw_image(tmp_path / "images" / name, 64, 48)
    data = {
        # Unsorted category ids: class ids must follow this order (ppdet / pycocotools getCatIds), not sorted ids.
        "categories": [{"id": 7, "name": "van"}, {"id": 2, "name": "car"}, {"id": 30, "name": "bus"}],
        "images": [
            {"id": 9, "file_name": "a.jpg", "width": 64, "height": 48},
            {"id": 3, "file_name": "b.jpg", "width": 64, "height": 48},
            {"id": 5, "file_name": "c.jpg", "width": 64, "height": 48},  # only unusable boxes
            {"id": 6, "file_name": "missing.jpg", "width": 64, "height": 48},
            {"id": 4, "file_name": "d.jpg", "width": 64, "height": 48},  # no annotation at all
        ],
        "annotations": [
            _ann(1, 9, 2, [1.23456, 2.0, 10.0, 5.5]),
            _ann(2, 9, 30, [20, 20, 4, 4]),
            _ann(3, 3, 7, [0, 0, 8, 8]),
            _ann(4, 3, 2, [5, 5, 6, 6], iscrowd=1),
            _ann(5, 5, 2, [5, 5, 0, 6]),  # zero width
            _ann(6, 5, 2, [5, 5, 1e-6, 6]),  # width below 1e-5
            _ann(7, 5, 7, [0, 0, 0, 0]),  # all-zero box
            _ann(8, 5, 7, [3, 3, 4, 4], ignore=1),
            {**_ann(9, 5, 7, [3, 3, 4, 4]), "area": 0},  # area 0
        ],
        "ignored_regions": [{"id": 1, "image_id": 3, "bbox": [40, 30, 10, 8]}],
    }
    path = tmp_path / "annotations" / "instance_val.json"
    path.parent.mkdir()
    path.write_text(json.dumps(data))
    return tmp_path, path


def test_training_rules(dataset):
    root, path = dataset
    d = read_coco(path, root / "images")
    assert d.cat_ids == [7, 2, 30] and d.class_names == ["van", "car", "bus"]
    assert d.catid2clsid == {7: 0, 2: 1, 30: 2}
    # Sorted by image id; c (only unusable boxes), d (none) and the missing file are dropped.
    assert [r.image_id for r in d.records] == [3, 9]
    assert d.skipped_images == 3
    b, a = d.records
    assert b.boxes.dtype == np.float32 and b.classes.dtype == np.int64
    np.testing.assert_array_equal(b.boxes, [[0, 0, 8, 8]])  # the crowd box is gone
    np.testing.assert_array_equal(b.classes, [0])
    np.testing.assert_allclose(a.boxes, [[1.235, 2, 11.235, 7.5], [20, 20, 24, 24]])  # rounded to 3 decimals
    np.testing.assert_array_equal(a.classes, [1, 2])
    assert (a.width, a.height, a.file_name) == (64, 48, "a.jpg")
    assert a.image_path == str(root / "images" / "a.jpg")
    np.testing.assert_array_equal(b.ignored_boxes, [[40, 30, 50, 38]])
    assert a.ignored_boxes.shape == (0, 4)


def test_evaluation_keeps_images_without_boxes(dataset):
    root, path = dataset
    d = read_coco(path, root / "images", allow_empty=True)
    assert [r.image_id for r in d.records] == [3, 4, 5, 9]
    empty = d.records[1]
    assert empty.boxes.shape == (0, 4) and empty.classes.shape == (0,)


def test_size_buckets_follow_coco_limits():
    assert [size_bucket(a) for a in (0, 1023.9, 1024, 9215.9, 9216, 1e6)] == [
        "small", "small", "medium", "medium", "large", "large"]


@pytest.mark.parametrize("text, frag", [
    ('{"images": [}', "malformed json at line 1"),
    ('[1, 2]', "top level must be a json object"),
])
def test_malformed_files(tmp_path, text, frag):
    p = tmp_path / "x.json"
    p.write_text(text)
    with pytest.raises(DatasetError, match=frag):
        load_coco(p)


def test_structure_problems_are_all_listed():
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10},
                   {"id": 1, "file_name": "b.jpg", "width": 10},
                   {"id": "3", "file_name": "c.jpg", "width": 10, "height": -2}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 5, "bbox": [0, 0, 1, 1], "area": 1, "iscrowd": 0},
                        {"id": 1, "image_id": 8, "category_id": 1, "bbox": [0, 0, 1], "area": 1, "iscrowd": 0},
                        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}],
        "categories": [{"id": 1, "name": "car"}],
        "ignored_regions": [{"image_id": 99, "bbox": [0, 0, 1, 1]}],
    }
    msgs = [str(p) for p in structure_problems(data, "f.json")]
    expected = [
        "image #1 is missing key 'height'",
        "image #2 has an invalid 'id': '3'",
        "image #2 has an invalid 'height': -2",
        "image id 1 is used 2 times",
        "annotation #1 has an invalid 'bbox': [0, 0, 1]",
        "annotation #2 is missing key 'area'",
        "annotation #2 is missing key 'iscrowd'",
        "annotation id 1 is used 2 times",
        "category_id 5 is not in 'categories'",
        "image_id 8 is not in 'images'",
        "ignored_regions[0] refers to image_id 99",
    ]
    for frag in expected:
        assert any(frag in m for m in msgs), (frag, msgs)
    assert all(m.startswith("f.json") for m in msgs)


def test_missing_top_level_key():
    msgs = [str(p) for p in structure_problems({"images": [], "annotations": []}, "f.json")]
    assert msgs == ["f.json: missing top-level key 'categories'"]


def test_reader_refuses_invalid_json_with_every_problem(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "width": 4, "height": 4}],
                             "annotations": [_ann(1, 1, 3, [0, 0, 1, 1]), _ann(2, 1, 4, [0, 0, 1, 1])],
                             "categories": [{"id": 1, "name": "car"}]}))
    with pytest.raises(DatasetError) as ei:
        read_coco(p, tmp_path)
    assert "category_id 3" in str(ei.value) and "category_id 4" in str(ei.value)
    assert len(ei.value.problems) == 2


def test_reader_with_no_usable_image(tmp_path):
    p = tmp_path / "empty.json"
    p.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "car"}]}))
    with pytest.raises(DatasetError, match="no usable image"):
        read_coco(p, tmp_path)
