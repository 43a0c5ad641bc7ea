"""Video in and out of ``predict``: frames streamed from a file, drawings of the results written into a video.

Reading (OpenCV's FFmpeg backend: mp4, avi, mov, mkv, m4v): a video given to ``predict`` yields one result per
kept frame, with ``page_index`` = the frame's index in the file, from 0 (PaddleX's key for the parts of a
multi-page input), so a frame's files are ``<stem>_<frame>_res.json`` / ``.png``. ``VideoConfig`` keeps every
``stride``-th frame from ``start`` (inclusive) to ``end`` (exclusive; None: the last frame). Frames are decoded
one at a time and the skipped ones only grabbed, never seeked to (seeking is approximate in compressed streams,
so frame indices would drift); memory holds one batch of frames whatever the length of the video.

Writing: ``AnnotatedVideos`` writes the drawings of a stream of results into ``<stem>_res.mp4`` per video, in
order, at the source's frame rate / stride, under a temporary name renamed when the video is complete
(``fileio.atomic_path``): an interrupted run leaves no half-written video.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, NamedTuple

import cv2
import numpy as np

from ..data.sources import is_video_file
from ..errors import ConfigError, ImageReadError
from ..fileio import atomic_path
from ..imageio import PixelLimit, require_regular_file, to_bgr_uint8
from .slicing import options_dataclass

log = logging.getLogger(__name__)

FALLBACK_FPS = 25.0  # a video whose container states no frame rate is written at this one
OUTPUT_SUFFIX = ".mp4"
FOURCC = {".mp4": "mp4v", ".mov": "mp4v", ".avi": "MJPG"}


@dataclass(frozen=True)
class VideoConfig:
    """Which frames of a video ``predict`` runs on: every ``stride``-th from ``start`` up to ``end`` (exclusive;
    None: to the end). Frame indices count from 0."""

    stride: int = 1
    start: int = 0
    end: int | None = None

    def __post_init__(self) -> None:
        for name, low in (("stride", 1), ("start", 0)):
            value = getattr(self, name)
            if not _is_int(value) or value < low:
                raise ConfigError(f"video {name} must be an integer >= {low}, got {value!r}.")
        if self.end is not None and (not _is_int(self.end) or self.end <= self.start):
            raise ConfigError(f"video end must be a frame index after start ({self.start}) or None (to the last "
                              f"frame), got {self.end!r}.")

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> "VideoConfig":
        """Build from a dict of field names (a YAML section or CLI overrides); unknown keys are a ConfigError."""
        return options_dataclass(cls, options, "video")

    def kept(self, frame_count: int) -> int:
        """How many frames of a video of ``frame_count`` frames are kept."""
        stop = frame_count if self.end is None else min(self.end, frame_count)
        return len(range(self.start, stop, self.stride))


def _is_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def as_video_config(value: VideoConfig | Mapping[str, Any] | None) -> VideoConfig:
    """``predict``'s ``video`` argument as a VideoConfig (None: every frame)."""
    if value is None:
        return VideoConfig()
    if isinstance(value, VideoConfig):
        return value
    if isinstance(value, Mapping):
        return VideoConfig.from_mapping(value)
    raise ConfigError(f"video must be a VideoConfig, a dict such as {{'stride': 2}}, or None; got {value!r}.")


def video_config_from_section(section: Any, where: str) -> VideoConfig:
    """A config file's video section (a dataclass of VideoConfig's fields, Predict.video) as a VideoConfig; a bad
    value is a ConfigError naming the section (``where``)."""
    try:
        return VideoConfig.from_mapping(dataclasses.asdict(section))
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


class VideoInfo(NamedTuple):
    width: int
    height: int
    fps: float  # frames per second as the container states it (FALLBACK_FPS when it states none)
    frame_count: int  # as the container states it (0: unknown); the frames decoded decide in the end


def _open(path: str) -> cv2.VideoCapture:
    """An opened capture of a regular file, or ImageReadError naming it."""
    require_regular_file(path, "video file")
    try:
        capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG)  # not CAP_ANY: a '%' in the name would mean a sequence
        opened = capture.isOpened()
    except cv2.error as e:
        raise ImageReadError(f"Cannot read video {path!r}: {e}") from e
    if not opened:
        capture.release()
        raise ImageReadError(f"Cannot read video {path!r}: OpenCV cannot open it (a corrupt or truncated file, or a "
                             f"codec this OpenCV build lacks); check that it plays, or re-encode it (for example "
                             f"ffmpeg -i IN -c:v libx264 OUT.mp4).")
    return capture


def probe_video(path: str, limit: PixelLimit = PixelLimit()) -> VideoInfo:
    """Size, frame rate and frame count of a video, after decoding its first frame (ImageReadError naming the
    file when it has none, or when its frames are above ``limit``)."""
    capture = _open(path)
    try:
        ok, frame = capture.read()
        fps, count = capture.get(cv2.CAP_PROP_FPS), capture.get(cv2.CAP_PROP_FRAME_COUNT)
    finally:
        capture.release()
    if not ok or frame is None:
        raise ImageReadError(f"Video {path!r} has no readable frame (empty, corrupt or truncated).")
    height, width = frame.shape[:2]
    limit.check(width, height, repr(path))
    if not (math.isfinite(fps) and fps > 0):
        log.warning("video %s states no frame rate; its annotated video is written at %g fps", path, FALLBACK_FPS)
        fps = FALLBACK_FPS
    return VideoInfo(width, height, float(fps), int(count) if math.isfinite(count) and count > 0 else 0)


def iter_frames(path: str, cfg: VideoConfig = VideoConfig()) -> Iterator[tuple[int, np.ndarray]]:
    """(frame index, BGR uint8 frame) for the frames ``cfg`` keeps, decoded one at a time."""
    capture = _open(path)
    yielded = False
    try:
        index = 0
        while cfg.end is None or index < cfg.end:
            keep = index >= cfg.start and (index - cfg.start) % cfg.stride == 0
            ok, frame = capture.read() if keep else (capture.grab(), None)
            if not ok:
                break
            if keep:
                yielded = True
                yield index, to_bgr_uint8(frame, f"{path} frame {index}")
            index += 1
    finally:
        capture.release()
    if not yielded:
        log.warning("video %s: no frame from %d to %s (it has %d frames); nothing predicted on it", path, cfg.start,
                    "the end" if cfg.end is None else cfg.end, index)


def frame_video_stem(save_name: str, frame_index: int) -> str:
    """The video's own result stem from a frame result's name (``predict`` names frames ``<stem>_<frame>``)."""
    stem = Path(save_name).stem
    suffix = f"_{frame_index}"
    return stem[: -len(suffix)] if stem.endswith(suffix) else stem


class AnnotatedVideos:
    """Writes the drawings of ``predict``'s video-frame results into ``<folder>/<stem>_res.mp4``, one per video.

    Use as a context manager: a video is renamed into place when the next video starts or the block ends
    normally; on an error the video being written is removed.
    """

    def __init__(self, folder: str | Path, cfg: VideoConfig = VideoConfig()):
        self.folder = Path(folder)
        self.cfg = cfg
        self._stack = ExitStack()
        self._current: tuple[str, str] | None = None
        self._writer: cv2.VideoWriter | None = None
        self._path: Path | None = None

    def __enter__(self) -> "AnnotatedVideos":
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self._finish(exc)

    def add(self, input_path: str, frame_index: int, save_name: str, drawing_bgr: np.ndarray) -> Path:
        """Append one frame's drawing to its video's file (starting that file when the video changes)."""
        stem = frame_video_stem(save_name, frame_index)
        if self._current != (input_path, stem):
            self._finish(None)
            self._start(input_path, stem, drawing_bgr.shape[1], drawing_bgr.shape[0])
        assert self._writer is not None and self._path is not None
        self._writer.write(np.ascontiguousarray(drawing_bgr))
        return self._path

    def _start(self, input_path: str, stem: str, width: int, height: int) -> None:
        fps = probe_video(input_path, PixelLimit(None)).fps / self.cfg.stride
        path = self.folder / f"{stem}_res{OUTPUT_SUFFIX}"
        tmp = self._stack.enter_context(atomic_path(path))
        writer = cv2.VideoWriter(str(tmp), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*FOURCC[OUTPUT_SUFFIX]), fps,
                                 (width, height))
        if not writer.isOpened():
            self._finish(RuntimeError("writer not opened"))
            raise ConfigError(f"Cannot write {path}: this OpenCV build has no {FOURCC[OUTPUT_SUFFIX]} encoder; "
                              f"install opencv-python (it bundles FFmpeg), or predict without save_video.")
        self._current, self._writer, self._path = (input_path, stem), writer, path

    def _finish(self, exc: BaseException | None) -> None:
        if self._writer is not None:
            self._writer.release()
        self._current, self._writer, self._path = None, None, None
        stack, self._stack = self._stack, ExitStack()
        if exc is None:
            stack.close()
        else:
            stack.__exit__(type(exc), exc, exc.__traceback__)


def is_video_result(input_path: str | None, page_index: int | None) -> bool:
    """True for a result of a video frame (a video file name with a frame index)."""
    return input_path is not None and page_index is not None and is_video_file(input_path)
