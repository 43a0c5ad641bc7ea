"""Where the network runs: eager PyTorch, ONNX Runtime, OpenVINO or TensorRT, behind one ``run(images) -> RawOutput``.

The predictor does the pre- and post-processing itself, so a backend only maps a float32 RGB batch
``[B, 3, H, W]`` (0..1) to the raw head outputs; decode and the Paddle-exact NMS run in torch after it.

``use_hpip`` picks a backend as PaddleX 3.x's high-performance inference does, configured by the same
``hpi_config`` dict: ``{"backend": "openvino" | "onnxruntime" | "tensorrt" | "torch", "backend_config": {...}}``.
Without a backend named, it takes the fastest one installed that keeps float32 results (OpenVINO, then ONNX
Runtime on a CPU; TensorRT, then torch on a GPU) and says which. The precision is never chosen silently:
float32 unless ``backend_config["precision"]`` asks for bf16 (or fp16 on a GPU), and the pick says which ran.
Graphs for ``use_hpip`` are exported once per (weights, input size) and cached under the weights cache folder,
keyed by a hash of the weights, so changed weights never reuse a stale graph.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol

import numpy as np
import torch

from ..errors import ConfigError, hint
from ..export.onnx import INPUT_NAME, ONNX_OPSET, OUTPUT_NAMES, export_onnx
from ..nn.detector import Detector, RawOutput
from ..weights.store import cache_dir

log = logging.getLogger(__name__)

BACKENDS = ("openvino", "onnxruntime", "tensorrt", "torch")
BACKEND_TITLES = {"openvino": "OpenVINO", "onnxruntime": "ONNX Runtime", "tensorrt": "TensorRT", "torch": "PyTorch"}
PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT")
# OpenVINO's names of the precisions we offer
OPENVINO_PRECISIONS = {"fp32": "f32", "bf16": "bf16"}
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# backend_config keys per backend: PaddleX 3.x's (cpu_num_threads; TensorRT's precision and dynamic shapes) and
# ours (precision and performance_hint where PaddleX has none).
BACKEND_CONFIG_KEYS = {
    "openvino": ("cpu_num_threads", "precision", "performance_hint"),
    "onnxruntime": ("cpu_num_threads", "precision"),
    "tensorrt": ("precision", "use_dynamic_shapes", "dynamic_shapes"),
    "torch": ("precision",),
}
BACKEND_PRECISIONS = {"openvino": ("fp32", "bf16"), "onnxruntime": ("fp32",), "tensorrt": ("fp32", "fp16"),
                      "torch": ("fp32", "bf16", "fp16")}
# hpi_config keys PaddleX's HPIConfig has beyond backend / backend_config: checked against the call where they
# can disagree with it (model_name, device_type, device_id), accepted as they are otherwise.
HPI_KEYS = ("backend", "backend_config", "auto_config", "model_name", "device_type", "device_id",
            "auto_paddle2onnx", "hpi_info")


class Backend(Protocol):
    name: str
    device: torch.device

    def run(self, images: torch.Tensor) -> RawOutput:
        """Raw outputs for a float32 RGB batch [B, 3, H, W] in 0..1."""
        ...


# ------------------------------------------------------------------------------------------- hpi_config

@dataclass(frozen=True)
class HpiConfig:
    """A checked ``hpi_config``: the backend asked for (None: pick one) and its settings."""

    backend: str | None = None
    backend_config: Mapping[str, Any] = field(default_factory=dict)

    @property
    def precision(self) -> str | None:
        return self.backend_config.get("precision")


def _hpi_name(key: str) -> str:
    return hint(python=f"hpi_config[{key!r}]", cli=f"hpi_config.{key}")


def parse_hpi_config(hpi_config: Mapping[str, Any] | None, model_name: str | None = None,
                     device: torch.device | None = None) -> HpiConfig:
    """Check ``hpi_config`` (PaddleX 3.x's shape) and return what it asks for; ConfigError naming the key."""
    if hpi_config is None:
        return HpiConfig()
    if hasattr(hpi_config, "model_dump"):  # PaddleX's HPIConfig object
        hpi_config = hpi_config.model_dump(exclude_none=True, by_alias=True)
    if not isinstance(hpi_config, Mapping):
        raise ConfigError(f"hpi_config must be a dict such as {{'backend': 'openvino'}}, got {hpi_config!r}")
    unknown = [k for k in hpi_config if k not in HPI_KEYS]
    if unknown:
        raise ConfigError(f"hpi_config has unknown key(s) {', '.join(map(repr, unknown))}; valid keys: "
                          f"{', '.join(HPI_KEYS)}")
    backend = hpi_config.get("backend")
    if backend == "paddle":
        raise ConfigError(f"{_hpi_name('backend')}='paddle' is PaddleX's Paddle Inference; here the network itself "
                          f"runs as backend 'torch'. Use one of {', '.join(BACKENDS)}.")
    if backend is not None and backend not in BACKENDS:
        raise ConfigError(f"{_hpi_name('backend')} is {backend!r}; use one of {', '.join(BACKENDS)} (or leave it "
                          f"out to pick the fastest one installed)")
    if hpi_config.get("auto_config") is False and backend is None:
        raise ConfigError(f"hpi_config has auto_config=False but no backend; name one ({', '.join(BACKENDS)}) or "
                          f"drop auto_config")
    _check_hpi_context(hpi_config, model_name, device)
    config = hpi_config.get("backend_config") or {}
    if not isinstance(config, Mapping):
        raise ConfigError(f"{_hpi_name('backend_config')} must be a dict, got {config!r}")
    if config and backend is None:
        raise ConfigError(f"{_hpi_name('backend_config')} is set but no backend: its keys depend on the backend, "
                          f"so name one with {_hpi_name('backend')} ({', '.join(BACKENDS)})")
    if backend is not None:
        _check_backend_config(backend, config)
    return HpiConfig(backend, dict(config))


def _check_hpi_context(hpi_config: Mapping[str, Any], model_name: str | None, device: torch.device | None) -> None:
    """PaddleX's model_name / device_type / device_id keys must agree with the call they come with."""
    name = hpi_config.get("model_name")
    if name is not None and model_name is not None and name != model_name:
        raise ConfigError(f"{_hpi_name('model_name')} is {name!r} but the model is {model_name!r}; drop the key")
    kind = hpi_config.get("device_type")
    if kind is not None and device is not None and kind != ("gpu" if device.type == "cuda" else device.type):
        raise ConfigError(f"{_hpi_name('device_type')} is {kind!r} but the model runs on {device}; drop the key or "
                          f"set the device instead")
    index = hpi_config.get("device_id")
    if index is not None and device is not None and device.type == "cuda" and index != (device.index or 0):
        raise ConfigError(f"{_hpi_name('device_id')} is {index!r} but the model runs on {device}; drop the key")


def _check_backend_config(backend: str, config: Mapping[str, Any]) -> None:
    valid = BACKEND_CONFIG_KEYS[backend]
    unknown = [k for k in config if k not in valid]
    if unknown:
        raise ConfigError(f"{_hpi_name('backend_config')} has unknown key(s) {', '.join(map(repr, unknown))} for "
                          f"backend {backend!r}; valid keys: {', '.join(valid)}")
    threads = config.get("cpu_num_threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"backend_config cpu_num_threads must be a positive integer, got {threads!r}")
    perf = config.get("performance_hint")
    if perf is not None and perf not in PERFORMANCE_HINTS:
        raise ConfigError(f"backend_config performance_hint is {perf!r}; use LATENCY (one request at a time, "
                          f"what predict does) or THROUGHPUT (several requests in parallel)")
    precision = config.get("precision")
    if precision is not None:
        check_precision(backend, precision)


def check_precision(backend: str, precision: str) -> str:
    """``precision`` if ``backend`` offers it; ConfigError saying which backend offers it otherwise."""
    offered = BACKEND_PRECISIONS[backend]
    if precision in offered:
        return precision
    elsewhere = {"bf16": "backend 'openvino' on a CPU with bf16 (or 'torch')",
                 "fp16": "a GPU: backend 'tensorrt' or 'torch'"}.get(precision)
    where = f"; {precision} runs on {elsewhere}" if elsewhere else ""
    raise ConfigError(f"precision {precision!r} is not offered by backend {backend!r} (it runs "
                      f"{', '.join(offered)}){where}")


# -------------------------------------------------------------------------------------------- backends

class TorchBackend:
    """Eager PyTorch on CPU or CUDA, under inference_mode; bf16 / fp16 through autocast (fp16: CUDA only)."""

    name = "torch"

    def __init__(self, detector: Detector, device: torch.device, precision: str = "fp32"):
        self.device = torch.device(device)
        self.precision = check_precision("torch", precision)
        if precision == "fp16" and self.device.type != "cuda":
            raise ConfigError("precision 'fp16' with backend 'torch' needs a GPU (CPUs run fp16 slowly, if at all); "
                              "use 'bf16' or 'fp32' on the CPU")
        self.detector = detector.to(self.device).eval()

    def run(self, images: torch.Tensor) -> RawOutput:
        x = images.to(self.device, non_blocking=True)
        autocast = (torch.autocast(self.device.type, dtype=TORCH_DTYPES[self.precision])
                    if self.precision != "fp32" else contextlib.nullcontext())
        with torch.inference_mode(), autocast:
            raw = self.detector(x)
        return RawOutput(raw.cls_logits.float(), raw.reg_logits.float())

    def describe(self) -> str:
        return f"{self.device}, {self.precision}"


class OnnxRuntimeBackend:
    """ONNX Runtime (CUDA provider when asked for and available, else CPU); float32 only."""

    name = "onnxruntime"
    precision = "fp32"

    def __init__(self, onnx_path: str | Path, device: torch.device, num_threads: int | None = None):
        ort = _import_backend("onnxruntime")
        self.device = torch.device("cpu")
        providers: list[Any] = ["CPUExecutionProvider"]
        if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            idx = torch.device(device).index or 0
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": idx}))
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
        self.num_threads = num_threads
        self.session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=providers)
        self.providers = self.session.get_providers()
        self.onnx_path = Path(onnx_path)

    def run(self, images: torch.Tensor) -> RawOutput:
        x = images.detach().cpu().numpy().astype(np.float32, copy=False)
        cls_logits, reg_logits = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: x})
        return RawOutput(torch.from_numpy(cls_logits), torch.from_numpy(reg_logits))

    def describe(self) -> str:
        threads = f", {self.num_threads} threads" if self.num_threads else ""
        return f"{', '.join(self.providers)}, fp32{threads}"


class OpenVINOBackend:
    """OpenVINO on the CPU, from an IR (model.xml) or an ONNX file.

    The inference precision is always set, never left to OpenVINO: on CPUs with AMX or AVX512-BF16 its own
    default is bf16, which moves scores by about 1e-2. ``fp32`` (the default) keeps the PyTorch results.
    """

    name = "openvino"

    def __init__(self, model_path: str | Path, device: torch.device, precision: str = "fp32",
                 num_threads: int | None = None, performance_hint: str = "LATENCY"):
        if torch.device(device).type != "cpu":
            raise ConfigError(f"backend 'openvino' runs on the CPU here, not {device}; use "
                              f"{hint(python='device=' + repr('cpu'), cli='-o Global.device=cpu')}, or backend "
                              f"'tensorrt' / 'torch' on the GPU")
        ov = _import_backend("openvino")
        self.device = torch.device("cpu")
        self.precision = check_precision("openvino", precision)
        core = ov.Core()
        if precision == "bf16" and not openvino_cpu_has_bf16(core):
            raise ConfigError("precision 'bf16' was asked for, but this CPU has no bf16 support (OpenVINO lists "
                              f"{', '.join(core.get_property('CPU', 'OPTIMIZATION_CAPABILITIES'))}); refusing "
                              "rather than running it emulated or in another precision: use precision 'fp32'")
        properties: dict[str, Any] = {"INFERENCE_PRECISION_HINT": OPENVINO_PRECISIONS[precision],
                                      "PERFORMANCE_HINT": performance_hint}
        if num_threads:
            properties["INFERENCE_NUM_THREADS"] = num_threads
        self.model_path = Path(model_path)
        self.compiled = core.compile_model(core.read_model(str(model_path)), "CPU", properties)
        self.request = self.compiled.create_infer_request()
        self.version = ov.__version__.split("-")[0]

    def property(self, name: str) -> str:
        """A property of the compiled model as OpenVINO reports it (e.g. INFERENCE_PRECISION_HINT: 'f32')."""
        value = self.compiled.get_property(name)
        return value.get_type_name() if hasattr(value, "get_type_name") else str(value)

    def run(self, images: torch.Tensor) -> RawOutput:
        x = images.detach().cpu().numpy().astype(np.float32, copy=False)
        results = self.request.infer({INPUT_NAME: x})
        by_name = {out.get_any_name(): value for out, value in results.items()}
        return RawOutput(*(torch.from_numpy(np.array(by_name[n], dtype=np.float32)) for n in OUTPUT_NAMES))

    def describe(self) -> str:
        return (f"OpenVINO {self.version}, CPU, {self.property('INFERENCE_PRECISION_HINT')}, "
                f"{self.property('PERFORMANCE_HINT')}, {self.property('INFERENCE_NUM_THREADS')} threads")


def openvino_cpu_has_bf16(core: Any) -> bool:
    """OpenVINO's CPU plugin lists BF16 among its capabilities on CPUs with native bf16 (AMX, AVX512-BF16)."""
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def check_tensorrt_here(device: torch.device | None = None) -> None:
    """ConfigError unless TensorRT imports here and (when given) ``device`` is a GPU: backend 'tensorrt' needs
    both (TensorRTBackend checks the device of an engine it opens itself)."""
    if not tensorrt_available():
        raise ConfigError(f"backend 'tensorrt' needs TensorRT, which is not installed: {TENSORRT_INSTALL}; or use "
                          f"backend 'torch' on the GPU")
    if device is not None and torch.device(device).type != "cuda":
        raise ConfigError(f"backend 'tensorrt' runs on an NVIDIA GPU, not on {device}; use "
                          f"{hint(python='device=' + repr('gpu'), cli='-o Global.device=gpu')}, or backend "
                          f"'openvino' / 'onnxruntime' on the CPU")


def make_tensorrt_backend(engine_path: str | Path | None, device: torch.device, precision: str = "fp32") -> Backend:
    """TensorRT on an engine (an export folder's model.engine, or one ``tensorrt_engine_for`` cached for a
    weights file), checked against its sidecar by TensorRTBackend (infer/tensorrt_backend.py)."""
    check_tensorrt_here()
    if engine_path is None:
        raise ConfigError("backend 'tensorrt' runs an engine built from an export: python tools/export_trt.py "
                          "EXPORT_DIR -o TRT_DIR, then load TRT_DIR as model_dir; or use backend 'torch' on the GPU")
    from .tensorrt_backend import TensorRTBackend

    return TensorRTBackend(engine_path, device, precision)


def tensorrt_engine_for(detector: Detector, model_name: str, input_size: tuple[int, int], device: torch.device,
                        precision: str) -> Path:
    """use_hpip with TensorRT on a weights file: the engine of its cached ONNX graph, built on first use (takes
    minutes, said before it starts) and cached per graph, precision, TensorRT version and GPU."""
    from .tensorrt_backend import cached_engine

    check_tensorrt_here(device)
    h, w = input_size
    _announce(f"use_hpip: TensorRT runs {model_name} from an engine ({precision}, batch 1..8 at {h}x{w}): built "
              f"on first use, which takes minutes, then reused from {cache_dir() / 'tensorrt'}")
    return cached_engine(cached_onnx(detector, model_name, input_size), device, precision, input_size)


# ------------------------------------------------------------------------------------------------ picking

_INSTALL = {"openvino": "pip install openvino (or pip install 'ppyoloe-sod[openvino]')",
            "onnxruntime": "pip install onnxruntime (or pip install 'ppyoloe-sod[onnx]')"}
TENSORRT_INSTALL = "pip install 'ppyoloe-sod[tensorrt]' (TensorRT 10 or 11; an NVIDIA GPU with CUDA 12 or 13)"


def _import_backend(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise ConfigError(f"backend {module!r} needs the {module} package, which is not installed: "
                          f"{_INSTALL[module]}") from None


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def onnxruntime_available() -> bool:
    return _installed("onnxruntime")


def openvino_available() -> bool:
    return _installed("openvino")


def tensorrt_available() -> bool:
    """``import tensorrt`` works (installed with its CUDA libraries), not merely a package found."""
    from ..export.tensorrt import tensorrt_importable

    return tensorrt_importable()


# Predict.kernel_option.run_mode values (PaddleX's engine option) that name one of our graph backends
RUN_MODE_BACKENDS = {"onnxruntime": "onnxruntime", "ort": "onnxruntime", "openvino": "openvino"}


def hpi_config_for_run_mode(run_mode: str | None) -> dict[str, str] | None:
    """The hpi_config a ``run_mode`` asks for (``onnxruntime`` / ``ort`` / ``openvino``), None for the others
    (``paddle`` and PaddleX's own modes: the PyTorch path)."""
    backend = RUN_MODE_BACKENDS.get(str(run_mode).lower())
    return {"backend": backend} if backend else None


def auto_backend(device: torch.device) -> str:
    """The backend use_hpip picks when hpi_config names none: the fastest one installed here that keeps
    float32 results. On a CPU OpenVINO, then ONNX Runtime (measured on x86 with AVX-512/AMX; see the README),
    then torch; on a GPU TensorRT when ``import tensorrt`` works (an fp32 engine, built once per weights and
    cached), then torch on CUDA. Only the name: make_backend builds it and says which ran, in which precision."""
    kind = torch.device(device).type
    if kind == "cpu":
        if openvino_available():
            return "openvino"
        if onnxruntime_available():
            return "onnxruntime"
    if kind == "cuda" and tensorrt_available():
        return "tensorrt"
    return "torch"


def weights_digest(detector: Detector, length: int = 16) -> str:
    """sha256 over the detector's state (names, shapes and values), ``length`` hex digits: the ONNX cache key
    (16) and the weights digest of an export (64)."""
    h = hashlib.sha256()
    for key, t in detector.state_dict().items():
        h.update(key.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:length]


def onnx_cache_path(model_name: str, digest: str, input_size: tuple[int, int]) -> Path:
    h, w = input_size
    return cache_dir() / "onnx" / f"{model_name}-{digest}-{h}x{w}-opset{ONNX_OPSET}.onnx"


def cached_onnx(detector: Detector, model_name: str, input_size: tuple[int, int]) -> Path:
    """The ONNX graph of ``detector`` at ``input_size``, exported on first use and cached by weights digest."""
    path = onnx_cache_path(model_name, weights_digest(detector), input_size)
    if not path.is_file():
        log.info("Exporting %s to ONNX at %dx%d: %s", model_name, input_size[0], input_size[1], path)
        export_onnx(detector, path, input_size)
    return path


def graph_backend(backend: str, onnx_or_ir: Path | None, device: torch.device,
                  config: Mapping[str, Any], precision: str) -> Backend:
    """A backend that runs an exported graph (OpenVINO, ONNX Runtime or TensorRT)."""
    threads = config.get("cpu_num_threads")
    if backend == "openvino":
        return OpenVINOBackend(onnx_or_ir, device, precision, threads, config.get("performance_hint", "LATENCY"))
    if backend == "onnxruntime":
        check_precision("onnxruntime", precision)
        return OnnxRuntimeBackend(onnx_or_ir, device, threads)
    return make_tensorrt_backend(onnx_or_ir, device, precision)


def make_backend(detector: Detector, device: torch.device, use_hpip: bool = False, model_name: str = "model",
                 input_size: tuple[int, int] = (640, 640),
                 hpi_config: Mapping[str, Any] | None = None) -> Backend:
    """The backend for a loaded network: torch by default; with ``use_hpip``, the one ``hpi_config`` names or
    the fastest installed (see ``auto_backend``), always announced with its precision."""
    device = torch.device(device)
    if not use_hpip:
        if hpi_config is not None:
            raise ConfigError("hpi_config is read only with use_hpip=True; pass "
                              + hint(python="use_hpip=True", cli="-o Predict.use_hpip=true"))
        backend = TorchBackend(detector, device)
        log.info("Running %s on PyTorch (%s)", model_name, backend.device)
        return backend
    hpi = parse_hpi_config(hpi_config, model_name, device)
    name = hpi.backend or auto_backend(device)
    precision = hpi.precision or "fp32"
    if name == "torch" and precision == "bf16" and device.type == "cpu":
        from .cpu_fast import CpuFastBackend  # bf16 weights, channels-last; refuses a CPU without native bf16

        backend = CpuFastBackend(detector, "bf16")
    elif name == "torch":
        backend = TorchBackend(detector, device, precision)
    elif name == "tensorrt":
        engine = tensorrt_engine_for(detector, model_name, input_size, device, precision)
        backend = make_tensorrt_backend(engine, device, precision)
    else:
        backend = graph_backend(name, cached_onnx(detector, model_name, input_size), device, hpi.backend_config,
                                precision)
    announce_backend(backend, model_name, picked=hpi.backend is None, device=device)
    return backend


def announce_backend(backend: Backend, model_name: str, picked: bool, device: torch.device,
                     source: str | None = None) -> None:
    """Say which backend runs, in which precision, and why (shown once; see ``_announce``)."""
    what = f"{BACKEND_TITLES[backend.name]} ({backend.describe()})"
    if source:
        message = f"running {model_name} from {source} on {what}"
    elif not picked:
        message = f"use_hpip: running {model_name} on {what}"
    elif backend.name == "torch" and torch.device(device).type == "cpu":
        message = (f"use_hpip: neither openvino nor onnxruntime is installed ({_INSTALL['openvino']}); running "
                   f"{model_name} on {what} instead")
    elif backend.name == "torch":
        message = (f"use_hpip: TensorRT is not installed ({TENSORRT_INSTALL}); running {model_name} on {what} "
                   f"instead")
    else:
        message = (f"use_hpip: running {model_name} on {what}, the fastest float32 backend installed here; "
                   f"hpi_config={{'backend': ...}} picks another")
    _announce(message)


def _announce(message: str) -> None:
    """The backend pick asked for with use_hpip is always shown, once: logged where INFO records are shown
    (the command line), else printed to stderr."""
    if log.isEnabledFor(logging.INFO) and log.hasHandlers():
        log.info(message)
    else:
        print(message, file=sys.stderr)
