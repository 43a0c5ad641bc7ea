"""Synthetic data for the inference tests: street-like pictures and a randomised (untrained) detector."""
from __future__ import annotations

import cv2
import numpy as np
import torch

MODEL = "PP-YOLOE_plus_SOD-S"


def _as_batch(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack([im[:, :, ::-1].transpose(2, 0, 1) for im in images]).copy()).float() / 255


def seeded_random_detector(model_name: str = MODEL, seed: int = 0) -> torch.nn.Module:
    """``randomize_detector(build_model(model_name))`` with the same weights whatever ran before in the process.

    build_model's random init feeds the calibration, so without a fixed seed the weights (and which boxes clear a
    threshold) depend on the tests that ran earlier; the global RNG is left as it was.
    """
    from ppyoloe_sod.models import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return randomize_detector(build_model(model_name), seed=seed)


def randomize_detector(model: torch.nn.Module, seed: int = 0, keep_fraction: float = 0.002) -> torch.nn.Module:
    """Make an untrained network behave like a detector: input-dependent, varied classes, scores and boxes.

    The reference init zeroes the prediction convs (every score would be 0.01, nothing survives NMS) and its
    BN statistics do not match the activations (outputs barely depend on the image). So: BN statistics are
    measured on synthetic scenes, the prediction convs get random weights, and the class biases are set so that
    about ``keep_fraction`` of each level's anchors score above 0.5 for each class.
    """
    g = torch.Generator().manual_seed(seed)
    head = model.yolo_head
    size = 320
    calib = _as_batch([scene(size, size, seed=100 + k) for k in range(2)])
    with torch.no_grad():
        for conv in [*head.pred_cls, *head.pred_reg]:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.02)
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=g) * 0.5)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the calibration pass
        model.eval()
        for m in model.modules():  # batch statistics in BN; dropout stays off, so the weights are deterministic
            if isinstance(m, torch.nn.BatchNorm2d):
                m.train()
        model(calib)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = 0.1
        model.eval()
        logits = model(calib).cls_logits  # [B, L, C]
        start = 0
        for conv, stride in zip(head.pred_cls, (32, 16, 8)):
            n = (size // stride) ** 2
            level = logits[:, start:start + n].reshape(-1, logits.shape[-1])
            conv.bias.sub_(torch.quantile(level, 1 - keep_fraction, dim=0))
            start += n
    return model


def scene(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A BGR street-like picture: textured ground and a few dozen small rectangles / blobs (vehicles, people)."""
    rng = np.random.default_rng(seed)
    img = np.empty((h, w, 3), np.uint8)
    img[:] = (90, 100, 95)
    img = cv2.add(img, rng.integers(0, 40, (h, w, 3), dtype=np.uint8))
    for _ in range(max(4, h * w // 8000)):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        bw, bh = int(rng.integers(4, 30)), int(rng.integers(4, 20))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            cv2.rectangle(img, (x, y), (x + bw, y + bh), color, -1)
        else:
            cv2.circle(img, (x, y), max(2, bh // 3), color, -1)
    return img
