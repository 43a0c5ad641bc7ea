"""Kill a training process with SIGKILL once its first checkpoint exists, resume it, and compare with a run that
was never interrupted (same seed, workers=0, one thread): the final weights, EMA, optimiser state and LR must be
bit-identical, since every source of randomness (data order, augmentation, dropout) is restored or seeded."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ppyoloe_sod.train.checkpoint import load_checkpoint
from ppyoloe_sod.weights.store import load_safetensors

from train_synth import make_dataset

REPO = Path(__file__).resolve().parents[2]
EPOCHS = 6

SCRIPT = """
import sys
import torch
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
from train_synth import tiny_spec
from ppyoloe_sod.config import TrainConfig
from ppyoloe_sod.train.launch import train
train(TrainConfig(epochs_iters={epochs}, batch_size=2, num_workers=0, seed=5, warmup_steps=3,
                  resume_path=sys.argv[2] if len(sys.argv) > 2 else None),
      {ds!r}, output=sys.argv[1], model=tiny_spec(), progress=False)
"""


def _command(tmp_path: Path, out: Path, resume: Path | None = None) -> list[str]:
    script = tmp_path / "run_train.py"
    if not script.exists():
        script.write_text(SCRIPT.format(tests=str(Path(__file__).parent), ds=str(tmp_path / "ds"), epochs=EPOCHS))
    return [sys.executable, str(script), str(out)] + ([str(resume)] if resume else [])


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def _final_state(out: Path) -> dict:
    ck = load_checkpoint(out)
    weights, _ = load_safetensors(out / "latest" / "model.safetensors")
    return {"ck": ck, "weights": weights}


@pytest.mark.slow  # three training subprocesses: ~25 s on 2 shared cores
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    make_dataset(tmp_path / "ds", n_train=4, n_val=0, size=64, seed=2)
    env = _env()

    ref = tmp_path / "ref"
    subprocess.run(_command(tmp_path, ref), env=env, check=True, timeout=300, capture_output=True)

    killed = tmp_path / "killed"
    ck_file = killed / "latest" / "checkpoint.pt"
    err = tmp_path / "killed.err"
    with open(err, "wb") as err_file:
        proc = subprocess.Popen(_command(tmp_path, killed), env=env, stdout=subprocess.DEVNULL, stderr=err_file)
    try:
        deadline = time.monotonic() + 240
        while not ck_file.exists():
            assert proc.poll() is None, f"the training process ended before a checkpoint: {err.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "no checkpoint appeared in time"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    result_file = killed / "train_result.json"  # written after the checkpoint: the kill may precede it
    assert not result_file.exists() or json.loads(result_file.read_text())["done_flag"] is False, \
        "the kill came too late to interrupt the run"
    kept = load_checkpoint(killed)  # the file a kill can interrupt is written atomically: it always loads
    assert 1 <= kept["epoch"] < EPOCHS
    leftovers = [p.name for p in (killed / "latest").iterdir() if p.name.endswith(".tmp")]

    subprocess.run(_command(tmp_path, killed, resume=killed), env=env, check=True, timeout=300,
                   capture_output=True)
    log = (killed / "train.log").read_text()
    assert f"resumed from {ck_file}: {kept['epoch']} epochs and {kept['iteration']} iterations done" in log
    assert json.loads((killed / "train_result.json").read_text())["done_flag"] is True

    a, b = _final_state(ref), _final_state(killed)
    assert a["ck"]["iteration"] == b["ck"]["iteration"] == EPOCHS * 2
    for key in a["weights"]:
        assert torch.equal(a["weights"][key], b["weights"][key]), f"saved EMA weights differ at {key}"
    # every step's loss terms and LR, the ones before the kill included (restored from the checkpoint)
    assert torch.equal(a["ck"]["history"], b["ck"]["history"])
    ta, tb = a["ck"]["trainer"], b["ck"]["trainer"]
    for key in ta["model"]:
        assert torch.equal(ta["model"][key], tb["model"][key]), f"raw weights differ at {key}"
    assert ta["ema"]["step"] == tb["ema"]["step"] and ta["ema"]["last_decay"] == tb["ema"]["last_decay"]
    for key in ta["ema"]["shadow"]:
        assert torch.equal(ta["ema"]["shadow"][key], tb["ema"]["shadow"][key])
    assert [g["lr"] for g in ta["optimizer"]["param_groups"]] == [g["lr"] for g in tb["optimizer"]["param_groups"]]
    for pid, st in ta["optimizer"]["state"].items():
        assert torch.equal(st["momentum_buffer"], tb["optimizer"]["state"][pid]["momentum_buffer"])
    # A temp file left by the kill (if it hit a write) is harmless and never mistaken for the checkpoint.
    assert all(name.startswith(".") for name in leftovers)


def test_resume_refuses_a_checkpoint_of_another_model(tmp_path):
    """A checkpoint for 2 classes cannot resume a run whose dataset has 3: a clear error, not a shape crash."""
    from ppyoloe_sod.errors import ConfigError
    from ppyoloe_sod.train.checkpoint import save_checkpoint
    from ppyoloe_sod.config import TrainConfig
    from ppyoloe_sod.train.launch import train
    from train_synth import tiny_spec

    make_dataset(tmp_path / "ds", n_train=2, n_val=0)
    save_checkpoint(tmp_path / "old" / "checkpoint.pt", {"spec": {"model_name": "tiny-sod-test", "num_classes": 3}})
    with pytest.raises(ConfigError, match="written for tiny-sod-test with 3 classes.*with 2"):
        train(TrainConfig(epochs_iters=1, num_workers=0, resume_path=str(tmp_path / "old")), tmp_path / "ds",
              output=tmp_path / "out", model=tiny_spec(), progress=False)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot read the checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")
