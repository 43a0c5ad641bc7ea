"""CPU latency of our eager model against PaddleDetection's dygraph model, same weights and input, same run.

    python benchmarks/latency.py [--model PP-YOLOE_plus_SOD-S] [--size 640] [--runs 10]

Every row is the whole path from a preprocessed 1x3xHxW tensor to NMS output (decode and multi-class NMS
included), median milliseconds per image, and the ratio to ppdet dygraph (below 1 means faster). Rows:
ppdet dygraph, Paddle Inference on the exported graph (what PaddleX runs), our eager model plain and fused,
and our fused model under ONNX Runtime. Needs the Paddle oracle installed (scripts/test.sh installs it).
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


def _ms(fn, runs: int) -> float:
    return timed(fn, runs, warmup=2)[0] * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="PP-YOLOE_plus_SOD-S")
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--no-onnx", action="store_true")
    ap.add_argument("--dense-scores", action="store_true",
                    help="random head as in the parity tests: every score above 0.01, so NMS sees all "
                         "L x C candidates (a worst case); default: sparse scores like a trained detector")
    args = ap.parse_args()

    # Paddle sets OMP_NUM_THREADS=1 when imported unless it is set: give both frameworks the same threads.
    os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
    import paddle
    from tests.oracle.ppdet_reference import build, export_inference
    from ppyoloe_sod import boxes as B
    from ppyoloe_sod.models import load_model
    from ppyoloe_sod.zoo import get_spec

    spec = get_spec(args.model)
    size = (args.size, args.size)
    threads = torch.get_num_threads()
    pixels = np.random.default_rng(0).uniform(0, 255, (1, 3, *size)).astype("float32")
    image = pixels / 255.0
    sf = np.ones((1, 2), dtype="float32")
    # A trained detector leaves a few hundred candidates above the 0.01 score threshold; a random head leaves
    # all of them (84,000 at 640), which makes NMS dominate. Default to the realistic case.
    pd_model = build(args.model, eval_size=size) if args.dense_scores else \
        build(args.model, eval_size=size, cls_bias=-6.0, cls_std=0.03)
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "w.pdparams"
        paddle.save(pd_model.state_dict(), str(weights))
        ours = load_model(args.model, weights)

        x_pd, sf_pd = paddle.to_tensor(image), paddle.to_tensor(sf)

        def paddle_dygraph():
            with paddle.no_grad():
                feats = pd_model.neck(list(pd_model.backbone({"image": x_pd})))
                pd_model.yolo_head.post_process(pd_model.yolo_head(feats), sf_pd)

        rows.append(("ppdet dygraph", _ms(paddle_dygraph, args.runs)))

        try:  # Paddle Inference on the exported graph (what PaddleX runs); oneDNN fails on this graph
            from paddle import inference as pi
            export_inference(pd_model, Path(tmp) / "pdx", spec.name, size, list(spec.classes))
            cfg = pi.Config(str(Path(tmp) / "pdx" / "inference.json"), str(Path(tmp) / "pdx" / "inference.pdiparams"))
            cfg.disable_gpu()
            cfg.disable_mkldnn()
            cfg.set_cpu_math_library_num_threads(threads)
            predictor = pi.create_predictor(cfg)
            predictor.get_input_handle("image").copy_from_cpu(pixels)
            predictor.get_input_handle("scale_factor").copy_from_cpu(sf)
            rows.append(("Paddle Inference (exported)", _ms(predictor.run, args.runs)))
        except Exception as e:  # optional row: report why it is missing
            print(f"(Paddle Inference row skipped: {type(e).__name__}: {e})")

    x = torch.from_numpy(image)
    points, strides = ours.anchors(*size)
    sf_t = torch.from_numpy(sf)

    def torch_path():
        raw = ours(x)
        B.postprocess(raw.cls_logits, raw.reg_logits, points, strides, ours.proj, sf_t)

    with torch.inference_mode():
        rows.append(("ours eager", _ms(torch_path, args.runs)))
        ours.fuse()
        rows.append(("ours eager, fused", _ms(torch_path, args.runs)))

    if not args.no_onnx:
        try:
            import onnxruntime as ort
            with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
                path = Path(tmp) / "m.onnx"
                torch.onnx.export(ours, (x,), str(path), input_names=["image"], opset_version=17, dynamo=False)
                opts = ort.SessionOptions()
                opts.intra_op_num_threads = threads
                sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

                def onnx_path():
                    cls_logits, reg_logits = (torch.from_numpy(a) for a in sess.run(None, {"image": image}))
                    B.postprocess(cls_logits, reg_logits, points, strides, ours.proj, sf_t)

                rows.append(("ours ONNX Runtime, fused", _ms(onnx_path, args.runs)))
        except Exception as e:  # optional row: report why it is missing
            print(f"(ONNX Runtime row skipped: {type(e).__name__}: {e})")

    with torch.no_grad():
        candidates = int((ours(x).cls_logits.sigmoid() > 0.01).sum())
    base = rows[0][1]
    print(f"\n{args.model}, 1x3x{args.size}x{args.size}, CPU, torch threads {threads}, OMP_NUM_THREADS "
          f"{os.environ['OMP_NUM_THREADS']}, median of {args.runs} runs, "
          f"{candidates} candidates above the 0.01 score threshold")
    print(f"{'path':32s} {'ms':>10s} {'/ ppdet':>9s}")
    for name, ms in rows:
        print(f"{name:32s} {ms:10.1f} {ms / base:9.2f}")


if __name__ == "__main__":
    main()
