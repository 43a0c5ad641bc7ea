"""The per-step engine: one optimisation step of PP-YOLOE+ SOD's recipe, and the state it carries.

:class:`Trainer` holds the model (DDP-wrapped when several processes train), the loss, SGD, the warmup-cosine
schedule, the weight EMA and the AMP state. :meth:`Trainer.step` is one iteration: the LR for that iteration,
forward under AMP (CUDA; bf16 also on a CPU with native bf16), loss, a finite-loss check, backward, SGD step,
EMA update. It knows nothing of epochs, files or logs (``runner.py``), nor of processes (``launch.py``).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.distributed as dist
from torch import nn

from ..config import AMP_MODES
from ..errors import ConfigError, NonFiniteLossError, hint
from ..infer import cpu_fast
from ..nn.batchnorm import convert_sync_batchnorm
from ..nn.detector import Detector
from .losses import DetectionLoss
from .optim import ModelEMA, WarmupCosine, build_optimizer

LOSS_TERMS = ("loss", "loss_cls", "loss_iou", "loss_dfl")
REFERENCE_COSINE_EPOCHS = 96

log = logging.getLogger(__name__)


@dataclass
class Trainer:
    """Model, loss, optimiser, schedule, EMA and AMP state: one call of :meth:`step` per iteration."""

    model: nn.Module  # possibly DDP-wrapped
    net: Detector  # the bare network (anchors, state_dict keys)
    criterion: DetectionLoss
    optimizer: torch.optim.Optimizer
    schedule: WarmupCosine
    ema: ModelEMA
    device: torch.device
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    scaler: torch.amp.GradScaler | None = None
    world_size: int = 1

    @classmethod
    def build(cls, net: Detector, base_lr: float, iters_per_epoch: int, device: torch.device | str = "cpu",
              warmup_iters: int | None = None, cosine_epochs: int = REFERENCE_COSINE_EPOCHS, amp: str = "off",
              channels_last: bool | None = None, ema_decay: float = 0.9998, world_size: int = 1) -> "Trainer":
        device = torch.device(device)
        amp_dtype = _amp_dtype(amp, device)
        if channels_last is None:
            channels_last = amp_dtype is not None
        net = net.to(device)
        if world_size > 1 and device.type == "cuda":
            net = convert_sync_batchnorm(net)  # torch's converter would bring back the unbiased running_var
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        net.train()
        model: nn.Module = net
        if world_size > 1:
            model = nn.parallel.DistributedDataParallel(
                net, device_ids=[device.index] if device.type == "cuda" else None)
        spec = net.spec
        schedule = WarmupCosine.for_training(base_lr, iters_per_epoch, max_epochs=cosine_epochs,
                                             warmup_iters=warmup_iters)
        # PaddleDetection's init_loss_scaling (1024): torch's 65536 overflowed and skipped the first steps on the H200
        scaler = torch.amp.GradScaler("cuda", init_scale=1024.0) if amp_dtype == torch.float16 else None
        return cls(model=model, net=net, criterion=DetectionLoss(spec.num_classes, spec.arch.reg_range).to(device),
                   optimizer=build_optimizer(net, base_lr), schedule=schedule, ema=ModelEMA(net, ema_decay),
                   device=device, amp_dtype=amp_dtype, channels_last=channels_last, scaler=scaler,
                   world_size=world_size)

    def step(self, batch: Mapping[str, Any], iteration: int) -> dict[str, float]:
        """One optimisation step on a loader batch; returns the loss terms (averaged over ranks) and the LR.

        Raises :class:`NonFiniteLossError` before touching the weights when any rank's loss is not finite.
        """
        lr = self.schedule.apply(self.optimizer, iteration)
        images = batch["images"].to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        gt_labels = batch["gt_labels"].to(self.device, non_blocking=True)
        gt_boxes = batch["gt_boxes"].to(self.device, non_blocking=True)
        pad_mask = batch["pad_mask"].to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            raw = self.model(images)
        points, strides = self.net.anchors(images.shape[-2], images.shape[-1], self.device)
        terms = self.criterion(raw, points, strides, gt_labels, gt_boxes, pad_mask)
        values = torch.stack([terms[k].detach().float() for k in LOSS_TERMS])
        if self.world_size > 1:
            dist.all_reduce(values)
            values = values / self.world_size
        stats = dict(zip(LOSS_TERMS, values.tolist()))
        if not all(math.isfinite(v) for v in stats.values()):
            terms_text = ", ".join(f"{k}={v:.4g}" for k, v in stats.items())
            raise NonFiniteLossError(f"the loss is not finite at iteration {iteration + 1} ({terms_text}, "
                                     f"lr={lr:.3g})")
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(terms["loss"]).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            terms["loss"].backward()
            self.optimizer.step()
        self.ema.update(self.net)
        stats["lr"] = lr
        stats["num_gt"] = float(pad_mask.sum())
        return stats

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.net.state_dict(), "ema": self.ema.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.net.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


def _amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``Train.amp`` on ``device``; None: float32."""
    if mode not in AMP_MODES:
        raise ConfigError(f"Train.amp must be one of {', '.join(AMP_MODES)}, got {mode!r}")
    if mode == "off":
        return None
    if device.type == "cuda":
        if mode == "auto":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if mode == "bf16" else torch.float16
    return _cpu_amp_dtype(mode)


def _cpu_amp_dtype(mode: str) -> torch.dtype | None:
    """On the CPU only an explicit ``bf16`` changes precision, and only where the CPU runs bf16 natively.

    ``auto`` stays float32 so that a run gives the same numbers on every CPU (exact resume, the ppdet trajectory
    parity); ``bf16`` without native support is refused, as the CPU fast path refuses it (emulated bf16 is slower
    than float32); fp16 autocast with its loss scaler is the CUDA path.
    """
    supported, why = cpu_fast.cpu_bf16_support()
    if mode == "auto":
        if supported:
            log.info("Train.amp=auto trains in float32 on the CPU; this CPU runs bf16 natively (%s): %s trains in "
                     "bf16 autocast, usually faster, with losses under 1%% off", why,
                     hint(python="TrainConfig(amp='bf16')", cli="-o Train.amp=bf16"))
        return None
    off = hint(python="TrainConfig(amp='off')", cli="-o Train.amp=off")
    if mode == "fp16":
        raise ConfigError(f"Train.amp=fp16 runs on CUDA only; on the CPU use {off} (float32), or bf16 on a CPU "
                          "with AMX-BF16 or AVX512-BF16")
    if not supported:
        raise ConfigError(f"Train.amp=bf16 was asked for on the CPU, but {why}; refusing rather than training "
                          f"emulated bf16: use {off} (float32)")
    return torch.bfloat16
