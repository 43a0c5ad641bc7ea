"""``Global.device`` / ``device=``: the one parser that predict, evaluate and training share.

Accepted: ``cpu``; ``gpu`` or ``cuda`` (the first GPU; under ``torchrun`` each process's own); ``gpu:N`` or
``cuda:N``; ``gpu:0,1`` (PaddleX's form: training runs one process per listed GPU, predict and evaluate use the
first); None (unset): the first GPU when torch sees one, else the CPU. A bad value is a ConfigError that says
what to write instead.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import ConfigError, hint


@dataclass(frozen=True)
class DeviceRequest:
    """What a device string asks for: ``kind`` 'cpu' or 'cuda', and the GPU ids it names (none for a plain
    ``gpu``, which leaves the choice to the caller: GPU 0, or the process's own under ``torchrun``)."""

    text: str
    kind: str
    ids: tuple[int, ...] = ()


def parse_device(device: str | torch.device | None) -> DeviceRequest:
    """Read a device string (or ``torch.device``); checks the syntax and that CUDA exists when a GPU is asked for.

    GPU ids are checked against the GPUs torch sees by :func:`resolve_device` and :func:`process_device`, which
    know which ids they use.
    """
    if device is None:
        return DeviceRequest("gpu" if torch.cuda.is_available() else "cpu",
                             "cuda" if torch.cuda.is_available() else "cpu")
    text = str(device).strip().lower()
    kind, colon, ids_text = text.partition(":")
    if kind == "cpu" and not colon:
        return DeviceRequest(text, "cpu")
    ids = _id_list(ids_text)
    if kind not in ("gpu", "cuda") or ids is None or (colon and not ids):
        name = hint(python="device", cli="Global.device")
        raise ConfigError(f"Unknown {name} {device!r}; use cpu, gpu, gpu:N (or cuda:N), or gpu:0,1 to train "
                          f"on several GPUs (one process each)")
    if len(set(ids)) != len(ids):
        raise ConfigError(f"device {device!r} names a GPU twice; list each GPU once, e.g. gpu:0,1")
    if not torch.cuda.is_available():
        use_cpu = hint(python="device='cpu'", cli="-o Global.device=cpu")
        raise ConfigError(f"device {device!r} asks for a GPU but CUDA is not available here; use {use_cpu}.")
    return DeviceRequest(text, "cuda", ids)


def _id_list(text: str) -> tuple[int, ...] | None:
    """'' -> (), '1' -> (1,), '0, 1' -> (0, 1); None when it is not a list of ids."""
    parts = [part.strip() for part in text.split(",")] if text else []
    return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else None


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The one device predict and evaluate run on: the first GPU the string names (GPU 0 for ``gpu``)."""
    request = parse_device(device)
    if request.kind == "cpu":
        return torch.device("cpu")
    return _gpu(request, request.ids[0] if request.ids else 0, torch.cuda.device_count())


def process_device(request: DeviceRequest, local_rank: int, gpu_count: int) -> torch.device:
    """The device of training process ``local_rank`` (``LOCAL_RANK`` under ``torchrun``, 0 for a single process).

    Listed ids are taken in order: local process i trains on the i-th listed GPU, so ``gpu:1`` with one process
    per machine is GPU 1 on every machine. A plain ``gpu`` (or unset) follows torchrun's convention: GPU
    ``local_rank``. ``gpu_count``: the GPUs torch sees (an argument so that the mapping is testable anywhere).
    """
    if request.kind == "cpu":
        return torch.device("cpu")
    if not request.ids:
        return _gpu(request, local_rank, gpu_count)
    if local_rank >= len(request.ids):
        use = hint(python="device='gpu:0,1'", cli="-o Global.device=gpu:0,1")
        raise ConfigError(f"device {request.text!r} names {len(request.ids)} GPU(s), but this is local process "
                          f"{local_rank} (LOCAL_RANK) of a launch with more processes per machine: list one GPU per "
                          f"process, e.g. {use} for two, or use gpu to give process i GPU i")
    return _gpu(request, request.ids[local_rank], gpu_count)


def _gpu(request: DeviceRequest, index: int, gpu_count: int) -> torch.device:
    if index >= gpu_count:
        raise ConfigError(f"device {request.text!r}: there are only {gpu_count} GPU(s) (0-based ids).")
    return torch.device("cuda", index)
