"""The PP-YOLOE+ detector: backbone -> neck -> head, returning raw tensors (no decoding, no NMS)."""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn

from ..zoo import ArchSpec
from .backbone import CSPResNet
from .blocks import fuse_modules
from .head import PPYOLOEHead
from .neck import CustomCSPPAN


class RawOutput(NamedTuple):
    cls_logits: torch.Tensor  # [B, L, C]
    reg_logits: torch.Tensor  # [B, L, 4 * bins], side-major (l, t, r, b)


class Detector(nn.Module):
    """Input: RGB float images in 0..1, [B, 3, H, W] with H and W multiples of 32."""

    def __init__(self, arch: ArchSpec):
        super().__init__()
        self.arch = arch
        self.backbone = CSPResNet(arch.depth_mult, arch.width_mult, arch.backbone_layers, arch.backbone_channels)
        self.neck = CustomCSPPAN(self.backbone.out_channels, arch.neck_out_channels, arch.depth_mult,
                                 arch.width_mult, arch.neck_block_num, use_trans=arch.use_transformer,
                                 num_layers=arch.transformer_layers, nhead=arch.transformer_heads,
                                 dim_feedforward=arch.transformer_ffn)
        self.yolo_head = PPYOLOEHead(self.neck.out_channels, arch.num_classes, arch.reg_range, arch.strides)
        self.spec = None  # the zoo ModelSpec, set by load_model / build_model

    def forward(self, images: torch.Tensor) -> RawOutput:
        h, w = images.shape[-2:]
        if h % 32 or w % 32:
            raise ValueError(f"input height and width must be multiples of 32, got {h}x{w}")
        cls_logits, reg_logits = self.yolo_head(self.neck(self.backbone(images)))
        return RawOutput(cls_logits, reg_logits)

    @property
    def reg_range(self) -> tuple[int, int]:
        return self.yolo_head.reg_range

    @property
    def proj(self) -> torch.Tensor:
        """DFL projection vector [bins]."""
        return self.yolo_head.proj_conv.vector

    def anchors(self, h: int, w: int, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.yolo_head.anchors(h, w, device)

    def fuse(self) -> "Detector":
        """Fold BatchNorms and RepVGG branches into plain convs (inference only; outputs unchanged)."""
        if self.training:
            raise RuntimeError("fuse() folds BatchNorm statistics: call model.eval() first")
        fuse_modules(self)
        return self
