"""Configs: the shipped YAMLs load with PaddleX's values, overrides are typed, unknown keys are refused."""
from __future__ import annotations

from pathlib import Path

import pytest

from ppyoloe_sod.config import Config, dump_config, load_config, parse_value
from ppyoloe_sod.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name,epochs,lr,log_interval", [
    ("PP-YOLOE_plus_SOD-S", 50, 0.01, 10),
    ("PP-YOLOE_plus_SOD-L", 50, 0.01, 10),
    ("PP-YOLOE_plus_SOD-largesize-L", 10, 0.00125, 3),
])
def test_shipped_configs_follow_paddlex(name, epochs, lr, log_interval):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert cfg.Global.model == name
    assert (cfg.Train.num_classes, cfg.Train.epochs_iters, cfg.Train.batch_size) == (10, epochs, 2)
    assert cfg.Train.learning_rate == lr and cfg.Train.warmup_steps == 100
    assert (cfg.Train.log_interval, cfg.Train.eval_interval) == (log_interval, 1)
    assert cfg.CheckDataset.convert.enable is False and cfg.CheckDataset.split.train_percent is None
    assert cfg.Predict.batch_size == 1 and cfg.Predict.kernel_option.run_mode == "paddle"


def test_override_types():
    cfg = load_config(CONFIGS / "PP-YOLOE_plus_SOD-S.yaml", [
        "Global.mode=predict",
        "Global.device=gpu:0,1",
        "CheckDataset.split.enable=true",
        "CheckDataset.split.train_percent=80",
        "CheckDataset.convert.src_dataset_type=None",
        "Train.learning_rate=1e-3",
        "Train.batch_size=8",
        "Train.amp=bf16",
        "Train.channels_last=False",
        "Predict.threshold={0: 0.3, 3: 0.6}",
        "Predict.input=[a.jpg, b dir/c.png]",
        "Predict.use_hpip=TRUE",
    ])
    assert cfg.Global.mode == "predict" and cfg.Global.device == "gpu:0,1"
    assert cfg.CheckDataset.split.enable is True and cfg.CheckDataset.split.train_percent == 80
    assert cfg.CheckDataset.convert.src_dataset_type is None
    assert cfg.Train.learning_rate == 0.001 and type(cfg.Train.learning_rate) is float
    assert cfg.Train.batch_size == 8 and cfg.Train.amp == "bf16" and cfg.Train.channels_last is False
    assert cfg.Predict.threshold == {0: 0.3, 3: 0.6}
    assert cfg.Predict.input == ["a.jpg", "b dir/c.png"]
    assert cfg.Predict.use_hpip is True


def test_int_for_float_and_text_that_looks_like_a_number():
    cfg = load_config(None, ["Predict.threshold=1", "Predict.input=123", "Global.output=2024"])
    assert cfg.Predict.threshold == 1.0 and type(cfg.Predict.threshold) is float
    assert cfg.Predict.input == "123" and cfg.Global.output == "2024"


def test_later_override_wins():
    cfg = load_config(None, ["Train.batch_size=4", "Train.batch_size=6"])
    assert cfg.Train.batch_size == 6


def test_parse_value():
    assert parse_value("true") is True and parse_value("False") is False
    assert parse_value("None") is None and parse_value("null") is None
    assert parse_value("3") == 3 and parse_value("-2.5") == -2.5
    assert parse_value("[1, 2]") == [1, 2] and parse_value("(640, 640)") == (640, 640)
    assert parse_value("output/run1") == "output/run1"
    assert parse_value("gpu:0") == "gpu:0"
    # PaddleX's substring test turns "N", "o", "e" into None; we keep them as text.
    assert parse_value("N") == "N" and parse_value("one") == "one"


@pytest.mark.parametrize("override,message", [
    ("Train.epoch=3", r"Unknown key 'Train.epoch'.*Train.epochs_iters"),
    ("Predcit.input=x.jpg", r"Unknown key 'Predcit.input'.*Predict.input"),
    ("Train=3", "must name a key inside a section"),
    ("CheckDataset.split=3", "is a section.*CheckDataset.split.enable"),
    ("Train.batch_size.x=3", "is a value, not a section"),
    ("Train.batch_size", "Section.key=value"),
    ("Train.batch_size=two", r"Train.batch_size: expected int, got 'two'"),
    ("Train.batch_size=2.5", "Train.batch_size: expected int"),
    ("CheckDataset.split.enable=yes please", "CheckDataset.split.enable: expected bool"),
    ("Predict.threshold={'car': 0.3}", "Predict.threshold"),
    ("Global.mode=serve", "Global.mode is 'serve'; use one of check_dataset, train"),
    ("Train.epochs_iters=0", "Train.epochs_iters must be >= 1"),
    ("Evaluate.batch_size=0", "Evaluate.batch_size must be >= 1"),
    ("Predict.batch_size=-1", "Predict.batch_size must be >= 1"),
])
def test_bad_overrides(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_bad_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "none.yaml")
    (tmp_path / "typo.yaml").write_text("Global:\n  model: PP-YOLOE_plus_SOD-S\n  ouput: out\n")
    with pytest.raises(ConfigError, match=r"typo.yaml.*'ouput' in Global; valid keys: model, mode"):
        load_config(tmp_path / "typo.yaml")
    (tmp_path / "section.yaml").write_text("Serve:\n  port: 1\n")
    with pytest.raises(ConfigError, match="'Serve'.*Global, CheckDataset, Train"):
        load_config(tmp_path / "section.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("Global: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "broken.yaml")
    (tmp_path / "type.yaml").write_text("Train:\n  batch_size: many\n")
    with pytest.raises(ConfigError, match="Train.batch_size: expected int"):
        load_config(tmp_path / "type.yaml")


def test_empty_section_and_partial_file(tmp_path):
    (tmp_path / "p.yaml").write_text("Global:\n  mode: predict\nExport:\nTrain:\n  batch_size: 4\n")
    cfg = load_config(tmp_path / "p.yaml")
    assert cfg.Train.batch_size == 4 and cfg.Train.epochs_iters == 50 and cfg.Export.weight_path is None


def test_dump_round_trip(tmp_path):
    cfg = load_config(CONFIGS / "PP-YOLOE_plus_SOD-L.yaml", ["Predict.threshold={1: 0.25}"])
    (tmp_path / "again.yaml").write_text(dump_config(cfg))
    assert load_config(tmp_path / "again.yaml") == cfg
    assert isinstance(cfg, Config)
