"""PaddleX-style YAML configs as plain dataclasses, with typed ``-o Key.sub=value`` overrides.

The sections and keys follow PaddleX's module configs for these models (``Global``, ``CheckDataset``,
``Train``, ``Evaluate``, ``Export``, ``Predict``), plus a few keys of ours (marked below). Unlike PaddleX,
an unknown key (a typo) is an error that lists the valid keys, and every value is checked against its type.
"""
from __future__ import annotations

import ast
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from .errors import ConfigError

MODES = ("check_dataset", "train", "evaluate", "export", "predict")


@dataclass
class GlobalConfig:
    model: str = "PP-YOLOE_plus_SOD-S"
    mode: str = "predict"  # check_dataset | train | evaluate | export | predict
    dataset_dir: str | None = None
    device: str | None = None  # None: the first GPU if there is one, else the CPU
    output: str = "output"


@dataclass
class ConvertConfig:
    enable: bool = False
    src_dataset_type: str | None = None


@dataclass
class SplitConfig:
    enable: bool = False
    train_percent: int | None = None
    val_percent: int | None = None


@dataclass
class CheckDatasetConfig:
    convert: ConvertConfig = field(default_factory=ConvertConfig)
    split: SplitConfig = field(default_factory=SplitConfig)


@dataclass
class TrainConfig:
    num_classes: int | None = None
    epochs_iters: int = 50
    batch_size: int = 2
    learning_rate: float | None = None
    pretrain_weight_path: str | None = None
    warmup_steps: int | None = None
    resume_path: str | None = None
    log_interval: int = 10
    eval_interval: int = 1
    # ours (see ppyoloe_sod.train.loop.TrainOptions); None keeps the trainer's default
    seed: int | None = None
    num_workers: int | None = None
    amp: str | None = None
    channels_last: bool | None = None
    eval_batch_size: int | None = None
    max_iters: int | None = None
    cosine_epochs: int | None = None


@dataclass
class EvaluateConfig:
    weight_path: str | None = None
    log_interval: int = 10
    batch_size: int = 1  # ours


@dataclass
class ExportConfig:
    weight_path: str | None = None


@dataclass
class KernelOptionConfig:
    run_mode: str = "paddle"  # accepted for PaddleX configs; "onnxruntime" acts as Predict.use_hpip


@dataclass
class PredictConfig:
    batch_size: int = 1
    model_dir: str | None = None  # None: the official weights
    input: str | list[str] | None = None
    kernel_option: KernelOptionConfig = field(default_factory=KernelOptionConfig)
    threshold: float | dict[int, float] | None = None  # ours: as create_model's threshold
    use_hpip: bool = False  # ours: as create_model's use_hpip


@dataclass
class Config:
    Global: GlobalConfig = field(default_factory=GlobalConfig)
    CheckDataset: CheckDatasetConfig = field(default_factory=CheckDatasetConfig)
    Train: TrainConfig = field(default_factory=TrainConfig)
    Evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    Export: ExportConfig = field(default_factory=ExportConfig)
    Predict: PredictConfig = field(default_factory=PredictConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------- type checks

def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "None"
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _check(value: Any, tp: Any, key: str) -> Any:
    """``value`` converted to ``tp`` (int -> float only), or ConfigError naming ``key``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        for arm in args:
            try:
                return _check(value, arm, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    if tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin is list:
        if isinstance(value, (list, tuple)):
            return [_check(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    elif origin is dict:
        if isinstance(value, dict):
            return {_check(k, args[0], f"{key} key"): _check(v, args[1], f"{key}[{k!r}]") for k, v in value.items()}
    elif dataclasses.is_dataclass(tp):
        if value is None:  # an empty section in YAML
            return tp()
        if isinstance(value, dict):
            return _build(tp, value, key)
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    """A ``cls`` instance from a (partial) mapping; unknown keys are errors listing the valid ones."""
    hints = _hints(cls)
    unknown = [k for k in data if k not in hints]
    if unknown:
        where = f" in {prefix}" if prefix else ""
        raise ConfigError(f"Unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}{where}; "
                          f"valid keys: {', '.join(hints)}")
    kwargs = {k: _check(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    return cls(**kwargs)


def _all_keys(cls: type, prefix: str = "") -> list[str]:
    out = []
    for name, tp in _hints(cls).items():
        key = f"{prefix}{name}"
        out.extend(_all_keys(tp, key + ".") if dataclasses.is_dataclass(tp) else [key])
    return out


# -------------------------------------------------------------------------------------------- overrides

def parse_value(text: str) -> Any:
    """Typed value of an override: true/false, None/null, numbers, lists/dicts/tuples; else the text itself."""
    t = text.strip()
    low = t.lower()
    if low in ("none", "null", "~"):
        return None
    if low in ("true", "false"):
        return low == "true"
    try:
        return ast.literal_eval(t)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        pass
    if t.startswith(("[", "{")):
        try:
            return yaml.safe_load(t)  # [a.jpg, b.jpg] without quotes
        except yaml.YAMLError:
            pass
    return t


def _accepts_str(tp: Any) -> bool:
    if tp is str:
        return True
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and str in typing.get_args(tp)


def apply_override(cfg: Config, override: str) -> None:
    """Apply one ``Section.key[.sub]=value`` override in place."""
    if "=" not in override:
        raise ConfigError(f"Override {override!r} must look like Section.key=value, e.g. Global.mode=predict")
    key, raw = override.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"Override key {key!r} must name a key inside a section, e.g. Predict.batch_size; "
                          f"valid keys: {', '.join(_all_keys(Config))}")
    obj: Any = cfg
    for i, part in enumerate(parts):
        hints = _hints(type(obj))
        if part not in hints:
            where = ".".join(parts[:i]) or "the config"
            valid = _all_keys(type(obj), ".".join(parts[:i]) + "." if i else "")
            raise ConfigError(f"Unknown key {key!r} ({part!r} is not in {where}); valid keys: {', '.join(valid)}")
        tp = hints[part]
        if i < len(parts) - 1:
            if not dataclasses.is_dataclass(tp):
                raise ConfigError(f"Override key {key!r}: {'.'.join(parts[:i + 1])} is a value, not a section.")
            obj = getattr(obj, part)
            continue
        if dataclasses.is_dataclass(tp):
            raise ConfigError(f"Override key {key!r} is a section; set one of its keys: "
                              f"{', '.join(_all_keys(tp, key + '.'))}")
        value = parse_value(raw)
        try:
            value = _check(value, tp, key)
        except ConfigError:
            if not _accepts_str(tp):
                raise
            value = raw.strip()  # e.g. Predict.input=123 stays the text "123"
        setattr(obj, part, value)


def _validate(cfg: Config, source: str) -> None:
    if cfg.Global.mode not in MODES:
        raise ConfigError(f"{source}: Global.mode is {cfg.Global.mode!r}; use one of {', '.join(MODES)}")
    for name in ("batch_size", "epochs_iters", "log_interval", "eval_interval"):
        value = getattr(cfg.Train, name)
        if value < 1:
            raise ConfigError(f"{source}: Train.{name} must be >= 1, got {value}")
    for section, name in (("Evaluate", "batch_size"), ("Evaluate", "log_interval"), ("Predict", "batch_size")):
        value = getattr(getattr(cfg, section), name)
        if value < 1:
            raise ConfigError(f"{source}: {section}.{name} must be >= 1, got {value}")


def load_config(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config (None: all defaults), apply ``overrides`` in order, validate; ConfigError otherwise."""
    source = "defaults"
    data: Any = {}
    if path is not None:
        source = str(path)
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"Config file not found: {source}")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{source} is not valid YAML: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected sections (Global, Predict, ...) at the top level, "
                              f"got {type(data).__name__}")
    try:
        cfg = _build(Config, data, "")
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    for override in overrides:
        apply_override(cfg, override)
    _validate(cfg, source)
    return cfg


def dump_config(cfg: Config) -> str:
    """The config as YAML text (for records such as a training run's config.yaml)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True)
