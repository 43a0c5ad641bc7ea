"""Run any detector over a COCO-format val split and score it: the one evaluation loop for every backend.

The backend is a plain function ``detect_fn(list of BGR uint8 HxWx3 arrays) -> list of [N, 6] arrays``
(class_index, score, x1, y1, x2, y2 in original-image pixels), so a torch model, an ONNX / TensorRT session or
sliced inference all plug in the same way. Images are read one batch ahead on a worker thread while the
backend runs.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from ppyoloe_sod.errors import ConfigError, DatasetError, hint
from ppyoloe_sod.eval.metrics import (
    MAX_DETS_500,
    SMALL_OBJECT_BANDS,
    SizeBand,
    as_detection_array,
    evaluate_detections,
    load_gt_dict,
)
from ppyoloe_sod.eval.plots import plot_pr_curves
from ppyoloe_sod.data.coco import ignored_regions_by_image, image_paths
from ppyoloe_sod.data.layout import IMAGES_DIR, annotation_path, find_dataset_root
from ppyoloe_sod.eval.visdrone import evaluate_visdrone
from ppyoloe_sod.fileio import atomic_write_json
from ppyoloe_sod.imageio import read_image

if TYPE_CHECKING:
    from ppyoloe_sod.infer.predictor import DetPredictor
    from ppyoloe_sod.infer.slicing import SliceConfig

DetectFn = Callable[[list[np.ndarray]], Sequence[Any]]
RESULT_NAME = "evaluate_result.json"
PR_CURVES_NAME = "pr_curves.png"
log = logging.getLogger(__name__)


def check_slice_threshold(threshold: Any) -> float:
    """The score threshold of sliced evaluation, a number in [0, 1] (ConfigError naming it otherwise)."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        name = hint(python="threshold", cli="Evaluate.slice.threshold")
        raise ConfigError(f"{name} must be a score in [0, 1], got {threshold!r}.")
    return float(threshold)


def predictor_detect_fn(predictor: "DetPredictor", slice: "SliceConfig | Mapping[str, Any] | None" = None,
                        threshold: float = 0.0) -> DetectFn:
    """The detect function evaluating ``predictor``: its batches as they are, or with ``slice`` (a SliceConfig or
    a dict of its fields) each image detected in slices whose detections scoring at or below ``threshold`` are
    dropped before merging (0 keeps all; below 0.1, greedynmm/nmm merges log a warning but are kept).

    ``evaluate(predictor_detect_fn(predictor, {"size": 640}), ann_file, image_root)`` is sliced mAP in Python.
    """
    from ppyoloe_sod.infer.slicing import as_slice_config, low_threshold_warning

    cfg = as_slice_config(slice)
    if cfg is None:
        return predictor.detect_batch
    threshold = check_slice_threshold(threshold)
    if warning := low_threshold_warning(cfg, threshold):
        log.warning(warning)
    return lambda images: predictor.detect_sliced(images, cfg, threshold)


def run_detector(
    detect_fn: DetectFn, paths: Sequence[Path], batch_size: int = 8, progress: bool = True
) -> tuple[list[np.ndarray], dict[str, float]]:
    """``detect_fn`` over the images at ``paths`` in batches; returns per-image [N, 6] arrays and timings."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    batches = [list(paths[i : i + batch_size]) for i in range(0, len(paths), batch_size)]
    outputs: list[np.ndarray] = []
    detect_s = 0.0
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=1) as pool, tqdm(
        total=len(paths), unit="img", desc="evaluate", disable=not progress
    ) as bar:
        pending = pool.submit(_read_batch, batches[0]) if batches else None
        for i, batch in enumerate(batches):
            images = pending.result()
            pending = pool.submit(_read_batch, batches[i + 1]) if i + 1 < len(batches) else None
            t0 = time.perf_counter()
            result = detect_fn(images)
            dets = [as_detection_array(d, str(p)) for d, p in zip(_check_output(result, batch), batch)]
            detect_s += time.perf_counter() - t0
            outputs.extend(dets)
            bar.update(len(batch))
    total_s = time.perf_counter() - start
    n = max(len(paths), 1)
    timing = {
        "images": len(paths),
        "batch_size": batch_size,
        "detect_ms_per_image": 1000.0 * detect_s / n,
        "total_ms_per_image": 1000.0 * total_s / n,
        "total_s": total_s,
    }
    return outputs, timing


def _read_batch(paths: Sequence[Path]) -> list[np.ndarray]:
    return [read_image(p) for p in paths]


def _check_output(result: Any, batch: Sequence[Path]) -> Sequence[Any]:
    if result is None or not hasattr(result, "__len__") or len(result) != len(batch):
        got = "None" if result is None else f"{len(result)} results" if hasattr(result, "__len__") else type(result)
        raise ValueError(
            f"detect_fn returned {got} for a batch of {len(batch)} images (first: {batch[0]}); it must return "
            f"one [N, 6] array per input image, in order"
        )
    return result


def evaluate(
    detect_fn: DetectFn,
    ann_file: str | os.PathLike,
    image_root: str | os.PathLike,
    batch_size: int = 8,
    output_dir: str | os.PathLike | None = None,
    class_names: Sequence[str] | None = None,
    max_dets: Sequence[int] = MAX_DETS_500,
    size_bands: Sequence[SizeBand] | None = SMALL_OBJECT_BANDS,
    visdrone: bool | None = None,
    plot: bool = True,
    progress: bool = True,
    verbose: bool = True,
    engine: str = "pycocotools",
    settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Detect on every image of ``ann_file`` (paths relative to ``image_root``) and compute the metrics.

    ``visdrone=None`` applies the VisDrone protocol when the json carries ``ignored_regions``. With
    ``output_dir``, writes ``evaluate_result.json`` (done_flag + metrics, atomically) and ``pr_curves.png``.
    Returns that report dict; prints the tables when ``verbose``. ``engine``: see ``metrics.ENGINES``.
    ``settings``: how ``detect_fn`` detects (e.g. its slicing), recorded in the report as they are.
    """
    data, source = load_gt_dict(ann_file)
    root = Path(image_root)
    paths = image_paths(data["images"], root, source)  # DatasetError for any file_name leading out of root
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DatasetError(
            f"{len(missing)} of {len(paths)} images listed in {source} are not under {root}: {missing[:5]}; "
            f"point image_root at the folder the json's file_name values are relative to"
        )
    outputs, timing = run_detector(detect_fn, paths, batch_size, progress)
    detections = {int(im["id"]): d for im, d in zip(data["images"], outputs)}

    coco = evaluate_detections(data, detections, max_dets, size_bands, class_names, engine)
    report: dict[str, Any] = {"done_flag": True, "metrics": coco.as_dict()}
    if visdrone is None:
        visdrone = bool(ignored_regions_by_image(data, source))
    if visdrone:
        vis = evaluate_visdrone(data, detections, class_names=class_names, engine=engine)
        report["visdrone"] = vis.as_dict()
    report["timing"] = timing
    if settings:
        report["settings"] = dict(settings)
    report["dataset"] = {"annotation_file": str(ann_file), "image_root": str(root), "num_images": len(paths)}
    if output_dir is not None:
        out = Path(output_dir)
        if plot:
            plot_pr_curves(coco, out / PR_CURVES_NAME)
            report["pr_curves"] = str(out / PR_CURVES_NAME)
        atomic_write_json(out / RESULT_NAME, report)
    if verbose:
        print(coco.table())
        if visdrone:
            print(vis.table())
        print(
            f"{timing['images']} images, batch {batch_size}: detect {timing['detect_ms_per_image']:.1f} ms/image, "
            f"total {timing['total_ms_per_image']:.1f} ms/image"
        )
    return report


def run_evaluate(cfg: Any) -> dict[str, Any]:
    """``Global.mode=evaluate``: ``Global.model`` with the weights of ``Evaluate.weight_path`` over
    ``<Global.dataset_dir>/annotations/instance_val.json`` (images under ``images/``), report written to
    ``<Global.output>/evaluate_result.json``. Unset weights are what training wrote to
    ``<Global.output>/best_model``; ``official`` means the published weights. ``Evaluate.slice.enable`` detects
    each image in slices (``predictor_detect_fn``), recorded under ``settings`` in the report."""
    from ..infer.predictor import create_model
    from ..infer.slicing import slice_config_from_section

    slice_cfg = slice_config_from_section(cfg.Evaluate.slice, "Evaluate.slice")  # a bad key fails before loading
    threshold = check_slice_threshold(cfg.Evaluate.slice.threshold)
    root = find_dataset_root(cfg.Global.dataset_dir)  # the same rule as check_dataset and training
    ann_file = annotation_path(root, "val")
    if not ann_file.is_file():
        raise DatasetError(f"{ann_file} not found: Global.dataset_dir must hold annotations/instance_val.json and "
                           f"images/ (PaddleX's COCO layout; run -o Global.mode=check_dataset to convert a dataset)")
    weights = _weights_to_evaluate(cfg.Evaluate.weight_path, cfg.Global.output)
    shown = weights or f"the published weights of {cfg.Global.model}"
    predictor = create_model(cfg.Global.model, model_dir=weights, device=cfg.Global.device)
    data, _ = load_gt_dict(ann_file)
    names = [str(c.get("name", c.get("id"))) for c in data.get("categories", [])]
    if len(names) != len(predictor.labels):
        raise DatasetError(f"{ann_file} lists {len(names)} categories but the model ({shown}) predicts "
                           f"{len(predictor.labels)} classes ({', '.join(predictor.labels[:10])}); evaluate with "
                           f"weights trained on this dataset")
    settings = None if slice_cfg is None else {"slice": {**dataclasses.asdict(slice_cfg), "threshold": threshold}}
    print(f"Evaluating {shown} on {ann_file}" + (f", in slices {settings['slice']}" if settings else ""))
    detect_fn = predictor_detect_fn(predictor, slice_cfg, threshold)
    report = evaluate(detect_fn, ann_file, root / IMAGES_DIR, batch_size=cfg.Evaluate.batch_size,
                      output_dir=cfg.Global.output, class_names=names, settings=settings)
    written = [Path(cfg.Global.output) / RESULT_NAME] + ([Path(report["pr_curves"])] if "pr_curves" in report else [])
    print(f"Evaluation results written to {', '.join(map(str, written))}")
    return report


def _weights_to_evaluate(weight_path: str | None, output: str) -> str | None:
    """The weights ``Evaluate.weight_path`` names (None: the published ones); unset, the trained best model."""
    from ..config import OFFICIAL

    if weight_path is not None and weight_path.strip().lower() == OFFICIAL:
        return None
    if weight_path:
        return weight_path
    trained = Path(output) / "best_model"
    if not trained.is_dir():
        raise ConfigError(f"Evaluate.weight_path is not set and {trained} (where training writes its best model "
                          f"for -o Global.output={output}) does not exist; set -o Evaluate.weight_path=FILE (a "
                          f".safetensors or .pdparams file, or a folder holding one), point Global.output at a "
                          f"training run, or use -o Evaluate.weight_path={OFFICIAL} for the published weights")
    return str(trained)
