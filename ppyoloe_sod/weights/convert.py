"""Paddle <-> torch state_dict conversion: a pure mapping by name, with shape checks and model detection.

Our module tree uses PaddleDetection's names, so a key maps one to one except for:
- BatchNorm statistics: ``_mean`` / ``_variance`` <-> ``running_mean`` / ``running_var``
  (torch's ``num_batches_tracked`` has no Paddle counterpart: set to 0 on import, dropped on export);
- Linear weights (transformer FFN and attention out_proj): Paddle [in, out] <-> torch [out, in];
- the attention input projection: Paddle ``in_proj_weight`` [E, 3E] (q | k | v column blocks) <-> torch [3E, E].
Nothing loads partly: any missing, unexpected or mis-shaped key raises a ``WeightsError`` that lists them all.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping

import numpy as np
import torch

from ..errors import WeightsError, hint
from ..zoo import ArchSpec, ModelSpec, get_spec, list_models
from .formats import check_finite, check_weight_dtypes

_BN_TO_TORCH = {"_mean": "running_mean", "_variance": "running_var"}
_BN_TO_PADDLE = {v: k for k, v in _BN_TO_TORCH.items()}
PADDLE_META_KEY = "StructuredToParameterName@@"


def is_transposed_linear(key: str) -> bool:
    """Keys whose 2-D weight is stored [in, out] by Paddle (every nn.Linear and the fused attention input)."""
    return key.endswith("self_attn.in_proj_weight") or (
        ".encoder." in f".{key}" and key.endswith(".weight") and any(
            part in key for part in ("linear1.", "linear2.", "out_proj.")))


def paddle_key_to_torch(key: str) -> str:
    prefix, _, leaf = key.rpartition(".")
    return f"{prefix}.{_BN_TO_TORCH[leaf]}" if leaf in _BN_TO_TORCH else key


def torch_key_to_paddle(key: str) -> str:
    prefix, _, leaf = key.rpartition(".")
    return f"{prefix}.{_BN_TO_PADDLE[leaf]}" if leaf in _BN_TO_PADDLE else key


@dataclass
class ConvertedWeights:
    state_dict: dict[str, torch.Tensor]
    model_name: str


def _shape_signature(shapes: Mapping[str, tuple[int, ...]]) -> tuple:
    """What tells the published models apart: head and encoder sizes, backbone depth and width."""
    def get(k: str) -> tuple[int, ...] | None:
        return tuple(shapes[k]) if k in shapes else None
    stage1_blocks = len({k.split(".")[4] for k in shapes if k.startswith("backbone.stages.1.blocks.")})
    return (get("backbone.stem.conv1.conv.weight"), stage1_blocks, get("yolo_head.pred_cls.0.weight"),
            get("yolo_head.pred_reg.0.weight"), "neck.encoder.layers.0.norm1.weight" in shapes)


@lru_cache(maxsize=None)
def _arch_state_shapes(arch: ArchSpec) -> dict[str, tuple[int, ...]]:
    """Torch-side state_dict shapes of an architecture (built once, on the meta device: no memory, no init)."""
    from ..nn.detector import Detector
    with torch.device("meta"):
        net = Detector(arch)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def _expected_state(model: str | ModelSpec) -> dict[str, tuple[int, ...]]:
    spec = model if isinstance(model, ModelSpec) else get_spec(model)
    return _arch_state_shapes(spec.arch)


@lru_cache(maxsize=None)
def _published_signature(name: str) -> tuple:
    """The shape signature of a published model, in Paddle's names and layouts."""
    shapes = {torch_key_to_paddle(k): _other_layout(k, shape) for k, shape in _expected_state(name).items()
              if not k.endswith("num_batches_tracked")}
    return _shape_signature(shapes)


def detect_model(shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    """The published model whose Paddle shapes match these (keys -> shapes), or None."""
    sig = _shape_signature(shapes)
    return next((name for name in list_models() if _published_signature(name) == sig), None)


def _other_layout(key: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """``shape`` in the other framework's layout: 2-D Linear weights are transposed between Paddle and torch."""
    shape = tuple(shape)
    return shape[::-1] if len(shape) == 2 and is_transposed_linear(key) else shape


def rename_paddle_tensors(pd_state: Mapping[str, np.ndarray], source: str = "weights") -> dict[str, torch.Tensor]:
    """Paddle names and layouts -> ours as float32 tensors, with no check against a model (for partial loads).

    Weights must be floating point (``WeightsError`` listing the others, before anything is converted) and
    finite once in float32 (a float64 beyond float32's range becomes infinite, so it counts as non-finite).
    """
    pd_state = {k: np.asarray(v) for k, v in pd_state.items() if k != PADDLE_META_KEY}
    check_weight_dtypes({pk: arr.dtype.kind for pk, arr in pd_state.items()}, source)
    out: dict[str, torch.Tensor] = {}
    for pk, arr in pd_state.items():
        tk = paddle_key_to_torch(pk)
        if arr.ndim == 2 and is_transposed_linear(tk):
            arr = arr.T
        out[tk] = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    check_finite(out, source)
    return out


def paddle_to_torch(pd_state: Mapping[str, np.ndarray], model_name: str | None = None,
                    source: str = "weights") -> ConvertedWeights:
    """Convert a Paddle state (name -> array) to our state_dict; every key and shape must match the model.

    ``model_name`` None means: detect it from the shapes. A given name that disagrees with what the shapes say
    is an error naming both. Names and shapes are checked before any array is converted to float32.
    """
    pd_state = {k: v for k, v in pd_state.items() if k != PADDLE_META_KEY}
    shapes = {k: tuple(np.shape(v)) for k, v in pd_state.items()}
    detected = detect_model(shapes)
    if model_name is None:
        if detected is None:
            raise WeightsError(f"{source}: the tensor shapes match none of the published models "
                               f"({', '.join(list_models())}); pass the model name explicitly to see which keys differ")
        model_name = detected
    else:
        model_name = get_spec(model_name).name
        if detected is not None and detected != model_name:
            raise WeightsError(f"{source} holds weights of {detected}, not {model_name}: "
                               + hint(python=f"use load_model('{detected}', ...)",
                                      cli=f"use -o Global.model={detected}", convert_weights=f"use --model {detected}"))

    expected = _expected_state(model_name)
    file_keys = {paddle_key_to_torch(pk): pk for pk in pd_state}  # our name -> the file's
    missing, mismatched = [], []
    for tk, shape in expected.items():
        if tk.endswith("num_batches_tracked"):
            continue
        if tk not in file_keys:
            missing.append(torch_key_to_paddle(tk))
        elif _other_layout(tk, shapes[file_keys[tk]]) != shape:
            pk = file_keys[tk]
            mismatched.append(f"{pk}: file {shapes[pk]}, model expects {_other_layout(tk, shape)}")
    unexpected = sorted(pk for tk, pk in file_keys.items() if tk not in expected)
    if missing or unexpected or mismatched:
        raise WeightsError(_mismatch_report(source, model_name, missing, unexpected, mismatched))
    renamed = rename_paddle_tensors(pd_state, source)
    out = {tk: torch.zeros((), dtype=torch.long) if tk.endswith("num_batches_tracked") else renamed[tk]
           for tk in expected}  # BatchNorm's step counters (no Paddle counterpart) start at 0
    return ConvertedWeights(out, model_name)


def _mismatch_report(source: str, model_name: str, missing: list[str], unexpected: list[str],
                     mismatched: list[str], limit: int = 20) -> str:
    lines = [f"{source} does not fit {model_name}; nothing was loaded."]
    for title, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if items:
            lines.append(f"  {title} ({len(items)}):")
            lines += [f"    {x}" for x in items[:limit]]
            if len(items) > limit:
                lines.append(f"    ... and {len(items) - limit} more")
    return "\n".join(lines)


def torch_to_paddle(state_dict: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Our state_dict -> Paddle names and layouts (float32 numpy), ready for ``save_pdparams``."""
    out = {}
    for tk, t in state_dict.items():
        if tk.endswith("num_batches_tracked"):
            continue
        arr = t.detach().cpu().float().numpy()
        if is_transposed_linear(tk) and arr.ndim == 2:
            arr = arr.T
        out[torch_key_to_paddle(tk)] = np.ascontiguousarray(arr)
    return out


def state_dict_from_spec_check(spec: ModelSpec, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Raise a WeightsError listing every difference between a torch state_dict and the model's."""
    expected = _expected_state(spec)
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [f"{k}: file {tuple(state_dict[k].shape)}, model expects {expected[k]}"
                  for k in expected if k in state_dict and tuple(state_dict[k].shape) != expected[k]]
    if missing or unexpected or mismatched:
        raise WeightsError(_mismatch_report("state_dict", spec.name, missing, unexpected, mismatched))
