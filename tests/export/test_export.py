"""Export: the folder it writes, the ONNX graph's fitness for TensorRT, atomic replacement, the command line."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from export_parity import SIZE
from infer.infer_synth import _as_batch, scene
from ppyoloe_sod.errors import ConfigError, interface
from ppyoloe_sod.export import export_model, tensorrt_problems
from ppyoloe_sod.export.config import MODEL_CONFIG, read_model_config
from ppyoloe_sod.infer.backends import weights_digest
from ppyoloe_sod.weights.store import sha256_file

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs" / "PP-YOLOE_plus_SOD-S.yaml")


def test_export_folder_describes_itself(openvino_export, random_detector):
    files = sorted(p.name for p in openvino_export.iterdir())
    assert files == ["model.bin", "model.onnx", "model.xml", MODEL_CONFIG]
    data = json.loads((openvino_export / MODEL_CONFIG).read_text())
    spec = random_detector.spec
    assert data["model_name"] == spec.name and data["classes"] == list(spec.classes)
    assert data["input"]["size"] == [320, 320] and data["input"]["dynamic_batch"] is True
    assert data["postprocess"]["nms"] == {"score_threshold": 0.01, "nms_top_k": 10000, "keep_top_k": 500,
                                          "iou_threshold": 0.6}
    assert (data["format"], data["precision"], data["opset"]) == ("openvino", "fp32", 17)
    assert data["weights_digest"] == weights_digest(random_detector, length=64)
    assert {n: e["sha256"] for n, e in data["files"].items()} == {
        n: sha256_file(openvino_export / n) for n in ("model.onnx", "model.xml", "model.bin")}
    config = read_model_config(openvino_export)
    assert config.spec().input_size == (320, 320) and config.spec().nms == spec.nms


def test_onnx_graph_suits_tensorrt(openvino_export):
    """Opset 17, a named dynamic batch axis, no NMS or other data-dependent op, float32 weights, INT64 only for
    shapes (tensorrt_problems checks each; the next test shows it finds them)."""
    import onnx

    model = onnx.load(str(openvino_export / "model.onnx"))
    assert tensorrt_problems(model) == []
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"NonZero", "NonMaxSuppression", "TopK", "Loop", "If"}
    (image,) = model.graph.input
    dims = image.type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, 320, 320]
    assert [o.name for o in model.graph.output] == ["cls_logits", "reg_logits"]
    for out in model.graph.output:
        assert out.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert {t.data_type for t in model.graph.initializer} <= {onnx.TensorProto.FLOAT}


def _graph(nodes, initializers=(), opset=17):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_tensorrt_check_finds_what_the_parser_refuses():
    from onnx import helper, numpy_helper

    assert tensorrt_problems(_graph([helper.make_node("Sigmoid", ["x"], ["y"])])) == []
    nonzero = tensorrt_problems(_graph([helper.make_node("NonZero", ["x"], ["y"])]))
    assert len(nonzero) == 1 and "NonZero" in nonzero[0] and "depends on the data" in nonzero[0]
    data_k = _graph([helper.make_node("Shape", ["x"], ["k"]), helper.make_node("TopK", ["x", "k"], ["y", "i"])])
    assert any("TopK" in p and "not a constant" in p for p in tensorrt_problems(data_k))
    const_k = _graph([helper.make_node("TopK", ["x", "k"], ["y", "i"])],
                     [numpy_helper.from_array(np.array([2], np.int64), "k")])
    assert not any("TopK" in p for p in tensorrt_problems(const_k))
    weights = _graph([helper.make_node("Cast", ["w"], ["y"], to=1)],
                     [numpy_helper.from_array(np.arange(100, dtype=np.int64), "w")])
    assert any("holds 100 values" in p for p in tensorrt_problems(weights))
    huge_shape = _graph([helper.make_node("Reshape", ["x", "s"], ["y"])],
                        [numpy_helper.from_array(np.array([2**40], np.int64), "s")])
    assert any("outside int32" in p for p in tensorrt_problems(huge_shape))
    slice_to_end = _graph([helper.make_node("Slice", ["x", "st", "en"], ["y"])],
                          [numpy_helper.from_array(np.array([0], np.int64), "st"),
                           numpy_helper.from_array(np.array([2**63 - 1], np.int64), "en")])
    assert tensorrt_problems(slice_to_end) == []  # ONNX clamps Slice bounds: INT32_MAX means the same
    assert any("opset 13" in p for p in tensorrt_problems(_graph([helper.make_node("Sigmoid", ["x"], ["y"])], opset=13)))


def test_batch_axis_is_dynamic(openvino_export):
    import onnxruntime as ort

    session = ort.InferenceSession(str(openvino_export / "model.onnx"), providers=["CPUExecutionProvider"])
    cls_logits, reg_logits = session.run(None, {"images": np.zeros((3, 3, *SIZE), np.float32)})
    assert cls_logits.shape == (3, 2100, 10) and reg_logits.shape == (3, 2100, 40)


@pytest.mark.slow
def test_dynamic_shape_graph_runs_other_sizes(tmp_path, random_detector, fused_detector):
    """With dynamic_shape, one graph serves other multiples of 32 and computes what torch does there. The
    detector has run at 320 before (its position embedding for 320 is cached): the graph must compute it."""
    import onnx
    import onnxruntime as ort

    with torch.no_grad():
        random_detector(torch.zeros(1, 3, *SIZE))
    folder = export_model(random_detector, tmp_path / "dyn", input_size=SIZE, dynamic_shape=True)
    model = onnx.load(str(folder / "model.onnx"))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, "height", "width"]
    assert tensorrt_problems(model) == []
    assert read_model_config(folder).dynamic_shape is True
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    x = _as_batch([scene(256, 384, seed=5)])
    cls_logits, reg_logits = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        ref = fused_detector(x)
    # float32 noise of this network is ~3e-4 per logit (torch against float64); a baked 320 embedding is ~1
    assert np.abs(cls_logits - ref.cls_logits.numpy()).max() < 3e-3
    assert np.abs(reg_logits - ref.reg_logits.numpy()).max() < 3e-3


def _fast_onnx(source: Path):
    """Stands in for export_onnx in tests about the folder, not the graph: copies a graph made earlier."""
    def fake(detector, path, input_size, opset=17, dynamic_shape=False):
        shutil.copyfile(source, path)
        return Path(path)
    return fake


def test_export_replaces_an_earlier_export_whole(tmp_path, export_copy, openvino_export, random_detector,
                                                 monkeypatch):
    import ppyoloe_sod.export as export

    monkeypatch.setattr(export, "export_onnx", _fast_onnx(openvino_export / "model.onnx"))
    export_model(random_detector, export_copy, format="onnx", input_size=SIZE)
    assert sorted(p.name for p in export_copy.iterdir()) == ["model.onnx", MODEL_CONFIG]  # no IR left over
    assert read_model_config(export_copy).format == "onnx"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no staging or old folder left


def test_failed_export_leaves_the_earlier_one_untouched(tmp_path, export_copy, openvino_export, random_detector,
                                                        monkeypatch):
    import ppyoloe_sod.export as export
    import ppyoloe_sod.export.openvino as openvino_export_module

    before = {p.name: sha256_file(p) for p in export_copy.iterdir()}
    monkeypatch.setattr(export, "export_onnx", _fast_onnx(openvino_export / "model.onnx"))

    def broken(onnx_path, xml_path):
        Path(xml_path).write_text("<half")
        raise RuntimeError("conversion failed")

    monkeypatch.setattr(openvino_export_module, "export_openvino", broken)
    with pytest.raises(RuntimeError, match="conversion failed"):
        export_model(random_detector, export_copy, format="openvino", input_size=SIZE)
    assert {p.name: sha256_file(p) for p in export_copy.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_export_refuses_a_folder_of_other_files(tmp_path):
    out = tmp_path / "output"
    out.mkdir()
    (out / "best_model.safetensors").write_bytes(b"training results")
    with pytest.raises(ConfigError, match="not an export"):
        export_model("PP-YOLOE_plus_SOD-S", out, weights=tmp_path / "unused.safetensors")
    assert [p.name for p in out.iterdir()] == ["best_model.safetensors"]


@pytest.mark.parametrize("format, precision, message", [
    ("tflite", "fp32", "Export.format is 'tflite'; use one of onnx, openvino, tensorrt"),
    ("onnx", "int8", "Export.precision is 'int8'"),
    ("onnx", "bf16", "Export.precision=bf16 does not fit Export.format=onnx, which runs fp32; bf16 is made with "
                     "format openvino"),
    ("openvino", "fp16", "fp16 is made with format tensorrt"),
    ("tensorrt", "fp32", "needs TensorRT (not installed)"),
])
def test_bad_format_or_precision_is_named_before_loading(tmp_path, format, precision, message):
    pytest.importorskip("onnx")
    if format == "tensorrt" and __import__("importlib").util.find_spec("tensorrt"):
        pytest.skip("TensorRT is installed here")
    with interface("cli"), pytest.raises(ConfigError) as info:
        export_model("PP-YOLOE_plus_SOD-S", tmp_path / "out", weights=tmp_path / "missing.safetensors",
                     format=format, precision=precision)
    assert message in str(info.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("has_tensorrt, has_gpu, missing", [
    (False, False, "needs TensorRT (not installed) and an NVIDIA GPU (CUDA is not available here)"),
    (True, False, "needs an NVIDIA GPU (CUDA is not available here)"),
    (False, True, "needs TensorRT (not installed):"),
])
@pytest.mark.parametrize("where, key", [("python", "format"), ("cli", "Export.format")])
def test_tensorrt_format_names_what_is_missing_and_the_fix(tmp_path, monkeypatch, has_tensorrt, has_gpu, missing,
                                                           where, key):
    """Python and the command line alike: what this machine lacks, and both ways on (install here, or build
    the engine later from an ONNX export), before any weights are read."""
    from ppyoloe_sod.export import tensorrt as trt_export

    monkeypatch.setattr(trt_export, "tensorrt_importable", lambda: has_tensorrt)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: has_gpu)
    with interface(where), pytest.raises(ConfigError) as info:
        export_model("PP-YOLOE_plus_SOD-S", tmp_path / "out", weights=tmp_path / "missing.safetensors",
                     format="tensorrt", precision="fp16")
    message = str(info.value)
    assert message.startswith(f"{key}=tensorrt builds a TensorRT engine here, which {missing}")
    assert "pip install 'ppyoloe-sod[tensorrt]' on a machine with an NVIDIA GPU" in message
    assert f"{key}=onnx now and build the engine later" in message and "tools/export_trt.py" in message
    assert not (tmp_path / "out").exists()


def test_cli_tensorrt_export_without_tensorrt_exits_with_the_message(tmp_path, monkeypatch, capsys):
    from ppyoloe_sod.__main__ import main
    from ppyoloe_sod.export import tensorrt as trt_export

    monkeypatch.setattr(trt_export, "tensorrt_importable", lambda: False)
    code = main(["-c", CONFIG, "-o", "Global.mode=export", "-o", "Export.format=tensorrt",
                 "-o", f"Export.weight_path={tmp_path / 'missing.safetensors'}",
                 "-o", f"Global.output={tmp_path / 'out'}"])
    err = capsys.readouterr().err
    assert code != 0 and "Export.format=tensorrt builds a TensorRT engine here, which needs TensorRT" in err
    assert "pip install 'ppyoloe-sod[tensorrt]'" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_tensorrt_export_wiring_with_a_stand_in_builder(tmp_path, monkeypatch, random_detector):
    """export_model(format='tensorrt') hands its ONNX export to export_tensorrt (tools/export_trt.py's code)
    with the profile of its input size. No engine is built here: a stand-in for build_engine records the call
    and writes placeholder files, so what is checked is the folder and its model_config.json."""
    from ppyoloe_sod.export import tensorrt as trt_export

    calls = []

    def stand_in_build_engine(onnx_path, engine_path, precision, profile, workspace, timing_cache, model_config,
                              *rest):
        calls.append((Path(onnx_path).name, precision, profile, model_config))
        Path(engine_path).write_bytes(b"placeholder engine")
        trt_export.sidecar_path(engine_path).write_text("{}")

    monkeypatch.setattr(trt_export, "engine_requirements_missing", lambda: [])
    monkeypatch.setattr(trt_export, "import_tensorrt", lambda: None)
    monkeypatch.setattr(trt_export, "build_engine", stand_in_build_engine)
    out = export_model(random_detector, tmp_path / "trt", format="tensorrt", precision="fp16", input_size=SIZE)
    assert sorted(p.name for p in out.iterdir()) == ["model.engine", "model.engine.json", "model.onnx", MODEL_CONFIG]
    [(onnx_name, precision, profile, engine_config)] = calls
    assert (onnx_name, precision) == ("model.onnx", "fp16")
    assert profile == trt_export.make_profile(SIZE, False)
    assert (engine_config["format"], engine_config["precision"]) == ("tensorrt", "fp16")
    config = read_model_config(out)
    assert (config.format, config.precision, config.input_size) == ("tensorrt", "fp16", SIZE)
    assert config.files == {n: sha256_file(out / n) for n in ("model.onnx", "model.engine", "model.engine.json")}
    assert config.weights_digest == weights_digest(random_detector, length=64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trt"]  # no staging folder left behind


def test_openvino_format_without_openvino_says_how_to_install(tmp_path, monkeypatch):
    import sys

    from ppyoloe_sod.export.openvino import export_openvino

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    with pytest.raises(ConfigError, match=r"not installed: pip install openvino"):
        export_openvino(tmp_path / "model.onnx", tmp_path / "model.xml")


@pytest.mark.slow
def test_cli_exports_and_the_folder_predicts(tmp_path, random_detector, capsys):
    """python -m ppyoloe_sod ... -o Global.mode=export writes the folder from a weights file; predict runs it."""
    import cv2

    from ppyoloe_sod.__main__ import main
    from ppyoloe_sod.models import safetensors_metadata
    from ppyoloe_sod.weights.store import save_safetensors

    weights = tmp_path / "sod_s.safetensors"
    save_safetensors(random_detector.state_dict(), weights, safetensors_metadata(random_detector.spec))
    out = tmp_path / "inference"
    assert main(["-c", CONFIG, "-o", "Global.mode=export", "-o", f"Export.weight_path={weights}",
                 "-o", "Export.format=openvino", "-o", "Export.input_size=[320, 320]",
                 "-o", f"Global.output={out}"]) == 0
    assert f"to {out}" in capsys.readouterr().out
    config = read_model_config(out)
    assert (config.format, config.input_size) == ("openvino", (320, 320))
    assert config.weights_digest == weights_digest(random_detector, length=64)

    image = tmp_path / "scene.png"
    cv2.imwrite(str(image), scene(320, 320, seed=3))
    assert main(["-c", CONFIG, "-o", "Global.mode=predict", "-o", f"Predict.model_dir={out}",
                 "-o", f"Predict.input={image}", "-o", "Global.device=cpu",
                 "-o", f"Global.output={tmp_path / 'pred'}"]) == 0
    assert "on OpenVINO" in capsys.readouterr().err
    assert (tmp_path / "pred" / "scene_res.json").is_file()
