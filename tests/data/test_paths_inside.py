"""Paths written inside dataset files may only name files inside the dataset: nothing outside is read or written.

Every test puts a real image (or xml) in a folder next to the dataset and watches, with an audit hook, every file
the process opens: a refused entry must be listed as a problem and the outside file never opened, nor changed.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from data_synth import draw_image, scene, tree_digest, voc_xml, write_coco_dataset, write_labelme, write_visdrone, \
    write_voc, write_yolo
from ppyoloe_sod.data.check_dataset import check_dataset
from ppyoloe_sod.data.coco import load_json, read_coco
from ppyoloe_sod.errors import DatasetError
from ppyoloe_sod.eval.evaluate import evaluate

_WATCHED: list[tuple[str, list[str]]] = []  # (real folder, paths opened under it)


def _audit(event: str, args: tuple) -> None:
    if event != "open" or not _WATCHED or not isinstance(args[0], (str, bytes, os.PathLike)):
        return
    real = os.path.realpath(os.fsdecode(args[0]))
    for folder, hits in _WATCHED:
        if real == folder or real.startswith(folder + os.sep):
            hits.append(real)


sys.addaudithook(_audit)  # hooks cannot be removed; it does nothing while _WATCHED is empty


@pytest.fixture
def outside(tmp_path):
    """A folder beside the dataset holding ``victim.png`` (64 x 48); yields (folder, opened paths under it)."""
    folder = tmp_path / "outside"
    draw_image(folder / "victim.png", 64, 48)
    hits: list[str] = []
    _WATCHED.append((os.path.realpath(folder), hits))
    yield folder, hits
    _WATCHED.pop()


def _digest(root: Path) -> dict[str, str]:
    """tree_digest, without its own reads counting as opened by the code under test."""
    saved = _WATCHED[:]
    _WATCHED.clear()
    try:
        return tree_digest(root)
    finally:
        _WATCHED.extend(saved)


def _check(tmp_path: Path, **kw) -> tuple[dict, dict[str, str]]:
    """check_dataset on tmp_path/ds into tmp_path/out; also every file of tmp_path outside out/ after the run."""
    res = check_dataset(tmp_path / "ds", tmp_path / "out", **kw)
    after = {k: v for k, v in _digest(tmp_path).items() if not k.startswith("out/")}
    return res, after


def _set_train_file_name(root: Path, file_name: str, width: int = 64, height: int = 48) -> None:
    path = root / "annotations" / "instance_train.json"
    data = json.loads(path.read_text())
    data["images"][0].update(file_name=file_name, width=width, height=height)
    path.write_text(json.dumps(data))


def _problems(res: dict, fragment: str) -> list[dict]:
    return [p for p in res.get("problems", []) if fragment in p["message"]]


@pytest.mark.parametrize("entry, expected", [
    ("a.jpg", "a.jpg"), ("sub/a.jpg", "sub/a.jpg"), ("sub\\a.jpg", "sub/a.jpg"), ("./sub//x/../a.jpg", "sub/a.jpg"),
])
def test_entries_inside_are_normalized(tmp_path, entry, expected):
    from ppyoloe_sod.data.paths import inside_path

    assert inside_path(tmp_path, entry) == tmp_path.joinpath(*expected.split("/"))


@pytest.mark.parametrize("entry, fragment", [
    ("/etc/passwd", "absolute"), ("\\\\server\\share\\a.jpg", "absolute"), ("C:\\data\\a.jpg", "absolute"),
    ("c:a.jpg", "absolute"), ("../a.jpg", "climbs out"), ("sub/../../a.jpg", "climbs out"),
    ("..\\a.jpg", "climbs out"), ("", "itself"), (".", "itself"), ("sub/..", "itself"), ("a\x00.jpg", "NUL"),
    (None, "not a string"),
])
def test_entries_outside_are_refused(tmp_path, entry, fragment):
    from ppyoloe_sod.data.paths import inside_path

    with pytest.raises(DatasetError, match=fragment):
        inside_path(tmp_path, entry)


def test_a_symlinked_folder_is_the_folder(tmp_path):
    """The folder itself may live elsewhere (images/ on another disk); only entries must stay inside it."""
    from ppyoloe_sod.data.paths import inside_path

    real = tmp_path / "disk" / "images"
    draw_image(real / "a.png", 8, 8)
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "images").symlink_to(real)
    assert inside_path(tmp_path / "ds" / "images", "a.png").is_file()
    (real / "up.png").symlink_to(tmp_path / "disk")
    with pytest.raises(DatasetError, match="symbolic link"):
        inside_path(tmp_path / "ds" / "images", "up.png")


@pytest.mark.parametrize("kind", ["absolute", "climbing", "backslash climbing", "symlink"])
def test_check_dataset_lists_file_names_outside_and_never_opens_them(tmp_path, outside, kind):
    folder, opened = outside
    root = tmp_path / "ds"
    imgs = scene(4)
    write_coco_dataset(root, imgs[:2], imgs[2:])
    if kind == "symlink":
        (root / "images" / "link.png").symlink_to(folder / "victim.png")
    name = {"absolute": str(folder / "victim.png"), "climbing": "../../outside/victim.png",
            "backslash climbing": "..\\..\\outside\\victim.png", "symlink": "link.png"}[kind]
    _set_train_file_name(root, name)
    before = _digest(tmp_path)
    res, after = _check(tmp_path)
    assert res["check_pass"] is False
    listed = _problems(res, repr(name))
    assert len(listed) == 1 and listed[0]["image_id"] == 1, res["problems"]
    assert listed[0]["file"].endswith("instance_train.json")
    assert opened == []  # neither read nor written
    assert after == before  # nothing changed or added outside the output folder


@pytest.mark.parametrize("name", ["/abs/victim.png", "../outside/victim.png", "link.png"])
def test_training_reader_refuses_file_names_outside(tmp_path, outside, name):
    folder, opened = outside
    root = tmp_path / "ds"
    imgs = scene(3)
    write_coco_dataset(root, imgs[:2], imgs[2:])
    (root / "images" / "link.png").symlink_to(folder / "victim.png")
    name = str(folder / "victim.png") if name.startswith("/abs") else name
    _set_train_file_name(root, name)
    with pytest.raises(DatasetError, match="outside|climbs out|absolute") as e:
        read_coco(root / "annotations" / "instance_train.json", root / "images")
    assert repr(name) in str(e.value) and "image id 1" in str(e.value)
    assert opened == []


def test_evaluation_refuses_file_names_outside(tmp_path, outside):
    folder, opened = outside
    root = tmp_path / "ds"
    imgs = scene(3)
    write_coco_dataset(root, imgs[:2], imgs[2:])
    val = root / "annotations" / "instance_val.json"
    data = json.loads(val.read_text())
    data["images"][0]["file_name"] = "../../outside/victim.png"
    val.write_text(json.dumps(data))
    calls = []

    def detect(images):
        calls.append(len(images))
        return [np.zeros((0, 6), np.float32) for _ in images]

    with pytest.raises(DatasetError, match="climbs out") as e:
        evaluate(detect, val, root / "images", plot=False, progress=False, verbose=False)
    assert "'../../outside/victim.png'" in str(e.value)
    assert calls == [] and opened == []


def test_demo_images_are_named_from_the_normalized_path(tmp_path):
    """``sub\\img.png`` (Windows separators) names images/sub/img.png; its drawing lands under demo_img/sub/."""
    root = tmp_path / "ds"
    imgs = scene(4)
    write_coco_dataset(root, imgs[:2], imgs[2:])
    first = imgs[0]
    (root / "images" / "sub").mkdir()
    (root / "images" / first.name).rename(root / "images" / "sub" / first.name)
    _set_train_file_name(root, f"sub\\.\\{first.name}", first.width, first.height)
    res, _ = _check(tmp_path)
    assert res["check_pass"] is True, res.get("problems")
    sample = res["attributes"]["train_sample_paths"][0]
    assert sample == f"check_dataset/demo_img/sub/{first.name}"
    assert (tmp_path / "out" / sample).is_file()


def test_voc_list_entry_outside_is_listed_and_not_read(tmp_path, outside):
    folder, opened = outside
    root = tmp_path / "ds"
    imgs = scene(4)
    write_voc(root, imgs[:2], imgs[2:])
    (folder / "outside.xml").write_text(voc_xml(imgs[0]))
    with open(root / "train_anno_list.txt", "a") as f:
        f.write("../outside/outside.xml\n")
    before = _digest(tmp_path)
    opened.clear()  # writing outside.xml above was the test's own doing
    res, after = _check(tmp_path, convert_type="VOC")
    assert res["check_pass"] is False
    listed = _problems(res, "'../outside/outside.xml'")
    assert len(listed) == 1 and listed[0]["file"].endswith("train_anno_list.txt"), res["problems"]
    assert "line 3" in listed[0]["message"]
    assert opened == [] and after == before  # nothing converted or written


def test_yolo_image_linked_outside_is_listed_and_not_read(tmp_path, outside):
    folder, opened = outside
    root = tmp_path / "ds"
    imgs = scene(4)
    write_yolo(root, imgs[:2], imgs[2:], classes=["car", "pedestrian", "van"])
    target = root / "images" / imgs[0].name
    target.unlink()
    target.symlink_to(folder / "victim.png")
    before = _digest(tmp_path)
    res, after = _check(tmp_path, convert_type="YOLO")
    assert res["check_pass"] is False
    assert len(_problems(res, "symbolic link")) == 1, res["problems"]
    assert opened == [] and after == before


def test_visdrone_label_file_linked_outside_is_listed_and_not_read(tmp_path, outside):
    """Without lists every annotations/*.txt is taken: one that is a link out of the dataset is refused too."""
    folder, opened = outside
    root = tmp_path / "ds"
    imgs = scene(4)
    write_visdrone(root, imgs[:2], imgs[2:], lists=False)
    label = root / "annotations" / (Path(imgs[0].name).stem + ".txt")
    label.rename(folder / "rows.txt")
    label.symlink_to(folder / "rows.txt")
    before = _digest(tmp_path)
    opened.clear()  # moving rows.txt there was the test's own doing
    res, after = _check(tmp_path, convert_type="VisDrone")
    assert res["check_pass"] is False
    listed = _problems(res, "symbolic link")
    assert len(listed) == 1 and listed[0]["file"] == str(label), res["problems"]
    assert opened == [] and after == before


@pytest.mark.parametrize("image_path", ["..\\..", "images/.."])
def test_labelme_image_path_climbing_out_is_listed(tmp_path, image_path):
    root = tmp_path / "ds"
    imgs = scene(4)
    write_labelme(root, imgs[:2], imgs[2:])
    ann = root / "annotations" / (Path(imgs[0].name).stem + ".json")
    data = json.loads(ann.read_text())
    data["imagePath"] = image_path
    ann.write_text(json.dumps(data))
    res, _ = _check(tmp_path, convert_type="LabelMe")
    assert res["check_pass"] is False
    listed = [p for p in res["problems"] if p["file"] == str(ann)]
    assert len(listed) == 1 and "imagePath" in listed[0]["message"], res["problems"]
    assert not (root / "annotations" / "instance_train.json").exists()  # nothing converted


DEEP = "[" * 100_000 + "]" * 100_000


def test_deeply_nested_coco_json_is_a_dataset_error(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text(DEEP)
    with pytest.raises(DatasetError, match="nested") as e:
        load_json(path)
    assert str(path) in str(e.value)
    root = tmp_path / "ds"
    imgs = scene(3)
    write_coco_dataset(root, imgs[:2], imgs[2:])
    (root / "annotations" / "instance_train.json").write_text(DEEP)
    with pytest.raises(DatasetError, match="nested"):
        read_coco(root / "annotations" / "instance_train.json", root / "images")
    res, _ = _check(tmp_path)
    assert res["check_pass"] is False and len(_problems(res, "nested")) == 1, res["problems"]


def test_oversized_json_is_refused_before_parsing(tmp_path):
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"images": [0] * 50}))
    with pytest.raises(DatasetError, match="over the 64-byte limit"):
        load_json(path, max_bytes=64)
    assert load_json(path)["images"] == [0] * 50


def test_deeply_nested_labelme_json_is_listed(tmp_path):
    root = tmp_path / "ds"
    imgs = scene(4)
    write_labelme(root, imgs[:2], imgs[2:])
    ann = root / "annotations" / (Path(imgs[0].name).stem + ".json")
    ann.write_text(DEEP)
    res, _ = _check(tmp_path, convert_type="LabelMe")
    assert res["check_pass"] is False
    assert [p["file"] for p in _problems(res, "nested")] == [str(ann)]


def test_deeply_nested_ground_truth_for_evaluation(tmp_path):
    path = tmp_path / "gt.json"
    path.write_text(DEEP)
    with pytest.raises(DatasetError, match="nested"):
        evaluate(lambda ims: [], path, tmp_path, plot=False, progress=False, verbose=False)
