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
from infer_synth import MODEL, scene, seeded_random_detector  # noqa: E402


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from ppyoloe_sod.models import safetensors_metadata
    from ppyoloe_sod.weights.store import save_safetensors

    model = seeded_random_detector(MODEL)
    path = tmp_path_factory.mktemp("w") / "random.safetensors"
    save_safetensors(model.state_dict(), path, safetensors_metadata(model.spec))
    return path


def test_predict_end_to_end(weights, tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "street.png"), scene(240, 320, seed=4))
    out = tmp_path / "out"
    rc = cli.main(["-c", CONFIG, "-o", "Global.mode=predict", "-o", f"Predict.model_dir={weights}",
                   "-o", f"Predict.input={tmp_path / 'street.png'}", "-o", f"Global.output={out}",
                   "-o", "Global.device=cpu", "-o", "Predict.threshold=0.3", "-o", "Predict.print=full"])
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
    import ppyoloe_sod.train.launch as launch

    seen = []
    monkeypatch.setattr(launch, "run_train", lambda cfg: seen.append(cfg) or {"done_flag": False})
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
    proc = subprocess.run([sys.executable, "-m", "ppyoloe_sod", "-c", CONFIG, "-o", "Global.mode=deploy"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == cli.EXIT_ERROR
    assert "Global.mode is 'deploy'" in proc.stderr


def _help(main, argv) -> str:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    return buf.getvalue()


def _key_lines(text: str) -> dict[str, tuple[str, str]]:
    """``  Section.key  (type, default value)`` lines of a help text -> (type and default, meaning below)."""
    import re

    lines = text.splitlines()
    out = {}
    for i, line in enumerate(lines):
        m = re.match(r"^  ([A-Za-z]+(?:\.[a-z_]+)+)  \((.+)\)", line)
        if m:
            out[m.group(1)] = (m.group(2), lines[i + 1].strip() if i + 1 < len(lines) else "")
    return out


def test_help_lists_modes_every_key_with_type_default_meaning_and_examples():
    from ppyoloe_sod.config import MODES, _all_keys

    text = _help(cli.main, ["--help"])
    assert "``" not in text  # no raw RST markup
    assert all(f"  {mode} " in text for mode in MODES)
    keys = _key_lines(text)
    assert set(keys) == set(_all_keys(cli.Config))
    assert keys["Train.batch_size"][0] == "int, default 2"
    assert keys["Global.device"][0] == "str | None, default null"
    assert keys["Train.train_sizes"][0].startswith("list[int] | None, default null")
    assert keys["Predict.use_hpip"][0].startswith("bool, default false")
    assert all(meaning and not meaning.startswith(("Global.", "Train.")) for _, meaning in keys.values())
    assert "examples:" in text and "-o Global.mode=predict -o Predict.input=" in text


def test_train_help_lists_the_global_and_train_keys():
    from ppyoloe_sod.config import _all_keys
    from ppyoloe_sod.train.__main__ import main as train_main

    text = _help(train_main, ["-h"])
    assert "``" not in text and "examples:" in text and "Train.pretrain_weight_path=" in text
    expected = {k for k in _all_keys(cli.Config) if k.startswith(("Global.", "Train."))} - {"Global.mode"}
    assert set(_key_lines(text)) == expected


@pytest.mark.parametrize("mode", ["predict", "evaluate", "train"])
def test_unknown_model_is_a_clear_error_listing_the_models(mode, tmp_path, capsys):
    from ppyoloe_sod.zoo import list_models

    rc = cli.main(["-c", CONFIG, "-o", f"Global.mode={mode}", "-o", "Global.model=PP-YOLOE_plus_SOD-XL",
                   "-o", f"Global.dataset_dir={tmp_path}", "-o", f"Global.output={tmp_path / 'out'}",
                   "-o", f"Predict.input={tmp_path / 'x.jpg'}"])
    err = capsys.readouterr().err
    assert rc == cli.EXIT_ERROR
    assert err.startswith("error: ") and "Global.model is 'PP-YOLOE_plus_SOD-XL'" in err
    assert all(name in err for name in list_models())


def test_hints_speak_the_interface_in_use(weights, tmp_path, monkeypatch, capsys):
    """The CLI suggests -o Section.key=value; Python callers get Python arguments."""
    import torch

    from ppyoloe_sod.errors import ConfigError, WeightsError
    from ppyoloe_sod.infer.predictor import create_model, resolve_device
    from ppyoloe_sod.models import load_model

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), scene(64, 64))
    base = ["-c", CONFIG, "-o", "Global.mode=predict", "-o", f"Predict.input={image}",
            "-o", f"Global.output={tmp_path / 'out'}"]
    assert cli.main([*base, "-o", "Global.device=gpu:0", "-o", f"Predict.model_dir={weights}"]) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert "use -o Global.device=cpu" in err and "device='cpu'" not in err
    assert cli.main([*base, "-o", "Global.device=cpu", "-o", "Global.model=PP-YOLOE_plus_SOD-L",
                     "-o", f"Predict.model_dir={weights}"]) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert "holds weights of PP-YOLOE_plus_SOD-S" in err and "-o Global.model=PP-YOLOE_plus_SOD-S" in err
    assert "load_model(" not in err and "--model" not in err
    # the same mistakes from Python, after the CLI has returned
    with pytest.raises(ConfigError, match="use device='cpu'"):
        resolve_device("gpu")
    with pytest.raises(WeightsError, match=r"load_model\('PP-YOLOE_plus_SOD-S', \.\.\.\)"):
        load_model("PP-YOLOE_plus_SOD-L", weights)
    with pytest.raises(ConfigError, match="unknown model 'nano'; available: PP-YOLOE_plus_SOD-S"):
        create_model("nano")


def test_converter_hint_names_the_flag_of_the_tool_in_use():
    from ppyoloe_sod.errors import interface
    from ppyoloe_sod.weights.convert import paddle_to_torch, torch_to_paddle

    sys.path.insert(0, str(ROOT / "tests"))
    from weights_synth import randomized_model

    pd_state = torch_to_paddle(randomized_model("PP-YOLOE_plus_SOD-S").state_dict())
    expected = {"python": "use load_model('PP-YOLOE_plus_SOD-S', ...)",
                "cli": "use -o Global.model=PP-YOLOE_plus_SOD-S", "convert_weights": "use --model PP-YOLOE_plus_SOD-S"}
    for name, hint_text in expected.items():
        with interface(name), pytest.raises(Exception) as e:
            paddle_to_torch(pd_state, "PP-YOLOE_plus_SOD-L")
        assert str(e.value).endswith(hint_text), (name, str(e.value))


def test_check_dataset_failure_reads_as_an_error(tmp_path):
    """A failed check exits 1 and logs like the CLI's other errors: 'error:' first, no 'All 1 problems'."""
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    cv2.imwrite(str(root / "images" / "here.png"), scene(32, 32))
    for split, name in (("train", "here.png"), ("val", "gone.jpg")):  # one problem: val's image is missing
        doc = {"images": [{"id": 1, "file_name": name, "width": 32, "height": 32}],
               "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 8, 8], "area": 64,
                                "iscrowd": 0}],
               "categories": [{"id": 1, "name": "car"}]}
        (root / "annotations" / f"instance_{split}.json").write_text(json.dumps(doc))
    proc = subprocess.run([sys.executable, "-m", "ppyoloe_sod", "-c", CONFIG, "-o", "Global.mode=check_dataset",
                           "-o", f"Global.dataset_dir={root}", "-o", f"Global.output={tmp_path / 'out'}"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 1
    assert f"\nerror: Dataset {root} failed the check (1 problem):" in proc.stderr, proc.stderr
    assert "gone.jpg" in proc.stderr and "All 1 problems" not in proc.stderr
    assert f"The full list is in {tmp_path / 'out' / 'check_dataset_result.json'}" in proc.stderr


def test_conversion_warnings_are_printed_once(tmp_path, caplog):
    """VOC without val_anno_list.txt: the 80/20 split note is logged by the converter, not again by the check."""
    sys.path.insert(0, str(ROOT / "tests" / "data"))
    from data_synth import scene as dataset_scene
    from data_synth import write_voc

    write_voc(tmp_path / "ds", dataset_scene(5), None)
    with caplog.at_level("WARNING"):
        rc = cli.main(["-c", CONFIG, "-o", "Global.mode=check_dataset", "-o", f"Global.dataset_dir={tmp_path / 'ds'}",
                       "-o", f"Global.output={tmp_path / 'out'}", "-o", "CheckDataset.convert.enable=true",
                       "-o", "CheckDataset.convert.src_dataset_type=VOC"])
    assert rc == 0
    notes = [r.getMessage() for r in caplog.records if "split 80/20" in r.getMessage()]
    assert len(notes) == 1, notes


def test_weights_in_the_wrong_suffix_get_cli_advice(weights, tmp_path, capsys):
    """Weights are read by suffix; a file with the other format's suffix is told to rename, not to call Python."""
    import shutil

    import numpy as np

    from ppyoloe_sod.weights.pdparams import save_pdparams

    image = tmp_path / "x.png"
    cv2.imwrite(str(image), scene(64, 64))
    misnamed_safetensors = shutil.copy(weights, tmp_path / "a.pdparams")
    misnamed_pdparams = tmp_path / "b.safetensors"
    save_pdparams({"w": np.zeros(2, np.float32)}, misnamed_pdparams)
    for model_dir, advice in ((misnamed_safetensors, "rename it to .safetensors."),
                              (misnamed_pdparams, "give it that suffix: it is converted when loaded.")):
        rc = cli.main(["-c", CONFIG, "-o", "Global.mode=predict", "-o", f"Predict.input={image}", "-o",
                       "Global.device=cpu", "-o", f"Predict.model_dir={model_dir}",
                       "-o", f"Global.output={tmp_path / 'out'}"])
        err = capsys.readouterr().err
        assert rc == cli.EXIT_ERROR and advice in err, err
        assert "load_model" not in err and "load_safetensors" not in err
