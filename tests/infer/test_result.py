"""DetResult: PaddleX's dict shape, plain-typed JSON, file naming of save_to_json / save_to_img, drawing."""
from __future__ import annotations

import json
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
