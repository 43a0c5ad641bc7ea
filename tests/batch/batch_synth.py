"""Test images, a worker that kills its own process once (Ray tests), and a stand-in create_model that records
how each inference path would load the model (also used by tests/serve)."""
from __future__ import annotations

import inspect
import os
from pathlib import Path

import cv2

from infer.infer_synth import scene
from ppyoloe_sod.batch.ray_predict import DetectWorker


def write_scenes(folder: Path, sizes: dict[str, tuple[int, int]]) -> list[Path]:
    """PNG street scenes ``folder/<relative name>`` of the given (h, w), each with its own seed."""
    paths = []
    for seed, (name, (h, w)) in enumerate(sizes.items()):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), scene(h, w, seed=seed + 1))
        paths.append(path)
    return paths


class DiesOnceWorker(DetectWorker):
    """Kills its actor's process on its first batch (the process exits; Ray sees a dead actor), then works.

    The first call anywhere creates ``marker`` and exits; Ray restarts the actor and runs the batch again.
    """

    marker: str = ""

    def __call__(self, batch):
        if not os.path.exists(self.marker):
            Path(self.marker).write_text("died once\n")
            os._exit(1)
        return super().__call__(batch)


class StopLoading(Exception):
    """Raised by the stand-in create_model: the test wants its arguments, not a model."""


def record_create_model(monkeypatch) -> list[dict]:
    """Replace ``create_model`` by a stand-in that records each call's arguments by name (defaults filled in),
    then raises StopLoading; the list it fills is returned."""
    from ppyoloe_sod.infer import predictor

    signature = inspect.signature(predictor.create_model)
    calls: list[dict] = []

    def stand_in(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        calls.append(dict(bound.arguments))
        raise StopLoading

    monkeypatch.setattr(predictor, "create_model", stand_in)
    return calls
