"""Backends: exported graphs compute what the PyTorch network computes; use_hpip picks, caches and says which;
hpi_config (PaddleX 3.x's shape) is checked key by key."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from infer_synth import scene
from ppyoloe_sod.errors import ConfigError
from ppyoloe_sod.infer import backends
from ppyoloe_sod.infer.backends import (OnnxRuntimeBackend, OpenVINOBackend, TorchBackend, auto_backend, make_backend,
                                        parse_hpi_config)

SIZE = (320, 320)
MODEL = "PP-YOLOE_plus_SOD-S"


def _batch(n):
    imgs = [scene(*SIZE, seed=20 + i) for i in range(n)]
    return torch.from_numpy(np.stack([im[:, :, ::-1].transpose(2, 0, 1) for im in imgs]).astype(np.float32) / 255)


def _assert_close(out, ref, name):
    cls_diff = (out.cls_logits - ref.cls_logits).abs().max().item()
    reg_diff = (out.reg_logits - ref.reg_logits).abs().max().item()
    print(f"{name} vs torch: max |d cls logit| {cls_diff:.2e}, max |d reg logit| {reg_diff:.2e}")
    # this random network's float32 noise is ~3e-4 per logit (torch float32 against float64)
    assert cls_diff < 3e-3 and reg_diff < 3e-3


@pytest.mark.slow
def test_use_hpip_exports_once_and_each_backend_matches_torch(random_detector, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PPYOLOE_SOD_HOME", str(tmp_path))
    backend = make_backend(random_detector, torch.device("cpu"), use_hpip=True, model_name=MODEL, input_size=SIZE,
                           hpi_config={"backend": "onnxruntime"})
    assert isinstance(backend, OnnxRuntimeBackend) and backend.name == "onnxruntime"
    assert "CPUExecutionProvider" in backend.providers
    assert "use_hpip: running PP-YOLOE_plus_SOD-S on ONNX Runtime" in capsys.readouterr().err
    path = backend.onnx_path
    assert path.parent == tmp_path / "onnx" and path.is_file() and "320x320" in path.name

    x = _batch(2)  # batch 2 through a graph exported with batch 1: the batch axis is dynamic
    torch_out = TorchBackend(random_detector, torch.device("cpu")).run(x)
    ort_out = backend.run(x)
    assert ort_out.cls_logits.shape == torch_out.cls_logits.shape == (2, 2100, 10)
    assert ort_out.reg_logits.shape == torch_out.reg_logits.shape == (2, 2100, 40)
    _assert_close(ort_out, torch_out, "ONNX Runtime")

    # The other graph backends and later picks reuse the cached graph instead of exporting again.
    mtime = path.stat().st_mtime_ns
    openvino = make_backend(random_detector, torch.device("cpu"), use_hpip=True, model_name=MODEL, input_size=SIZE,
                            hpi_config={"backend": "openvino", "backend_config": {"cpu_num_threads": 1}})
    assert isinstance(openvino, OpenVINOBackend) and openvino.model_path == path
    assert openvino.property("INFERENCE_PRECISION_HINT") == "f32" and openvino.property("INFERENCE_NUM_THREADS") == "1"
    assert "OpenVINO" in capsys.readouterr().err and "f32" in openvino.describe()
    _assert_close(openvino.run(x), torch_out, "OpenVINO")
    again = make_backend(random_detector, torch.device("cpu"), use_hpip=True, model_name=MODEL, input_size=SIZE)
    assert again.name == "openvino" and path.stat().st_mtime_ns == mtime
    assert "the fastest float32 backend installed here" in capsys.readouterr().err


def test_torch_backend_is_the_default(random_detector):
    backend = make_backend(random_detector, torch.device("cpu"), use_hpip=False)
    assert isinstance(backend, TorchBackend) and backend.name == "torch" and backend.precision == "fp32"


def test_auto_pick_prefers_openvino_then_onnxruntime_on_cpu(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(backends, "openvino_available", lambda: True)
    monkeypatch.setattr(backends, "onnxruntime_available", lambda: True)
    assert auto_backend(cpu) == "openvino"
    monkeypatch.setattr(backends, "openvino_available", lambda: False)
    assert auto_backend(cpu) == "onnxruntime"
    monkeypatch.setattr(backends, "onnxruntime_available", lambda: False)
    assert auto_backend(cpu) == "torch"
    monkeypatch.setattr(backends, "openvino_available", lambda: True)
    assert auto_backend(torch.device("cuda", 0)) == "torch"  # OpenVINO here runs on the CPU only


def test_use_hpip_without_graph_backends_falls_back_and_says_so(random_detector, monkeypatch, capsys):
    monkeypatch.setattr(backends, "onnxruntime_available", lambda: False)
    monkeypatch.setattr(backends, "openvino_available", lambda: False)
    backend = make_backend(random_detector, torch.device("cpu"), use_hpip=True)
    assert backend.name == "torch"
    assert "neither openvino nor onnxruntime is installed (pip install openvino" in capsys.readouterr().err


def test_cache_key_changes_with_weights(random_detector):
    import copy

    from ppyoloe_sod.infer.backends import weights_digest

    other = copy.deepcopy(random_detector)
    with torch.no_grad():
        other.yolo_head.pred_cls[0].bias.add_(1.0)
    assert weights_digest(other) != weights_digest(random_detector)
    assert weights_digest(copy.deepcopy(random_detector)) == weights_digest(random_detector)


def test_use_hpip_pick_is_shown_once(monkeypatch, capsys):
    """The pick is announced: printed when nothing shows INFO logs, logged (only) when something does, as the
    command line sets up."""
    import io
    import logging

    monkeypatch.setattr(backends, "onnxruntime_available", lambda: False)
    monkeypatch.setattr(backends, "openvino_available", lambda: False)
    detector = torch.nn.Identity()
    said = "use_hpip: neither openvino nor onnxruntime is installed"
    make_backend(detector, torch.device("cpu"), use_hpip=True)
    assert capsys.readouterr().err.count(said) == 1

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.INFO)  # setLevel, not an attribute: it clears the loggers' cached levels
    root.addHandler(handler)
    try:
        make_backend(detector, torch.device("cpu"), use_hpip=True)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    shown = capsys.readouterr().err + stream.getvalue()
    assert shown.count(said) == 1


def test_torch_backend_bf16_runs_and_returns_float32(random_detector):
    x = _batch(1)
    out = TorchBackend(random_detector, torch.device("cpu"), precision="bf16").run(x)
    ref = TorchBackend(random_detector, torch.device("cpu")).run(x)
    assert out.cls_logits.dtype == torch.float32 and out.cls_logits.shape == ref.cls_logits.shape
    assert not torch.equal(out.cls_logits, ref.cls_logits)  # it did run in bf16
    with pytest.raises(ConfigError, match="'fp16' with backend 'torch' needs a GPU"):
        TorchBackend(random_detector, torch.device("cpu"), precision="fp16")


@pytest.mark.parametrize("hpi_config, message", [
    ({"backnd": "openvino"}, "unknown key(s) 'backnd'; valid keys: backend, backend_config"),
    ({"backend": "tflite"}, "hpi_config['backend'] is 'tflite'; use one of openvino, onnxruntime, tensorrt, torch"),
    ({"backend": "paddle"}, "here the network itself runs as backend 'torch'"),
    ({"backend": "openvino", "backend_config": {"threads": 2}},
     "unknown key(s) 'threads' for backend 'openvino'; valid keys: cpu_num_threads, precision, performance_hint"),
    ({"backend": "openvino", "backend_config": {"precision": "fp16"}},
     "precision 'fp16' is not offered by backend 'openvino' (it runs fp32, bf16); fp16 runs on a GPU"),
    ({"backend": "onnxruntime", "backend_config": {"precision": "bf16"}}, "bf16 runs on backend 'openvino'"),
    ({"backend": "openvino", "backend_config": {"cpu_num_threads": 0}}, "cpu_num_threads must be a positive"),
    ({"backend": "openvino", "backend_config": {"performance_hint": "FAST"}}, "use LATENCY"),
    ({"backend_config": {"precision": "bf16"}}, "backend_config'] is set but no backend"),
    ({"auto_config": False}, "auto_config=False but no backend"),
    ({"model_name": "PP-YOLOE_plus_SOD-L"}, "model is 'PP-YOLOE_plus_SOD-S'"),
    ({"device_type": "gpu"}, "'gpu' but the model runs on cpu"),
    ("openvino", "hpi_config must be a dict"),
])
def test_bad_hpi_config_is_named(hpi_config, message):
    with pytest.raises(ConfigError) as info:
        parse_hpi_config(hpi_config, MODEL, torch.device("cpu"))
    assert message in str(info.value)


def test_paddlex_hpi_config_keys_are_accepted():
    config = parse_hpi_config({"backend": "onnxruntime", "backend_config": {"cpu_num_threads": 4},
                               "auto_config": True, "model_name": MODEL, "device_type": "cpu",
                               "auto_paddle2onnx": True}, MODEL, torch.device("cpu"))
    assert config.backend == "onnxruntime" and config.backend_config == {"cpu_num_threads": 4}
    assert parse_hpi_config(None).backend is None


def test_hpi_config_without_use_hpip_is_refused(random_detector):
    with pytest.raises(ConfigError, match="hpi_config is read only with use_hpip=True"):
        make_backend(random_detector, torch.device("cpu"), use_hpip=False, hpi_config={"backend": "openvino"})


def test_tensorrt_backend_says_what_is_missing(random_detector, monkeypatch):
    monkeypatch.setattr(backends, "tensorrt_available", lambda: False)
    with pytest.raises(ConfigError, match=r"not installed: pip install 'ppyoloe-sod\[tensorrt\]'"):
        make_backend(random_detector, torch.device("cpu"), use_hpip=True, hpi_config={"backend": "tensorrt"})


def test_auto_pick_decision_puts_tensorrt_first_on_a_gpu(monkeypatch, capsys):
    """The order alone (auto_backend returns a name; no engine is built or run here): on a GPU TensorRT when
    it imports, else torch, whose announcement says TensorRT is missing; on a CPU TensorRT is never picked."""
    from types import SimpleNamespace

    gpu, cpu = torch.device("cuda", 0), torch.device("cpu")
    monkeypatch.setattr(backends, "openvino_available", lambda: True)
    monkeypatch.setattr(backends, "onnxruntime_available", lambda: True)
    monkeypatch.setattr(backends, "tensorrt_available", lambda: True)
    assert auto_backend(gpu) == "tensorrt"
    assert auto_backend(cpu) == "openvino"
    monkeypatch.setattr(backends, "openvino_available", lambda: False)
    monkeypatch.setattr(backends, "onnxruntime_available", lambda: False)
    assert auto_backend(cpu) == "torch"
    monkeypatch.setattr(backends, "tensorrt_available", lambda: False)
    assert auto_backend(gpu) == "torch"
    torch_on_gpu = SimpleNamespace(name="torch", describe=lambda: "cuda:0, fp32")
    backends.announce_backend(torch_on_gpu, MODEL, picked=True, device=gpu)
    assert "use_hpip: TensorRT is not installed (pip install 'ppyoloe-sod[tensorrt]'" in capsys.readouterr().err


def test_tensorrt_counts_as_available_only_when_it_imports(tmp_path, monkeypatch):
    """A tensorrt package whose CUDA libraries are missing is found by pip but fails to import: not picked."""
    import sys

    package = tmp_path / "tensorrt"
    package.mkdir()
    (package / "__init__.py").write_text("raise OSError('libnvinfer.so.10: cannot open shared object file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    assert backends.tensorrt_available() is False
    assert auto_backend(torch.device("cuda", 0)) == "torch"


def test_tensorrt_on_weights_checks_the_device_before_building(random_detector, monkeypatch, tmp_path):
    """backend 'tensorrt' on a weights file builds a cached engine, so a CPU device is refused first (no
    ONNX export, no engine)."""
    monkeypatch.setenv("PPYOLOE_SOD_HOME", str(tmp_path))
    monkeypatch.setattr(backends, "tensorrt_available", lambda: True)
    with pytest.raises(ConfigError, match="backend 'tensorrt' runs on an NVIDIA GPU, not on cpu"):
        make_backend(random_detector, torch.device("cpu"), use_hpip=True, model_name=MODEL, input_size=SIZE,
                     hpi_config={"backend": "tensorrt"})
    assert not any(tmp_path.iterdir())


def test_use_hpip_on_a_gpu_routes_weights_to_a_cached_engine(random_detector, monkeypatch, capsys):
    """The route only (stand-ins for the engine cache and the TensorRT backend; nothing runs): the auto pick
    on a GPU asks tensorrt_engine_for for the weights' engine, hands it on at fp32 and announces TensorRT."""
    from types import SimpleNamespace

    calls = []
    monkeypatch.setattr(backends, "tensorrt_available", lambda: True)
    monkeypatch.setattr(backends, "tensorrt_engine_for",
                        lambda det, name, size, device, precision: calls.append((name, size, precision)) or "e.engine")
    monkeypatch.setattr(backends, "make_tensorrt_backend",
                        lambda engine, device, precision: SimpleNamespace(name="tensorrt", engine=engine,
                                                                          describe=lambda: f"stand-in, {precision}"))
    backend = make_backend(random_detector, torch.device("cuda", 0), use_hpip=True, model_name=MODEL,
                           input_size=SIZE)
    assert backend.engine == "e.engine" and calls == [(MODEL, SIZE, "fp32")]
    assert f"use_hpip: running {MODEL} on TensorRT (stand-in, fp32)" in capsys.readouterr().err


@pytest.mark.parametrize("run_mode, hpi_config", [("onnxruntime", {"backend": "onnxruntime"}),
                                                  ("ORT", {"backend": "onnxruntime"}),
                                                  ("openvino", {"backend": "openvino"}), ("paddle", None)])
def test_run_mode_names_the_backend_use_hpip_runs(run_mode, hpi_config, monkeypatch, tmp_path):
    """Predict.kernel_option.run_mode=onnxruntime keeps meaning ONNX Runtime now that use_hpip alone may pick
    OpenVINO."""
    from ppyoloe_sod.config import load_config
    from ppyoloe_sod.infer import predictor

    class Stop(Exception):
        pass

    seen = {}

    def fake_create_model(model_name, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(predictor, "create_model", fake_create_model)
    cfg = load_config(None, ["Predict.input=x.png", f"Predict.kernel_option.run_mode={run_mode}",
                             f"Global.output={tmp_path}"])
    with pytest.raises(Stop):
        predictor.run_predict(cfg)
    assert seen["hpi_config"] == hpi_config and seen["use_hpip"] is (hpi_config is not None)
