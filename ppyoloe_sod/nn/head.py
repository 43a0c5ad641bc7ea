"""ET-head (PPYOLOEHead): ESE-attention stems, class and distribution (DFL) predictions, anchor points."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from .blocks import ConvBN


class ESEAttn(nn.Module):
    """conv(feat * sigmoid(fc(global_avg(feat))))."""

    def __init__(self, channels: int, act: str = "swish"):
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1, bias=True)
        self.conv = ConvBN(channels, channels, 1, act=act)
        nn.init.normal_(self.fc.weight, std=0.001)
        nn.init.zeros_(self.fc.bias)

    def forward(self, feat: torch.Tensor, avg_feat: torch.Tensor) -> torch.Tensor:
        return self.conv(feat * torch.sigmoid(self.fc(avg_feat)))


class FixedProjection(nn.Module):
    """The frozen DFL projection vector linspace(lo, hi - 1, bins), kept as a buffer under Paddle's name."""

    def __init__(self, lo: int, hi: int):
        super().__init__()
        bins = hi - lo
        self.register_buffer("weight", torch.linspace(lo, hi - 1, bins).reshape(1, bins, 1, 1))

    @property
    def vector(self) -> torch.Tensor:
        return self.weight.flatten()


class PPYOLOEHead(nn.Module):
    """Per level (strides 32, 16, 8): cls = pred_cls(stem_cls(f) + f), reg = pred_reg(stem_reg(f)).

    Returns raw logits flattened over anchors; decoding lives in ``ppyoloe_sod.boxes``.
    """

    def __init__(self, in_channels: list[int], num_classes: int, reg_range: tuple[int, int],
                 strides: tuple[int, ...] = (32, 16, 8), grid_cell_offset: float = 0.5, act: str = "swish"):
        super().__init__()
        self.num_classes = num_classes
        self.reg_range = (int(reg_range[0]), int(reg_range[1]))
        self.bins = self.reg_range[1] - self.reg_range[0]
        self.strides = tuple(strides)
        self.grid_cell_offset = grid_cell_offset
        self.stem_cls = nn.ModuleList(ESEAttn(c, act) for c in in_channels)
        self.stem_reg = nn.ModuleList(ESEAttn(c, act) for c in in_channels)
        self.pred_cls = nn.ModuleList(nn.Conv2d(c, num_classes, 3, padding=1) for c in in_channels)
        self.pred_reg = nn.ModuleList(nn.Conv2d(c, 4 * self.bins, 3, padding=1) for c in in_channels)
        self.proj_conv = FixedProjection(*self.reg_range)
        self._anchor_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.reset_prediction_layers()

    def reset_prediction_layers(self) -> None:
        """The reference init: zero weights, class bias at prior 0.01, regression bias 1."""
        prior_bias = -math.log((1 - 0.01) / 0.01)
        for cls_conv, reg_conv in zip(self.pred_cls, self.pred_reg):
            nn.init.zeros_(cls_conv.weight)
            nn.init.constant_(cls_conv.bias, prior_bias)
            nn.init.zeros_(reg_conv.weight)
            nn.init.constant_(reg_conv.bias, 1.0)

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        cls_out, reg_out = [], []
        for i, feat in enumerate(feats):
            avg = feat.mean(dim=(2, 3), keepdim=True)
            cls_logit = self.pred_cls[i](self.stem_cls[i](feat, avg) + feat)
            reg_logit = self.pred_reg[i](self.stem_reg[i](feat, avg))
            cls_out.append(cls_logit.flatten(2).transpose(1, 2))
            reg_out.append(reg_logit.flatten(2).transpose(1, 2))
        return torch.cat(cls_out, dim=1), torch.cat(reg_out, dim=1)

    def anchors(self, h: int, w: int, device: torch.device | str | None = None,
                dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """Anchor centres in input pixels [L, 2] and their strides [L, 1] for an h x w input (cached per size)."""
        device = torch.device(device) if device is not None else self.proj_conv.weight.device
        key = (int(h), int(w), str(device), dtype)
        if key not in self._anchor_cache:
            points, strides = [], []
            for s in self.strides:
                gh, gw = math.ceil(h / s), math.ceil(w / s)
                ys = torch.arange(gh, dtype=dtype, device=device) + self.grid_cell_offset
                xs = torch.arange(gw, dtype=dtype, device=device) + self.grid_cell_offset
                yy, xx = torch.meshgrid(ys, xs, indexing="ij")
                points.append(torch.stack([xx, yy], dim=-1).reshape(-1, 2) * s)
                strides.append(torch.full((gh * gw, 1), float(s), dtype=dtype, device=device))
            self._anchor_cache[key] = (torch.cat(points), torch.cat(strides))
        return self._anchor_cache[key]
