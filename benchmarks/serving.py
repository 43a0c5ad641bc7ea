"""Serving throughput and latency: concurrent PaddleX clients against the HTTP service, with and without batching.

    python benchmarks/serving.py [--requests 200] [--clients 16] [--size 320] [--max-batch 8] [--max-wait-ms 5]
                                 [--weights FILE] [--visualize] [--threads N] [--device cpu]

The server is uvicorn on 127.0.0.1 (loopback only) in this process, serving SOD-S at --size x --size (random
weights made to detect, from tests/infer/infer_synth.py, unless --weights names a file); the clients are
--clients threads in a separate process, each posting PaddleX's request (``{"image": base64 PNG}``, a 480x640
generated scene; ``visualize`` off unless --visualize) until --requests are answered. Each mode gets a fresh
server and a few warm-up requests first. Printed per mode: errors, p50 / p99 latency (ms), requests per second
and the mean number of images per forward. ``batching`` is Serve.max_batch_size=--max-batch with
Serve.max_wait_ms=--max-wait-ms; ``no batching`` is max_batch_size=1.
"""
from __future__ import annotations

import argparse
import base64
import multiprocessing
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "serve")]
from serve_synth import LiveServer  # noqa: E402

from ppyoloe_sod.config import ServeConfig  # noqa: E402
from ppyoloe_sod.infer.backends import TorchBackend  # noqa: E402
from ppyoloe_sod.infer.predictor import DetPredictor  # noqa: E402
from ppyoloe_sod.serve.app import create_app  # noqa: E402
from tests.infer.infer_synth import MODEL, randomize_detector, scene  # noqa: E402

WARMUP = 4


def build_predictor(size: int, weights: str | None, device: str) -> DetPredictor:
    from ppyoloe_sod.infer.predictor import resolve_device
    from ppyoloe_sod.models import build_model, load_model

    dev = resolve_device(device)
    if weights:
        detector = load_model(MODEL, weights=weights, device=dev).fuse()
    else:
        detector = randomize_detector(build_model(MODEL)).fuse().to(dev)
    spec = detector.spec
    return DetPredictor(detector, TorchBackend(detector, dev), spec.name, spec.classes, (size, size))


def run_clients(url: str, body: dict, requests_total: int, clients: int, out: "multiprocessing.Queue") -> None:
    """In the client process: --requests posts from --clients threads; (latencies s, errors, wall s) to ``out``."""
    import requests

    local = threading.local()

    def post(_: int) -> tuple[float, bool]:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        start = time.perf_counter()
        try:
            answer = session.post(url, json=body, timeout=600)
            ok = answer.status_code == 200 and answer.json()["errorCode"] == 0
        except requests.RequestException:
            ok = False
        return time.perf_counter() - start, ok

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(post, range(WARMUP)))
        start = time.perf_counter()
        results = list(pool.map(post, range(requests_total)))
        wall = time.perf_counter() - start
    out.put(([t for t, _ in results], sum(not ok for _, ok in results), wall))


def measure(predictor: DetPredictor, serve: ServeConfig, body: dict, args: argparse.Namespace) -> dict:
    app = create_app(predictor, serve)
    server = LiveServer(app).start()
    try:
        context = multiprocessing.get_context("spawn")
        out = context.Queue()
        client = context.Process(target=run_clients, args=(server.url + "/small-object-detection", body,
                                                           args.requests, args.clients, out))
        client.start()
        latencies, errors, wall = out.get()
        client.join()
    finally:
        server.stop()
    stats = app.state.service.batcher.stats
    ms = np.asarray(latencies) * 1000
    return {"errors": errors, "p50": np.percentile(ms, 50), "p99": np.percentile(ms, 99),
            "rps": len(latencies) / wall, "batch": stats.images / max(stats.batches, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--size", type=int, default=320, help="network input size (the model's own is 640)")
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--weights", default=None, help="a .safetensors/.pdparams file of SOD-S (default: random)")
    ap.add_argument("--visualize", action="store_true", help="ask for the drawing too (PaddleX's default)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--device", default="cpu", help="cpu, gpu or gpu:N")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    predictor = build_predictor(args.size, args.weights, args.device)
    ok, png = cv2.imencode(".png", scene(480, 640, seed=1))
    body = {"image": base64.b64encode(png.tobytes()).decode("ascii"), "visualize": args.visualize}
    print(f"{MODEL} at {args.size}x{args.size}, {'given' if args.weights else 'random'} weights, {args.device}, "
          f"{torch.get_num_threads()} torch threads, {os.cpu_count()} cores; {args.requests} requests from "
          f"{args.clients} concurrent clients on 127.0.0.1, 480x640 PNG, visualize={args.visualize}")
    print(f"{'mode':34s} {'errors':>6s} {'p50 ms':>8s} {'p99 ms':>8s} {'req/s':>7s} {'images/forward':>15s}"
          f"  (warm-up included)")
    modes = {f"batching (max {args.max_batch}, wait {args.max_wait_ms:g} ms)":
             ServeConfig(max_batch_size=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=args.clients * 2),
             "no batching (max_batch_size=1)": ServeConfig(max_batch_size=1, max_queue=args.clients * 2)}
    for name, serve in modes.items():
        r = measure(predictor, serve, body, args)
        print(f"{name:34s} {r['errors']:6d} {r['p50']:8.0f} {r['p99']:8.0f} {r['rps']:7.2f} {r['batch']:15.2f}",
              flush=True)


if __name__ == "__main__":
    main()
