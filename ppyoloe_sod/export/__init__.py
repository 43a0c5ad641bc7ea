"""Export for deployment: a self-describing folder that ``create_model(model_dir=FOLDER)`` runs.

``export_model(model, output_dir, format=..., precision=...)`` and ``Global.mode=export`` write into one folder:
``model_config.json`` (see ``export.config``), ``model.onnx`` (opset 17, dynamic batch, optionally dynamic
height and width) and, for ``format='openvino'``, the OpenVINO IR ``model.xml`` / ``model.bin``; for
``format='tensorrt'`` (TensorRT and an NVIDIA GPU here) the engine ``model.engine`` and its sidecar
``model.engine.json``, built by ``export.tensorrt.export_tensorrt`` as tools/export_trt.py builds them. The
folder is built beside its destination and renamed into place, so an interrupted export leaves the old folder
(if any) whole. The graph is the network alone: decode and NMS run in torch after every backend.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from ..errors import ConfigError, hint
from ..fileio import current_umask, fsync_dir, reporting_disk_full
from .config import (FORMAT_FILES, FORMATS, MODEL_CONFIG, ONNX_FILE, PRECISIONS, ExportedModelConfig,
                     write_model_config)
from .onnx import ONNX_OPSET, export_onnx, tensorrt_problems

__all__ = ["export_model", "run_export", "export_onnx", "write_model_config", "ExportedModelConfig",
           "tensorrt_problems", "ONNX_OPSET", "FORMATS", "PRECISIONS", "MODEL_CONFIG"]

# The precisions each format is made for: ONNX Runtime runs float32; OpenVINO on a CPU float32 or bf16;
# TensorRT on a GPU float32 or fp16.
FORMAT_PRECISIONS = {"onnx": ("fp32",), "openvino": ("fp32", "bf16"), "tensorrt": ("fp32", "fp16")}


def check_export_request(format: str, precision: str) -> None:
    """ConfigError naming the key and the fix, for a format or precision we cannot export (checked before any
    weights are loaded)."""
    fmt_key = hint(python="format", cli="Export.format")
    prec_key = hint(python="precision", cli="Export.precision")
    if format not in FORMATS:
        raise ConfigError(f"{fmt_key} is {format!r}; use one of {', '.join(FORMATS)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"{prec_key} is {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision not in FORMAT_PRECISIONS[format]:
        where = {"bf16": "format openvino (CPUs with bf16)", "fp16": "format tensorrt (GPUs)"}[precision]
        raise ConfigError(f"{prec_key}={precision} does not fit {fmt_key}={format}, which runs "
                          f"{', '.join(FORMAT_PRECISIONS[format])}; {precision} is made with {where}")
    if format == "tensorrt":
        from .tensorrt import engine_requirements_missing

        missing = engine_requirements_missing()
        if missing:
            raise ConfigError(f"{fmt_key}=tensorrt builds a TensorRT engine here, which needs {' and '.join(missing)}"
                              f": pip install 'ppyoloe-sod[tensorrt]' on a machine with an NVIDIA GPU and export "
                              f"there, or export {fmt_key}=onnx now and build the engine later on the machine that "
                              f"runs it: python tools/export_trt.py ONNX_EXPORT_DIR -o TRT_DIR")


def check_target(target: Path) -> None:
    """The export folder may be new, empty, or an earlier export (replaced whole); anything else is refused,
    so an export never mixes into (or deletes) a folder of other files such as a training run."""
    if not target.exists():
        return
    if not target.is_dir():
        raise ConfigError(f"{target} exists and is not a folder; choose another output folder for the export "
                          f"({hint(python='output_dir=...', cli='-o Global.output=DIR')})")
    if any(target.iterdir()) and not (target / MODEL_CONFIG).is_file():
        raise ConfigError(f"{target} already holds files that are not an export (no {MODEL_CONFIG}); export into a "
                          f"new or empty folder ({hint(python='output_dir=...', cli='-o Global.output=DIR')}), "
                          f"e.g. {target / 'inference'}")


def publish_folder(staging: Path, target: Path) -> None:
    """Move the complete ``staging`` folder to ``target`` by renames, so ``target`` is at every moment either
    the old export or the new one, never a mix. An old ``target`` is renamed aside first, then removed."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(target, old)
    try:
        os.rename(staging, target)
    except BaseException:
        if old is not None:
            os.rename(old, target)
        raise
    fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_model(model: Any = "PP-YOLOE_plus_SOD-S", output_dir: str | os.PathLike = "output/inference",
                 weights: str | os.PathLike | None = None, format: str = "onnx", precision: str = "fp32",
                 dynamic_shape: bool = False, input_size: tuple[int, int] | list[int] | None = None) -> Path:
    """Export a model into ``output_dir`` (a new or empty folder, or an earlier export, replaced whole).

    ``model``: a published model name (its ``weights``: None for the published file, else a .safetensors /
    .pdparams file or a folder holding one) or a loaded ``Detector``. ``format``: onnx, openvino (ONNX plus
    OpenVINO IR) or tensorrt (ONNX plus an engine for this machine's TensorRT and GPU, batch 1..8 at
    ``input_size``). ``precision``: what the folder runs at: fp32; bf16 with openvino; fp16 with tensorrt.
    ``dynamic_shape``: the graph also takes other input sizes (multiples of 32; an engine for other sizes:
    tools/export_trt.py --min-size/--max-size); the batch axis is always dynamic. ``input_size``: (h, w) to
    trace at and resize to (default the model's, 640x640). Returns the folder.
    """
    from ..infer.backends import weights_digest
    from ..models import load_model
    from ..zoo import check_input_sizes

    check_export_request(format, precision)
    if input_size is not None:
        size_key = hint(python="input_size", cli="Export.input_size")
        if len(input_size) != 2:
            raise ConfigError(f"{size_key} must be [height, width], got {input_size!r}")
        check_input_sizes(size_key, list(input_size))
        input_size = (int(input_size[0]), int(input_size[1]))
    target = Path(output_dir).expanduser().absolute()
    check_target(target)
    detector = model if not isinstance(model, str) else load_model(model, weights=weights, device="cpu")
    spec = detector.spec
    config = ExportedModelConfig.for_spec(spec, weights_digest(detector, length=64), format, precision,
                                          input_size, dynamic_shape)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".export", dir=target.parent))
    try:
        with reporting_disk_full(staging):
            export_onnx(detector, staging / ONNX_FILE, config.input_size, dynamic_shape=dynamic_shape)
            if format == "openvino":
                from .openvino import export_openvino

                export_openvino(staging / ONNX_FILE, staging / FORMAT_FILES["openvino"][0])
            if format == "tensorrt":  # the ONNX export is the source of tools/export_trt.py's build, here too
                from .tensorrt import export_tensorrt

                write_model_config(staging, dataclasses.replace(config, format="onnx", precision="fp32"))
                return export_tensorrt(staging, target, precision)
            write_model_config(staging, config)
        staging.chmod(0o777 & ~current_umask())  # mkdtemp made it 0700; an export is shared like any folder
        publish_folder(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def run_export(cfg: Any) -> Path:
    """``Global.mode=export``: export ``Global.model`` with ``Export.weight_path`` into ``Global.output``."""
    e = cfg.Export
    folder = export_model(cfg.Global.model, cfg.Global.output, weights=e.weight_path, format=e.format,
                          precision=e.precision, dynamic_shape=e.dynamic_shape, input_size=e.input_size)
    files = ", ".join(sorted(p.name for p in folder.iterdir()))
    print(f"Exported {cfg.Global.model} ({e.format}, {e.precision}) to {folder}: {files}\n"
          f"Run it with -o Global.mode=predict -o Predict.model_dir={folder} (Python: "
          f"create_model('{cfg.Global.model}', model_dir='{folder}'))")
    return folder
