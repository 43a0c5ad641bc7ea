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
    ("Global.mode=deploy", "Global.mode is 'deploy'; use one of check_dataset, train"),
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
    (tmp_path / "section.yaml").write_text("Deploy:\n  port: 1\n")
    with pytest.raises(ConfigError, match="'Deploy'.*Global, CheckDataset, Train"):
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


def test_duplicate_yaml_keys_are_errors_naming_key_and_lines(tmp_path):
    """YAML keeps the last of two equal keys without a word; a config must not silently lose a line."""
    (tmp_path / "dup.yaml").write_text("Train:\n  batch_size: 2\n  epochs_iters: 3\n  batch_size: 8\n")
    with pytest.raises(ConfigError, match=r"dup.yaml: key 'batch_size' appears twice .* lines 2 and 4"):
        load_config(tmp_path / "dup.yaml")
    (tmp_path / "dup_section.yaml").write_text("Train:\n  batch_size: 2\nGlobal:\n  mode: train\nTrain:\n  seed: 1\n")
    with pytest.raises(ConfigError, match=r"key 'Train' appears twice .* lines 1 and 5"):
        load_config(tmp_path / "dup_section.yaml")
    # the same key in two different sections, and YAML merge keys, are fine
    (tmp_path / "ok.yaml").write_text("Train:\n  batch_size: 2\nEvaluate: &ev\n  batch_size: 4\n"
                                      "Predict:\n  <<: *ev\n  batch_size: 3\n")
    cfg = load_config(tmp_path / "ok.yaml")
    assert (cfg.Train.batch_size, cfg.Evaluate.batch_size, cfg.Predict.batch_size) == (2, 4, 3)


def test_non_utf8_config_is_a_clear_error(tmp_path):
    (tmp_path / "latin1.yaml").write_bytes("Global:\n  output: café\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.yaml is not UTF-8 text \(byte 0xe9 at offset 21\)"):
        load_config(tmp_path / "latin1.yaml")
    (tmp_path / "bom.yaml").write_bytes("\ufeffGlobal:\n  output: café\n".encode("utf-8"))  # BOM: still fine
    assert load_config(tmp_path / "bom.yaml").Global.output == "café"


def test_unknown_model_is_a_config_error_listing_the_models():
    from ppyoloe_sod.zoo import list_models

    with pytest.raises(ConfigError, match=r"Global.model is 'PP-YOLOE_plus_SOD-XL'.*not a published model") as e:
        load_config(None, ["Global.model=PP-YOLOE_plus_SOD-XL"])
    assert all(name in str(e.value) for name in list_models())
    assert load_config(None, ["Global.model=ppyoloe_plus_sod_l"]).Global.model == "ppyoloe_plus_sod_l"  # hub alias
    from ppyoloe_sod.zoo import get_spec

    with pytest.raises(ConfigError, match=r"^unknown model 'yolov8'; available: PP-YOLOE_plus_SOD-S"):
        get_spec("yolov8")  # the Python API: a ConfigError too (and still a KeyError for name lookups)
    with pytest.raises(KeyError):
        get_spec("yolov8")


@pytest.mark.parametrize("override,message", [
    ("Train.train_sizes=[320, 330]", r"Train.train_sizes: 330 is not a positive multiple of 32"),
    ("Train.train_sizes=[]", r"Train.train_sizes is empty"),
    ("Train.train_sizes=[0, -32]", r"Train.train_sizes: 0, -32 are not"),
    ("Train.train_sizes=320", r"Train.train_sizes: expected list\[int\] \| None"),
    ("Train.eval_size=100", r"Train.eval_size: 100 is not a positive multiple of 32"),
])
def test_training_sizes_are_validated(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_training_sizes_load():
    cfg = load_config(CONFIGS / "PP-YOLOE_plus_SOD-S.yaml", ["Train.train_sizes=[64, 96]", "Train.eval_size=96"])
    assert cfg.Train.train_sizes == [64, 96] and cfg.Train.eval_size == 96
    assert load_config(CONFIGS / "PP-YOLOE_plus_SOD-S.yaml").Train.train_sizes is None  # the model's own list


def test_every_key_has_a_meaning():
    """The help is generated from the dataclasses' metadata: a key without one would be listed bare."""
    import dataclasses
    import typing

    def walk(cls):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help", "").strip(), f"{cls.__name__}.{f.name} has no help text"
            tp = typing.get_type_hints(cls)[f.name]
            if dataclasses.is_dataclass(tp):
                walk(tp)
    walk(Config)


@pytest.mark.parametrize("name", ["PP-YOLOE_plus_SOD-S", "PP-YOLOE_plus_SOD-L", "PP-YOLOE_plus_SOD-largesize-L"])
def test_shipped_configs_leave_evaluate_weights_to_global_output(name):
    text = (CONFIGS / f"{name}.yaml").read_text()
    assert load_config(CONFIGS / f"{name}.yaml").Evaluate.weight_path is None
    assert "VisDrone | YOLO" in text  # the src_dataset_type comment names every converter
