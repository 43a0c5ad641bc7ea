"""The PaddleX-style command line: predict end to end, dispatch of the other modes, and errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

import ppyoloe_sod.__main__ as cli

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "PP-YOLOE_plus_SOD-S.yaml")
sys.path.insert(0, str(ROOT / "tests" / "infer"))
from infer_synth import MODEL, randomize_detector, scene  # noqa: E402


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from ppyoloe_sod.models import build_model, safetensors_metadata
    from ppyoloe_sod.weights.store import save_safetensors

    model = randomize_detector(build_model(MODEL))
    path = tmp_path_factory.mktemp("w") / "random.safetensors"
    save_safetensors(model.state_dict(), path, safetensors_metadata(model.spec))
    return path


def test_predict_end_to_end(weights, tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "street.png"), scene(240, 320, seed=4))
    out = tmp_path / "out"
    rc = cli.main(["-c", CONFIG, "-o", "Global.mode=predict", "-o", f"Predict.model_dir={weights}",
                   "-o", f"Predict.input={tmp_path / 'street.png'}", "-o", f"Global.output={out}",
                   "-o", "Global.device=cpu", "-o", "Predict.threshold=0.3"])
    assert rc == 0
    saved = json.loads((out / "street_res.json").read_text())
    assert saved["input_path"] == str(tmp_path / "street.png") and saved["page_index"] is None
    assert len(saved["boxes"]) > 0 and all(b["score"] > 0.3 for b in saved["boxes"])
    assert (out / "street_res.png").is_file()
    printed = capsys.readouterr().out
    assert json.loads(printed[: printed.rindex("}") + 1]) == {"res": saved}


def test_check_dataset_dispatch(monkeypatch):
    import ppyoloe_sod.data.check_dataset as check

    calls = []
    monkeypatch.setattr(check, "run_check_dataset", lambda *a: calls.append(a) or {"done_flag": True})
    rc = cli.main(["-c", CONFIG, "-o", "Global.mode=check_dataset", "-o", "Global.dataset_dir=/data/vd",
                   "-o", "Global.output=/tmp/o", "-o", "CheckDataset.convert.enable=True",
                   "-o", "CheckDataset.convert.src_dataset_type=VOC", "-o", "CheckDataset.split.enable=True",
                   "-o", "CheckDataset.split.train_percent=80", "-o", "CheckDataset.split.val_percent=20"])
    assert rc == 0
    assert calls == [("/data/vd", "/tmp/o", True, "VOC", True, 80, 20)]


def test_train_dispatch_and_failed_result(monkeypatch):
    import ppyoloe_sod.train.loop as loop

    seen = []
    monkeypatch.setattr(loop, "run_train", lambda cfg: seen.append(cfg) or {"done_flag": False})
    rc = cli.main(["-c", CONFIG, "-o", "Global.mode=train", "-o", "Train.epochs_iters=3"])
    assert rc == 1  # done_flag False -> non-zero exit
    assert seen[0].Train.epochs_iters == 3 and seen[0].Global.mode == "train"


def test_mode_not_implemented(monkeypatch, capsys):
    monkeypatch.setitem(cli._ENTRY_POINTS, "export", ("ppyoloe_sod.no_such_module", "run_export"))
    assert cli.main(["-c", CONFIG, "-o", "Global.mode=export"]) == cli.EXIT_NOT_IMPLEMENTED
    assert "Global.mode=export is not implemented yet" in capsys.readouterr().err
    monkeypatch.setitem(cli._ENTRY_POINTS, "export", ("ppyoloe_sod.config", "run_export"))
    assert cli.main(["-c", CONFIG, "-o", "Global.mode=export"]) == cli.EXIT_NOT_IMPLEMENTED


def test_errors_are_reported_not_raised(tmp_path, capsys):
    assert cli.main(["-c", CONFIG, "-o", "Train.epoch=3"]) == cli.EXIT_ERROR
    assert "Unknown key 'Train.epoch'" in capsys.readouterr().err
    assert cli.main(["-c", str(tmp_path / "missing.yaml")]) == cli.EXIT_ERROR
    assert "Config file not found" in capsys.readouterr().err
    rc = cli.main(["-c", CONFIG, "-o", "Global.mode=predict", "-o", f"Predict.input={tmp_path / 'nothing.png'}",
                   "-o", "Global.device=cpu", "-o", "Predict.model_dir=" + str(tmp_path / "no.safetensors")])
    assert rc == cli.EXIT_ERROR and "no.safetensors" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main([])  # -c is required


def test_python_dash_m_entry_point():
    proc = subprocess.run([sys.executable, "-m", "ppyoloe_sod", "-c", CONFIG, "-o", "Global.mode=serve"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == cli.EXIT_ERROR
    assert "Global.mode is 'serve'" in proc.stderr
