"""Converters to COCO: one ground truth written in each format must come back as the same boxes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from data_synth import (VISDRONE, Img, Obj, boxes_by_file, coco_dict, scene, tree_digest, truth_by_file, voc_xml,
                        write_labelme, write_visdrone, write_voc, write_yolo)
from ppyoloe_sod.data.converters import convert_dataset, resolve_source_type
from ppyoloe_sod.errors import ConfigError, DatasetError

WRITERS = {
    "VOC": lambda root, tr, va: write_voc(root, tr, va),
    "LabelMe": lambda root, tr, va: write_labelme(root, tr, va),
    "VisDrone": lambda root, tr, va: write_visdrone(root, tr, va),
    "YOLO": lambda root, tr, va: write_yolo(root, tr, va, classes=["van", "car", "pedestrian"]),
}


def load(root: Path, split: str) -> dict:
    return json.loads((root / "annotations" / f"instance_{split}.json").read_text())


@pytest.mark.parametrize("fmt", list(WRITERS))
def test_each_format_round_trips_the_boxes(tmp_path, fmt):
    imgs = scene(6)
    train, val = imgs[:4], imgs[4:]
    WRITERS[fmt](tmp_path, train, val)
    summary = convert_dataset(tmp_path, fmt)
    tr, va = load(tmp_path, "train"), load(tmp_path, "val")
    # YOLO goes through normalized floats; 1e-3 px is far below any real annotation error.
    assert boxes_by_file(tr, 3) == truth_by_file(train)
    assert boxes_by_file(va, 3) == truth_by_file(val)
    for data, part in ((tr, train), (va, val)):
        sizes = {im["file_name"]: (im["width"], im["height"]) for im in data["images"]}
        assert sizes == {im.name: (im.width, im.height) for im in part}
        assert [a["id"] for a in data["annotations"]] == list(range(1, len(data["annotations"]) + 1))
        assert all(a["iscrowd"] == 0 and a["area"] == pytest.approx(a["bbox"][2] * a["bbox"][3])
                   for a in data["annotations"])
    # One category list for both files; image ids unique across the splits.
    assert tr["categories"] == va["categories"]
    ids = [im["id"] for im in tr["images"] + va["images"]]
    assert len(set(ids)) == len(ids)
    assert summary["train_images"] == 4 and summary["val_images"] == 2
    assert summary["backups"] == []


def test_voc_and_labelme_number_categories_by_first_appearance(tmp_path):
    imgs = scene(6)  # labels in order of appearance: car, pedestrian, van (image 1 brings pedestrian first)
    order = list(dict.fromkeys(o.label for im in imgs for o in im.objects))
    for fmt in ("VOC", "LabelMe"):
        root = tmp_path / fmt
        WRITERS[fmt](root, imgs[:4], imgs[4:])
        convert_dataset(root, fmt)
        assert [c["name"] for c in load(root, "train")["categories"]] == order
        assert [c["id"] for c in load(root, "train")["categories"]] == [1, 2, 3]


def test_fixed_category_lists_for_visdrone_and_yolo(tmp_path):
    imgs = scene(4)
    write_visdrone(tmp_path / "vd", imgs[:3], imgs[3:])
    convert_dataset(tmp_path / "vd", "VisDrone")
    cats = load(tmp_path / "vd", "val")["categories"]
    assert cats == [{"id": i + 1, "name": n} for i, n in enumerate(VISDRONE)]
    write_yolo(tmp_path / "y", imgs[:3], imgs[3:], classes=["a", "van", "car", "pedestrian", "unused"])
    convert_dataset(tmp_path / "y", "yolo")  # the type is case-insensitive
    assert [c["name"] for c in load(tmp_path / "y", "train")["categories"]] == ["a", "van", "car", "pedestrian",
                                                                                 "unused"]


def test_voc_rules(tmp_path):
    img = Img("photo.jpg", 50, 40, (Obj("car", 5, 6, 20, 30),))
    write_voc(tmp_path, [img], [Img("v.png", 30, 30, (Obj("car", 1, 1, 9, 9),))])
    # Inverted corners, an object without bndbox, and a <filename> naming another extension.
    (tmp_path / "annotations" / "photo.xml").write_text(
        "<annotation><filename>photo.bmp</filename><size><width>50</width><height>40</height></size>"
        "<object><name>car</name><bndbox><xmin>20</xmin><ymin>30</ymin><xmax>5</xmax><ymax>6</ymax></bndbox></object>"
        "<object><name>ghost</name></object></annotation>")
    convert_dataset(tmp_path, "VOC")
    tr = load(tmp_path, "train")
    assert tr["images"] == [{"id": 1, "file_name": "photo.jpg", "width": 50, "height": 40}]
    assert [a["bbox"] for a in tr["annotations"]] == [[5.0, 6.0, 15.0, 24.0]]
    assert [c["name"] for c in tr["categories"]] == ["car"]  # the object without a box adds no category


def test_voc_image_found_by_xml_stem_and_missing_images_skipped(tmp_path):
    a, b = Img("a.jpg", 40, 30, (Obj("car", 1, 1, 9, 9),)), Img("b.jpg", 40, 30, (Obj("van", 2, 2, 9, 9),))
    c = Img("c.jpg", 40, 30, (Obj("van", 3, 3, 9, 9),))
    write_voc(tmp_path, [a, b], [c])
    (tmp_path / "annotations" / "a.xml").write_text(voc_xml(a, filename="renamed.jpeg"))
    (tmp_path / "images" / "b.jpg").unlink()
    summary = convert_dataset(tmp_path, "VOC")
    assert [im["file_name"] for im in load(tmp_path, "train")["images"]] == ["a.jpg"]
    assert summary["skipped_files"] == 1
    assert any("b.xml" in w and "skipped" in w for w in summary["warnings"])


def test_missing_val_list_splits_80_20_and_keeps_the_train_list(tmp_path):
    imgs = scene(10)
    write_voc(tmp_path, imgs, None)
    original = (tmp_path / "train_anno_list.txt").read_text()
    summary = convert_dataset(tmp_path, "VOC")
    assert (summary["train_images"], summary["val_images"]) == (8, 2)
    assert (tmp_path / "train_anno_list.txt.bak").read_text() == original
    new_train = (tmp_path / "train_anno_list.txt").read_text().split()
    new_val = (tmp_path / "val_anno_list.txt").read_text().split()
    assert sorted(new_train + new_val) == sorted(original.split()) and not set(new_train) & set(new_val)
    assert {Path(im["file_name"]).stem for im in load(tmp_path, "val")["images"]} == {Path(p).stem for p in new_val}


def test_visdrone_and_yolo_without_lists_split_reproducibly(tmp_path):
    imgs = scene(5)
    for k in range(2):
        write_visdrone(tmp_path / f"r{k}", imgs, None, lists=False)
        convert_dataset(tmp_path / f"r{k}", "VisDrone")
    lists = [(tmp_path / f"r{k}" / "val_anno_list.txt").read_text() for k in range(2)]
    assert lists[0] == lists[1] and len(lists[0].split()) == 1  # 5 files -> 4 train, 1 val
    assert load(tmp_path / "r0", "train") == load(tmp_path / "r1", "train")
    # A second conversion reads the lists the first one wrote: same split.
    before = load(tmp_path / "r0", "val")
    convert_dataset(tmp_path / "r0", "VisDrone")
    assert load(tmp_path / "r0", "val") == before
    # Identical content replaces nothing, so no backup is made.
    assert not (tmp_path / "r0" / "annotations" / "instance_val.json.bak").exists()


def test_visdrone_ignored_others_and_clipping(tmp_path):
    img = Img("0001.jpg", 100, 80, (Obj("car", 10, 10, 30, 25), Obj("motor", 50, 40, 58, 52)))
    extra = {"0001.jpg": [
        "0,0,20,15,0,0,0,0",        # ignored region
        "60,5,10,10,0,4,0,0",       # score 0: ignored although a car
        "70,60,6,6,1,11,0,0",       # others
        "90,70,20,20,1,1,0,1",      # pedestrian crossing the corner: clipped to 10 x 10
        "100,10,5,5,1,2,0,0",       # starts at the right border: nothing left, dropped
    ]}
    write_visdrone(tmp_path, [img], [Img("0002.jpg", 40, 40, (Obj("van", 1, 1, 9, 9),))], extra_rows=extra)
    summary = convert_dataset(tmp_path, "VisDrone")
    tr = load(tmp_path, "train")
    got = sorted((a["category_id"], a["bbox"]) for a in tr["annotations"])
    assert got == [(1, [90.0, 70.0, 10.0, 10.0]), (4, [10.0, 10.0, 20.0, 15.0]), (10, [50.0, 40.0, 8.0, 12.0])]
    assert [r["bbox"] for r in tr["ignored_regions"]] == [[0.0, 0.0, 20.0, 15.0], [60.0, 5.0, 10.0, 10.0]]
    assert [r["bbox"] for r in tr["other_objects"]] == [[70.0, 60.0, 6.0, 6.0]]
    assert all(r["image_id"] == tr["images"][0]["id"] for r in tr["ignored_regions"] + tr["other_objects"])
    assert (summary["ignored_regions"], summary["other_objects"]) == (2, 1)
    assert (summary["clipped_boxes"], summary["dropped_boxes"]) == (1, 1)
    occl = [a["occlusion"] for a in tr["annotations"] if a["category_id"] == 1]
    assert occl == [1]


def test_yolo_names_from_data_yaml(tmp_path):
    imgs = scene(3)
    write_yolo(tmp_path, imgs[:2], imgs[2:], classes=["van", "car", "pedestrian"])
    (tmp_path / "classes.txt").unlink()
    (tmp_path / "data.yaml").write_text("names:\n  0: van\n  1: car\n  2: pedestrian\n")
    convert_dataset(tmp_path, "YOLO")
    assert boxes_by_file(load(tmp_path, "train"), 3) == truth_by_file(imgs[:2])


def test_with_unlabeled_copies_the_unlabeled_list(tmp_path):
    imgs = scene(3)
    write_labelme(tmp_path, imgs[:2], imgs[2:])
    (tmp_path / "unlabeled.txt").write_text("images/extra.jpg\n")
    convert_dataset(tmp_path, "LabelMeWithUnlabeled")
    assert (tmp_path / "annotations" / "unlabeled.txt").read_text() == "images/extra.jpg\n"
    assert (tmp_path / "unlabeled.txt").exists()


def test_unknown_source_type():
    with pytest.raises(ConfigError, match="COCO.*VOC, VOCWithUnlabeled, LabelMe"):
        resolve_source_type("COCO")


# ------------------------------------------------------------------------------------------- bad input


def _assert_unchanged_after(root: Path, fmt: str, *fragments: str) -> DatasetError:
    before = tree_digest(root)
    with pytest.raises(DatasetError) as ei:
        convert_dataset(root, fmt)
    msg = str(ei.value)
    for frag in fragments:
        assert frag in msg, (frag, msg)
    assert tree_digest(root) == before
    return ei.value


def test_voc_xml_without_size(tmp_path):
    imgs = scene(3)
    write_voc(tmp_path, imgs[:2], imgs[2:])
    (tmp_path / "annotations" / "img_01.xml").write_text(voc_xml(imgs[1], with_size=False))
    (tmp_path / "annotations" / "img_02.xml").write_text("<annotation><filename>x")
    err = _assert_unchanged_after(tmp_path, "VOC", "img_01.xml", "has no <size>", "img_02.xml", "not a readable xml")
    assert len(err.problems) == 2  # both bad files reported, not just the first


def test_missing_train_list(tmp_path):
    write_voc(tmp_path, scene(2), None)
    (tmp_path / "train_anno_list.txt").unlink()
    _assert_unchanged_after(tmp_path, "VOC", "train_anno_list.txt", "not found")


def test_list_naming_a_missing_file(tmp_path):
    write_labelme(tmp_path, scene(2), [])
    (tmp_path / "val_anno_list.txt").write_text("annotations/nope.json\n")
    _assert_unchanged_after(tmp_path, "LabelMe", "line 1", "nope.json", "does not exist")


def test_labelme_polygon_refused(tmp_path):
    imgs = scene(2)
    write_labelme(tmp_path, imgs[:1], imgs[1:])
    d = json.loads((tmp_path / "annotations" / "img_00.json").read_text())
    d["shapes"][0]["shape_type"] = "polygon"
    (tmp_path / "annotations" / "img_00.json").write_text(json.dumps(d))
    _assert_unchanged_after(tmp_path, "LabelMe", "img_00.json", "'polygon'", "only rectangles")


def test_visdrone_bad_line(tmp_path):
    imgs = scene(2)
    write_visdrone(tmp_path, imgs[:1], imgs[1:], extra_rows={imgs[0].name: ["1,2,3"]})
    _assert_unchanged_after(tmp_path, "VisDrone", "img_00.txt", "line 2", "'1,2,3'")


@pytest.mark.parametrize("line, frag", [
    ("7 0.5 0.5 0.1 0.1", "class 7 is not an index"),
    ("0 120 80 30 20", "normalized"),
    ("0 0.5 0.5 0.1 0.1 0.2 0.3", "segmentation polygons"),
])
def test_yolo_bad_lines(tmp_path, line, frag):
    imgs = scene(2)
    write_yolo(tmp_path, imgs[:1], imgs[1:], classes=["van", "car", "pedestrian"])
    (tmp_path / "labels" / "img_01.txt").write_text(line + "\n")
    _assert_unchanged_after(tmp_path, "YOLO", "img_01.txt", "line 1", frag)


def test_not_an_image_while_converting(tmp_path):
    imgs = scene(2)
    write_yolo(tmp_path, imgs[:1], imgs[1:], classes=["van", "car", "pedestrian"])
    (tmp_path / "images" / "img_01.png").write_bytes(b"this is text, not a png")
    _assert_unchanged_after(tmp_path, "YOLO", "img_01.png", "cannot read")


def test_too_few_files_for_a_split(tmp_path):
    write_visdrone(tmp_path, scene(1), None, lists=False)
    _assert_unchanged_after(tmp_path, "VisDrone", "train split has no annotation files")


def test_existing_coco_files_are_backed_up(tmp_path):
    imgs = scene(3)
    write_voc(tmp_path, imgs[:2], imgs[2:])
    (tmp_path / "annotations" / "instance_train.json").write_text(json.dumps(coco_dict(imgs[:1], ["car"])))
    old = (tmp_path / "annotations" / "instance_train.json").read_bytes()
    summary = convert_dataset(tmp_path, "VOC")
    assert (tmp_path / "annotations" / "instance_train.json.bak").read_bytes() == old
    assert summary["backups"] == [str(tmp_path / "annotations" / "instance_train.json.bak")]
