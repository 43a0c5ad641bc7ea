"""Fixtures of the Ray batch-inference tests: one local Ray for the whole module, and a small model folder.

Ray starts slowly on two loaded cores, so it is started once per module (``ray.init(num_cpus=2)``; at most
two one-CPU actors, so no actor waits for a CPU that does not exist) and shut down at its end.
"""
from __future__ import annotations

import pytest

from infer.infer_synth import MODEL, seeded_random_detector

SIZE = (160, 160)  # (h, w) the test model runs at: 16x cheaper than the model's 640x640


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """An ONNX export folder (create_model's model_dir) of the SOD-S network with random, calibrated weights."""
    pytest.importorskip("onnxruntime", reason="the test model is an ONNX export: pip install onnx onnxruntime")
    from ppyoloe_sod.export import export_model
    return export_model(seeded_random_detector(MODEL), tmp_path_factory.mktemp("model") / "sod_s_160",
                        format="onnx", input_size=SIZE)


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with two CPUs, shut down after the module."""
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'ray[data]' psutil "
                                            "(or pip install -e '.[ray]')")
    pytest.importorskip("ray.data", reason="Ray Data is not installed: pip install 'ray[data]'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
