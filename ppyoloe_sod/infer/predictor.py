"""PaddleX-style inference: ``create_model(name, ...).predict(input)`` yields one DetResult per image.

Steps per batch, as PaddleX runs these models: BGR -> RGB, exact resize to the model's input size (h, w) with
cubic interpolation, float32 / 255, one forward per batch, decode + Paddle-style NMS (``boxes.postprocess``)
with ``scale_factor = (h / orig_h, w / orig_w)``, then the score threshold, clipping to the image and dropping
boxes left empty by the clipping. Sliced inference (``predict(..., slice=...)``, ``infer.slicing``) runs these
steps on each slice, merges, then thresholds and clips the same way; video frames (``infer.video``) are images.
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, NamedTuple

import cv2
import numpy as np
import torch
from tqdm import tqdm

from .. import boxes as box_ops
from ..data.sources import expand_inputs, load_source
from ..device import resolve_device
from ..errors import ConfigError, PPYOLOESODError, hint
from ..export.config import is_export_dir
from ..export.load import open_export
from ..imageio import DEFAULT_MAX_PIXELS, PixelLimit
from ..nn.detector import Detector
from .backends import Backend, hpi_config_for_run_mode, make_backend
from .result import DetResult, distinct_names, printable
from .slicing import (SliceConfig, as_slice_config, low_threshold_warning, slice_config_from_section, slice_grid,
                      sliced_detect)
from .video import (AnnotatedVideos, VideoConfig, as_video_config, is_video_result, iter_frames, probe_video,
                    video_config_from_section)

Threshold = float | Mapping[int, float] | None
DEFAULT_THRESHOLD = 0.5  # PaddleX's draw_threshold for these models; also the per-class default in a dict
log = logging.getLogger(__name__)

PROGRESS_MIN_IMAGES = 10  # show a progress bar from this many inputs on
PROGRESS_MIN_SLICES = 16  # and one over the slices of an image cut into this many
PRINT_MODES = ("summary", "full", "none")  # Predict.print: one line per image | PaddleX's JSON print | nothing


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))


def _score_threshold(value: Any, what: str) -> float:
    """``value`` as a float in [0, 1] (NaN, inf and negatives refused: a score is a probability)."""
    if not _is_number(value):
        raise ConfigError(f"{what} must be a number, got {value!r}.")
    if not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"{what} must be between 0 and 1 (scores are probabilities), got {value!r}.")
    return float(value)


def check_threshold(threshold: Any, num_classes: int | None) -> Threshold:
    """Validate a threshold: None, a number in [0, 1], or {cls_id: number in [0, 1]} with ids in
    0..num_classes-1 (ids not checked when ``num_classes`` is None). ConfigError (a ValueError) naming the
    argument as the user set it (``threshold`` in Python, ``Predict.threshold`` on the command line)."""
    name = hint(python="threshold", cli="Predict.threshold")
    if threshold is None:
        return None
    if not (_is_number(threshold) or isinstance(threshold, Mapping)):
        raise ConfigError(f"{name} must be a float, a {{cls_id: float}} dict or None, got {threshold!r}.")
    if not isinstance(threshold, Mapping):
        return _score_threshold(threshold, name)
    out: dict[int, float] = {}
    for k, v in threshold.items():
        valid_id = not isinstance(k, bool) and isinstance(k, (int, np.integer))
        if not valid_id or (num_classes is not None and not 0 <= int(k) < num_classes):
            classes = f"the model's classes are 0..{num_classes - 1}" if num_classes else "use integer class ids"
            raise ConfigError(f"{name} dict has class id {k!r}, but {classes}.")
        out[int(k)] = _score_threshold(v, f"{name} for class {k}")
    return out


def check_max_pixels(max_pixels: Any) -> int | None:
    """Validate the pixel limit: a positive integer, or None for no limit."""
    if max_pixels is None:
        return None
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) or max_pixels < 1:
        name = hint(python="max_pixels", cli="Predict.max_pixels")
        raise ConfigError(f"{name} must be a positive integer (pixels, width * height) or None for no limit, "
                          f"got {max_pixels!r}.")
    return int(max_pixels)


def preprocess(image_bgr: np.ndarray, input_size: tuple[int, int]) -> tuple[np.ndarray, tuple[float, float]]:
    """BGR uint8 HxWx3 -> (RGB float32 CHW in 0..1 at input_size, scale_factor (sy, sx))."""
    h, w = input_size
    oh, ow = image_bgr.shape[:2]
    rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
    if (oh, ow) != (h, w):
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_CUBIC)
    chw = np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)
    return chw, (h / oh, w / ow)


def filter_and_clip(dets: np.ndarray, threshold: float | Mapping[int, float], width: int, height: int,
                    labels: tuple[str, ...]) -> list[dict[str, Any]]:
    """Rows (class, score, x1, y1, x2, y2) -> PaddleX box dicts: score > threshold (strict), clipped to the image,
    boxes left with no area dropped. Order is kept (NMS order: class ascending, then score descending)."""
    if len(dets) == 0:
        return []
    cls = dets[:, 0].astype(np.int64)
    keep = above_threshold(dets, threshold) & (cls > -1)
    out = []
    for row, c in zip(dets[keep], cls[keep]):
        x1, y1 = max(0.0, float(row[2])), max(0.0, float(row[3]))
        x2, y2 = min(float(width), float(row[4])), min(float(height), float(row[5]))
        if x2 <= x1 or y2 <= y1:
            continue
        out.append({"cls_id": int(c), "label": labels[c] if c < len(labels) else str(int(c)),
                    "score": float(row[1]), "coordinate": [x1, y1, x2, y2]})
    return out


def above_threshold(dets: np.ndarray, threshold: float | Mapping[int, float]) -> np.ndarray:
    """Which rows (class, score, ...) score above their class's threshold (strict; a dict's unlisted classes
    0.5), compared in float32 as PaddleX's numpy does (a Python float threshold is cast to the scores' dtype)."""
    if isinstance(threshold, Mapping):
        thr = np.array([threshold.get(int(c), DEFAULT_THRESHOLD) for c in dets[:, 0]], dtype=np.float32)
    else:
        thr = np.full(len(dets), threshold, dtype=np.float32)
    return dets[:, 1].astype(np.float32) > thr


def lowest_threshold(threshold: float | Mapping[int, float]) -> float:
    """The lowest score a threshold lets through (a dict's listed classes; 0.5 for an empty dict)."""
    if isinstance(threshold, Mapping):
        return min(threshold.values(), default=DEFAULT_THRESHOLD)
    return float(threshold)


class _Item(NamedTuple):
    """One image to predict on, read: where it came from and the name its saved files derive from."""

    input_path: str | None
    page_index: int | None  # PDF page, or video frame index
    save_name: str
    image: np.ndarray


def _read_items(sources: list[Any], names: list[str], limit: PixelLimit, video: VideoConfig) -> Iterator[_Item]:
    """The sources' images one at a time; a video's kept frames streamed, named ``<video stem>_<frame>``."""
    for src, name in zip(sources, names):
        if src.kind != "video":
            yield _Item(src.input_path, src.page_index, name, load_source(src, limit))
            continue
        stem, suffix = Path(name).stem, Path(name).suffix
        for index, frame in iter_frames(src.ref, video):
            yield _Item(src.input_path, index, f"{stem}_{index}{suffix}", frame)


_small_image_noted: set[tuple[int, int, tuple[int, int]]] = set()


def _note_small_image(height: int, width: int, cfg: SliceConfig) -> None:
    """Say once per image size that an image smaller than a slice is predicted whole (SAHI's behaviour)."""
    key = (height, width, cfg.size)
    if (height < cfg.size[0] or width < cfg.size[1]) and key not in _small_image_noted:
        _small_image_noted.add(key)
        log.warning("image %dx%d is smaller than the slice size %dx%d (width x height) along %s: it is one slice "
                    "there (not cut); set a smaller slice size to cut it", width, height, cfg.size[1], cfg.size[0],
                    "both sides" if height < cfg.size[0] and width < cfg.size[1] else "one side")


def _batched(items: Iterable[Any], n: int) -> Iterator[list[Any]]:
    it = iter(items)
    while batch := list(islice(it, n)):
        yield batch


class DetPredictor:
    """A loaded model plus its backend; ``predict`` / ``__call__`` yield DetResult objects."""

    def __init__(self, detector: Detector, backend: Backend, model_name: str, labels: tuple[str, ...],
                 input_size: tuple[int, int], threshold: Threshold = None,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS):
        self.detector = detector
        self.backend = backend
        self.model_name = model_name
        self.labels = tuple(labels)
        self.input_size = tuple(input_size)
        self.threshold = check_threshold(threshold, len(self.labels))
        self.max_pixels = check_max_pixels(max_pixels)

    def detect_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """One forward for a batch of BGR images -> per image NMS rows in original-image pixels (float32)."""
        chws, scales = zip(*(preprocess(im, self.input_size) for im in images))
        batch = torch.from_numpy(np.stack(chws))
        raw = self.backend.run(batch)
        device = raw.cls_logits.device
        points, strides = self.detector.anchors(*self.input_size, device)
        proj = self.detector.proj.to(device)
        scale_factor = torch.tensor(np.asarray(scales, dtype=np.float32), device=device)
        with torch.inference_mode():
            dets = box_ops.postprocess(raw.cls_logits, raw.reg_logits, points, strides, proj, scale_factor,
                                       self.detector.spec.nms)
        return [d.detach().float().cpu().numpy() for d in dets]

    def detect_sliced(self, images: list[np.ndarray], cfg: SliceConfig,
                      threshold: float | Mapping[int, float] = 0.0) -> list[np.ndarray]:
        """Sliced detection (``infer.slicing.sliced_detect``) of each BGR image: rows [N, 6] in image pixels.

        Each slice's rows scoring at or below ``threshold`` are dropped before merging, as SAHI's models drop
        those under their confidence threshold (0: keep all, as evaluation wants). Not clipped (``predict``
        clips). A progress bar runs over the slices of images cut into ``PROGRESS_MIN_SLICES`` or more.
        """
        def detect_above_threshold(crops: list[np.ndarray]) -> list[np.ndarray]:
            return [dets[above_threshold(dets, threshold)] for dets in self.detect_batch(crops)]

        out = []
        for image in images:
            height, width = image.shape[:2]
            _note_small_image(height, width, cfg)
            progress = len(slice_grid(height, width, cfg)) >= PROGRESS_MIN_SLICES
            out.append(sliced_detect(detect_above_threshold, image, cfg, progress=progress,
                                     device=getattr(self.backend, "device", "cpu")))
        return out

    def predict(self, input: Any, batch_size: int = 1, threshold: Threshold = None,
                slice: SliceConfig | Mapping[str, Any] | None = None,
                video: VideoConfig | Mapping[str, Any] | None = None) -> Iterator[DetResult]:
        """Yield one DetResult per image (per page for PDFs, per frame for videos), running ``batch_size`` images
        per forward.

        Threshold priority: this argument > create_model's > 0.5. A float keeps score > threshold; a dict
        {cls_id: threshold} applies per class, 0.5 for classes not listed. Images above ``self.max_pixels``
        (set by create_model) are refused from their header, before decoding. The results of one call have
        distinct ``save_name`` values, so saving them all into one folder overwrites none (see
        ``result.distinct_names``).

        ``slice``: a ``SliceConfig`` or a dict of its fields (``{"size": 640, "overlap": 0.2, "merge": "nms"}``,
        ``{"preset": "ppdet"}``); each image is cut into overlapping slices, ``slice.batch_size`` slices per
        forward, each slice's detections above the threshold are merged, and the merged ones thresholded and
        clipped as unsliced ones: the results have the same form. ``video``: a ``VideoConfig`` or a dict
        (``stride``, ``start``, ``end``) choosing the frames of video files; a frame's ``page_index`` is its index.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}.")
        thr = self.resolve_threshold(threshold)
        slice_cfg, video_cfg = as_slice_config(slice), as_video_config(video)
        if slice_cfg is not None and (warning := low_threshold_warning(slice_cfg, lowest_threshold(thr))):
            log.warning(warning)
        limit = PixelLimit(self.max_pixels, hint(python="create_model(..., max_pixels=N)",
                                                 cli="-o Predict.max_pixels=N"))
        sources = expand_inputs(input)
        videos = {i: probe_video(s.ref, limit) for i, s in enumerate(sources) if s.kind == "video"}
        names = distinct_names([(s.input_path, s.page_index) for s in sources], videos=videos)
        counts = [video_cfg.kept(videos[i].frame_count) if i in videos else 1 for i in range(len(sources))]
        total = None if any(i in videos and not videos[i].frame_count for i in range(len(sources))) else sum(counts)
        bar = tqdm(total=total, desc=f"predict {self.model_name}", unit="img",
                   disable=total is not None and total < PROGRESS_MIN_IMAGES)
        try:
            for chunk in _batched(_read_items(sources, names, limit, video_cfg), batch_size):
                images = [item.image for item in chunk]
                found = self.detect_batch(images) if slice_cfg is None else self.detect_sliced(images, slice_cfg, thr)
                for item, dets in zip(chunk, found):
                    boxes = filter_and_clip(dets, thr, item.image.shape[1], item.image.shape[0], self.labels)
                    bar.update(1)
                    yield DetResult(item.input_path, item.page_index, item.image, boxes, save_name=item.save_name)
        finally:
            bar.close()

    __call__ = predict

    def resolve_threshold(self, threshold: Threshold = None) -> float | dict[int, float]:
        """The threshold a call runs with: ``threshold`` (checked against the model's classes) when set, else
        create_model's, else the model's draw threshold (0.5). predict and the HTTP service both use it."""
        thr = check_threshold(threshold, len(self.labels))
        if thr is None:
            thr = self.threshold
        if thr is None:
            spec = getattr(self.detector, "spec", None)
            thr = float(getattr(spec, "draw_threshold", DEFAULT_THRESHOLD))
        return thr


def create_model(model_name: str, model_dir: str | os.PathLike | None = None, device: str | None = None,
                 threshold: Threshold = None, use_hpip: bool = False,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, hpi_config: Mapping[str, Any] | None = None
                 ) -> DetPredictor:
    """A predictor for a published model, as PaddleX's ``create_model``.

    ``model_dir``: None for the official weights (downloaded once and cached), else a ``.safetensors`` /
    ``.pdparams`` file or a folder holding one (as written by our training), or an export folder (with
    ``model_config.json``; run on its format's backend). ``device``: 'cpu', 'gpu', 'gpu:N' or 'cuda:N';
    default the first GPU when there is one, else the CPU. ``threshold``: a float,
    a {cls_id: float} dict (unlisted classes 0.5) or None (0.5). ``use_hpip``: run on the fastest available
    backend and say which; ``hpi_config``: PaddleX 3.x's ``{"backend": ..., "backend_config": {...}}`` (see
    ``infer.backends``). ``max_pixels`` (ours): image files and URLs larger than this
    (width * height, read from the header before decoding) are refused with an ImageReadError; default
    178,956,970 (PaddleX serving's limit), None for no limit; PDF pages are rendered smaller to fit it.
    """
    from ..models import load_model  # models imports the network; keep `import ppyoloe_sod.infer` light

    check_threshold(threshold, None)
    max_pixels = check_max_pixels(max_pixels)
    dev = resolve_device(device)
    if model_dir is not None and is_export_dir(model_dir):
        network, backend = open_export(model_dir, model_name, dev, hpi_config)
        spec = network.spec
        check_threshold(threshold, len(spec.classes))
        return DetPredictor(network, backend, spec.name, spec.classes, spec.input_size, threshold, max_pixels)
    # BatchNorms and RepVGG branches folded into the convs, as in the inference models PaddleX runs: faster,
    # and float32 results closer to PaddleX's (measured in tests/oracle/test_paddlex_oracle.py).
    detector = load_model(model_name, weights=model_dir, device=dev).fuse()
    spec = detector.spec
    check_threshold(threshold, len(spec.classes))
    backend = make_backend(detector, dev, use_hpip=use_hpip, model_name=spec.name, input_size=spec.input_size,
                           hpi_config=hpi_config)
    return DetPredictor(detector, backend, spec.name, spec.classes, spec.input_size, threshold, max_pixels)


def predictor_args(cfg: Any) -> dict[str, Any]:
    """``create_model``'s keyword arguments for the model a config names (``Global.model``, ``Global.device``,
    ``Predict.model_dir``, ``threshold``, ``use_hpip``, ``max_pixels``; ``Predict.kernel_option.run_mode``
    onnxruntime or openvino turns use_hpip on with that backend as hpi_config). Plain values, so the service's
    worker processes and the Ray and Spark workers build the very predictor ``Global.mode=predict`` builds."""
    p = cfg.Predict
    run_mode_hpi = hpi_config_for_run_mode(p.kernel_option.run_mode)
    return dict(model_name=cfg.Global.model, model_dir=p.model_dir, device=cfg.Global.device,
                threshold=p.threshold, use_hpip=bool(p.use_hpip) or run_mode_hpi is not None,
                max_pixels=p.max_pixels, hpi_config=run_mode_hpi)


def predictor_from_config(cfg: Any) -> DetPredictor:
    """The predictor ``Global.mode=predict`` runs (``create_model`` with ``predictor_args(cfg)``)."""
    args = predictor_args(cfg)
    return create_model(args.pop("model_name"), **args)


def run_predict(cfg: Any) -> int:
    """``Global.mode=predict``: predict ``Predict.input``, save each result's JSON and drawing under
    ``Global.output`` and report as ``Predict.print`` says: ``summary`` (one line per image: boxes found and
    files written), ``full`` (each result's JSON, as PaddleX prints it) or ``none``; then where the results
    are. ``Predict.slice`` slices, ``Predict.video`` picks video frames; with ``Predict.save_video`` the
    drawings of a video's frames go into one ``<stem>_res.mp4`` instead of a picture each. Returns the number
    of results."""
    p = cfg.Predict
    if p.input is None or p.input == "" or p.input == []:
        raise ConfigError("Predict.input is not set; pass -o Predict.input=IMAGE (a file, folder, URL, PDF or "
                          "video).")
    if p.print not in PRINT_MODES:
        raise ConfigError(f"Predict.print is {p.print!r}; use summary (one line per image), full (each result's "
                          f"JSON, as PaddleX prints it) or none.")
    if p.engine != "local":  # Predict.engine=ray: Ray Data actors (ppyoloe_sod.batch), which checks the value
        from ..batch.ray_predict import run_predict_ray

        return run_predict_ray(cfg)
    slice_cfg = slice_config_from_section(p.slice, "Predict.slice")
    video_cfg = video_config_from_section(p.video, "Predict.video")
    model = predictor_from_config(cfg)
    out = Path(cfg.Global.output)
    count, videos_written = 0, set()
    try:
        with AnnotatedVideos(out, video_cfg) as videos:
            for res in model.predict(p.input, batch_size=p.batch_size, slice=slice_cfg, video=video_cfg):
                if p.save_video and is_video_result(res.input_path, res.page_index):
                    drawing = videos.add(res.input_path, res.page_index, res.save_name, drawing_bgr(res))
                    videos_written.add(drawing)
                else:
                    drawing = res.save_to_img(out)
                document = res.save_to_json(out)
                count += 1
                if p.print == "full":
                    res.print()
                elif p.print == "summary":
                    tqdm.write(printable(summary_line(res, drawing, document)))
    except PPYOLOESODError:
        if count:
            log.info("%d result(s) were saved under %s before the error below.", count, out.resolve())
        raise
    saved = "a drawing and a JSON file each" if not videos_written else (
        f"a JSON file each; video frames drawn in {', '.join(sorted(v.name for v in videos_written))}")
    print(f"{count} result(s) saved under {printable(str(out.resolve()))} ({saved})")
    return count


def drawing_bgr(res: DetResult) -> np.ndarray:
    """The result's drawing as a BGR array (what OpenCV writes)."""
    return np.ascontiguousarray(np.asarray(res.img["res"])[:, :, ::-1])


def summary_line(res: DetResult, drawing: Path, document: Path) -> str:
    """One line per result: the input, how many boxes of which class were kept, and the files written."""
    where = res.input_path if res.input_path is not None else f"numpy array ({res.save_name})"
    if res.page_index is not None:
        where += f" {'frame' if is_video_result(res.input_path, res.page_index) else 'page'} {res.page_index}"
    counts = Counter(b["label"] for b in res.boxes)
    detail = f" ({', '.join(f'{label} {n}' for label, n in counts.most_common())})" if counts else ""
    return f"{where}: {len(res.boxes)} box{'es' if len(res.boxes) != 1 else ''}{detail} -> {drawing}, {document.name}"
