"""CPU latency of every path that runs these models, same weights, image and threads, in one run.

    python benchmarks/latency.py                       # SOD-S at 640 (quick)
    python benchmarks/latency.py --models all          # + SOD-L at 640 and SOD-largesize-L at 1920
    python benchmarks/latency.py --compile             # + torch.compile with freezing (minutes to compile)
    python benchmarks/latency.py --omp-wait-policy     # once per OMP_WAIT_POLICY (unset, PASSIVE), subprocesses
    python benchmarks/latency.py --profile             # torch.profiler: top ops of fused fp32 and bf16 eager

Paths: ppdet dygraph and Paddle Inference on the exported graph (what PaddleX runs; its graph holds NMS, so it
has an end-to-end time only), PaddleX's own `create_model(...).predict` on that exported folder and the same
image written to a PNG, run in PaddleX's virtual environment (PPYOLOE_SOD_PADDLEX_PYTHON, else the newest
~/.cache/ppyoloe_sod/venv-paddlex-*; skipped without one) after the interleaved rounds, end to end from the file, our eager model plain and fused, our CPU fast path (infer/cpu_fast.py: fused,
channels-last, fp32 or bf16 weights, eager or compiled), ONNX Runtime fp32, OpenVINO fp32 and bf16 as our
backends set them, and OpenVINO with no precision hint (its default: bf16 on AMX / AVX512-BF16 CPUs), the
stand-in for PaddleX's CPU high-performance mode. Paths are timed interleaved (one call of each per round) so
load on a shared machine falls on all of them alike; each cell is the median. "net": the 1x3xHxW tensor to raw
head outputs; "e2e": plus decode and multi-class NMS. Ratios are to Paddle Inference (and to OpenVINO default
for bf16 rows). The floor is the network's GFLOP (convs and matmuls, counted by torch) over the measured peak
of this CPU (--peak-fp32 / --peak-bf16, GFLOP/s on all threads); "floor %" is floor / net.
Needs the Paddle oracle installed (scripts/test.sh installs it).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RUNS = {"S640": ("PP-YOLOE_plus_SOD-S", 640), "L640": ("PP-YOLOE_plus_SOD-L", 640),
        "largeL1920": ("PP-YOLOE_plus_SOD-largesize-L", 1920)}


@dataclass
class Path_:
    name: str
    precision: str  # fp32 / bf16: which peak its floor uses
    net: Callable[[], object] | None
    e2e: Callable[[], object]


def network_gflop(model: torch.nn.Module, x: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() / 1e9


def interleaved(paths: list[Path_], runs: int) -> dict[tuple[str, str], float]:
    """Median ms of each path's net and e2e calls, one call of each per round after two warm-up rounds."""
    times: dict[tuple[str, str], list[float]] = {}
    for round_ in range(runs + 2):
        for p in paths:
            for kind, fn in (("net", p.net), ("e2e", p.e2e)):
                if fn is None:
                    continue
                t0 = time.perf_counter()
                fn()
                if round_ >= 2:
                    times.setdefault((p.name, kind), []).append((time.perf_counter() - t0) * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


def paddle_paths(model_name: str, size: tuple[int, int], image: np.ndarray, threads: int, tmp: Path,
                 weights: Path) -> list[Path_]:
    import paddle

    from tests.oracle.ppdet_reference import build, export_inference
    from ppyoloe_sod.zoo import get_spec

    spec = get_spec(model_name)
    # A trained detector leaves a few hundred candidates above 0.01; a random head all of them: NMS would dominate.
    pd_model = build(model_name, eval_size=size, cls_bias=-6.0, cls_std=0.03)
    paddle.save(pd_model.state_dict(), str(weights))
    sf = np.ones((1, 2), dtype="float32")
    x_pd, sf_pd = paddle.to_tensor(image), paddle.to_tensor(sf)

    def dygraph_net():
        with paddle.no_grad():
            return pd_model.yolo_head(pd_model.neck(list(pd_model.backbone({"image": x_pd}))))

    def dygraph_e2e():
        with paddle.no_grad():
            pd_model.yolo_head.post_process(dygraph_net(), sf_pd)

    out = [Path_("ppdet dygraph", "fp32", dygraph_net, dygraph_e2e)]
    try:  # Paddle Inference on the exported graph (what PaddleX runs); oneDNN fails on this graph
        from paddle import inference as pi
        export_inference(pd_model, tmp / "pdx", spec.name, size, list(spec.classes))
        cfg = pi.Config(str(tmp / "pdx" / "inference.json"), str(tmp / "pdx" / "inference.pdiparams"))
        cfg.disable_gpu()
        cfg.disable_mkldnn()
        cfg.set_cpu_math_library_num_threads(threads)
        predictor = pi.create_predictor(cfg)
        predictor.get_input_handle("image").copy_from_cpu((image * 255).astype("float32"))
        predictor.get_input_handle("scale_factor").copy_from_cpu(sf)
        out.insert(0, Path_("Paddle Inference (exported)", "fp32", None, predictor.run))
    except Exception as e:  # optional row: report why it is missing
        print(f"(Paddle Inference row skipped: {type(e).__name__}: {e})")
    return out


PADDLEX_DRIVER = """
import json, statistics, sys, time
from paddlex import create_model
args = json.loads(sys.argv[1])
model = create_model(model_name=args["model_name"], model_dir=args["model_dir"], device="cpu",
                     engine_config={"run_mode": "paddle", "cpu_threads": args["threads"]})
times = []
for round_ in range(args["runs"] + 2):
    t0 = time.perf_counter()
    list(model.predict(args["image"], threshold=0.5))
    if round_ >= 2:
        times.append((time.perf_counter() - t0) * 1000)
print("PADDLEX_MS", statistics.median(times))
"""


def paddlex_python() -> Path | None:
    """PaddleX's python: PPYOLOE_SOD_PADDLEX_PYTHON, else the newest venv scripts/test.sh built, else None."""
    named = os.environ.get("PPYOLOE_SOD_PADDLEX_PYTHON")
    if named:
        return Path(named)
    built = sorted((Path.home() / ".cache" / "ppyoloe_sod").glob("venv-paddlex-*/bin/python"),
                   key=lambda python: python.lstat().st_mtime)
    return built[-1] if built else None


def paddlex_predict_ms(model_name: str, model_dir: Path, image: np.ndarray, threads: int, runs: int,
                       tmp: Path) -> float | None:
    """Median ms of PaddleX's predict on the exported folder, from a PNG of the same image, in its own venv."""
    import json

    import cv2

    python = paddlex_python()
    if python is None or not python.is_file():
        print(f"(PaddleX predict row skipped: no PaddleX venv ({python or 'none found'}); scripts/test.sh builds it)")
        return None
    png = tmp / "image.png"
    cv2.imwrite(str(png), np.ascontiguousarray(np.round(image[0].transpose(1, 2, 0)[:, :, ::-1] * 255)
                                              .astype(np.uint8)))
    args = {"model_name": model_name, "model_dir": str(model_dir), "image": str(png), "threads": threads,
            "runs": runs}
    done = subprocess.run([str(python), "-c", PADDLEX_DRIVER, json.dumps(args)], capture_output=True, text=True,
                          check=False)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("PADDLEX_MS ")), None)
    if line is None:
        print(f"(PaddleX predict row skipped: exit {done.returncode}: {done.stderr.strip()[-500:]})")
        return None
    return float(line.split()[1])


def openvino_default(onnx: Path, threads: int):
    """OpenVINO with no precision hint: what it picks itself (bf16 where the CPU has it)."""
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(onnx)), "CPU",
                                  {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads})
    request = compiled.create_infer_request()
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    return request, getattr(hint, "get_type_name", lambda: str(hint))()


def our_paths(ours, x: torch.Tensor, size: tuple[int, int], threads: int, tmp: Path, compile_: bool
              ) -> list[Path_]:
    import copy

    from ppyoloe_sod import boxes as B
    from ppyoloe_sod.export.onnx import export_onnx
    from ppyoloe_sod.infer.backends import OnnxRuntimeBackend, OpenVINOBackend, openvino_available
    from ppyoloe_sod.infer.cpu_fast import CpuFastBackend, cpu_bf16_support
    from ppyoloe_sod.nn.detector import RawOutput

    points, strides = ours.anchors(*size)
    sf = torch.ones(1, 2)
    proj = ours.proj

    def with_nms(net: Callable[[], RawOutput]) -> Callable[[], object]:
        def e2e():
            raw = net()
            with torch.inference_mode():
                B.postprocess(raw.cls_logits.float(), raw.reg_logits.float(), points, strides, proj, sf)
        return e2e

    def path(name: str, precision: str, net: Callable[[], RawOutput]) -> Path_:
        return Path_(name, precision, net, with_nms(net))

    def eager(model):
        def net():
            with torch.inference_mode():
                return model(x)
        return net

    fused = copy.deepcopy(ours).fuse()
    out = [path("ours eager fp32", "fp32", eager(ours)), path("ours fused fp32", "fp32", eager(fused))]
    fast = {"fp32": "fp32"}
    if cpu_bf16_support()[0]:
        fast["bf16"] = "bf16"
    for precision in fast:
        backend = CpuFastBackend(fused, precision)
        out.append(path(f"ours fused {precision} channels-last", precision, lambda b=backend: b.run(x)))
        if compile_:
            compiled = CpuFastBackend(fused, precision, compile=True)
            t0 = time.perf_counter()
            compiled.run(x)
            print(f"(torch.compile {precision}: first call {time.perf_counter() - t0:.0f} s, "
                  f"{'compiled' if compiled.compile else 'fell back to eager'})")
            out.append(path(f"ours torch.compile {precision} freezing", precision, lambda b=compiled: b.run(x)))
    onnx = export_onnx(fused, tmp / "m.onnx", size)
    try:
        ort = OnnxRuntimeBackend(onnx, torch.device("cpu"), threads)
        out.append(path("ours ONNX Runtime fp32", "fp32", lambda: ort.run(x)))
    except Exception as e:  # optional row: report why it is missing
        print(f"(ONNX Runtime row skipped: {type(e).__name__}: {e})")
    if openvino_available():
        for precision in fast:
            ov = OpenVINOBackend(onnx, torch.device("cpu"), precision, threads)
            out.append(path(f"ours OpenVINO {precision}", precision, lambda b=ov: b.run(x)))
        request, hint = openvino_default(onnx, threads)
        image = x.numpy()

        def ov_default() -> RawOutput:
            res = {o.get_any_name(): v for o, v in request.infer({"images": image}).items()}
            return RawOutput(torch.from_numpy(res["cls_logits"]), torch.from_numpy(res["reg_logits"]))

        out.append(path(f"OpenVINO default ({hint}; PaddleX HP stand-in)", "bf16" if hint == "bf16" else "fp32",
                        ov_default))
    return out


# Op families for the profile's summary: aten op name prefixes -> family (first match wins).
OP_FAMILIES = (("conv", ("aten::mkldnn_convolution", "aten::convolution", "aten::_convolution", "aten::conv")),
               ("linear/matmul", ("aten::addmm", "aten::mm", "aten::bmm", "aten::linear", "aten::matmul",
                                  "aten::baddbmm", "aten::_scaled_dot_product", "aten::_softmax")),
               ("SiLU", ("aten::silu",)), ("max-pool", ("aten::max_pool", "aten::mkldnn_max_pool")),
               ("cat", ("aten::cat",)),
               ("copies/reorders", ("aten::copy_", "aten::clone", "aten::contiguous", "aten::to_mkldnn",
                                    "aten::_to_copy", "aten::to_dense", "aten::empty_like")))


def op_family(name: str) -> str:
    return next((family for family, prefixes in OP_FAMILIES if name.startswith(prefixes)), "other")


def profile_paths(ours, x: torch.Tensor, runs: int, top: int = 12) -> None:
    """torch.profiler over `runs` calls of our fused fp32 eager and bf16 channels-last eager: top ops by self CPU
    time and the time per op family, in ms per call."""
    import copy

    from torch.profiler import ProfilerActivity, profile

    from ppyoloe_sod.infer.cpu_fast import CpuFastBackend, cpu_bf16_support

    fused = copy.deepcopy(ours).fuse()

    def fused_fp32():
        with torch.inference_mode():
            return fused(x)

    calls = {"ours fused fp32 (eager, NCHW)": fused_fp32}
    if cpu_bf16_support()[0]:
        backend = CpuFastBackend(fused, "bf16")
        calls["ours fused bf16 channels-last (eager)"] = lambda: backend.run(x)
    for name, call in calls.items():
        for _ in range(2):  # warm-up: oneDNN primitive creation and weight reorders
            call()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            for _ in range(runs):
                call()
            wall = (time.perf_counter() - t0) * 1000 / runs
        events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
        total = sum(e.self_cpu_time_total for e in events) / 1000 / runs
        print(f"\n{name}: {wall:.1f} ms per call under the profiler ({total:.1f} ms self CPU summed), {runs} calls")
        print("| op | calls per run | self ms per run | share |\n|---|---:|---:|---:|")
        for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]:
            ms_ = e.self_cpu_time_total / 1000 / runs
            print(f"| {e.key} | {e.count // runs} | {ms_:.1f} | {100 * ms_ / total:.0f}% |")
        families: dict[str, float] = {}
        for e in events:
            family = op_family(e.key)
            families[family] = families.get(family, 0.0) + e.self_cpu_time_total / 1000 / runs
        print("| family | self ms per run | share |\n|---|---:|---:|")
        for family, ms_ in sorted(families.items(), key=lambda kv: -kv[1]):
            print(f"| {family} | {ms_:.1f} | {100 * ms_ / total:.0f}% |", flush=True)


def run_one(key: str, runs: int, compile_: bool, peaks: dict[str, float], profile_: bool = False) -> None:
    from ppyoloe_sod.models import load_model

    model_name, side = RUNS[key]
    size = (side, side)
    threads = torch.get_num_threads()
    image = np.random.default_rng(0).uniform(0, 1, (1, 3, *size)).astype("float32")
    x = torch.from_numpy(image)
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        paths = paddle_paths(model_name, size, image, threads, tmp, tmp / "w.pdparams")
        ours = load_model(model_name, tmp / "w.pdparams").eval()
        gflop = network_gflop(ours, x)
        if profile_:
            print(f"\n{model_name}, 1x3x{side}x{side}, {gflop:.2f} GFLOP, torch threads {threads}, OMP_WAIT_POLICY "
                  f"{os.environ.get('OMP_WAIT_POLICY', '(unset)')}")
            profile_paths(ours, x, runs)
            return
        paths += our_paths(ours, x, size, threads, tmp, compile_)
        ms = interleaved(paths, runs)
        if (tmp / "pdx" / "inference.yml").is_file():
            paddlex_ms = paddlex_predict_ms(model_name, tmp / "pdx", image, threads, runs, tmp)
            if paddlex_ms is not None:
                name = "PaddleX predict (from PNG, own process, after the rounds)"
                paths.insert(1, Path_(name, "fp32", None, lambda: None))
                ms[(name, "e2e")] = paddlex_ms
    with torch.no_grad():
        candidates = int((ours(x).cls_logits.sigmoid() > 0.01).sum())
    base = ms.get(("Paddle Inference (exported)", "e2e"))
    ov_default = next((ms[(p.name, "net")] for p in paths if p.name.startswith("OpenVINO default")), None)
    print(f"\n{model_name}, 1x3x{side}x{side}, {gflop:.2f} GFLOP, CPU torch threads {threads}, OMP_NUM_THREADS "
          f"{os.environ.get('OMP_NUM_THREADS')}, OMP_WAIT_POLICY {os.environ.get('OMP_WAIT_POLICY', '(unset)')}, "
          f"median of {runs} interleaved rounds, {candidates} candidates above 0.01")
    print(f"floor: fp32 {gflop / peaks['fp32'] * 1000:.1f} ms ({peaks['fp32']:.0f} GFLOP/s), bf16 "
          f"{gflop / peaks['bf16'] * 1000:.1f} ms ({peaks['bf16']:.0f} GFLOP/s)\n")
    print("| path | net ms | e2e ms | e2e / Paddle Inference | net / OpenVINO default | floor % (net) |")
    print("|---|---:|---:|---:|---:|---:|")
    for p in paths:
        net, e2e = ms.get((p.name, "net")), ms[(p.name, "e2e")]
        floor = gflop / peaks[p.precision] * 1000
        cells = [f"{net:.1f}" if net else "-", f"{e2e:.1f}", f"{e2e / base:.2f}" if base else "-",
                 f"{net / ov_default:.2f}" if net and ov_default else "-", f"{100 * floor / net:.0f}%" if net else "-"]
        print(f"| {p.name} | " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="S640", help=f"comma list of {', '.join(RUNS)}, or all")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--compile", action="store_true", help="add torch.compile with freezing (slow first call)")
    ap.add_argument("--peak-fp32", type=float, default=326.0, help="GFLOP/s, fp32 convs, all threads")
    ap.add_argument("--peak-bf16", type=float, default=1662.0, help="GFLOP/s, bf16 (AMX) convs, all threads")
    ap.add_argument("--omp-wait-policy", action="store_true",
                    help="run everything once per OMP_WAIT_POLICY (unset, PASSIVE), each in its own process")
    ap.add_argument("--profile", action="store_true",
                    help="instead of the table: torch.profiler top ops of our fused fp32 and bf16 eager paths")
    args = ap.parse_args()
    if args.omp_wait_policy:  # read once at OpenMP start: a process per setting
        argv = [a for a in sys.argv[1:] if a != "--omp-wait-policy"]
        for policy in (None, "PASSIVE"):
            env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
            if policy:
                env["OMP_WAIT_POLICY"] = policy
            subprocess.run([sys.executable, __file__, *argv], env=env, check=False)
        return
    # Paddle sets OMP_NUM_THREADS=1 when imported unless it is set: give every framework the same threads.
    os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
    keys = list(RUNS) if args.models == "all" else args.models.split(",")
    for key in keys:
        if key not in RUNS:
            sys.exit(f"--models: {key!r} is not one of {', '.join(RUNS)} (or all)")
        run_one(key, args.runs, args.compile, {"fp32": args.peak_fp32, "bf16": args.peak_bf16}, args.profile)


if __name__ == "__main__":
    main()
