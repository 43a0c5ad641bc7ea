"""Build a published model and load weights into it from any source a user has.

Sources: nothing (the official file, downloaded once and cached as safetensors), a local ``.pdparams``
(converted on the fly), a local ``.safetensors`` (ours), a folder holding one of those, or an http(s) URL of
either. Every path ends in a strict ``load_state_dict``: weights never load partly.
"""
from __future__ import annotations

import json
import os
import urllib.parse
from pathlib import Path
from typing import Mapping

import torch

from .errors import WeightsError, hint
from .nn.detector import Detector
from .weights.convert import paddle_to_torch, state_dict_from_spec_check
from .weights.pdparams import load_pdparams
from .weights.store import cache_dir, fetch_weights, load_safetensors, save_safetensors, sha256_file
from .zoo import DEFAULT_MODEL, ModelSpec, get_spec

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


def resolve_weights_path(weights: str | os.PathLike) -> Path:
    """A local weights file for a file path, a folder holding one, or an http(s) URL (downloaded once)."""
    text = str(weights)
    if urllib.parse.urlparse(text).scheme in ("http", "https"):
        return fetch_weights(text)
    path = Path(text).expanduser()
    if path.is_dir():
        path = _find_weights_in_dir(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    if path.suffix not in WEIGHT_SUFFIXES:
        raise WeightsError(f"{path}: unknown weights format {path.suffix!r}; expected one of {WEIGHT_SUFFIXES}")
    return path


def load_state_dict(spec: ModelSpec, weights: str | os.PathLike | None) -> tuple[dict[str, torch.Tensor], ModelSpec]:
    """Resolve ``weights`` to a checked torch state_dict and the spec it fits: ``spec`` itself, or ``spec`` with
    the class list recorded in a fine-tuned safetensors file."""
    if weights is None:
        cached = cache_dir() / f"{spec.name}.safetensors"
        if not cached.is_file():
            pdparams = fetch_weights(spec.weights_url, spec.sha256, official=True)
            convert_pdparams_file(pdparams, cached, spec.name)
        weights = cached
    path = resolve_weights_path(weights)
    if path.suffix == ".pdparams":
        return paddle_to_torch(load_pdparams(path), spec.name, source=str(path)).state_dict, spec
    state, meta = load_safetensors(path)
    owner = meta.get("model_name")
    if owner is not None and owner != spec.name:
        raise WeightsError(f"{path} holds weights of {owner}, not {spec.name}: load it with "
                           + hint(python=f"load_model('{owner}', ...)", cli=f"-o Global.model={owner}"))
    classes = classes_from_metadata(meta, path)
    if classes is not None:
        spec = spec.with_classes(classes)
    state_dict_from_spec_check(spec, state)
    return state, spec


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


def load_model(name: str = DEFAULT_MODEL, weights: str | os.PathLike | None = None,
               device: str | torch.device = "cpu") -> Detector:
    """A published model with weights loaded, in eval mode.

    ``weights=None`` downloads the official Paddle file once (progress bar), converts it and caches the result
    under ``$PPYOLOE_SOD_HOME`` (default ``~/.cache/ppyoloe_sod``). A safetensors file written by our training
    carries its class list, so a model fine-tuned on other classes loads with the right head.
    """
    state, spec = load_state_dict(get_spec(name), weights)
    model = build_model(spec)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()
