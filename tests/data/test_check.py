"""check_dataset: PaddleX's report on a good dataset, every problem of a bad one, and no change to the data."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from data_synth import Img, Obj, draw_image, scene, tree_digest, write_coco_dataset
from PIL import Image
from ppyoloe_sod.data.check_dataset import PASSED_MESSAGE, check_dataset, run_check_dataset
from ppyoloe_sod.errors import ConfigError

PADDLEX_KEYS = {"done_flag", "check_pass", "attributes", "analysis", "dataset_path", "show_type", "dataset_type"}


def _sized_scene() -> tuple[list[Img], list[Img]]:
    """Objects of known COCO size: 8x8 (small), 40x40 (medium), 100x100 (large) in 128x128 images."""
    s, m, L = (0, 0, 8, 8), (10, 10, 50, 50), (20, 20, 120, 120)
    train = [Img("t0.jpg", 128, 128, (Obj("car", *s), Obj("car", *m), Obj("bus", *L))),
             Img("t1.png", 128, 128, (Obj("car", *s), Obj("bus", *s))),
             Img("t2.jpg", 128, 128, ())]
    val = [Img("v0.jpg", 128, 128, (Obj("bus", *m), Obj("car", *s)))]
    return train, val


def test_good_dataset_passes_with_paddlex_report(tmp_path, capsys):
    root, out = tmp_path / "ds", tmp_path / "out"
    train, val = _sized_scene()
    write_coco_dataset(root, train, val, categories=["car", "bus"])
    before = tree_digest(root)

    res = check_dataset(root, out)

    assert PASSED_MESSAGE in capsys.readouterr().out
    assert tree_digest(root) == before  # nothing in the dataset changed
    assert PADDLEX_KEYS <= set(res)
    assert res["done_flag"] is True and res["check_pass"] is True
    assert (res["dataset_type"], res["show_type"], res["dataset_path"]) == ("COCODetDataset", "image", str(root))
    attrs = res["attributes"]
    assert (attrs["num_classes"], attrs["train_samples"], attrs["val_samples"]) == (2, 3, 1)
    assert attrs["train_sample_paths"] == [f"check_dataset/demo_img/{i.name}" for i in train]
    assert attrs["val_sample_paths"] == ["check_dataset/demo_img/v0.jpg"]
    for rel in attrs["train_sample_paths"] + attrs["val_sample_paths"]:
        with Image.open(out / rel) as im:
            assert im.size == (128, 128)
    # The drawn sample differs from the source image (boxes were drawn on it).
    assert Image.open(out / "check_dataset/demo_img/t0.jpg").tobytes() != Image.open(root / "images/t0.jpg").tobytes()
    assert res["analysis"]["histogram"] == "check_dataset/histogram.png"
    for plot in ("histogram.png", "box_sizes.png"):
        with Image.open(out / "check_dataset" / plot) as im:
            assert im.format == "PNG" and im.size[0] > 400
    assert json.loads((out / "check_dataset_result.json").read_text()) == res

    a = res["analysis"]
    assert a["instances"] == {"train": {"car": 3, "bus": 2}, "val": {"car": 1, "bus": 1}}
    sizes = a["object_sizes"]
    assert sizes["train"]["per_class"] == {"car": {"small": 2, "medium": 1, "large": 0},
                                           "bus": {"small": 1, "medium": 0, "large": 1}}
    assert sizes["train"]["all"] == {"small": 3, "medium": 1, "large": 1}
    assert sizes["val"]["per_class"] == {"car": {"small": 1, "medium": 0, "large": 0},
                                         "bus": {"small": 0, "medium": 1, "large": 0}}
    assert a["images_without_boxes"] == {"train": 1, "val": 0}


def test_every_problem_is_listed(tmp_path):
    root, out = tmp_path / "ds", tmp_path / "out"
    imgs = scene(4)
    write_coco_dataset(root, imgs[:3], imgs[3:], categories=["car", "pedestrian", "van"])
    tr_path = root / "annotations" / "instance_train.json"
    tr = json.loads(tr_path.read_text())
    tr["images"].append({"id": 1, "file_name": "dup.jpg", "width": 10, "height": 10})       # duplicate id
    tr["images"].append({"id": 50, "file_name": "gone.jpg", "width": 10, "height": 10})     # missing file
    tr["images"].append({"id": 51, "file_name": "text.jpg", "width": 10, "height": 10})     # not an image
    tr["images"][1]["width"] += 3                                                          # wrong size
    (root / "images" / "text.jpg").write_text("hello")
    draw_image(root / "images" / "dup.jpg", 10, 10)
    tr["annotations"][0]["category_id"] = 99                                               # unknown category
    tr["annotations"][1]["bbox"] = [60.0, 40.0, 30.0, 30.0]                                # outside the image
    tr["annotations"][2]["bbox"][2] = 0                                                    # no width
    tr["annotations"].append({"id": 77, "image_id": 1234, "category_id": 1, "bbox": [0, 0, 1, 1], "area": 1,
                              "iscrowd": 0})                                               # unknown image
    tr_path.write_text(json.dumps(tr))
    before = tree_digest(root)

    res = check_dataset(root, out)

    assert tree_digest(root) == before
    assert res["check_pass"] is False and res["done_flag"] is False
    assert res["err_type"] == "DatasetError"
    probs = res["problems"]
    assert all(p["file"] == str(tr_path) for p in probs)
    a0, a1, a2 = (tr["annotations"][i]["id"] for i in range(3))

    def find(fragment, **ids):
        hits = [p for p in probs if fragment in p["message"] and all(p[k] == v for k, v in ids.items())]
        assert hits, (fragment, ids, probs)

    find("image id 1 is used 2 times", image_id=1)
    find("gone.jpg does not exist", image_id=50)
    find("text.jpg cannot be decoded", image_id=51)
    find(f"width x height in the json is {imgs[1].width + 3} x {imgs[1].height}", image_id=2)
    find("category_id 99 is not in 'categories'", annotation_id=a0)
    find("reaches outside", annotation_id=a1)
    find("has no area", annotation_id=a2)
    find("image_id 1234 is not in 'images'", annotation_id=77)
    assert len(probs) == 8
    saved = json.loads((out / "check_dataset_result.json").read_text())
    assert saved["problems"] == probs and saved["check_pass"] is False
    assert "8 problems" in res["err_msg"]


@pytest.mark.parametrize("mutate, fragment", [
    (lambda p: p.write_text('{"images": [], "annotations": [], '), "malformed json at line 1"),
    (lambda p: p.write_text(json.dumps({"images": [], "annotations": []})), "missing top-level key 'categories'"),
    (lambda p: p.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]})),
     "has no images"),
    (lambda p: p.unlink(), "instance_val.json: not found"),
])
def test_bad_val_json(tmp_path, mutate, fragment):
    root = tmp_path / "ds"
    imgs = scene(3)
    write_coco_dataset(root, imgs[:2], imgs[2:])
    mutate(root / "annotations" / "instance_val.json")
    res = check_dataset(root, tmp_path / "out")
    assert res["check_pass"] is False
    assert any(fragment in f"{p['file']}: {p['message']}" for p in res["problems"]), res["problems"]


def test_train_and_val_categories_must_agree(tmp_path):
    root = tmp_path / "ds"
    imgs = scene(3)
    write_coco_dataset(root, imgs[:2], imgs[2:], categories=["car", "pedestrian", "van"])
    p = root / "annotations" / "instance_val.json"
    d = json.loads(p.read_text())
    d["categories"] = d["categories"][::-1]
    p.write_text(json.dumps(d))
    res = check_dataset(root, tmp_path / "out")
    assert res["check_pass"] is False
    assert "different order" in res["problems"][0]["message"]


def test_box_tolerance(tmp_path):
    root = tmp_path / "ds"
    imgs = [Img("a.jpg", 40, 30, (Obj("car", 1, 1, 10, 10),)), Img("b.jpg", 40, 30, (Obj("car", 1, 1, 10, 10),))]
    write_coco_dataset(root, imgs[:1], imgs[1:])
    p = root / "annotations" / "instance_train.json"
    d = json.loads(p.read_text())
    d["annotations"][0]["bbox"] = [-0.5, 5.0, 40.9, 10.0]  # 0.5 px left and 0.4 px right: within 1 px
    p.write_text(json.dumps(d))
    assert check_dataset(root, tmp_path / "o1")["check_pass"] is True
    assert check_dataset(root, tmp_path / "o2", tolerance=0.25)["check_pass"] is False


def test_dataset_root_found_below_the_given_folder(tmp_path):
    imgs = scene(2)
    write_coco_dataset(tmp_path / "outer" / "ds", imgs[:1], imgs[1:])
    res = check_dataset(tmp_path / "outer", tmp_path / "out")
    assert res["check_pass"] is True and res["dataset_path"] == str(tmp_path / "outer")


@pytest.mark.parametrize("layout, fragment", [("none", "No 'images' folder"), ("two", "2 'images' folders")])
def test_layout_problems(tmp_path, layout, fragment):
    d = tmp_path / "d"
    (d / "x").mkdir(parents=True)
    if layout == "two":
        (d / "a" / "images").mkdir(parents=True)
        (d / "b" / "images").mkdir(parents=True)
    res = check_dataset(d, tmp_path / "out")
    assert res["check_pass"] is False and fragment in res["err_msg"]


def test_bad_arguments_raise_before_touching_anything(tmp_path):
    imgs = scene(3)
    write_coco_dataset(tmp_path / "ds", imgs[:2], imgs[2:])
    before = tree_digest(tmp_path / "ds")
    with pytest.raises(ConfigError, match="sum to 100"):
        check_dataset(tmp_path / "ds", tmp_path / "out", split=(70, 20))
    with pytest.raises(ConfigError, match="must be an integer"):
        check_dataset(tmp_path / "ds", tmp_path / "out", split=(80.0, 20))
    with pytest.raises(ConfigError, match="greater than 0"):
        check_dataset(tmp_path / "ds", tmp_path / "out", split=(100, 0))
    with pytest.raises(ConfigError, match="not supported"):
        check_dataset(tmp_path / "ds", tmp_path / "out", convert_type="CSV")
    with pytest.raises(ConfigError, match="src_dataset_type is not set"):
        run_check_dataset(str(tmp_path / "ds"), str(tmp_path / "out"), True, None, False, None, None)
    for unset in (None, ""):  # Global.dataset_dir left out of the config: a clear error, not a TypeError
        with pytest.raises(ConfigError, match="Global.dataset_dir is not set"):
            run_check_dataset(unset, str(tmp_path / "out"), False, None, False, None, None)
    assert tree_digest(tmp_path / "ds") == before
    assert not (tmp_path / "out").exists()


def test_run_check_dataset_converts_and_splits(tmp_path, capsys):
    from data_synth import write_yolo

    imgs = scene(6)
    write_yolo(tmp_path, imgs, None, classes=["car", "pedestrian", "van"], lists=False)
    res = run_check_dataset(str(tmp_path), str(tmp_path / "out"), convert_enable=True, src_dataset_type="YOLO",
                            split_enable=True, train_percent=50, val_percent=50)
    assert res["check_pass"] is True and PASSED_MESSAGE in capsys.readouterr().out
    assert (res["attributes"]["train_samples"], res["attributes"]["val_samples"]) == (3, 3)
    assert res["attributes"]["num_classes"] == 3
    # The conversion wrote 5/1 (80/20), the split made the .bak of those files.
    assert (tmp_path / "annotations" / "instance_train.json.bak").exists()
    old = json.loads((tmp_path / "annotations" / "instance_train.json.bak").read_text())
    assert len(old["images"]) == 4


def test_exif_rotated_image_size(tmp_path):
    """A phone photo stored landscape with an EXIF 'rotate 90' tag is portrait for every decoder."""
    root = tmp_path / "ds"
    imgs = scene(2)
    write_coco_dataset(root, imgs[:1], imgs[1:])
    im = Image.new("RGB", (40, 20), (90, 90, 90))
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(root / "images" / imgs[0].name, exif=exif)
    p = root / "annotations" / "instance_train.json"
    d = json.loads(p.read_text())
    d["images"][0].update(width=40, height=20)  # the stored size, not the displayed one
    d["annotations"] = [dict(d["annotations"][0], bbox=[1, 1, 5, 5], area=25)]
    p.write_text(json.dumps(d))
    res = check_dataset(root, tmp_path / "out")
    assert res["check_pass"] is False
    assert "is 20 x 40" in res["problems"][0]["message"]


def test_copy_of_a_passing_dataset_is_stable(tmp_path):
    """Two checks of the same dataset give the same report (no randomness, no leftover state)."""
    imgs = scene(4)
    write_coco_dataset(tmp_path / "ds", imgs[:3], imgs[3:])
    shutil.copytree(tmp_path / "ds", tmp_path / "ds2")
    r1 = check_dataset(tmp_path / "ds", tmp_path / "o1")
    r2 = check_dataset(tmp_path / "ds2", tmp_path / "o2")
    r1.pop("dataset_path"), r2.pop("dataset_path")
    assert r1 == r2
    assert Path(tmp_path / "o1" / "check_dataset" / "histogram.png").read_bytes() != b""
