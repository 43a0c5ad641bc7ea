"""CustomCSPPAN: transformer encoder on C5, then a top-down FPN and a bottom-up PAN of CSP stages."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import SPP, BasicBlock, ConvBN


class CSPStage(nn.Module):
    """Two 1x1 branches, one through ``n`` non-residual basic blocks (with SPP after the middle one if asked)."""

    def __init__(self, ch_in: int, ch_out: int, n: int, act: str = "swish", spp: bool = False):
        super().__init__()
        mid = ch_out // 2
        self.conv1 = ConvBN(ch_in, mid, 1, act=act)
        self.conv2 = ConvBN(ch_in, mid, 1, act=act)
        self.convs = nn.Sequential()
        for i in range(n):
            self.convs.add_module(str(i), BasicBlock(mid, mid, act=act, shortcut=False, alpha=False))
            if spp and i == (n - 1) // 2:
                self.convs.add_module("spp", SPP(mid, mid, act=act))
        self.conv3 = ConvBN(2 * mid, ch_out, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(torch.cat([self.conv1(x), self.convs(self.conv2(x))], dim=1))


class EncoderLayer(nn.Module):
    """Post-norm transformer layer; positions are added to queries and keys only."""

    def __init__(self, d_model: int, nhead: int = 4, dim_feedforward: int = 2048, dropout: float = 0.1):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model, eps=1e-5)
        self.norm2 = nn.LayerNorm(d_model, eps=1e-5)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.act = nn.GELU()

    def forward(self, src: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        q = k = src + pos
        attn = self.self_attn(q, k, src, need_weights=False)[0]
        src = self.norm1(src + self.dropout1(attn))
        ffn = self.linear2(self.dropout(self.act(self.linear1(src))))
        return self.norm2(src + self.dropout2(ffn))


class TransformerEncoder(nn.Module):
    def __init__(self, d_model: int, num_layers: int = 4, nhead: int = 4, dim_feedforward: int = 2048,
                 dropout: float = 0.1):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(d_model, nhead, dim_feedforward, dropout) for _ in range(num_layers))

    def forward(self, src: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            src = layer(src, pos)
        return src


def sincos_position_embedding(h: int, w: int, dim: int, temperature: float = 10000.0,
                              device: torch.device | None = None) -> torch.Tensor:
    """Fixed 2-D sin-cos embedding [1, h*w, dim], laid out exactly as PaddleDetection builds it.

    Paddle meshes (arange(w), arange(h)) with 'ij' indexing, so token k gets a = k // h and b = k % h; for the
    square maps these models use, that is (row, column) of the row-major token order.
    """
    if dim % 4:
        raise ValueError(f"embedding dim {dim} must be divisible by 4")
    pos_dim = dim // 4
    omega = 1.0 / temperature ** (torch.arange(pos_dim, dtype=torch.float32, device=device) / pos_dim)
    grid_a, grid_b = torch.meshgrid(torch.arange(w, dtype=torch.float32, device=device),
                                    torch.arange(h, dtype=torch.float32, device=device), indexing="ij")
    out_a = grid_a.flatten()[:, None] * omega[None]
    out_b = grid_b.flatten()[:, None] * omega[None]
    return torch.cat([out_a.sin(), out_a.cos(), out_b.sin(), out_b.cos()], dim=1)[None]


class CustomCSPPAN(nn.Module):
    """Inputs [C3, C4, C5] (strides 8, 16, 32); outputs [P5, P4, P3] (strides 32, 16, 8)."""

    def __init__(self, in_channels: list[int], out_channels: tuple[int, ...] = (768, 384, 192),
                 depth_mult: float = 1.0, width_mult: float = 1.0, block_num: int = 3, act: str = "swish",
                 spp: bool = True, use_trans: bool = False, num_layers: int = 4, nhead: int = 4,
                 dim_feedforward: int = 2048, dropout: float = 0.1):
        super().__init__()
        out_ch = [max(round(c * width_mult), 1) for c in out_channels]
        n = max(round(block_num * depth_mult), 1)
        self.out_channels = out_ch
        self.hidden_dim = in_channels[-1]
        self.encoder = (TransformerEncoder(self.hidden_dim, num_layers, nhead, dim_feedforward, dropout)
                        if use_trans else None)
        self._pos_cache: dict[tuple, torch.Tensor] = {}

        rev_in = list(in_channels[::-1])
        self.fpn_stages = nn.ModuleList()
        self.fpn_routes = nn.ModuleList()
        ch_pre = 0
        for i, (ch_in, ch_out) in enumerate(zip(rev_in, out_ch)):
            if i > 0:
                ch_in += ch_pre // 2
            self.fpn_stages.append(nn.Sequential(CSPStage(ch_in, ch_out, n, act=act, spp=spp and i == 0)))
            if i < len(rev_in) - 1:
                self.fpn_routes.append(ConvBN(ch_out, ch_out // 2, 1, act=act))
            ch_pre = ch_out

        # pan_*[i] joins level i+1 (finer) into level i; index 0 produces P5.
        self.pan_stages = nn.ModuleList()
        self.pan_routes = nn.ModuleList()
        for i in range(len(rev_in) - 1):
            self.pan_routes.append(ConvBN(out_ch[i + 1], out_ch[i + 1], 3, 2, 1, act=act))
            self.pan_stages.append(nn.Sequential(CSPStage(out_ch[i] + out_ch[i + 1], out_ch[i], n, act=act)))

    def position_embedding(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        key = (h, w, str(device))
        if key not in self._pos_cache:
            self._pos_cache[key] = sincos_position_embedding(h, w, self.hidden_dim, device=device)
        return self._pos_cache[key]

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        feats = list(feats)
        if self.encoder is not None:
            c5 = feats[-1]
            b, c, h, w = c5.shape
            tokens = c5.flatten(2).transpose(1, 2)
            pos = self.position_embedding(h, w, c5.device).to(c5.dtype)
            feats[-1] = self.encoder(tokens, pos).transpose(1, 2).reshape(b, c, h, w)

        fpn_feats = []
        route = None
        for i, block in enumerate(feats[::-1]):
            if i > 0:
                block = torch.cat([route, block], dim=1)
            route = self.fpn_stages[i](block)
            fpn_feats.append(route)
            if i < len(self.fpn_routes):
                route = F.interpolate(self.fpn_routes[i](route), scale_factor=2.0, mode="nearest")

        outs = [fpn_feats[-1]]
        route = fpn_feats[-1]
        for i in reversed(range(len(self.pan_stages))):
            route = self.pan_routes[i](route)
            route = self.pan_stages[i](torch.cat([route, fpn_feats[i]], dim=1))
            outs.append(route)
        return outs[::-1]
