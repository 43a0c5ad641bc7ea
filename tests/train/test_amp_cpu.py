"""Train.amp on the CPU: the precision each mode gives, and bf16 autocast steps that stay close to float32."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from ppyoloe_sod.errors import ConfigError
from ppyoloe_sod.infer import cpu_fast
from ppyoloe_sod.models import build_model
from ppyoloe_sod.train.engine import Trainer

from train_synth import draw_image, tiny_spec

SIZE = 64
NATIVE_BF16, NATIVE_WHY = cpu_fast.cpu_bf16_support()


pytestmark = pytest.mark.usefixtures("one_thread")


def _trainer(amp: str) -> Trainer:
    torch.manual_seed(0)
    return Trainer.build(build_model(tiny_spec(SIZE)), 0.01, iters_per_epoch=1, warmup_iters=1, amp=amp)


@pytest.fixture()
def bf16_cpu(monkeypatch):
    monkeypatch.setattr(cpu_fast, "cpu_bf16_support", lambda: (True, "AMX-BF16"))


@pytest.fixture()
def fp32_only_cpu(monkeypatch):
    monkeypatch.setattr(cpu_fast, "cpu_bf16_support", lambda: (False, "the CPU has neither AMX-BF16 nor "
                                                                      "AVX512-BF16, so bf16 would be emulated"))


def test_bf16_on_a_cpu_with_native_bf16_autocasts_in_channels_last(bf16_cpu):
    trainer = _trainer("bf16")
    assert trainer.amp_dtype == torch.bfloat16 and trainer.channels_last and trainer.scaler is None


@pytest.mark.parametrize("mode", ["auto", "off"])
def test_auto_and_off_train_in_float32_on_the_cpu_even_with_native_bf16(bf16_cpu, mode):
    trainer = _trainer(mode)
    assert trainer.amp_dtype is None and not trainer.channels_last


def test_bf16_on_a_cpu_without_native_bf16_is_refused(fp32_only_cpu):
    with pytest.raises(ConfigError, match=r"Train\.amp=bf16 was asked for on the CPU, but the CPU has neither "
                                          r"AMX-BF16 nor AVX512-BF16.*use TrainConfig\(amp='off'\)"):
        _trainer("bf16")


def test_auto_on_a_cpu_without_native_bf16_trains_in_float32(fp32_only_cpu):
    assert _trainer("auto").amp_dtype is None


def test_fp16_on_the_cpu_is_refused(bf16_cpu):
    with pytest.raises(ConfigError, match=r"Train\.amp=fp16 runs on CUDA only; on the CPU use "
                                          r"TrainConfig\(amp='off'\)"):
        _trainer("fp16")


def _batch() -> dict[str, torch.Tensor]:
    """Two generated scenes with three objects each, as the loader hands them over."""
    rng = np.random.default_rng(0)
    scenes = [draw_image(rng, SIZE, 3) for _ in range(2)]
    n = max(len(boxes) for _, boxes, _ in scenes)
    labels, boxes, mask = torch.zeros(2, n, 1, dtype=torch.int64), torch.zeros(2, n, 4), torch.zeros(2, n, 1)
    for i, (_, b, c) in enumerate(scenes):
        labels[i, :len(c), 0], boxes[i, :len(b)], mask[i, :len(b)] = torch.tensor(c), torch.tensor(b), 1
    images = torch.from_numpy(np.stack([img for img, _, _ in scenes])).permute(0, 3, 1, 2).float() / 255
    return {"images": images, "gt_labels": labels, "gt_boxes": boxes, "pad_mask": mask}


@pytest.mark.skipif(not NATIVE_BF16, reason=f"this CPU has no native bf16: {NATIVE_WHY}")
def test_bf16_autocast_steps_are_finite_and_close_to_float32():
    batch = _batch()
    losses: dict[str, list[float]] = {}
    conv_dtypes: dict[str, set[torch.dtype]] = {}
    for amp in ("off", "bf16"):
        trainer = _trainer(amp)
        first_conv = next(m for m in trainer.net.modules() if isinstance(m, nn.Conv2d))
        seen: set[torch.dtype] = set()
        first_conv.register_forward_hook(lambda _m, _i, out, seen=seen: seen.add(out.dtype))
        torch.manual_seed(1)  # the same dropout draws in both runs
        losses[amp] = [trainer.step(batch, i)["loss"] for i in range(3)]
        conv_dtypes[amp] = seen
    print("losses float32", losses["off"], "bf16 autocast", losses["bf16"])
    assert conv_dtypes == {"off": {torch.float32}, "bf16": {torch.bfloat16}}  # it did run in bf16
    assert all(math.isfinite(v) for v in losses["bf16"])
    for ref, low in zip(losses["off"], losses["bf16"]):
        assert abs(low - ref) < 0.02 * ref
