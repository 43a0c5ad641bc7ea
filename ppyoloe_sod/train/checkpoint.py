"""What training writes: the resumable checkpoints and the model folders (``best_model/``, ``latest/``).

A checkpoint is one ``torch.save`` file written atomically (temp file + rename, through ``fileio``), read back
with ``torch.load(weights_only=True)``: it holds only tensors and plain Python types (RNG states included), so
loading never runs pickled code. A run keeps its newest ones as ``checkpoints/iter_<iteration>.pt``;
``latest/checkpoint.pt`` is the newest (a hard link, or a copy where the file system has none), so a kill never
leaves it missing or partial. A model folder holds ``model.safetensors`` (EMA weights + metadata: model
name, classes, class count) and ``model_config.json``, which ``load_model`` / ``create_model(model_dir=...)``
read.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ..errors import ConfigError
from ..fileio import DISK_FULL_ERRNOS, atomic_open, atomic_write_json, fsync_dir, reporting_disk_full
from ..models import safetensors_metadata
from ..weights.store import save_safetensors
from ..zoo import ModelSpec

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINTS_DIR = "checkpoints"
WEIGHTS_NAME = "model.safetensors"
MODEL_CONFIG_NAME = "model_config.json"
CHECKPOINT_FORMAT = 2  # 2: may be written within an epoch ("batch" > 0); 1: at epoch ends only, still read
READABLE_FORMATS = (1, 2)
_ITER_FILE = re.compile(r"iter_(\d+)\.pt")


# --------------------------------------------------------------------------------------------------- RNG


def rng_state() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy and Python RNG states as tensors and plain types (``weights_only``-safe)."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": str(np_name), "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "python": {"version": int(py_version), "internal": torch.tensor(py_internal, dtype=torch.int64),
                   "gauss": None if py_gauss is None else float(py_gauss)},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = list(state["cuda"])[: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda_states)


# ------------------------------------------------------------------------------------------ checkpoint file


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> Path:
    """Write ``state`` (tensors and plain types only) atomically; an interrupted write leaves the old file.

    A full disk raises ``DiskFullError`` naming the file (torch reports it as a bare RuntimeError).
    """
    path = Path(path)
    payload = {"format": CHECKPOINT_FORMAT, **state}
    with atomic_open(path, "wb") as f:
        torch.save(payload, f)
    return path


def write_checkpoint(out: str | os.PathLike, state: Mapping[str, Any], keep: int) -> Path:
    """``state`` (with its ``iteration``) as ``out/checkpoints/iter_<iteration>.pt``, then ``out/latest/checkpoint.pt``
    made that file, then all but the newest ``keep`` checkpoints deleted. Returns the new file.

    A DiskFullError (or a kill) at any point leaves the previous checkpoints as they were.
    """
    out = Path(out)
    path = save_checkpoint(out / CHECKPOINTS_DIR / f"iter_{int(state['iteration']):08d}.pt", state)
    link_latest(path, out / "latest" / CHECKPOINT_NAME)
    prune_checkpoints(out / CHECKPOINTS_DIR, keep)
    return path


def link_latest(path: Path, latest: Path) -> None:
    """Make ``latest`` the same file as ``path``: a hard link renamed into place (no copy, never missing), or an
    atomic copy where the file system has no hard links."""
    latest.parent.mkdir(parents=True, exist_ok=True)
    tmp = latest.with_name(f".{latest.name}.link.tmp")
    with reporting_disk_full(latest):
        tmp.unlink(missing_ok=True)
        try:
            os.link(path, tmp)
        except OSError as e:
            if e.errno in DISK_FULL_ERRNOS:
                raise
            with open(path, "rb") as src, atomic_open(latest, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            return
        os.replace(tmp, latest)
        fsync_dir(latest.parent)


def checkpoint_files(folder: str | os.PathLike) -> list[Path]:
    """The ``iter_<iteration>.pt`` files of a checkpoints folder, oldest first."""
    folder = Path(folder)
    found = [(int(m.group(1)), p) for p in folder.glob("iter_*.pt") if (m := _ITER_FILE.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def prune_checkpoints(folder: str | os.PathLike, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints, and temp files left by a write that was killed."""
    for old in checkpoint_files(folder)[:-keep]:
        old.unlink(missing_ok=True)
    for leftover in Path(folder).glob(".iter_*.tmp"):
        leftover.unlink(missing_ok=True)


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file from what a user passes as ``resume_path``: the file, its folder, the run's output (its
    ``latest/checkpoint.pt``, else the newest of its ``checkpoints/``) or that checkpoints folder."""
    p = Path(path).expanduser()
    for candidate in (p, p / CHECKPOINT_NAME, p / "latest" / CHECKPOINT_NAME):
        if candidate.is_file():
            return candidate
    for folder in (p / CHECKPOINTS_DIR, p):
        if folder.is_dir() and checkpoint_files(folder):
            return checkpoint_files(folder)[-1]
    raise ConfigError(f"resume_path {str(path)!r}: no checkpoint found (looked for the file itself, "
                      f"{CHECKPOINT_NAME} in it, latest/{CHECKPOINT_NAME} and {CHECKPOINTS_DIR}/iter_*.pt); point it "
                      f"at a training output folder")


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (on the CPU, without unpickling code)."""
    file = resolve_checkpoint(path)
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for damaged or foreign files
        raise ConfigError(f"{file}: cannot read the checkpoint ({type(e).__name__}: {e}); "
                          f"it may be damaged or not written by ppyoloe_sod training") from e
    if not isinstance(state, dict) or state.get("format") not in READABLE_FORMATS:
        raise ConfigError(f"{file}: not a ppyoloe_sod training checkpoint (format "
                          f"{state.get('format') if isinstance(state, dict) else type(state).__name__})")
    state["path"] = str(file)
    return state


# --------------------------------------------------------------------------------------------- model folder


def save_model_dir(folder: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], spec: ModelSpec,
                   info: Mapping[str, Any] | None = None) -> Path:
    """``folder/model.safetensors`` (+ metadata) and ``folder/model_config.json`` for ``load_model``."""
    folder = Path(folder)
    info = dict(info or {})
    meta = safetensors_metadata(spec, num_classes=str(spec.num_classes), producer="ppyoloe_sod.train",
                                info=json.dumps(info, default=str))
    save_safetensors(state_dict, folder / WEIGHTS_NAME, meta)
    atomic_write_json(folder / MODEL_CONFIG_NAME, {
        "model_name": spec.name,
        "num_classes": spec.num_classes,
        "classes": list(spec.classes),
        "input_size": list(spec.input_size),
        "reg_range": list(spec.arch.reg_range),
        "weights": WEIGHTS_NAME,
        **info,
    })
    return folder
