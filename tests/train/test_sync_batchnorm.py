"""Multi-GPU BatchNorm: the Trainer's SyncBatchNorm conversion keeps Paddle's biased running-variance update.

The conversion and the unsynchronised path run on the CPU. The synchronised path needs CUDA tensors: two gloo
processes share one GPU (NCCL refuses two ranks on one device), with inputs of different sizes, as ranks drawing
different training sizes have.
"""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from ppyoloe_sod.models import build_model
from ppyoloe_sod.nn.batchnorm import PaddleBatchNorm2d, PaddleSyncBatchNorm, convert_sync_batchnorm

from train_synth import tiny_spec

MOMENTUM = 0.1
SHAPES = [(2, 3, 4, 4), (1, 3, 6, 5)]  # per rank: 32 and 30 values per channel


def _inputs() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(shape, generator=g) * 2 + 0.5 for shape in SHAPES]


def _biased_update(before: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Paddle's running variance after one step, in float64."""
    return (1 - MOMENTUM) * before.double() + MOMENTUM * x.double().var(dim=(0, 2, 3), unbiased=False)


def test_conversion_keeps_the_tensors_and_the_paddle_update():
    net = build_model(tiny_spec())
    state = net.state_dict()
    count = sum(isinstance(m, PaddleBatchNorm2d) for m in net.modules())
    converted = convert_sync_batchnorm(net)
    assert converted is net
    assert sum(isinstance(m, PaddleSyncBatchNorm) for m in net.modules()) == count > 0
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    after = net.state_dict()
    assert list(after) == list(state)
    assert all(after[k].data_ptr() == state[k].data_ptr() for k in state)  # the same tensors, not copies


def test_unsynchronised_sync_batchnorm_is_the_plain_one():
    """One process (no process group): the converted layer computes, and updates, as before the conversion."""
    x = _inputs()[0]
    plain = PaddleBatchNorm2d(3, momentum=MOMENTUM)
    plain.running_var.uniform_(0.5, 2.0, generator=torch.Generator().manual_seed(2))
    sync = PaddleSyncBatchNorm.from_batchnorm(PaddleBatchNorm2d(3, momentum=MOMENTUM))
    sync.load_state_dict(plain.state_dict())
    before = plain.running_var.clone()
    assert torch.equal(sync.train()(x), plain.train()(x))
    assert torch.equal(sync.running_var, plain.running_var)
    torch.testing.assert_close(sync.running_var.double(), _biased_update(before, x), rtol=1e-6, atol=0)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, port: int, out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    dist.init_process_group("gloo", rank=rank, world_size=len(SHAPES))
    try:
        device = torch.device("cuda", rank % torch.cuda.device_count())
        x = _inputs()[rank].to(device)
        grad = torch.ones_like(x).cumsum(1)
        results = {}
        for name, make in (("ours", lambda bn: convert_sync_batchnorm(bn)),
                           ("torch", lambda bn: nn.SyncBatchNorm.convert_sync_batchnorm(bn))):
            bn = make(PaddleBatchNorm2d(3, momentum=MOMENTUM)).to(device).train()
            bn.running_var.fill_(1.5)
            xi = x.clone().requires_grad_()
            y = bn(xi)
            y.backward(grad)
            results[name] = {"out": y.detach().cpu(), "grad": xi.grad.cpu(), "weight_grad": bn.weight.grad.cpu(),
                             "running_mean": bn.running_mean.cpu(), "running_var": bn.running_var.cpu()}
        torch.save(results, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="SyncBatchNorm synchronises CUDA tensors only")
def test_synchronised_update_is_paddles_over_every_ranks_values(tmp_path):
    mp.spawn(_rank, args=(_port(), str(tmp_path)), nprocs=len(SHAPES), join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(len(SHAPES))]
    values = torch.cat([x.permute(1, 0, 2, 3).reshape(3, -1) for x in _inputs()], 1)  # every rank's, per channel
    expected = (1 - MOMENTUM) * 1.5 + MOMENTUM * values.double().var(dim=1, unbiased=False)
    for res in ranks:
        ours, torchs = res["ours"], res["torch"]
        for key in ("out", "grad", "weight_grad", "running_mean"):
            assert torch.equal(ours[key], torchs[key]), key
        torch.testing.assert_close(ours["running_var"].double(), expected, rtol=1e-6, atol=0)
        assert (torchs["running_var"].double() - expected).min() > 1e-3  # torch's: unbiased over all 62 values
    assert torch.equal(ranks[0]["ours"]["running_var"], ranks[1]["ours"]["running_var"])


TRAINER_SIZES = (64, 96)  # per rank: different training sizes, so different value counts


def _trainer_rank(rank: int, port: int, out: str) -> None:
    """One Trainer step of the tiny network under DDP: what the first BatchNorm saw and where it ended."""
    from ppyoloe_sod.train.engine import Trainer

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    dist.init_process_group("gloo", rank=rank, world_size=len(TRAINER_SIZES))
    try:
        torch.manual_seed(0)
        net = build_model(tiny_spec())
        device = torch.device("cuda", rank % torch.cuda.device_count())
        trainer = Trainer.build(net, 0.01, 10, device=device, warmup_iters=1, world_size=len(TRAINER_SIZES))
        first = trainer.net.backbone.stem.conv1
        size = TRAINER_SIZES[rank]
        images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(rank))
        with torch.no_grad():
            bn_input = first.conv(images.to(device)).double().cpu()
        batch = {"images": images, "gt_labels": torch.zeros(2, 1, 1, dtype=torch.int64),
                 "gt_boxes": torch.tensor([[[4.0, 4.0, 30.0, 30.0]]]).repeat(2, 1, 1), "pad_mask": torch.ones(2, 1, 1)}
        first.bn.running_var.zero_()  # the step alone: torch's surplus is then 1 / (n - 1) of the result
        before = first.bn.running_var.detach().double().cpu()
        trainer.step(batch, 0)
        torch.save({"kinds": sorted({type(m).__name__ for m in trainer.net.modules() if "Norm" in type(m).__name__}),
                    "bn_input": bn_input, "before": before, "after": first.bn.running_var.detach().double().cpu()},
                   f"{out}/trainer{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the Trainer synchronises BatchNorm on CUDA only")
def test_trainer_on_several_gpus_keeps_paddles_running_variance(tmp_path):
    mp.spawn(_trainer_rank, args=(_port(), str(tmp_path)), nprocs=len(TRAINER_SIZES), join=True)
    ranks = [torch.load(tmp_path / f"trainer{r}.pt", weights_only=True) for r in range(len(TRAINER_SIZES))]
    kinds = set(ranks[0]["kinds"])
    assert "PaddleSyncBatchNorm" in kinds and not kinds & {"BatchNorm2d", "PaddleBatchNorm2d", "SyncBatchNorm"}
    values = torch.cat([r["bn_input"].permute(1, 0, 2, 3).reshape(r["bn_input"].shape[1], -1) for r in ranks], 1)
    expected = (1 - MOMENTUM) * ranks[0]["before"] + MOMENTUM * values.var(dim=1, unbiased=False)
    for r in ranks:  # 6656 values: the unbiased update would be 1.5e-4 higher, the local count's 3.4e-4 lower
        torch.testing.assert_close(r["after"], expected, rtol=1e-5, atol=0)
