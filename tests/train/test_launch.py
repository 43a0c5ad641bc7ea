"""Which device each training process gets (no GPU needed: torch's CUDA queries are replaced and the process
itself is recorded instead of run)."""
from __future__ import annotations

import pytest
import torch

from ppyoloe_sod.config import TrainConfig
from ppyoloe_sod.errors import ConfigError
from ppyoloe_sod.train import launch

from train_synth import tiny_spec


@pytest.fixture
def recorded(monkeypatch):
    """Two GPUs seen; the process's (rank, world, device) recorded instead of training."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    calls = []

    def fake_process(cfg, rank, world_size, device, spec=None, progress=True):
        calls.append((rank, world_size, device))
        return launch.TrainRun({"done_flag": True})

    monkeypatch.setattr(launch, "train_process", fake_process)
    return calls


def _train(tmp_path, device):
    return launch.train(TrainConfig(), tmp_path, model=tiny_spec(), device=device)


@pytest.mark.parametrize("world, local_rank, device, expected", [
    ("2", "0", "gpu:1", 1),  # torchrun, one process per machine: the GPU asked for, not LOCAL_RANK's 0
    ("1", "0", "gpu:1", 1),  # torchrun with a single process
    ("4", "1", "gpu:1,0", 0),  # several processes per machine: LOCAL_RANK indexes the listed GPUs
    ("4", "1", "gpu", 1),  # no id: GPU LOCAL_RANK, torchrun's convention
])
def test_torchrun_process_takes_the_requested_gpu(recorded, monkeypatch, tmp_path, world, local_rank, device,
                                                  expected):
    monkeypatch.setenv("WORLD_SIZE", world)
    monkeypatch.setenv("RANK", "1" if world != "1" else "0")
    monkeypatch.setenv("LOCAL_RANK", local_rank)
    assert _train(tmp_path, device) == {"done_flag": True}
    assert recorded == [(1 if world != "1" else 0, int(world), torch.device("cuda", expected))]


def test_more_processes_than_listed_gpus_is_a_clear_error(recorded, monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(ConfigError, match=r"'gpu:1' names 1 GPU\(s\), but this is local process 1"):
        _train(tmp_path, "gpu:1")
    assert recorded == []
