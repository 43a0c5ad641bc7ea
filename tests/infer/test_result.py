"""DetResult: PaddleX's dict shape, plain-typed JSON, file naming of save_to_json / save_to_img, drawing."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ppyoloe_sod.draw import PALETTE
from ppyoloe_sod.infer.result import DetResult


def _result(input_path="/data/scene one.jpg", page_index=None):
    img = np.zeros((60, 80, 3), np.uint8)
    img[..., 0] = 255  # pure blue in BGR
    boxes = [
        {"cls_id": np.int64(3), "label": "car", "score": np.float32(0.875),
         "coordinate": [np.float32(10.5), np.float32(20.25), 40, np.float32(59.0)]},
        {"cls_id": 0, "label": "pedestrian", "score": 0.625, "coordinate": np.array([50.0, 30.0, 60.0, 45.0])},
    ]
    return DetResult(input_path, page_index, img, boxes)


def test_dict_shape_like_paddlex():
    r = _result()
    assert set(r) == {"input_path", "page_index", "input_img", "boxes"}
    assert r.input_path == r["input_path"] == "/data/scene one.jpg" and r.page_index is None
    assert r.boxes is r["boxes"]


def test_json_is_plain_python_and_drops_image():
    doc = _result().json
    assert list(doc) == ["res"] and list(doc["res"]) == ["input_path", "page_index", "boxes"]
    b0, b1 = doc["res"]["boxes"]
    assert b0 == {"cls_id": 3, "label": "car", "score": 0.875, "coordinate": [10.5, 20.25, 40, 59.0]}
    assert type(b0["cls_id"]) is int and type(b0["score"]) is float
    assert all(type(v) in (int, float) for v in b0["coordinate"])
    assert b1["coordinate"] == [50.0, 30.0, 60.0, 45.0] and isinstance(b1["coordinate"], list)
    json.dumps(doc)  # must not raise


def test_print_json_and_dict(capsys):
    r = _result()
    r.print()
    printed = json.loads(capsys.readouterr().out)
    assert printed == r.json
    r.print(json_format=True, indent=2)
    assert capsys.readouterr().out.startswith('{\n  "res"')
    r.print(format_json=False)
    out = capsys.readouterr().out
    assert out.startswith("{'res': {") and "input_img" not in out


def test_print_keeps_non_ascii(capsys):
    DetResult("/data/街道.jpg", None, None, []).print()
    assert "街道" in capsys.readouterr().out
    DetResult("/data/街道.jpg", None, None, []).print(ensure_ascii=True)
    assert "\\u8857" in capsys.readouterr().out


def test_save_to_json_directory_and_file(tmp_path):
    r = _result()
    written = r.save_to_json(tmp_path / "out")
    assert written == tmp_path / "out" / "scene one_res.json"
    assert json.loads(written.read_text()) == r.json["res"]
    explicit = r.save_to_json(tmp_path / "my.json", indent=None)
    assert explicit == tmp_path / "my.json" and "\n    " not in explicit.read_text()
    assert json.loads(explicit.read_text()) == r.json["res"]


def test_save_to_img_naming_and_content(tmp_path):
    r = _result()
    written = r.save_to_img(tmp_path)
    assert written == tmp_path / "scene one_res.jpg"
    with Image.open(written) as im:
        assert im.size == (80, 60) and im.format == "JPEG"
    png = r.save_to_img(tmp_path / "exact.png")
    with Image.open(png) as im:
        arr = np.asarray(im.convert("RGB"))
    # The BGR input (pure blue) must be shown as blue, and the car box's bottom edge in class 3's colour.
    assert tuple(arr[5, 75]) == (0, 0, 255)
    assert tuple(arr[59, 25]) == PALETTE[3]


def test_pdf_page_and_array_names(tmp_path):
    page = DetResult("/docs/report.pdf", 2, np.zeros((10, 10, 3), np.uint8), [])
    assert page.save_to_img(tmp_path) == tmp_path / "report_2_res.png"  # a PDF suffix is not an image suffix
    assert page.save_to_json(tmp_path) == tmp_path / "report_2_res.json"
    arr = DetResult(None, None, np.zeros((10, 10, 3), np.uint8), [])
    j, i = arr.save_to_json(tmp_path), arr.save_to_img(tmp_path)
    assert j.stem.removesuffix("_res") == i.stem.removesuffix("_res")  # same generated name for both files
    url = DetResult("http://host/a/b/photo.png?x=1", None, np.zeros((10, 10, 3), np.uint8), [])
    assert url.save_to_img(tmp_path).name == "photo_res.png"


def test_img_property():
    img = _result().img
    assert list(img) == ["res"] and isinstance(img["res"], Image.Image)
    with pytest.raises(ValueError, match="no input image"):
        DetResult("x.jpg", None, None, []).img


# --- distinct, readable names ----------------------------------------------------------------------------------

def test_distinct_names_keep_paddlex_names_and_number_repeats():
    from ppyoloe_sod.infer.result import distinct_names

    inputs = [("a/x.png", None), ("b/x.png", None), ("c/x-2.jpg", None), ("doc.pdf", 0), ("d/doc_0.png", None),
              ("e/X.JPG", None), ("a/x.png", None), ("solo.bmp", None)]
    names = distinct_names(inputs)
    # x-2 is another input's own name, so the second x.png skips to x-3; case does not make names distinct
    assert names == ["x.png", "x-3.png", "x-2.jpg", "doc_0.pdf", "doc_0-2.png", "X-4.JPG", "x-5.png", "solo.bmp"]
    assert names == distinct_names(inputs)  # deterministic
    arrays = distinct_names([(None, None), (None, None)])
    assert all(re.fullmatch(r"array_\d{4}", n) for n in arrays) and arrays[0] != arrays[1]


def test_results_of_inputs_sharing_a_name_are_all_saved(blind_predictor, tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        Image.new("RGB", (40, 30)).save(tmp_path / folder / "x.png")
    Image.new("RGB", (40, 30)).save(tmp_path / "a" / "x.jpg")  # x_res.json again
    inputs = [str(tmp_path / "a"), str(tmp_path / "b" / "x.png"), np.zeros((20, 20, 3), np.uint8)]
    out = tmp_path / "out"
    for res in blind_predictor.predict(inputs):
        res.save_to_img(out)
        res.save_to_json(out)
    saved = {p.name: json.loads(p.read_text())["input_path"] for p in out.glob("*.json")}
    array_json = [name for name in saved if name.startswith("array_")]
    assert len(array_json) == 1 and re.fullmatch(r"array_\d{4}_res\.json", array_json[0])
    assert {name: path for name, path in saved.items() if path} == {
        "x_res.json": str(tmp_path / "a" / "x.jpg"),
        "x-2_res.json": str(tmp_path / "a" / "x.png"),
        "x-3_res.json": str(tmp_path / "b" / "x.png"),
    }
    assert sorted(p.name for p in out.iterdir() if p.suffix != ".json") == sorted(
        ["x_res.jpg", "x-2_res.png", "x-3_res.png", array_json[0].replace(".json", ".png")])


def test_non_utf8_file_name_saves_both_files_and_prints(blind_predictor, tmp_path, capsys):
    raw = os.fsencode(tmp_path) + b"/caf\xe9.png"  # Latin-1 bytes: not UTF-8
    try:
        with open(raw, "wb") as f:
            f.write(b"")
    except OSError:
        pytest.skip("this file system refuses non-UTF-8 names")
    Image.new("RGB", (40, 30)).save(os.fsdecode(raw))
    [res] = list(blind_predictor.predict(str(tmp_path)))
    assert os.fsencode(res.input_path) == raw
    res.print()
    printed = json.loads(capsys.readouterr().out)
    assert printed["res"]["input_path"] == res.input_path
    drawing, document = res.save_to_img(tmp_path / "out"), res.save_to_json(tmp_path / "out")
    assert drawing.is_file() and os.fsencode(drawing.name) == b"caf\xe9_res.png"
    saved = json.loads(document.read_bytes().decode("utf-8"))  # valid UTF-8 JSON
    assert os.fsencode(saved["input_path"]) == raw  # the same bytes come back
