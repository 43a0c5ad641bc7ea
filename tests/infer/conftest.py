"""Shared fixtures for the inference tests: the real SOD-S network with random weights (in memory, saved to a
tmp safetensors file, and wrapped in a 320x320 predictor)."""
from __future__ import annotations

import pytest

from infer_synth import seeded_random_detector


@pytest.fixture(scope="session")
def random_detector():
    """A SOD-S Detector with random (deterministic) weights, eval mode. Do not modify it in a test."""
    return seeded_random_detector()


@pytest.fixture(scope="session")
def sod_s_weights(tmp_path_factory, random_detector):
    """Path of a safetensors file holding random_detector's weights."""
    from ppyoloe_sod.models import safetensors_metadata
    from ppyoloe_sod.weights.store import save_safetensors

    path = tmp_path_factory.mktemp("weights") / "sod_s_random.safetensors"
    save_safetensors(random_detector.state_dict(), path, safetensors_metadata(random_detector.spec))
    return path


@pytest.fixture(scope="session")
def small_predictor(random_detector):
    """A predictor on the real (random) network at 320x320 instead of 640: 4x cheaper on the test CPUs."""
    from ppyoloe_sod.infer.backends import TorchBackend
    from ppyoloe_sod.infer.predictor import DetPredictor

    spec = random_detector.spec
    return DetPredictor(random_detector, TorchBackend(random_detector, "cpu"), spec.name, spec.classes, (320, 320))


class _NoDetections:
    """Stands in for the network where only the input side of predict matters: every image gets no box."""

    def __call__(self, images):
        import numpy as np

        return [np.zeros((0, 6), np.float32) for _ in images]


@pytest.fixture()
def blind_predictor():
    """A DetPredictor with no network (it finds nothing): fast tests of inputs, names, limits and saving."""
    from types import SimpleNamespace

    from ppyoloe_sod.infer.predictor import DetPredictor

    predictor = DetPredictor(SimpleNamespace(spec=SimpleNamespace(draw_threshold=0.5)), None, "blind",
                             ("pedestrian", "car"), (32, 32))
    predictor.detect_batch = _NoDetections()
    return predictor


@pytest.fixture
def sahi_numpy_backend():
    """SAHI's reference merge backend for the parity tests ('auto' would pick torchvision's NMS on a GPU machine,
    or numba when present)."""
    from sahi.postprocess import backends as sahi_backends

    previous = sahi_backends.get_postprocess_backend()
    sahi_backends.set_postprocess_backend("numpy")
    yield
    sahi_backends.set_postprocess_backend(previous)
