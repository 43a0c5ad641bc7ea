"""GPU check and latency of the inference paths, end to end with NMS, on one CUDA GPU.

    python benchmarks/gpu_check.py --out DIR [--model PP-YOLOE_plus_SOD-S] [--size 640] [--batches 1,8]
                                   [--runs 30] [--compile] [--device cuda:0]

It makes its own weights (random, with BatchNorm statistics measured on generated aerial-like
scenes and class biases set so a few hundred candidates pass the 0.01 score threshold, as with a trained
detector) and its own input scenes; it needs no download and no TensorRT (the training half takes its tiny
datasets from tests/train/train_synth.py). Without a GPU it
prints "no GPU: nothing measured", writes that to DIR and exits 0. Runs on torch 2.4 or later.

Checks (each with its tolerance; exit code 1 if one fails):
  - CUDA float32 (TF32 off) against the CPU on the same weights and input: the largest score and DFL-logit
    differences within 4x what float32 rounding alone costs on the CPU (CPU float32 against CPU float64, the
    yardstick; at least 1e-4 / 1e-5 of the logits' spread). A fixed bound did not fit: on an H200 S at 640 was
    2e-5 off, L 1.3e-3 and largesize-L at 1920 2.4e-3, while in float64 CUDA and CPU agreed to 1e-6 (S) and
    1.4e-5 (L), what remains there being the 1-ulp (6e-8) CUDA/CPU difference of the float32 sin/cos position
    embedding carried through the transformer;
  - the fixed-shape GPU NMS (``infer.gpu_fast.static_postprocess``) against ``boxes.postprocess``: identical rows;
  - no host synchronisation inside it (``torch.cuda.set_sync_debug_mode('error')``) and CUDA graph capture of
    network + decode + NMS (a capture fails on any synchronisation);
  - fp16 / bf16 scores against float32: reported, not judged.
Latency rows, batch 1 and 8: median milliseconds per batch from a float32 batch already on the GPU to the
detections on the host (decode and NMS included): eager float32 (what ``create_model(device='gpu')`` runs),
eager fp16 / bf16, channels-last, CUDA graphs for the network, CUDA graphs for network + decode + NMS (the fast
path; how many images needed the exact NMS is reported), torch.compile(mode='max-autotune') with ``--compile``
(minutes of compilation), and ONNX Runtime's CUDA provider when installed. Writes gpu_check.json and
gpu_check.md to DIR, rewritten after every row, so a run cut short still leaves what it measured; a row or check
that raises is recorded with its error and the script goes on. ``--device cpu`` runs the script itself on a CPU
(eager rows only) to check it.

Training (``benchmarks/gpu_train_check.py``, skipped with ``--no-train``): AMP bf16 / fp16 + channels-last steps
against float32, train step times, two DDP ranks on the GPU with gloo, and the whole training loop on the GPU.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_train_check import failure, guarded  # noqa: E402
from timing import timed  # noqa: E402

NO_GPU = "no GPU: nothing measured"
ROUNDING_FACTOR = 4  # CUDA vs CPU float32 may differ by this many times CPU float32 vs CPU float64
SCORE_FLOOR = 1e-4  # ... and at least this much (max |sigmoid difference|)
REG_FLOOR = 1e-5  # ... (max |DFL logit difference| / their spread)


# ------------------------------------------------------------------------------ synthetic weights and input

def scene(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """An RGB uint8 aerial-like picture: textured ground with a few dozen small vehicles and people."""
    import cv2

    img = np.full((h, w, 3), (95, 100, 90), np.uint8)
    img = cv2.add(img, rng.integers(0, 40, (h, w, 3), dtype=np.uint8))
    for _ in range(max(4, h * w // 8000)):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        bw, bh = int(rng.integers(4, 30)), int(rng.integers(4, 20))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            cv2.rectangle(img, (x, y), (x + bw, y + bh), color, -1)
        else:
            cv2.circle(img, (x, y), max(2, bh // 3), color, -1)
    return img


def scenes(n: int, size: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.stack([scene(size, size, rng).transpose(2, 0, 1) for _ in range(n)])).float() / 255


def calibrated_detector(model_name: str, device: torch.device, size: int, seed: int = 0,
                        keep_fraction: float = 0.002) -> Any:
    """A fused detector with random weights that behaves like a trained one: BN statistics measured on scenes,
    random prediction convs, class biases set so ``keep_fraction`` of each level's anchors score above 0.5."""
    from ppyoloe_sod.models import build_model

    torch.manual_seed(seed)
    model = build_model(model_name).to(device)
    head = model.yolo_head
    g = torch.Generator().manual_seed(seed)
    calib = scenes(4, size, seed + 100).to(device)
    with torch.no_grad():
        for conv in [*head.pred_cls, *head.pred_reg]:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.02)
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=g) * 0.5)
        bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over the calibration batch
        model.eval()
        for bn in bns:
            bn.train()
        model(calib)
        model.eval()
        logits = model(calib).cls_logits
        start = 0
        for conv, stride in zip(head.pred_cls, model.arch.strides):
            n = (size // stride) ** 2
            level = logits[:, start:start + n].reshape(-1, logits.shape[-1]).float().cpu()
            conv.bias.sub_(torch.quantile(level, 1 - keep_fraction, dim=0).to(device))
            start += n
    return model.fuse()


# ------------------------------------------------------------------------------------------- paths

def host(dets: list[torch.Tensor]) -> list[torch.Tensor]:
    return [d.cpu() for d in dets]


def eager_path(detector: Any, device: torch.device, precision: str, channels_last: bool) -> Callable:
    """Network (FastDetector without graphs) + ``boxes.postprocess`` on the GPU + copy to the host."""
    from ppyoloe_sod.infer.gpu_fast import FastDetector, FastOptions

    fast = FastDetector(detector, device, FastOptions(precision, channels_last, cuda_graphs=False))
    return _with_postprocess(fast.run, fast, detector)


def _with_postprocess(network: Callable, fast: Any, detector: Any) -> Callable:
    from ppyoloe_sod import boxes as B

    def run(x: torch.Tensor, sf: torch.Tensor) -> list[torch.Tensor]:
        raw = network(x)
        points, strides = fast.anchors(x.shape[2], x.shape[3], raw.cls_logits.device)
        with torch.inference_mode():
            return host(B.postprocess(raw.cls_logits, raw.reg_logits, points, strides, fast.proj, sf,
                                      detector.spec.nms))
    return run


def graphed_network_path(detector: Any, device: torch.device, precision: str) -> Callable:
    from ppyoloe_sod.infer.gpu_fast import FastDetector, FastOptions

    fast = FastDetector(detector, device, FastOptions(precision, True, cuda_graphs=True))
    return _with_postprocess(fast.run, fast, detector)


def fast_path(detector: Any, device: torch.device, precision: str, compile: bool = False) -> tuple[Callable, Any]:
    from ppyoloe_sod.infer.gpu_fast import FastDetector, FastOptions

    fast = FastDetector(detector, device, FastOptions(precision, True, cuda_graphs=not compile, compile=compile))
    return fast.detect, fast


def onnxruntime_path(detector: Any, device: torch.device, size: int, tmp: Path) -> Callable | None:
    """ONNX Runtime's CUDA provider on the exported graph (host in, host out, as OnnxRuntimeBackend runs it)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return None
    from ppyoloe_sod import boxes as B
    from ppyoloe_sod.export.onnx import export_onnx

    path = export_onnx(detector, tmp / "model.onnx", (size, size))
    session = ort.InferenceSession(str(path), providers=[("CUDAExecutionProvider",
                                                          {"device_id": device.index or 0}),
                                                         "CPUExecutionProvider"])
    if session.get_providers()[0] != "CUDAExecutionProvider":
        return None
    points, strides = detector.anchors(size, size, device)
    proj = detector.proj.float().to(device)

    def run(x: torch.Tensor, sf: torch.Tensor) -> list[torch.Tensor]:
        cls_logits, reg_logits = session.run(None, {"images": x.cpu().numpy()})
        with torch.inference_mode():
            return host(B.postprocess(torch.from_numpy(cls_logits).to(device), torch.from_numpy(reg_logits).to(device),
                                      points, strides, proj, sf, detector.spec.nms))
    return run


# ------------------------------------------------------------------------------------------- checks

def check_cuda_vs_cpu(detector: Any, device: torch.device, x: torch.Tensor) -> dict[str, Any]:
    cpu_model = copy.deepcopy(detector).cpu()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    with torch.no_grad():
        ref = cpu_model(x.cpu())
        got = detector(x.to(device))
        exact = cpu_model.double()(x.cpu().double())

    def score_gap(a: Any, b: Any) -> float:
        return float((a.cls_logits.double().sigmoid().cpu() - b.cls_logits.double().sigmoid().cpu()).abs().max())

    spread = float(ref.reg_logits.max() - ref.reg_logits.min())

    def reg_gap(a: Any, b: Any) -> float:
        return float((a.reg_logits.double().cpu() - b.reg_logits.double().cpu()).abs().max()) / max(spread, 1e-12)

    score_tol = max(SCORE_FLOOR, ROUNDING_FACTOR * score_gap(ref, exact))
    reg_tol = max(REG_FLOOR, ROUNDING_FACTOR * reg_gap(ref, exact))
    score_diff, reg_diff = score_gap(got, ref), reg_gap(got, ref)
    return {"name": f"CUDA float32 (TF32 off) vs CPU float32, same weights, {tuple(x.shape)}",
            "max_score_diff": score_diff, "max_reg_diff_over_spread": reg_diff,
            "cpu_float32_vs_float64": {"score": score_gap(ref, exact), "reg_over_spread": reg_gap(ref, exact)},
            "tolerance": f"scores {score_tol:.3g}, DFL logits {reg_tol:.3g} of their spread ({ROUNDING_FACTOR}x "
                         "the CPU's own float32 rounding)",
            "passed": score_diff <= score_tol and reg_diff <= reg_tol}


def check_static_nms(detector: Any, device: torch.device, x: torch.Tensor, sf: torch.Tensor) -> dict[str, Any]:
    from ppyoloe_sod import boxes as B
    from ppyoloe_sod.infer.gpu_fast import finish, static_postprocess

    with torch.no_grad():
        raw = detector(x.to(device))
    points, strides = detector.anchors(x.shape[2], x.shape[3], device)
    proj, nms = detector.proj.float().to(device), detector.spec.nms
    expected = host(B.postprocess(raw.cls_logits, raw.reg_logits, points, strides, proj, sf, nms))
    sync_free = True
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.set_sync_debug_mode("error")
    try:
        static = static_postprocess(raw.cls_logits, raw.reg_logits, points, strides, proj, sf, nms)
    except RuntimeError:
        sync_free = False
        static = static_postprocess(raw.cls_logits, raw.reg_logits, points, strides, proj, sf, nms)
    finally:
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")
    got = finish(static, nms)
    same = len(got) == len(expected) and all(torch.equal(a, b) for a, b in zip(got, expected))
    return {"name": "fixed-shape NMS on the device vs boxes.postprocess", "identical_rows": same,
            "exact_without_fallback": int(static.exact.sum()), "images": len(got),
            "detections": [len(d) for d in expected], "no_host_sync": sync_free,
            "passed": same and sync_free}


def precision_drift(detector: Any, device: torch.device, x: torch.Tensor) -> dict[str, Any]:
    from ppyoloe_sod.infer.gpu_fast import FastDetector, FastOptions

    ref = FastDetector(detector, device, FastOptions("fp32", False, cuda_graphs=False)).run(x.to(device))
    out: dict[str, Any] = {"name": "scores in reduced precision vs float32 (reported, not judged)"}
    for precision in ("fp16", "bf16"):
        try:
            raw = FastDetector(detector, device, FastOptions(precision, True, cuda_graphs=False)).run(x.to(device))
        except Exception as e:  # noqa: BLE001 - a precision this device cannot run is reported
            out[precision] = f"skipped: {e}"
            continue
        out[precision] = float((raw.cls_logits.sigmoid() - ref.cls_logits.sigmoid()).abs().max())
    return out


# ------------------------------------------------------------------------------------------- report

def measure(name: str, fn: Callable, x: torch.Tensor, sf: torch.Tensor, runs: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    fn(x, sf)  # first call: graph capture / compilation / cuDNN autotune
    first = time.perf_counter() - t0
    median, _ = timed(lambda: fn(x, sf), runs, warmup=2)
    batch = x.shape[0]
    return {"path": name, "batch": batch, "ms_per_batch": median * 1000, "ms_per_image": median * 1000 / batch,
            "first_call_s": first}


def write_report(out: Path, report: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    lines = [f"# GPU check: {report.get('device_name', '')}", "", report.get("status", ""), ""]
    if report.get("setup"):
        lines += [f"- {k}: {v}" for k, v in report["setup"].items()] + [""]
    for check in report.get("checks", []):
        lines.append(f"- {'PASS' if check.get('passed', True) else 'FAIL'} {check['name']}: "
                     + ", ".join(f"{k}={v}" for k, v in check.items() if k not in ("name", "passed", "traceback")))
    lines += markdown_table(("path", "batch", "ms / batch", "ms / image", "first call s", "note"),
                            report.get("rows", []), lambda r: [
                                r["path"], r["batch"], f"{r['ms_per_batch']:.2f}", f"{r['ms_per_image']:.2f}",
                                f"{r['first_call_s']:.1f}", r.get("note", "")])
    lines += markdown_table(("training mode", "batch", "size", "ms / step", "images / s", "peak GiB"),
                            report.get("train_rows", []), lambda r: [
                                r["mode"], r["batch"], r["size"], f"{r['step_ms']:.1f}", f"{r['images_per_s']:.1f}",
                                "" if r.get("max_memory_gib") is None else f"{r['max_memory_gib']:.1f}"])
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")


def markdown_table(header: tuple[str, ...], rows: list[dict[str, Any]], cells: Callable[[dict], list[Any]]
                   ) -> list[str]:
    """A markdown table of ``rows`` (none: no lines); a skipped row keeps its name and batch and says why."""
    if not rows:
        return []
    lines = ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        row = cells(r) if "skipped" not in r else [
            r.get("path", r.get("mode")), r.get("batch", ""), *[""] * (len(header) - 3), f"skipped: {r['skipped']}"]
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return lines


def guarded_row(name: str, batch: int, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A latency row, or the row's error: one failing path must not cost the report the other rows."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001
        error = failure(e)
        return {"path": name, "batch": batch, "skipped": f"failed: {error['error']}", "traceback": error["traceback"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--model", default="PP-YOLOE_plus_SOD-S")
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--compile", action="store_true", help="add torch.compile(mode='max-autotune') rows (slow)")
    ap.add_argument("--no-train", action="store_true", help="skip the training half (gpu_train_check.py)")
    ap.add_argument("--train-size", type=int, default=640)
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--train-steps", type=int, default=8)
    ap.add_argument("--device", default="cuda:0", help="cuda:N, or cpu to check the script itself")
    args = ap.parse_args()

    device = torch.device(args.device)
    report: dict[str, Any] = {"torch": torch.__version__, "python": platform.python_version(),
                              "date": time.strftime("%Y-%m-%d")}
    if device.type == "cuda" and not torch.cuda.is_available():
        report["status"] = NO_GPU
        write_report(args.out, report)
        print(NO_GPU)
        return 0
    batches = [int(b) for b in args.batches.split(",")]
    gpu = device.type == "cuda"
    report["device_name"] = torch.cuda.get_device_name(device) if gpu else platform.processor()
    report["status"] = (f"{args.model} at {args.size}x{args.size}, random calibrated weights, median of "
                        f"{args.runs} runs; from a float32 batch on the device to detections on the host")
    if gpu:
        torch.backends.cudnn.benchmark = True
    report["checks"] = checks = []
    report["rows"] = rows = []
    detector = calibrated_detector(args.model, device, args.size)
    x_check = scenes(2, args.size, seed=7)
    sf_check = torch.ones(2, 2, device=device)
    if gpu:
        checks.append(guarded("CUDA vs CPU", lambda: check_cuda_vs_cpu(detector, device, x_check)))
    checks.append(guarded("static NMS", lambda: check_static_nms(detector, device, x_check, sf_check)))
    checks.append(guarded("precision drift", lambda: precision_drift(detector, device, x_check)))
    write_report(args.out, report)
    torch.backends.cuda.matmul.allow_tf32 = True  # latency rows: PyTorch's defaults for float32 convolutions
    torch.backends.cudnn.allow_tf32 = True
    with tempfile.TemporaryDirectory() as tmp:
        try:
            ort_fn = onnxruntime_path(detector, device, args.size, Path(tmp)) if gpu else None
        except Exception as e:  # noqa: BLE001
            ort_fn, ort_error = None, f"failed: {failure(e)['error']}"
        else:
            ort_error = "onnxruntime with CUDAExecutionProvider not installed" if gpu else "no GPU"
        for batch in batches:
            x = scenes(batch, args.size, seed=batch).to(device)
            sf = torch.ones(batch, 2, device=device)
            candidates: list[tuple[str, Callable[[], Any]]] = [
                ("eager fp32 (create_model's GPU path)", lambda: eager_path(detector, device, "fp32", False)),
                ("eager fp16", lambda: eager_path(detector, device, "fp16", False)),
                ("eager bf16", lambda: eager_path(detector, device, "bf16", False)),
                ("eager fp16 channels-last", lambda: eager_path(detector, device, "fp16", True)),
                ("CUDA graph network fp16 channels-last", lambda: graphed_network_path(detector, device, "fp16")),
            ]
            for name, make in candidates:
                if not gpu and ("fp16" in name or "graph" in name):
                    rows.append({"path": name, "batch": batch, "skipped": "needs a GPU"})
                    continue
                rows.append(guarded_row(name, batch, lambda: measure(name, make(), x, sf, args.runs)))
                write_report(args.out, report)
            fast_rows = [("fast path fp32: graph of network + decode + NMS", "fp32", False),
                         ("fast path fp16: graph of network + decode + NMS", "fp16", False),
                         ("fast path bf16: graph of network + decode + NMS", "bf16", False)]
            if args.compile:
                fast_rows.append(("torch.compile max-autotune fp16, network + decode + NMS", "fp16", True))
            for name, precision, compiled in fast_rows:
                if not gpu and (precision == "fp16" or compiled):
                    rows.append({"path": name, "batch": batch, "skipped": "needs a GPU"})
                    continue

                def fast_row() -> dict[str, Any]:
                    fn, fast = fast_path(detector, device, precision, compiled)
                    row = measure(name, fn, x, sf, args.runs)
                    row["note"] = (f"exact NMS without fallback on {int(fast.detect_static(x, sf).exact.sum())}"
                                   f"/{batch}")
                    return row
                rows.append(guarded_row(name, batch, fast_row))
                write_report(args.out, report)
            if ort_fn is None:
                rows.append({"path": "ONNX Runtime CUDA provider fp32", "batch": batch, "skipped": ort_error})
            else:
                rows.append(guarded_row("ONNX Runtime CUDA provider fp32", batch,
                                        lambda: measure("ONNX Runtime CUDA provider fp32", ort_fn, x, sf, args.runs)))
            write_report(args.out, report)
    if not args.no_train:
        from gpu_train_check import training_report

        del detector
        if gpu:
            torch.cuda.empty_cache()
        train_checks, report["train_rows"] = training_report(args.model, device, args.train_size,
                                                             args.train_batch, args.train_steps)
        checks.extend(train_checks)
    write_report(args.out, report)
    print((args.out / "gpu_check.md").read_text())
    return 0 if all(c.get("passed", True) for c in report["checks"]) else 1


if __name__ == "__main__":
    sys.exit(main())
