"""What bf16 costs in detections: each bf16 CPU path against the fp32 model, per image.

    python benchmarks/bf16_accuracy.py [--images DIR] [--trained STATE_DICT.pt | --train-steps 240] [--compile]

For every image: the fp32 detections scoring above the display threshold (0.5), the share of them a bf16 path
keeps (a bf16 detection of the same class, IoU > 0.9, also above 0.5), and the score drift |bf16 - fp32| over
the fp32 detections above 0.01 matched the same way (mean and max). Two models: SOD-S with random but
calibrated weights (tests/infer/infer_synth.py: BN statistics measured on scenes, class biases set so a few
anchors score above 0.5) on the VisDrone sample images, and SOD-S trained on generated aerial scenes by
docs/make_example_figure.py (its weights from --trained, or trained here with --train-steps: minutes) on
scenes it was not trained on, plus the VisDrone images. Paths: our bf16 weights channels-last eager, the same
under torch.compile with freezing (--compile; a long first call), OpenVINO bf16 on the exported ONNX, and
PyTorch autocast bf16 (TorchBackend's precision='bf16' before the fast path).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "docs"))
sys.path.insert(0, str(ROOT / "tests" / "infer"))

from ppyoloe_sod.boxes import box_iou  # noqa: E402
from ppyoloe_sod.imageio import read_image  # noqa: E402
from ppyoloe_sod.infer.backends import OpenVINOBackend, TorchBackend  # noqa: E402
from ppyoloe_sod.infer.cpu_fast import CpuFastBackend  # noqa: E402
from ppyoloe_sod.infer.predictor import DetPredictor  # noqa: E402
from ppyoloe_sod.models import build_model  # noqa: E402
from ppyoloe_sod.zoo import get_spec  # noqa: E402

DISPLAY = 0.5
MATCH_IOU = 0.9
DEFAULT_IMAGES = ROOT.parent / "shared" / "data" / "visdrone_sample" / "images"


def match(ref: np.ndarray, other: np.ndarray, min_score: float, min_iou: float = MATCH_IOU
          ) -> list[tuple[int, int | None]]:
    """For each row of ``ref`` (class, score, x1, y1, x2, y2): the best-IoU row of ``other`` with its class,
    score > ``min_score`` and IoU > ``min_iou`` (None when there is none)."""
    out: list[tuple[int, int | None]] = []
    cand = np.flatnonzero(other[:, 1] > min_score) if len(other) else np.zeros(0, int)
    ious = (box_iou(torch.from_numpy(ref[:, 2:6]), torch.from_numpy(other[cand, 2:6])).numpy()
            if len(ref) and len(cand) else np.zeros((len(ref), 0)))
    for i, row in enumerate(ref):
        same = (other[cand, 0] == row[0]) & (ious[i] > min_iou)
        j = int(np.argmax(np.where(same, ious[i], -1))) if same.any() else None
        out.append((i, None if j is None else int(cand[j])))
    return out


def compare(ref: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """kept share of ref's detections above DISPLAY, and score drift over ref's detections matched at any
    score (NMS output is above 0.01)."""
    shown = ref[ref[:, 1] > DISPLAY]
    kept = sum(j is not None for _, j in match(shown, other, DISPLAY))
    kept_loose = sum(j is not None for _, j in match(shown, other, DISPLAY, 0.5))
    drift = [abs(float(other[j, 1]) - float(ref[i, 1])) for i, j in match(ref, other, 0.0) if j is not None]
    return {"shown": len(shown), "kept": kept, "kept_loose": kept_loose, "matched": len(drift), "all": len(ref),
            "mean_drift": float(np.mean(drift)) if drift else float("nan"),
            "max_drift": float(np.max(drift)) if drift else float("nan")}


def backends(model: torch.nn.Module, size: tuple[int, int], tmp: Path, with_compile: bool
             ) -> dict[str, Callable[[], object]]:
    """name -> a factory of each bf16 path (factories: a path that fails to build is reported, not fatal)."""
    from ppyoloe_sod.export.onnx import export_onnx

    def openvino() -> OpenVINOBackend:
        onnx = export_onnx(model, tmp / f"m{size[0]}.onnx", size)
        return OpenVINOBackend(onnx, torch.device("cpu"), "bf16")

    paths = {"torch bf16 channels-last eager": lambda: CpuFastBackend(model, "bf16"),
             "torch autocast bf16": lambda: TorchBackend(model, torch.device("cpu"), "bf16"),
             "OpenVINO bf16": openvino}
    if with_compile:
        paths["torch.compile bf16 freezing"] = lambda: CpuFastBackend(model, "bf16", compile=True)
    return paths


def evaluate(title: str, model: torch.nn.Module, images: dict[str, np.ndarray], with_compile: bool) -> None:
    spec = model.spec
    size = tuple(spec.input_size)
    model = model.eval().fuse()

    def detect(backend) -> dict[str, np.ndarray]:
        predictor = DetPredictor(model, backend, spec.name, spec.classes, size)
        return {name: predictor.detect_batch([im])[0] for name, im in images.items()}

    ref = detect(TorchBackend(model, torch.device("cpu")))
    print(f"\n## {title} ({spec.name}, {size[0]}x{size[1]}, {len(spec.classes)} classes)\n")
    print(f"| path | image | fp32 > {DISPLAY} | kept (same class, IoU > {MATCH_IOU}) | mean score drift | "
          f"max score drift | kept at IoU > 0.5 |")
    print("|---|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in backends(model, size, Path(tmp), with_compile).items():
            try:
                got = detect(make())
            except Exception as e:  # report the path that cannot run here, keep measuring the others
                print(f"| {name} | (failed: {type(e).__name__}: {str(e).splitlines()[0][:80]}) | | | | |")
                continue
            for image, dets in got.items():
                c = compare(ref[image], dets)
                share = f"{c['kept']}/{c['shown']} ({100 * c['kept'] / c['shown']:.1f}%)" if c["shown"] else "0/0"
                print(f"| {name} | {image} | {c['shown']} | {share} | {c['mean_drift']:.4f} | "
                      f"{c['max_drift']:.4f} | {c['kept_loose']}/{c['shown']} |", flush=True)


def calibrate_scores(model: torch.nn.Module, images: list[np.ndarray], keep_fraction: float = 0.002
                     ) -> torch.nn.Module:
    """Rescale the class predictors on the evaluation images at the model's size so each level's logits have
    unit spread and about ``keep_fraction`` of its anchors score above 0.5 per class. Calibrated at 320 on
    scenes only, the random head's logits reach hundreds on photographs at 640: every score would be 0 or 1
    and the comparison would say nothing."""
    from ppyoloe_sod.infer.predictor import preprocess

    head = model.yolo_head
    batch = torch.from_numpy(np.stack([preprocess(im, tuple(model.spec.input_size))[0] for im in images]))
    with torch.no_grad():
        logits = model.eval()(batch).cls_logits
        start = 0
        h, w = model.spec.input_size
        for conv, stride in zip(head.pred_cls, model.arch.strides):
            n = (h // stride) * (w // stride)
            level = logits[:, start:start + n].reshape(-1, logits.shape[-1])
            spread = level.std(dim=0).clamp_min(1e-6)
            cut = torch.quantile(level, 1 - keep_fraction, dim=0)
            conv.weight.div_(spread[:, None, None, None])
            conv.bias.sub_(cut).div_(spread)
            start += n
    return model


def trained_model(path: Path | None, steps: int) -> torch.nn.Module:
    """docs/make_example_figure.py's SOD-S trained on generated scenes: from ``path`` or trained now."""
    import make_example_figure as fig

    if path is None:
        return fig.train_predictor(steps).detector
    spec = dataclasses.replace(get_spec("PP-YOLOE_plus_SOD-S").with_classes(fig.CLASSES),
                               input_size=(fig.SIZE, fig.SIZE))
    model = build_model(spec)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    ap.add_argument("--trained", type=Path, help="state dict of make_example_figure's trained model (torch.save)")
    ap.add_argument("--train-steps", type=int, default=0, help="train that model here first (240: the figure's)")
    ap.add_argument("--scenes", type=int, default=3, help="generated test scenes for the trained model")
    ap.add_argument("--compile", action="store_true", help="also torch.compile with freezing (slow first call)")
    args = ap.parse_args()
    torch.manual_seed(0)
    visdrone = {p.name: read_image(p) for p in sorted(args.images.glob("*.jpg"))}
    from infer_synth import randomize_detector

    random_model = calibrate_scores(randomize_detector(build_model("PP-YOLOE_plus_SOD-S")), list(visdrone.values()))
    evaluate("random but calibrated weights, VisDrone sample", random_model, visdrone, args.compile)
    if args.trained or args.train_steps:
        import make_example_figure as fig

        model = trained_model(args.trained, args.train_steps)
        scenes = {f"scene {k}": fig.scene(np.random.default_rng(1000 + k), 25)[0] for k in range(args.scenes)}
        evaluate("trained on generated scenes, unseen scenes + VisDrone", model, {**scenes, **visdrone},
                 args.compile)


if __name__ == "__main__":
    main()
