"""Sliced inference speed: our slices in batches (the device's default size, and 8), one at a time, and SAHI's
get_sliced_prediction driving the same predictor (tests/infer/test_sahi_wrapper.py's DetectionModel wrapper, SAHI's
default batch of 1), in one run on the same backend and threads; the merge alone against SAHI's postprocess on many
boxes; then video throughput (predict over a generated clip, frames per second).

    python benchmarks/sliced.py [--runs 3] [--threads N] [--input-size 640] [--slice 640] [--batch N]
                                [--images 1920x1080,4000x3000] [--merge-boxes 2000,24000]
                                [--video-frames 60] [--video-size 1280x720] [--device cpu]

The network is SOD-S with random weights (calibrated to give a detector's number of boxes: see
tests/infer/infer_synth.py), fused as create_model runs it. Its time does not depend on the weights' values; the
merge's does, through the number of boxes (printed). Images are generated street-like scenes of 1920x1080 and
4000x3000. All ways merge with SAHI's preset (greedynmm, ios 0.5, a full-image pass too) at predict's default
score threshold, 0.5. Printed: median seconds per image (the ways timed in turn, run after run, so that a load
changing over time weighs on each alike), SAHI's time over each of ours (above 1: ours is faster), whether
one-by-one slicing gave exactly SAHI's boxes (clipped to the image, as predict clips), and the boxes of the
default-batch run against SAHI's (batches of another size can move a float's last bit and, rarely, a merge
decision). The merge rows: one class of slice-like boxes spread over a 4000x3000 image
(tests/infer/test_merge_pair_search.py's ``spread_rows``), our sahi_merge against SAHI's GreedyNMMPostprocess
(numpy backend, which switches to its STRtree path from 2000 boxes), same result checked.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "infer"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from infer_synth import MODEL, randomize_detector, scene  # noqa: E402
from ppyoloe_sod.device import resolve_device  # noqa: E402
from ppyoloe_sod.infer.backends import TorchBackend  # noqa: E402
from ppyoloe_sod.infer.predictor import DetPredictor  # noqa: E402
from ppyoloe_sod.infer.merge import sahi_merge  # noqa: E402
from ppyoloe_sod.infer.slicing import SliceConfig, default_batch_size, slice_grid  # noqa: E402
from ppyoloe_sod.models import build_model  # noqa: E402
from ppyoloe_sod.zoo import get_spec  # noqa: E402
from timing import interleaved  # noqa: E402

THRESHOLD = 0.5  # predict's default


def make_predictor(input_size: int, device: torch.device) -> DetPredictor:
    spec = get_spec(MODEL)
    torch.manual_seed(0)  # build_model's initialisation: the same network, so the same boxes, every run
    detector = randomize_detector(build_model(MODEL)).fuse().to(device)
    return DetPredictor(detector, TorchBackend(detector, device), spec.name, spec.classes, (input_size, input_size),
                        threshold=THRESHOLD)


def sahi_runner(predictor: DetPredictor, cfg: SliceConfig):
    """get_sliced_prediction on our predictor, SAHI's default batch of 1, numpy merge backend."""
    from sahi.postprocess import backends as sahi_backends
    from sahi.predict import get_sliced_prediction
    from test_sahi_wrapper import PPYOLOESODDetectionModel

    sahi_backends.set_postprocess_backend("numpy")
    model = PPYOLOESODDetectionModel(model=predictor, confidence_threshold=THRESHOLD, device="cpu")

    def run(image: np.ndarray) -> list:
        return get_sliced_prediction(
            image, model, slice_height=cfg.size[0], slice_width=cfg.size[1], overlap_height_ratio=cfg.overlap[0],
            overlap_width_ratio=cfg.overlap[1], perform_standard_pred=True, postprocess_type="GREEDYNMM",
            postprocess_match_metric="IOS", postprocess_match_threshold=0.5, verbose=0).object_prediction_list
    return run


def rows(ours: list[dict]) -> np.ndarray:
    out = np.array([[b["cls_id"], b["score"], *b["coordinate"]] for b in ours], np.float32).reshape(-1, 6)
    return out[np.lexsort(out.T[::-1])]


def sahi_rows(theirs: list, height: int, width: int) -> np.ndarray:
    """SAHI's boxes clipped to the image, those left empty dropped, as predict does with its results."""
    out = np.array([[p.category.id, p.score.value, *p.bbox.to_xyxy()] for p in theirs], np.float32).reshape(-1, 6)
    out[:, 2:] = np.clip(out[:, 2:], 0, np.array([width, height, width, height], np.float32))
    out = out[(out[:, 4] > out[:, 2]) & (out[:, 5] > out[:, 3])]
    return out[np.lexsort(out.T[::-1])]


def bench_slicing(predictor: DetPredictor, args: argparse.Namespace) -> None:
    default = args.batch or default_batch_size(predictor.backend.device)
    configs = {f"batch {b}": SliceConfig(size=args.slice, batch_size=b) for b in dict.fromkeys((default, 8, 1))}
    sahi = sahi_runner(predictor, configs[f"batch {default}"])
    print(f"{'image':10s} {'forwards':>8s} " + " ".join(f"{name + ' s':>10s}" for name in configs) +
          f" {'SAHI s':>8s} " + " ".join(f"{'SAHI/' + name:>12s}" for name in configs) +
          f"  batch 1 = SAHI  boxes batch {default} / SAHI")
    for name in args.images.split(","):
        w, h = (int(v) for v in name.split("x"))
        image = scene(h, w, seed=1)
        ways = {way: (lambda c=cfg: next(iter(predictor.predict(image, slice=c))).boxes)
                for way, cfg in configs.items()}
        t, out = interleaved({**ways, "sahi": lambda: sahi(image)}, args.runs)
        expected = sahi_rows(out["sahi"], h, w)
        exact = np.array_equal(rows(out["batch 1"]), expected)
        n = len(slice_grid(h, w, configs["batch 1"])) + 1
        print(f"{name:10s} {n:8d} " + " ".join(f"{t[way]:10.2f}" for way in configs) + f" {t['sahi']:8.2f} " +
              " ".join(f"{t['sahi'] / t[way]:12.2f}" for way in configs) +
              f"  {str(exact):14s}  {len(out[f'batch {default}'])} / {len(expected)}")


def bench_merge(args: argparse.Namespace) -> None:
    from sahi.postprocess import backends as sahi_backends
    from sahi.postprocess.combine import GreedyNMMPostprocess
    from test_merge_pair_search import spread_rows
    from test_slice_merge_parity import from_sahi, to_sahi

    sahi_backends.set_postprocess_backend("numpy")
    post = GreedyNMMPostprocess(match_threshold=0.5, match_metric="IOS", class_agnostic=False)
    for boxes in (int(v) for v in args.merge_boxes.split(",")):
        dets = spread_rows(boxes)
        fresh = [to_sahi(dets) for _ in range(args.runs + 1)]  # SAHI's merge changes the predictions it merges
        t, out = interleaved({"ours": lambda: sahi_merge(torch.from_numpy(dets), "greedynmm", "ios", 0.5),
                              "sahi": lambda: from_sahi(post(fresh.pop()))}, args.runs)
        same = np.array_equal(out["ours"].numpy().astype(np.float64), out["sahi"])
        print(f"merge greedynmm, {boxes} boxes in one class: ours {t['ours']:.3f} s, SAHI's postprocess "
              f"{t['sahi']:.3f} s (SAHI/ours {t['sahi'] / t['ours']:.1f}), same result: {same}")


def bench_video(predictor: DetPredictor, args: argparse.Namespace) -> None:
    width, height = (int(v) for v in args.video_size.split("x"))
    with tempfile.TemporaryDirectory() as folder:
        clip = str(Path(folder) / "clip.mp4")
        writer = cv2.VideoWriter(clip, cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (width, height))
        background = scene(height, width, seed=2)
        for i in range(args.video_frames):
            writer.write(np.roll(background, 4 * i, axis=1))  # a panning view
        writer.release()
        for batch in dict.fromkeys((1, args.batch or default_batch_size(predictor.backend.device))):
            start = time.perf_counter()
            frames = sum(1 for _ in predictor.predict(clip, batch_size=batch))
            seconds = time.perf_counter() - start
            print(f"video {width}x{height}, {frames} frames, batch {batch}: {frames / seconds:.2f} frames/s "
                  f"(decode, predict at {predictor.input_size[0]}, threshold, results)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--input-size", type=int, default=640, help="network input (the model's is 640)")
    ap.add_argument("--slice", type=int, default=640)
    ap.add_argument("--batch", type=int, default=None,
                    help="slices (and video frames) per forward, batched (default: the device's, as predict)")
    ap.add_argument("--images", default="1920x1080,4000x3000", help="generated images to slice, WxH,...")
    ap.add_argument("--merge-boxes", default="2000,24000", help="boxes per merge timing, comma-separated")
    ap.add_argument("--video-frames", type=int, default=60)
    ap.add_argument("--video-size", default="1280x720")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    predictor = make_predictor(args.input_size, resolve_device(args.device))
    print(f"SOD-S (random weights, fused) at {args.input_size}, {args.device}, {torch.get_num_threads()} threads, "
          f"slices {args.slice} overlap 0.2, median of {args.runs} runs")
    bench_slicing(predictor, args)
    bench_merge(args)
    bench_video(predictor, args)


if __name__ == "__main__":
    main()
