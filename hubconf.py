"""torch.hub entry points for the published PP-YOLOE+ SOD models.

    model = torch.hub.load("<owner>/ppyoloe-sod", "ppyoloe_plus_sod_s")                      # official weights
    model = torch.hub.load(repo_dir, "ppyoloe_plus_sod_l", source="local", weights="my.safetensors")

``weights`` takes whatever ``ppyoloe_sod.load_model`` takes: a ``.safetensors`` or ``.pdparams`` file, a folder
holding one, or an http(s) URL; None means the official Paddle weights (downloaded once, converted, cached under
``$PPYOLOE_SOD_HOME``). ``pretrained=False`` gives the randomly initialised network instead (train mode).
"""
from __future__ import annotations

dependencies = ["torch", "torchvision"]

import os as _os  # noqa: E402 - torch.hub reads `dependencies` first by convention

import torch as _torch  # noqa: E402

from ppyoloe_sod.models import build_model as _build_model  # noqa: E402
from ppyoloe_sod.models import load_model as _load_model  # noqa: E402
from ppyoloe_sod.nn.detector import Detector as _Detector  # noqa: E402


def _create(name: str, pretrained: bool, weights: str | _os.PathLike | None,
            device: str | _torch.device) -> _Detector:
    if not pretrained:
        if weights is not None:
            raise ValueError(f"weights={weights!r} was given with pretrained=False; pass one or the other")
        return _build_model(name).to(device)
    return _load_model(name, weights, device=device)


def ppyoloe_plus_sod_s(pretrained: bool = True, weights: str | _os.PathLike | None = None,
                       device: str | _torch.device = "cpu") -> _Detector:
    """PP-YOLOE+ SOD-S (VisDrone, 10 classes, 640x640; 25.1 mAP on VisDrone val), eval mode when pretrained."""
    return _create("PP-YOLOE_plus_SOD-S", pretrained, weights, device)


def ppyoloe_plus_sod_l(pretrained: bool = True, weights: str | _os.PathLike | None = None,
                       device: str | _torch.device = "cpu") -> _Detector:
    """PP-YOLOE+ SOD-L (VisDrone, 10 classes, 640x640; 31.9 mAP on VisDrone val), eval mode when pretrained."""
    return _create("PP-YOLOE_plus_SOD-L", pretrained, weights, device)


def ppyoloe_plus_sod_largesize_l(pretrained: bool = True, weights: str | _os.PathLike | None = None,
                                 device: str | _torch.device = "cpu") -> _Detector:
    """PP-YOLOE+ SOD-largesize-L (VisDrone, 10 classes, 1920x1920; 42.7 mAP on VisDrone val), eval mode when
    pretrained."""
    return _create("PP-YOLOE_plus_SOD-largesize-L", pretrained, weights, device)
