"""The training half of ``benchmarks/gpu_check.py``: AMP and channels-last steps, and DDP with SyncBatchNorm.

Called by gpu_check.py (one script, one report); it can also run alone:

    python benchmarks/gpu_train_check.py --out DIR [--model PP-YOLOE_plus_SOD-S] [--size 640] [--batch 8]

Checks (exit code 1 if one fails):
  - training steps with ``Train.amp`` bf16 and fp16 (channels-last, GradScaler for fp16) from the same initial
    weights on the same batches as a float32 run (TF32 off): every loss finite, no step skipped by the loss
    scaler among the first three, and the losses of the first three steps within 2% of float32's (the warmup
    starts at LR 0, so steps 1-2 see the initial weights and step 3 the first update). Later steps are reported,
    not judged: a randomly initialised network's trajectory is chaotic (bf16 was 40% off float32 by step 8 on
    an H200 while within 1e-4 for three steps and 0.6-1.9% for the next three), and GradScaler may skip steps on overflow (counted);
  - two DDP ranks on one GPU with gloo (NCCL refuses two ranks on one device) through the product's own
    ``train_process``: SyncBatchNorm in the model, both ranks end with identical parameters and buffers;
  - one process through ``train_process`` with ``Train.amp=bf16`` on the GPU: epochs, a mid-epoch checkpoint,
    evaluation, and the written best model.
Rows: median train step time per mode (images/s), batch ``--batch`` at ``--size``.
The scenes and the tiny architecture come from the test suite's ``tests/train/train_synth.py``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "train"))
from train_synth import draw_image, make_dataset, tiny_spec  # noqa: E402

FIRST_STEPS_TOLERANCE = 0.02  # |loss - fp32 loss| / fp32 loss over the first JUDGED_STEPS steps
JUDGED_STEPS = 3
MODES = (("fp32 (TF32 off, the reference)", "off", False, False),
         ("fp32 (TF32 on, PyTorch's conv default)", "off", False, True),
         ("AMP bf16 + channels-last", "bf16", True, True),
         ("AMP fp16 + channels-last + GradScaler", "fp16", True, True))


def train_batches(count: int, batch: int, size: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """``count`` loader-shaped batches of drone-like scenes; the last image of each batch has no box."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        drawn = [draw_image(rng, size, 0 if i == batch - 1 else max(4, size // 20), 6, 40) for i in range(batch)]
        n = max(1, max(len(b) for _, b, _ in drawn))
        images = np.stack([img[:, :, ::-1].transpose(2, 0, 1) for img, _, _ in drawn]).astype(np.float32) / 255
        labels = np.zeros((batch, n, 1), np.int64)
        boxes = np.zeros((batch, n, 4), np.float32)
        mask = np.zeros((batch, n, 1), np.float32)
        for i, (_, bx, cls) in enumerate(drawn):
            boxes[i, :len(bx)] = np.asarray(bx, np.float32).reshape(-1, 4)
            labels[i, :len(cls), 0] = cls
            mask[i, :len(bx)] = 1
        out.append({"images": torch.from_numpy(images), "gt_labels": torch.from_numpy(labels),
                    "gt_boxes": torch.from_numpy(boxes), "pad_mask": torch.from_numpy(mask)})
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_mode(model_name: str, device: torch.device, batches: list[dict[str, torch.Tensor]], amp: str,
             channels_last: bool, tf32: bool) -> dict[str, Any]:
    """Steps of the product's Trainer from seed-0 weights; losses per step and the median step time."""
    from ppyoloe_sod.models import build_model
    from ppyoloe_sod.train.engine import Trainer

    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.manual_seed(0)
    net = build_model(model_name)  # random initialisation; LR 0.002 keeps its first steps well-conditioned
    trainer = Trainer.build(net, base_lr=0.002, iters_per_epoch=len(batches), device=device, warmup_iters=2,
                            amp=amp, channels_last=channels_last)
    losses, times, skipped = [], [], []
    probe = next(iter(trainer.net.parameters()))
    for i, batch in enumerate(batches):
        before = probe.detach().clone()
        lr_zero = trainer.schedule(i) == 0
        _sync(device)
        t0 = time.perf_counter()
        stats = trainer.step(batch, i)
        _sync(device)
        times.append(time.perf_counter() - t0)
        losses.append(stats["loss"])
        if not lr_zero and torch.equal(before, probe.detach()):
            skipped.append(i + 1)  # the loss scaler found inf/NaN gradients and left the weights as they were
    timed = times[2:] if len(times) > 3 else times  # the first steps pick cuDNN algorithms
    step_s = float(np.median(timed))
    return {"losses": losses, "skipped_steps": skipped,
            "loss_scale": trainer.scaler.get_scale() if trainer.scaler is not None else None, "step_ms": step_s * 1000, "images_per_s": batches[0]["images"].shape[0] / step_s,
            "amp_dtype": str(trainer.amp_dtype), "channels_last": trainer.channels_last,
            "max_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None}


def check_amp_steps(model_name: str, device: torch.device, size: int, batch: int, steps: int
                    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    batches = train_batches(steps, batch, size, seed=3)
    results: dict[str, dict[str, Any]] = {}
    rows = []
    for name, amp, channels_last, tf32 in MODES:
        if device.type != "cuda" and amp != "off":
            rows.append({"mode": name, "skipped": "AMP training runs on CUDA only"})
            continue
        if device.type == "cuda":
            torch.cuda.init()  # reset_peak_memory_stats before any allocation: "Invalid device argument"
            torch.cuda.reset_peak_memory_stats(device)
        try:
            results[name] = r = run_mode(model_name, device, batches, amp, channels_last, tf32)
        except Exception as e:  # noqa: BLE001 - a failing mode is a finding for the report, not the end of it
            results[name] = failure(e)
            rows.append({"mode": name, "skipped": f"failed: {results[name]['error']}"})
            continue
        rows.append({"mode": name, "batch": batch, "size": size, "step_ms": r["step_ms"],
                     "images_per_s": r["images_per_s"], "max_memory_gib": r["max_memory_gib"]})
    ref = results.get(MODES[0][0], {}).get("losses")
    check: dict[str, Any] = {"name": f"training steps per mode vs float32 (TF32 off), {steps} steps, batch {batch} "
                                     f"at {size}, same batches and initial weights",
                             "tolerance": f"all losses finite; steps 1-{JUDGED_STEPS} not skipped and within "
                                          f"{FIRST_STEPS_TOLERANCE:.0%} of float32; later steps reported"}
    passed = ref is not None
    for name, r in results.items():
        if "error" in r:
            check[name] = r["error"]
            passed = False
            continue
        finite = all(math.isfinite(v) for v in r["losses"])
        rel = [abs(a - b) / abs(b) for a, b in zip(r["losses"], ref or r["losses"])]
        check[name] = {"losses": [round(v, 5) for v in r["losses"]], "rel_diff": [round(v, 5) for v in rel],
                       "finite": finite, "skipped_steps": r["skipped_steps"], "final_loss_scale": r["loss_scale"]}
        passed &= (finite and max(rel[:JUDGED_STEPS]) <= FIRST_STEPS_TOLERANCE
                   and not [i for i in r["skipped_steps"] if i <= JUDGED_STEPS])
    check["passed"] = passed
    return check, rows


# ------------------------------------------------------------------------------ the product's process paths

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _train_config(dataset: Path, out: Path, amp: str, iters: int, batch: int) -> Any:
    from ppyoloe_sod.config import Config, GlobalConfig, TrainConfig

    return Config(Global=GlobalConfig(dataset_dir=str(dataset), output=str(out)),
                  Train=TrainConfig(epochs_iters=iters, batch_size=batch, num_workers=0, seed=1, warmup_steps=1,
                                    log_interval=1, amp=amp))


def _ddp_rank(rank: int, tmp: str, port: int, device: str) -> None:
    import torch.distributed as dist
    from ppyoloe_sod.train.launch import train_process

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        cfg = _train_config(Path(tmp) / "ds", Path(tmp) / "out", "off", 2, 2)
        run = train_process(cfg, rank, 2, torch.device(device), spec=tiny_spec(128), progress=False)
        net = run.trainer.net
        sync_bn = sum(isinstance(m, torch.nn.SyncBatchNorm) for m in net.modules())
        params = {k for k, _ in net.named_parameters()}
        state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()
                 if k in params or device.startswith("cuda")}  # CPU ranks keep their own BatchNorm statistics
        torch.save({"state": state, "sync_bn": sync_bn, "ddp": type(run.trainer.model).__name__,
                    "iterations": run.summary["iterations"]}, f"{tmp}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def check_ddp(device: torch.device) -> dict[str, Any]:
    """Two ranks on one GPU with gloo through ``train_process`` (Runner, DDP, SyncBatchNorm, all-reduced loss)."""
    import torch.multiprocessing as mp

    name = ("2 DDP ranks on one device (gloo) through train_process: SyncBatchNorm, identical parameters and "
            "(with SyncBatchNorm) BatchNorm statistics")
    with tempfile.TemporaryDirectory() as tmp:
        make_dataset(Path(tmp) / "ds", n_train=8, n_val=0, size=128, seed=4, objects=5)
        mp.spawn(_ddp_rank, args=(tmp, _free_port(), str(device)), nprocs=2, join=True)
        r0 = torch.load(f"{tmp}/rank0.pt", weights_only=True)
        r1 = torch.load(f"{tmp}/rank1.pt", weights_only=True)
    differing = [k for k, v in r0["state"].items() if not torch.equal(v, r1["state"][k])]
    wants_sync = device.type == "cuda"
    return {"name": name, "ddp": r0["ddp"], "sync_batchnorm_layers": r0["sync_bn"],
            "iterations": [r0["iterations"], r1["iterations"]], "differing_tensors": differing[:5],
            "passed": r0["ddp"] == "DistributedDataParallel" and not differing
                      and (r0["sync_bn"] > 0 if wants_sync else True)}


def check_train_process(device: torch.device) -> dict[str, Any]:
    """One process, the product's whole loop on the device with bf16 AMP: checkpoints, evaluation, outputs."""
    from ppyoloe_sod.train.launch import train_process

    name = "train_process on the device, Train.amp=bf16: 2 epochs, mid-epoch checkpoint, evaluation, best model"
    amp = "bf16" if device.type == "cuda" else "off"
    with tempfile.TemporaryDirectory() as tmp:
        make_dataset(Path(tmp) / "ds", n_train=8, n_val=2, size=128, seed=5, objects=5)
        cfg = _train_config(Path(tmp) / "ds", Path(tmp) / "out", amp, 2, 4)
        cfg.Train.save_interval_iters = 1
        run = train_process(cfg, 0, 1, device, spec=tiny_spec(128), progress=False)
        out = Path(tmp) / "out"
        written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    summary = run.summary
    return {"name": name, "amp_dtype": str(run.trainer.amp_dtype), "iterations": summary.get("iterations"),
            "files": written[:12], "best_metric": summary.get("best_metric"),
            "passed": summary.get("iterations") == 4 and any("best_model" in f for f in written)}


def failure(e: Exception) -> dict[str, str]:
    """What the report keeps of an exception: its one-line text and the end of its traceback."""
    return {"error": f"{type(e).__name__}: {e}"[:300], "traceback": traceback.format_exc()[-3000:]}


def guarded(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run a check; an exception becomes a failed check with its traceback, so the other checks still run."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001
        return {"name": name, "passed": False, **failure(e)}


def training_report(model_name: str, device: torch.device, size: int, batch: int, steps: int
                    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(checks, rows) of the training half."""
    rows: list[dict[str, Any]] = []

    def amp_steps() -> dict[str, Any]:
        check, rows[:] = check_amp_steps(model_name, device, size, batch, steps)
        return check

    checks = [guarded("training steps per mode", amp_steps), guarded("DDP", lambda: check_ddp(device)),
              guarded("train_process", lambda: check_train_process(device))]
    return checks, rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--model", default="PP-YOLOE_plus_SOD-S")
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--device", default="cuda:0")
    args = ap.parse_args()
    device = torch.device(args.device)
    checks, rows = training_report(args.model, device, args.size, args.batch, args.steps)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_train_check.json").write_text(json.dumps({"checks": checks, "train_rows": rows}, indent=2))
    print(json.dumps({"checks": checks, "train_rows": rows}, indent=2))
    return 0 if all(c.get("passed", True) for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
