"""Converter (torch <-> Paddle layouts), model detection, and the tools/convert_weights.py command line.

No Paddle needed: Paddle-shaped files are made from our own model with ``torch_to_paddle`` + ``save_pdparams``;
the layout rules themselves (BN names, transposed Linear weights) are checked against their definitions here.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ppyoloe_sod.errors import WeightsError
from ppyoloe_sod.models import build_model, load_model
from ppyoloe_sod.nn.detector import Detector
from ppyoloe_sod.weights import convert
from ppyoloe_sod.weights.convert import detect_model, paddle_to_torch, torch_to_paddle
from ppyoloe_sod.weights.pdparams import load_pdparams, save_pdparams
from ppyoloe_sod.weights.store import load_safetensors, save_safetensors
from ppyoloe_sod.zoo import get_spec

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "convert_weights.py"
S, L, LARGE = "PP-YOLOE_plus_SOD-S", "PP-YOLOE_plus_SOD-L", "PP-YOLOE_plus_SOD-largesize-L"
LINEAR1 = "neck.encoder.layers.0.linear1.weight"


def _load_tool():
    spec = importlib.util.spec_from_file_location("convert_weights_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


tool = _load_tool()


@pytest.fixture(scope="module")
def s_state() -> dict[str, torch.Tensor]:
    """SOD-S state_dict with every float entry random, so each key carries a value of its own."""
    g = torch.Generator().manual_seed(0)
    sd = build_model(S).state_dict()
    return {k: torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone() for k, v in sd.items()}


@pytest.fixture(scope="module")
def s_paddle(s_state) -> dict[str, np.ndarray]:
    return torch_to_paddle(s_state)


@pytest.fixture(scope="module")
def s_file(s_paddle, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pd") / "sod_s.pdparams"
    save_pdparams(s_paddle, path)
    return path


def _paddle_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """Paddle's names and shapes for a model, by the layout rules (model built on the meta device: no memory)."""
    with torch.device("meta"):
        sd = Detector(get_spec(name).arch).state_dict()
    out = {}
    for k, v in sd.items():
        if k.endswith("num_batches_tracked"):
            continue
        k = k.replace(".running_mean", "._mean").replace(".running_var", "._variance")
        # every 2-D weight inside the transformer encoder is an nn.Linear, stored [in, out] by Paddle
        out[k] = tuple(reversed(v.shape)) if ".encoder." in k and v.dim() == 2 else tuple(v.shape)
    return out


# --- the pure converter ------------------------------------------------------------------------------------

def test_round_trip_is_exact_and_follows_paddle_layout(s_state, s_paddle, s_file) -> None:
    n_counters = sum(k.endswith("num_batches_tracked") for k in s_state)
    assert len(s_paddle) == len(s_state) - n_counters == 477
    assert not [k for k in s_paddle if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]

    # BN statistics renamed, values untouched
    bn = "backbone.stem.conv1.bn"
    np.testing.assert_array_equal(s_paddle[f"{bn}._mean"], s_state[f"{bn}.running_mean"].numpy())
    np.testing.assert_array_equal(s_paddle[f"{bn}._variance"], s_state[f"{bn}.running_var"].numpy())
    # Linear weights transposed: Paddle stores [in, out]
    assert tuple(s_state[LINEAR1].shape) == (2048, 512)
    assert s_paddle[LINEAR1].shape == (512, 2048)
    np.testing.assert_array_equal(s_paddle[LINEAR1], s_state[LINEAR1].numpy().T)
    attn_in = "neck.encoder.layers.0.self_attn.in_proj_weight"
    assert s_paddle[attn_in].shape == (512, 1536)
    np.testing.assert_array_equal(s_paddle[attn_in], s_state[attn_in].numpy().T)
    # convolutions keep their layout
    conv = "yolo_head.pred_cls.0.weight"
    np.testing.assert_array_equal(s_paddle[conv], s_state[conv].numpy())
    assert {k: v.shape for k, v in s_paddle.items()} == _paddle_shapes(S)

    # back to torch, through a file as a user would
    back = paddle_to_torch(load_pdparams(s_file))
    assert back.model_name == S
    assert list(back.state_dict) == list(s_state)
    for k, v in s_state.items():
        if k.endswith("num_batches_tracked"):
            assert back.state_dict[k].dtype == torch.long and int(back.state_dict[k]) == 0
        else:
            assert torch.equal(back.state_dict[k], v), k
    build_model(S).load_state_dict(back.state_dict, strict=True)


@pytest.mark.parametrize("name, params", [(S, 20_122_054), (L, 86_561_266), (LARGE, 87_142_030)])
def test_detect_model_tells_the_published_models_apart(name: str, params: int) -> None:
    shapes = _paddle_shapes(name)
    assert sum(math.prod(s) for s in shapes.values()) == params  # the published totals
    assert detect_model(shapes) == name


def test_detect_model_on_real_arrays_and_unknown_shapes(s_paddle) -> None:
    assert detect_model({k: v.shape for k, v in s_paddle.items()}) == S
    shapes = _paddle_shapes(L)
    shapes["yolo_head.pred_reg.0.weight"] = (4 * 30, 768, 3, 3)  # a DFL range no published model uses
    assert detect_model(shapes) is None


def test_missing_unexpected_and_mismatched_keys_are_all_listed(s_paddle, tmp_path) -> None:
    bad = dict(s_paddle)
    del bad["yolo_head.pred_cls.1.bias"]
    bad["backbone.extra_layer.weight"] = np.zeros((3, 3), np.float32)
    bad[LINEAR1] = np.zeros((512, 1024), np.float32)
    for name in (None, S):
        with pytest.raises(WeightsError) as err:
            paddle_to_torch(bad, name, source="bad.pdparams")
        msg = str(err.value)
        assert "bad.pdparams" in msg and "nothing was loaded" in msg
        for title, key in (("missing", "yolo_head.pred_cls.1.bias"), ("unexpected", "backbone.extra_layer.weight"),
                           ("shape mismatch", LINEAR1)):
            assert title in msg and key in msg, (title, msg)
        assert "(512, 1024)" in msg and "(512, 2048)" in msg

    # nothing is loaded: neither into a model, nor into an output file
    path = tmp_path / "bad.pdparams"
    save_pdparams(bad, path)
    with pytest.raises(WeightsError, match="pred_cls.1.bias"):
        load_model(S, path)
    dst = tmp_path / "out.safetensors"
    assert tool.main([str(path), "-o", str(dst)]) == 2
    assert not dst.exists()


def test_names_and_shapes_are_checked_before_anything_is_converted(s_paddle, monkeypatch) -> None:
    """A file that does not fit is reported without converting any array to float32 (no memory spent on it)."""
    bad = dict(s_paddle)
    bad["backbone.extra_layer.weight"] = np.zeros((3, 3), np.float64)

    def must_not_convert(*args, **kwargs):
        raise AssertionError("converted before the names and shapes were checked")

    monkeypatch.setattr(convert, "rename_paddle_tensors", must_not_convert)
    with pytest.raises(WeightsError, match="unexpected"):
        paddle_to_torch(bad, S, source="bad.pdparams")


@pytest.mark.parametrize("dtype, word", [(np.int64, "integer"), (np.bool_, "bool")])
def test_integer_and_bool_weights_are_refused(s_paddle, tmp_path, dtype, word) -> None:
    bad = dict(s_paddle)
    bad["yolo_head.pred_cls.0.weight"] = np.ones(s_paddle["yolo_head.pred_cls.0.weight"].shape, dtype)
    path = tmp_path / "ints.pdparams"
    save_pdparams(bad, path)
    with pytest.raises(WeightsError) as err:
        load_model(S, path)
    assert str(path) in str(err.value) and f"'yolo_head.pred_cls.0.weight' ({word})" in str(err.value)


def test_non_finite_weights_are_refused(s_paddle, tmp_path) -> None:
    bad = dict(s_paddle)
    nan = bad["yolo_head.pred_cls.0.bias"].copy()
    nan[:3] = np.nan
    bad["yolo_head.pred_cls.0.bias"] = nan
    huge = bad["yolo_head.pred_reg.0.bias"].astype(np.float64)
    huge[0] = 1e300  # finite in float64, infinite once in float32
    bad["yolo_head.pred_reg.0.bias"] = huge
    path = tmp_path / "nan.pdparams"
    save_pdparams(bad, path)
    with pytest.raises(WeightsError) as err:
        load_model(S, path)
    msg = str(err.value)
    assert str(path) in msg and "2 tensor(s)" in msg and "'yolo_head.pred_cls.0.bias' (3 of its 10 values)" in msg


def test_the_partial_loader_names_the_file_it_refuses(s_paddle, tmp_path) -> None:
    """Training's pretrained-weights reader (the partial load) goes through the same checks and names the file."""
    from ppyoloe_sod.models import read_weights

    bad = dict(s_paddle)
    bad["yolo_head.pred_cls.0.bias"] = np.full(10, np.nan, np.float32)
    path = tmp_path / "start.pdparams"
    save_pdparams(bad, path)
    with pytest.raises(WeightsError, match="'yolo_head.pred_cls.0.bias' \\(10 of its 10 values\\)") as err:
        read_weights(path, get_spec(S), strict=False)
    assert str(path) in str(err.value)


# --- the command line --------------------------------------------------------------------------------------

def test_cli_pdparams_to_safetensors_and_back(s_state, s_paddle, s_file, tmp_path, capsys) -> None:
    dst = tmp_path / "out" / "sod_s.safetensors"
    assert tool.main([str(s_file), "-o", str(dst)]) == 0
    out = capsys.readouterr().out
    assert S in out and "477" in out and "20,122,054" in out and str(dst) in out

    state, meta = load_safetensors(dst)
    assert meta["model_name"] == S
    classes = json.loads(meta["classes"])
    assert len(classes) == 10 and classes[0] == "pedestrian" and classes[-1] == "motor"  # VisDrone order
    assert meta["source_sha256"] == hashlib.sha256(s_file.read_bytes()).hexdigest()
    for k, v in s_state.items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(state[k], v), k

    # ours -> .pdparams: the same arrays as the Paddle-side file it came from
    back = tmp_path / "back.pdparams"
    assert tool.main([str(dst), "-o", str(back), "--model", S]) == 0
    assert str(back) in capsys.readouterr().out
    again = load_pdparams(back)
    assert sorted(again) == sorted(s_paddle)
    for k, v in s_paddle.items():
        assert again[k].dtype == np.float32 and again[k].shape == v.shape, k
        np.testing.assert_array_equal(again[k], v, err_msg=k)


def test_cli_model_disagreeing_names_the_detected_model(s_file, s_state, tmp_path, capsys) -> None:
    dst = tmp_path / "x.safetensors"
    assert tool.main([str(s_file), "-o", str(dst), "--model", L]) == 2
    err = capsys.readouterr().err
    assert f"holds weights of {S}" in err and L in err and "Traceback" not in err
    assert not dst.exists()

    # reverse direction, a safetensors without metadata: the shapes tell
    plain = tmp_path / "plain.safetensors"
    save_safetensors(s_state, plain, {})
    back = tmp_path / "x.pdparams"
    assert tool.main([str(plain), "-o", str(back), "--model", "ppyoloe_plus_sod_l"]) == 2
    err = capsys.readouterr().err
    assert f"holds weights of {S} (detected from the tensor shapes)" in err and L in err
    assert not back.exists()


def test_cli_reverse_refuses_mismatched_keys(s_state, tmp_path, capsys) -> None:
    broken = dict(s_state)
    del broken["neck.encoder.layers.3.norm2.bias"]
    src = tmp_path / "broken.safetensors"
    save_safetensors(broken, src, {"model_name": S})
    dst = tmp_path / "broken.pdparams"
    assert tool.main([str(src), "-o", str(dst)]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "neck.encoder.layers.3.norm2.bias" in err and "Traceback" not in err
    assert not dst.exists()


@pytest.mark.parametrize("src_name, dst_name, expect", [
    ("weights.pt", "out.safetensors", "unknown extension '.pt'"),
    ("sod_s.pdparams", "out.pdparams", "ending in .safetensors"),
    ("sod_s.pdparams", "out.onnx", "ending in .safetensors"),
])
def test_cli_wrong_extension(s_file, tmp_path, capsys, src_name, dst_name, expect) -> None:
    src = s_file if src_name == s_file.name else tmp_path / src_name
    src.touch()
    assert tool.main([str(src), "-o", str(tmp_path / dst_name)]) == 2
    err = capsys.readouterr().err
    assert expect in err and "Traceback" not in err
    assert not (tmp_path / dst_name).exists()


def test_cli_unknown_model_name_lists_the_known_ones(s_file, tmp_path, capsys) -> None:
    assert tool.main([str(s_file), "-o", str(tmp_path / "x.safetensors"), "--model", "yolov8"]) == 2
    err = capsys.readouterr().err
    assert "'yolov8'" in err and S in err and LARGE in err


def test_cli_as_a_script_missing_file(tmp_path) -> None:
    """The real entry point: exit code 2, one message on stderr naming the file, no traceback."""
    missing = tmp_path / "nowhere.pdparams"
    proc = subprocess.run([sys.executable, str(TOOL), str(missing), "-o", str(tmp_path / "x.safetensors")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert f"{missing}: file not found" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


# --- load_model and foreign files --------------------------------------------------------------------------

def test_load_model_refuses_another_models_safetensors(s_state, tmp_path) -> None:
    path = tmp_path / "s.safetensors"
    save_safetensors(s_state, path, {"model_name": S})
    with pytest.raises(WeightsError) as err:
        load_model(L, path)
    assert S in str(err.value) and L in str(err.value)


def test_cli_exports_a_model_finetuned_on_other_classes(tmp_path, capsys) -> None:
    """A model trained here on 3 classes goes back to a .pdparams whose head has 3 classes."""
    from ppyoloe_sod.models import safetensors_metadata

    spec = get_spec(S).with_classes(["tree", "roof", "pool"])
    net = build_model(spec)
    src = tmp_path / "tuned.safetensors"
    save_safetensors(net.state_dict(), src, safetensors_metadata(spec))
    dst = tmp_path / "tuned.pdparams"
    assert tool.main([str(src), "-o", str(dst)]) == 0, capsys.readouterr().err
    assert load_pdparams(dst)["yolo_head.pred_cls.0.weight"].shape == (3, 384, 3, 3)


def test_cli_reverse_with_malformed_class_metadata(tmp_path, capsys) -> None:
    src = tmp_path / "tuned.safetensors"
    save_safetensors({"w": torch.ones(1)}, src, {"model_name": S, "classes": "car, van", "format": "ppyoloe_sod"})
    dst = tmp_path / "tuned.pdparams"
    assert tool.main([str(src), "-o", str(dst)]) == 2
    err = capsys.readouterr().err
    assert str(src) in err and "'classes' is not valid JSON" in err and "Traceback" not in err
    assert not dst.exists()
