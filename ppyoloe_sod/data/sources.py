"""Turn whatever a user passes to ``predict`` into a lazy stream of (BGR image, input_path, page_index).

Accepted, as in PaddleX: a numpy array (BGR, HxW or HxWxC), an image file path, an http(s) URL, a directory
(its images and PDFs, recursively, in sorted path order), a PDF (one item per page, ``page_index`` from 0), or
a list mixing these. Ours too: a video file (``VIDEO_SUFFIXES``), one item whose frames ``infer.video`` streams.
Expansion (:func:`expand_inputs`) only lists names and counts PDF pages; pixels are read when an item is loaded,
so a large directory is never held in memory.

Differences from PaddleX, on purpose: a bad entry raises a clear ``ImageReadError`` instead of being logged and
skipped; files without an image suffix in a directory are skipped with one warning naming them; a URL result
keeps the URL as ``input_path`` (PaddleX reports its download cache path).

Rules a directory is expanded by: hidden entries (names starting with ".") are left out at every depth, files and
folders alike, with one log line counting them (a path given explicitly is used even if hidden); symlinked
folders are not followed and special files (FIFOs, devices, sockets) are not read, both named in the warning.
Anything given explicitly must be a regular file: a FIFO or ``/dev/zero`` would block or never end.
Videos are read only when given explicitly (a video found in a folder is skipped and named in the warning: it can
be an hour of frames), and only from local files.
Images are refused above a pixel limit read from their header (see ``imageio.PixelLimit``); a PDF page is
rendered smaller instead.
"""
from __future__ import annotations

import logging
import math
import os
import stat
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from ..errors import ImageReadError
from ..imageio import (PixelLimit, decode_image, is_image_file, read_image, require_regular_file,
                       to_bgr_uint8)
from ..netio import FetchError, Limits, fetch_bytes, seconds_from_env

log = logging.getLogger(__name__)

PDF_SCALE = 2.0  # PaddleX's PDF render zoom (144 dpi); a page is rendered smaller rather than above the pixel limit
URL_TIMEOUT_S = 30.0  # longest wait for data in one read
URL_DEADLINE_S = 120.0  # longest whole download of one input; the variable below overrides it
URL_DEADLINE_ENV = "PPYOLOE_SOD_URL_DEADLINE"
URL_MAX_BYTES = 100 * 1024 * 1024
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".m4v"})


@dataclass(frozen=True)
class Source:
    """One image to be read: where it comes from, not its pixels (except for in-memory arrays)."""

    kind: str  # "array" | "file" | "url" | "pdf" | "video" (frames streamed by infer.video, not load_source)
    ref: Any  # the ndarray, file path or URL
    input_path: str | None
    page_index: int | None = None
    data: bytes | None = None  # a downloaded PDF, shared by its pages


def _is_url(text: str) -> bool:
    return text.lower().startswith(("http://", "https://"))


def _is_pdf(text: str) -> bool:
    return urllib.parse.urlparse(text).path.lower().endswith(".pdf") if _is_url(text) else text.lower().endswith(".pdf")


def is_video_file(path: str | os.PathLike) -> bool:
    """True if ``path`` (a file name or URL) has a video suffix (case-insensitive); says nothing about the content."""
    text = os.fspath(path)
    return Path(urllib.parse.urlparse(text).path if _is_url(text) else text).suffix.lower() in VIDEO_SUFFIXES


def fetch_url(url: str, timeout: float = URL_TIMEOUT_S, max_bytes: int = URL_MAX_BYTES,
              deadline_s: float | None = None) -> bytes:
    """Download ``url`` into memory within ``netio``'s bounds: each read within ``timeout`` seconds, the whole
    download within ``deadline_s`` (default: ``$PPYOLOE_SOD_URL_DEADLINE`` or ``URL_DEADLINE_S``), at most
    ``max_bytes``, redirects only to http(s). ImageReadError naming the URL on any failure."""
    try:
        deadline = deadline_s if deadline_s is not None else seconds_from_env(URL_DEADLINE_ENV, URL_DEADLINE_S)
        return fetch_bytes(url, Limits(deadline, max_bytes, timeout, URL_DEADLINE_ENV))
    except FetchError as e:
        raise ImageReadError(f"Cannot download input {url}: {e}. Check the URL and the network, or download the "
                             "file and pass its local path.") from e


def _open_pdf(src: str | bytes, name: str) -> Any:
    try:
        import pypdfium2 as pdfium
    except ImportError as e:
        raise ImageReadError(f"Reading {name} needs pypdfium2: pip install pypdfium2") from e
    try:
        return pdfium.PdfDocument(src)
    except Exception as e:  # pdfium raises its own PdfiumError
        raise ImageReadError(f"Cannot open PDF {name}: {e}") from e


def _pdf_sources(path_or_url: str) -> list[Source]:
    data = fetch_url(path_or_url) if _is_url(path_or_url) else None
    if data is None:
        require_regular_file(path_or_url, "PDF file")
    doc = _open_pdf(data if data is not None else path_or_url, path_or_url)
    try:
        n = len(doc)
    finally:
        doc.close()
    if n == 0:
        raise ImageReadError(f"PDF {path_or_url} has no pages.")
    return [Source("pdf", path_or_url, path_or_url, i, data) for i in range(n)]


def _list_directory(directory: Path) -> tuple[list[Path], dict[Path, str], int]:
    """(image and PDF files, {skipped entry: why}, number of hidden entries left out) below ``directory``.

    Hidden names are pruned at every depth, so a hidden folder is not even walked.
    """
    keep: list[Path] = []
    skipped: dict[Path, str] = {}
    hidden = 0

    def fail(error: OSError) -> None:
        raise ImageReadError(f"Cannot list folder {error.filename!r}: {error.strerror or error}.")

    for root, dirs, files in os.walk(directory, onerror=fail):
        hidden += sum(name.startswith(".") for name in (*dirs, *files))
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for d in dirs:
            if os.path.islink(os.path.join(root, d)):
                skipped[Path(root, d)] = "symlinked folder, not followed"
        for name in files:
            path = Path(root, name)
            if name.startswith("."):
                continue
            if is_video_file(path):
                skipped[path] = "a video: pass its path to predict on it"
                continue
            if not (is_image_file(path) or path.suffix.lower() == ".pdf"):
                skipped[path] = "not an image suffix"
                continue
            try:
                mode = os.stat(path).st_mode
            except OSError as e:
                skipped[path] = f"unreadable: {e.strerror or e}"
                continue
            if stat.S_ISREG(mode):
                keep.append(path)
            else:
                skipped[path] = "not a regular file"
    return sorted(keep), dict(sorted(skipped.items())), hidden


def _dir_sources(directory: Path) -> list[Source]:
    keep, skipped, hidden = _list_directory(directory)
    if hidden:
        log.info("%s: left out %d hidden file(s)/folder(s) (names starting with '.')", directory, hidden)
    if skipped:
        listed = list(skipped.items())
        names = ", ".join(f"{p.relative_to(directory)} ({why})" for p, why in listed[:5])
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        log.warning("%s: skipped %d entries that are not image or PDF files: %s%s", directory, len(skipped),
                    names, more)
    if not keep:
        raise ImageReadError(
            f"Directory {str(directory)!r} contains no image or PDF files"
            f"{' (only ' + str(len(skipped)) + ' other files)' if skipped else ' (it is empty)'}."
        )
    out: list[Source] = []
    for p in keep:
        out.extend(_pdf_sources(str(p)) if p.suffix.lower() == ".pdf" else [Source("file", str(p), str(p))])
    return out


def _expand_one(item: Any) -> list[Source]:
    if isinstance(item, np.ndarray):
        return [Source("array", item, None)]
    if isinstance(item, os.PathLike):
        item = os.fspath(item)
    if not isinstance(item, str):
        raise ImageReadError(
            f"Unsupported input of type {type(item).__name__}: pass a numpy array (BGR), an image or PDF path, "
            f"an http(s) URL, a directory, or a list of these."
        )
    if _is_url(item):
        if is_video_file(item):
            raise ImageReadError(f"Video URLs are not read: {item!r}; download the video and pass its local path.")
        return _pdf_sources(item) if _is_pdf(item) else [Source("url", item, item)]
    path = Path(item)
    if path.is_dir():
        return _dir_sources(path)
    if not path.exists():
        raise ImageReadError(f"Input not found: {item!r} is neither an existing file or directory nor a URL.")
    if _is_pdf(item):
        return _pdf_sources(item)
    if is_video_file(item):
        require_regular_file(item, "video file")
        return [Source("video", item, item)]
    require_regular_file(item, "image file")
    return [Source("file", item, item)]


def expand_inputs(inputs: Any) -> list[Source]:
    """List every image (or PDF page) that ``inputs`` stands for, in order, without reading pixels."""
    items: Sequence[Any] = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    if isinstance(inputs, (list, tuple)) and not inputs:
        raise ImageReadError("The input list is empty: nothing to predict.")
    out: list[Source] = []
    for item in items:
        out.extend(_expand_one(item))
    return out


def _render_pdf_page(src: Source, max_pixels: int | None) -> np.ndarray:
    doc = _open_pdf(src.data if src.data is not None else src.ref, src.ref)
    try:
        page = doc[src.page_index]
        try:
            w, h = page.get_size()
            scale = PDF_SCALE
            if max_pixels is not None and math.ceil(w * scale) * math.ceil(h * scale) > max_pixels:
                scale = math.sqrt(max_pixels / (w * h)) * 0.999
            arr = page.render(scale=scale).to_numpy()  # BGR(x) order by default in pdfium
        finally:
            page.close()
    finally:
        doc.close()
    return to_bgr_uint8(arr, f"{src.ref} page {src.page_index}")


def load_source(src: Source, limit: PixelLimit = PixelLimit()) -> np.ndarray:
    """The BGR uint8 HxWx3 pixels of one source; files and URLs above ``limit`` are refused before decoding,
    PDF pages are rendered at a smaller scale to fit it. Arrays are taken as they are (already in memory)."""
    if src.kind == "array":
        return to_bgr_uint8(src.ref, "given as a numpy array")
    if src.kind == "file":
        return read_image(src.ref, limit)
    if src.kind == "url":
        return decode_image(fetch_url(src.ref), src.ref, limit)
    if src.kind == "pdf":
        return _render_pdf_page(src, limit.max_pixels)
    if src.kind == "video":
        raise ValueError(f"{src.ref!r} is a video: stream its frames with ppyoloe_sod.infer.video.iter_frames")
    raise ValueError(f"unknown source kind {src.kind!r}")


def iter_images(sources: Iterable[Source], limit: PixelLimit = PixelLimit()
                ) -> Iterator[tuple[np.ndarray, str | None, int | None]]:
    """Load sources one by one: (BGR image, input_path, page_index)."""
    for src in sources:
        yield load_source(src, limit), src.input_path, src.page_index


def iter_inputs(inputs: Any) -> Iterator[tuple[np.ndarray, str | None, int | None]]:
    """Expand ``inputs`` and read them lazily; the convenience form of expand_inputs + iter_images."""
    return iter_images(expand_inputs(inputs))
