"""Fixtures for the serving tests: predictors (the real network with random weights at a small input size, and
fakes without a network), a live uvicorn server on 127.0.0.1 in a thread, and the PaddleX client's request."""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")
pytest.importorskip("uvicorn", reason="the serve extra is not installed: pip install -e '.[serve]'")

from serve_synth import LiveServer, fake_predictor, size_box  # noqa: E402
from tests.infer.infer_synth import scene, seeded_random_detector  # noqa: E402

SMALL_SIZE = (160, 160)  # the network's input size in these tests: cheap forwards on the test CPUs


@pytest.fixture(scope="session")
def serve_detector():
    """SOD-S with random (deterministic) weights that detect things on synthetic scenes. Do not modify it."""
    return seeded_random_detector()


@pytest.fixture(scope="session")
def net_predictor(serve_detector):
    """The real (random) network behind a DetPredictor at 160x160."""
    from ppyoloe_sod.infer.backends import TorchBackend
    from ppyoloe_sod.infer.predictor import DetPredictor

    spec = serve_detector.spec
    return DetPredictor(serve_detector, TorchBackend(serve_detector, "cpu"), spec.name, spec.classes, SMALL_SIZE)


@pytest.fixture()
def echo_predictor():
    """A fake predictor answering size_box: fast, and every answer names the image it belongs to."""
    return fake_predictor(size_box)


@pytest.fixture(scope="session")
def street() -> np.ndarray:
    """A 240x320 synthetic street scene (BGR)."""
    return scene(240, 320, seed=7)


@pytest.fixture()
def live() -> Iterator[Callable]:
    """``live(app)`` starts a LiveServer for the test; all are stopped at its end."""
    servers: list[LiveServer] = []

    def start(app) -> LiveServer:
        servers.append(LiveServer(app).start())
        return servers[-1]

    yield start
    for server in servers:
        if server.thread.is_alive():
            server.stop()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback requests go straight to the server, whatever proxy the environment names."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
