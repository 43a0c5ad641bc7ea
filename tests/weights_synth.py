"""Synthetic weights for the loading tests: our own model with randomised statistics, written as our file types.

A fresh model has BN statistics (0, 1) and zero head predictors, so its class scores do not depend on the
features at all; randomising them makes an output comparison able to notice weights that were not loaded.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ppyoloe_sod.models import build_model, safetensors_metadata
from ppyoloe_sod.nn.detector import Detector
from ppyoloe_sod.weights.store import save_safetensors


def randomized_model(name: str, seed: int = 0) -> Detector:
    """``build_model(name)`` with random BN statistics / affine, RepVGG alphas and head predictors, in eval mode."""
    torch.manual_seed(seed)
    model = build_model(name)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, t in model.state_dict().items():
            if not t.is_floating_point() or key.endswith("proj_conv.weight"):
                continue
            u = torch.rand(t.shape, generator=g)
            if key.endswith("running_mean"):
                t.copy_((u - 0.5) * 0.2)
            elif key.endswith("running_var"):
                t.copy_(0.5 + 1.5 * u)
            elif key.endswith(".bn.weight") or key.endswith(".alpha"):
                t.copy_(0.5 + u)
            elif key.endswith(".bn.bias"):
                t.copy_((u - 0.5) * 0.2)
            elif "yolo_head.pred_cls" in key:
                t.copy_((u - 0.5) * 0.02 if key.endswith("weight") else -1.0 + (u - 0.5))
            elif "yolo_head.pred_reg" in key:
                t.copy_((u - 0.5) * 0.004 if key.endswith("weight") else (u - 0.5) * 2)
    return model.eval()


def write_safetensors(model: Detector, path: Path) -> Path:
    """Our weights file for ``model``, with the metadata ``load_model`` checks."""
    save_safetensors(model.state_dict(), path, safetensors_metadata(model.spec))
    return path


def outputs(model: Detector, size: int = 64, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw head outputs on a fixed random image (small: only equality matters here)."""
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        raw = model(x)
    return raw.cls_logits, raw.reg_logits
