"""``python -m ppyoloe_sod.train``: the configured input sizes reach training and its evaluation, and an offline
start from the published weights says which other starts exist."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ppyoloe_sod.errors import ConfigError, WeightsError
from ppyoloe_sod.train import engine, runner
from ppyoloe_sod.train.__main__ import main
from ppyoloe_sod.config import TrainConfig, load_config

from train_synth import make_dataset

CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "PP-YOLOE_plus_SOD-S.yaml")


pytestmark = pytest.mark.usefixtures("one_thread")


def _args(tmp_path: Path, *extra: str) -> list[str]:
    return ["-c", CONFIG, "-o", f"Global.dataset_dir={tmp_path / 'ds'}", "-o", f"Global.output={tmp_path / 'out'}",
            "-o", "Global.device=cpu", "-o", "Train.num_classes=2", "-o", "Train.max_iters=1",
            "-o", "Train.num_workers=0", "-o", "Train.epochs_iters=1", *extra]


def test_training_and_its_evaluation_run_at_the_configured_sizes(tmp_path, monkeypatch):
    """SOD-S, one iteration from random weights: batches at Train.train_sizes, evaluation at Train.eval_size
    (the reference sizes would be 320..768 and 640)."""
    import ppyoloe_sod.infer.predictor as predictor

    make_dataset(tmp_path / "ds", n_train=2, n_val=1, size=96)
    batch_shapes, eval_sizes = [], []
    real_step, real_preprocess = engine.Trainer.step, predictor.preprocess

    def recording_step(self, batch, iteration):
        batch_shapes.append(tuple(batch["images"].shape[-2:]))
        return real_step(self, batch, iteration)

    def recording_preprocess(image, input_size):
        eval_sizes.append(tuple(input_size))
        return real_preprocess(image, input_size)

    monkeypatch.setattr(engine.Trainer, "step", recording_step)
    monkeypatch.setattr(predictor, "preprocess", recording_preprocess)
    code = main(_args(tmp_path, "-o", "Train.pretrain_weight_path=random", "-o", "Train.train_sizes=[64]",
                      "-o", "Train.eval_size=96"))
    assert code == 0
    assert batch_shapes == [(64, 64)] and eval_sizes == [(96, 96)]
    recorded = json.loads((tmp_path / "out" / "train_result.json").read_text())
    assert recorded["iterations"] == 1
    assert "sizes [64], evaluation at 96" in (tmp_path / "out" / "train.log").read_text()


def test_sizes_map_from_the_config_and_are_checked_in_python_too(tmp_path):
    opts = load_config(None, [f"Global.dataset_dir={tmp_path}", "Train.train_sizes=[320, 352]",
                              "Train.eval_size=320"]).Train
    assert opts.train_sizes == [320, 352] and opts.eval_size == 320
    assert load_config(None, [f"Global.dataset_dir={tmp_path}"]).Train.eval_size is None
    with pytest.raises(ConfigError, match="Train.train_sizes: 300 is not a positive multiple of 32"):
        TrainConfig(train_sizes=(320, 300)).check()
    with pytest.raises(ConfigError, match="Train.eval_size: 0 is not"):
        TrainConfig(eval_size=0).check()


def test_offline_start_names_the_other_starting_points(tmp_path, monkeypatch, capsys):
    """The published weights cannot be fetched: the error keeps the download advice and adds the local-file and
    random starts, in the CLI's words on the command line and in Python's from Python."""
    import ppyoloe_sod.models as models
    from ppyoloe_sod.errors import interface
    from train_synth import tiny_spec

    def offline(url, sha256=None, official=False):
        raise WeightsError(f"Cannot reach {url} (no network); is this machine offline, or the server down?")

    monkeypatch.setattr(models, "fetch_weights", offline)
    make_dataset(tmp_path / "ds", n_train=2, n_val=0, size=64)
    assert main(_args(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "Cannot reach" in err and "-o Train.pretrain_weight_path=FILE.pdparams" in err
    assert "-o Train.pretrain_weight_path=random" in err and "TrainConfig(" not in err
    net = models.build_model(tiny_spec())
    with pytest.raises(WeightsError, match=r"pretrain_weight_path='FILE.pdparams'.*pretrain_weight_path='random'"):
        runner.load_pretrained(net, "PP-YOLOE_plus_SOD-S")
    with interface("cli"), pytest.raises(WeightsError, match="-o Train.pretrain_weight_path=random"):
        runner.load_pretrained(net, "PP-YOLOE_plus_SOD-S")
