"""The published-model metadata is data a user relies on: check it against the networks we build."""
import pytest
import torch

from ppyoloe_sod.models import build_model
from ppyoloe_sod.zoo import VISDRONE_CLASSES, get_spec, hub_name, list_models

SOD = ["PP-YOLOE_plus_SOD-S", "PP-YOLOE_plus_SOD-L", "PP-YOLOE_plus_SOD-largesize-L"]


def paddle_state_size(name: str) -> tuple[int, int]:
    """(tensors, elements) of the state_dict as Paddle stores it (torch's num_batches_tracked has no twin)."""
    with torch.device("meta"):
        model = build_model(name)
    sd = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    return len(sd), sum(v.numel() for v in sd.values())


@pytest.mark.parametrize("name, tensors, elements", [
    ("PP-YOLOE_plus_SOD-S", 477, 20_122_054),
    ("PP-YOLOE_plus_SOD-L", 819, 86_561_266),
    ("PP-YOLOE_plus_SOD-largesize-L", 819, 87_142_030),
])
def test_parameter_counts_match_paddle(name, tensors, elements):
    assert paddle_state_size(name) == (tensors, elements)
    spec = get_spec(name)
    assert (spec.num_state_tensors, spec.num_params) == (tensors, elements)


@pytest.mark.parametrize("name", list_models())
def test_spec_is_consistent(name):
    spec = get_spec(name)
    assert len(spec.classes) == spec.num_classes
    assert spec.weights_url.startswith("https://") and spec.weights_url.endswith(".pdparams")
    assert all(s % 32 == 0 for s in spec.input_size)
    assert spec.metrics and spec.metrics_dataset
    assert paddle_state_size(name) == (spec.num_state_tensors, spec.num_params)


def test_sod_models_are_visdrone():
    assert VISDRONE_CLASSES[0] == "pedestrian" and VISDRONE_CLASSES[-1] == "motor"
    expected = {"PP-YOLOE_plus_SOD-S": (25.1, 42.8, (640, 640), (-2, 8)),
                "PP-YOLOE_plus_SOD-L": (31.9, 52.1, (640, 640), (-2, 8)),
                "PP-YOLOE_plus_SOD-largesize-L": (42.7, 65.9, (1920, 1920), (-2, 20))}
    for name, (ap, ap50, size, reg_range) in expected.items():
        spec = get_spec(name)
        assert spec.classes == VISDRONE_CLASSES
        assert (spec.metrics["mAP"], spec.metrics["AP50"]) == (ap, ap50)
        assert spec.input_size == size and spec.arch.reg_range == reg_range
        assert spec.arch.use_transformer
        assert "paddlex/official_pretrained_model/" + name in spec.weights_url


def test_aliases_and_unknown_names():
    assert get_spec("ppyoloe_plus_sod_largesize_l").name == "PP-YOLOE_plus_SOD-largesize-L"
    assert hub_name("PP-YOLOE_plus_SOD-S") == "ppyoloe_plus_sod_s"
    with pytest.raises(KeyError, match="available"):
        get_spec("PP-YOLOE_plus_SOD-XL")
