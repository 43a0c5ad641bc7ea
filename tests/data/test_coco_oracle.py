"""read_coco against PaddleDetection's COCODataSet on the same generated json (training and evaluation modes)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from data_synth import draw_image
from ppyoloe_sod.data.coco import read_coco


def _random_json(rng: np.random.Generator, n_images: int = 16) -> dict:
    cats = [{"id": int(c), "name": f"c{c}"} for c in (12, 3, 40, 7)]  # deliberately unsorted
    images, anns = [], []
    for k in range(n_images):
        iid = int(rng.integers(1, 10_000)) * 100 + k  # unique, unordered
        images.append({"id": iid, "file_name": f"im{k}.png", "width": 64, "height": 48})
        for _ in range(int(rng.integers(0, 5))):
            x, y = rng.uniform(-2, 60, size=2)
            w, h = rng.uniform(0.5, 20), rng.uniform(0.5, 20)
            if rng.random() < 0.3:  # edge widths around PaddleDetection's 1e-5 limit
                w = float(rng.choice([0.0, 1e-6, 3e-5]))
            ann = {"id": len(anns) + 1, "image_id": iid, "category_id": int(rng.choice([12, 3, 40, 7])),
                   "bbox": [float(x), float(y), float(w), float(h)], "area": float(w * h),
                   "iscrowd": int(rng.random() < 0.15)}
            if rng.random() < 0.1:
                ann["ignore"] = 1
            if rng.random() < 0.05:
                ann["bbox"] = [0.0, 0.0, 0.0, 0.0]
            if rng.random() < 0.05:
                ann["area"] = 0.0
            anns.append(ann)
    return {"images": images, "annotations": anns, "categories": cats}


@pytest.mark.oracle
@pytest.mark.parametrize("allow_empty", [False, True])
def test_same_records_as_ppdet(tmp_path, allow_empty):
    from ppdet.data.source.coco import COCODataSet

    data = _random_json(np.random.default_rng(0))
    for im in data["images"]:
        draw_image(tmp_path / "images" / im["file_name"], 64, 48)
    (tmp_path / "ann.json").write_text(json.dumps(data))

    ref = COCODataSet(dataset_dir=str(tmp_path), image_dir="images", anno_path="ann.json",
                      data_fields=["image", "gt_bbox", "gt_class", "is_crowd"], allow_empty=allow_empty)
    ref.parse_dataset()
    ours = read_coco(tmp_path / "ann.json", tmp_path / "images", allow_empty=allow_empty)

    assert ours.catid2clsid == ref.catid2clsid
    ref_by_id = {int(r["im_id"][0]): r for r in ref.roidbs}
    assert sorted(ref_by_id) == [r.image_id for r in ours.records]
    n_boxes = 0
    for rec in ours.records:
        r = ref_by_id[rec.image_id]
        ref_boxes = r.get("gt_bbox", np.zeros((0, 4), np.float32))
        ref_cls = r.get("gt_class", np.zeros((0, 1), np.int32)).reshape(-1)
        np.testing.assert_array_equal(rec.boxes, ref_boxes)
        np.testing.assert_array_equal(rec.classes, ref_cls)
        assert (rec.width, rec.height) == (int(r["w"]), int(r["h"]))
        n_boxes += len(rec.boxes)
    print(f"allow_empty={allow_empty}: {len(ours.records)} images, {n_boxes} boxes, identical to ppdet")
    assert n_boxes > 15  # the random json keeps enough boxes for the comparison to mean something
