"""The training run end to end on a tiny synthetic dataset: outputs, saved EMA weights, LR, errors, NaN stop."""
from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

from ppyoloe_sod.config import Config, GlobalConfig, TrainConfig
from ppyoloe_sod.errors import ConfigError
from ppyoloe_sod.train import engine, launch, runner
from ppyoloe_sod.train.checkpoint import load_checkpoint
from ppyoloe_sod.errors import NonFiniteLossError
from ppyoloe_sod.train.launch import train
from ppyoloe_sod.weights.store import load_safetensors

from train_synth import CLASSES, make_dataset, tiny_spec


pytestmark = pytest.mark.usefixtures("one_thread")


def _options(**kw) -> TrainConfig:
    base = dict(epochs_iters=2, batch_size=2, num_workers=0, log_interval=1, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def _train(tmp_path, model=None, **kw) -> dict:
    return train(_options(**kw), tmp_path / "ds", output=tmp_path / "out", model=model or tiny_spec(), progress=False)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    make_dataset(tmp / "ds", n_train=4, n_val=2)
    torch.set_num_threads(1)
    result = _train(tmp, warmup_steps=3)
    return tmp, result


def test_outputs_layout_and_result(finished_run):
    tmp, result = finished_run
    out = tmp / "out"
    assert result["done_flag"] is True
    assert result["epochs"] == 2 and result["iterations"] == 4  # 4 images / batch 2 x 2 epochs
    on_disk = json.loads((out / "train_result.json").read_text())
    assert on_disk == result
    for key in ("config", "train_log", "label_dict"):
        assert (out / result[key].split("/")[-1]).is_file()
    assert set(result["models"]) == {"best", "last_1"}
    assert result["best_metric"]["mAP"] == result["models"]["best"]["score"]
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["Train"]["epochs_iters"] == 2 and cfg["Global"]["model"] == "tiny-sod-test"
    log = (out / "train.log").read_text()
    lines = [ln for ln in log.splitlines() if " loss " in ln and " lr " in ln]
    assert len(lines) == 4  # log_interval 1
    assert "eval (EMA weights" in log and "img/s" in lines[-1]
    assert (out / "label_dict.txt").read_text().splitlines() == [f"{i} {n}" for i, n in enumerate(CLASSES)]
    assert (out / "train_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ck = load_checkpoint(out)
    assert ck["history"].shape == (4, 6) and ck["history"][:, 0].tolist() == [0, 1, 2, 3]
    assert [e["epoch"] for e in ck["eval_history"]] == [1, 2]


def test_saved_weights_are_bias_corrected_ema(finished_run):
    tmp, _ = finished_run
    state, meta = load_safetensors(tmp / "out" / "latest" / "model.safetensors")
    assert meta["model_name"] == "tiny-sod-test"
    assert json.loads(meta["classes"]) == list(CLASSES) and meta["num_classes"] == "2"
    ck = load_checkpoint(tmp / "out")
    ema = ck["trainer"]["ema"]
    # Independent formula: EMA shadow / (1 - d_last ** t) with d_t = min(0.9998, (1 + t) / (10 + t)).
    t = ema["step"]
    assert t == 4
    d_last = min(0.9998, (1 + (t - 1)) / (10 + (t - 1)))
    raw = ck["trainer"]["model"]
    key = "yolo_head.stem_cls.0.fc.weight"
    expected = ema["shadow"][key] / (1 - d_last**t)
    torch.testing.assert_close(state[key], expected)
    assert not torch.allclose(state[key], raw[key])  # the raw weights are not what was exported
    cfg = json.loads((tmp / "out" / "latest" / "model_config.json").read_text())
    assert cfg["num_classes"] == 2 and cfg["weights"] == "model.safetensors"


def test_checkpoint_lr_and_counters_follow_the_schedule(finished_run):
    tmp, _ = finished_run
    ck = load_checkpoint(tmp / "out" / "latest" / "checkpoint.pt")
    assert ck["epoch"] == 2 and ck["iteration"] == 4 and ck["iters_per_epoch"] == 2
    # The LR of the last step (iteration 3): warmup of 3 iterations done, cosine over max(96, 2) epochs x 2.
    w, m, i = 3, 96 * 2, 3
    expected = 0.01 * 0.5 * (1 + math.cos(math.pi * (i - w) / (m - w)))
    for group in ck["trainer"]["optimizer"]["param_groups"]:
        assert group["lr"] == pytest.approx(expected, rel=1e-12)
    # weights_only round trip kept the RNG state as tensors
    assert ck["rng"]["torch"].dtype == torch.uint8 and ck["rng"]["python"]["internal"].numel() == 625


def test_num_classes_mismatch_is_a_clear_error(tmp_path):
    make_dataset(tmp_path / "ds", n_train=2, n_val=0)
    with pytest.raises(ConfigError, match=r"num_classes is 5.*2 categories.*Train.num_classes=2"):
        _train(tmp_path, num_classes=5)


def test_custom_class_count_rebuilds_pred_cls_and_says_so(tmp_path, monkeypatch):
    make_dataset(tmp_path / "ds", n_train=2, n_val=0)
    ten = tiny_spec()
    import dataclasses
    ten = dataclasses.replace(ten, classes=tuple(f"c{i}" for i in range(10)),
                              arch=dataclasses.replace(ten.arch, num_classes=10))
    cfg = Config(Global=GlobalConfig(dataset_dir=str(tmp_path / "ds"), output=str(tmp_path / "out")),
                 Train=_options(epochs_iters=1))
    run = launch.train_process(cfg, 0, 1, torch.device("cpu"), spec=ten, progress=False)
    assert run.trainer.net.yolo_head.pred_cls[0].out_channels == 2
    assert run.spec.classes == CLASSES
    log = (tmp_path / "out" / "train.log").read_text()
    assert "pred_cls rebuilt" in log and "has 10" in log
    assert "instance_val.json not found" in log  # no val split: trains without evaluation


def test_nan_loss_stops_with_iteration_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    make_dataset(tmp_path / "ds", n_train=4, n_val=0)
    real_forward = engine.DetectionLoss.forward
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        terms = real_forward(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 4:  # second iteration of epoch 2 (iteration 4, counted from 1 as in the log)
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(engine.DetectionLoss, "forward", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"iteration 4 .*epoch 2, batch 2/2.*last good checkpoint"):
        _train(tmp_path, epochs_iters=3)
    ck = load_checkpoint(tmp_path / "out")
    assert ck["epoch"] == 1 and ck["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in ck["trainer"]["model"].values() if v.is_floating_point())
    result = json.loads((tmp_path / "out" / "train_result.json").read_text())
    assert result["done_flag"] is False
    assert "not finite at iteration 4" in (tmp_path / "out" / "train.log").read_text()


def test_options_from_paddlex_config_keys(tmp_path):
    """The Train keys of a config file are the training options themselves (one definition, one validator)."""
    from ppyoloe_sod.config import load_config
    from ppyoloe_sod.zoo import get_spec

    cfg = {"Global": {"model": "PP-YOLOE_plus_SOD-S", "dataset_dir": str(tmp_path), "device": "cpu",
                      "output": str(tmp_path / "o"), "mode": "train"},
           "Train": {"num_classes": 3, "epochs_iters": 7, "batch_size": 4, "learning_rate": 0.002,
                     "warmup_steps": 100, "log_interval": 5, "eval_interval": 2, "pretrain_weight_path": None,
                     "resume_path": ""}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    o = load_config(tmp_path / "c.yaml").Train
    assert (o.num_classes, o.epochs_iters, o.batch_size, o.learning_rate, o.warmup_steps, o.log_interval,
            o.eval_interval, o.resume_path) == (3, 7, 4, 0.002, 100, 5, 2, "")
    base = get_spec("PP-YOLOE_plus_SOD-S")
    assert runner.pretrain_source(o, base) == "PP-YOLOE_plus_SOD-S"  # unset: the published weights (PaddleX)
    assert runner.pretrain_source(TrainConfig(pretrain_weight_path="random"), base) is None
    assert runner.pretrain_source(TrainConfig(), tiny_spec()) is None  # a custom model has no published weights
    with pytest.raises(ConfigError, match="Train.batch_size"):
        load_config(tmp_path / "c.yaml", ["Train.batch_size=0"])
    with pytest.raises(ConfigError, match="Train.batch_size"):
        train(TrainConfig(batch_size=0), tmp_path)
    with pytest.raises(ConfigError, match="Global.dataset_dir"):
        launch.run_train(load_config(None, ["Global.mode=train"]))


def test_bad_device_and_resume_path_are_clear_errors(tmp_path):
    from ppyoloe_sod.device import parse_device
    from ppyoloe_sod.errors import interface

    with interface("cli"), pytest.raises(ConfigError, match="Global.device 'tpu:0'"):
        parse_device("tpu:0")
    make_dataset(tmp_path / "ds", n_train=2, n_val=0)
    with pytest.raises(ConfigError, match="resume_path .*no checkpoint found"):
        _train(tmp_path, resume_path=str(tmp_path / "nowhere"))


def test_cli_trains_sod_s_from_the_paddlex_config(tmp_path, capsys):
    """``python -m ppyoloe_sod.train -c configs/PP-YOLOE_plus_SOD-S.yaml -o ...``: one iteration of SOD-S with
    the dataset's 2 classes, evaluation, outputs that ``train_result.json`` points at."""
    from pathlib import Path

    from ppyoloe_sod.train.__main__ import main

    make_dataset(tmp_path / "ds", n_train=2, n_val=1, size=96)
    config = Path(__file__).resolve().parents[2] / "configs" / "PP-YOLOE_plus_SOD-S.yaml"
    out = tmp_path / "out"
    code = main(["-c", str(config), "-o", f"Global.dataset_dir={tmp_path / 'ds'}", "-o", f"Global.output={out}",
                 "-o", "Global.device=cpu", "-o", "Train.num_classes=2", "-o", "Train.pretrain_weight_path=random",
                 "-o", "Train.max_iters=1", "-o", "Train.num_workers=0", "-o", "Train.epochs_iters=3"])
    assert code == 0
    result = json.loads((out / "train_result.json").read_text())
    assert result["done_flag"] is True and result["model_name"] == "PP-YOLOE_plus_SOD-S"
    assert result["iterations"] == 1 and result["num_classes"] == 2
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["Global"]["mode"] == "train" and cfg["Train"]["num_classes"] == 2
    state, meta = load_safetensors(out / "best_model" / "model.safetensors")
    assert state["yolo_head.pred_cls.0.weight"].shape[0] == 2 and meta["num_classes"] == "2"
    from ppyoloe_sod import load_model  # the folder is ready for load_model / create_model(model_dir=...)
    loaded = load_model("PP-YOLOE_plus_SOD-S", out / "best_model")
    assert loaded.spec.classes == CLASSES
    torch.testing.assert_close(loaded.state_dict()["yolo_head.pred_cls.0.bias"], state["yolo_head.pred_cls.0.bias"])
    assert main(["-c", str(config), "-o", f"Global.dataset_dir={tmp_path / 'ds'}", "-o", "Global.device=cpu",
                 "-o", "Train.num_classes=4", "-o", f"Global.output={tmp_path / 'o2'}"]) == 2
    assert "Train.num_classes=2" in capsys.readouterr().err


def test_collapsed_assignment_is_reported(tmp_path, monkeypatch):
    """Boxes present but no positive anchor for STARVED_STEPS steps in a row: a warning names the iteration."""
    make_dataset(tmp_path / "ds", n_train=2, n_val=0)
    real_forward = engine.DetectionLoss.forward

    def no_positives(self, *args, **kwargs):
        terms = real_forward(self, *args, **kwargs)
        zero = terms["loss_iou"] * 0.0
        return {**terms, "loss_iou": zero, "loss_dfl": zero, "loss": terms["loss_cls"]}

    monkeypatch.setattr(engine.DetectionLoss, "forward", no_positives)
    monkeypatch.setattr(runner, "STARVED_STEPS", 3)
    _train(tmp_path, batch_size=1, epochs_iters=2)
    log = (tmp_path / "out" / "train.log").read_text()
    assert "WARNING iteration 3: for 3 steps in a row no anchor was assigned" in log
    assert log.count("no anchor was assigned") == 1  # said once, not every step
