"""hubconf.py through torch.hub itself (source="local"), against load_model on the same file."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from ppyoloe_sod.errors import WeightsError
from ppyoloe_sod.models import load_model
from ppyoloe_sod.zoo import hub_name

from weights_synth import outputs, randomized_model, write_safetensors

REPO = Path(__file__).resolve().parents[1]
S, L, LARGE = "PP-YOLOE_plus_SOD-S", "PP-YOLOE_plus_SOD-L", "PP-YOLOE_plus_SOD-largesize-L"


@pytest.fixture(scope="module")
def s_weights(tmp_path_factory) -> Path:
    return write_safetensors(randomized_model(S, seed=3), tmp_path_factory.mktemp("hub") / "sod_s.safetensors")


def test_hub_lists_the_three_sod_models() -> None:
    """torch.hub.list / help take GitHub repos only, so apply their rule to hubconf.py loaded from the folder."""
    spec = importlib.util.spec_from_file_location("hubconf_under_test", REPO / "hubconf.py")
    hub = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hub)
    entries = sorted(f for f in dir(hub) if callable(getattr(hub, f)) and not f.startswith("_"))
    assert entries == ["ppyoloe_plus_sod_l", "ppyoloe_plus_sod_largesize_l", "ppyoloe_plus_sod_s"]
    assert entries == sorted(hub_name(n) for n in (S, L, LARGE))
    assert hub.dependencies == ["torch", "torchvision"]
    assert all("VisDrone" in getattr(hub, e).__doc__ for e in entries)


def test_hub_load_equals_load_model(s_weights: Path) -> None:
    hub_model = torch.hub.load(str(REPO), "ppyoloe_plus_sod_s", source="local", weights=str(s_weights))
    ref = load_model(S, s_weights)
    assert not hub_model.training and hub_model.spec.name == S
    for k, v in ref.state_dict().items():
        assert torch.equal(hub_model.state_dict()[k], v), k
    hub_cls, hub_reg = outputs(hub_model)
    ref_cls, ref_reg = outputs(ref)
    assert torch.equal(hub_cls, ref_cls) and torch.equal(hub_reg, ref_reg)
    assert hub_cls.std() > 0.01  # the outputs depend on the weights, so equality above means something

    # pretrained=False: the randomly initialised network, not the file's weights
    fresh = torch.hub.load(str(REPO), "ppyoloe_plus_sod_s", source="local", pretrained=False)
    assert fresh.training
    assert not torch.allclose(outputs(fresh.eval())[0], ref_cls, atol=1e-3)


def test_hub_entry_checks_the_model_of_the_file(s_weights: Path) -> None:
    with pytest.raises(WeightsError) as err:
        torch.hub.load(str(REPO), "ppyoloe_plus_sod_l", source="local", weights=str(s_weights))
    assert S in str(err.value) and L in str(err.value)
    with pytest.raises(ValueError, match="pretrained=False"):
        torch.hub.load(str(REPO), "ppyoloe_plus_sod_largesize_l", source="local", pretrained=False,
                       weights=str(s_weights))
