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


@pytest.mark.parametrize("src", ["VOC", "YOLO"])
def test_cli_converts_splits_and_checks(tmp_path, src):
    """The PaddleX command line: -o Global.mode=check_dataset with convert and split overrides."""
    from pathlib import Path

    from ppyoloe_sod.__main__ import main

    config = Path(__file__).resolve().parents[2] / "configs" / "PP-YOLOE_plus_SOD-S.yaml"
    root, out = tmp_path / "ds", tmp_path / "out"
    imgs = scene(10)
    WRITERS[src](root, imgs[:6], imgs[6:])
    code = main(["-c", str(config), "-o", "Global.mode=check_dataset", "-o", f"Global.dataset_dir={root}",
                 "-o", f"Global.output={out}", "-o", "CheckDataset.convert.enable=True",
                 "-o", f"CheckDataset.convert.src_dataset_type={src}", "-o", "CheckDataset.split.enable=True",
                 "-o", "CheckDataset.split.train_percent=70", "-o", "CheckDataset.split.val_percent=30"])
    assert code == 0
    report = json.loads((out / "check_dataset_result.json").read_text())
    assert report["check_pass"] is True and report["dataset_type"] == "COCODetDataset"
    assert (report["attributes"]["train_samples"], report["attributes"]["val_samples"]) == (7, 3)
    assert (root / "annotations" / "instance_train.json.bak").is_file()  # the converted originals are kept
    total = {}
    for split in ("train", "val"):
        total.update(boxes_by_file(json.loads((root / "annotations" / f"instance_{split}.json").read_text()), 3))
    assert total == truth_by_file(imgs)
    assert (out / "check_dataset" / "histogram.png").is_file()
