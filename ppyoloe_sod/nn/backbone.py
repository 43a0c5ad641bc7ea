"""CSPResNet backbone (large stem, CSP stages of RepVGG basic blocks with alpha, effective SE)."""
from __future__ import annotations

import torch
import torch.nn as nn

from .blocks import BasicBlock, ConvBN, EffectiveSE


class CSPResStage(nn.Module):
    """Stride-2 CSP stage: conv_down, two 1x1 branches (one through the blocks), ESE, 1x1 fusion."""

    def __init__(self, ch_in: int, ch_out: int, num_blocks: int, act: str = "swish", alpha: bool = True):
        super().__init__()
        mid = (ch_in + ch_out) // 2
        self.conv_down = ConvBN(ch_in, mid, 3, 2, 1, act=act)
        self.conv1 = ConvBN(mid, mid // 2, 1, act=act)
        self.conv2 = ConvBN(mid, mid // 2, 1, act=act)
        self.blocks = nn.Sequential(*[BasicBlock(mid // 2, mid // 2, act=act, shortcut=True, alpha=alpha)
                                      for _ in range(num_blocks)])
        self.attn = EffectiveSE(mid)
        self.conv3 = ConvBN(mid, ch_out, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_down(x)
        y = torch.cat([self.conv1(x), self.blocks(self.conv2(x))], dim=1)
        return self.conv3(self.attn(y))


class CSPResNet(nn.Module):
    """Returns the stride 8, 16 and 32 feature maps (C3, C4, C5)."""

    def __init__(self, depth_mult: float, width_mult: float, layers: tuple[int, ...] = (3, 6, 6, 3),
                 channels: tuple[int, ...] = (64, 128, 256, 512, 1024), act: str = "swish", alpha: bool = True,
                 return_idx: tuple[int, ...] = (1, 2, 3)):
        super().__init__()
        ch = [max(round(c * width_mult), 1) for c in channels]
        n = [max(round(b * depth_mult), 1) for b in layers]
        self.stem = nn.Sequential()
        self.stem.add_module("conv1", ConvBN(3, ch[0] // 2, 3, 2, 1, act=act))
        self.stem.add_module("conv2", ConvBN(ch[0] // 2, ch[0] // 2, 3, 1, 1, act=act))
        self.stem.add_module("conv3", ConvBN(ch[0] // 2, ch[0], 3, 1, 1, act=act))
        self.stages = nn.Sequential(*[CSPResStage(ch[i], ch[i + 1], n[i], act=act, alpha=alpha)
                                      for i in range(len(n))])
        self.return_idx = tuple(return_idx)
        self.out_channels = [ch[i + 1] for i in self.return_idx]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.return_idx:
                outs.append(x)
        return outs
