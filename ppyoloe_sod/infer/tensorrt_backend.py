"""TensorRT as a backend: run an engine built by ``export.tensorrt`` on torch CUDA tensors (no pycuda).

Before TensorRT sees the engine, its sidecar is read and checked: the engine's sha256, the TensorRT version and
the GPU (name and compute capability) it was built for must match this machine, else a WeightsError names the
difference and how to rebuild. The engine then runs with TensorRT 10/11's name-based API
(``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``) on the current torch CUDA stream, reading
and writing torch tensors in place, so its outputs are ordered with the decode and NMS that follow without a
host synchronisation. A batch larger than the engine's profile allows runs in chunks.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, WeightsError, hint
from ..export.onnx import INPUT_NAME, OUTPUT_NAMES
from ..export.tensorrt import (EngineSidecar, RuntimeInfo, ShapeProfile, build_engine, check_engine_compatible,
                               cuda_runtime_info, import_tensorrt, make_profile, verify_engine_file)
from ..nn.detector import RawOutput
from ..weights.store import cache_dir, sha256_file

# TensorRT's DataType member names -> torch dtypes (the types an engine's I/O can have here).
TORCH_DTYPES = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT32": torch.int32,
                "INT64": torch.int64, "INT8": torch.int8, "UINT8": torch.uint8, "BOOL": torch.bool}


def torch_dtype(trt_dtype: Any) -> torch.dtype:
    """The torch dtype of a ``tensorrt.DataType`` (matched by member name, the same in TensorRT 10 and 11)."""
    name = getattr(trt_dtype, "name", str(trt_dtype).rsplit(".", 1)[-1])
    if name not in TORCH_DTYPES:
        raise WeightsError(f"the engine has a {name} input or output, which ppyoloe_sod engines never have; "
                           f"rebuild it with python tools/export_trt.py")
    return TORCH_DTYPES[name]


def check_input_shape(shape: tuple[int, ...], profile: ShapeProfile, engine_path: Path) -> None:
    """ConfigError unless an input of ``shape`` (batch aside: it runs in chunks) fits the engine's profile."""
    lo, hi = profile.min, profile.max
    if len(shape) == 4 and shape[1] == 3 and lo[2] <= shape[2] <= hi[2] and lo[3] <= shape[3] <= hi[3]:
        return
    sizes = f"{lo[2]}x{lo[3]}" if lo[2:] == hi[2:] else f"{lo[2]}x{lo[3]} to {hi[2]}x{hi[3]}"
    raise ConfigError(f"{engine_path} takes images of {sizes} (its optimisation profile), not "
                      f"{'x'.join(map(str, shape[2:]))}; build an engine for this size with python "
                      f"tools/export_trt.py (--min-size/--max-size need an export made with dynamic_shape)")


class TensorRTBackend:
    """A TensorRT engine on one GPU; ``run`` maps a float32 RGB batch to the raw head outputs (float32)."""

    name = "tensorrt"

    def __init__(self, engine_path: str | Path, device: torch.device | str, precision: str | None = None):
        self.device = torch.device(device)
        if self.device.type != "cuda":
            gpu = hint(python="device='gpu'", cli="-o Global.device=gpu")
            raise ConfigError(f"backend 'tensorrt' runs on an NVIDIA GPU, not on {self.device}; use {gpu}, or "
                              f"backend 'onnxruntime' / 'openvino' on the CPU")
        self.engine_path = Path(engine_path)
        self.sidecar: EngineSidecar = verify_engine_file(self.engine_path)
        if precision is not None and precision != self.sidecar.precision:
            raise ConfigError(f"{self.engine_path} was built in {self.sidecar.precision}, not {precision}; build "
                              f"an {precision} engine with python tools/export_trt.py ... --precision {precision}")
        self.precision = self.sidecar.precision
        trt = import_tensorrt()
        self.runtime_info: RuntimeInfo = cuda_runtime_info(trt, self.device.index or 0)
        check_engine_compatible(self.sidecar, self.runtime_info, self.engine_path)
        self._logger = trt.Logger(trt.Logger.WARNING)
        with torch.cuda.device(self.device):
            self._runtime = trt.Runtime(self._logger)
            self.engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
            if self.engine is None:
                raise WeightsError(f"TensorRT {self.runtime_info.tensorrt_version} could not load "
                                   f"{self.engine_path} (its log above says why); rebuild it with python "
                                   f"tools/export_trt.py")
            self.context = self.engine.create_execution_context()
        self.dtypes = self._io_dtypes(trt)

    def _io_dtypes(self, trt: Any) -> dict[str, torch.dtype]:
        """dtype per I/O tensor name, once the engine's inputs and outputs are the exported graph's."""
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if inputs != [INPUT_NAME] or sorted(outputs) != sorted(OUTPUT_NAMES):
            raise WeightsError(f"{self.engine_path} has inputs {inputs} and outputs {outputs}; an engine of a "
                               f"ppyoloe_sod export has {INPUT_NAME!r} and {', '.join(OUTPUT_NAMES)}")
        return {n: torch_dtype(self.engine.get_tensor_dtype(n)) for n in names}

    def run(self, images: torch.Tensor) -> RawOutput:
        check_input_shape(tuple(images.shape), self.sidecar.profile, self.engine_path)
        x = images.to(self.device, self.dtypes[INPUT_NAME], non_blocking=True).contiguous()
        max_batch = self.sidecar.profile.max[0]
        parts = [self._execute(chunk.contiguous()) for chunk in x.split(max_batch)]
        if len(parts) == 1:
            return parts[0]
        return RawOutput(*(torch.cat(tensors) for tensors in zip(*parts)))

    def _execute(self, x: torch.Tensor) -> RawOutput:
        """One engine run on the current stream; outputs are fresh torch tensors (converted to float32)."""
        if x.shape[0] < self.sidecar.profile.min[0]:  # a profile whose min batch exceeds what is left: pad
            pad = x.new_zeros((self.sidecar.profile.min[0] - x.shape[0], *x.shape[1:]))
            return RawOutput(*(t[: x.shape[0]] for t in self._execute(torch.cat([x, pad]))))
        with torch.cuda.device(self.device):
            if self.context.set_input_shape(INPUT_NAME, tuple(x.shape)) is False:
                raise ConfigError(f"{self.engine_path} refused input shape {tuple(x.shape)}")
            self.context.set_tensor_address(INPUT_NAME, x.data_ptr())
            outputs = {}
            for name in OUTPUT_NAMES:
                shape = tuple(int(d) for d in self.context.get_tensor_shape(name))
                outputs[name] = torch.empty(shape, dtype=self.dtypes[name], device=self.device)
                self.context.set_tensor_address(name, outputs[name].data_ptr())
            if not self.context.execute_async_v3(torch.cuda.current_stream(self.device).cuda_stream):
                raise WeightsError(f"TensorRT failed to run {self.engine_path} (its log above says why)")
        return RawOutput(*(outputs[n].float() for n in OUTPUT_NAMES))

    def describe(self) -> str:
        info = self.runtime_info
        p = self.sidecar.profile
        return (f"TensorRT {info.tensorrt_version}, {info.gpu_name}, {self.precision}, batch {p.min[0]}..{p.max[0]}"
                f" per run")


def cached_engine(onnx_path: str | Path, device: torch.device | str, precision: str = "fp32",
                  input_size: tuple[int, int] | None = None) -> Path:
    """An engine for ``onnx_path`` built once per (graph, precision, TensorRT version, GPU) under the weights
    cache folder, for ``use_hpip`` with backend 'tensorrt' on a weights file (no export folder)."""
    device = torch.device(device)
    trt = import_tensorrt()
    info = cuda_runtime_info(trt, device.index or 0)
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", info.gpu_name).strip("-")
    onnx_path = Path(onnx_path)
    name = (f"{onnx_path.stem}-{sha256_file(onnx_path)[:12]}-{precision}-trt{info.tensorrt_version}-{gpu}-"
            f"sm{info.compute_capability[0]}{info.compute_capability[1]}.engine")
    engine_path = cache_dir() / "tensorrt" / name
    try:
        verify_engine_file(engine_path)
        return engine_path
    except WeightsError:
        pass
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    profile = make_profile(input_size, False) if input_size is not None else None
    build_engine(onnx_path, engine_path, precision, profile, device_index=device.index or 0)
    return engine_path
