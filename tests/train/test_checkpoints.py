"""Checkpoints within an epoch (``Train.save_interval_iters``): the newest ``keep_checkpoints`` are kept, a run
killed anywhere resumes from the last one and ends bit-identical to a run never interrupted, and a full disk stops
the run with the previous checkpoint kept.

Bit-identical is possible because every source of randomness (data order, augmentation, dropout, the loader's
seed) is seeded per (seed, epoch, batch) or restored from the checkpoint; CPU, one thread, ``num_workers=0``.
"""
from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ppyoloe_sod.config import TrainConfig
from ppyoloe_sod.errors import DiskFullError
from ppyoloe_sod.train import checkpoint
from ppyoloe_sod.train.checkpoint import load_checkpoint
from ppyoloe_sod.train.launch import train
from ppyoloe_sod.weights.store import load_safetensors

from train_synth import make_dataset, tiny_spec

REPO = Path(__file__).resolve().parents[2]
# 4 images, batch 1: 4 iterations per epoch, 12 in all; a checkpoint every 2 iterations (mid-epoch at 2, 6, 10)
OPTIONS = dict(epochs_iters=3, batch_size=1, num_workers=0, seed=5, warmup_steps=3, log_interval=1,
               save_interval_iters=2, keep_checkpoints=2)

SCRIPT = """
import os, signal, sys
import torch
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
from train_synth import tiny_spec
from ppyoloe_sod.config import TrainConfig
from ppyoloe_sod.train import checkpoint, engine, runner
from ppyoloe_sod.train.launch import train

out, resume, kill = sys.argv[1], sys.argv[2], sys.argv[3]
kind, _, arg = kill.partition(":")


def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)


if kind == "step":  # inside the step of iteration ARG (counted from 0), before it changes anything
    real_step = engine.Trainer.step
    engine.Trainer.step = lambda self, batch, i: die() if i == int(arg) else real_step(self, batch, i)
elif kind == "saved":  # right after the checkpoint of iteration ARG is complete
    real_write = runner.write_checkpoint

    def write(out_dir, state, keep):
        path = real_write(out_dir, state, keep)
        if state["iteration"] == int(arg):
            die()
        return path
    runner.write_checkpoint = write
elif kind == "rename":  # the file of iteration ARG written in full but not yet renamed into place
    real_replace = os.replace
    name = f"iter_{{int(arg):08d}}.pt"
    os.replace = lambda src, dst, *a, **k: die() if str(dst).endswith(name) else real_replace(src, dst, *a, **k)
elif kind == "link":  # checkpoints/iter_ARG.pt complete, latest/checkpoint.pt still the one before
    real_link = checkpoint.link_latest
    name = f"iter_{{int(arg):08d}}.pt"
    checkpoint.link_latest = lambda path, latest: die() if path.name == name else real_link(path, latest)
elif kind == "eval":  # in the evaluation at the end of an epoch, before that epoch's checkpoint
    runner.Runner._evaluate = die

train(TrainConfig(**{options!r}, resume_path=None if resume == "-" else resume), {ds!r}, output=out,
      model=tiny_spec(), progress=False)
"""

# (kill point, iteration of the checkpoint left behind)
KILLS = [
    ("step:3", 2),  # within epoch 1, after its mid-epoch checkpoint at iteration 2
    ("saved:6", 6),  # right after a mid-epoch checkpoint was written
    ("rename:8", 6),  # while writing the end-of-epoch checkpoint: the previous one is kept
    ("link:10", 8),  # iteration 10's file complete, latest/ not yet updated: latest/ still says 8
    ("eval", 10),  # in the evaluation at the end of the last epoch
]


pytestmark = pytest.mark.usefixtures("one_thread")


def _run(tmp_path: Path, out: Path, resume: str = "-", kill: str = "-") -> subprocess.CompletedProcess:
    script = tmp_path / "run_train.py"
    if not script.exists():
        script.write_text(SCRIPT.format(tests=str(Path(__file__).parent), ds=str(tmp_path / "ds"), options=OPTIONS))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, str(script), str(out), resume, kill], env=env, timeout=300,
                          capture_output=True, text=True)


def _loss_lines(out: Path) -> dict[int, str]:
    """Iteration -> its logged losses and LR (a resumed run logs the iterations it repeats again: the last wins)."""
    found = re.findall(r"\((\d+)/\d+\) (loss .* lr \S+)", (out / "train.log").read_text())
    return {int(it): text for it, text in found}


def _assert_same_state(a: dict, b: dict) -> None:
    for part in ("model",):
        for key, value in a["trainer"][part].items():
            assert torch.equal(value, b["trainer"][part][key]), f"{part} differs at {key}"
    ema_a, ema_b = a["trainer"]["ema"], b["trainer"]["ema"]
    assert (ema_a["step"], ema_a["last_decay"]) == (ema_b["step"], ema_b["last_decay"])
    for key, value in ema_a["shadow"].items():
        assert torch.equal(value, ema_b["shadow"][key]), f"EMA differs at {key}"
    opt_a, opt_b = a["trainer"]["optimizer"], b["trainer"]["optimizer"]
    assert [g["lr"] for g in opt_a["param_groups"]] == [g["lr"] for g in opt_b["param_groups"]]
    for pid, st in opt_a["state"].items():
        assert torch.equal(st["momentum_buffer"], opt_b["state"][pid]["momentum_buffer"])
    assert torch.equal(a["history"], b["history"])  # every step's losses and LR
    assert a["eval_history"] == b["eval_history"] and a["best"] == b["best"]
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert (a["iteration"], a["epoch"], a["batch"]) == (b["iteration"], b["epoch"], b["batch"])


def _train(tmp_path: Path, out: Path, resume: str | None = None) -> dict:
    """The subprocess's run, in this process."""
    return train(TrainConfig(**OPTIONS, resume_path=resume), tmp_path / "ds", output=out, model=tiny_spec(),
                 progress=False)


@pytest.mark.slow  # five training subprocesses of a tiny model: ~50 s on 2 shared cores
def test_killed_anywhere_then_resumed_matches_an_uninterrupted_run(tmp_path):
    make_dataset(tmp_path / "ds", n_train=4, n_val=1, size=64, seed=2)
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    _train(tmp_path, ref)

    resume = "-"
    for kill, kept_iteration in KILLS:
        proc = _run(tmp_path, killed, resume, kill)
        assert proc.returncode == -9, f"{kill}: the run was not killed ({proc.returncode}): {proc.stderr[-3000:]}"
        assert load_checkpoint(killed)["iteration"] == kept_iteration, kill
        if kill.startswith("rename"):  # the write killed before its rename left its temp file, nothing else
            assert list(killed.glob("checkpoints/.iter_00000008.pt.*.tmp"))
        resume = str(killed)
    log = (killed / "train.log").read_text()
    assert (f"resumed from {killed / 'latest' / 'checkpoint.pt'}: 0 epochs and 2 iterations done (batch 2/4 of "
            f"epoch 1)") in log
    assert "1 epochs and 6 iterations done (batch 2/4 of epoch 2)" in log
    assert _train(tmp_path, killed, resume)["done_flag"] is True
    assert "2 epochs and 10 iterations done (batch 2/4 of epoch 3)" in (killed / "train.log").read_text()

    a, b = load_checkpoint(ref), load_checkpoint(killed)
    assert a["iteration"] == b["iteration"] == 12
    _assert_same_state(a, b)
    for folder in ("latest", "best_model"):
        wa, _ = load_safetensors(ref / folder / "model.safetensors")
        wb, _ = load_safetensors(killed / folder / "model.safetensors")
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), folder
    assert _loss_lines(ref) == _loss_lines(killed) and len(_loss_lines(ref)) == 12
    # the newest two checkpoints, no temp file left; latest/ is the newest
    names = sorted(p.name for p in (killed / "checkpoints").iterdir())
    assert names == sorted(p.name for p in (ref / "checkpoints").iterdir()) == ["iter_00000010.pt", "iter_00000012.pt"]
    assert os.path.samefile(killed / "latest" / "checkpoint.pt", killed / "checkpoints" / "iter_00000012.pt")
    assert json.loads((killed / "train_result.json").read_text())["done_flag"] is True


def test_resume_within_an_epoch_keeps_the_newest_checkpoints(tmp_path):
    """In one process: a checkpoint after every iteration (the newest 3 kept, latest/ the newest), and a run
    resumed from the one in the middle of epoch 2 ends with the same weights, EMA, optimiser and losses."""
    make_dataset(tmp_path / "ds", n_train=4, n_val=0, size=64, seed=2)
    options = {**OPTIONS, "epochs_iters": 2, "save_interval_iters": 1, "keep_checkpoints": 3}
    ref = tmp_path / "ref"
    train(TrainConfig(**options), tmp_path / "ds", output=ref, model=tiny_spec(), progress=False)
    names = [p.name for p in checkpoint.checkpoint_files(ref / "checkpoints")]
    assert names == ["iter_00000006.pt", "iter_00000007.pt", "iter_00000008.pt"]
    assert os.path.samefile(ref / "latest" / "checkpoint.pt", ref / "checkpoints" / "iter_00000008.pt")
    mid = load_checkpoint(ref / "checkpoints" / "iter_00000006.pt")
    assert (mid["epoch"], mid["batch"], mid["iteration"]) == (1, 2, 6)
    assert mid["schedule"] == {"base_lr": 0.01, "warmup_iters": 3, "total_iters": 96 * 4}

    resumed = tmp_path / "resumed"
    train(TrainConfig(**options, resume_path=str(ref / "checkpoints" / "iter_00000006.pt")), tmp_path / "ds",
          output=resumed, model=tiny_spec(), progress=False)
    _assert_same_state(load_checkpoint(ref), load_checkpoint(resumed))
    assert _loss_lines(resumed).keys() == {7, 8}
    assert {k: v for k, v in _loss_lines(ref).items() if k > 6} == _loss_lines(resumed)


def test_disk_full_keeps_the_previous_checkpoint_and_stops(tmp_path, monkeypatch):
    """The end-of-epoch checkpoint (iteration 4) meets a full disk: a DiskFullError names that file and the kept
    checkpoint of iteration 2 to resume from; nothing half-written is left; the resumed run finishes."""
    make_dataset(tmp_path / "ds", n_train=4, n_val=0, size=64, seed=2)
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("iteration") == 4:
            f.write(b"\0" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    out = tmp_path / "out"
    options = {**OPTIONS, "epochs_iters": 2}
    with pytest.raises(DiskFullError) as e:
        train(TrainConfig(**options), tmp_path / "ds", output=out, model=tiny_spec(), progress=False)
    message = str(e.value)
    kept = out / "checkpoints" / "iter_00000002.pt"
    assert f"Cannot write {str(out / 'checkpoints' / 'iter_00000004.pt')!r}: the disk is full" in message
    assert f"Training stopped at iteration 4. The last good checkpoint is {kept} (iteration 2)." in message
    assert f"resume with TrainConfig(resume_path={str(out)!r})" in message
    assert e.value.filename == str(out / "checkpoints" / "iter_00000004.pt")
    assert load_checkpoint(out)["iteration"] == 2 and os.path.samefile(out / "latest" / "checkpoint.pt", kept)
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["iter_00000002.pt"]
    assert "ERROR Cannot write" in (out / "train.log").read_text()
    assert json.loads((out / "train_result.json").read_text())["done_flag"] is False

    monkeypatch.setattr(torch, "save", real_save)  # space freed
    result = train(TrainConfig(**options, resume_path=str(out)), tmp_path / "ds", output=out, model=tiny_spec(),
                   progress=False)
    assert result["done_flag"] is True and result["iterations"] == 8
