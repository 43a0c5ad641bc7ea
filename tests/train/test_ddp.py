"""Two CPU processes (gloo) train the same run through DDP: every rank must end with the same parameters.

SyncBatchNorm needs CUDA, so on the CPU each process keeps its own BatchNorm (the loop says so in the log); DDP
broadcasts rank 0's buffers before each forward, and gradients are all-reduced, so parameters stay identical.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

from ppyoloe_sod.config import Config, GlobalConfig, TrainConfig
from ppyoloe_sod.train.launch import train_process

from train_synth import make_dataset, tiny_spec

WORLD = 2


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, tmp: str, port: int) -> None:
    torch.set_num_threads(1)
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    cfg = Config(Global=GlobalConfig(dataset_dir=f"{tmp}/ds", output=f"{tmp}/out"),
                 Train=TrainConfig(epochs_iters=2, batch_size=1, num_workers=0, seed=1, warmup_steps=1, log_interval=1))
    run = train_process(cfg, rank, WORLD, torch.device("cpu"), spec=tiny_spec(), progress=False)
    net = run.trainer.net
    torch.save({"params": {k: p.detach().clone() for k, p in net.named_parameters()},
                "world": run.trainer.world_size, "ddp": type(run.trainer.model).__name__,
                "summary": run.summary}, f"{tmp}/rank{rank}.pt")


def test_two_gloo_ranks_end_with_identical_parameters(tmp_path):
    make_dataset(tmp_path / "ds", n_train=4, n_val=0, seed=4)
    init = tiny_spec()
    torch.manual_seed(1)
    from ppyoloe_sod.models import build_model
    start = {k: p.detach().clone() for k, p in build_model(init).named_parameters()}

    mp.spawn(_worker, args=(str(tmp_path), _port()), nprocs=WORLD, join=True)

    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["world"] == r1["world"] == WORLD and r0["ddp"] == "DistributedDataParallel"
    # 4 images over 2 ranks, batch 1 per rank: 2 iterations per epoch, 2 epochs
    assert r0["summary"]["iterations"] == r1["summary"]["iterations"] == 4
    assert r0["params"].keys() == r1["params"].keys() == start.keys()
    moved = 0
    for k, v in r0["params"].items():
        assert torch.equal(v, r1["params"][k]), f"ranks differ at {k}: max {float((v - r1['params'][k]).abs().max())}"
        moved += not torch.equal(v, start[k])
    assert moved > len(start) // 2, "training did not change the parameters"
    log = Path(tmp_path / "out" / "train.log").read_text()
    assert "x2:" in log and "SyncBatchNorm needs CUDA" in log
    assert (tmp_path / "out" / "latest" / "checkpoint.pt").is_file()
