"""Reading and writing .pdparams files: safety of the restricted unpickler, error messages, Paddle round trips."""
from __future__ import annotations

import os
import pickle
import pickletools
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from ppyoloe_sod.errors import WeightsError
from ppyoloe_sod.weights.pdparams import STRUCTURED_NAME_KEY, load_pdparams, save_pdparams
from ppyoloe_sod.weights.store import save_safetensors


def _random_state(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "backbone.stem.conv1.conv.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "backbone.stem.conv1.bn._mean": rng.standard_normal(4).astype(np.float32),
        "backbone.stem.conv1.bn._variance": rng.random(4).astype(np.float32) + 0.5,
        "neck.encoder.layers.0.linear1.weight": rng.standard_normal((8, 16)).astype(np.float32),
        "scalar_like": np.array(3.5, dtype=np.float32),
        "counter": np.array([7, 11], dtype=np.int64),
    }


def _assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert a[k].shape == b[k].shape, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# --- plain round trips (no Paddle) -------------------------------------------------------------------------

def test_save_then_load_round_trip_is_exact(tmp_path: Path) -> None:
    state = _random_state()
    path = tmp_path / "model.pdparams"
    save_pdparams(state, path)
    loaded = load_pdparams(path)
    _assert_same(state, loaded)
    assert STRUCTURED_NAME_KEY not in loaded
    with open(path, "rb") as f:
        assert f.read(2) == b"\x80\x04"  # protocol 4, like paddle.save
    assert [p.name for p in tmp_path.iterdir()] == ["model.pdparams"]  # no temp file left behind


def test_save_rejects_non_arrays_and_keeps_old_file(tmp_path: Path) -> None:
    path = tmp_path / "model.pdparams"
    save_pdparams({"a": np.ones(2, np.float32)}, path)
    before = path.read_bytes()
    with pytest.raises(WeightsError, match="numpy arrays") as e:
        save_pdparams({"a": np.zeros(2, np.float32), "b.weight": torch.zeros(2)}, path)
    assert "'b.weight'" in str(e.value)
    with pytest.raises(WeightsError, match="obj"):
        save_pdparams({"c": np.array(["x"], dtype=object)}, path)
    assert path.read_bytes() == before


# --- numpy 1 / numpy 2 pickles ------------------------------------------------------------------------------

def _unframe(data: bytes) -> bytes:
    """Drop protocol-4 FRAME opcodes (optional hints) so the byte stream can be edited safely."""
    out, last = bytearray(), 0
    for op, _arg, pos in pickletools.genops(data):
        if op.name == "FRAME":
            out += data[last:pos]
            last = pos + 9  # opcode + 8-byte length
    out += data[last:]
    return bytes(out)


def _short_unicode(s: str) -> bytes:
    raw = s.encode()
    return b"\x8c" + bytes([len(raw)]) + raw  # SHORT_BINUNICODE


def _pickle_with_core_module(state: dict[str, np.ndarray], module: str) -> bytes:
    """A protocol-4 pickle of ``state`` whose arrays reference ``<module>._reconstruct``."""
    data = _unframe(pickle.dumps(dict(state, **{STRUCTURED_NAME_KEY: {k: k for k in state}}), protocol=4))
    installed = np.ndarray.__reduce__(np.zeros(1))[0].__module__  # numpy._core.multiarray under numpy 2
    old, new = _short_unicode(installed), _short_unicode(module)
    assert old in data
    data = data.replace(old, new)
    globals_used = {arg for op, arg, _ in pickletools.genops(data) if op.name in ("SHORT_BINUNICODE", "BINUNICODE")}
    assert module in globals_used and (installed == module or installed not in globals_used)
    return data


@pytest.mark.parametrize("module", ["numpy.core.multiarray", "numpy._core.multiarray"])
def test_numpy1_and_numpy2_pickles_both_load(tmp_path: Path, module: str) -> None:
    state = _random_state(1)
    path = tmp_path / "np.pdparams"
    path.write_bytes(_pickle_with_core_module(state, module))
    _assert_same(state, load_pdparams(path))


def test_protocol2_pickle_loads(tmp_path: Path) -> None:
    # Older Paddle wrote protocol 2, where array bytes go through _codecs.encode(text, 'latin1').
    state = _random_state(2)
    path = tmp_path / "p2.pdparams"
    path.write_bytes(pickle.dumps(state, protocol=2))
    assert b"_codecs" in path.read_bytes()
    _assert_same(state, load_pdparams(path))


# --- refusing unsafe and malformed files --------------------------------------------------------------------

class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: D105 - the attack
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pdparams"
    path.write_bytes(pickle.dumps({"w": np.ones(3, np.float32), "x": _Evil(marker)}, protocol=4))
    # sanity: the payload really would run under a plain pickle.load
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Evil(probe), protocol=4))
    assert probe.exists()
    with pytest.raises(WeightsError) as e:
        load_pdparams(path)
    msg = str(e.value)
    assert str(path) in msg and "system" in msg and "refusing to load it" in msg
    assert not marker.exists()


@pytest.mark.parametrize("target", [("builtins", "eval"), ("numpy", "load"), ("numpy.lib.npyio", "load"),
                                    ("numpy.testing", "assert_equal")])
def test_other_globals_are_refused(tmp_path: Path, target: tuple[str, str]) -> None:
    module, name = target
    # GLOBAL opcode by hand: c<module>\n<name>\n, then call it with one string argument.
    payload = b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"X\x03\x00\x00\x001+1\x85R."
    path = tmp_path / "g.pdparams"
    path.write_bytes(payload)
    with pytest.raises(WeightsError, match=f"{module}.{name}"):
        load_pdparams(path)


def test_codecs_encode_only_for_latin1(tmp_path: Path) -> None:
    payload = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x04\x00\x00\x00zlib\x86R."
    path = tmp_path / "c.pdparams"
    path.write_bytes(payload)
    with pytest.raises(WeightsError, match="zlib"):
        load_pdparams(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not found") as e:
        load_pdparams(tmp_path / "nope.pdparams")
    assert "nope.pdparams" in str(e.value)
    with pytest.raises(WeightsError, match="directory"):
        load_pdparams(tmp_path)


def test_truncated_file(tmp_path: Path) -> None:
    good = tmp_path / "good.pdparams"
    save_pdparams(_random_state(), good)
    data = good.read_bytes()
    for cut in (len(data) // 2, len(data) - 1, 3):
        bad = tmp_path / f"cut{cut}.pdparams"
        bad.write_bytes(data[:cut])
        with pytest.raises(WeightsError, match="truncated or corrupt") as e:
            load_pdparams(bad)
        assert bad.name in str(e.value)


def test_not_a_pickle(tmp_path: Path) -> None:
    path = tmp_path / "inference.pdiparams"
    path.write_bytes(bytes(range(1, 200)))
    with pytest.raises(WeightsError, match="not a pickle"):
        load_pdparams(path)


def test_pickle_that_is_not_a_dict_of_arrays(tmp_path: Path) -> None:
    path = tmp_path / "x.pdparams"
    path.write_bytes(pickle.dumps([np.ones(2)], protocol=4))
    with pytest.raises(WeightsError, match="found a pickled list"):
        load_pdparams(path)
    path.write_bytes(pickle.dumps({"a.weight": np.ones(2, np.float32), "lr": 0.1, "names": ["x"]}, protocol=4))
    with pytest.raises(WeightsError) as e:
        load_pdparams(path)
    assert "'lr'" in str(e.value) and "'names'" in str(e.value) and "a.weight" not in str(e.value)
    path.write_bytes(pickle.dumps({"model": {"w": np.ones(2, np.float32)}}, protocol=4))
    with pytest.raises(WeightsError, match="nested checkpoint"):
        load_pdparams(path)
    path.write_bytes(pickle.dumps({STRUCTURED_NAME_KEY: {}}, protocol=4))
    with pytest.raises(WeightsError, match="no parameter arrays"):
        load_pdparams(path)


def test_torch_and_safetensors_files_are_recognised(tmp_path: Path) -> None:
    pt = tmp_path / "model.pth"
    torch.save({"w": torch.ones(2)}, pt)
    assert zipfile.is_zipfile(pt)
    with pytest.raises(WeightsError, match="PyTorch checkpoint") as e:
        load_pdparams(pt)
    assert "model.pth" in str(e.value)
    st = tmp_path / "model.safetensors"
    save_safetensors({"w": torch.ones(2)}, st, {"model": "x"})
    with pytest.raises(WeightsError, match="safetensors file"):
        load_pdparams(st)


# --- against Paddle ----------------------------------------------------------------------------------------

def _paddle_layer(paddle):
    paddle.seed(3)
    layer = paddle.nn.Sequential(
        paddle.nn.Conv2D(3, 4, 3), paddle.nn.BatchNorm2D(4), paddle.nn.Flatten(), paddle.nn.Linear(4, 5)
    )
    # Randomise BN statistics so they are not the default zeros/ones.
    layer[1]._mean.set_value(paddle.randn([4]))
    layer[1]._variance.set_value(paddle.rand([4]) + 0.5)
    return layer


@pytest.mark.oracle
def test_paddle_save_is_read_exactly(tmp_path: Path) -> None:
    import paddle

    layer = _paddle_layer(paddle)
    path = tmp_path / "paddle.pdparams"
    paddle.save(layer.state_dict(), str(path))
    ours = load_pdparams(path)
    ref = {k: v.numpy() for k, v in layer.state_dict().items()}
    _assert_same(ref, ours)
    assert "1._mean" in ours and "1._variance" in ours
    # protocol 2, as older Paddle wrote
    path2 = tmp_path / "paddle_p2.pdparams"
    paddle.save(layer.state_dict(), str(path2), protocol=2)
    _assert_same(ref, load_pdparams(path2))
    print("paddle.save -> load_pdparams: max abs diff", max(float(np.abs(ref[k] - ours[k]).max()) for k in ref))


@pytest.mark.oracle
def test_save_pdparams_is_read_by_paddle(tmp_path: Path) -> None:
    import paddle

    layer = _paddle_layer(paddle)
    rng = np.random.default_rng(4)
    state = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in layer.state_dict().items()}
    path = tmp_path / "ours.pdparams"
    save_pdparams(state, path)

    loaded = paddle.load(str(path), return_numpy=True)
    _assert_same(state, loaded)
    as_tensors = paddle.load(str(path))
    assert STRUCTURED_NAME_KEY not in as_tensors
    # What ppdet does with a weights file: set it on a layer.
    fresh = _paddle_layer(paddle)
    missing, unexpected = fresh.set_state_dict(as_tensors)
    assert not missing and not unexpected
    _assert_same(state, {k: v.numpy() for k, v in fresh.state_dict().items()})
    print("save_pdparams -> paddle.load: max abs diff",
          max(float(np.abs(state[k] - loaded[k]).max()) for k in state))
