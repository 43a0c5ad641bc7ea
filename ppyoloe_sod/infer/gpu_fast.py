"""The GPU fast path: fp16 / bf16, channels-last, CUDA graphs (or torch.compile), decode and NMS on the GPU.

``FastDetector`` runs a (fused) network in reduced precision and channels-last memory format, and captures
network + decode + NMS into one CUDA graph per input shape (batch, h, w), so a batch costs one graph replay and
one copy of the detections to the host. The NMS inside the graph (``static_postprocess``) has fixed shapes and
no host synchronisation: the ``max_candidates`` best candidates of each image (in Paddle's order), their
pairwise suppressions as one matrix, and greedy NMS resolved by a fixed number of vectorised rounds. It gives
the rows ``boxes.multiclass_nms`` gives, bit for bit, whenever that is decidable from those candidates (they
hold every candidate, or ``keep_top_k`` of them survive, and the rounds settle every verdict that matters);
for the rare image where it is not, ``finish`` says so and runs the exact NMS on that image instead. So the
detections never depend on the fast path; only the network's precision changes them.

``create_fast_model(...)`` is ``create_model(...)`` with this path; ``benchmarks/gpu_check.py`` measures it.
On the CPU (tests, machines without a GPU) CUDA graphs and torch.compile are switched off with a logged note.
"""
from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass, replace
from typing import Any, Callable, NamedTuple

import numpy as np
import torch

from .. import boxes as box_ops
from ..boxes import _paddle_areas, _paddle_suppresses  # Paddle's overlap rule, shared with multiclass_nms
from ..errors import ConfigError, hint
from ..imageio import DEFAULT_MAX_PIXELS
from ..nn.detector import Detector, RawOutput
from ..zoo import NMSSpec
from .predictor import DetPredictor, Threshold, create_model, preprocess

log = logging.getLogger(__name__)

FAST_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class FastOptions:
    """What the fast path does. ``max_candidates``: candidates per image the graph's NMS considers (more: exact
    more often, a larger K x K suppression matrix); ``nms_rounds``: vectorised greedy-NMS rounds in the graph."""

    precision: str = "fp16"
    channels_last: bool = True
    cuda_graphs: bool = True
    compile: bool = False  # torch.compile(mode="max-autotune") instead of our CUDA graphs (long first call)
    max_candidates: int = 2048
    nms_rounds: int = 32


def resolve_options(options: FastOptions, device: torch.device) -> tuple[FastOptions, list[str]]:
    """Options as they can run on ``device``, and a note for each one switched off (CPU: no CUDA graphs, no
    compile). A precision the device cannot run is an error, never silently changed."""
    if options.precision not in FAST_DTYPES:
        raise ConfigError(f"precision {options.precision!r}: the fast path runs {', '.join(FAST_DTYPES)}")
    if options.max_candidates < 1 or options.nms_rounds < 1:
        raise ConfigError(f"max_candidates ({options.max_candidates}) and nms_rounds ({options.nms_rounds}) must "
                          f"be positive")
    notes = []
    if device.type != "cuda":
        if options.precision == "fp16":
            raise ConfigError(f"precision 'fp16' needs a GPU (CPUs run fp16 slowly, if at all), and the device is "
                              f"{device}; use 'bf16' or 'fp32' on the CPU, or "
                              f"{hint(python='device=' + repr('gpu'), cli='-o Global.device=gpu')}")
        if options.cuda_graphs:
            notes.append(f"CUDA graphs need a GPU; on {device} the fast path runs eagerly")
        if options.compile:
            notes.append(f"torch.compile(mode='max-autotune') is for the GPU here; on {device} it is skipped")
        options = replace(options, cuda_graphs=False, compile=False)
    if options.compile and options.cuda_graphs:
        options = replace(options, cuda_graphs=False)  # max-autotune captures CUDA graphs itself
    return options, notes


# ------------------------------------------------------------------------------------------------ NMS

class StaticDetections(NamedTuple):
    """Fixed-shape NMS output for a batch: ``rows`` [B, M, 6] (first ``counts[b]`` valid, as
    ``multiclass_nms`` orders them), ``exact`` [B] whether those rows are certain to be multiclass_nms's, and
    the decoded ``boxes`` [B, L, 4] / ``scores`` [B, L, C] for the images where they are not."""

    rows: torch.Tensor
    counts: torch.Tensor
    exact: torch.Tensor
    boxes: torch.Tensor
    scores: torch.Tensor


def static_postprocess(cls_logits: torch.Tensor, reg_logits: torch.Tensor, points: torch.Tensor,
                       strides: torch.Tensor, proj: torch.Tensor, scale_factor: torch.Tensor,
                       nms: NMSSpec = NMSSpec(), max_candidates: int = 2048, rounds: int = 32) -> StaticDetections:
    """``boxes.postprocess`` with fixed shapes and no host synchronisation (capturable in a CUDA graph)."""
    boxes, scores = box_ops.decode(cls_logits, reg_logits, points, strides, proj)
    sy, sx = scale_factor[:, 0], scale_factor[:, 1]  # to original-image pixels, as boxes.postprocess does
    boxes = boxes / torch.stack([sx, sy, sx, sy], dim=1)[:, None, :].to(boxes.dtype)
    batch, num_anchors, num_classes = scores.shape
    k = min(max_candidates, num_anchors * num_classes, nms.nms_top_k)
    # Candidate ids class * L + anchor; a stable descending sort gives Paddle's order (score, class, anchor).
    class_scores = scores.detach().float().transpose(1, 2).reshape(batch, -1)
    candidate = class_scores > nms.score_threshold
    ranked = torch.where(candidate, class_scores, float("-inf")).sort(dim=1, descending=True, stable=True)
    ids = ranked.indices[:, :k]
    valid = candidate.gather(1, ids)
    cls, anchor = ids // num_anchors, ids % num_anchors
    suppress = _suppression_matrix(boxes, cls, anchor, float(np.float32(nms.iou_threshold)))
    keep, undecided = _greedy_rounds(suppress, valid, rounds)
    kept_before = keep.cumsum(1) - keep.long()
    settled = ~(undecided & (kept_before < nms.keep_top_k)).any(1)  # every verdict before the cut is known
    final = keep & (kept_before < nms.keep_top_k)
    complete = (candidate.sum(1) <= k) | (final.sum(1) >= nms.keep_top_k)
    rows = _gather_rows(boxes, scores, cls, anchor, final, min(nms.keep_top_k, k))
    return StaticDetections(rows, final.sum(1), settled & complete, boxes, scores)


def _suppression_matrix(boxes: torch.Tensor, cls: torch.Tensor, anchor: torch.Tensor,
                        iou_threshold: float) -> torch.Tensor:
    """[B, K, K]: entry (i, j) when candidate j comes before i, has its class and would suppress it."""
    k = cls.shape[1]
    earlier = torch.ones(k, k, dtype=torch.bool, device=cls.device).tril(diagonal=-1)
    out = []
    for b in range(boxes.shape[0]):  # a Python loop over the batch: kernels only, no synchronisation
        corners = boxes[b].detach().float().T.contiguous()
        hit = _paddle_suppresses(corners, _paddle_areas(corners), anchor[b][:, None], anchor[b][None, :],
                                 iou_threshold)
        out.append(hit & (cls[b][:, None] == cls[b][None, :]) & earlier)
    return torch.stack(out)


def _greedy_rounds(suppress: torch.Tensor, valid: torch.Tensor, rounds: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy NMS over candidates in order, ``rounds`` vectorised rounds -> (keep, undecided) masks [B, K].

    A candidate is dropped once an earlier kept one suppresses it, and kept once every earlier one that would
    suppress it is dropped. Each round settles at least the first unsettled candidate, usually far more.
    """
    keep = torch.zeros_like(valid)
    drop = ~valid
    for _ in range(rounds):
        undecided = ~(keep | drop)
        drop = drop | (undecided & (suppress & keep[:, None, :]).any(2))
        undecided = ~(keep | drop)
        keep = keep | (undecided & ~(suppress & ~drop[:, None, :]).any(2))
    return keep, ~(keep | drop)


def _gather_rows(boxes: torch.Tensor, scores: torch.Tensor, cls: torch.Tensor, anchor: torch.Tensor,
                 final: torch.Tensor, m: int) -> torch.Tensor:
    """[B, m, 6] rows (class, score, box) of the kept candidates: class ascending, then visiting order."""
    k = cls.shape[1]
    position = torch.arange(k, device=cls.device)
    key = torch.where(final, cls * k + position, scores.shape[2] * k)
    top = key.sort(dim=1, stable=True).indices[:, :m]
    top_cls, top_anchor = cls.gather(1, top), anchor.gather(1, top)
    top_scores = scores.reshape(scores.shape[0], -1).gather(1, top_anchor * scores.shape[2] + top_cls)
    top_boxes = boxes.gather(1, top_anchor[..., None].expand(-1, -1, 4))
    return torch.cat([top_cls[..., None].to(boxes.dtype), top_scores[..., None], top_boxes], dim=2)


def finish(static: StaticDetections, nms: NMSSpec = NMSSpec()) -> list[torch.Tensor]:
    """Per-image detections on the CPU, as ``boxes.postprocess`` gives them: the one host synchronisation of a
    batch, plus the exact ``multiclass_nms`` for any image the fixed-shape NMS could not decide."""
    counts, exact = static.counts.cpu().tolist(), static.exact.cpu().tolist()
    rows = static.rows.cpu()
    out = []
    for b, (count, certain) in enumerate(zip(counts, exact)):
        if certain:
            out.append(rows[b, :count])
        else:
            out.append(box_ops.multiclass_nms(static.boxes[b], static.scores[b], nms).cpu())
    return out


# --------------------------------------------------------------------------------------- CUDA graphs

class _Graphed:
    """``fn`` captured in a CUDA graph for inputs shaped like ``examples``; calls copy the inputs into the
    graph's buffers and replay it. The outputs are the graph's own buffers, overwritten by the next call."""

    def __init__(self, fn: Callable[..., Any], examples: tuple[torch.Tensor, ...], warmup: int = 2):
        self.inputs = tuple(t.clone() for t in examples)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.no_grad():  # allocations and caches made before the capture
            for _ in range(warmup):
                fn(*self.inputs)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.no_grad():
            self.outputs = fn(*self.inputs)

    def __call__(self, *inputs: torch.Tensor) -> Any:
        for buffer, value in zip(self.inputs, inputs):
            buffer.copy_(value, non_blocking=True)
        self.graph.replay()
        return self.outputs


# ----------------------------------------------------------------------------------------- detector

class FastDetector:
    """A network on the fast path. ``run(images)`` (the predictor's backend interface) returns float32 raw
    outputs; ``detect(images, scale_factor)`` returns per-image NMS rows on the CPU (``boxes.postprocess``'s).

    ``detector`` is copied (its weights converted to the precision), never changed; pass a fused one
    (``Detector.fuse()``), as ``create_model`` makes.
    """

    name = "torch"

    def __init__(self, detector: Detector, device: torch.device | str, options: FastOptions = FastOptions()):
        self.device = torch.device(device)
        self.options, notes = resolve_options(options, self.device)
        for note in notes:
            log.warning(note)
        self.notes = tuple(notes)
        self.precision = self.options.precision
        self.dtype = FAST_DTYPES[self.precision]
        self.spec = detector.spec
        self.nms = detector.spec.nms if detector.spec is not None else NMSSpec()
        self.proj = detector.proj.detach().float().to(self.device)  # decode stays float32
        model = copy.deepcopy(detector).eval().to(self.device, self.dtype)
        if self.options.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self._graphs: dict[tuple, _Graphed] = {}
        self._network_fn: Callable[..., Any] = self._network
        self._detect_fn: Callable[..., Any] = self._detect_static
        if self.options.compile:
            self._network_fn = torch.compile(self._network, mode="max-autotune", dynamic=False)
            self._detect_fn = torch.compile(self._detect_static, mode="max-autotune", dynamic=False)

    def anchors(self, h: int, w: int, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.anchors(h, w, device)

    def _network(self, images: torch.Tensor) -> RawOutput:
        x = images.to(self.dtype)
        if self.options.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        raw = self.model(x)
        return RawOutput(raw.cls_logits.float(), raw.reg_logits.float())

    def _detect_static(self, images: torch.Tensor, scale_factor: torch.Tensor) -> StaticDetections:
        raw = self._network(images)
        points, strides = self.model.anchors(images.shape[2], images.shape[3], images.device)
        return static_postprocess(raw.cls_logits, raw.reg_logits, points, strides, self.proj, scale_factor,
                                  self.nms, self.options.max_candidates, self.options.nms_rounds)

    def _call(self, kind: str, fn: Callable[..., Any], *inputs: torch.Tensor) -> Any:
        """``fn(*inputs)``: replayed from a CUDA graph captured for these shapes when graphs are on."""
        if not self.options.cuda_graphs:
            with torch.inference_mode():
                return fn(*inputs)
        key = (kind, *(tuple(t.shape) for t in inputs))
        with torch.cuda.device(self.device):  # capture and replay on this detector's GPU
            if key not in self._graphs:
                self._graphs[key] = _Graphed(fn, inputs)
            return self._graphs[key](*inputs)

    def run(self, images: torch.Tensor) -> RawOutput:
        x = images.to(self.device, torch.float32, non_blocking=True)
        raw = self._call("network", self._network_fn, x)
        return RawOutput(raw.cls_logits.clone(), raw.reg_logits.clone()) if self.options.cuda_graphs else raw

    def detect_static(self, images: torch.Tensor, scale_factor: torch.Tensor | None = None) -> StaticDetections:
        """Network, decode and NMS with fixed shapes, no host synchronisation (one graph replay with graphs on).
        With graphs on, the result lives in the graph's buffers until the next call."""
        x = images.to(self.device, torch.float32, non_blocking=True)
        if scale_factor is None:
            scale_factor = torch.ones(x.shape[0], 2)
        sf = scale_factor.to(self.device, torch.float32, non_blocking=True)
        return self._call("detect", self._detect_fn, x, sf)

    def detect(self, images: torch.Tensor, scale_factor: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Per-image rows (class, score, x1, y1, x2, y2) on the CPU in original-image pixels."""
        return finish(self.detect_static(images, scale_factor), self.nms)

    def describe(self) -> str:
        mode = ("torch.compile max-autotune" if self.options.compile else
                "CUDA graphs" if self.options.cuda_graphs else "eager")
        layout = ", channels-last" if self.options.channels_last else ""
        return f"{self.device}, {self.precision}{layout}, {mode}, decode + NMS on {self.device.type}"


class FastDetPredictor(DetPredictor):
    """A DetPredictor whose batch step is ``FastDetector.detect``: one graph replay and one host copy."""

    backend: FastDetector

    def detect_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        chws, scales = zip(*(preprocess(im, self.input_size) for im in images))
        batch = torch.from_numpy(np.stack(chws))
        if self.backend.device.type == "cuda":
            batch = batch.pin_memory()
        dets = self.backend.detect(batch, torch.from_numpy(np.asarray(scales, dtype=np.float32)))
        return [d.float().numpy() for d in dets]


def create_fast_model(model_name: str, model_dir: str | os.PathLike | None = None, device: str | None = "gpu",
                      threshold: Threshold = None, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                      options: FastOptions = FastOptions()) -> FastDetPredictor:
    """``create_model`` on the GPU fast path (a weights file or the published weights; not an export
    folder, whose graph runs on its own backend). Detections equal ``create_model``'s for the same network
    outputs; fp16 / bf16 change the outputs themselves (scores move by about 1e-3 to 1e-2)."""
    base = create_model(model_name, model_dir=model_dir, device=device, threshold=threshold, max_pixels=max_pixels)
    if not isinstance(base.detector, Detector):
        raise ConfigError(f"{model_dir} is an export folder; the fast path runs weights files (the published "
                          f"weights, or a .safetensors / .pdparams file)")
    fast = FastDetector(base.detector, base.backend.device, options)
    log.info("Running %s on the fast path (%s)", model_name, fast.describe())
    # The fast detector stands in for the network too (spec, anchors, proj): the float32 copy is let go.
    return FastDetPredictor(fast, fast, base.model_name, base.labels, base.input_size, base.threshold,
                            base.max_pixels)
