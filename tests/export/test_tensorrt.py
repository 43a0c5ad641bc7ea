"""TensorRT export and backend.

Everything up to TensorRT itself is tested everywhere: the build plan per TensorRT version and precision, the
optimisation profile, the sidecar and the rules that refuse an engine built for another TensorRT or GPU (on
sidecars written here: that tests our rules, not TensorRT), the fp16 ONNX graph TensorRT 11 builds fp16 from
(run by ONNX Runtime on the CPU), and the command line up to the point where TensorRT is needed. Building and
running a real engine needs ``import tensorrt`` and a GPU: those tests are skipped elsewhere, with the reason.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ppyoloe_sod.errors import ConfigError, WeightsError
from ppyoloe_sod.export.config import ExportedModelConfig, write_model_config
from ppyoloe_sod.export.tensorrt import (BuildPlan, EngineSidecar, RuntimeInfo, ShapeProfile, build_plan,
                                         check_engine_compatible, make_profile, parse_size,
                                         parse_triple, read_sidecar, sidecar_path, tensorrt_importable,
                                         verify_engine_file, write_sidecar)
from ppyoloe_sod.infer.tensorrt_backend import TensorRTBackend, check_input_shape, torch_dtype
from ppyoloe_sod.weights.store import sha256_file
from ppyoloe_sod.zoo import get_spec

MODEL = "PP-YOLOE_plus_SOD-S"
TOOL = Path(__file__).resolve().parents[2] / "tools" / "export_trt.py"


needs_tensorrt = pytest.mark.skipif(
    not (tensorrt_importable() and torch.cuda.is_available()),
    reason="needs TensorRT ('import tensorrt' works) and a CUDA GPU; neither the CI machines nor the lent GPU "
           "image have TensorRT, so building and running real engines is untested there")


# ----------------------------------------------------------------------------------------- build plan

@pytest.mark.parametrize("version, precision, strongly_typed, expected", [
    ("10.0.1", "fp32", None, BuildPlan((), (), ("TF32",), "fp32", False)),
    ("10.13.3.9", "fp16", None, BuildPlan((), ("FP16",), (), "fp32", False)),
    ("10.13.3.9", "fp16", True, BuildPlan(("STRONGLY_TYPED",), (), (), "fp16", True)),
    ("10.13.3.9", "fp32", True, BuildPlan(("STRONGLY_TYPED",), (), ("TF32",), "fp32", True)),
    # 11 removed BuilderFlag.FP16 and ignores the STRONGLY_TYPED flag: fp16 comes from an fp16 graph
    ("11.4.0.106", "fp16", None, BuildPlan((), (), (), "fp16", True)),
    ("11.0.0", "fp32", None, BuildPlan((), (), ("TF32",), "fp32", True)),
])
def test_build_plan_per_version_and_precision(version, precision, strongly_typed, expected):
    assert build_plan(version, precision, strongly_typed) == expected


def test_build_plan_never_uses_flags_tensorrt_11_removed():
    removed = {"FP16", "BF16", "INT8", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS"}
    for precision in ("fp32", "fp16"):
        assert not removed & set(build_plan("11.4.0.106", precision).set_flags)


@pytest.mark.parametrize("version, precision, strongly_typed, needle", [
    ("8.6.1", "fp32", None, "10 or later"),
    ("10.3.0", "bf16", None, "use fp32 or fp16"),
    ("10.3.0", "int8", None, "use fp32 or fp16"),
    ("11.4.0", "fp16", False, "strongly typed"),
    ("ten", "fp32", None, "MAJOR.MINOR.PATCH"),
])
def test_build_plan_refusals(version, precision, strongly_typed, needle):
    with pytest.raises(ConfigError, match=needle):
        build_plan(version, precision, strongly_typed)


# -------------------------------------------------------------------------------------------- profile

def test_profile_static_and_dynamic():
    static = make_profile((640, 640), False)
    assert static == ShapeProfile((1, 3, 640, 640), (1, 3, 640, 640), (8, 3, 640, 640))
    assert static.contains((8, 3, 640, 640)) and not static.contains((9, 3, 640, 640))
    assert not static.dynamic_size
    dynamic = make_profile((640, 640), True, (1, 4, 16), (320, 320), None, (1280, 960))
    assert dynamic == ShapeProfile((1, 3, 320, 320), (4, 3, 640, 640), (16, 3, 1280, 960))
    assert dynamic.dynamic_size and dynamic.contains((2, 3, 480, 960)) and not dynamic.contains((2, 3, 480, 992))


@pytest.mark.parametrize("kwargs, needle", [
    (dict(batch=(0, 1, 8)), "--batch"),
    (dict(batch=(1, 9, 8)), "MIN <= OPT <= MAX"),
    (dict(min_size=(320, 320)), "exported without dynamic_shape"),
    (dict(dynamic_shape=True, max_size=(1000, 1000)), "multiples of 32"),
    (dict(dynamic_shape=True, min_size=(960, 960)), "MIN <= OPT <= MAX"),
])
def test_profile_refusals_name_the_option(kwargs, needle):
    args = dict(input_size=(640, 640), dynamic_shape=False)
    args.update(kwargs)
    with pytest.raises(ConfigError, match=needle):
        make_profile(**args)


def test_parse_triple_and_size():
    assert parse_triple("1,2,8", "--batch") == (1, 2, 8) and parse_triple("4", "--batch") == (4, 4, 4)
    assert parse_size("480x640", "--max-size") == (480, 640) and parse_size("320", "--max-size") == (320, 320)
    with pytest.raises(ConfigError, match="--batch"):
        parse_triple("1,x,8", "--batch")
    with pytest.raises(ConfigError, match="--max-size"):
        parse_size("big", "--max-size")


# ------------------------------------------------------------------------------ sidecar and refusals

H200 = RuntimeInfo("10.13.3.9", "NVIDIA H200", (9, 0))


def _engine_with_sidecar(folder: Path, built_for: RuntimeInfo = H200) -> Path:
    """A stand-in engine file and the sidecar our builder would write for it (the rules read only the sidecar
    and the file's hash; TensorRT is never asked to load this file)."""
    engine = folder / "model.engine"
    engine.write_bytes(b"engine bytes")
    config = ExportedModelConfig.for_spec(get_spec(MODEL), "0" * 64, "tensorrt", "fp16").to_json()
    write_sidecar(engine, EngineSidecar(built_for, "fp16", build_plan(built_for.tensorrt_version, "fp16"),
                                       make_profile((640, 640), False), "a" * 64, sha256_file(engine), config,
                                       4 << 30))
    return engine


def test_sidecar_round_trip_records_what_the_issue_lists(tmp_path):
    engine = _engine_with_sidecar(tmp_path)
    data = json.loads(sidecar_path(engine).read_text())
    assert data["tensorrt_version"] == "10.13.3.9"
    assert data["gpu"] == {"name": "NVIDIA H200", "compute_capability": [9, 0]}
    assert data["profile"] == {"input": "images", "min": [1, 3, 640, 640], "opt": [1, 3, 640, 640],
                               "max": [8, 3, 640, 640]}
    assert data["precision"] == "fp16" and data["onnx_sha256"] == "a" * 64
    assert data["model_config"]["model_name"] == MODEL and data["build"]["set_flags"] == ["FP16"]
    sidecar = verify_engine_file(engine)
    assert sidecar.built_for == H200 and sidecar.profile == make_profile((640, 640), False)


def test_engine_from_the_same_tensorrt_and_gpu_is_accepted(tmp_path):
    check_engine_compatible(verify_engine_file(_engine_with_sidecar(tmp_path)), H200, tmp_path / "model.engine")


@pytest.mark.parametrize("runtime, needles", [
    (RuntimeInfo("10.14.1.48", "NVIDIA H200", (9, 0)),
     ["built with TensorRT 10.13.3.9", "this is TensorRT 10.14.1.48", "pip install tensorrt==10.13.3.9",
      "tools/export_trt.py"]),
    (RuntimeInfo("11.4.0.106", "NVIDIA H200", (9, 0)), ["TensorRT 10.13.3.9", "TensorRT 11.4.0.106"]),
    (RuntimeInfo("10.13.3.9", "NVIDIA A100-SXM4-80GB", (8, 0)),
     ["built for a NVIDIA H200 (compute capability 9.0)", "NVIDIA A100-SXM4-80GB (compute capability 8.0)",
      "Rebuild it here"]),
    (RuntimeInfo("10.13.3.9", "NVIDIA H100 80GB HBM3", (9, 0)), ["NVIDIA H200", "NVIDIA H100 80GB HBM3"]),
])
def test_engine_for_another_tensorrt_or_gpu_is_refused_naming_both_and_the_fix(tmp_path, runtime, needles):
    engine = _engine_with_sidecar(tmp_path)
    with pytest.raises(WeightsError) as e:
        check_engine_compatible(verify_engine_file(engine), runtime, engine)
    for needle in needles:
        assert needle in str(e.value)
    assert str(engine) in str(e.value)


def test_replaced_engine_missing_or_broken_sidecar_are_refused(tmp_path):
    engine = _engine_with_sidecar(tmp_path)
    engine.write_bytes(b"another engine")
    with pytest.raises(WeightsError, match="replaced or damaged"):
        verify_engine_file(engine)
    sidecar_path(engine).write_text("{not json")
    with pytest.raises(WeightsError, match="not a valid engine sidecar"):
        read_sidecar(engine)
    data = json.loads(sidecar_path(_engine_with_sidecar(tmp_path)).read_text())
    data["gpu"]["compute_capability"] = "9.0"
    sidecar_path(engine).write_text(json.dumps(data))
    with pytest.raises(WeightsError, match="compute_capability"):
        read_sidecar(engine)
    sidecar_path(engine).unlink()
    with pytest.raises(WeightsError, match="has no model.engine.json"):
        verify_engine_file(engine)
    with pytest.raises(WeightsError, match="does not exist"):
        verify_engine_file(tmp_path / "nothing.engine")


def test_backend_input_checks_and_dtypes(tmp_path):
    from types import SimpleNamespace

    profile = make_profile((640, 640), False)
    check_input_shape((20, 3, 640, 640), profile, tmp_path / "m.engine")  # larger batches run in chunks
    with pytest.raises(ConfigError, match="takes images of 640x640 .* not 320x320"):
        check_input_shape((1, 3, 320, 320), profile, tmp_path / "m.engine")
    assert torch_dtype(SimpleNamespace(name="HALF")) is torch.float16  # TensorRT's DataType member names
    assert torch_dtype(SimpleNamespace(name="FLOAT")) is torch.float32
    with pytest.raises(WeightsError, match="FP8"):
        torch_dtype(SimpleNamespace(name="FP8"))
    with pytest.raises(ConfigError, match="runs on an NVIDIA GPU, not on cpu"):
        TensorRTBackend(tmp_path / "m.engine", "cpu")


def test_backends_hand_engines_to_the_tensorrt_backend(tmp_path, monkeypatch):
    """The registration in infer/backends.py: past the 'is TensorRT installed' check, an engine goes to
    TensorRTBackend (which refuses the CPU here) and a missing engine says how to build one."""
    from ppyoloe_sod.infer import backends

    monkeypatch.setattr(backends, "tensorrt_available", lambda: True)
    with pytest.raises(ConfigError, match="runs on an NVIDIA GPU, not on cpu"):
        backends.graph_backend("tensorrt", tmp_path / "model.engine", torch.device("cpu"), {}, "fp32")
    with pytest.raises(ConfigError, match="tools/export_trt.py EXPORT_DIR -o TRT_DIR"):
        backends.make_tensorrt_backend(None, torch.device("cpu"))


# ------------------------------------------------------------------------------- fp16 graph (TRT 11)

@pytest.fixture(scope="module")
def random_network():
    """A calibrated random SOD-S (fused), as the exports hold it."""
    from infer.infer_synth import seeded_random_detector

    return seeded_random_detector(MODEL).fuse()


@pytest.fixture(scope="module")
def onnx_export(tmp_path_factory, random_network):
    """``random_network`` exported with dynamic height and width (traced at 64x64)."""
    from ppyoloe_sod.export.onnx import export_onnx

    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    return export_onnx(random_network, path, (64, 64), dynamic_shape=True)


def _scenes(h: int, w: int, n: int = 2) -> torch.Tensor:
    from infer.infer_synth import _as_batch, scene

    return _as_batch([scene(h, w, seed=5 + k) for k in range(n)])


def test_fp16_graph_keeps_float32_io_and_shape_arithmetic(onnx_export):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto

    from ppyoloe_sod.export.onnx import tensorrt_problems
    from ppyoloe_sod.export.onnx_fp16 import convert_to_fp16

    fp16 = convert_to_fp16(onnx.load(str(onnx_export)))
    graph = fp16.graph
    assert [i.type.tensor_type.elem_type for i in graph.input] == [TensorProto.FLOAT]
    assert [o.type.tensor_type.elem_type for o in graph.output] == [TensorProto.FLOAT] * 2
    weights = {t.name: t.data_type for t in graph.initializer}
    conv_weights = [n.input[1] for n in graph.node if n.op_type == "Conv"]
    assert conv_weights and all(weights[w] == TensorProto.FLOAT16 for w in conv_weights)
    assert TensorProto.FLOAT not in weights.values()  # no float32 weight left behind
    types = {v.name: v.type.tensor_type.elem_type for v in onnx.shape_inference.infer_shapes(fp16).graph.value_info}
    convs = [n.output[0] for n in graph.node if n.op_type in ("Conv", "LayerNormalization", "Softmax")]
    assert {types[o] for o in convs} == {TensorProto.FLOAT16}
    position = [n.output[0] for n in graph.node if n.op_type in ("Sin", "Cos")]
    assert position and {types[o] for o in position} == {TensorProto.FLOAT}  # position embedding in float32
    assert tensorrt_problems(fp16) == []


def test_fp16_graph_matches_the_float32_graph_under_onnxruntime(random_network, onnx_export, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    import copy

    from ppyoloe_sod.export.onnx_fp16 import convert_to_fp16

    fp16_path = tmp_path / "model_fp16.onnx"
    onnx.save(convert_to_fp16(onnx.load(str(onnx_export))), str(fp16_path))
    assert fp16_path.stat().st_size < 0.6 * onnx_export.stat().st_size  # weights stored in fp16
    x = _scenes(96, 128)  # not the traced size
    runs = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})
            for p in (onnx_export, fp16_path)]
    (cls32, reg32), (cls16, reg16) = runs
    assert cls16.dtype == reg16.dtype == np.float32 and cls16.shape == cls32.shape
    with torch.no_grad():  # what fp16 arithmetic itself costs: the same network in torch, in half
        half = copy.deepcopy(random_network).half()(x.half())
    # A random network amplifies rounding (scores move by a few 1e-2 in fp16, in torch as in the graph); a
    # wrong conversion (a value cast twice, a position embedding computed in fp16) moves them far more.
    cls_error = np.abs(cls16 - cls32)
    torch_error = (half.cls_logits.float() - torch.from_numpy(cls32)).abs()
    assert cls_error.mean() <= 2 * float(torch_error.mean()) + 1e-3
    assert cls_error.max() < 0.02 * (cls32.max() - cls32.min())
    assert np.abs(reg16 - reg32).max() < 0.02 * (reg32.max() - reg32.min())


# -------------------------------------------------------------------------- folder and command line

@pytest.fixture()
def fake_onnx_export(tmp_path):
    """An export folder with a placeholder model.onnx and its model_config.json: enough for everything that
    runs before TensorRT is imported."""
    folder = tmp_path / "onnx_export"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"placeholder graph")
    write_model_config(folder, ExportedModelConfig.for_spec(get_spec(MODEL), "0" * 64, "onnx"))
    return folder


@pytest.mark.skipif(tensorrt_importable(), reason="checks the message shown where TensorRT is missing")
def test_tool_without_tensorrt_says_how_to_install(fake_onnx_export, tmp_path, capsys):
    from export_trt_tool import main

    assert main([str(fake_onnx_export), "-o", str(tmp_path / "trt")]) == 2
    err = capsys.readouterr().err
    assert "TensorRT is not installed" in err and "ppyoloe-sod[tensorrt]" in err
    assert not (tmp_path / "trt").exists()


@pytest.mark.parametrize("args, needle", [
    (["--batch", "1,x,8"], "--batch"),
    (["--batch", "4,2,8"], "MIN <= OPT <= MAX"),
    (["--max-size", "1280x1280"], "exported without dynamic_shape"),
    (["--workspace", "0"], "--workspace"),
])
def test_tool_checks_options_before_needing_tensorrt(fake_onnx_export, tmp_path, capsys, args, needle):
    from export_trt_tool import main

    assert main([str(fake_onnx_export), "-o", str(tmp_path / "trt"), *args]) == 2
    assert needle in capsys.readouterr().err


def test_tool_refuses_a_changed_onnx_and_a_missing_folder(fake_onnx_export, tmp_path, capsys):
    from export_trt_tool import main

    (fake_onnx_export / "model.onnx").write_bytes(b"another graph")
    assert main([str(fake_onnx_export), "-o", str(tmp_path / "trt")]) == 2
    assert "does not match model_config.json" in capsys.readouterr().err
    assert main([str(tmp_path / "missing"), "-o", str(tmp_path / "trt")]) == 2
    assert "model_config.json" in capsys.readouterr().err


@pytest.fixture(scope="module", autouse=True)
def _tool_module():
    """tools/export_trt.py importable as ``export_trt_tool`` (tools/ is not a package)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("export_trt_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["export_trt_tool"] = module
    yield
    sys.modules.pop("export_trt_tool", None)


# ------------------------------------------------------------------ real TensorRT (GPU machines only)

@needs_tensorrt
@pytest.mark.parametrize("precision, tolerance", [("fp32", 1e-3), ("fp16", 0.1)])
def test_real_engine_matches_torch_and_refuses_another_gpu(random_network, onnx_export, tmp_path, precision,
                                                          tolerance):
    from ppyoloe_sod.export.tensorrt import build_engine

    engine = tmp_path / "model.engine"
    profile = make_profile((64, 64), True, (1, 2, 4), (64, 64), (96, 128), (128, 128))
    sidecar = build_engine(onnx_export, engine, precision, profile)
    backend = TensorRTBackend(engine, "cuda:0")
    assert backend.sidecar == sidecar
    x = _scenes(96, 128, n=6)  # 6 > max batch 4: runs in two chunks
    raw = backend.run(x)
    with torch.no_grad():
        ref = random_network(x)
    assert torch.sigmoid(raw.cls_logits).cpu().sub(torch.sigmoid(ref.cls_logits)).abs().max() < tolerance
    data = json.loads(sidecar_path(engine).read_text())
    data["gpu"]["name"] = "Another GPU"
    sidecar_path(engine).write_text(json.dumps(data))
    with pytest.raises(WeightsError, match="built for a Another GPU"):
        TensorRTBackend(engine, "cuda:0")
