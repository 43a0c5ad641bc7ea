"""BatchNorm with Paddle's running-variance update, for training parity with PaddleDetection.

In training mode both frameworks normalise with the biased batch variance and move the running statistics by
``momentum`` (torch's 0.1 is Paddle's 0.9). They differ in what they fold into ``running_var``: torch the
unbiased batch variance (x n / (n - 1), n = batch x height x width values per channel), Paddle's ``batch_norm``
and ``sync_batch_norm`` the biased one. At stride 32 of a 640 px batch of 8, n = 3200 and the surplus is 0.03%
per step; on small inputs it is not (6% at 96 px, batch 2), and it compounds over a run.

:class:`PaddleBatchNorm2d` and :class:`PaddleSyncBatchNorm` run torch's own forward (same kernels, outputs and
gradients, same state_dict keys) and then take that surplus out of ``running_var``: a few operations on
per-channel vectors, no pass over the activations, nothing at all in eval mode.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def _update_factor(bn: nn.modules.batchnorm._BatchNorm) -> float | torch.Tensor:
    """The weight torch's forward just gave the batch statistic (``momentum``, or 1 / steps when it is None)."""
    return bn.momentum if bn.momentum is not None else 1.0 / bn.num_batches_tracked


def _remove_unbiased_surplus(bn: nn.modules.batchnorm._BatchNorm, before: torch.Tensor,
                             count: int | torch.Tensor) -> None:
    """Turn torch's update ``(1 - f) before + f var n / (n - 1)`` into Paddle's ``(1 - f) before + f var``.

    The step torch took, ``running_var - (1 - f) before``, is ``f var n / (n - 1)``; a ``1 / n`` part of it is
    the surplus. Written to ``.data``: the autograd graph of this forward saved the buffer (train-mode backward
    does not read it), and an in-place change seen through it would fail ``backward``.
    """
    f = _update_factor(bn)
    step = bn.running_var - (1 - f) * before
    bn.running_var.data.sub_(step / count)


class PaddleBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` that folds the biased batch variance into ``running_var``, as Paddle does.

    Forward, gradients, eval mode and state_dict are torch's; only the running-variance update differs
    (module docstring). Construct it as ``nn.BatchNorm2d``; ``momentum=0.1`` is Paddle's 0.9.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.track_running_stats):
            return super().forward(input)
        before = self.running_var.detach().clone()
        out = super().forward(input)
        _remove_unbiased_surplus(self, before, input.numel() // input.shape[1])
        return out


class PaddleSyncBatchNorm(nn.SyncBatchNorm):
    """``nn.SyncBatchNorm`` with Paddle's running-variance update over the values of every rank.

    When the statistics are synchronised, ``n`` is the count over all ranks (their image sizes may differ), so
    one all-reduce of a single integer joins the collectives SyncBatchNorm already runs; otherwise (one
    process, or eval) this is :class:`PaddleBatchNorm2d`'s update.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.track_running_stats):
            return super().forward(input)
        before = self.running_var.detach().clone()
        out = super().forward(input)
        _remove_unbiased_surplus(self, before, self._value_count(input))
        return out

    def _value_count(self, input: torch.Tensor) -> int | torch.Tensor:
        """Values per channel that the statistics were taken over: this rank's, or every rank's when synced."""
        local = input.numel() // input.shape[1]
        if not (dist.is_available() and dist.is_initialized()):
            return local
        group = self.process_group or dist.group.WORLD
        if dist.get_world_size(group) < 2:
            return local
        count = torch.tensor([local], dtype=torch.int64, device=input.device)
        dist.all_reduce(count, group=group)
        return count

    @classmethod
    def from_batchnorm(cls, bn: nn.modules.batchnorm._BatchNorm, process_group=None) -> "PaddleSyncBatchNorm":
        """A synchronised copy of ``bn`` holding the same parameter and buffer tensors (not copies)."""
        sync = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats, process_group)
        for name, tensor in [*bn.named_parameters(recurse=False), *bn.named_buffers(recurse=False)]:
            setattr(sync, name, tensor)
        sync.train(bn.training)
        return sync


def convert_sync_batchnorm(module: nn.Module, process_group=None) -> nn.Module:
    """Every :class:`PaddleBatchNorm2d` below ``module`` replaced by a :class:`PaddleSyncBatchNorm` on the same
    tensors, for multi-GPU training (torch's ``nn.SyncBatchNorm.convert_sync_batchnorm`` would bring back the
    unbiased update). Returns ``module``, or the converted layer when ``module`` is one."""
    if isinstance(module, PaddleBatchNorm2d):
        return PaddleSyncBatchNorm.from_batchnorm(module, process_group)
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child, process_group))
    return module
