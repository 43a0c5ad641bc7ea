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
