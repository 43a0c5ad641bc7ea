"""All six source formats through check_dataset (convert -> check), as the CLI runs them."""
from __future__ import annotations

import json

import pytest
from data_synth import boxes_by_file, scene, truth_by_file, write_labelme, write_visdrone, write_voc, write_yolo
from ppyoloe_sod.data.check_dataset import run_check_dataset

WRITERS = {
    "VOC": write_voc,
    "VOCWithUnlabeled": write_voc,
    "LabelMe": write_labelme,
    "LabelMeWithUnlabeled": write_labelme,
    "VisDrone": write_visdrone,
    "YOLO": lambda root, tr, va: write_yolo(root, tr, va, classes=["car", "pedestrian", "van"]),
}


@pytest.mark.parametrize("src", list(WRITERS))
def test_convert_then_check(tmp_path, src):
    root = tmp_path / "ds"
    imgs = scene(5)
    WRITERS[src](root, imgs[:3], imgs[3:])
    if src.endswith("WithUnlabeled"):
        (root / "unlabeled.txt").write_text("images/u.jpg\n")
    res = run_check_dataset(str(root), str(tmp_path / "out"), convert_enable=True, src_dataset_type=src,
                            split_enable=False, train_percent=None, val_percent=None)
    assert res["check_pass"] is True, res.get("problems")
    assert (res["attributes"]["train_samples"], res["attributes"]["val_samples"]) == (3, 2)
    n_classes = 10 if src == "VisDrone" else 3
    assert res["attributes"]["num_classes"] == n_classes
    total = {}
    for split in ("train", "val"):
        total.update(boxes_by_file(json.loads((root / "annotations" / f"instance_{split}.json").read_text()), 3))
    assert total == truth_by_file(imgs)
    counts = {}
    for split in ("train", "val"):
        for name, n in res["analysis"]["instances"][split].items():
            counts[name] = counts.get(name, 0) + n
    expected = {}
    for im in imgs:
        for o in im.objects:
            expected[o.label] = expected.get(o.label, 0) + 1
    assert {k: v for k, v in counts.items() if v} == expected
    if src.endswith("WithUnlabeled"):
        assert (root / "annotations" / "unlabeled.txt").read_text() == "images/u.jpg\n"
