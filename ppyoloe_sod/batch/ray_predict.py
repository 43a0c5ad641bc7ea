"""Batch inference on Ray Data: the same detections as ``predict``, spread over the actors of a Ray cluster.

The driver lists the inputs (paths, globs, folders, PDF pages) as rows and names each result as ``predict``
would (``infer.result.distinct_names``). ``Dataset.map_batches`` runs :class:`DetectWorker`, a callable class,
on a pool of ``num_workers`` actors: each loads the model once (``create_model``) and runs ``predict`` on its
batches, so thresholds, slicing and box clipping are ``predict``'s own. Ray restarts an actor whose process
dies and runs its batch again; a batch's rows come out once, from the run that finished.

Result rows: ``input_path``, ``page_index``, ``save_name`` (the base name predict saves under) and ``boxes``
(the PaddleX box list as JSON text). ``output`` writes them as one ``<stem>_res.json`` per image (the files
``predict`` writes; written by this process) or as Parquet files (written by the workers).
"""
from __future__ import annotations

import glob
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from ..data.sources import Source, expand_inputs, load_source
from ..errors import ConfigError, ImageReadError, hint
from ..imageio import DEFAULT_MAX_PIXELS, PixelLimit, to_bgr_uint8
from ..infer.result import DetResult, distinct_names, paddlex_name, to_plain
from ..infer.slicing import SliceConfig, as_slice_config

if TYPE_CHECKING:
    import ray.data

log = logging.getLogger(__name__)

OUTPUT_FORMATS = ("json", "parquet")
NO_PAGE = -1  # page_index of a request row that is not a PDF page (request columns hold no nulls)
RESULT_COLUMNS = ("input_path", "page_index", "save_name", "boxes")
READABLE_KINDS = ("file", "url", "pdf")  # what a worker reads by itself from a request row


def import_ray() -> Any:
    """The ``ray`` module (with Ray Data), or a ConfigError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (the data extra)
    except ImportError as e:
        raise ConfigError(f"Batch inference on Ray needs Ray Data: pip install 'ppyoloe-sod[ray]' "
                          f"(or pip install 'ray[data]'); importing it failed: {e}") from e
    return ray


def ensure_ray() -> None:
    """Join the cluster at ``RAY_ADDRESS`` when it is set, else start a local Ray (unless already started)."""
    ray = import_ray()
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        log.info("connecting to the Ray cluster at %s" if address else "starting a local Ray%s", address or "")
        ray.init(address=address or None)


# ------------------------------------------------------------------------------------------- requests

def _expand_globs(inputs: Any) -> list[Any]:
    """``inputs`` as a list, each glob pattern (that is not itself an existing path) replaced by its sorted
    matches; a pattern matching nothing is an ImageReadError."""
    items = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    out: list[Any] = []
    for item in items:
        text = os.fspath(item) if isinstance(item, (str, os.PathLike)) else None
        if text is None or not glob.has_magic(text) or os.path.exists(text):
            out.append(item)
            continue
        matches = sorted(glob.glob(text, recursive=True))
        if not matches:
            raise ImageReadError(f"Input pattern {text!r} matches no files.")
        out.extend(matches)
    return out


def _check_readable(src: Source) -> None:
    """Refuse the sources a worker cannot read from a row, with the way to pass them."""
    if src.kind == "video":
        raise ImageReadError(f"{src.ref!r} is a video; predict_ray takes images and PDFs. Predict videos with "
                             f"predict (one process), or extract their frames to image files first.")
    if src.kind == "array":
        raise ImageReadError("predict_ray reads images by path; pass in-memory images as a ray.data.Dataset with "
                             "an 'image' column (RGB), e.g. ray.data.from_items([{'image': rgb}, ...]).")
    if src.kind == "pdf" and src.data is not None:
        raise ImageReadError(f"PDF URLs are not read by predict_ray: {src.ref!r}; download the PDF and pass its "
                             f"local path.")


def request_rows(inputs: Any) -> list[dict[str, Any]]:
    """One row per image (per page of a PDF) that ``inputs`` stands for, in predict's order, with the distinct
    name predict saves its result under. Inputs are listed, not read: bad files fail in the workers."""
    sources = expand_inputs(_expand_globs(inputs))
    for src in sources:
        _check_readable(src)
    names = distinct_names([(s.input_path, s.page_index) for s in sources])
    return [{"kind": s.kind, "ref": str(s.ref), "input_path": s.input_path,
             "page_index": NO_PAGE if s.page_index is None else s.page_index, "save_name": name}
            for s, name in zip(sources, names)]


def _image_from_row(batch: Mapping[str, np.ndarray], i: int, limit: PixelLimit) -> np.ndarray:
    """Row ``i``'s BGR pixels: its ``image`` column (RGB or RGBA, as ``ray.data.read_images`` gives), else the
    file, URL or PDF page its request columns name, read as ``predict`` reads it."""
    if "image" in batch:
        pixels = np.asarray(batch["image"][i])
        if pixels.ndim == 3 and pixels.shape[2] in (3, 4):
            pixels = np.concatenate([pixels[:, :, 2::-1], pixels[:, :, 3:]], axis=2)
        name = _column(batch, "path", i) or f"row {i} of the dataset's image column"
        return to_bgr_uint8(pixels, str(name))
    page = int(batch["page_index"][i])
    src = Source(str(batch["kind"][i]), str(batch["ref"][i]), str(batch["input_path"][i]),
                 None if page == NO_PAGE else page)
    return load_source(src, limit)


def _column(batch: Mapping[str, np.ndarray], name: str, i: int) -> Any:
    """Row ``i``'s value of an optional column (None when the batch has no such column)."""
    return batch[name][i] if name in batch else None


def _row_identity(batch: Mapping[str, np.ndarray], i: int) -> tuple[str | None, int | None, str | None]:
    """(input_path, page_index, save_name) of row ``i``: a request row's, or a dataset row's from its ``path``
    (PaddleX's name; None for an image without a path, named when written)."""
    if "image" in batch:
        path = _column(batch, "path", i)
        path = None if path is None else str(path)
        return path, None, paddlex_name(path, None)
    page = int(batch["page_index"][i])
    return str(batch["input_path"][i]), None if page == NO_PAGE else page, str(batch["save_name"][i])


# ------------------------------------------------------------------------------------------- workers

class DetectWorker:
    """A Ray Data callable class (and the per-partition function of ``spark_predict``): the model is loaded once
    per actor, then each batch of rows is predicted in one call of ``predict`` (``batch_size`` images per
    forward). ``predictor``: create_model's keyword arguments (``infer.predictor.predictor_args``)."""

    def __init__(self, predictor: Mapping[str, Any], slice: SliceConfig | None) -> None:
        from ..infer.predictor import create_model

        self.predictor = create_model(**predictor)
        self.limit = PixelLimit(self.predictor.max_pixels, hint(python="max_pixels=N", cli="-o Predict.max_pixels=N"))
        self.slice = slice

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        count = len(next(iter(batch.values()))) if batch else 0
        out: dict[str, list[Any]] = {name: [] for name in RESULT_COLUMNS}
        if count == 0:
            return out
        images = [_image_from_row(batch, i, self.limit) for i in range(count)]
        results = self.predictor.predict(images, batch_size=count, slice=self.slice)
        for i, result in enumerate(results):
            input_path, page_index, save_name = _row_identity(batch, i)
            out["input_path"].append(input_path)
            out["page_index"].append(page_index)
            out["save_name"].append(save_name)
            out["boxes"].append(json.dumps(to_plain(result.boxes), ensure_ascii=False))
        return out


# ------------------------------------------------------------------------------------------- driver

def _positive_int(value: Any, python: str, cli: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{hint(python=python, cli=cli)} must be a positive integer, got {value!r}.")
    return int(value)


def _non_negative(value: Any, python: str, cli: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ConfigError(f"{hint(python=python, cli=cli)} must be a number >= 0, got {value!r}.")
    return float(value)


def _check_output_format(output_format: Any) -> str:
    if output_format not in OUTPUT_FORMATS:
        name = hint(python="output_format", cli="Predict.ray.output_format")
        raise ConfigError(f"{name} is {output_format!r}; use json (one <stem>_res.json per image, as predict "
                          f"writes) or parquet.")
    return output_format


def _requests_dataset(inputs: Any) -> "ray.data.Dataset":
    """``inputs`` as a Dataset the workers understand: a Dataset with an ``image`` column (optionally ``path``)
    is used as it is; anything else is listed into request rows."""
    ray = import_ray()
    if isinstance(inputs, ray.data.Dataset):
        if "image" not in inputs.columns():
            raise ConfigError(f"The ray.data.Dataset passed to predict_ray has columns {inputs.columns()}; it needs "
                              f"an 'image' column of RGB arrays, as ray.data.read_images(..., include_paths=True, "
                              f"mode='RGB') gives (with its 'path' column, results are named after the files).")
        return inputs
    return ray.data.from_items(request_rows(inputs))


def write_json_results(results: "ray.data.Dataset", output: str | os.PathLike) -> list[Path]:
    """One ``<stem>_res.json`` per result row under ``output``, the file ``predict`` writes for that image.

    Rows without a name (images of a Dataset given without paths) and rows whose PaddleX names collide (a
    Dataset's files of the same name in different folders) are named by ``distinct_names`` in path order.
    """
    rows = list(results.iter_rows())
    names = [row["save_name"] for row in rows]
    if None in names or len({Path(n).stem.casefold() for n in names}) < len(names):
        rows.sort(key=lambda r: (r["input_path"] is None, r["input_path"] or "", r["page_index"] or 0))
        names = distinct_names([(r["input_path"], r["page_index"]) for r in rows])
    written = []
    for row, name in zip(rows, names):
        page_index = None if row["page_index"] is None else int(row["page_index"])
        result = DetResult(row["input_path"], page_index, None, json.loads(row["boxes"]), save_name=name)
        written.append(result.save_to_json(output))
    return written


def predict_ray(inputs: Any, model_name: str = "PP-YOLOE_plus_SOD-S", model_dir: str | os.PathLike | None = None,
                *, num_workers: int = 1, batch_size: int = 1, num_gpus_per_worker: float = 0,
                num_cpus_per_worker: float = 1, output: str | os.PathLike | None = None,
                output_format: str = "json", threshold: Any = None,
                slice: SliceConfig | Mapping[str, Any] | None = None, use_hpip: bool = False,
                max_pixels: int | None = DEFAULT_MAX_PIXELS, hpi_config: Mapping[str, Any] | None = None
                ) -> "ray.data.Dataset":
    """Detect on every image of ``inputs`` with a pool of Ray actors; a Dataset of result rows.

    ``inputs``: paths, globs (``"images/**/*.jpg"``), folders, PDFs, or a list of them (as ``predict``, without
    numpy arrays, URL PDFs and videos), or a ``ray.data.Dataset`` with an ``image`` column of RGB arrays (and
    ``path``), as ``ray.data.read_images(..., include_paths=True, mode="RGB")`` gives. ``model_name``,
    ``model_dir``, ``threshold``, ``use_hpip``, ``hpi_config``, ``max_pixels``: as ``create_model``; ``slice``: as
    ``predict``.

    ``num_workers`` actors each hold the model, using ``num_cpus_per_worker`` CPUs and ``num_gpus_per_worker``
    GPUs (0: CPU; 1: one GPU each; 0.5: two actors share a GPU); ``batch_size`` images per forward. An actor
    whose process dies is restarted and its batch run again (Ray Data's actor pool defaults).

    Returns a Dataset of rows ``input_path``, ``page_index``, ``save_name``, ``boxes`` (JSON text of PaddleX's
    box list). Lazy without ``output``; with ``output`` (a folder) the results are computed once, held by Ray
    and written as ``output_format``: ``json`` (one ``<stem>_res.json`` per image, as predict writes them; this
    process writes them) or ``parquet`` (files written by the workers; use a path every node sees, or s3://...).
    Connects to ``RAY_ADDRESS`` when set, else starts a local Ray, unless Ray is already initialised.
    """
    num_workers = _positive_int(num_workers, "num_workers", "Predict.ray.num_workers")
    batch_size = _positive_int(batch_size, "batch_size", "Predict.ray.batch_size")
    gpus = _non_negative(num_gpus_per_worker, "num_gpus_per_worker", "Predict.ray.num_gpus_per_worker")
    cpus = _non_negative(num_cpus_per_worker, "num_cpus_per_worker", "Predict.ray.num_cpus_per_worker")
    output_format = _check_output_format(output_format)
    slice_cfg = as_slice_config(slice)
    ensure_ray()
    ray = import_ray()
    requests = _requests_dataset(inputs)
    predictor = dict(model_name=model_name, model_dir=None if model_dir is None else os.fspath(model_dir),
                     device="gpu:0" if gpus > 0 else "cpu", threshold=threshold, use_hpip=use_hpip,
                     max_pixels=max_pixels, hpi_config=hpi_config)
    worker_args = dict(predictor=predictor, slice=slice_cfg)
    results = requests.map_batches(
        DetectWorker, fn_constructor_kwargs=worker_args, batch_size=batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=num_workers), num_cpus=cpus, num_gpus=gpus)
    if output is None:
        return results
    results = results.materialize()
    if output_format == "parquet":
        results.write_parquet(os.fspath(output))
    else:
        write_json_results(results, output)
    return results


ENGINES = ("local", "ray")


def run_predict_ray(cfg: Any) -> int:
    """``Global.mode=predict`` with ``Predict.engine=ray``: ``predict_ray`` over ``Predict.input`` with the
    model keys of ``Predict`` and the pool of ``Predict.ray``, results written under ``Global.output``
    (``Predict.ray.output_format``). Returns the number of results."""
    from ..infer.predictor import predictor_args
    from ..infer.slicing import slice_config_from_section

    p = cfg.Predict
    if p.engine not in ENGINES:
        raise ConfigError(f"Predict.engine is {p.engine!r}; use local (this process) or ray (a Ray cluster).")
    model = {k: v for k, v in predictor_args(cfg).items() if k != "device"}  # actors: Predict.ray's GPUs or CPU
    out = Path(cfg.Global.output)
    results = predict_ray(p.input, **model, num_workers=p.ray.num_workers, batch_size=p.ray.batch_size,
                          num_gpus_per_worker=p.ray.num_gpus_per_worker,
                          num_cpus_per_worker=p.ray.num_cpus_per_worker, output=out,
                          output_format=p.ray.output_format,
                          slice=slice_config_from_section(p.slice, "Predict.slice"))
    count = results.count()
    files = "a JSON file each" if p.ray.output_format == "json" else "Parquet files"
    print(f"{count} result(s) saved under {out.resolve()} ({files}; no drawings with Predict.engine=ray)")
    return count
