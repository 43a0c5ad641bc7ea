"""``model_config.json``: what makes an export folder self-describing (like PaddleX's inference.yml).

It records the model (name, classes, input size, the decode and NMS settings the predictor applies after the
network), where the weights came from (``weights_digest``), the format and precision the folder was made for,
and the sha256 of every file in it, so a folder whose graph or engine was swapped or damaged is refused when it
is loaded instead of giving wrong boxes.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..errors import WeightsError, hint
from ..fileio import atomic_write_json
from ..weights.store import sha256_file
from ..zoo import SIZE_MULTIPLE, ModelSpec, NMSSpec, UnknownModelError, get_spec
from .onnx import INPUT_NAME, ONNX_OPSET, OUTPUT_NAMES

MODEL_CONFIG = "model_config.json"
CONFIG_VERSION = 1
MAX_CONFIG_BYTES = 1 << 20  # a model_config.json is a few kB; anything near this is not one

FORMATS = ("onnx", "openvino", "tensorrt")
PRECISIONS = ("fp32", "fp16", "bf16")
ONNX_FILE = "model.onnx"
# The files each format adds next to model.onnx (always written: the portable graph every backend can read),
# the one its backend opens first. TensorRT's sidecar (which TensorRT and GPU the engine is for) is hashed too.
FORMAT_FILES = {"onnx": (), "openvino": ("model.xml", "model.bin"), "tensorrt": ("model.engine", "model.engine.json")}
# Files that mark a folder as an export (so one without model_config.json is named as a broken export).
EXPORT_FILES = (ONNX_FILE, *(name for names in FORMAT_FILES.values() for name in names))


@dataclass(frozen=True)
class ExportedModelConfig:
    """The content of ``model_config.json``."""

    model_name: str
    classes: tuple[str, ...]
    input_size: tuple[int, int]  # (h, w) the predictor resizes to
    dynamic_shape: bool  # the graph also takes other multiples of 32 (the batch axis is always dynamic)
    nms: NMSSpec
    draw_threshold: float
    weights_digest: str  # sha256 over the exported weights (names, shapes, values): which weights these are
    format: str
    precision: str
    files: Mapping[str, str] = field(default_factory=dict)  # file name -> sha256
    opset: int = ONNX_OPSET

    @classmethod
    def for_spec(cls, spec: ModelSpec, weights_digest: str, format: str, precision: str = "fp32",
                 input_size: tuple[int, int] | None = None, dynamic_shape: bool = False) -> "ExportedModelConfig":
        """The record of ``spec``'s network exported as ``format`` (files are hashed when it is written)."""
        return cls(spec.name, tuple(spec.classes), tuple(input_size or spec.input_size), bool(dynamic_shape),
                   spec.nms, float(spec.draw_threshold), weights_digest, format, precision)

    def spec(self) -> ModelSpec:
        """The published model's spec with this folder's classes, input size and NMS settings."""
        spec = get_spec(self.model_name).with_classes(self.classes)
        return dataclasses.replace(spec, input_size=self.input_size, nms=self.nms, draw_threshold=self.draw_threshold)

    def to_json(self) -> dict[str, Any]:
        from .. import __version__  # the package __init__ imports the predictor, which imports this module

        return {
            "config_version": CONFIG_VERSION,
            "producer": f"ppyoloe_sod {__version__}",
            "model_name": self.model_name,
            "classes": list(self.classes),
            "input": {"name": INPUT_NAME, "layout": "NCHW", "color": "RGB", "dtype": "float32",
                      "scale": "pixel / 255 (0..1)", "size": list(self.input_size),
                      "dynamic_batch": True, "dynamic_shape": self.dynamic_shape, "size_multiple": SIZE_MULTIPLE},
            "outputs": list(OUTPUT_NAMES),
            "postprocess": {"nms": dataclasses.asdict(self.nms), "draw_threshold": self.draw_threshold},
            "weights_digest": self.weights_digest,
            "format": self.format,
            "precision": self.precision,
            "opset": self.opset,
            "files": {name: {"sha256": digest} for name, digest in sorted(self.files.items())},
        }


def write_model_config(folder: str | os.PathLike, config: ExportedModelConfig) -> ExportedModelConfig:
    """Hash the files ``config.format`` puts in ``folder`` and write ``folder/model_config.json``; returns the
    config with the hashes. The last step of every export (the TensorRT builder's too)."""
    folder = Path(folder)
    names = (ONNX_FILE, *FORMAT_FILES[config.format])
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise WeightsError(f"{folder}: cannot describe the export, {', '.join(missing)} missing")
    config = dataclasses.replace(config, files={n: sha256_file(folder / n) for n in names})
    atomic_write_json(folder / MODEL_CONFIG, config.to_json())
    return config


def is_export_dir(path: str | os.PathLike) -> bool:
    """A folder holding ``model_config.json`` or any file only an export writes (model.onnx, model.xml...)."""
    p = Path(path)
    return p.is_dir() and any((p / n).exists() for n in (MODEL_CONFIG, *EXPORT_FILES))


def _bad(folder: Path, what: str) -> WeightsError:
    fix = hint(python="export_model(...)", cli="-o Global.mode=export")
    return WeightsError(f"{folder / MODEL_CONFIG}: {what}. Export the model again ({fix}).")


def read_model_config(folder: str | os.PathLike) -> ExportedModelConfig:
    """The checked ``model_config.json`` of an export folder; WeightsError naming the file and what is wrong."""
    folder = Path(folder)
    path = folder / MODEL_CONFIG
    if not path.is_file():
        found = [n for n in EXPORT_FILES if (folder / n).exists()]
        raise WeightsError(f"{folder} has {', '.join(found) or 'no model files'} but no {MODEL_CONFIG}, which "
                           f"says what model it is and how to run it: export it with ppyoloe_sod "
                           f"({hint(python='export_model(...)', cli='-o Global.mode=export')}), which writes both.")
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise _bad(folder, f"{path.stat().st_size} bytes, far more than a model config")
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise _bad(folder, f"not readable JSON ({e})") from None
    if not isinstance(data, dict):
        raise _bad(folder, "expected a JSON object")
    return _parse(folder, data)


def _get(folder: Path, data: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise _bad(folder, f"{key!r} is {value!r}, expected {getattr(kind, '__name__', kind)}")
    return value


def _parse(folder: Path, data: Mapping[str, Any]) -> ExportedModelConfig:
    version = data.get("config_version")
    if version != CONFIG_VERSION:
        raise _bad(folder, f"config_version {version!r}; this ppyoloe_sod reads version {CONFIG_VERSION}")
    name = _get(folder, data, "model_name", str)
    try:
        get_spec(name)
    except UnknownModelError:
        raise _bad(folder, f"unknown model {name!r}") from None
    classes = _get(folder, data, "classes", list)
    if not classes or not all(isinstance(c, str) and c.strip() for c in classes):
        raise _bad(folder, "'classes' must be a non-empty list of class names")
    inp = _get(folder, data, "input", dict)
    size = inp.get("size")
    if not (isinstance(size, list) and len(size) == 2
            and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 and s % SIZE_MULTIPLE == 0
                    for s in size)):
        raise _bad(folder, f"input size {size!r} is not [h, w] in positive multiples of {SIZE_MULTIPLE}")
    post = _get(folder, data, "postprocess", dict)
    try:
        nms = NMSSpec(**post["nms"])
        draw_threshold = float(post["draw_threshold"])
    except (KeyError, TypeError, ValueError) as e:
        raise _bad(folder, f"'postprocess' is not NMS settings and a draw threshold ({e})") from None
    fmt, precision = _get(folder, data, "format", str), _get(folder, data, "precision", str)
    if fmt not in FORMATS or precision not in PRECISIONS:
        raise _bad(folder, f"format {fmt!r} / precision {precision!r}; expected one of {FORMATS} / {PRECISIONS}")
    files = _get(folder, data, "files", dict)
    try:
        hashes = {str(n): str(entry["sha256"]) for n, entry in files.items()}
    except (TypeError, KeyError):
        raise _bad(folder, "'files' must map each file name to {\"sha256\": ...}") from None
    return ExportedModelConfig(name, tuple(classes), (size[0], size[1]), bool(inp.get("dynamic_shape", False)), nms,
                               draw_threshold, _get(folder, data, "weights_digest", str), fmt, precision, hashes,
                               _get(folder, data, "opset", int))


def verified_file(folder: str | os.PathLike, config: ExportedModelConfig, name: str) -> Path:
    """``folder/name``, once its sha256 matches the one ``model_config.json`` records; WeightsError otherwise."""
    folder = Path(folder)
    path = folder / name
    expected = config.files.get(name)
    if expected is None:
        raise _bad(folder, f"it lists no {name} (it lists {', '.join(config.files) or 'no files'})")
    if not path.is_file():
        raise WeightsError(f"{path} is missing from the export folder (its {MODEL_CONFIG} lists it). Export the "
                           f"model again ({hint(python='export_model(...)', cli='-o Global.mode=export')}).")
    actual = sha256_file(path)
    if actual != expected:
        raise WeightsError(f"{path} does not match {MODEL_CONFIG} (sha256 {actual[:12]}..., recorded "
                           f"{expected[:12]}...): the file was changed or replaced after the export. Export the "
                           f"model again ({hint(python='export_model(...)', cli='-o Global.mode=export')}) "
                           f"rather than mixing files of two exports.")
    return path
