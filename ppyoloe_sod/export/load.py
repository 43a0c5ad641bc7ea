"""Open an export folder for ``create_model(model_dir=FOLDER)``: check it, pick its backend, and stand in for the
network where the predictor needs it after the backend (anchors, DFL projection, spec)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import ConfigError, WeightsError, hint
from ..nn.head import PPYOLOEHead
from ..zoo import ModelSpec
from .config import FORMAT_FILES, ONNX_FILE, read_model_config, verified_file

# The backend each format runs on unless hpi_config names another one that reads the folder.
FORMAT_BACKENDS = {"onnx": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt"}


class ExportedNetwork:
    """What decode and NMS need besides the backend's raw outputs: the spec, the anchor points and the DFL
    projection, computed by the head's own code (a head built one channel wide: its layers are never run)."""

    def __init__(self, spec: ModelSpec):
        arch = spec.arch
        self.spec = spec
        self._head = PPYOLOEHead([1] * len(arch.strides), arch.num_classes, arch.reg_range, arch.strides).eval()

    def anchors(self, h: int, w: int, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self._head.anchors(h, w, device)

    @property
    def proj(self) -> torch.Tensor:
        return self._head.proj_conv.vector


def open_export(folder: str | os.PathLike, model_name: str, device: torch.device,
                hpi_config: Mapping[str, Any] | None = None) -> tuple[ExportedNetwork, Any]:
    """The stand-in network and the backend for an export folder, once ``model_config.json`` is read and the
    files the backend reads match the sha256 it records. The backend is the folder's format's (onnx: ONNX
    Runtime, openvino: OpenVINO, tensorrt: TensorRT) unless ``hpi_config`` names another; the precision the
    folder was exported for unless ``backend_config`` sets one. Announced either way."""
    from ..infer.backends import announce_backend, graph_backend, parse_hpi_config

    folder = Path(folder)
    config = read_model_config(folder)
    if config.model_name != model_name:
        raise WeightsError(f"{folder} is an export of {config.model_name}, not {model_name}: load it with "
                           + hint(python=f"create_model('{config.model_name}', ...)",
                                  cli=f"-o Global.model={config.model_name}"))
    hpi = parse_hpi_config(hpi_config, model_name, device)
    backend_name = hpi.backend or FORMAT_BACKENDS[config.format]
    if backend_name == "torch":
        raise ConfigError(f"{folder} is an exported graph, which backend 'torch' cannot run (it runs weights "
                          f"files): drop the backend to run the export, or load the weights file with "
                          f"{hint(python='create_model(..., model_dir=WEIGHTS)', cli='-o Predict.model_dir=WEIGHTS')}")
    precision = hpi.precision or config.precision
    network = ExportedNetwork(config.spec())
    model_file, *_ = [verified_file(folder, config, name) for name in _model_files(backend_name, config.format)]
    backend = graph_backend(backend_name, model_file, device, hpi.backend_config, precision)
    announce_backend(backend, model_name, picked=False, device=device, source=str(folder))
    return network, backend


def _model_files(backend: str, format: str) -> tuple[str, ...]:
    """The files ``backend`` reads from a folder exported as ``format``, the one it opens first: its own (IR,
    engine) when the folder has them, else the portable model.onnx."""
    if backend == "openvino" and format == "openvino":
        return FORMAT_FILES["openvino"]
    if backend == "tensorrt":
        if format != "tensorrt":
            fix = hint(python="format='tensorrt'", cli="-o Export.format=tensorrt")
            raise ConfigError(f"backend 'tensorrt' runs an engine, which a folder exported as {format} does not "
                              f"hold; export with {fix}")
        return FORMAT_FILES["tensorrt"]
    return (ONNX_FILE,)
