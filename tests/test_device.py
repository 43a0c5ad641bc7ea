"""``Global.device``: one parser for predict, evaluate and training, and the GPU each training process takes.

The mapping is a pure function of the request, the process's LOCAL_RANK and the GPU count, so it is tested
here without a GPU; torch's CUDA queries are replaced where the parser asks them.
"""
from __future__ import annotations

import pytest
import torch

from ppyoloe_sod.device import DeviceRequest, parse_device, process_device, resolve_device
from ppyoloe_sod.errors import ConfigError, interface


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_parse_device_forms(two_gpus):
    assert parse_device("cpu") == DeviceRequest("cpu", "cpu")
    assert parse_device("gpu").ids == () and parse_device(None) == DeviceRequest("gpu", "cuda")
    assert parse_device("GPU:1") == DeviceRequest("gpu:1", "cuda", (1,))
    assert parse_device(torch.device("cuda", 1)).ids == (1,)
    assert parse_device("gpu:0, 1").ids == (0, 1)
    for bad in ("tpu:0", "gpu:", "gpu:a", "cpu:0", "gpu:0,,1"):
        with pytest.raises(ConfigError, match=f"Unknown device {bad!r}"):
            parse_device(bad)
    with interface("cli"), pytest.raises(ConfigError, match="Unknown Global.device 'tpu:0'"):
        parse_device("tpu:0")
    with pytest.raises(ConfigError, match="names a GPU twice"):
        parse_device("gpu:1,1")


def test_one_device_for_predict_and_evaluate(two_gpus):
    assert resolve_device("gpu:1,0") == torch.device("cuda", 1)  # PaddleX's list form: the first
    assert resolve_device("cuda") == torch.device("cuda", 0)
    with pytest.raises(ConfigError, match="only 2 GPU"):
        resolve_device("gpu:2")


@pytest.mark.parametrize("device, local_rank, expected", [
    ("gpu:1", 0, 1),  # one process (or one per machine): the GPU asked for, not LOCAL_RANK's
    ("gpu:1,0", 0, 1),  # listed GPUs in order
    ("gpu:1,0", 1, 0),
    ("gpu", 1, 1),  # no id: torchrun's convention, GPU LOCAL_RANK
    ("gpu", 0, 0),
])
def test_training_process_takes_the_requested_gpu(two_gpus, device, local_rank, expected):
    assert process_device(parse_device(device), local_rank, gpu_count=2) == torch.device("cuda", expected)


def test_training_process_mapping_errors(two_gpus):
    with pytest.raises(ConfigError, match=r"names 1 GPU\(s\), but this is local process 1 .*gpu:0,1"):
        process_device(parse_device("gpu:1"), 1, gpu_count=2)
    with pytest.raises(ConfigError, match="only 2 GPU"):
        process_device(parse_device("gpu"), 2, gpu_count=2)
    assert process_device(parse_device("cpu"), 3, gpu_count=0) == torch.device("cpu")


def test_no_cuda_says_use_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert parse_device(None).kind == "cpu" and resolve_device(None) == torch.device("cpu")
    with pytest.raises(ConfigError, match="CUDA is not available here; use device='cpu'"):
        parse_device("gpu:0")
    with interface("cli"), pytest.raises(ConfigError, match="use -o Global.device=cpu"):
        parse_device("gpu:0")
