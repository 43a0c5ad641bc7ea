"""Sliced inference for small objects: cut the image into overlapping tiles, detect on each, merge.

Two tools' behaviour can be reproduced (``SliceConfig.preset``), both with the slice grid of SAHI's
``get_slice_bboxes`` (PaddleDetection's ``--slice_infer`` slices with SAHI too):

=================  =====================================  ===========================================
                   ``sahi`` (``get_sliced_prediction``)    ``ppdet`` (``tools/infer.py --slice_infer``)
=================  =====================================  ===========================================
size / overlap     640 / 0.2 (SAHI has no default size)    640 / 0.25
merge              greedynmm | nmm | nms (| concat, ours)  nms | concat (its help lists nmm, but 2.6.0
                                                          raises for it)
match_metric       ios (or iou)                            ios (or iou)
match_threshold    0.5                                     0.6
standard_pred      True: a full-image pass is merged too   False
slice boxes        clipped to [0, image size] in slice     shifted as they are
                   coordinates, empty ones dropped
=================  =====================================  ===========================================

SAHI silently switches to ``nms``/``iou`` when the model's confidence threshold is below 0.1; we do not: merging
low-score boxes (``greedynmm``/``nmm``) grows boxes, so pick ``merge="nms", match_metric="iou"`` yourself for a
low threshold (evaluation), or filter the slices' detections before merging (see ``sliced_detect``).
An image smaller than a slice is one slice (the whole image), as in SAHI; the full-image pass is then skipped.
No detection in any slice gives an empty result (ppdet 2.6's slice_predict fails in np.concatenate there).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..errors import ConfigError
from .merge import METRICS, PPDET_METHODS, SAHI_METHODS, ppdet_merge, sahi_merge

Box = tuple[int, int, int, int]
Detections = np.ndarray | torch.Tensor
DetectBatch = Callable[[list[np.ndarray]], Sequence[Detections]]

PRESETS: dict[str, dict[str, Any]] = {
    "sahi": dict(size=(640, 640), overlap=(0.2, 0.2), merge="greedynmm", match_metric="ios", match_threshold=0.5,
                 class_agnostic=False, standard_pred=True),
    "ppdet": dict(size=(640, 640), overlap=(0.25, 0.25), merge="nms", match_metric="ios", match_threshold=0.6,
                  class_agnostic=False, standard_pred=False),
}
MERGE_METHODS = {"sahi": SAHI_METHODS, "ppdet": PPDET_METHODS}
# Slices per forward when SliceConfig.batch_size is None. On a CPU a batch of 8 slices of 640x640 outgrows the
# caches: convolutions run ~1.4x and SiLU ~2x slower per slice than one at a time, while one at a time loses on
# per-forward work (max pooling). SOD-S, 2 threads, 8 slices through the network: 1.9 s in batches of 2, 2.3 s in
# batches of 8 or one by one (benchmarks/sliced.py, 1920x1080: 2.2 s, 2.4 s, 2.7 s). GPUs gain from big batches.
CPU_BATCH_SIZE = 2
ACCELERATOR_BATCH_SIZE = 8
LOW_THRESHOLD = 0.1  # SAHI's LOW_MODEL_CONFIDENCE: below it, SAHI switches greedynmm/nmm to nms/iou
GROWING_MERGES = ("greedynmm", "nmm")


def _pair(value: Any, name: str, kind: type, check: Callable[[Any], bool], what: str) -> tuple[Any, Any]:
    """One value or a (height, width) pair -> a (height, width) tuple of ``kind``, each passing ``check``."""
    items = list(value) if isinstance(value, (tuple, list)) else [value, value]
    ok = len(items) == 2 and all(
        not isinstance(v, bool) and isinstance(v, (int, float, np.number) if kind is float else (int, np.integer))
        and check(v) for v in items)
    if not ok:
        raise ConfigError(f"slice {name} must be {what}, or a (height, width) pair of them; got {value!r}.")
    return kind(items[0]), kind(items[1])


def _choice(value: Any, name: str, allowed: Sequence[str], context: str = "") -> str:
    text = str(value).strip().lower().replace("_", "") if isinstance(value, str) else None
    if text not in allowed:
        raise ConfigError(f"slice {name} {value!r} is not known{context}; use one of {', '.join(allowed)}.")
    return text


@dataclass(frozen=True)
class SliceConfig:
    """How to slice and merge. Fields left None take the preset's value (see the module docstring).

    ``size`` and ``overlap`` are one value or a (height, width) pair; names are case-insensitive ("GREEDYNMM",
    "IOS" as SAHI writes them work). ``batch_size`` slices go through the network per forward (None: the
    device's default, ``default_batch_size``).
    """

    preset: str = "sahi"
    size: int | tuple[int, int] | None = None
    overlap: float | tuple[float, float] | None = None
    merge: str | None = None
    match_metric: str | None = None
    match_threshold: float | None = None
    class_agnostic: bool | None = None
    standard_pred: bool | None = None
    batch_size: int | None = None

    def __post_init__(self) -> None:
        preset = _choice(self.preset, "preset", tuple(PRESETS))
        values = {k: (PRESETS[preset][k] if getattr(self, k) is None else getattr(self, k)) for k in PRESETS[preset]}
        values["preset"] = preset
        values["size"] = _pair(values["size"], "size", int, lambda v: v > 0, "a positive integer (pixels)")
        values["overlap"] = _pair(values["overlap"], "overlap", float, lambda v: 0 <= v < 1,
                                  "a ratio in [0, 1)")
        values["merge"] = _choice(values["merge"], "merge", MERGE_METHODS[preset], f" for preset {preset!r}")
        values["match_metric"] = _choice(values["match_metric"], "match_metric", METRICS)
        thr = values["match_threshold"]
        if isinstance(thr, bool) or not isinstance(thr, (int, float)) or not 0 < thr <= 1:
            raise ConfigError(f"slice match_threshold must be a number in (0, 1], got {thr!r}.")
        values["match_threshold"] = float(thr)
        for name in ("class_agnostic", "standard_pred"):
            if not isinstance(values[name], bool):
                raise ConfigError(f"slice {name} must be true or false, got {values[name]!r}.")
        if self.batch_size is not None and (isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int)
                                            or self.batch_size < 1):
            raise ConfigError(f"slice batch_size must be a positive integer (or null: the device's default), got "
                              f"{self.batch_size!r}.")
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> "SliceConfig":
        """Build from a dict of field names (a YAML section or CLI overrides); unknown keys are a ConfigError."""
        return options_dataclass(cls, options, "slice")


def options_dataclass(cls: type, options: Mapping[str, Any], what: str) -> Any:
    """``cls(**options)`` for a dataclass of options; unknown keys are a ConfigError naming ``what`` and the known."""
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"unknown {what} option(s) {', '.join(map(repr, unknown))}; known: {', '.join(known)}.")
    return cls(**dict(options))


def as_slice_config(value: "SliceConfig | Mapping[str, Any] | None") -> "SliceConfig | None":
    """``predict``'s ``slice`` argument as a SliceConfig (None: no slicing)."""
    if value is None or isinstance(value, SliceConfig):
        return value
    if isinstance(value, Mapping):
        return SliceConfig.from_mapping(value)
    raise ConfigError(f"slice must be a SliceConfig, a dict such as {{'size': 640, 'overlap': 0.2}}, or None; "
                      f"got {value!r}.")


def slice_config_from_section(section: Any, where: str) -> "SliceConfig | None":
    """A config file's slice section (a dataclass with ``enable`` and SliceConfig's fields, e.g. Predict.slice) as
    a SliceConfig, None when not enabled; a bad value is a ConfigError naming the section (``where``)."""
    if not section.enable:
        return None
    names = {f.name for f in fields(SliceConfig)}
    options = {k: v for k, v in dataclasses.asdict(section).items() if k in names}
    try:
        return SliceConfig.from_mapping(options)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def low_threshold_warning(cfg: SliceConfig, lowest_threshold: float) -> str | None:
    """Why merging may grow boxes, when ``cfg`` merges by absorbing (greedynmm, nmm) detections scoring down to
    ``lowest_threshold`` < 0.1 (SAHI switches to nms/iou there; we keep what was asked and say so)."""
    if cfg.merge not in GROWING_MERGES or lowest_threshold >= LOW_THRESHOLD:
        return None
    return (f"slice merge {cfg.merge!r} with a score threshold of {lowest_threshold:g} (under {LOW_THRESHOLD}): "
            f"merging many low-score boxes grows boxes; SAHI would switch to merge 'nms' with match_metric 'iou' "
            f"here, which you can set yourself. Kept as asked.")


def default_batch_size(device: torch.device | str) -> int:
    """Slices per forward on ``device`` when the config leaves it to us: small on a CPU (see CPU_BATCH_SIZE)."""
    return CPU_BATCH_SIZE if torch.device(device).type == "cpu" else ACCELERATOR_BATCH_SIZE


def _axis_starts(length: int, size: int, overlap: float) -> list[int]:
    """Slice starts along one axis: a step of size - int(overlap * size), the last slice moved back inside."""
    step = size - int(overlap * size)
    starts = []
    start = 0
    while start + size < length:
        starts.append(start)
        start += step
    starts.append(max(0, length - size))
    return starts


def slice_grid(image_h: int, image_w: int, cfg: SliceConfig) -> list[Box]:
    """The slices (x1, y1, x2, y2) of an image, rows then columns: SAHI's ``get_slice_bboxes``.

    Edge slices are full-size (shifted back inside the image); an image smaller than a slice along an axis gets
    one slice spanning that axis.
    """
    if not (isinstance(image_h, (int, np.integer)) and isinstance(image_w, (int, np.integer))
            and image_h > 0 and image_w > 0):
        raise ValueError(f"image size must be positive integers, got {image_h!r} x {image_w!r}.")
    (size_h, size_w), (over_h, over_w) = cfg.size, cfg.overlap
    xs = _axis_starts(int(image_w), size_w, over_w)
    ys = _axis_starts(int(image_h), size_h, over_h)
    return [(x, y, min(x + size_w, int(image_w)), min(y + size_h, int(image_h))) for y in ys for x in xs]


def _as_rows(dets: Detections) -> torch.Tensor:
    rows = torch.as_tensor(dets)
    if rows.ndim != 2 or rows.shape[1] != 6:
        raise ValueError(f"detections must be rows (class, score, x1, y1, x2, y2) of shape [N, 6], got "
                         f"{tuple(rows.shape)}.")
    return rows


def merge_detections(dets: Detections, cfg: SliceConfig) -> Detections:
    """Merge rows [N, 6] (class, score, x1, y1, x2, y2) in image pixels as ``cfg`` says; on the rows' device.
    Returns the same kind (numpy array or tensor) and dtype as given."""
    rows = _as_rows(dets)
    merge = sahi_merge if cfg.preset == "sahi" else ppdet_merge
    out = merge(rows, cfg.merge, cfg.match_metric, cfg.match_threshold, cfg.class_agnostic)
    return out.cpu().numpy() if isinstance(dets, np.ndarray) else out


def _to_image(dets: Detections, box: Box, image_h: int, image_w: int, preset: str) -> torch.Tensor:
    """One slice's rows, in slice pixels -> image pixels, as the preset's tool does it.

    SAHI (its model wrappers and ObjectPrediction): coordinates clipped to [0, image size] while still in slice
    pixels, rows left empty dropped, then shifted in float64 (SAHI shifts Python floats). ppdet: shifted in
    float32 as they are.
    """
    rows = _as_rows(dets)
    shift = torch.tensor([box[0], box[1], box[0], box[1]], device=rows.device)
    if preset == "ppdet":
        return torch.cat([rows[:, :2], rows[:, 2:] + shift.to(rows.dtype)], dim=1)
    rows = rows.double()
    limit = torch.tensor([image_w, image_h, image_w, image_h], dtype=rows.dtype, device=rows.device)
    xyxy = torch.minimum(rows[:, 2:].clamp(min=0), limit)
    keep = (xyxy[:, 0] < xyxy[:, 2]) & (xyxy[:, 1] < xyxy[:, 3])
    return torch.cat([rows[keep, :2], xyxy[keep] + shift.to(rows.dtype)], dim=1)


def sliced_detect(detect_batch: DetectBatch, image_bgr: np.ndarray, cfg: SliceConfig,
                  progress: bool = False, device: torch.device | str = "cpu") -> Detections:
    """Detect on the slices of one image and merge: rows [M, 6] in image pixels, float32.

    ``detect_batch(list of BGR images) -> list of rows [N, 6]`` in each image's pixels (``DetPredictor.detect_batch``,
    or a wrapper dropping rows below a score threshold first, as SAHI's model does before merging). The slices,
    then the full image when ``cfg.standard_pred`` and there is more than one slice (SAHI), go through it
    ``cfg.batch_size`` at a time (None: ``default_batch_size(device)``, ``device`` being where the network runs).
    The result is a numpy array, or a tensor on their device if it returns tensors.
    """
    if not isinstance(image_bgr, np.ndarray) or image_bgr.ndim != 3:
        raise ValueError(f"image_bgr must be an HxWx3 numpy array, got {type(image_bgr).__name__} "
                         f"{getattr(image_bgr, 'shape', '')}.")
    image_h, image_w = image_bgr.shape[:2]
    boxes = slice_grid(image_h, image_w, cfg)
    if cfg.standard_pred and len(boxes) > 1:
        boxes.append((0, 0, image_w, image_h))
    parts: list[torch.Tensor] = []
    returned_numpy = True
    batch_size = cfg.batch_size or default_batch_size(device)
    starts = range(0, len(boxes), batch_size)
    for start in tqdm(starts, desc="slices", unit="batch", disable=not progress):
        chunk = boxes[start:start + batch_size]
        crops = [np.ascontiguousarray(image_bgr[y1:y2, x1:x2]) for x1, y1, x2, y2 in chunk]
        results = detect_batch(crops)
        if len(results) != len(crops):
            raise ValueError(f"detect_batch returned {len(results)} results for {len(crops)} images.")
        for box, dets in zip(chunk, results):
            returned_numpy = returned_numpy and isinstance(dets, np.ndarray)
            parts.append(_to_image(dets, box, image_h, image_w, cfg.preset))
    device = parts[0].device
    merged = merge_detections(torch.cat([p.to(device) for p in parts]), cfg).float()
    return merged.cpu().numpy() if returned_numpy else merged
