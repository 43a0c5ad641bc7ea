"""Where the network runs: eager PyTorch or ONNX Runtime, behind one ``run(images) -> RawOutput`` interface.

The predictor does the pre- and post-processing itself, so a backend only maps a float32 RGB batch
``[B, 3, H, W]`` (0..1) to the raw head outputs. ONNX models are exported once per (weights, input size) and
cached under the weights cache folder, keyed by a hash of the weights, so changed weights never reuse a stale
graph.
"""
from __future__ import annotations

import copy
import hashlib
import io
import logging
import sys
import warnings
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from ..fileio import atomic_write_bytes
from ..nn.detector import Detector, RawOutput
from ..weights.store import cache_dir

log = logging.getLogger(__name__)

ONNX_OPSET = 17


class Backend(Protocol):
    name: str
    device: torch.device

    def run(self, images: torch.Tensor) -> RawOutput:
        """Raw outputs for a float32 RGB batch [B, 3, H, W] in 0..1."""
        ...


class TorchBackend:
    """Eager PyTorch on CPU or CUDA, under inference_mode."""

    name = "torch"

    def __init__(self, detector: Detector, device: torch.device):
        self.device = torch.device(device)
        self.detector = detector.to(self.device).eval()

    def run(self, images: torch.Tensor) -> RawOutput:
        with torch.inference_mode():
            return self.detector(images.to(self.device, non_blocking=True))


def weights_digest(detector: Detector) -> str:
    """Short sha256 over the detector's state (names, shapes and values): the ONNX cache key."""
    h = hashlib.sha256()
    for key, t in detector.state_dict().items():
        h.update(key.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def export_onnx(detector: Detector, path: str | Path, input_size: tuple[int, int], opset: int = ONNX_OPSET) -> Path:
    """Export ``detector`` (fused, on CPU) to ONNX at ``input_size`` (h, w) with a dynamic batch axis.

    Inputs: ``images`` float32 [B, 3, h, w] RGB 0..1; outputs ``cls_logits`` [B, L, C], ``reg_logits``
    [B, L, 4 * bins]. Written atomically.
    """
    model = copy.deepcopy(detector).cpu().eval()
    if hasattr(model, "fuse"):
        model.fuse()
    h, w = input_size
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(
            model, (torch.zeros(1, 3, h, w),), buf, dynamo=False, opset_version=opset,
            input_names=["images"], output_names=["cls_logits", "reg_logits"],
            dynamic_axes={"images": {0: "batch"}, "cls_logits": {0: "batch"}, "reg_logits": {0: "batch"}},
        )
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


class OnnxRuntimeBackend:
    """ONNX Runtime (CUDA provider when asked for and available, else CPU)."""

    name = "onnxruntime"

    def __init__(self, onnx_path: str | Path, device: torch.device):
        import onnxruntime as ort

        self.device = torch.device("cpu")
        providers = ["CPUExecutionProvider"]
        if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            idx = torch.device(device).index or 0
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": idx}))
        self.session = ort.InferenceSession(str(onnx_path), providers=providers)
        self.providers = self.session.get_providers()
        self.onnx_path = Path(onnx_path)

    def run(self, images: torch.Tensor) -> RawOutput:
        x = images.detach().cpu().numpy().astype(np.float32, copy=False)
        cls_logits, reg_logits = self.session.run(["cls_logits", "reg_logits"], {"images": x})
        return RawOutput(torch.from_numpy(cls_logits), torch.from_numpy(reg_logits))


def onnx_cache_path(model_name: str, digest: str, input_size: tuple[int, int]) -> Path:
    h, w = input_size
    return cache_dir() / "onnx" / f"{model_name}-{digest}-{h}x{w}-opset{ONNX_OPSET}.onnx"


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def make_backend(detector: Detector, device: torch.device, use_hpip: bool = False,
                 model_name: str = "model", input_size: tuple[int, int] = (640, 640)) -> Backend:
    """Pick the backend: torch by default; with ``use_hpip``, ONNX Runtime when installed (logged either way)."""
    if use_hpip:
        if onnxruntime_available():
            path = onnx_cache_path(model_name, weights_digest(detector), input_size)
            if not path.is_file():
                log.info("Exporting %s to ONNX at %dx%d: %s", model_name, input_size[0], input_size[1], path)
                export_onnx(detector, path, input_size)
            backend = OnnxRuntimeBackend(path, device)
            _announce(f"use_hpip: running {model_name} on ONNX Runtime ({', '.join(backend.providers)}), {path}")
            return backend
        _announce("use_hpip: onnxruntime is not installed (pip install onnxruntime); running on PyTorch instead")
    backend = TorchBackend(detector, device)
    log.info("Running %s on PyTorch (%s)", model_name, backend.device)
    return backend


def _announce(message: str) -> None:
    """The backend pick asked for with use_hpip is always shown, once: logged where INFO records are shown
    (the command line), else printed to stderr."""
    if log.isEnabledFor(logging.INFO) and log.hasHandlers():
        log.info(message)
    else:
        print(message, file=sys.stderr)
