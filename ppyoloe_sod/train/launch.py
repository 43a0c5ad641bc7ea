"""Process launch: what ``train(...)`` and ``Global.mode=train`` start, and on which device.

One process trains on the CPU or one GPU; ``Global.device=gpu:0,1`` spawns one process per listed GPU (DDP, NCCL,
SyncBatchNorm); under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) this process trains its rank, on the
GPU that ``device.process_device`` gives its ``LOCAL_RANK``, or on the CPU (gloo, per-process BatchNorm:
SyncBatchNorm needs CUDA). Each process runs a :class:`~.runner.Runner`.
"""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ..config import Config, GlobalConfig, TrainConfig
from ..device import parse_device, process_device
from ..errors import ConfigError, NonFiniteLossError
from ..zoo import DEFAULT_MODEL, ModelSpec
from .runner import Runner, TrainRun, log, setup_logging, spec_of


def train(options: TrainConfig, dataset_dir: str | os.PathLike, *, output: str | os.PathLike = "output",
          model: str | ModelSpec = DEFAULT_MODEL, device: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Train ``model`` on ``dataset_dir`` as ``options`` say; returns the train_result.json content.

    ``model``: a published model name or a :class:`ModelSpec` (custom architectures, tests). ``device``: as
    ``Global.device`` (None: the first GPU, else the CPU); ``gpu:0,1`` starts one process per GPU, and under
    ``torchrun`` this process trains its rank. ``progress``: the progress bar.
    """
    name = model.name if isinstance(model, ModelSpec) else str(model)
    cfg = Config(Global=GlobalConfig(model=name, mode="train", dataset_dir=str(dataset_dir), device=device,
                                     output=str(output)), Train=options)
    return launch(cfg, model if isinstance(model, ModelSpec) else None, progress)


def run_train(cfg: Config) -> dict[str, Any]:
    """``Global.mode=train``: train from a loaded config; returns the train_result.json content."""
    return launch(cfg)


def launch(cfg: Config, spec: ModelSpec | None = None, progress: bool = True) -> dict[str, Any]:
    """Check the options, then train in this process, in one process per listed GPU, or as a torchrun rank."""
    cfg.Train.check()
    if not cfg.Global.dataset_dir:
        raise ConfigError("Global.dataset_dir is not set; pass -o Global.dataset_dir=DIR (the folder with images/ "
                          "and annotations/instance_train.json)")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    request = parse_device(cfg.Global.device)
    gpus = torch.cuda.device_count() if request.kind == "cuda" else 0
    if world > 1:  # started by torchrun: this process trains one rank
        device = process_device(request, int(os.environ.get("LOCAL_RANK", "0")), gpus)
        return train_process(cfg, int(os.environ["RANK"]), world, device, spec, progress).summary
    if len(request.ids) > 1:
        import torch.multiprocessing as mp

        for local_rank in range(len(request.ids)):  # every listed GPU exists, before any process starts
            process_device(request, local_rank, gpus)
        port = _free_port()
        mp.spawn(_spawn_entry, args=(cfg, spec, progress, list(request.ids), port), nprocs=len(request.ids),
                 join=True)
        return json.loads((Path(cfg.Global.output) / "train_result.json").read_text(encoding="utf-8"))
    return train_process(cfg, 0, 1, process_device(request, 0, gpus), spec, progress).summary


def _spawn_entry(local_rank: int, cfg: Config, spec: ModelSpec | None, progress: bool, ids: list[int],
                 port: int) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(local_rank),
                       "LOCAL_RANK": str(local_rank), "WORLD_SIZE": str(len(ids))})
    train_process(cfg, local_rank, len(ids), torch.device("cuda", ids[local_rank]), spec, progress)


def train_process(cfg: Config, rank: int, world_size: int, device: torch.device, spec: ModelSpec | None = None,
                  progress: bool = True) -> TrainRun:
    """The training of one process (rank ``rank`` of ``world_size``; process group from the environment).

    ``spec``: the model to train when it is not the published ``Global.model`` (a custom :class:`ModelSpec`).
    """
    cfg.Train.check()
    own_group = False
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world_size)
        own_group = True
    out = Path(cfg.Global.output)
    handlers = setup_logging(out, rank)
    try:
        return Runner(cfg, spec or spec_of(cfg.Global.model), progress, rank, world_size, device, out).run()
    except NonFiniteLossError as e:
        log.error("%s", e)
        raise
    finally:
        for h in handlers:
            log.removeHandler(h)
            h.close()
        if own_group:
            dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
