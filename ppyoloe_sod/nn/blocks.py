"""Building blocks shared by the backbone, the neck and the head.

Attribute names follow PaddleDetection's parameter names (``conv``, ``bn``, ``conv1``, ``alpha`` ...) so that the
weight converter maps keys by name only. Every block that carries a BatchNorm can ``fuse()`` itself for deployment.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .batchnorm import PaddleBatchNorm2d


def make_act(name: str | None) -> nn.Module:
    """Paddle activation names to torch modules (swish == SiLU; hardsigmoid uses the same 1/6, 0.5 as Paddle)."""
    if name is None:
        return nn.Identity()
    table = {"swish": nn.SiLU, "silu": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU, "hardsigmoid": nn.Hardsigmoid}
    if name not in table:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(table)}")
    return table[name]()


def _fold_bn(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel and bias of a conv followed by an eval-mode BatchNorm, as one conv."""
    std = (bn.running_var + bn.eps).sqrt()
    scale = bn.weight / std
    fused_w = weight * scale.reshape(-1, 1, 1, 1)
    base = bias if bias is not None else torch.zeros_like(bn.running_mean)
    fused_b = bn.bias + (base - bn.running_mean) * scale
    return fused_w, fused_b


class ConvBN(nn.Module):
    """Conv (no bias) -> BatchNorm -> activation; ``fuse()`` folds the BN into the conv."""

    def __init__(self, ch_in: int, ch_out: int, kernel: int = 3, stride: int = 1, padding: int = 0,
                 act: str | None = "swish"):
        super().__init__()
        self.conv = nn.Conv2d(ch_in, ch_out, kernel, stride, padding, bias=False)
        # Paddle's BN momentum 0.9 on the running stat is torch's momentum 0.1; eps 1e-5 in both. Paddle's
        # running-variance update too (batchnorm.py), for training parity.
        self.bn = PaddleBatchNorm2d(ch_out, eps=1e-5, momentum=0.1)
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    @torch.no_grad()
    def fuse(self) -> None:
        if isinstance(self.bn, nn.Identity):
            return
        w, b = _fold_bn(self.conv.weight, self.conv.bias, self.bn)
        conv = nn.Conv2d(self.conv.in_channels, self.conv.out_channels, self.conv.kernel_size, self.conv.stride,
                         self.conv.padding, bias=True).to(w.device, w.dtype)
        conv.weight.copy_(w)
        conv.bias.copy_(b)
        self.conv, self.bn = conv, nn.Identity()


class RepVGGBlock(nn.Module):
    """act(conv3x3_bn(x) + alpha * conv1x1_bn(x)); ``fuse()`` re-parameterises it into a single 3x3 conv."""

    def __init__(self, ch_in: int, ch_out: int, act: str | None = "swish", alpha: bool = False):
        super().__init__()
        self.conv1 = ConvBN(ch_in, ch_out, 3, 1, 1, act=None)
        self.conv2 = ConvBN(ch_in, ch_out, 1, 1, 0, act=None)
        self.alpha = nn.Parameter(torch.ones(1)) if alpha else None
        self.act = make_act(act)
        self.fused: nn.Conv2d | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            return self.act(self.fused(x))
        y2 = self.conv2(x)
        if self.alpha is not None:
            y2 = self.alpha * y2
        return self.act(self.conv1(x) + y2)

    @torch.no_grad()
    def fuse(self) -> None:
        if self.fused is not None:
            return
        w3, b3 = _fold_bn(self.conv1.conv.weight, None, self.conv1.bn)
        w1, b1 = _fold_bn(self.conv2.conv.weight, None, self.conv2.bn)
        a = self.alpha if self.alpha is not None else torch.ones(1, device=w3.device, dtype=w3.dtype)
        weight = w3 + a * F.pad(w1, [1, 1, 1, 1])
        bias = b3 + a * b1
        conv = nn.Conv2d(w3.shape[1], w3.shape[0], 3, 1, 1, bias=True).to(w3.device, w3.dtype)
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
        self.fused = conv
        del self.conv1, self.conv2
        self.alpha = None


class BasicBlock(nn.Module):
    """3x3 ConvBN+act then a RepVGG block, with an optional identity shortcut (backbone: on; neck: off)."""

    def __init__(self, ch_in: int, ch_out: int, act: str = "swish", shortcut: bool = True, alpha: bool = False):
        super().__init__()
        if shortcut and ch_in != ch_out:
            raise ValueError("a shortcut needs ch_in == ch_out")
        self.conv1 = ConvBN(ch_in, ch_out, 3, 1, 1, act=act)
        self.conv2 = RepVGGBlock(ch_out, ch_out, act=act, alpha=alpha)
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.conv1(x))
        return x + y if self.shortcut else y


class EffectiveSE(nn.Module):
    """Effective squeeze-excitation: x * hardsigmoid(fc(mean_hw(x))) (CSPResNet stages)."""

    def __init__(self, channels: int):
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1, bias=True)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc(x.mean(dim=(2, 3), keepdim=True)))


class SPP(nn.Module):
    """concat[x, maxpool5, maxpool9, maxpool13] (stride 1, same padding) -> 1x1 ConvBN+act."""

    def __init__(self, ch_in: int, ch_out: int, pool_sizes: tuple[int, ...] = (5, 9, 13), act: str = "swish"):
        super().__init__()
        self.pools = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in pool_sizes)
        self.conv = ConvBN(ch_in * (len(pool_sizes) + 1), ch_out, 1, 1, 0, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([x] + [pool(x) for pool in self.pools], dim=1))


def fuse_modules(module: nn.Module) -> nn.Module:
    """Fold every BatchNorm and RepVGG branch below ``module`` (in place) for deployment; returns it."""
    for m in list(module.modules()):
        if isinstance(m, RepVGGBlock):
            m.fuse()
    for m in list(module.modules()):
        if isinstance(m, ConvBN):
            m.fuse()
    return module
