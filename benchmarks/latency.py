"""CPU latency of our eager model against PaddleDetection's dygraph model, same weights and input, same run.

    python benchmarks/latency.py [--model PP-YOLOE_plus_SOD-S] [--size 640] [--runs 10]

Prints median milliseconds per image and the ratio to ppdet dygraph (ours / Paddle: below 1 means we are
faster). Needs the Paddle oracle installed (scripts/test.sh installs it). Optionally includes ONNX Runtime.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def median_ms(fn, runs: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="PP-YOLOE_plus_SOD-S")
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--no-onnx", action="store_true")
    args = ap.parse_args()

    import paddle
    from tests.oracle.ppdet_reference import build
    from ppyoloe_sod.models import load_model

    threads = torch.get_num_threads()
    image = np.random.default_rng(0).uniform(0, 1, (1, 3, args.size, args.size)).astype("float32")
    pd_model = build(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "w.pdparams"
        paddle.save(pd_model.state_dict(), str(weights))
        ours = load_model(args.model, weights)

    rows = []
    x_pd = paddle.to_tensor(image)

    def paddle_forward():
        with paddle.no_grad():
            feats = pd_model.neck(list(pd_model.backbone({"image": x_pd})))
            pd_model.yolo_head(feats)

    rows.append(("ppdet dygraph (eval)", median_ms(paddle_forward, args.runs)))

    x = torch.from_numpy(image)
    with torch.inference_mode():
        rows.append(("ours eager", median_ms(lambda: ours(x), args.runs)))
        ours.fuse()
        rows.append(("ours eager, fused", median_ms(lambda: ours(x), args.runs)))

    if not args.no_onnx:
        try:
            import onnxruntime as ort
            with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
                path = Path(tmp) / "m.onnx"
                torch.onnx.export(ours, (x,), str(path), input_names=["image"], opset_version=17, dynamo=False)
                sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                rows.append(("ours ONNX Runtime, fused", median_ms(lambda: sess.run(None, {"image": image}),
                                                                  args.runs)))
        except Exception as e:  # optional row: report why it is missing
            print(f"(ONNX Runtime row skipped: {type(e).__name__}: {e})")

    base = rows[0][1]
    print(f"\n{args.model}, 1x3x{args.size}x{args.size}, CPU, torch threads {threads}, median of {args.runs} runs")
    print(f"{'path':32s} {'ms':>10s} {'/ ppdet':>9s}")
    for name, ms in rows:
        print(f"{name:32s} {ms:10.1f} {ms / base:9.2f}")


if __name__ == "__main__":
    main()
