"""Sliced evaluation: ``evaluate(predictor_detect_fn(predictor, slice=...), ...)`` in Python and
``-o Evaluate.slice.enable=True`` on the command line, on a generated dataset of large images with tiny objects.

The detector is scripted to behave like a network with a fixed input size: it sees each image shrunk to
``INPUT`` x ``INPUT`` pixels, so the 6-pixel squares vanish from a whole 1024x768 image (AP 0) but are found
exactly in 128-pixel slices (AP 1 once the parts of squares cut by slice borders are merged back).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from ppyoloe_sod.__main__ import main
from ppyoloe_sod.errors import ConfigError
from ppyoloe_sod.eval.evaluate import evaluate, predictor_detect_fn

CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "PP-YOLOE_plus_SOD-S.yaml")
INPUT, SIDE, WIDTH, HEIGHT = 128, 6, 1024, 768


def fixed_input_detect(images: list[np.ndarray]) -> list[np.ndarray]:
    """Boxes of the bright squares seen at INPUT x INPUT (averaged pixels, as a resize to a network's input
    does), class 0, score 0.9, in the image's pixels."""
    out = []
    for image in images:
        h, w = image.shape[:2]
        small = cv2.resize(image[:, :, 0], (INPUT, INPUT), interpolation=cv2.INTER_AREA)
        n, _, stats, _ = cv2.connectedComponentsWithStats((small > 200).astype(np.uint8), connectivity=4)
        sx, sy = w / INPUT, h / INPUT
        rows = [[0, 0.9, x * sx, y * sy, (x + bw) * sx, (y + bh) * sy] for x, y, bw, bh, _ in stats[1:n]]
        out.append(np.array(rows, np.float32).reshape(-1, 6))
    return out


def make_dataset(root: Path, n: int = 2) -> list[Path]:
    """Images of 6-pixel white squares on a 100-pixel grid (80 per image, under COCO's 100 detections; slice
    borders cut some, whose parts must be merged back), COCO ground truth."""
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    images, anns = [], []
    for i in range(n):
        img = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        for y in range(10 + 7 * i, HEIGHT - SIDE, 100):
            for x in range(20 + 5 * i, WIDTH - SIDE, 100):
                img[y:y + SIDE, x:x + SIDE] = 255
                anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                             "bbox": [x, y, SIDE, SIDE], "area": SIDE * SIDE})
        cv2.imwrite(str(root / "images" / f"im{i}.png"), img)
        images.append({"id": i + 1, "file_name": f"im{i}.png", "width": WIDTH, "height": HEIGHT})
    doc = {"images": images, "annotations": anns,
           "categories": [{"id": 1, "name": "pedestrian"}, {"id": 2, "name": "car"}]}
    for split in ("train", "val"):
        (root / "annotations" / f"instance_{split}.json").write_text(json.dumps(doc))
    return [root / "images" / im["file_name"] for im in images]


@pytest.fixture()
def scripted_predictor():
    """A DetPredictor whose batch step is fixed_input_detect (no network)."""
    from types import SimpleNamespace

    from ppyoloe_sod.infer.predictor import DetPredictor

    predictor = DetPredictor(SimpleNamespace(spec=SimpleNamespace(draw_threshold=0.5)), None, "scripted",
                             ("pedestrian", "car"), (INPUT, INPUT))
    predictor.detect_batch = fixed_input_detect
    return predictor


SLICE = {"size": INPUT, "overlap": 0.2}


def test_sliced_evaluation_in_python(scripted_predictor, tmp_path):
    root = tmp_path / "ds"
    make_dataset(root)
    ann, images = root / "annotations" / "instance_val.json", root / "images"
    whole = evaluate(predictor_detect_fn(scripted_predictor), ann, images, plot=False, verbose=False)
    sliced = evaluate(predictor_detect_fn(scripted_predictor, SLICE, threshold=0.5), ann, images, plot=False,
                      verbose=False)
    assert whole["metrics"]["AP50"] == 0.0
    assert sliced["metrics"]["AP50"] == pytest.approx(1.0) and sliced["metrics"]["AP"] == pytest.approx(1.0)


def test_sliced_evaluation_is_one_command(scripted_predictor, tmp_path, monkeypatch, capsys):
    from ppyoloe_sod.infer import predictor as predictor_module

    monkeypatch.setattr(predictor_module, "create_model", lambda name, **kwargs: scripted_predictor)
    root = tmp_path / "ds"
    make_dataset(root)

    def run(*overrides: str) -> dict:
        out = tmp_path / "out"
        code = main(["-c", CONFIG, "-o", "Global.mode=evaluate", "-o", f"Global.dataset_dir={root}", "-o",
                     f"Evaluate.weight_path={tmp_path}", "-o", f"Global.output={out}", "-o", "Global.device=cpu",
                     *(arg for o in overrides for arg in ("-o", o))])
        assert code == 0
        return json.loads((out / "evaluate_result.json").read_text())

    assert run()["metrics"]["AP50"] == 0.0
    report = run("Evaluate.slice.enable=True", f"Evaluate.slice.size={INPUT}", "Evaluate.slice.overlap=0.2",
                 "Evaluate.slice.threshold=0.5", "Evaluate.slice.batch_size=16")
    assert report["metrics"]["AP50"] == pytest.approx(1.0)
    assert report["settings"]["slice"] == {
        "preset": "sahi", "size": [INPUT, INPUT], "overlap": [0.2, 0.2], "merge": "greedynmm", "match_metric": "ios",
        "match_threshold": 0.5, "class_agnostic": False, "standard_pred": True, "batch_size": 16, "threshold": 0.5}
    assert "in slices {'preset': 'sahi'" in capsys.readouterr().out


@pytest.mark.parametrize("override,message", [
    ("Evaluate.slice.size=0", "Evaluate.slice: slice size must be a positive integer"),
    ("Evaluate.slice.merge=nmw", "Evaluate.slice: slice merge 'nmw' is not known.*greedynmm, nmm, nms, concat"),
    ("Evaluate.slice.threshold=1.5", r"Evaluate.slice.threshold must be a score in \[0, 1\], got 1.5"),
])
def test_bad_sliced_evaluation_keys_are_named(tmp_path, override, message, capsys):
    code = main(["-c", CONFIG, "-o", "Global.mode=evaluate", "-o", f"Global.dataset_dir={tmp_path}", "-o",
                 "Evaluate.slice.enable=True", "-o", override])
    assert code == 2
    assert re.search(message, capsys.readouterr().err)


def test_a_bad_python_threshold_is_a_config_error(scripted_predictor):
    with pytest.raises(ConfigError, match=r"threshold must be a score in \[0, 1\]"):
        predictor_detect_fn(scripted_predictor, SLICE, threshold=-0.1)
