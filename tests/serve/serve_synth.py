"""Helpers of the serving tests: fake predictors, a live uvicorn server in a thread, images as PaddleX clients
send them."""
from __future__ import annotations

import base64
import threading
from types import SimpleNamespace
from typing import Callable

import cv2
import numpy as np
import uvicorn

LABELS = ("pedestrian", "people", "bicycle", "car")


def fake_predictor(detect_batch: Callable[[list[np.ndarray]], list[np.ndarray]], **kwargs):
    """A DetPredictor without a network: ``detect_batch`` stands in for it (NMS rows per image)."""
    from ppyoloe_sod.infer.predictor import DetPredictor

    predictor = DetPredictor(SimpleNamespace(spec=SimpleNamespace(draw_threshold=0.5)), None, "fake", LABELS,
                             (32, 32), **kwargs)
    predictor.detect_batch = detect_batch
    return predictor


def size_box(images: list[np.ndarray]) -> list[np.ndarray]:
    """One 'car' per image covering its left half, score 0.9: a result that says which image it came from."""
    return [np.array([[3, 0.9, 0, 0, im.shape[1] / 2, im.shape[0]]], np.float32) for im in images]


def png_base64(image_bgr: np.ndarray) -> str:
    ok, data = cv2.imencode(".png", image_bgr)
    assert ok
    return base64.b64encode(data.tobytes()).decode("ascii")


class LiveServer:
    """uvicorn serving ``app`` on 127.0.0.1 on a free port, in a thread; ``stop()`` shuts it down as on SIGTERM
    (stops accepting, answers what is in flight, runs the app's shutdown)."""

    def __init__(self, app) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> "LiveServer":
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start (see the log above)")
            self.thread.join(0.02)
        return self

    @property
    def url(self) -> str:
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)
        assert not self.thread.is_alive(), "uvicorn did not stop"
