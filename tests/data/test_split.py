"""split_dataset: pooling, percentages, renumbering, backups, and refusals that leave the data alone."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from data_synth import Img, Obj, boxes_by_file, coco_dict, scene, tree_digest, truth_by_file, write_coco_dataset, write_images
from ppyoloe_sod.data import layout
from ppyoloe_sod.data.split import split_dataset, validate_percentages
from ppyoloe_sod.errors import ConfigError, DatasetError


def load(root: Path, split: str, suffix: str = "") -> dict:
    return json.loads((root / "annotations" / f"instance_{split}.json{suffix}").read_text())


def test_split_pools_and_recuts(tmp_path):
    imgs = scene(10)
    write_coco_dataset(tmp_path, imgs[:6], imgs[6:], categories=["car", "pedestrian", "van"])
    old_train = (tmp_path / "annotations" / "instance_train.json").read_bytes()
    old_val = (tmp_path / "annotations" / "instance_val.json").read_bytes()

    summary = split_dataset(tmp_path, 70, 30)

    tr, va = load(tmp_path, "train"), load(tmp_path, "val")
    assert (len(tr["images"]), len(va["images"])) == (7, 3)
    assert (summary["train_images"], summary["val_images"]) == (7, 3)
    # Every image kept once, each with its own boxes.
    got = {**boxes_by_file(tr), **boxes_by_file(va)}
    assert got == truth_by_file(imgs)
    assert not set(boxes_by_file(tr)) & set(boxes_by_file(va))
    ids = [im["id"] for im in tr["images"] + va["images"]]
    assert len(set(ids)) == 10
    for d in (tr, va):
        assert [a["id"] for a in d["annotations"]] == list(range(1, len(d["annotations"]) + 1))
        assert d["categories"] == [{"id": 1, "name": "car"}, {"id": 2, "name": "pedestrian"}, {"id": 3, "name": "van"}]
    assert (tmp_path / "annotations" / "instance_train.json.bak").read_bytes() == old_train
    assert (tmp_path / "annotations" / "instance_val.json.bak").read_bytes() == old_val
    assert sorted(summary["backups"]) == sorted(str(tmp_path / "annotations" / f"instance_{s}.json.bak")
                                                for s in ("train", "val"))


def test_split_is_reproducible_and_keeps_older_backups(tmp_path):
    imgs = scene(8)
    for k in range(2):
        write_coco_dataset(tmp_path / f"d{k}", imgs[:4], imgs[4:])
        split_dataset(tmp_path / f"d{k}", 50, 50)
    assert load(tmp_path / "d0", "train") == load(tmp_path / "d1", "train")
    first_bak = (tmp_path / "d0" / "annotations" / "instance_train.json.bak").read_bytes()
    split_dataset(tmp_path / "d0", 25, 75)
    assert (tmp_path / "d0" / "annotations" / "instance_train.json.bak").read_bytes() == first_bak
    assert (tmp_path / "d0" / "annotations" / "instance_train.json.bak1").exists()
    assert len(load(tmp_path / "d0", "train")["images"]) == 2


def test_split_unions_categories_and_offsets_clashing_image_ids(tmp_path):
    imgs = [Img(f"{k}.jpg", 40, 30, (Obj(label, 1 + k, 2, 9, 9),))
            for k, label in enumerate(["car", "pedestrian", "van", "car"])]
    write_images(tmp_path, imgs)
    (tmp_path / "annotations").mkdir()
    # Both files number their images from 1, and val knows a class train does not use.
    train = coco_dict(imgs[:2], ["car", "pedestrian"])
    val = coco_dict(imgs[2:], ["car", "pedestrian", "van"])
    (tmp_path / "annotations" / "instance_train.json").write_text(json.dumps(train))
    (tmp_path / "annotations" / "instance_val.json").write_text(json.dumps(val))
    split_dataset(tmp_path, 50, 50)
    tr, va = load(tmp_path, "train"), load(tmp_path, "val")
    assert {**boxes_by_file(tr), **boxes_by_file(va)} == truth_by_file(imgs)
    assert sorted(im["id"] for im in tr["images"] + va["images"]) == [1, 2, 3, 4]  # val ids shifted by 2
    assert [c["name"] for c in tr["categories"]] == ["car", "pedestrian", "van"] == [c["name"] for c in va["categories"]]


def test_split_with_only_a_train_file(tmp_path):
    imgs = scene(5)
    write_coco_dataset(tmp_path, imgs, [])
    (tmp_path / "annotations" / "instance_val.json").unlink()
    split_dataset(tmp_path, 80, 20)
    assert (len(load(tmp_path, "train")["images"]), len(load(tmp_path, "val")["images"])) == (4, 1)
    assert not (tmp_path / "annotations" / "instance_val.json.bak").exists()


def test_ignored_regions_move_with_their_image(tmp_path):
    imgs = scene(6)
    write_coco_dataset(tmp_path, imgs[:3], imgs[3:])
    for split in ("train", "val"):
        p = tmp_path / "annotations" / f"instance_{split}.json"
        d = json.loads(p.read_text())
        # One region per image, its x encoding the file it belongs to.
        d["ignored_regions"] = [{"id": k + 1, "image_id": im["id"], "bbox": [int(im["file_name"][4:6]), 0, 2, 2]}
                                for k, im in enumerate(d["images"])]
        p.write_text(json.dumps(d))
    split_dataset(tmp_path, 50, 50)
    for split in ("train", "val"):
        d = load(tmp_path, split)
        names = {im["id"]: im["file_name"] for im in d["images"]}
        assert len(d["ignored_regions"]) == len(d["images"])
        assert [r["id"] for r in d["ignored_regions"]] == list(range(1, len(d["images"]) + 1))
        for r in d["ignored_regions"]:
            assert int(names[r["image_id"]][4:6]) == r["bbox"][0]


@pytest.mark.parametrize("t, v, frag", [
    (60, 30, "sum to 100"), (0, 100, "greater than 0"), (50.5, 49.5, "must be an integer"), (True, 99, "integer"),
    ("80", 20, "integer"),
])
def test_bad_percentages(t, v, frag):
    with pytest.raises(ConfigError, match=frag):
        validate_percentages(t, v)


def test_refusals_leave_the_dataset_alone(tmp_path):
    imgs = scene(3)
    write_coco_dataset(tmp_path, imgs[:2], imgs[2:])
    before = tree_digest(tmp_path)
    with pytest.raises(DatasetError, match="val split would be empty"):
        split_dataset(tmp_path, 99, 1)
    with pytest.raises(ConfigError):
        split_dataset(tmp_path, 99, 2)
    p = tmp_path / "annotations" / "instance_val.json"
    d = json.loads(p.read_text())
    d["categories"][0]["name"] = "truck"  # same id, other name than in train
    p.write_text(json.dumps(d))
    before = tree_digest(tmp_path)
    with pytest.raises(DatasetError, match="make the category lists agree"):
        split_dataset(tmp_path, 50, 50)
    assert tree_digest(tmp_path) == before
    p.write_text("{broken")
    before = tree_digest(tmp_path)
    with pytest.raises(DatasetError, match="malformed json"):
        split_dataset(tmp_path, 50, 50)
    assert tree_digest(tmp_path) == before


def test_nothing_to_split(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match="Nothing to split"):
        split_dataset(tmp_path, 50, 50)


def test_split_keeps_the_files_modes(tmp_path):
    """A 0644 dataset stays 0644 (jsons and their .bak copies) even under a strict umask; a 0640 one stays 0640."""
    imgs = scene(6)
    write_coco_dataset(tmp_path, imgs[:3], imgs[3:])
    ann = tmp_path / "annotations"
    (ann / "instance_train.json").chmod(0o644)
    (ann / "instance_val.json").chmod(0o640)
    old = os.umask(0o077)
    try:
        split_dataset(tmp_path, 50, 50)
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in ann.iterdir()}
    assert modes == {"instance_train.json": 0o644, "instance_train.json.bak": 0o644,
                     "instance_val.json": 0o640, "instance_val.json.bak": 0o640}


def test_split_creates_a_missing_file_with_the_umask(tmp_path):
    imgs = scene(5)
    write_coco_dataset(tmp_path, imgs, [])
    (tmp_path / "annotations" / "instance_val.json").unlink()
    old = os.umask(0o022)
    try:
        split_dataset(tmp_path, 80, 20)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "annotations" / "instance_val.json").stat().st_mode) == 0o644


@pytest.mark.parametrize("fail_from", ["the first write", "the staged files"])
def test_disk_full_during_a_split(tmp_path, monkeypatch, full_disk, fail_from):
    imgs = scene(6)
    write_coco_dataset(tmp_path, imgs[:3], imgs[3:])
    before = tree_digest(tmp_path)
    if fail_from == "the first write":
        full_disk()
        named = r"\.ppyoloe_sod_txn\.json"  # the journal, written before anything else
    else:
        monkeypatch.setattr(layout, "write_file_durably", _full_from_now_on(full_disk, layout.write_file_durably))
        named = r"instance_train\.json\.bak"  # the first staged file: the backup of instance_train.json
    with pytest.raises(DatasetError, match=rf"Cannot write '[^']*{named}': the disk is full.*left as it was"):
        split_dataset(tmp_path, 50, 50)
    monkeypatch.undo()
    assert tree_digest(tmp_path) == before  # no staged file, journal or temporary left


def _full_from_now_on(full_disk, write):
    def first_fill_the_disk(*args):
        full_disk()
        return write(*args)
    return first_fill_the_disk
