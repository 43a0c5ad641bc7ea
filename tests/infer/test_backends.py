"""Backends: the ONNX Runtime graph computes what the PyTorch network computes; use_hpip picks and caches it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from infer_synth import scene
from ppyoloe_sod.infer.backends import OnnxRuntimeBackend, TorchBackend, make_backend, onnx_cache_path

SIZE = (320, 320)


def _batch(n):
    imgs = [scene(*SIZE, seed=20 + i) for i in range(n)]
    return torch.from_numpy(np.stack([im[:, :, ::-1].transpose(2, 0, 1) for im in imgs]).astype(np.float32) / 255)


@pytest.mark.slow
def test_use_hpip_exports_caches_and_matches_torch(random_detector, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PPYOLOE_SOD_HOME", str(tmp_path))
    backend = make_backend(random_detector, torch.device("cpu"), use_hpip=True, model_name="PP-YOLOE_plus_SOD-S",
                           input_size=SIZE)
    assert isinstance(backend, OnnxRuntimeBackend) and backend.name == "onnxruntime"
    assert "CPUExecutionProvider" in backend.providers
    assert "ONNX Runtime" in capsys.readouterr().err  # the pick is announced
    path = backend.onnx_path
    assert path.parent == tmp_path / "onnx" and path.is_file() and "320x320" in path.name

    x = _batch(2)  # batch 2 through a graph exported with batch 1: the batch axis is dynamic
    ort_out = backend.run(x)
    torch_out = TorchBackend(random_detector, torch.device("cpu")).run(x)
    assert ort_out.cls_logits.shape == torch_out.cls_logits.shape == (2, 2100, 10)
    assert ort_out.reg_logits.shape == torch_out.reg_logits.shape == (2, 2100, 40)
    cls_diff = (ort_out.cls_logits - torch_out.cls_logits).abs().max().item()
    reg_diff = (ort_out.reg_logits - torch_out.reg_logits).abs().max().item()
    print(f"ONNX Runtime (fused) vs torch: max |d cls logit| {cls_diff:.2e}, max |d reg logit| {reg_diff:.2e}")
    scale = torch_out.cls_logits.abs().max().item()
    assert cls_diff < 1e-3 * max(1.0, scale) and reg_diff < 1e-3 * max(1.0, scale)

    # A second pick reuses the cached file instead of exporting again.
    mtime = path.stat().st_mtime_ns
    again = make_backend(random_detector, torch.device("cpu"), use_hpip=True, model_name="PP-YOLOE_plus_SOD-S",
                         input_size=SIZE)
    assert again.onnx_path == path and path.stat().st_mtime_ns == mtime


def test_torch_backend_is_the_default(random_detector):
    backend = make_backend(random_detector, torch.device("cpu"), use_hpip=False)
    assert isinstance(backend, TorchBackend) and backend.name == "torch"


def test_use_hpip_without_onnxruntime_falls_back_and_says_so(random_detector, monkeypatch, capsys):
    import ppyoloe_sod.infer.backends as backends

    monkeypatch.setattr(backends, "onnxruntime_available", lambda: False)
    backend = make_backend(random_detector, torch.device("cpu"), use_hpip=True)
    assert backend.name == "torch"
    assert "onnxruntime is not installed" in capsys.readouterr().err


def test_cache_key_changes_with_weights(random_detector):
    import copy

    from ppyoloe_sod.infer.backends import weights_digest

    other = copy.deepcopy(random_detector)
    with torch.no_grad():
        other.yolo_head.pred_cls[0].bias.add_(1.0)
    assert weights_digest(other) != weights_digest(random_detector)
    assert weights_digest(copy.deepcopy(random_detector)) == weights_digest(random_detector)


def test_use_hpip_pick_is_shown_once(monkeypatch, capsys):
    """Without onnxruntime the fallback is announced: printed when nothing shows INFO logs, logged (only) when
    something does, as the command line sets up."""
    import io
    import logging

    from ppyoloe_sod.infer import backends

    monkeypatch.setattr(backends, "onnxruntime_available", lambda: False)
    detector = torch.nn.Identity()
    make_backend(detector, torch.device("cpu"), use_hpip=True)
    assert capsys.readouterr().err.count("use_hpip: onnxruntime is not installed") == 1

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.INFO)  # setLevel, not an attribute: it clears the loggers' cached levels
    root.addHandler(handler)
    try:
        make_backend(detector, torch.device("cpu"), use_hpip=True)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    shown = capsys.readouterr().err + stream.getvalue()
    assert shown.count("use_hpip: onnxruntime is not installed") == 1
