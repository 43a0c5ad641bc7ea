"""The starting weights of the network to train (built by ``models.build_model``).

- :func:`load_pretrained`: the reference's partial-match start (``ppdet`` ``match_state_dict``): each model key
  takes the file's tensor of the same name, else the longest file key it ends with (``a.endswith('.' + b)``);
  tensors whose shape differs and keys the file lacks keep their initial values. A summary says what loaded
  and what did not, grouped by module.

Sources: a ``.pdparams`` file (Paddle names, converted tensor by tensor), our ``.safetensors``, a folder holding
one, an http(s) URL, or a published model name (its official file, downloaded once).
"""
from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import torch

from ..errors import WeightsError, hint
from ..models import WEIGHT_SUFFIXES, resolve_weights_path
from ..weights.convert import rename_paddle_tensors
from ..weights.pdparams import load_pdparams
from ..weights.store import fetch_weights, load_safetensors
from ..zoo import get_spec, list_models

# ------------------------------------------------------------------------------------------- reading files


def _resolve_source(source: str | os.PathLike) -> Path:
    text = str(source)
    if _is_model_alias(text):
        spec = get_spec(text)
        try:
            return fetch_weights(spec.weights_url, spec.sha256, official=True)
        except WeightsError as e:  # typically offline: other starting points need no download
            raise WeightsError(f"{e} Or start from a local file with " + hint(
                python="TrainOptions(pretrain_weight_path='FILE.pdparams') (a .pdparams or .safetensors file), or "
                       "from random initialisation with pretrain_weight_path=None.",
                cli="-o Train.pretrain_weight_path=FILE.pdparams (a .pdparams or .safetensors file), or from "
                    "random initialisation with -o Train.pretrain_weight_path=random.")) from e
    try:
        return resolve_weights_path(text)
    except WeightsError as e:
        raise WeightsError(f"pretrained weights {text!r}: {e}. Give a .pdparams / .safetensors file, a folder "
                           f"holding one, an http(s) URL, or a model name ({', '.join(list_models())})") from e


def _is_model_alias(text: str) -> bool:
    try:
        get_spec(text)
    except KeyError:
        return False
    return "/" not in text and "\\" not in text and not text.endswith(WEIGHT_SUFFIXES)


def read_weights(source: str | os.PathLike) -> tuple[dict[str, torch.Tensor], str]:
    """The tensors of a weights source under our names, and the file they came from."""
    path = _resolve_source(source)
    if path.suffix == ".pdparams":
        return rename_paddle_tensors(load_pdparams(path), str(path)), str(path)
    state, _ = load_safetensors(path)
    return state, str(path)


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


def load_pretrained(model: torch.nn.Module, source: str | os.PathLike) -> LoadReport:
    """Partially load ``source`` into ``model`` in place (see the module docstring); returns the report.

    ``num_batches_tracked`` counters are not weights: when the file lacks them they are not reported missing.
    """
    weights, path = read_weights(source)
    state = model.state_dict()
    matched, report = match_state_dict(state, weights, path)
    if not matched:
        raise WeightsError(f"{path}: none of its {len(weights)} tensors fits {getattr(model.spec, 'name', 'the model')}"
                           f" (first file keys: {list(weights)[:3]}); is it a PP-YOLOE+ checkpoint?")
    report.missing = [k for k in report.missing if not k.endswith("num_batches_tracked")]
    report.total = sum(1 for k in state if not k.endswith("num_batches_tracked"))
    report.loaded = [k for k in report.loaded if not k.endswith("num_batches_tracked")]
    with torch.no_grad():
        for k, v in matched.items():
            state[k].copy_(v)
    return report
