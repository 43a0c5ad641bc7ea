"""A ``detect_fn`` for ``ppyoloe_sod.eval.evaluate`` built from an in-memory torch model.

It is the predictor's own batch step (BGR -> RGB, cubic resize to the model's input size, /255, forward,
``boxes.postprocess`` with the model spec's NMS), so evaluation during training scores exactly what
``create_model(...).predict`` would return before its display threshold.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..infer.backends import TorchBackend
from ..infer.predictor import DetPredictor
from ..nn.detector import Detector

DetectFn = Callable[[list[np.ndarray]], list[np.ndarray]]


def make_detect_fn(detector: Detector, device: str | torch.device = "cpu",
                   input_size: tuple[int, int] | None = None) -> DetectFn:
    """``detect_fn(list of BGR uint8 images) -> list of [N, 6] (class, score, x1, y1, x2, y2)`` in image pixels.

    ``detector.spec`` gives the classes, NMS settings and (unless ``input_size`` is given) the input size; the
    detector is put in eval mode.
    """
    spec = detector.spec
    if spec is None:
        raise ValueError("detector.spec is not set; build the detector with build_model")
    predictor = DetPredictor(detector, TorchBackend(detector, torch.device(device)), spec.name, spec.classes,
                             input_size or spec.input_size)
    return predictor.detect_batch
