"""Time of one training step, ours against PaddleDetection's, same weights and same batch, in the same run.

    python benchmarks/train_step.py [--model PP-YOLOE_plus_SOD-S] [--size 640] [--batch 2] [--runs 3]

A step is what both trainers do per iteration: forward in train mode, loss with the task-aligned assigner,
backward, SGD-momentum update with L2 decay, EMA update. ppdet's side: the modules of
``tests/oracle/ppdet_reference.build`` in train mode, the head called with targets (``gt_class`` int64), its
``paddle.optimizer.Momentum`` and ``ppdet.optimizer.ema.ModelEMA``. Ours: ``ppyoloe_sod.train.engine.Trainer.step``
on the same weights (converted from ppdet's state dict). Median wall time over ``--runs`` steps after one warm-up
step, printed as a table with the ratio (above 1: ours is faster). Needs the Paddle oracle (scripts/test.sh
installs it). On CUDA machines ours runs on the GPU only with ``--device cuda``; the comparison is meant for CPU.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import timed  # noqa: E402


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="PP-YOLOE_plus_SOD-S")
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads for both frameworks (sets OMP_NUM_THREADS before Paddle loads)")
    ap.add_argument("--channels-last", action="store_true", help="ours with channels-last memory format")
    args = ap.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        torch.set_num_threads(args.threads)

    import paddle
    from ppdet.optimizer.ema import ModelEMA as PaddleEMA

    from ppyoloe_sod.models import load_model
    from ppyoloe_sod.train.engine import Trainer
    from ppyoloe_sod.zoo import get_spec
    from tests.oracle.ppdet_reference import build

    spec = get_spec(args.model)
    images, labels, boxes, mask = make_batch(args.batch, args.size, spec.num_classes)

    pd_model = build(args.model)  # eval_size None: any input size, as in training
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "w.pdparams"
        paddle.save(pd_model.state_dict(), str(weights))
        ours = load_model(args.model, weights, device=args.device)

    pd_model.train()
    pd_opt = paddle.optimizer.Momentum(learning_rate=0.001, momentum=0.9, parameters=pd_model.parameters(),
                                       weight_decay=paddle.regularizer.L2Decay(5e-4))
    pd_ema = PaddleEMA(pd_model, decay=0.9998, ema_decay_type="threshold", ema_black_list=["proj_conv.weight"])
    targets = {"gt_class": paddle.to_tensor(labels), "gt_bbox": paddle.to_tensor(boxes),
               "pad_gt_mask": paddle.to_tensor(mask), "epoch_id": 0}
    x_pd = paddle.to_tensor(images)
    pd_losses = []

    def paddle_step():
        feats = pd_model.neck(list(pd_model.backbone({"image": x_pd})))
        loss = pd_model.yolo_head(feats, targets)["loss"]
        loss.backward()
        pd_opt.step()
        pd_opt.clear_grad()
        pd_ema.update(pd_model)
        pd_losses.append(float(loss))

    trainer = Trainer.build(ours.train(), 0.001, iters_per_epoch=100, device=args.device, amp="off",
                            channels_last=args.channels_last)
    batch = {"images": torch.from_numpy(images), "gt_labels": torch.from_numpy(labels),
             "gt_boxes": torch.from_numpy(boxes), "pad_mask": torch.from_numpy(mask)}
    our_losses = []
    step = {"i": 200}  # past the warmup: a real LR

    def torch_step():
        our_losses.append(trainer.step(batch, step["i"])["loss"])
        step["i"] += 1
        if args.device != "cpu":
            torch.cuda.synchronize()

    pd_s, pd_all = timed(paddle_step, args.runs)
    our_s, our_all = timed(torch_step, args.runs)

    print(f"\n{args.model}, training step, batch {args.batch} at {args.size}x{args.size}, torch threads "
          f"{torch.get_num_threads()}, OMP_NUM_THREADS {os.environ.get('OMP_NUM_THREADS', 'unset')}, device "
          f"{args.device}{', channels-last' if args.channels_last else ''}, median of {args.runs} steps after 1 warm-up")
    print(f"{'trainer':28s} {'s/step':>8s} {'speed-up vs ppdet':>18s}  first loss")
    print(f"{'ppdet dygraph (paddle ' + paddle.__version__ + ')':28s} {pd_s:8.2f} {1.0:18.2f}  {pd_losses[0]:.4f}")
    print(f"{'ours (torch ' + torch.__version__.split('+')[0] + ')':28s} {our_s:8.2f} {pd_s / our_s:18.2f}  "
          f"{our_losses[0]:.4f}")
    print("all steps (s): ppdet", [round(t, 2) for t in pd_all], "ours", [round(t, 2) for t in our_all])
    print("(first losses differ a little: transformer dropout draws differ between frameworks)")


if __name__ == "__main__":
    main()
