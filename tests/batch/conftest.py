"""Fixtures of the batch-inference tests: one local Ray (or Spark) for the whole module, and a small model folder.

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


@pytest.fixture(scope="module")
def local_spark_session():
    """A local Spark (local[2], started as ``predict_spark`` starts it), stopped after the module; skipped with
    the reason when no Java runtime is installed (scripts/test.sh installs one when it may)."""
    from ppyoloe_sod.batch.spark_predict import JAVA_INSTALL, java_available, local_spark

    if not java_available():
        pytest.skip(f"Spark needs Java and none was found: {JAVA_INSTALL}")
    spark = local_spark("local[2]")
    yield spark
    spark.stop()
