"""The GPU fast path, where a CPU can check it: the fixed-shape NMS gives multiclass_nms's rows bit for bit (or
says it cannot and the exact NMS runs), the fast detector matches the plain one in float32, falls back from
CUDA graphs / torch.compile on the CPU with a note and refuses fp16 there; the GPU check script says it
measured nothing without a GPU. Speed, CUDA graphs and fp16 / bf16 on a GPU are measured by
benchmarks/gpu_check.py on a GPU machine."""
from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from infer_synth import MODEL, scene
from ppyoloe_sod import boxes as box_ops
from ppyoloe_sod.errors import ConfigError
from ppyoloe_sod.infer.gpu_fast import FastDetector, FastOptions, create_fast_model, finish, static_postprocess
from ppyoloe_sod.zoo import NMSSpec

ROOT = Path(__file__).resolve().parents[2]


def _raw(seed: int, batch: int = 2, classes: int = 3, bins: int = 17, ties: bool = False, offset: float = -1.0):
    """Head outputs for two levels (8x8 at stride 8, 4x4 at stride 16): large boxes that overlap in long
    chains, so greedy NMS has real decisions to make. ``ties``: scores on a coarse grid (many equal)."""
    g = torch.Generator().manual_seed(seed)
    points, strides = [], []
    for size, stride in ((8, 8), (4, 16)):
        ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
        points.append(torch.stack([xs, ys], -1).reshape(-1, 2) * stride)
        strides.append(torch.full((size * size, 1), float(stride)))
    points, strides = torch.cat(points), torch.cat(strides)
    cls = torch.randn(batch, len(points), classes, generator=g) * 2 + offset
    if ties:
        cls = (cls * 2).round() / 2
    reg = torch.randn(batch, len(points), 4 * bins, generator=g) * 2
    proj = torch.arange(bins, dtype=torch.float32)
    scale_factor = torch.tensor([[0.5, 0.25], [2.0, 1.0]])[:batch]
    return cls, reg, points, strides, proj, scale_factor


@pytest.mark.parametrize("seed, ties, nms, max_candidates, rounds, decided", [
    (0, False, NMSSpec(), 10_000, 32, True),  # every candidate considered
    (1, True, NMSSpec(), 10_000, 32, True),  # equal scores: class, then anchor decides the order
    (2, False, NMSSpec(keep_top_k=10), 64, 32, True),  # keep_top_k reached within the first 64 candidates
    (3, False, NMSSpec(), 8, 32, False),  # too few candidates considered: exact NMS on those images
    (4, False, NMSSpec(iou_threshold=0.3), 10_000, 1, False),  # too few rounds: exact NMS on those images
    (5, False, NMSSpec(score_threshold=0.5, nms_top_k=50, keep_top_k=7), 40, 32, True),
])
def test_static_nms_gives_multiclass_nms_rows(seed, ties, nms, max_candidates, rounds, decided):
    cls, reg, points, strides, proj, sf = _raw(seed, ties=ties)
    expected = box_ops.postprocess(cls, reg, points, strides, proj, sf, nms)
    static = static_postprocess(cls, reg, points, strides, proj, sf, nms, max_candidates, rounds)
    assert static.exact.tolist() == [decided] * 2
    got = finish(static, nms)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.shape[0] > 0 and torch.equal(a, b)


def test_static_nms_without_candidates():
    cls, reg, points, strides, proj, sf = _raw(6, offset=-30.0)
    static = static_postprocess(cls, reg, points, strides, proj, sf)
    assert static.counts.tolist() == [0, 0] and static.exact.all()
    assert [d.shape for d in finish(static)] == [(0, 6), (0, 6)]


@pytest.fixture(scope="module")
def fused(random_detector):
    import copy

    return copy.deepcopy(random_detector).fuse()


def test_fast_detector_on_cpu_matches_the_plain_path(fused, caplog):
    x = torch.from_numpy(scene(96, 128, seed=3)[:, :, ::-1].transpose(2, 0, 1).copy()).float()[None] / 255
    x = torch.cat([x, x.flip(3)])
    sf = torch.tensor([[0.5, 0.5], [1.0, 2.0]])
    with caplog.at_level(logging.WARNING):
        fast = FastDetector(fused, "cpu", FastOptions(precision="fp32", channels_last=False, compile=True))
    assert "CUDA graphs need a GPU" in caplog.text and "torch.compile" in caplog.text
    assert not fast.options.cuda_graphs and not fast.options.compile
    with torch.no_grad():
        raw = fused(x)
    run = fast.run(x)
    assert torch.equal(run.cls_logits, raw.cls_logits) and torch.equal(run.reg_logits, raw.reg_logits)
    points, strides = fused.anchors(96, 128)
    expected = box_ops.postprocess(raw.cls_logits, raw.reg_logits, points, strides, fused.proj, sf, fused.spec.nms)
    got = fast.detect(x, sf)
    assert all(torch.equal(a, b) for a, b in zip(got, expected)) and sum(len(d) for d in got) > 0
    # channels-last is a memory layout: the same numbers up to summation order
    cl = FastDetector(fused, "cpu", FastOptions(precision="fp32", channels_last=True, cuda_graphs=False)).run(x)
    torch.testing.assert_close(cl.cls_logits, raw.cls_logits, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(cl.reg_logits, raw.reg_logits, rtol=1e-4, atol=1e-3)
    assert next(fused.parameters()).dtype is torch.float32  # the detector given is copied, not converted


@pytest.mark.parametrize("options, needle", [
    (FastOptions(precision="fp16"), "'fp16' needs a GPU"),
    (FastOptions(precision="int8"), "runs fp32, fp16, bf16"),
    (FastOptions(precision="fp32", max_candidates=0), "must be positive"),
])
def test_fast_detector_refusals(fused, options, needle):
    with pytest.raises(ConfigError, match=needle):
        FastDetector(fused, "cpu", options)


def test_fast_predictor_predicts_what_the_predictor_predicts(fused):
    from ppyoloe_sod.infer.backends import TorchBackend
    from ppyoloe_sod.infer.gpu_fast import FastDetPredictor
    from ppyoloe_sod.infer.predictor import DetPredictor

    labels, size = fused.spec.classes, (192, 256)
    fast = FastDetector(fused, "cpu", FastOptions(precision="fp32", channels_last=False))
    predictor = FastDetPredictor(fast, fast, MODEL, labels, size, 0.3)
    reference = DetPredictor(fused, TorchBackend(fused, "cpu"), MODEL, labels, size, 0.3)
    images = [scene(200, 300, seed=11), scene(150, 120, seed=12)]
    got = [r.boxes for r in predictor.predict(images, batch_size=2)]
    assert got == [r.boxes for r in reference.predict(images, batch_size=2)] and sum(map(len, got)) > 0


def test_create_fast_model_wires_the_fast_path(sod_s_weights):
    from ppyoloe_sod.infer.gpu_fast import FastDetPredictor

    predictor = create_fast_model(MODEL, model_dir=sod_s_weights, device="cpu", threshold=0.4,
                                  options=FastOptions(precision="bf16", cuda_graphs=False))
    assert isinstance(predictor, FastDetPredictor) and isinstance(predictor.backend, FastDetector)
    assert predictor.threshold == 0.4 and predictor.input_size == (640, 640)
    assert next(predictor.backend.model.parameters()).dtype is torch.bfloat16
    assert "bf16, channels-last, eager" in predictor.backend.describe()


def test_gpu_check_without_a_gpu_measures_nothing(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the script would measure it")
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "no GPU: nothing measured" in result.stdout
    assert "no GPU: nothing measured" in (tmp_path / "gpu_check.md").read_text()
