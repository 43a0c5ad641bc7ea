"""Where weights live on disk: the cache folder, downloads, checksums and safetensors files.

Downloads stream into a temporary file next to the destination and appear under their final name only once
complete and verified, so an interrupted or corrupt download never poses as a good cached file. Every
failure names the URL and the exact path where a manually fetched copy should be placed, because the usual
reason is a machine without internet access.
"""
from __future__ import annotations

import hashlib
import os
import urllib.parse
from pathlib import Path
from typing import BinaryIO, Mapping

import torch
from tqdm import tqdm

from ..errors import WeightsError, hint
from ..fileio import atomic_open, atomic_write_bytes
from ..netio import READ_TIMEOUT_S, FetchError, Limits, open_url, seconds_from_env
from .formats import (check_finite, check_weight_dtypes, describe_format, read_safetensors_header, require_file,
                      sniff_format)

__all__ = [
    "CACHE_ENV",
    "cache_dir",
    "download",
    "fetch_weights",
    "cache_path_for",
    "sha256_file",
    "save_safetensors",
    "load_safetensors",
]

#: Environment variable that overrides the cache folder.
CACHE_ENV = "PPYOLOE_SOD_HOME"

#: Environment variable that sets the total time a weights download may take, in seconds.
DEADLINE_ENV = "PPYOLOE_SOD_WEIGHTS_DEADLINE"
#: Default total time a weights download may take (the largest published file is about 350 MB).
DEADLINE_S = 3600.0
#: Largest weights download accepted.
MAX_DOWNLOAD_BYTES = 4 << 30

#: The format each weights suffix must have on arrival (see ``formats.sniff_format``).
_EXPECTED_FORMAT = {".pdparams": "pickle", ".safetensors": "safetensors"}

_CHUNK = 1 << 20


def cache_dir() -> Path:
    """The weights cache folder: ``$PPYOLOE_SOD_HOME`` if set, else ``~/.cache/ppyoloe_sod`` (not created)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ppyoloe_sod"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks (weights files are hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


# --- downloading -------------------------------------------------------------------------------------------

def _manual_hint(url: str, dst: Path) -> str:
    return (f" Fetch the file manually (e.g. `curl -L -o {dst} {url}` on a machine with internet access) "
            f"and place it at {dst}")


def download(url: str, dst: str | os.PathLike, sha256: str | None = None, timeout: float = READ_TIMEOUT_S,
             deadline_s: float | None = None, max_bytes: int = MAX_DOWNLOAD_BYTES) -> Path:
    """Download ``url`` to ``dst`` with a progress bar; verify ``sha256`` if given; return ``dst``.

    Bounded as ``netio`` describes: connecting within ``netio.CONNECT_TIMEOUT_S``, each read within ``timeout``
    seconds, the whole download within ``deadline_s`` (default: ``$PPYOLOE_SOD_WEIGHTS_DEADLINE`` or
    ``DEADLINE_S``), at most ``max_bytes``. What arrives must be a weights file of the kind ``dst``'s suffix
    names (a pickle for .pdparams, safetensors for .safetensors; never an HTML page): it is checked before it
    takes ``dst``'s name. On any failure nothing is left at ``dst`` and a ``WeightsError`` names the URL and ``dst``.
    """
    dst = Path(dst)
    name = Path(urllib.parse.urlparse(url).path).name or dst.name
    try:
        deadline = deadline_s if deadline_s is not None else seconds_from_env(DEADLINE_ENV, DEADLINE_S)
        limits = Limits(deadline, max_bytes, timeout, DEADLINE_ENV)
        with open_url(url, limits) as response, atomic_open(dst, "w+b") as f, tqdm(
            total=response.length, unit="B", unit_scale=True, unit_divisor=1024, desc=f"download {name}", leave=False
        ) as bar:
            digest = hashlib.sha256()
            for chunk in response.chunks():
                f.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
            if sha256 is not None and digest.hexdigest() != sha256.lower():
                raise WeightsError(
                    f"Download of {url} has sha256 {digest.hexdigest()}, expected {sha256.lower()}; the file was "
                    f"discarded (the server may have sent something else, e.g. an error page)."
                    + _manual_hint(url, dst) + " after checking its sha256."
                )
            _check_arrival(f, url, dst, response.content_type)
    except FetchError as e:
        if e.unreachable:
            raise WeightsError(f"Cannot reach {url} ({e}); is this machine offline, or the server down?"
                               + _manual_hint(url, dst) + ".") from e
        raise WeightsError(f"Download of {url} failed: {e}." + _manual_hint(url, dst) + ".") from e
    return dst


def _check_arrival(f: BinaryIO, url: str, dst: Path, content_type: str) -> None:
    """Refuse a download that is not the weights file ``dst``'s suffix calls for (e.g. an HTML error page)."""
    f.flush()
    size = os.fstat(f.fileno()).st_size
    kind = sniff_format(f, size)
    expected = _EXPECTED_FORMAT.get(dst.suffix)
    if kind in ("html", "text", "empty") or (expected is not None and kind != expected):
        served = f" (served as {content_type})" if content_type else ""
        wanted = f", not {describe_format(expected)}" if expected else ", not a weights file"
        raise WeightsError(
            f"Download of {url} is {describe_format(kind)}{served}{wanted}; it was not cached (the server may "
            "have answered with an error or login page)." + _manual_hint(url, dst) + ".")
    if kind == "safetensors":
        try:
            read_safetensors_header(f, size, dst)
        except WeightsError as e:
            raise WeightsError(f"Download of {url}: {e}" + _manual_hint(url, dst) + ".") from None


def cache_path_for(url: str, official: bool = False) -> Path:
    """Where the cached copy of ``url`` lives: ``cache_dir()/<file name>`` for the published weights (names that
    are unique and that users may place by hand), ``cache_dir()/urls/<hash of the URL>/<file name>`` for any other
    URL, so that two URLs ending in the same file name never share an entry."""
    name = Path(urllib.parse.urlparse(url).path).name
    if not name:
        raise WeightsError(f"Cannot tell a file name from the URL {url!r}; it must end in the weights file's name.")
    if official:
        return cache_dir() / name
    return cache_dir() / "urls" / hashlib.sha256(url.encode()).hexdigest()[:16] / name


def fetch_weights(url: str, sha256: str | None = None, official: bool = False) -> Path:
    """Path of the cached copy of ``url`` (see ``cache_path_for``), downloading it once.

    A file already in the cache is trusted as is (downloads only ever appear there complete and verified).
    """
    dst = cache_path_for(url, official)
    if dst.is_file():
        return dst
    return download(url, dst, sha256=sha256)


# --- safetensors -------------------------------------------------------------------------------------------

def save_safetensors(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike,
                     metadata: Mapping[str, str]) -> None:
    """Write a state dict and its string metadata (model name, classes, source sha256...) atomically."""
    from safetensors.torch import save

    path = Path(path)
    bad = [f"{k!r}: {v!r}" for k, v in metadata.items() if not (isinstance(k, str) and isinstance(v, str))]
    if bad:
        raise WeightsError(f"{path}: safetensors metadata must map str to str; offending entries: {', '.join(bad)}")
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise WeightsError(f"{path}: entry '{key}' is a {type(value).__name__}, not a torch.Tensor.")
        t = value.detach().to("cpu").contiguous()
        storage = t.untyped_storage().data_ptr()
        if t.numel() and storage in seen:  # safetensors refuses tensors that share memory
            t = t.clone()
            storage = t.untyped_storage().data_ptr()
        seen.add(storage)
        tensors[key] = t
    atomic_write_bytes(path, save(tensors, metadata=dict(metadata)))


def load_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file into CPU tensors; return ``(state_dict, metadata)`` (metadata may be empty).

    The header is checked against the file size before anything is read (see ``formats``); the tensors must be
    floats (integers only for BatchNorm's step counter) and finite. Every failure is a ``WeightsError``.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    require_file(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        kind = sniff_format(f, size)
        if kind in ("pickle", "zip"):
            raise WeightsError(f"{path}: this is {describe_format(kind)}, not safetensors; if it is a Paddle "
                               ".pdparams file, give it that suffix: " + hint(
                                   python="load_model converts it (tools/convert_weights.py converts it once).",
                                   cli="it is converted when loaded.",
                                   convert_weights="this tool converts it to .safetensors."))
        header = read_safetensors_header(f, size, path)
    check_weight_dtypes({name: kind for name, (_, kind, _) in header.tensors.items()}, str(path))
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            state = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise WeightsError(
            f"{path}: not a valid safetensors file (truncated, corrupt, or another format such as .pdparams) "
            f"({type(e).__name__}: {e}). Re-create it, e.g. by converting the .pdparams file again."
        ) from e
    check_finite(state, str(path))
    return state, header.metadata
