"""Read and write Paddle ``.pdparams`` files without Paddle, and without trusting them.

A ``.pdparams`` file is a pickle of ``{parameter name: float32 ndarray}`` plus one bookkeeping entry
``'StructuredToParameterName@@'`` (name -> Paddle-internal name). Unpickling can run arbitrary code, so we
read it with an unpickler that can only build numpy arrays and dtypes; any other global is refused before
it is imported. Files written under numpy 1 (``numpy.core``) and numpy 2 (``numpy._core``) both load.
"""
from __future__ import annotations

import os
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import WeightsError
from ..fileio import atomic_open

__all__ = ["load_pdparams", "save_pdparams", "STRUCTURED_NAME_KEY"]

#: Bookkeeping entry Paddle adds to every saved state dict; it is not a parameter.
STRUCTURED_NAME_KEY = "StructuredToParameterName@@"

# Every numpy global a weights pickle needs. ``_reconstruct`` + ``ndarray`` + ``dtype`` rebuild an array;
# ``scalar`` rebuilds a numpy scalar (harmless: it only reinterprets bytes under a dtype). The module that
# holds them moved from ``numpy.core`` (numpy 1) to ``numpy._core`` (numpy 2); both spellings are accepted.
_ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {("numpy", "ndarray"), ("numpy", "dtype")}
    | {(f"numpy.{core}.multiarray", name) for core in ("core", "_core") for name in ("_reconstruct", "scalar")}
)

# Pickle protocols 2 and 3 (older Paddle) store ``bytes`` as ``_codecs.encode(text, 'latin1')``; that global is
# allowed only through ``_latin1_encode``, which refuses any other codec.
_CODECS_ENCODE = ("_codecs", "encode")

_PICKLE_PROTOCOL = 4  # what paddle.save writes by default
_ZIP_MAGIC = b"PK\x03\x04"


class _WeightsUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the numpy globals listed in ``_ALLOWED_GLOBALS``."""

    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file, encoding="latin1")  # latin1: arrays pickled by Python 2 era Paddle
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == _CODECS_ENCODE:
            return self._latin1_encode
        if (module, name) not in _ALLOWED_GLOBALS:
            raise WeightsError(
                f"{self._path}: the pickle references the global '{module}.{name}', so it is not a plain "
                "weights file; refusing to load it. A .pdparams file holds only numpy arrays; get the file "
                "from a source you trust (e.g. the official PaddleX download)."
            )
        # Map either numpy spelling onto the installed numpy, whichever major version it is.
        if module == "numpy":
            return getattr(np, name)
        return getattr(_multiarray(), name)

    def _latin1_encode(self, text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        ok = isinstance(text, str) and isinstance(encoding, str)
        if not ok or encoding.lower().replace("_", "-") not in ("latin1", "latin-1"):
            raise WeightsError(
                f"{self._path}: the pickle calls _codecs.encode with {encoding!r}, which plain weights files "
                "never do; refusing to load it."
            )
        return text.encode("latin1")


def _multiarray() -> Any:
    """The installed numpy's ``multiarray`` module, without touching the deprecated ``numpy.core`` shim."""
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1
        from numpy.core import multiarray  # type: ignore[no-redef]
    return multiarray


def _sniff(path: Path, head: bytes) -> None:
    """Raise a helpful error for files that are clearly something else than a pickle."""
    if head.startswith(_ZIP_MAGIC):
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
            if any(n.endswith("data.pkl") for n in names):
                raise WeightsError(
                    f"{path}: this is a PyTorch checkpoint (torch.save zip archive), not a Paddle .pdparams "
                    "file. Load it with torch.load(..., weights_only=True) and model.load_state_dict(), or "
                    "pass a .pdparams / .safetensors file instead."
                )
        raise WeightsError(f"{path}: this is a zip archive, not a Paddle .pdparams file (a pickle).")
    if len(head) >= 10:
        (header_len,) = struct.unpack("<Q", head[:8])
        if head[8:9] == b"{" and 0 < header_len < 100_000_000:
            raise WeightsError(
                f"{path}: this is a safetensors file, not a Paddle .pdparams file; load it with "
                "ppyoloe_sod.weights.store.load_safetensors (or pass it to load_model directly)."
            )
    if not head.startswith(b"\x80"):
        raise WeightsError(
            f"{path}: not a pickle file, so not a Paddle .pdparams file (an exported 'inference.pdiparams' "
            "is a different, binary format and cannot be converted; use the training .pdparams)."
        )


def load_pdparams(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a ``.pdparams`` file safely: parameter name -> numpy array (bookkeeping entry dropped).

    Raises ``WeightsError`` naming the file if it is missing, not a pickle, truncated, references anything
    but numpy arrays, or is not a flat dict of arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"{path}: weights file not found" + (" (it is a directory)" if path.is_dir() else "") + "."
        )
    with open(path, "rb") as f:
        head = f.read(16)
        _sniff(path, head)
        f.seek(0)
        try:
            obj = _WeightsUnpickler(f, path).load()
        except WeightsError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
                KeyError, struct.error, MemoryError, UnicodeDecodeError) as e:
            raise WeightsError(
                f"{path}: the file is truncated or corrupt and cannot be read as a .pdparams pickle "
                f"({type(e).__name__}: {e}). Download it again."
            ) from e
    return _validate_state(obj, path)


def _validate_state(obj: Any, path: Path) -> dict[str, np.ndarray]:
    """Check the unpickled object is a flat ``{str: numeric ndarray}`` dict; drop Paddle's bookkeeping."""
    if not isinstance(obj, dict):
        raise WeightsError(
            f"{path}: expected a dict of parameter name -> array, found a pickled {type(obj).__name__}; "
            "this is not a model .pdparams file."
        )
    state: dict[str, np.ndarray] = {}
    bad: list[str] = []
    for key, value in obj.items():
        if key == STRUCTURED_NAME_KEY:
            continue
        if not isinstance(key, str):
            bad.append(f"{key!r} (key is a {type(key).__name__}, not a str)")
        elif not isinstance(value, np.ndarray):
            bad.append(f"'{key}' ({type(value).__name__}, not an array)")
        elif value.dtype.kind not in "fiub":
            bad.append(f"'{key}' (array of dtype {value.dtype}, not numeric)")
        else:
            state[key] = value
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        hint = ""
        if all(isinstance(v, dict) for k, v in obj.items() if k != STRUCTURED_NAME_KEY):
            hint = (" It looks like a nested checkpoint (e.g. optimizer state or {'model': ...}); pass the "
                    "model's own .pdparams file.")
        raise WeightsError(f"{path}: not a plain .pdparams state dict; unexpected entries: {shown}.{hint}")
    if not state:
        raise WeightsError(f"{path}: the file holds no parameter arrays.")
    return state


def save_pdparams(state: Mapping[str, np.ndarray], path: str | os.PathLike) -> None:
    """Write ``state`` as a ``.pdparams`` file that ``paddle.load`` (and ppdet) read back unchanged.

    Writing needs no restriction: we only pickle numpy arrays we built. The file is written atomically.
    """
    path = Path(path)
    out: dict[str, Any] = {}
    for key, value in state.items():
        if not isinstance(key, str) or key == STRUCTURED_NAME_KEY:
            raise WeightsError(f"{path}: cannot save parameter name {key!r}; names must be plain strings.")
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiub":
            raise WeightsError(
                f"{path}: parameter '{key}' is a {type(value).__name__}"
                + (f" of dtype {value.dtype}" if isinstance(value, np.ndarray) else "")
                + "; save_pdparams needs numeric numpy arrays (convert tensors with .detach().cpu().numpy())."
            )
        # (not np.ascontiguousarray: it turns 0-d arrays into 1-d ones)
        out[key] = value if value.flags.c_contiguous else value.copy(order="C")
    # Paddle writes this mapping on every state dict; identity names are what a fresh save would produce
    # for parameters that have no internal name yet, and paddle.load strips the entry on reading.
    out[STRUCTURED_NAME_KEY] = {key: key for key in state}
    with atomic_open(path, "wb") as f:
        pickle.dump(out, f, protocol=_PICKLE_PROTOCOL)
