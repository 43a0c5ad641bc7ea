"""Network behaviour that needs no oracle: shapes at any multiple of 32, anchors, fuse() equivalence."""
import pytest
import torch

from ppyoloe_sod.models import build_model


def randomized(name: str, seed: int = 0) -> torch.nn.Module:
    """A model whose BN statistics, alphas and head are random, so fusing has something to get wrong."""
    torch.manual_seed(seed)
    model = build_model(name)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
    for name_, p in model.named_parameters():
        if name_.endswith("alpha"):
            p.data.uniform_(0.5, 1.5)
    for conv in list(model.yolo_head.pred_cls) + list(model.yolo_head.pred_reg):
        conv.weight.data.normal_(0, 0.01)
        conv.bias.data.normal_(0, 1)
    return model.eval()


@pytest.mark.parametrize("h, w", [(320, 320), (256, 416)])
def test_output_shapes_and_anchors(h, w):
    model = randomized("PP-YOLOE_plus_SOD-S")
    with torch.no_grad():
        out = model(torch.rand(2, 3, h, w))
    n = sum((h // s) * (w // s) for s in (32, 16, 8))
    assert out.cls_logits.shape == (2, n, 10)
    assert out.reg_logits.shape == (2, n, 40)
    points, strides = model.anchors(h, w)
    assert points.shape == (n, 2) and strides.shape == (n, 1)
    # level order 32, 16, 8; first anchor of each level at half a stride from the corner
    first = points[0].tolist(), points[(h // 32) * (w // 32)].tolist()
    assert first == ([16.0, 16.0], [8.0, 8.0])
    assert model.anchors(h, w)[0] is points  # cached per size


def test_rejects_sizes_not_multiple_of_32():
    model = build_model("PP-YOLOE_plus_SOD-S").eval()
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.rand(1, 3, 330, 320))


def test_fuse_keeps_outputs():
    model = randomized("PP-YOLOE_plus_SOD-S", seed=1)
    x = torch.rand(1, 3, 320, 320)
    with torch.no_grad():
        ref = model(x)
        n_before = sum(p.numel() for p in model.parameters())
        model.fuse()
        fused = model(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert sum(p.numel() for p in model.parameters()) < n_before
    torch.testing.assert_close(fused.cls_logits, ref.cls_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fused.reg_logits, ref.reg_logits, rtol=1e-4, atol=1e-4)


def test_fuse_refuses_train_mode():
    with pytest.raises(RuntimeError, match="eval"):
        build_model("PP-YOLOE_plus_SOD-S").fuse()


def _trained_once(bn: torch.nn.BatchNorm2d, x: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """One train-mode forward and backward: (output, input gradient, weight gradient, bias gradient)."""
    x = x.clone().requires_grad_()
    out = bn.train()(x)
    out.backward(grad)
    return out.detach(), x.grad, bn.weight.grad, bn.bias.grad


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))])
def test_network_batchnorm_is_torchs_but_folds_the_biased_variance_like_paddle(device):
    """ConvBN's BatchNorm: torch's forward and gradients bit for bit, in train and eval, but running_var moves
    by momentum x the BIASED batch variance (Paddle's batch_norm), not torch's unbiased one. 2 x 3 x 3 values per
    channel: torch's update is 1/17 (6%) of the step larger, far beyond the tolerance."""
    from ppyoloe_sod.nn.blocks import ConvBN

    g = torch.Generator().manual_seed(0)
    ours = ConvBN(4, 4, 3, padding=1, act=None).bn
    ours.running_mean.normal_(0, 1, generator=g)
    ours.running_var.uniform_(0.5, 2.0, generator=g)
    ours.weight.data.uniform_(0.5, 1.5, generator=g)
    ours.bias.data.normal_(0, 1, generator=g)
    torchs = torch.nn.BatchNorm2d(4, eps=1e-5, momentum=0.1)
    torchs.load_state_dict(ours.state_dict())
    assert list(ours.state_dict()) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    ours, torchs = ours.to(device), torchs.to(device)
    x = (torch.randn(2, 4, 3, 3, generator=g) * 3 + 1).to(device)
    grad = torch.randn(2, 4, 3, 3, generator=g).to(device)
    before = ours.running_var.double().clone()

    for a, b in zip(_trained_once(ours, x, grad), _trained_once(torchs, x, grad)):
        assert torch.equal(a, b)
    biased = x.double().var(dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(ours.running_var.double(), 0.9 * before + 0.1 * biased, rtol=1e-6, atol=0)
    assert torch.equal(ours.running_mean, torchs.running_mean)
    assert torch.equal(ours.num_batches_tracked, torchs.num_batches_tracked)
    assert (torchs.running_var.double() - ours.running_var.double()).min() > 1e-3  # torch's surplus: 0.1 x b / 17

    torchs.load_state_dict(ours.state_dict())
    ours.eval()
    torchs.eval()
    state = {k: v.clone() for k, v in ours.state_dict().items()}
    assert torch.equal(ours(x), torchs(x))
    assert all(torch.equal(v, state[k]) for k, v in ours.state_dict().items())  # eval moves nothing


def test_network_batchnorm_cumulative_average_is_the_biased_variance():
    """momentum=None (benchmarks/gpu_check.py calibrates BN statistics on one batch so): running_var is that
    batch's biased variance, as Paddle would measure it."""
    from ppyoloe_sod.nn.blocks import ConvBN

    bn = ConvBN(3, 3, 1, act=None).bn
    bn.reset_running_stats()
    bn.momentum = None
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    bn.train()(x)
    torch.testing.assert_close(bn.running_var.double(), x.double().var(dim=(0, 2, 3), unbiased=False),
                               rtol=1e-6, atol=0)


def test_every_batchnorm_of_the_network_is_convbns():
    """The whole network uses the one BatchNorm kind (no stray torch BatchNorm2d with the unbiased update)."""
    from ppyoloe_sod.nn.blocks import ConvBN

    kind = type(ConvBN(1, 1, 1).bn)
    bns = [m for m in build_model("PP-YOLOE_plus_SOD-S").modules()
           if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and all(type(m) is kind for m in bns)
