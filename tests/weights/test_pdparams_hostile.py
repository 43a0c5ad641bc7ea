"""Hostile .pdparams files are refused with a WeightsError naming the file, without allocating what they declare.

Each file is written opcode by opcode (no array is allocated to make it). They are read in one subprocess whose
address space is capped at its size after imports plus 1 GiB, so a regression shows up as a failed test (a
MemoryError, or a crash: a 200,000-deep key segfaulted CPython) rather than exhausting the machine or pytest.
"""
from __future__ import annotations

import json
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ppyoloe_sod.errors import WeightsError
from ppyoloe_sod.weights.pdparams import load_pdparams

M = 1 << 20
G = 1 << 30


def _text(s: str) -> bytes:
    raw = s.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw  # BINUNICODE


def _int64(n: int) -> bytes:
    return b"\x8a\x08" + struct.pack("<q", n)  # LONG1, 8 bytes


_FLOAT32 = b"cnumpy\ndtype\n" + _text("f4") + b"\x89\x88\x87R"  # dtype('f4', False, True)
_PLACEHOLDER = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"  # then (shape,) typecode TUPLE3 REDUCE


def _entry(key: str, value: bytes) -> bytes:
    """A protocol-2 pickle of {key: <value opcodes>}."""
    return b"\x80\x02}" + _text(key) + value + b"s."


HOSTILE: dict[str, tuple[bytes, str]] = {
    # 46 bytes: numpy.ndarray((512M,), 'f4') called directly, 2 GiB uninitialised
    "ndarray_512M": (_entry("w", b"cnumpy\nndarray\n" + _int64(512 * M) + b"\x85" + _text("f4") + b"\x86R"),
                     "calls numpy.ndarray"),
    # numpy's own layout, but the state claims 512M float32 values and gives 4 bytes
    "state_512M": (_entry("w", _PLACEHOLDER + b"K\x00\x85C\x01b\x87R(K\x01" + _int64(512 * M) + b"\x85" + _FLOAT32
                          + b"\x89C\x04\x00\x00\x00\x00tb"), "declares shape (536870912,)"),
    # the placeholder itself sized 8G elements
    "placeholder_8G": (_entry("w", _PLACEHOLDER + _int64(8 * G) + b"\x85C\x01b\x87R"), "_reconstruct"),
    # a bytes payload declared 4 GiB long in a 30-byte file
    "bytes_4G": (_entry("w", b"\x8e" + struct.pack("<Q", 4 * G) + b"abc"), "truncated or corrupt"),
    # a memo index of 4 billion (the C unpickler sizes its memo table by the index)
    "memo_4G": (_entry("w", b"K\x01r" + struct.pack("<I", 0xFFFFFFFF)), "memo index"),
    # a key nested 200,000 tuples deep: hashing it overflowed the C stack
    "deep_key": (b"\x80\x02})" + b"\x85" * 200_000 + b"K\x01s.", "nests containers more than"),
    # a 70,000-bit integer key: printing it raised ValueError (int to str digit limit)
    "int_key_70000_bits": (b"\x80\x02}\x8b" + struct.pack("<i", 8750) + b"\xff" * 8749 + b"\x7fK\x01s.",
                           "integer of 69999 bits"),
}

_READER = r"""
import json, resource, sys
from ppyoloe_sod.weights.pdparams import load_pdparams

with open("/proc/self/status") as f:
    vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), vm + (1 << 30)))
results = {}
for path in sys.argv[1:]:
    try:
        load_pdparams(path)
        results[path] = ["loaded", ""]
    except BaseException as e:
        results[path] = [type(e).__name__, str(e)]
print(json.dumps(results))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="caps memory with RLIMIT_AS and /proc")
def test_hostile_pickles_are_refused_in_bounded_memory(tmp_path: Path) -> None:
    paths = {}
    for name, (data, _) in HOSTILE.items():
        paths[name] = tmp_path / f"{name}.pdparams"
        paths[name].write_bytes(data)
    assert len(HOSTILE["ndarray_512M"][0]) < 64 and paths["deep_key"].stat().st_size < 300_000
    run = subprocess.run([sys.executable, "-c", _READER, *map(str, paths.values())], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, f"the reader died (return code {run.returncode}): {run.stderr[-2000:]}"
    results = json.loads(run.stdout.strip().splitlines()[-1])
    for name, (_, reason) in HOSTILE.items():
        kind, message = results[str(paths[name])]
        assert kind == "WeightsError", (name, kind, message)
        assert str(paths[name]) in message and reason in message, (name, message)


def test_numpy_layouts_still_load(tmp_path: Path) -> None:
    """The stand-ins accept every layout numpy writes: Fortran order, both byte orders, 0-d, empty, scalars."""
    rng = np.random.default_rng(0)
    state = {
        "fortran": np.asfortranarray(rng.standard_normal((3, 4)).astype(np.float32)),
        "big_endian": rng.standard_normal(5).astype(">f8"),
        "zero_d": np.array(2.5, dtype=np.float16),
        "empty": np.zeros((0, 3), dtype=np.int64),
        "flags": np.array([True, False]),
    }
    path = tmp_path / "layouts.pdparams"
    for protocol in (2, 4):
        path.write_bytes(pickle.dumps(state, protocol=protocol))
        loaded = load_pdparams(path)
        for key, value in state.items():
            same_type = loaded[key].dtype.newbyteorder("=") == value.dtype.newbyteorder("=")  # (read as native)
            assert same_type and loaded[key].shape == value.shape, key
            np.testing.assert_array_equal(loaded[key], value, err_msg=key)
    path.write_bytes(pickle.dumps({"w": np.ones(2, np.float32), "lr": np.float32(0.1)}, protocol=4))
    with pytest.raises(WeightsError, match="'lr' \\(float32, not an array\\)"):
        load_pdparams(path)
