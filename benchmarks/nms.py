"""Multi-class NMS latency: boxes.multiclass_nms against the torchvision implementation it replaced, same run.

    python benchmarks/nms.py [--size 640] [--classes 10] [--runs 5] [--threads N] [--device cpu]

Inputs are a random head decoded at size x size (strides 8, 16, 32: 8,400 anchors at 640), with Paddle's settings
(score > 0.01, 10000 per class, IoU 0.6, keep 500). Median milliseconds per image, the ratio new / previous
(below 1: faster) and whether both returned the same tensor. Rows:
  dense      every score above 0.01 (84,000 candidates at 640 x 10 classes): a random head, and what sliced
             inference and evaluation at threshold 0.01 approach
  sparse     a few thousand candidates, like a trained detector's scores
  identical  dense scores on one box repeated: each class keeps one box, so the search visits every candidate
The previous implementation is tests/test_nms_fast.py's oracle (torchvision NMS over each class's full list).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import timed  # noqa: E402

from ppyoloe_sod import boxes as B  # noqa: E402
from test_nms_fast import decoded_boxes, previous_multiclass_nms  # noqa: E402


def random_head(size: int, classes: int, cls_mean: float, cls_std: float,
                rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(boxes [L, 4], scores [L, C]): decoded random boxes, sigmoid scores of N(cls_mean, cls_std) logits."""
    boxes = torch.from_numpy(decoded_boxes(rng, size))
    logits = torch.from_numpy(rng.normal(cls_mean, cls_std, (len(boxes), classes))).float()
    return boxes, logits.sigmoid()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    dense = random_head(args.size, args.classes, 0.0, 1.0, rng)
    sparse = random_head(args.size, args.classes, -7.0, 1.5, rng)
    identical = (dense[0][:1].expand_as(dense[0]).contiguous(), dense[1])
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    print(f"{len(dense[0])} anchors x {args.classes} classes, {args.device}, {torch.get_num_threads()} threads, "
          f"median of {args.runs} runs")
    print(f"{'input':10s} {'candidates':>10s} {'previous ms':>12s} {'new ms':>8s} {'ratio':>7s}  same output")
    for name, (boxes, scores) in {"dense": dense, "sparse": sparse, "identical": identical}.items():
        boxes, scores = boxes.to(args.device), scores.to(args.device)
        times, outputs = [], []
        for nms in (previous_multiclass_nms, B.multiclass_nms):
            def call(nms=nms):
                out = nms(boxes, scores)
                sync()
                return out
            outputs.append(call())
            times.append(timed(call, args.runs)[0] * 1000)
        same = "yes" if torch.equal(outputs[0], outputs[1]) else "NO"
        print(f"{name:10s} {int((scores > 0.01).sum()):>10d} {times[0]:>12.1f} {times[1]:>8.1f} "
              f"{times[1] / times[0]:>7.3f}  {same}")


if __name__ == "__main__":
    main()
