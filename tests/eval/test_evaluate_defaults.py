"""`-o Global.mode=evaluate` without Evaluate.weight_path evaluates what training wrote under Global.output."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from ppyoloe_sod.__main__ import EXIT_ERROR, main
from ppyoloe_sod.zoo import VISDRONE_CLASSES

CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "PP-YOLOE_plus_SOD-S.yaml")


def _dataset(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    cv2.imwrite(str(root / "images" / "a.png"), np.full((64, 96, 3), 90, np.uint8))
    doc = {"images": [{"id": 1, "file_name": "a.png", "width": 96, "height": 64}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 4, "bbox": [10, 10, 20, 16], "area": 320,
                            "iscrowd": 0}],
           "categories": [{"id": i + 1, "name": n} for i, n in enumerate(VISDRONE_CLASSES)]}
    (root / "annotations").mkdir()
    (root / "annotations" / "instance_val.json").write_text(json.dumps(doc))
    return root


def _run(tmp_path: Path, out: Path, *extra: str) -> int:
    return main(["-c", CONFIG, "-o", "Global.mode=evaluate", "-o", f"Global.dataset_dir={tmp_path / 'ds'}",
                 "-o", f"Global.output={out}", "-o", "Global.device=cpu", *extra])


def test_unset_weight_path_is_the_best_model_under_global_output(tmp_path, capsys):
    from tests.weights_synth import randomized_model, write_safetensors

    _dataset(tmp_path / "ds")
    out = tmp_path / "run7"  # not the config's "output": the default must follow Global.output
    write_safetensors(randomized_model("PP-YOLOE_plus_SOD-S", seed=2), out / "best_model" / "model.safetensors")
    assert _run(tmp_path, out) == 0
    printed = capsys.readouterr().out
    assert f"Evaluating {out / 'best_model'} on " in printed
    assert f"Evaluation results written to {out / 'evaluate_result.json'}, {out / 'pr_curves.png'}" in printed
    assert json.loads((out / "evaluate_result.json").read_text())["done_flag"] is True


def test_without_a_trained_model_the_error_says_what_to_set(tmp_path, capsys):
    _dataset(tmp_path / "ds")
    assert _run(tmp_path, tmp_path / "empty") == EXIT_ERROR
    err = capsys.readouterr().err
    assert f"{tmp_path / 'empty' / 'best_model'}" in err and "does not exist" in err
    assert "-o Evaluate.weight_path=FILE" in err and "-o Evaluate.weight_path=official" in err


@pytest.mark.parametrize("value,expected", [("official", None), ("Official", None), ("w/x.safetensors", "w/x.safetensors")])
def test_weight_path_official_means_the_published_weights(tmp_path, monkeypatch, value, expected):
    import ppyoloe_sod.infer.predictor as predictor
    from ppyoloe_sod.errors import ConfigError

    seen = []

    def fake_create_model(name, model_dir=None, device=None):
        seen.append((name, model_dir))
        raise ConfigError("stop here")

    monkeypatch.setattr(predictor, "create_model", fake_create_model)
    _dataset(tmp_path / "ds")
    assert _run(tmp_path, tmp_path / "out", "-o", f"Evaluate.weight_path={value}") == EXIT_ERROR
    assert seen == [("PP-YOLOE_plus_SOD-S", expected)]
