"""Optimiser groups, LR curve and EMA against the reference formulas, and against ppdet (oracle-marked)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from ppyoloe_sod.errors import ConfigError
from ppyoloe_sod.train.optim import ModelEMA, WarmupCosine, build_optimizer, param_groups, scale_lr


class Toy(nn.Module):
    """Every kind of parameter the detector has: conv (+bias), BN, Linear, LayerNorm, a scalar alpha, proj."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Conv2d(4, 4, 1)
        self.sync_bn = nn.SyncBatchNorm(4)
        self.linear = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.alpha = nn.Parameter(torch.ones(1))
        self.frozen = nn.Parameter(torch.ones(2), requires_grad=False)
        self.proj_conv = nn.Module()
        self.proj_conv.register_buffer("weight", torch.linspace(-2, 7, 10).reshape(1, 10, 1, 1))


def test_param_groups_exempt_only_batchnorm() -> None:
    model = Toy()
    groups = {g["name"]: g for g in param_groups(model, 5e-4)}
    names = {id(p): n for n, p in model.named_parameters()}
    decay = sorted(names[id(p)] for p in groups["decay"]["params"])
    no_decay = sorted(names[id(p)] for p in groups["no_decay"]["params"])
    assert no_decay == ["bn.bias", "bn.weight", "sync_bn.bias", "sync_bn.weight"]
    assert decay == ["alpha", "conv.weight", "fc.bias", "fc.weight", "linear.bias", "linear.weight",
                     "norm.bias", "norm.weight"]
    assert groups["decay"]["weight_decay"] == 5e-4 and groups["no_decay"]["weight_decay"] == 0.0


def test_sgd_step_is_momentum_with_coupled_decay() -> None:
    torch.manual_seed(0)
    model = Toy()
    opt = build_optimizer(model, base_lr=0.1)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    start = {n: p.detach().clone() for n, p in params.items()}
    grads = [{n: torch.randn_like(p) for n, p in params.items()} for _ in range(3)]
    lrs = [0.1, 0.05, 0.02]
    for g, lr in zip(grads, lrs):
        for n, p in params.items():
            p.grad = g[n].clone()
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
    for n in params:
        wd = 0.0 if n.startswith(("bn.", "sync_bn.")) else 5e-4
        x, v = start[n].clone(), torch.zeros_like(start[n])
        for g, lr in zip(grads, lrs):
            v = 0.9 * v + g[n] + wd * x
            x = x - lr * v
        torch.testing.assert_close(params[n].detach(), x, rtol=1e-6, atol=1e-7)


def _reference_lr(base: float, i: int, warm: int, total: int) -> float:
    if i < warm:
        return base * i / warm
    i = min(i, total - 1)
    return base * 0.5 * (1 + math.cos(math.pi * (i - warm) / (total - warm)))


def test_warmup_cosine_curve() -> None:
    ipe = 50
    sched = WarmupCosine.for_training(0.01, iters_per_epoch=ipe, warmup_epochs=1, max_epochs=96)
    assert (sched.warmup_iters, sched.total_iters) == (50, 96 * 50)
    for i in list(range(0, 120)) + list(range(3990, 4010)) + [80 * ipe - 1, 96 * ipe - 1, 96 * ipe, 10**6]:
        assert sched(i) == pytest.approx(_reference_lr(0.01, i, 50, 96 * 50), rel=1e-12, abs=1e-15)
    assert sched(0) == 0.0 and sched(50) == pytest.approx(0.01)
    # stopping at 80 of 96 epochs leaves about 7% of the base LR
    assert sched(80 * ipe - 1) / 0.01 == pytest.approx(0.5 * (1 + math.cos(math.pi * (3950 - 1) / 4750)), rel=1e-9)
    assert 0.06 < sched(80 * ipe - 1) / 0.01 < 0.075
    lrs = [sched(i) for i in range(96 * ipe)]
    assert all(b >= a for a, b in zip(lrs[:50], lrs[1:51])) and all(b <= a for a, b in zip(lrs[50:], lrs[51:]))
    opt = build_optimizer(Toy(), 0.01)
    assert sched.apply(opt, 25) == pytest.approx(0.005)
    assert all(g["lr"] == pytest.approx(0.005) for g in opt.param_groups)
    assert WarmupCosine(0.1, warmup_iters=0, total_iters=10)(0) == 0.0  # warmup is at least one step
    assert WarmupCosine(0.1, warmup_iters=5, total_iters=5)(7) == pytest.approx(0.1)


def test_scale_lr() -> None:
    assert scale_lr(0.01, 8) == pytest.approx(0.00125)
    assert scale_lr(0.01, 64) == pytest.approx(0.01)
    assert scale_lr(0.00125, 16, reference_batch=8) == pytest.approx(0.0025)
    with pytest.raises(ConfigError, match="total_batch=0"):
        scale_lr(0.01, 0)


def _randomise(model: nn.Module, gen: torch.Generator) -> None:
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if v.is_floating_point() and "proj_conv" not in k:
                v.copy_(torch.randn(v.shape, generator=gen))
            elif k.endswith("num_batches_tracked"):
                v.add_(1)


def test_ema_follows_the_reference_formula() -> None:
    model = Toy()
    gen = torch.Generator().manual_seed(0)
    ema = ModelEMA(model, decay=0.9)
    assert "proj_conv.weight" not in ema.shadow and "bn.running_mean" in ema.shadow
    history, decays = [], []
    for t in range(120):
        _randomise(model, gen)
        history.append({k: v.clone() for k, v in model.state_dict().items()})
        decays.append(min(0.9, (1 + t) / (10 + t)))
        ema.update(model)
    out = ema.state_dict_for_export()
    assert list(out) == list(model.state_dict())
    for key in ("conv.weight", "bn.running_var", "bn.weight", "norm.bias", "alpha", "linear.weight"):
        acc = torch.zeros_like(history[0][key])
        for x, d in zip(history, decays):
            acc = d * acc + (1 - d) * x[key]
        expected = acc / (1 - decays[-1] ** len(decays))
        torch.testing.assert_close(out[key], expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(out["proj_conv.weight"], model.proj_conv.weight)
    assert int(out["bn.num_batches_tracked"]) == int(model.bn.num_batches_tracked) == 120
    assert decays[-1] == 0.9 and decays[0] == pytest.approx(0.1)


def test_ema_resume_and_wrapped_model() -> None:
    gen = torch.Generator().manual_seed(1)
    model = Toy()
    straight = ModelEMA(model)
    resumed = ModelEMA(nn.DataParallel(model))
    for t in range(12):
        _randomise(model, gen)
        straight.update(model)
        if t == 5:
            state = resumed.state_dict()
            resumed = ModelEMA(model)
            resumed.load_state_dict(state)
        resumed.update(model)
    a, b = straight.state_dict_for_export(), resumed.state_dict_for_export()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    fresh = ModelEMA(model)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in fresh.state_dict_for_export().items())
    bad = straight.state_dict()
    bad["shadow"].pop("conv.weight")
    with pytest.raises(ConfigError, match="conv.weight"):
        fresh.load_state_dict(bad)


# --- against ppdet -------------------------------------------------------------------------------------------


@pytest.mark.oracle
def test_lr_curve_matches_ppdet() -> None:
    from ppdet.optimizer.optimizer import CosineDecay, LearningRate, LinearWarmup

    ipe = 7
    lr = LearningRate(base_lr=0.01, schedulers=[CosineDecay(max_epochs=96), LinearWarmup(start_factor=0.0, epochs=1)])
    paddle_sched = lr(ipe)
    ours = WarmupCosine.for_training(0.01, iters_per_epoch=ipe, warmup_epochs=1, max_epochs=96)
    diffs = []
    for i in range(96 * ipe + 20):
        diffs.append(abs(paddle_sched.get_lr() - ours(i)))
        paddle_sched.step()
    print(f"max |lr diff| over {len(diffs)} iterations: {max(diffs):.2e}")
    assert max(diffs) < 1e-12


@pytest.mark.oracle
def test_ema_matches_ppdet() -> None:
    import paddle
    from ppdet.optimizer.ema import ModelEMA as PaddleEMA

    class PToy(paddle.nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.conv = paddle.nn.Conv2D(3, 4, 3, bias_attr=False)
            self.bn = paddle.nn.BatchNorm2D(4)
            self.linear = paddle.nn.Linear(4, 4)
            self.proj_conv = paddle.nn.Conv2D(10, 1, 1, bias_attr=False)

    class TToy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, bias=False)
            self.bn = nn.BatchNorm2d(4)
            self.linear = nn.Linear(4, 4)
            self.proj_conv = nn.Module()
            self.proj_conv.register_buffer("weight", torch.zeros(1, 10, 1, 1))

    to_torch = {"bn._mean": "bn.running_mean", "bn._variance": "bn.running_var"}
    for decay, steps in ((0.9998, 25), (0.9, 150)):
        pmodel, tmodel = PToy(), TToy()
        rng = np.random.default_rng(0)
        for k, v in pmodel.state_dict().items():
            if k == "proj_conv.weight":
                v.set_value(np.linspace(-2, 7, 10, dtype="float32").reshape(1, 10, 1, 1))
        tmodel.proj_conv.weight.copy_(torch.linspace(-2, 7, 10).reshape(1, 10, 1, 1))
        pema = PaddleEMA(pmodel, decay=decay, ema_decay_type="threshold", ema_black_list=["proj_conv.weight"])
        tema = ModelEMA(tmodel, decay=decay)
        tstate = tmodel.state_dict()
        for _ in range(steps):
            for k, v in pmodel.state_dict().items():
                if k == "proj_conv.weight":
                    continue
                new = rng.normal(0, 1, v.shape).astype("float32")
                if k == "bn._variance":
                    new = np.abs(new) + 0.1
                v.set_value(new)
                tk = to_torch.get(k, k)
                tstate[tk].copy_(torch.from_numpy(new.T.copy() if k == "linear.weight" else new))
            pema.update(pmodel)
            tema.update(tmodel)
        ref = {to_torch.get(k, k): v.numpy() for k, v in pema.apply().items()}
        ours = tema.state_dict_for_export()
        worst = 0.0
        for k, v in ref.items():
            mine = ours[k].numpy()
            if k == "linear.weight":
                mine = mine.T
            worst = max(worst, float(np.abs(mine - v).max() / np.abs(v).max()))
        print(f"decay {decay}, {steps} steps: max rel diff {worst:.2e}")
        assert worst < 1e-5


@pytest.mark.oracle
def test_momentum_with_l2_matches_paddle() -> None:
    import paddle

    class PNet(paddle.nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.conv = paddle.nn.Conv2D(3, 4, 3)
            no_decay = paddle.ParamAttr(regularizer=paddle.regularizer.L2Decay(0.0))  # as ppdet's ConvBNLayer
            self.bn = paddle.nn.BatchNorm2D(4, weight_attr=no_decay, bias_attr=no_decay)

    class TNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.bn = nn.BatchNorm2d(4)

    rng = np.random.default_rng(0)
    pnet, tnet = PNet(), TNet()
    for (k, pv), tv in zip(pnet.named_parameters(), tnet.parameters()):
        val = rng.normal(0, 1, pv.shape).astype("float32")
        pv.set_value(val)
        tv.data.copy_(torch.from_numpy(val))
    lrs = [0.0, 0.3, 0.2, 0.1]
    sched = paddle.optimizer.lr.PiecewiseDecay([1, 2, 3], lrs)
    popt = paddle.optimizer.Momentum(learning_rate=sched, momentum=0.9, parameters=pnet.parameters(),
                                     weight_decay=paddle.regularizer.L2Decay(5e-4))
    topt = build_optimizer(tnet, base_lr=0.0)
    targets = [rng.normal(0, 1, p.shape).astype("float32") for p in pnet.parameters()]
    for lr in lrs:
        ploss = sum((p * paddle.to_tensor(t)).sum() + (p * p).sum() for p, t in zip(pnet.parameters(), targets))
        ploss.backward()
        popt.step()
        popt.clear_grad()
        sched.step()
        tloss = sum((p * torch.from_numpy(t)).sum() + (p * p).sum() for p, t in zip(tnet.parameters(), targets))
        topt.zero_grad()
        tloss.backward()
        for g in topt.param_groups:
            g["lr"] = lr
        topt.step()
    worst = max(float(np.abs(pv.numpy() - tv.detach().numpy()).max())
                for pv, tv in zip(pnet.parameters(), tnet.parameters()))
    print(f"max |param diff| after {len(lrs)} steps: {worst:.2e}")
    assert worst < 1e-5
