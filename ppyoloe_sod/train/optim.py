"""Optimiser, LR schedule and weight EMA of the PP-YOLOE+ SOD recipe (reference spec A.4).

- SGD with momentum 0.9 and *coupled* L2 weight decay 5e-4 (added to the gradient, as Paddle's Momentum
  with ``L2Decay`` does); BatchNorm weight and bias are exempt, every other trainable parameter decays.
- LR stepped every iteration: linear warmup from 0, then half a cosine over ``max_epochs`` (96) although
  training stops earlier (80), so the last LR is about 0.07 of the base.
- EMA of every floating state_dict entry (BN running statistics included) with the "threshold" decay
  ``min(decay, (1 + t) / (10 + t))``, started at zero and bias-corrected when exported.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import ConfigError

EMA_EXCLUDED = ("proj", "proj_conv.weight")


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside DDP / DataParallel wrappers (state_dict keys without ``module.``)."""
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two SGD groups: ``decay`` (everything trainable but BatchNorm) and ``no_decay`` (BN weight/bias)."""
    bn_params: set[int] = set()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            bn_params.update(id(p) for p in module.parameters(recurse=False))
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for param in model.parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        (no_decay if id(param) in bn_params else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
    ]


def build_optimizer(
    model: nn.Module, base_lr: float, momentum: float = 0.9, weight_decay: float = 5e-4
) -> torch.optim.SGD:
    """SGD (momentum, coupled L2 decay, BN exempt) over the model's trainable parameters."""
    if base_lr < 0 or weight_decay < 0 or not 0 <= momentum < 1:
        raise ConfigError(
            f"optimizer settings out of range: base_lr={base_lr}, momentum={momentum}, weight_decay={weight_decay}"
        )
    return torch.optim.SGD(param_groups(model, weight_decay), lr=base_lr, momentum=momentum)


def scale_lr(base_lr: float, total_batch: int, reference_batch: int = 64) -> float:
    """Linear scaling rule of the reference README: ``lr * total_batch / reference_batch``."""
    if total_batch < 1 or reference_batch < 1:
        raise ConfigError(f"batch sizes must be >= 1, got total_batch={total_batch}, reference_batch={reference_batch}")
    return base_lr * total_batch / reference_batch


@dataclass(frozen=True)
class WarmupCosine:
    """LR at iteration ``i``: ``base * i / W`` for ``i < W``, then ``base * 0.5 * (1 + cos(pi (i - W) / (M - W)))``.

    ``total_iters`` is the cosine horizon M; past it the LR stays at its value for ``M - 1`` (as Paddle's
    piecewise table does). ``warmup_iters`` below 1 is raised to 1, as the reference does, so step 0 has LR 0.
    """

    base_lr: float
    warmup_iters: int
    total_iters: int

    @classmethod
    def for_training(
        cls,
        base_lr: float,
        iters_per_epoch: int,
        warmup_epochs: float = 1,
        max_epochs: int = 96,
        warmup_iters: int | None = None,
    ) -> WarmupCosine:
        """The reference schedule: warmup of ``warmup_epochs`` (or ``warmup_iters``), cosine over ``max_epochs``.

        Training itself stops at the configured epoch count, independently of ``max_epochs``.
        """
        if iters_per_epoch < 1:
            raise ConfigError(f"iters_per_epoch must be >= 1, got {iters_per_epoch}")
        warm = int(warmup_epochs * iters_per_epoch) if warmup_iters is None else int(warmup_iters)
        return cls(base_lr, warm, int(max_epochs) * int(iters_per_epoch))

    def __call__(self, i: int) -> float:
        warm = max(int(self.warmup_iters), 1)
        if i < warm:
            return self.base_lr * i / warm
        if self.total_iters <= warm:
            return self.base_lr
        i = min(i, self.total_iters - 1)
        return self.base_lr * 0.5 * (1.0 + math.cos(math.pi * (i - warm) / (self.total_iters - warm)))

    def apply(self, optimizer: torch.optim.Optimizer, i: int) -> float:
        """Set every group's LR for iteration ``i`` (call before ``optimizer.step()``); returns it."""
        lr = self(i)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr


def _excluded(key: str, names: Iterable[str]) -> bool:
    return any(key == n or key.endswith("." + n) for n in names)


class ModelEMA:
    """Exponential moving average of a model's state, exported with bias correction.

    After ``t`` updates with decays ``d_0..d_{t-1}`` (``d_k = min(decay, (1 + k) / (10 + k))``), the stored
    value is ``sum_k (1 - d_k) prod_{j>k} d_j x_k`` (state started at zero); the export divides it by
    ``1 - d_{t-1} ** t``, exactly as ppdet's ``ModelEMA.apply``. Entries named ``proj`` /
    ``proj_conv.weight`` (the frozen DFL projection) and integer buffers are taken from the model as is.
    Build it after the model is on its device (the averages live next to the weights).
    """

    def __init__(self, model: nn.Module, decay: float = 0.9998, exclude: Iterable[str] = EMA_EXCLUDED) -> None:
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"EMA decay must be in [0, 1), got {decay}")
        self.model = _unwrap(model)
        self.decay = float(decay)
        self.exclude = tuple(exclude)
        self.step = 0
        self.last_decay = 0.0
        self.shadow: dict[str, Tensor] = {
            k: torch.zeros_like(v)
            for k, v in self.model.state_dict().items()
            if v.is_floating_point() and not _excluded(k, self.exclude)
        }

    def decay_at(self, t: int) -> float:
        """Decay used by update number ``t`` (0-based)."""
        return min(self.decay, (1.0 + t) / (10.0 + t))

    @torch.no_grad()
    def update(self, model: nn.Module | None = None) -> None:
        """Fold the current weights in; call after every optimiser step."""
        state = _unwrap(model).state_dict() if model is not None else self.model.state_dict()
        d = self.decay_at(self.step)
        keys = list(self.shadow)
        ema = [self.shadow[k] for k in keys]
        cur = [state[k].detach().to(self.shadow[k].dtype) for k in keys]
        torch._foreach_mul_(ema, d)
        torch._foreach_add_(ema, cur, alpha=1.0 - d)
        self.last_decay = d
        self.step += 1

    @torch.no_grad()
    def state_dict_for_export(self) -> dict[str, Tensor]:
        """Bias-corrected EMA weights as a full model state_dict (before any update: the model's weights)."""
        out: dict[str, Tensor] = {}
        correction = 1.0 - self.last_decay**self.step if self.step > 0 else None
        for k, v in self.model.state_dict().items():
            if k in self.shadow and correction is not None:
                out[k] = self.shadow[k] / correction
            else:
                out[k] = v.detach().clone()
        return out

    def state_dict(self) -> dict:
        """Everything needed to resume: step, decays and the raw (uncorrected) averages."""
        return {
            "step": self.step,
            "decay": self.decay,
            "last_decay": self.last_decay,
            "shadow": {k: v.clone() for k, v in self.shadow.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore from :meth:`state_dict`; keys must match the model this EMA was built for."""
        shadow = state["shadow"]
        missing = sorted(set(self.shadow) - set(shadow))
        extra = sorted(set(shadow) - set(self.shadow))
        if missing or extra:
            raise ConfigError(
                f"EMA state does not match the model: missing {missing[:5]}, unexpected {extra[:5]}; "
                "was the checkpoint written for another model?"
            )
        bad = [k for k, v in shadow.items() if tuple(v.shape) != tuple(self.shadow[k].shape)]
        if bad:
            raise ConfigError(f"EMA state has wrong shapes for {bad[:5]}; was it written for another model?")
        for k, v in shadow.items():
            self.shadow[k].copy_(v)
        self.step = int(state["step"])
        self.decay = float(state["decay"])
        self.last_decay = float(state["last_decay"])
