"""Build a published model, and load weights into it from any source a user has.

One resolver (:func:`weights_file`) and one loader (:func:`read_weights` / :func:`load_weights`) with a
``strict`` flag:

- strict (``load_model``: predict, evaluate, export): every tensor by name and shape, with the converter's checks
  and the file's metadata (model name, class list); weights never load partly.
- partial (``strict=False``: the start of training, ppdet's ``match_state_dict``): each model key takes the file's
  tensor of the same name, else the longest file key it ends with (``a.endswith('.' + b)``); tensors whose shape
  differs and keys the file lacks keep their values, and a :class:`LoadReport` says what loaded, by module.

Sources: None (the model's published weights: the official file, downloaded once, converted and cached as
safetensors), a published model name (its official file), a local ``.pdparams`` (converted on the fly), a local
``.safetensors`` (ours), a folder holding one of those, or an http(s) URL of either.
"""
from __future__ import annotations

import json
import os
import urllib.parse
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import torch

from .errors import WeightsError, hint
from .nn.detector import Detector
from .weights.convert import paddle_to_torch, rename_paddle_tensors, state_dict_from_spec_check
from .weights.pdparams import load_pdparams
from .weights.store import cache_dir, fetch_weights, load_safetensors, save_safetensors, sha256_file
from .zoo import DEFAULT_MODEL, ModelSpec, get_spec, list_models

WEIGHT_SUFFIXES = (".safetensors", ".pdparams")


def build_model(name: str | ModelSpec = DEFAULT_MODEL) -> Detector:
    """A randomly initialised network (reference init), in train mode, of a published model or of a spec
    derived from one (e.g. ``spec.with_classes(names)`` for a fine-tuned class list)."""
    spec = name if isinstance(name, ModelSpec) else get_spec(name)
    model = Detector(spec.arch)
    model.spec = spec
    return model


def safetensors_metadata(spec: ModelSpec, source_sha256: str | None = None, **extra: str) -> dict[str, str]:
    meta = {"model_name": spec.name, "classes": json.dumps(list(spec.classes)), "format": "ppyoloe_sod"}
    if source_sha256:
        meta["source_sha256"] = source_sha256
    meta.update(extra)
    return meta


def convert_pdparams_file(src: str | os.PathLike, dst: str | os.PathLike, model_name: str | None = None) -> str:
    """Convert a ``.pdparams`` file to our safetensors file; returns the model name (detected or checked)."""
    converted = paddle_to_torch(load_pdparams(src), model_name, source=str(src))
    save_safetensors(converted.state_dict, dst,
                     safetensors_metadata(get_spec(converted.model_name), sha256_file(src),
                                          source_file=Path(src).name))
    return converted.model_name


def _find_weights_in_dir(folder: Path) -> Path:
    for preferred in ("model.safetensors", "best_model.safetensors"):
        if (folder / preferred).is_file():
            return folder / preferred
    found = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES)
    if len(found) != 1:
        what = "no weights file" if not found else f"{len(found)} weights files ({', '.join(p.name for p in found)})"
        raise WeightsError(f"{folder}: found {what}; expected exactly one .safetensors or .pdparams file "
                           "(or model.safetensors)")
    return found[0]


def weights_file(source: str | os.PathLike | None, spec: ModelSpec) -> Path:
    """The local file behind any weights source (see the module docstring); downloads happen once."""
    if source is None:
        cached = cache_dir() / f"{spec.name}.safetensors"
        if not cached.is_file():
            pdparams = fetch_weights(spec.weights_url, spec.sha256, official=True)
            convert_pdparams_file(pdparams, cached, spec.name)
        return cached
    text = str(source)
    if is_model_name(text):
        published = get_spec(text)
        return fetch_weights(published.weights_url, published.sha256, official=True)
    if urllib.parse.urlparse(text).scheme in ("http", "https"):
        return fetch_weights(text)
    path = Path(text).expanduser()
    if path.is_dir():
        path = _find_weights_in_dir(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found; give a .pdparams / .safetensors file, a folder holding "
                           f"one, an http(s) URL, or a published model name ({', '.join(list_models())})")
    if path.suffix not in WEIGHT_SUFFIXES:
        raise WeightsError(f"{path}: unknown weights format {path.suffix!r}; expected one of {WEIGHT_SUFFIXES}")
    return path


def is_model_name(text: str) -> bool:
    """A published model's name, as opposed to a file or folder path."""
    try:
        get_spec(text)
    except KeyError:
        return False
    return "/" not in text and "\\" not in text and not text.endswith(WEIGHT_SUFFIXES)


@dataclass
class Weights:
    """Tensors under our names, the spec they fit (``strict``: with the file's class list) and their file."""

    state: dict[str, torch.Tensor]
    spec: ModelSpec
    path: Path


def read_weights(source: str | os.PathLike | None, spec: ModelSpec, strict: bool = True) -> Weights:
    """The tensors of ``source`` for a model of ``spec``.

    ``strict``: checked against ``spec`` (a ``.pdparams`` through the converter's name and shape checks; our
    safetensors by its model name, class list and shapes), and the returned spec carries the class list a
    fine-tuned file records. Not strict: the file's tensors renamed to ours, unchecked (see :func:`load_weights`).
    """
    path = weights_file(source, spec)
    if path.suffix == ".pdparams":
        if strict:
            return Weights(paddle_to_torch(load_pdparams(path), spec.name, source=str(path)).state_dict, spec, path)
        return Weights(rename_paddle_tensors(load_pdparams(path), str(path)), spec, path)
    state, meta = load_safetensors(path)
    if not strict:
        return Weights(state, spec, path)
    owner = meta.get("model_name")
    if owner is not None and owner != spec.name:
        raise WeightsError(f"{path} holds weights of {owner}, not {spec.name}: load it with "
                           + hint(python=f"load_model('{owner}', ...)", cli=f"-o Global.model={owner}"))
    classes = classes_from_metadata(meta, path)
    if classes is not None:
        spec = spec.with_classes(classes)
    try:
        state_dict_from_spec_check(spec, state)
    except WeightsError as e:
        raise WeightsError(f"{path}: {e}") from None
    return Weights(state, spec, path)


def load_weights(model: Detector, source: str | os.PathLike | Weights | None, strict: bool = True) -> "LoadReport":
    """Load ``source`` (or weights :func:`read_weights` returned) into ``model`` in place; returns what loaded.

    ``strict``: every tensor, by name and shape, and the class list must be the model's. Not strict: the
    partial match of the module docstring; a file of which no tensor fits is an error.
    ``num_batches_tracked`` counters are not weights: they are left out of the report.
    """
    spec: ModelSpec = model.spec
    weights = source if isinstance(source, Weights) else read_weights(source, spec, strict)
    state = model.state_dict()
    if strict:
        if tuple(weights.spec.classes) != tuple(spec.classes):
            raise WeightsError(f"{weights.path} holds weights for the classes {list(weights.spec.classes)[:10]}, "
                               f"the model was built for {list(spec.classes)[:10]}; build it with "
                               "spec.with_classes(...) or load it with load_model")
        model.load_state_dict(weights.state, strict=True)
        return LoadReport(str(weights.path), _count_weights(state), loaded=_weight_keys(state))
    matched, report = match_state_dict(state, weights.state, str(weights.path))
    if not matched:
        raise WeightsError(f"{weights.path}: none of its {len(weights.state)} tensors fits {spec.name} (first file "
                           f"keys: {list(weights.state)[:3]}); is it a PP-YOLOE+ checkpoint?")
    report.missing = _weight_keys(report.missing)
    report.loaded = _weight_keys(report.loaded)
    report.total = _count_weights(state)
    with torch.no_grad():
        for k, v in matched.items():
            state[k].copy_(v)
    return report


def _weight_keys(keys: Sequence[str] | Mapping[str, torch.Tensor]) -> list[str]:
    return [k for k in keys if not k.endswith("num_batches_tracked")]


def _count_weights(state: Mapping[str, torch.Tensor]) -> int:
    return len(_weight_keys(state))


def classes_from_metadata(meta: Mapping[str, str], path: str | os.PathLike) -> tuple[str, ...] | None:
    """The class list a safetensors file of ours records (None if it records none), checked: ``classes`` is a
    JSON list of non-empty strings, as many as ``num_classes`` says when that is present."""
    if "classes" not in meta:
        return None
    text = meta["classes"]
    shown = text if len(text) <= 80 else text[:77] + "..."
    try:
        classes = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise WeightsError(f"{path}: the metadata entry 'classes' is not valid JSON ({shown!r}: {e}); it must be a "
                           'list of class names such as ["car", "van"]. Re-save the file.') from None
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) and c.strip() for c in classes)):
        raise WeightsError(f"{path}: the metadata entry 'classes' must be a non-empty list of non-empty strings, "
                           f"found {shown!r}. Re-save the file.")
    declared = meta.get("num_classes")
    if declared is not None and declared != str(len(classes)):
        raise WeightsError(f"{path}: the metadata says num_classes={declared!r} but lists {len(classes)} classes; "
                           "the file is inconsistent. Re-save it.")
    return tuple(classes)


# ------------------------------------------------------------------------------------------- partial match


@dataclass
class LoadReport:
    """What a partial load did; ``summary()`` is the text printed to the user and the log."""

    source: str
    total: int  # tensors in the model's state_dict
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # model keys the file has no tensor for
    mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)  # key: (file, model)
    unused: list[str] = field(default_factory=list)  # file keys no model key took

    def summary(self, limit: int = 12) -> str:
        lines = [f"pretrained weights {self.source}: loaded {len(self.loaded)}/{self.total} tensors"]
        kept = _group_kept(self.missing, self.mismatched)
        if kept:
            lines.append("  kept initial values: " + "; ".join(kept[:limit]) +
                         (f"; ... {len(kept) - limit} more groups" if len(kept) > limit else ""))
        if self.unused:
            groups = _group_keys(self.unused)
            lines.append(f"  not used from the file ({len(self.unused)}): " + ", ".join(
                f"{g} ({n})" for g, n in list(groups.items())[:limit]))
        return "\n".join(lines)


def _module_group(key: str, depth: int = 2) -> str:
    parts = key.split(".")
    return ".".join(parts[:depth]) + ".*" if len(parts) > depth else key


def _group_keys(keys: Sequence[str]) -> "OrderedDict[str, int]":
    groups: OrderedDict[str, int] = OrderedDict()
    for k in keys:
        g = _module_group(k)
        groups[g] = groups.get(g, 0) + 1
    return groups


def _group_kept(missing: Sequence[str], mismatched: Mapping[str, tuple]) -> list[str]:
    out = []
    for group, n in _group_keys(missing).items():
        out.append(f"{group} ({n} tensors, not in the file)")
    by_group: OrderedDict[str, list[str]] = OrderedDict()
    for k in mismatched:
        by_group.setdefault(_module_group(k), []).append(k)
    for group, keys in by_group.items():
        file_shape, model_shape = mismatched[keys[0]]
        if group == "yolo_head.pred_cls.*":
            why = f"{file_shape[0]}->{model_shape[0]} classes"
        elif group == "yolo_head.pred_reg.*":
            why = f"{file_shape[0]}->{model_shape[0]} regression channels"
        else:
            why = f"shape e.g. {list(file_shape)} in the file, {list(model_shape)} in the model"
        out.append(f"{group} ({len(keys)} tensors, {why})")
    return out


def match_state_dict(model_state: Mapping[str, torch.Tensor], weights: Mapping[str, torch.Tensor],
                     source: str = "weights") -> tuple[dict[str, torch.Tensor], LoadReport]:
    """The tensors of ``weights`` that fit ``model_state`` by the reference's suffix rule, and a report."""
    report = LoadReport(source=source, total=len(model_state))
    weight_keys = list(weights)
    taken: dict[str, str] = {}
    out: dict[str, torch.Tensor] = {}
    for mk, mv in model_state.items():
        if mk in weights:
            wk = mk
        else:
            candidates = [w for w in weight_keys if mk.endswith("." + w)]
            if not candidates:
                report.missing.append(mk)
                continue
            wk = max(candidates, key=len)
        if wk in taken:
            raise WeightsError(f"{source}: tensor {wk!r} matches both {taken[wk]!r} and {mk!r} in the model; "
                               f"the file's names are ambiguous for this model")
        taken[wk] = mk
        wv = weights[wk]
        if tuple(wv.shape) != tuple(mv.shape):
            report.mismatched[mk] = (tuple(wv.shape), tuple(mv.shape))
            continue
        out[mk] = wv.to(dtype=mv.dtype)
        report.loaded.append(mk)
    report.unused = [w for w in weight_keys if w not in taken]
    return out, report


def load_model(name: str = DEFAULT_MODEL, weights: str | os.PathLike | None = None,
               device: str | torch.device = "cpu") -> Detector:
    """A published model with weights loaded, in eval mode.

    ``weights=None`` downloads the official Paddle file once (progress bar), converts it and caches the result
    under ``$PPYOLOE_SOD_HOME`` (default ``~/.cache/ppyoloe_sod``). A safetensors file written by our training
    carries its class list, so a model fine-tuned on other classes loads with the right head.
    """
    loaded = read_weights(weights, get_spec(name), strict=True)
    model = build_model(loaded.spec)
    load_weights(model, loaded, strict=True)
    return model.to(device).eval()
