"""TensorRT engines from the exported ONNX graph, with a JSON sidecar that says what each engine is for.

A TensorRT engine runs only under the TensorRT version that built it and on the GPU model it was built for, and
it takes only the input shapes of its optimisation profile. The sidecar (``model.engine.json``) records all of
that next to the engine (TensorRT version, GPU name and compute capability, profile, precision, the model
config and the sha256 of the ONNX graph and of the engine), so the backend refuses a mismatched engine with a
message naming the difference and the fix, before TensorRT is asked to deserialize it.

TensorRT 10 and 11 differ in how reduced precision is asked for: 10 takes ``BuilderFlag.FP16`` on the float32
graph (TensorRT picks per layer); 11 removed that flag (and the INT8 calibrators) and builds every network
strongly typed, so fp16 there needs an fp16 graph (``onnx_fp16.convert_to_fp16``). ``build_plan`` holds these
rules as data, so they are tested without TensorRT; ``build_engine`` applies them with the real API.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import ConfigError, WeightsError
from ..fileio import atomic_write_bytes, atomic_write_json, current_umask, reporting_disk_full
from ..weights.store import sha256_file
from ..zoo import SIZE_MULTIPLE
from .onnx import INPUT_NAME

MIN_TENSORRT_MAJOR = 10
ENGINE_PRECISIONS = ("fp32", "fp16")
ENGINE_FILE = "model.engine"
SIDECAR_SUFFIX = ".json"  # model.engine -> model.engine.json
SIDECAR_VERSION = 1
MAX_SIDECAR_BYTES = 1 << 20
DEFAULT_BATCH = (1, 1, 8)  # min, opt, max: tuned for one image at a time, takes up to 8
DEFAULT_WORKSPACE_GIB = 4.0
INSTALL_HINT = ("pip install 'ppyoloe-sod[tensorrt]' (TensorRT 10 or 11 from PyPI; needs an NVIDIA GPU, its "
                "driver and CUDA 12 or 13)")


# ------------------------------------------------------------------------------------------ build plan

@dataclass(frozen=True)
class BuildPlan:
    """How one TensorRT version builds one precision: network creation flags, builder flags to set and to
    clear, and the precision the ONNX graph must be in."""

    network_flags: tuple[str, ...]  # NetworkDefinitionCreationFlag names
    set_flags: tuple[str, ...]  # BuilderFlag names that must exist
    clear_flags: tuple[str, ...]  # BuilderFlag names cleared where the version has them
    onnx_precision: str  # "fp32" or "fp16"
    strongly_typed: bool

    def describe(self) -> str:
        typing = "strongly typed" if self.strongly_typed else "weakly typed"
        flags = ", ".join([*(f"+{f}" for f in self.set_flags), *(f"-{f}" for f in self.clear_flags)]) or "none"
        return f"{typing} network, {self.onnx_precision} ONNX graph, builder flags {flags}"


def parse_version(text: str) -> tuple[int, ...]:
    """'10.13.3.9' -> (10, 13, 3, 9); ConfigError for anything else."""
    parts = str(text).strip().split(".")
    if not parts or not all(p.isdigit() for p in parts):
        raise ConfigError(f"TensorRT version {text!r} is not of the form MAJOR.MINOR.PATCH")
    return tuple(int(p) for p in parts)


def check_precision(precision: str) -> str:
    if precision not in ENGINE_PRECISIONS:
        other = " (bf16 runs on the GPU with backend 'torch')" if precision == "bf16" else ""
        raise ConfigError(f"TensorRT precision {precision!r} is not offered; use fp32 or fp16{other}")
    return precision


def build_plan(tensorrt_version: str, precision: str, strongly_typed: bool | None = None) -> BuildPlan:
    """The build recipe for ``precision`` under ``tensorrt_version``.

    fp32: float32 graph, TF32 cleared (so float32 means float32, as in the PyTorch results). fp16 on TensorRT
    10: the ``FP16`` builder flag on the float32 graph (weak typing: TensorRT keeps float32 where fp16 is not
    faster), or with ``strongly_typed=True`` the fp16 graph in a strongly typed network. fp16 on TensorRT 11+:
    the fp16 graph; every network is strongly typed there and the flag is gone. TensorRT before 10 is refused.
    """
    check_precision(precision)
    major = parse_version(tensorrt_version)[0]
    if major < MIN_TENSORRT_MAJOR:
        raise ConfigError(f"TensorRT {tensorrt_version} is too old: engines here need TensorRT "
                          f"{MIN_TENSORRT_MAJOR} or later ({INSTALL_HINT})")
    always_strong = major >= 11
    if strongly_typed is False and always_strong:
        raise ConfigError(f"TensorRT {tensorrt_version} builds every network strongly typed; drop "
                          f"strongly_typed=False (--weakly-typed)")
    strong = always_strong or bool(strongly_typed)
    # TensorRT 11 ignores (and deprecates) the STRONGLY_TYPED creation flag: it is set only where it decides.
    network_flags = ("STRONGLY_TYPED",) if strong and not always_strong else ()
    if precision == "fp32":
        return BuildPlan(network_flags, (), ("TF32",), "fp32", strong)
    if strong:
        return BuildPlan(network_flags, (), (), "fp16", True)
    return BuildPlan((), ("FP16",), (), "fp32", False)


# --------------------------------------------------------------------------------------------- profile

Shape = tuple[int, int, int, int]


@dataclass(frozen=True)
class ShapeProfile:
    """One optimisation profile of the input ``images``: min / opt / max shapes [batch, 3, h, w]."""

    min: Shape
    opt: Shape
    max: Shape

    def contains(self, shape: Sequence[int]) -> bool:
        return len(shape) == 4 and all(lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max))

    @property
    def dynamic_size(self) -> bool:
        return self.min[2:] != self.max[2:]

    def to_json(self) -> dict[str, Any]:
        return {"input": INPUT_NAME, "min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


def parse_triple(text: str, what: str) -> tuple[int, int, int]:
    """'1,1,8' (or one number: '4' -> 4,4,4) -> (min, opt, max); ConfigError naming ``what``."""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ConfigError(f"{what} is {text!r}; write MIN,OPT,MAX (e.g. 1,1,8) or one number")
    return int(parts[0]), int(parts[1]), int(parts[2])


def parse_size(text: str, what: str) -> tuple[int, int]:
    """'640x640' (or '640') -> (h, w); ConfigError naming ``what``."""
    parts = str(text).lower().replace("*", "x").split("x")
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ConfigError(f"{what} is {text!r}; write HEIGHTxWIDTH, e.g. 640x640")
    return int(parts[0]), int(parts[1])


def make_profile(input_size: tuple[int, int], dynamic_shape: bool, batch: Sequence[int] = DEFAULT_BATCH,
                 min_size: tuple[int, int] | None = None, opt_size: tuple[int, int] | None = None,
                 max_size: tuple[int, int] | None = None) -> ShapeProfile:
    """The profile for a graph traced at ``input_size`` (h, w): ``batch`` = (min, opt, max); sizes (h, w) only
    for a graph exported with dynamic_shape (default: all at ``input_size``). ConfigError naming the option."""
    b_min, b_opt, b_max = (int(b) for b in batch)
    if not 1 <= b_min <= b_opt <= b_max:
        raise ConfigError(f"batch (--batch) {b_min},{b_opt},{b_max}: need 1 <= MIN <= OPT <= MAX")
    sizes = {"min_size (--min-size)": min_size, "opt_size (--opt-size)": opt_size, "max_size (--max-size)": max_size}
    given = [k for k, v in sizes.items() if v is not None]
    if given and not dynamic_shape:
        raise ConfigError(f"{', '.join(given)}: the ONNX graph takes only {input_size[0]}x{input_size[1]} (it was "
                          f"exported without dynamic_shape); export it with -o Export.dynamic_shape=True to build "
                          f"an engine for other sizes, or drop {', '.join(given)}")
    resolved = {k: tuple(v) if v is not None else tuple(input_size) for k, v in sizes.items()}
    for key, (h, w) in resolved.items():
        if h <= 0 or w <= 0 or h % SIZE_MULTIPLE or w % SIZE_MULTIPLE:
            raise ConfigError(f"{key} {h}x{w}: height and width must be positive multiples of {SIZE_MULTIPLE}")
    lo, opt, hi = resolved.values()
    if not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
        raise ConfigError(f"sizes min {lo[0]}x{lo[1]} / opt {opt[0]}x{opt[1]} / max {hi[0]}x{hi[1]} (--min-size, "
                          f"--opt-size, --max-size): need MIN <= OPT <= MAX in height and in width")
    return ShapeProfile((b_min, 3, *lo), (b_opt, 3, *opt), (b_max, 3, *hi))


# --------------------------------------------------------------------------------------------- sidecar

@dataclass(frozen=True)
class RuntimeInfo:
    """What an engine is tied to: the TensorRT version and the GPU (name and compute capability)."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]


@dataclass(frozen=True)
class EngineSidecar:
    """The content of ``model.engine.json``."""

    built_for: RuntimeInfo
    precision: str
    plan: BuildPlan
    profile: ShapeProfile
    onnx_sha256: str
    engine_sha256: str
    model_config: Mapping[str, Any] | None = None
    workspace_bytes: int | None = None

    def to_json(self) -> dict[str, Any]:
        from .. import __version__

        return {
            "sidecar_version": SIDECAR_VERSION,
            "producer": f"ppyoloe_sod {__version__}",
            "tensorrt_version": self.built_for.tensorrt_version,
            "gpu": {"name": self.built_for.gpu_name, "compute_capability": list(self.built_for.compute_capability)},
            "precision": self.precision,
            "build": {**dataclasses.asdict(self.plan), "workspace_bytes": self.workspace_bytes},
            "profile": self.profile.to_json(),
            "onnx_sha256": self.onnx_sha256,
            "engine_sha256": self.engine_sha256,
            "model_config": dict(self.model_config) if self.model_config is not None else None,
        }


def sidecar_path(engine_path: str | os.PathLike) -> Path:
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + SIDECAR_SUFFIX)


def write_sidecar(engine_path: str | os.PathLike, sidecar: EngineSidecar) -> Path:
    path = sidecar_path(engine_path)
    atomic_write_json(path, sidecar.to_json())
    return path


def _rebuild_hint(engine_path: Path, start: str = "rebuild") -> str:
    """How to make a fresh engine on this machine (``start`` capitalised at the start of a sentence)."""
    return (f"{start} it here from the folder's model.onnx: python tools/export_trt.py {engine_path.parent} "
            f"-o NEW_FOLDER")


def read_sidecar(engine_path: str | os.PathLike) -> EngineSidecar:
    """The checked sidecar of ``engine_path``; WeightsError naming the file, what is wrong and the fix."""
    engine_path = Path(engine_path)
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise WeightsError(f"{engine_path} has no {path.name}, which says which TensorRT and GPU the engine was "
                           f"built for (an engine runs only there); {_rebuild_hint(engine_path)}")
    try:
        if path.stat().st_size > MAX_SIDECAR_BYTES:
            raise ValueError(f"{path.stat().st_size} bytes, far more than a sidecar")
        data = json.loads(path.read_bytes().decode("utf-8"))
        return _parse_sidecar(data)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError, KeyError, TypeError) as e:
        raise WeightsError(f"{path} is not a valid engine sidecar ({e}); {_rebuild_hint(engine_path)}") from None


def _parse_sidecar(data: Any) -> EngineSidecar:
    """EngineSidecar from its JSON; ValueError / KeyError / TypeError on anything malformed."""
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    if data.get("sidecar_version") != SIDECAR_VERSION:
        raise ValueError(f"sidecar_version {data.get('sidecar_version')!r}, this ppyoloe_sod reads {SIDECAR_VERSION}")
    gpu = data["gpu"]
    cc = gpu["compute_capability"]
    if not (isinstance(cc, list) and len(cc) == 2 and all(_is_int(c) for c in cc)):
        raise ValueError(f"compute_capability {cc!r} is not [major, minor]")
    built_for = RuntimeInfo(_text(data["tensorrt_version"], "tensorrt_version"), _text(gpu["name"], "gpu name"),
                            (cc[0], cc[1]))
    parse_version(built_for.tensorrt_version)
    build = data["build"]
    plan = BuildPlan(tuple(build["network_flags"]), tuple(build["set_flags"]), tuple(build["clear_flags"]),
                     check_precision(build["onnx_precision"]), bool(build["strongly_typed"]))
    prof = data["profile"]
    shapes = [prof[k] for k in ("min", "opt", "max")]
    if not all(isinstance(s, list) and len(s) == 4 and all(_is_int(d) and d > 0 for d in s) for s in shapes):
        raise ValueError(f"profile {prof!r} is not min/opt/max shapes [batch, 3, h, w]")
    model_config = data.get("model_config")
    if model_config is not None and not isinstance(model_config, dict):
        raise ValueError("model_config must be an object or null")
    workspace = build.get("workspace_bytes")
    return EngineSidecar(built_for, check_precision(data["precision"]), plan,
                         ShapeProfile(*(tuple(s) for s in shapes)), _text(data["onnx_sha256"], "onnx_sha256"),
                         _text(data["engine_sha256"], "engine_sha256"), model_config,
                         workspace if _is_int(workspace) else None)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} is {value!r}, expected text")
    return value


# ---------------------------------------------------------------------------------- compatibility rules

def check_engine_compatible(sidecar: EngineSidecar, runtime: RuntimeInfo, engine_path: str | os.PathLike) -> None:
    """Refuse (WeightsError) an engine built for another TensorRT version or another GPU, naming both and the
    fix. TensorRT engines are tied to the exact TensorRT version and to the GPU model they were tuned on."""
    engine_path = Path(engine_path)
    built = sidecar.built_for
    if parse_version(built.tensorrt_version) != parse_version(runtime.tensorrt_version):
        raise WeightsError(f"{engine_path} was built with TensorRT {built.tensorrt_version}, but this is TensorRT "
                           f"{runtime.tensorrt_version}; an engine runs only under the TensorRT that built it. "
                           f"{_rebuild_hint(engine_path, 'Rebuild')}, or install the engine's TensorRT: "
                           f"pip install tensorrt=={built.tensorrt_version}")
    if tuple(built.compute_capability) != tuple(runtime.compute_capability) or built.gpu_name != runtime.gpu_name:
        cc_built = ".".join(map(str, built.compute_capability))
        cc_here = ".".join(map(str, runtime.compute_capability))
        raise WeightsError(f"{engine_path} was built for a {built.gpu_name} (compute capability {cc_built}), but "
                           f"this GPU is a {runtime.gpu_name} (compute capability {cc_here}); an engine is "
                           f"tuned for the GPU model that built it. {_rebuild_hint(engine_path, 'Rebuild')}")


def verify_engine_file(engine_path: str | os.PathLike) -> EngineSidecar:
    """The sidecar of ``engine_path``, once the engine's sha256 matches the one the sidecar records."""
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        raise WeightsError(f"TensorRT engine {engine_path} does not exist; build one with python "
                           f"tools/export_trt.py EXPORT_FOLDER -o NEW_FOLDER")
    sidecar = read_sidecar(engine_path)
    actual = sha256_file(engine_path)
    if actual != sidecar.engine_sha256:
        raise WeightsError(f"{engine_path} does not match {sidecar_path(engine_path).name} (sha256 {actual[:12]}..., "
                           f"recorded {sidecar.engine_sha256[:12]}...): the engine was replaced or damaged after "
                           f"its build; {_rebuild_hint(engine_path)}")
    return sidecar


# --------------------------------------------------------------------------------------------- TensorRT

def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or a ConfigError saying how to install it."""
    try:
        import tensorrt
    except ImportError:
        raise ConfigError(f"TensorRT is not installed: {INSTALL_HINT}. Without it, run the export's model.onnx "
                          f"with ONNX Runtime or the model with backend 'torch' on the GPU") from None
    return tensorrt


def tensorrt_importable() -> bool:
    """``import tensorrt`` works here (installed with its CUDA libraries): the check that decides whether
    engines can be built and run, short of a GPU."""
    try:
        importlib.import_module("tensorrt")
    except (ImportError, OSError, RuntimeError):  # not installed, or its CUDA libraries missing
        return False
    return True


def engine_requirements_missing() -> list[str]:
    """What this machine lacks to build a TensorRT engine (an importable TensorRT and a CUDA GPU); [] when
    it has both."""
    import torch

    missing = [] if tensorrt_importable() else ["TensorRT (not installed)"]
    if not torch.cuda.is_available():
        missing.append("an NVIDIA GPU (CUDA is not available here)")
    return missing


def cuda_runtime_info(trt: Any, device_index: int) -> RuntimeInfo:
    """This machine's TensorRT version and GPU (read through torch: no pycuda)."""
    import torch

    if not torch.cuda.is_available():
        raise ConfigError("TensorRT builds and runs engines on an NVIDIA GPU, and CUDA is not available here "
                          "(torch.cuda.is_available() is False)")
    if not 0 <= device_index < torch.cuda.device_count():
        raise ConfigError(f"GPU {device_index} does not exist: there are {torch.cuda.device_count()} (0-based ids)")
    major, minor = torch.cuda.get_device_capability(device_index)
    return RuntimeInfo(str(trt.__version__), torch.cuda.get_device_name(device_index), (int(major), int(minor)))


def _flag_bits(enum: Any, names: Sequence[str]) -> int:
    bits = 0
    for name in names:
        bits |= 1 << int(getattr(enum, name))
    return bits


def _parse_onnx(trt: Any, network: Any, logger: Any, onnx_bytes: bytes, onnx_path: Path) -> None:
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise WeightsError(f"TensorRT's ONNX parser refused {onnx_path}: {errors}. Export the graph again with "
                           f"this ppyoloe_sod (-o Global.mode=export)")
    if network.num_inputs != 1 or network.get_input(0).name != INPUT_NAME:
        names = [network.get_input(i).name for i in range(network.num_inputs)]
        raise WeightsError(f"{onnx_path} has inputs {names}; a ppyoloe_sod export has one, {INPUT_NAME!r}")


def _check_profile_fits(network: Any, profile: ShapeProfile, onnx_path: Path) -> None:
    """A profile may vary only the axes the graph leaves dynamic (-1)."""
    dims = tuple(network.get_input(0).shape)
    for axis, (d, lo, hi) in enumerate(zip(dims, profile.min, profile.max)):
        if d != -1 and not lo == hi == d:
            raise ConfigError(f"the profile asks for {lo}..{hi} on axis {axis} of {INPUT_NAME}, but {onnx_path} "
                              f"fixes it at {d}")


def _onnx_for_plan(onnx_bytes: bytes, plan: BuildPlan) -> bytes:
    """The graph the plan builds from: as exported, or its fp16 conversion."""
    import onnx

    from .onnx import tensorrt_problems

    model = onnx.load_model_from_string(onnx_bytes)
    if plan.onnx_precision == "fp16":
        from .onnx_fp16 import convert_to_fp16

        model = convert_to_fp16(model)
        onnx_bytes = model.SerializeToString()
    problems = tensorrt_problems(model)
    if problems:
        raise WeightsError("the ONNX graph has what TensorRT's parser cannot build: " + "; ".join(problems))
    return onnx_bytes


def _load_timing_cache(config: Any, path: Path | None) -> Any:
    data = path.read_bytes() if path is not None and path.is_file() else b""
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        cache = config.create_timing_cache(b"")  # a cache from another GPU or TensorRT: start a new one
        config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def build_engine(onnx_path: str | os.PathLike, engine_path: str | os.PathLike, precision: str = "fp32",
                 profile: ShapeProfile | None = None, workspace_bytes: int | None = None,
                 timing_cache: str | os.PathLike | None = None, model_config: Mapping[str, Any] | None = None,
                 strongly_typed: bool | None = None, device_index: int = 0) -> EngineSidecar:
    """Build a TensorRT engine from ``onnx_path`` and write it with its sidecar (``engine_path`` + ``.json``).

    ``profile``: the input shapes the engine takes (``make_profile``; default: batch 1..8 at the graph's own
    size). ``workspace_bytes``: TensorRT's scratch memory limit (default 4 GiB). ``timing_cache``: a file that
    keeps kernel timings between builds (read if present, written after). Needs TensorRT and a GPU.
    """
    import torch

    trt = import_tensorrt()
    runtime = cuda_runtime_info(trt, device_index)
    plan = build_plan(runtime.tensorrt_version, precision, strongly_typed)
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    source_bytes = onnx_path.read_bytes()
    onnx_bytes = _onnx_for_plan(source_bytes, plan)
    workspace_bytes = int(workspace_bytes or DEFAULT_WORKSPACE_GIB * (1 << 30))
    cache_path = Path(timing_cache) if timing_cache is not None else None
    logger = trt.Logger(trt.Logger.WARNING)
    with torch.cuda.device(device_index):
        builder = trt.Builder(logger)
        network = builder.create_network(_flag_bits(trt.NetworkDefinitionCreationFlag, plan.network_flags))
        _parse_onnx(trt, network, logger, onnx_bytes, onnx_path)
        if profile is None:
            h, w = (int(d) for d in tuple(network.get_input(0).shape)[2:])
            if h <= 0 or w <= 0:
                raise ConfigError(f"{onnx_path} takes any input size: give the profile's sizes (make_profile)")
            profile = make_profile((h, w), False)
        _check_profile_fits(network, profile, onnx_path)
        config = builder.create_builder_config()
        for name in plan.set_flags:
            config.set_flag(getattr(trt.BuilderFlag, name))
        for name in plan.clear_flags:
            if hasattr(trt.BuilderFlag, name):
                config.clear_flag(getattr(trt.BuilderFlag, name))
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
        trt_profile = builder.create_optimization_profile()
        trt_profile.set_shape(INPUT_NAME, profile.min, profile.opt, profile.max)
        config.add_optimization_profile(trt_profile)
        cache = _load_timing_cache(config, cache_path)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise WeightsError(f"TensorRT could not build an engine from {onnx_path} ({plan.describe()}); its log "
                               f"above says why")
        engine_bytes = bytes(memoryview(serialized))
    atomic_write_bytes(engine_path, engine_bytes)
    if cache_path is not None:
        atomic_write_bytes(cache_path, bytes(memoryview(cache.serialize())))
    sidecar = EngineSidecar(runtime, precision, plan, profile, hashlib.sha256(source_bytes).hexdigest(),
                            hashlib.sha256(engine_bytes).hexdigest(), model_config, workspace_bytes)
    write_sidecar(engine_path, sidecar)
    return sidecar


# ------------------------------------------------------------------------------------- export folders

def export_tensorrt(source: str | os.PathLike, output_dir: str | os.PathLike, precision: str = "fp32",
                    batch: Sequence[int] = DEFAULT_BATCH, min_size: tuple[int, int] | None = None,
                    opt_size: tuple[int, int] | None = None, max_size: tuple[int, int] | None = None,
                    workspace_gib: float | None = None, timing_cache: str | os.PathLike | None = None,
                    strongly_typed: bool | None = None, device_index: int = 0) -> Path:
    """A TensorRT export folder from an ONNX export folder (``-o Global.mode=export``): ``model.onnx`` copied,
    ``model.engine`` and its sidecar built, ``model_config.json`` with format tensorrt. ``output_dir`` is new,
    empty or an earlier export (replaced whole, never half-written). Every option is checked before TensorRT
    is imported, so a wrong option is named even where TensorRT is missing."""
    from . import check_target, publish_folder
    from .config import FORMAT_FILES, ONNX_FILE, read_model_config, verified_file, write_model_config

    source = Path(source)
    config = read_model_config(source)
    onnx_path = verified_file(source, config, ONNX_FILE)
    check_precision(precision)
    profile = make_profile(config.input_size, config.dynamic_shape, batch, min_size, opt_size, max_size)
    workspace = _workspace_bytes(workspace_gib)
    target = Path(output_dir).expanduser().absolute()
    if target == source.expanduser().absolute():
        raise ConfigError(f"output folder {output_dir} is the source folder; write the TensorRT export to a new folder")
    check_target(target)
    import_tensorrt()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".export", dir=target.parent))
    try:
        with reporting_disk_full(staging):
            shutil.copyfile(onnx_path, staging / ONNX_FILE)
            engine_config = dataclasses.replace(config, format="tensorrt", precision=precision, files={})
            build_engine(staging / ONNX_FILE, staging / FORMAT_FILES["tensorrt"][0], precision, profile, workspace,
                         timing_cache, engine_config.to_json(), strongly_typed, device_index)
            write_model_config(staging, engine_config)
        staging.chmod(0o777 & ~current_umask())
        publish_folder(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _workspace_bytes(workspace_gib: float | None) -> int | None:
    if workspace_gib is None:
        return None
    if not workspace_gib > 0:
        raise ConfigError(f"workspace (--workspace) {workspace_gib!r}: give TensorRT's scratch memory in GiB, e.g. 4")
    return int(workspace_gib * (1 << 30))
