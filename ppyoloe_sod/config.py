"""PaddleX-style YAML configs as plain dataclasses, with typed ``-o Key.sub=value`` overrides.

The sections and keys follow PaddleX's module configs for these models (``Global``, ``CheckDataset``,
``Train``, ``Evaluate``, ``Export``, ``Predict``), plus a few keys of ours (marked below). Unlike PaddleX,
an unknown key (a typo) is an error that lists the valid keys, and every value is checked against its type.
"""
from __future__ import annotations

import ast
import dataclasses
import os
import textwrap
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from .errors import ConfigError
from .zoo import SIZE_MULTIPLE, UnknownModelError, check_input_sizes, get_spec, list_models

MODES = ("check_dataset", "train", "evaluate", "export", "predict", "serve")
OFFICIAL = "official"  # Evaluate.weight_path value meaning the published weights
AMP_MODES = ("auto", "bf16", "fp16", "off")  # Train.amp


def key(default: Any, help: str, ours: bool = False) -> Any:
    """A config key with its default and its one-line meaning, declared once (``--help`` lists them).

    ``ours``: a key PaddleX's configs do not have.
    """
    return field(default=default, metadata={"help": help, "ours": ours})


def section(cls: type, help: str) -> Any:
    """A nested section of keys, with a one-line meaning."""
    return field(default_factory=cls, metadata={"help": help})


@dataclass
class GlobalConfig:
    model: str = key("PP-YOLOE_plus_SOD-S", "the model: " + ", ".join(list_models()))
    mode: str = key("predict", "what to run: " + ", ".join(MODES))
    dataset_dir: str | None = key(None, "dataset folder in PaddleX's COCO layout: images/ and "
                                        "annotations/instance_{train,val}.json")
    device: str | None = key(None, "cpu, gpu, gpu:0, or gpu:0,1 (training: one process per GPU); null: the "
                                   "first GPU if there is one, else the CPU")
    output: str = key("output", "folder for everything a mode writes (results, reports, trained models)")


@dataclass
class ConvertConfig:
    enable: bool = key(False, "convert the annotations to COCO first (the originals are kept as .bak)")
    src_dataset_type: str | None = key(None, "the format to convert from: VOC, LabelMe, VOCWithUnlabeled, "
                                             "LabelMeWithUnlabeled, VisDrone, YOLO")


@dataclass
class SplitConfig:
    enable: bool = key(False, "re-split all train and val images at the percentages below (fixed seed)")
    train_percent: int | None = key(None, "percent of the images for training (with val_percent: sum 100)")
    val_percent: int | None = key(None, "percent of the images for validation")


@dataclass
class CheckDatasetConfig:
    convert: ConvertConfig = section(ConvertConfig, "convert another annotation format to COCO")
    split: SplitConfig = section(SplitConfig, "re-split train and val")


@dataclass
class TrainConfig:
    """The options of a training run, defined once: the ``Train`` keys of a config file, and what Python passes
    to ``ppyoloe_sod.train.launch.train`` (``TrainConfig(epochs_iters=20, batch_size=8)``). :meth:`check` is
    their one validator; ``load_config`` runs it, and so does training for a config built in Python."""

    num_classes: int | None = key(None, "classes in the dataset; null: those of instance_train.json (a "
                                        "different number is an error)")
    epochs_iters: int = key(50, "epochs to train")
    batch_size: int = key(2, "images per batch, per process (GPU)")
    learning_rate: float | None = key(None, "base learning rate (SGD, warmup then cosine decay); null: the "
                                            "model's reference rate")
    pretrain_weight_path: str | None = key(
        None, "starting weights: a .pdparams/.safetensors file, a folder holding one, a URL or a model name; "
              "null: the published weights of Global.model (downloaded once; a custom model built in Python has "
              "none and starts from random initialisation); random: random initialisation")
    warmup_steps: int | None = key(None, "iterations of linear learning-rate warmup; null: one epoch (the "
                                         "reference recipe)")
    resume_path: str | None = key(None, "continue a stopped run: its output folder or its checkpoint.pt")
    log_interval: int = key(10, "log the losses every this many iterations")
    eval_interval: int = key(1, "evaluate on instance_val.json every this many epochs (and after the last)")
    save_interval_iters: int = key(
        1000, "also write a resumable checkpoint every this many iterations within an epoch (one is written at the "
              "end of every epoch); 0: at epoch ends only. 1000 is a few per VisDrone epoch at batch 2", ours=True)
    keep_checkpoints: int = key(3, "resumable checkpoints kept in <Global.output>/checkpoints (older ones are "
                                   "deleted); the newest is also latest/checkpoint.pt", ours=True)
    seed: int = key(0, "random seed of initialisation, data order and augmentation", ours=True)
    num_workers: int = key(2, "data-loading worker processes (0: load in the training process)", ours=True)
    amp: str = key("auto", "mixed precision: " + ", ".join(AMP_MODES) + ". CUDA: auto is bf16 where the GPU has "
                           "it, else fp16. CPU: bf16 trains in bf16 autocast where the CPU runs it natively (AMX-BF16 "
                           "or AVX512-BF16; SOD-S on an idle AMX Xeon: 1.4-1.8x faster on 1-2 threads, 0.9-1.4x on "
                           "8-16, a step's loss moves under 1%) and is refused elsewhere; auto stays float32 (the "
                           "same numbers on every CPU); fp16 is CUDA only", ours=True)
    channels_last: bool | None = key(None, "channels-last memory layout; null: on where mixed precision runs",
                                     ours=True)
    eval_batch_size: int = key(1, "batch size of the evaluations during training", ours=True)
    max_iters: int | None = key(None, "stop after this many iterations in all (quick trials); null: no limit",
                                ours=True)
    cosine_epochs: int = key(96, "epochs over which the learning rate decays: 96 is the reference's (it trains "
                                 "80); epochs_iters when that is larger", ours=True)
    train_sizes: list[int] | None = key(
        None, f"square training sizes, one drawn per batch, each a multiple of {SIZE_MULTIPLE}; null: the model's "
              "reference list (320..768 step 32; 1024..1920 step 64 for largesize-L); e.g. [96, 128] to "
              "fine-tune on a CPU", ours=True)
    eval_size: int | None = key(
        None, f"input size of the evaluations during training, a multiple of {SIZE_MULTIPLE}; null: the model's "
              "input size (640; 1920 for largesize-L), which predict and evaluate always use", ours=True)

    def check(self) -> None:
        """A ConfigError naming ``Train.<key>`` for a value of the wrong type or out of range."""
        hints = _hints(TrainConfig)
        for f in dataclasses.fields(self):
            _check(getattr(self, f.name), hints[f.name], f"Train.{f.name}")
        for name in ("epochs_iters", "batch_size", "log_interval", "eval_interval", "eval_batch_size",
                     "cosine_epochs", "keep_checkpoints", "num_classes", "max_iters"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"Train.{name} must be >= 1, got {value}")
        for name in ("warmup_steps", "num_workers", "save_interval_iters"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"Train.{name} must be >= 0, got {value}")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ConfigError(f"Train.learning_rate must be a positive number, got {self.learning_rate}")
        if self.amp not in AMP_MODES:
            raise ConfigError(f"Train.amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}")
        if self.train_sizes is not None:
            check_input_sizes("Train.train_sizes", self.train_sizes)
        if self.eval_size is not None:
            check_input_sizes("Train.eval_size", [self.eval_size])


@dataclass
class SliceSection:
    enable: bool = key(False, "cut each image into overlapping slices, detect on each and merge the detections "
                              "(small objects in large images); the keys below: ppyoloe_sod.infer.slicing", ours=True)
    preset: str = key("sahi", "whose defaults and merge rules: sahi (SAHI's get_sliced_prediction) or ppdet "
                              "(PaddleDetection's --slice_infer); null keys below take the preset's value", ours=True)
    size: int | list[int] | None = key(None, "slice side in pixels, or [height, width]; null: 640", ours=True)
    overlap: float | list[float] | None = key(None, "overlap of neighbouring slices, a ratio in [0, 1), or [height, "
                                                    "width]; null: 0.2 (sahi), 0.25 (ppdet)", ours=True)
    merge: str | None = key(None, "greedynmm, nmm, nms or concat (ppdet: nms or concat); null: greedynmm (sahi), "
                                  "nms (ppdet)", ours=True)
    match_metric: str | None = key(None, "ios (intersection over the smaller box) or iou; null: ios", ours=True)
    match_threshold: float | None = key(None, "overlap from which boxes merge, in (0, 1]; null: 0.5 (sahi), "
                                              "0.6 (ppdet)", ours=True)
    class_agnostic: bool | None = key(None, "merge boxes of different classes too; null: false", ours=True)
    standard_pred: bool | None = key(None, "also detect on the whole image and merge that in; null: true (sahi), "
                                           "false (ppdet)", ours=True)
    batch_size: int | None = key(None, "slices per forward; null: 2 on a CPU (bigger batches spill its caches), 8 "
                                          "on a GPU", ours=True)


@dataclass
class EvaluateSliceSection(SliceSection):
    threshold: float = key(0.0, "drop each slice's detections scoring at or below this before merging (SAHI's "
                                "model confidence threshold); 0 keeps all, as unsliced evaluation does", ours=True)


@dataclass
class VideoSection:
    stride: int = key(1, "predict every n-th frame of a video input (1: every frame)", ours=True)
    start: int = key(0, "index of the first frame predicted (frames count from 0)", ours=True)
    end: int | None = key(None, "frame index to stop before; null: the last frame", ours=True)


@dataclass
class EvaluateConfig:
    weight_path: str | None = key(None, "weights to evaluate: a .safetensors/.pdparams file or a folder holding "
                                        f"one; null: <Global.output>/best_model (what training "
                                        f"wrote); {OFFICIAL}: the published weights of Global.model")
    log_interval: int = key(10, "accepted for PaddleX's configs; unused (a progress bar shows the progress)")
    batch_size: int = key(1, "images per batch", ours=True)
    slice: EvaluateSliceSection = section(EvaluateSliceSection, "sliced evaluation (enable=true): each image "
                                                                "detected in slices, as Predict.slice")


@dataclass
class ExportConfig:
    weight_path: str | None = key(None, "weights to export: a .safetensors/.pdparams file or a folder holding one; "
                                        "null: the published weights of Global.model")
    format: str = key("onnx", "onnx (model.onnx), openvino (model.onnx plus OpenVINO IR model.xml/.bin) or tensorrt "
                              "(model.onnx plus model.engine and model.engine.json, built here: needs TensorRT and an "
                              "NVIDIA GPU); written with model_config.json into Global.output", ours=True)
    precision: str = key("fp32", "what the export runs at: fp32; bf16 with format openvino (CPUs with bf16); "
                                 "fp16 with format tensorrt", ours=True)
    dynamic_shape: bool = key(False, "the graph also takes input sizes other than input_size (multiples of "
                                     f"{SIZE_MULTIPLE}); the batch size is always free", ours=True)
    input_size: list[int] | None = key(None, "[height, width] the graph is traced at and predict resizes to, "
                                             f"multiples of {SIZE_MULTIPLE}; null: the model's (640x640)",
                                       ours=True)


@dataclass
class KernelOptionConfig:
    run_mode: str = key("paddle", "accepted for PaddleX's configs; onnxruntime or openvino: Predict.use_hpip=true "
                                  "on that backend")


@dataclass
class RaySection:
    num_workers: int = key(1, "Ray actors, each holding the model", ours=True)
    batch_size: int = key(1, "images per actor call and per forward", ours=True)
    num_gpus_per_worker: float = key(0, "GPUs per actor: 0 runs on CPUs, 1 gives each actor a GPU, 0.5 lets two "
                                        "share one", ours=True)
    num_cpus_per_worker: float = key(1, "CPUs reserved per actor", ours=True)
    output_format: str = key("json", "json (one <stem>_res.json per image, as the local engine writes) or parquet",
                             ours=True)


@dataclass
class PredictConfig:
    batch_size: int = key(1, "images per batch")
    model_dir: str | None = key(None, "weights: a .safetensors/.pdparams file or a folder holding one (e.g. "
                                      "output/best_model); null: the published weights of Global.model")
    input: str | list[str] | None = key(None, "what to detect on: an image file, folder, URL, PDF or video file "
                                              "(mp4, avi, mov, mkv, m4v), or a list of them")
    kernel_option: KernelOptionConfig = section(KernelOptionConfig, "PaddleX's inference engine options")
    threshold: float | dict[int, float] | None = key(
        None, "score threshold of the results: a float, or per class {0: 0.4, 3: 0.6} (other classes 0.5); "
              "null: 0.5", ours=True)
    use_hpip: bool = key(False, "run the network on the fastest float32 backend installed (OpenVINO, then ONNX "
                                "Runtime on a CPU; TensorRT on a GPU; exported once and cached) and say which",
                         ours=True)
    # ours: the pixel guard and the report of predict (ppyoloe_sod.infer.predictor.run_predict)
    max_pixels: int | None = key(178_956_970, "refuse images above this many pixels (width * height, read from "
                                              "the file header before decoding); null: no limit", ours=True)
    print: str = key("summary", "what to print per image: summary (one line), full (the result's JSON, as "
                                "PaddleX does) or none", ours=True)
    slice: SliceSection = section(SliceSection, "sliced inference (enable=true): detect on overlapping slices of "
                                                "each image and merge")
    video: VideoSection = section(VideoSection, "which frames of a video input (mp4, avi, mov, mkv, m4v) are "
                                                "predicted; a frame's result has page_index = its index")
    save_video: bool = key(False, "write the drawings of a video's frames into <Global.output>/<stem>_res.mp4 "
                                  "(at the video's fps / video.stride) instead of one picture per frame", ours=True)
    engine: str = key("local", "local (this process) or ray (Ray Data actors: the cluster at RAY_ADDRESS, else a "
                               "local Ray; pip install 'ppyoloe-sod[ray]')", ours=True)
    ray: RaySection = section(RaySection, "the actor pool of Predict.engine=ray (ppyoloe_sod.batch.predict_ray)")


@dataclass
class ServeConfig:
    """Global.mode=serve: PaddleX's HTTP API for the model that Predict loads (Predict.model_dir, threshold, ...)."""

    host: str = key("127.0.0.1", "address to listen on; 0.0.0.0 accepts connections from other machines", ours=True)
    port: int = key(8080, "TCP port (PaddleX's default); 0: any free port (the log says which)", ours=True)
    workers: int = key(1, "server processes, each with its own copy of the model", ours=True)
    max_batch_size: int = key(8, "requests run together in one forward at most; 1: no batching", ours=True)
    max_wait_ms: float = key(5.0, "how long the first request of a batch waits for others to join", ours=True)
    max_queue: int = key(64, "requests waiting for the model at most (per process); more are answered 503",
                         ours=True)
    visualize: bool = key(True, "return the drawing when a request leaves visualize unset (PaddleX's default)",
                          ours=True)
    max_body_mb: float = key(140.0, "largest request body in MiB (base64 makes a file 4/3 larger); larger is "
                                    "answered 413", ours=True)
    url_timeout_s: float = key(30.0, "deadline for downloading an image given by URL", ours=True)


@dataclass
class Config:
    Global: GlobalConfig = section(GlobalConfig, "read by every mode")
    CheckDataset: CheckDatasetConfig = section(CheckDatasetConfig, "read by Global.mode=check_dataset")
    Train: TrainConfig = section(TrainConfig, "read by Global.mode=train and python -m ppyoloe_sod.train")
    Evaluate: EvaluateConfig = section(EvaluateConfig, "read by Global.mode=evaluate")
    Export: ExportConfig = section(ExportConfig, "read by Global.mode=export")
    Predict: PredictConfig = section(PredictConfig, "read by Global.mode=predict")
    Serve: ServeConfig = section(ServeConfig, "read by Global.mode=serve (with Predict's model keys)")

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


# ------------------------------------------------------------------------------------------------- help

def _default_text(value: Any) -> str:
    """A default as one writes it in a config or an override."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return str(value)


def describe_keys(sections: Sequence[str] | None = None, skip: Sequence[str] = (), width: int = 100) -> str:
    """Each key of ``sections`` (default all) but ``skip``: name, type, default and meaning, for ``--help``.

    Generated from the dataclasses above, so the help cannot drift from the keys the config accepts.
    """
    lines: list[str] = []

    def walk(cls: type, prefix: str) -> None:
        hints, defaults = _hints(cls), cls()
        for f in dataclasses.fields(cls):
            name, tp, meaning = f"{prefix}{f.name}", hints[f.name], f.metadata.get("help", "")
            if name in skip:
                continue
            if dataclasses.is_dataclass(tp):
                if prefix:  # a sub-section: its keys follow, one level deeper
                    lines.append(f"  {name}.*: {meaning}")
                walk(tp, name + ".")
                continue
            ours = " [not in PaddleX]" if f.metadata.get("ours") else ""
            lines.append(f"  {name}  ({_type_name(tp)}, default {_default_text(getattr(defaults, f.name))}){ours}")
            lines.extend(textwrap.wrap(meaning, width, initial_indent=" " * 6, subsequent_indent=" " * 6,
                                       break_on_hyphens=False))

    hints = _hints(Config)
    for f in dataclasses.fields(Config):
        if sections is None or f.name in sections:
            lines.append(f"{f.name} keys, {f.metadata['help']}:")
            walk(hints[f.name], f.name + ".")
    return "\n".join(lines)


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
    try:
        get_spec(cfg.Global.model)
    except UnknownModelError:
        raise ConfigError(f"{source}: Global.model is {cfg.Global.model!r}, which is not a published model; use "
                          f"one of {', '.join(list_models())}") from None
    for section_name, name in (("Evaluate", "batch_size"), ("Evaluate", "log_interval"), ("Predict", "batch_size")):
        value = getattr(getattr(cfg, section_name), name)
        if value < 1:
            raise ConfigError(f"{source}: {section_name}.{name} must be >= 1, got {value}")
    try:
        cfg.Train.check()
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


class _DuplicateKeyError(yaml.YAMLError):
    pass


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error (YAML keeps the last one
    silently, so a forgotten earlier line would win or lose without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *anchor" may be overridden on purpose
                continue
            name = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if name in first_line:
                    raise _DuplicateKeyError(f"key {name!r} appears twice in one mapping, on lines "
                                             f"{first_line[name]} and {line}; keep one of them")
                first_line[name] = line
            except TypeError:  # an unhashable key: the base constructor reports it
                break
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path, source: str) -> Any:
    """The YAML document at ``path``, or a ConfigError that says what is wrong with the file."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{source} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                          f"save it with UTF-8 encoding") from None
    except OSError as e:
        raise ConfigError(f"Cannot read the config file {source}: {e.strerror or e}") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except _DuplicateKeyError as e:
        raise ConfigError(f"{source}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{source} is not valid YAML: {e}") from None


def load_config(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config (None: all defaults), apply ``overrides`` in order, validate; ConfigError otherwise."""
    source = "defaults"
    data: Any = {}
    if path is not None:
        source = str(path)
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"Config file not found: {source}")
        data = _read_yaml(p, source) or {}
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
