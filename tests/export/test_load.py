"""create_model(model_dir=EXPORT_FOLDER): each backend's detections against the PyTorch path, the precision it
runs at (never OpenVINO's own bf16 default), and the refusals for a folder that is not what it says."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from export_parity import SIZE
from infer.infer_synth import MODEL, scene
from parity_match import kept_fraction, match_detections
from ppyoloe_sod import create_model
from ppyoloe_sod.errors import ConfigError, WeightsError
from ppyoloe_sod.export.config import MODEL_CONFIG

# float32 against float32: this random network's own float32 noise is 4e-5 in a score and ~1e-2 px in a
# corner (torch float32 against float64: measured 3.6e-5; ONNX Runtime and OpenVINO against torch: at most
# 7.4e-5 / 1.3e-2 px on these scenes over the random weights tried); the tolerances leave a 4x margin.
SCORE_TOL, BOX_TOL = 3e-4, 5e-2
SCENES = [(320, 320, 20), (320, 320, 21), (360, 480, 22), (400, 300, 7)]  # (h, w, seed): resized to 320x320


@pytest.fixture(scope="module")
def images():
    return [scene(h, w, seed=s) for h, w, s in SCENES]


@pytest.fixture(scope="module")
def torch_detections(fused_detector, images):
    """What create_model's PyTorch path finds: the fused network, eager, float32."""
    from ppyoloe_sod.infer.backends import TorchBackend
    from ppyoloe_sod.infer.predictor import DetPredictor

    spec = fused_detector.spec
    predictor = DetPredictor(fused_detector, TorchBackend(fused_detector, "cpu"), spec.name, spec.classes, SIZE)
    return predictor.detect_batch(images)


@pytest.mark.parametrize("hpi_config, backend", [(None, "openvino"), ({"backend": "onnxruntime"}, "onnxruntime"),
                                                 ({"backend": "openvino", "backend_config": {"cpu_num_threads": 1}},
                                                  "openvino")])
def test_export_folder_detects_what_torch_detects(openvino_export, images, torch_detections, hpi_config, backend,
                                                  capsys):
    model = create_model(MODEL, model_dir=openvino_export, device="cpu", hpi_config=hpi_config)
    assert model.backend.name == backend and model.input_size == SIZE
    assert f"from {openvino_export} on" in capsys.readouterr().err  # which backend runs is said
    for ref, got in zip(torch_detections, model.detect_batch(images)):
        stats = match_detections(ref, got, SCORE_TOL, BOX_TOL)
        print(stats)
        # the comparison covers most boxes, and many: not a lucky few
        assert stats["decided"] >= max(20, 0.9 * (ref[:, 1] > 0.5).sum()), stats
    result = next(model.predict(images[0]))
    assert result.boxes and {b["label"] for b in result.boxes} <= set(model.labels)


def test_openvino_runs_fp32_unless_bf16_is_asked_for(openvino_export, images, torch_detections):
    import openvino as ov

    from ppyoloe_sod.infer.backends import openvino_cpu_has_bf16

    model = create_model(MODEL, model_dir=openvino_export, device="cpu")
    assert model.backend.property("INFERENCE_PRECISION_HINT") == "f32"
    assert model.backend.property("PERFORMANCE_HINT") == "LATENCY"
    core = ov.Core()
    if not openvino_cpu_has_bf16(core):
        pytest.skip("this CPU has no bf16: OpenVINO's default is f32 here, and bf16 is refused (next test)")
    # Where the CPU has bf16 OpenVINO's own default is bf16: the explicit hint above is what keeps float32.
    plain = core.compile_model(core.read_model(str(openvino_export / "model.xml")), "CPU")
    assert plain.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "bf16"

    bf16 = create_model(MODEL, model_dir=openvino_export, device="cpu",
                        hpi_config={"backend": "openvino", "backend_config": {"precision": "bf16",
                                                                             "performance_hint": "THROUGHPUT"}})
    assert bf16.backend.property("INFERENCE_PRECISION_HINT") == "bf16"
    assert bf16.backend.property("PERFORMANCE_HINT") == "THROUGHPUT"
    kept = [kept_fraction(ref, got, floor=0.6) for ref, got in zip(torch_detections, bf16.detect_batch(images))]
    assert np.mean(kept) > 0.5, kept  # bf16 moves scores by ~0.1 here: only a loose sanity check


def test_bf16_on_a_cpu_without_it_is_refused(openvino_export, monkeypatch):
    import ppyoloe_sod.infer.backends as backends

    monkeypatch.setattr(backends, "openvino_cpu_has_bf16", lambda core: False)
    with pytest.raises(ConfigError, match="this CPU has no bf16 support .*refusing.*use precision 'fp32'"):
        create_model(MODEL, model_dir=openvino_export, device="cpu",
                     hpi_config={"backend": "openvino", "backend_config": {"precision": "bf16"}})


def test_folder_without_model_config_is_refused(export_copy):
    (export_copy / MODEL_CONFIG).unlink()
    with pytest.raises(WeightsError, match=r"has model\.onnx, model\.xml, model\.bin but no model_config\.json"):
        create_model(MODEL, model_dir=export_copy, device="cpu")


@pytest.mark.parametrize("changed, hpi_config", [("model.onnx", {"backend": "onnxruntime"}), ("model.bin", None),
                                                 ("model.xml", None)])
def test_file_that_does_not_match_model_config_is_refused(export_copy, changed, hpi_config):
    with open(export_copy / changed, "ab") as f:
        f.write(b"\0")
    with pytest.raises(WeightsError, match=rf"{changed} does not match model_config\.json .*changed or replaced"):
        create_model(MODEL, model_dir=export_copy, device="cpu", hpi_config=hpi_config)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(format="tflite"), "format 'tflite'"),
    (lambda d: d["input"].update(size=[320, 300]), "not \\[h, w\\] in positive multiples of 32"),
    (lambda d: d.update(classes=[]), "'classes' must be a non-empty list"),
    (lambda d: d.pop("postprocess"), "'postprocess' is None"),
])
def test_broken_model_config_is_refused(export_copy, edit, message):
    path = export_copy / MODEL_CONFIG
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(WeightsError, match=message):
        create_model(MODEL, model_dir=export_copy, device="cpu")
    path.write_text("{not json")
    with pytest.raises(WeightsError, match="not readable JSON"):
        create_model(MODEL, model_dir=export_copy, device="cpu")


def test_export_of_another_model_is_refused(openvino_export):
    with pytest.raises(WeightsError, match="is an export of PP-YOLOE_plus_SOD-S, not PP-YOLOE_plus_SOD-L"):
        create_model("PP-YOLOE_plus_SOD-L", model_dir=openvino_export, device="cpu")


def test_torch_backend_cannot_run_an_export(openvino_export):
    with pytest.raises(ConfigError, match="backend 'torch' cannot run"):
        create_model(MODEL, model_dir=openvino_export, device="cpu", hpi_config={"backend": "torch"})


def test_openvino_not_installed_names_the_fix(openvino_export, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    with pytest.raises(ConfigError, match=r"backend 'openvino' needs the openvino package.*pip install openvino"):
        create_model(MODEL, model_dir=openvino_export, device="cpu")
