"""The reverse conversion against the Paddle oracle: our weights -> tools/convert_weights.py -> .pdparams ->
paddle.load + set_state_dict into a fresh ppdet model -> the same head outputs as ours.

Tolerances (issue 2): class scores 1e-5 absolute, DFL distances 1e-4 relative (max |diff| / max |ref|).
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest
import torch

from ppyoloe_sod import boxes as B

from weights_synth import randomized_model, write_safetensors

from .ppdet_reference import build

pytestmark = pytest.mark.oracle

S = "PP-YOLOE_plus_SOD-S"
TOOL = Path(__file__).resolve().parents[2] / "tools" / "convert_weights.py"
SCORE_ATOL = 1e-5
DIST_RTOL = 1e-4


def _tool():
    spec = importlib.util.spec_from_file_location("convert_weights_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_our_weights_load_into_ppdet_and_give_the_same_head_outputs(tmp_path) -> None:
    ours = randomized_model(S, seed=21)
    src = write_safetensors(ours, tmp_path / "finetuned.safetensors")
    dst = tmp_path / "finetuned.pdparams"
    assert _tool().main([str(src), "-o", str(dst)]) == 0

    pd_model = build(S, seed=4)  # its own random weights: every one must be replaced by the file's
    state = paddle.load(str(dst))
    missing, unexpected = pd_model.set_state_dict(state)
    assert list(missing) == [] and list(unexpected) == [], (missing, unexpected)
    loaded = pd_model.state_dict()
    assert sorted(loaded) == sorted(state)
    not_equal = [k for k, v in state.items() if not np.array_equal(loaded[k].numpy(), np.asarray(v))]
    assert not_equal == [], not_equal[:5]

    image = np.random.default_rng(22).uniform(0, 1, (1, 3, 320, 320)).astype("float32")
    with paddle.no_grad():
        _, pans = pd_model.features(image)
        pd_scores, pd_dist, _, _ = (t.numpy() for t in pd_model.yolo_head(pans))
    with torch.no_grad():
        raw = ours(torch.from_numpy(image))
    scores = raw.cls_logits.sigmoid().transpose(1, 2).numpy()
    dist = B.dfl_distances(raw.reg_logits, ours.proj).numpy()

    score_diff = float(np.abs(scores - pd_scores).max())
    dist_rel = float(np.abs(dist - pd_dist).max() / np.abs(pd_dist).max())
    print(f"\n{S} 320x320 after the reverse conversion: scores max |diff| {score_diff:.3g}, "
          f"distances max rel diff {dist_rel:.3g} (score spread {pd_scores.std():.3g})")
    assert pd_scores.shape == (1, 10, 2100) and pd_scores.std() > 1e-3  # outputs that depend on the weights
    assert score_diff < SCORE_ATOL
    assert dist_rel < DIST_RTOL
