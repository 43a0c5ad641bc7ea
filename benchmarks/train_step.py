"""Speed of one training step, ours against PaddleDetection's, same weights and same batch, in the same run.

    python benchmarks/train_step.py [--model PP-YOLOE_plus_SOD-S] [--sizes 640 320] [--batch 2] [--runs 3]

A step is what both trainers do per iteration: forward in train mode, loss with the task-aligned assigner,
backward, SGD-momentum update with L2 decay, EMA update. ppdet's side: the modules of
``tests/oracle/ppdet_reference.build`` in train mode, the head called with targets (``gt_class`` int64), its
``paddle.optimizer.Momentum`` and ``ppdet.optimizer.ema.ModelEMA``, in float32. Ours:
``ppyoloe_sod.train.engine.Trainer.step`` on the same weights (converted from ppdet's state dict), in float32
(``Train.amp=off``) and in bf16 autocast with channels-last (``Train.amp=bf16``; only where the CPU runs bf16
natively, else the reason is printed). Per size: the median over ``--runs`` steps after one warm-up step, the
trainers timed in turn (so that a change of load on a shared machine falls on all of them), as s/step, images/s
and the speed-up over ppdet (above 1: ours is faster), with the load average before and after. Our two rows draw
the same dropout, so their first losses (same weights, same batch) show what bf16 moves. Needs the Paddle oracle
(scripts/test.sh installs it). On CUDA machines ours runs on the GPU only with ``--device cuda``; the comparison
is meant for CPU.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import interleaved  # noqa: E402

INIT_CLS_BIAS = -4.6  # log(0.01 / 0.99)


def make_batch(batch: int, size: int, num_classes: int, seed: int = 0):
    """Random pixels and 1-8 boxes per image (some tiny), padded as the reader's PadGT does."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 1, (batch, 3, size, size)).astype("float32")
    counts = [int(rng.integers(1, 9)) for _ in range(batch)]
    n = max(counts)
    labels = np.zeros((batch, n, 1), np.int64)
    boxes = np.zeros((batch, n, 4), np.float32)
    mask = np.zeros((batch, n, 1), np.float32)
    for i, k in enumerate(counts):
        wh = rng.uniform(4, size / 4, (k, 2))
        xy = rng.uniform(0, size - wh)
        boxes[i, :k] = np.concatenate([xy, xy + wh], 1)
        labels[i, :k, 0] = rng.integers(0, num_classes, k)
        mask[i, :k] = 1
    return images, labels, boxes, mask


def ppdet_step(pd_model, size_batch: tuple, losses: list[float]) -> Callable[[], None]:
    """One ppdet training step on the batch (Momentum with L2 decay, ppdet's EMA), as its trainer runs it."""
    import paddle
    from ppdet.optimizer.ema import ModelEMA as PaddleEMA

    images, labels, boxes, mask = size_batch
    optimizer = paddle.optimizer.Momentum(learning_rate=0.001, momentum=0.9, parameters=pd_model.parameters(),
                                          weight_decay=paddle.regularizer.L2Decay(5e-4))
    ema = PaddleEMA(pd_model, decay=0.9998, ema_decay_type="threshold", ema_black_list=["proj_conv.weight"])
    targets = {"gt_class": paddle.to_tensor(labels), "gt_bbox": paddle.to_tensor(boxes),
               "pad_gt_mask": paddle.to_tensor(mask), "epoch_id": 0}
    x = paddle.to_tensor(images)

    def run() -> None:
        feats = pd_model.neck(list(pd_model.backbone({"image": x})))
        loss = pd_model.yolo_head(feats, targets)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        ema.update(pd_model)
        losses.append(float(loss))
    return run


def our_step(trainer, size_batch: tuple, losses: list[float], device: str) -> Callable[[], None]:
    """One step of our trainer on the batch; step i draws dropout from seed i, the same in every row."""
    images, labels, boxes, mask = size_batch
    batch = {"images": torch.from_numpy(images), "gt_labels": torch.from_numpy(labels),
             "gt_boxes": torch.from_numpy(boxes), "pad_mask": torch.from_numpy(mask)}
    iteration = {"i": 200}  # past the warmup: a real LR

    def run() -> None:
        torch.manual_seed(iteration["i"])
        losses.append(trainer.step(batch, iteration["i"])["loss"])
        iteration["i"] += 1
        if device != "cpu":
            torch.cuda.synchronize()
    return run


def our_trainers(model: str, weights: Path, device: str, channels_last: bool) -> dict[str, object]:
    """Our trainers to time: float32, and bf16 autocast where ``Train.amp=bf16`` is accepted on this machine."""
    from ppyoloe_sod.errors import ConfigError
    from ppyoloe_sod.models import load_model
    from ppyoloe_sod.train.engine import Trainer

    def build(amp: str, layout: bool | None):
        return Trainer.build(load_model(model, weights, device=device).train(), 0.001, iters_per_epoch=100,
                             device=device, amp=amp, channels_last=layout)
    trainers = {"ours float32" + (", channels-last" if channels_last else ""): build("off", channels_last)}
    try:
        trainers["ours bf16 autocast, channels-last"] = build("bf16", None)
    except ConfigError as e:
        print(f"no bf16 row: {e}")
    return trainers


def load_text() -> str:
    """The 1, 5 and 15 minute load averages: timings on a shared machine mean little without them."""
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="PP-YOLOE_plus_SOD-S")
    ap.add_argument("--sizes", type=int, nargs="+", default=[640, 320], help="square input sizes, one table each")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads for both frameworks (sets OMP_NUM_THREADS before Paddle loads)")
    ap.add_argument("--channels-last", action="store_true", help="our float32 row with channels-last memory format")
    args = ap.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        torch.set_num_threads(args.threads)

    import paddle

    from ppyoloe_sod.zoo import get_spec
    from tests.oracle.ppdet_reference import build

    spec = get_spec(args.model)
    ppdet_name = f"ppdet float32 (paddle {paddle.__version__})"
    print(f"\n{args.model}, training step, batch {args.batch}, torch {torch.__version__.split('+')[0]} threads "
          f"{torch.get_num_threads()}, OMP_NUM_THREADS {os.environ.get('OMP_NUM_THREADS', 'unset')}, device "
          f"{args.device}, median of {args.runs} steps after 1 warm-up, timed in turn")
    for size in args.sizes:
        # Fresh weights per size, so that our rows' first losses come from the same weights. The class bias of
        # a detection head's usual init (prior 0.01), not the oracle's default -1: a realistic first step.
        pd_model = build(args.model, cls_bias=INIT_CLS_BIAS)  # eval_size None: any input size, as in training
        with tempfile.TemporaryDirectory() as tmp:
            weights = Path(tmp) / "w.pdparams"
            paddle.save(pd_model.state_dict(), str(weights))
            trainers = our_trainers(args.model, weights, args.device, args.channels_last)
        pd_model.train()
        size_batch = make_batch(args.batch, size, spec.num_classes)
        losses: dict[str, list[float]] = {name: [] for name in (ppdet_name, *trainers)}
        steps = {ppdet_name: ppdet_step(pd_model, size_batch, losses[ppdet_name])}
        steps.update({name: our_step(trainer, size_batch, losses[name], args.device)
                      for name, trainer in trainers.items()})
        before = load_text()
        seconds, _ = interleaved(steps, args.runs)
        print(f"\n{size}x{size} ({before} before, {load_text()} after)")
        print(f"{'trainer':36s} {'s/step':>7s} {'img/s':>7s} {'vs ppdet':>9s}  first loss")
        for name, s in seconds.items():
            print(f"{name:36s} {s:7.2f} {args.batch / s:7.2f} {seconds[ppdet_name] / s:9.2f}  {losses[name][0]:.4f}")
        del pd_model, trainers, steps
    print("(ppdet's first loss differs a little from ours: transformer dropout draws differ between frameworks)")


if __name__ == "__main__":
    main()
