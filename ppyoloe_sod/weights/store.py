"""Where weights live on disk: the cache folder, downloads, checksums and safetensors files.

Downloads stream into a temporary file next to the destination and appear under their final name only once
complete and verified, so an interrupted or corrupt download never poses as a good cached file. Every
failure names the URL and the exact path where a manually fetched copy should be placed, because the usual
reason is a machine without internet access.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Mapping

import torch
from tqdm import tqdm

from ..errors import WeightsError, hint
from ..fileio import atomic_open, atomic_write_bytes
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

#: Seconds allowed to open the connection: short, so a machine without network fails at once.
CONNECT_TIMEOUT = 10.0

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

def _resolve(host: str, port: int, timeout: float) -> list[tuple]:
    """``getaddrinfo`` bounded by ``timeout``: socket timeouts do not cover DNS, which can stall offline."""
    result: list = []

    def lookup() -> None:
        try:
            result.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as e:
            result.append(e)

    worker = threading.Thread(target=lookup, daemon=True)
    worker.start()
    worker.join(timeout)
    if not result:
        raise socket.timeout(f"DNS lookup of {host} timed out after {timeout:g} s")
    if isinstance(result[0], OSError):
        raise result[0]
    return result[0]


def _create_connection(address: tuple[str, int], timeout: float, source_address=None) -> socket.socket:
    """Like ``socket.create_connection``, with the host name lookup bounded by the same timeout."""
    host, port = address
    error: OSError | None = None
    for *_, sockaddr in _resolve(host, port, timeout):
        try:
            return socket.create_connection(sockaddr[:2], timeout, source_address)
        except OSError as e:
            error = e
    raise error or OSError(f"no address found for {host}")


def _make_conn_class(base: type[http.client.HTTPConnection], read_timeout: float) -> type:
    """A connection class that connects with ``CONNECT_TIMEOUT`` and then reads with ``read_timeout``."""

    class _Conn(base):  # type: ignore[misc, valid-type]
        def connect(self) -> None:
            self.timeout = min(CONNECT_TIMEOUT, read_timeout)
            self._create_connection = _create_connection
            super().connect()
            self.sock.settimeout(read_timeout)

    return _Conn


def _opener(timeout: float) -> urllib.request.OpenerDirector:
    http_conn = _make_conn_class(http.client.HTTPConnection, timeout)
    https_conn = _make_conn_class(http.client.HTTPSConnection, timeout)

    class _HTTP(urllib.request.HTTPHandler):
        def http_open(self, req):  # type: ignore[no-untyped-def]
            return self.do_open(http_conn, req)

    class _HTTPS(urllib.request.HTTPSHandler):
        def https_open(self, req):  # type: ignore[no-untyped-def]
            return self.do_open(https_conn, req, context=self._context)

    return urllib.request.build_opener(_HTTP, _HTTPS)


def _manual_hint(url: str, dst: Path) -> str:
    return (f" Fetch the file manually (e.g. `curl -L -o {dst} {url}` on a machine with internet access) "
            f"and place it at {dst}")


def download(url: str, dst: str | os.PathLike, sha256: str | None = None, timeout: float = 30) -> Path:
    """Download ``url`` to ``dst`` with a progress bar; verify ``sha256`` if given; return ``dst``.

    The host lookup and connection must each finish within ``CONNECT_TIMEOUT`` seconds (so an offline machine
    fails at once) and each read may stall at most ``timeout`` seconds. On any failure nothing is left at
    ``dst`` and a ``WeightsError`` names the URL and ``dst``.
    """
    dst = Path(dst)
    name = Path(urllib.parse.urlparse(url).path).name or dst.name
    try:
        with _opener(timeout).open(url, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            h = hashlib.sha256()
            got = 0
            with atomic_open(dst, "wb") as f, tqdm(
                total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"download {name}", leave=False
            ) as bar:
                for chunk in iter(lambda: resp.read(_CHUNK), b""):
                    f.write(chunk)
                    h.update(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
                if total is not None and got != total:
                    raise WeightsError(
                        f"Download of {url} stopped after {got} of {total} bytes."
                        + _manual_hint(url, dst) + "."
                    )
                if sha256 is not None and h.hexdigest() != sha256.lower():
                    raise WeightsError(
                        f"Download of {url} has sha256 {h.hexdigest()}, expected {sha256.lower()}; the file was "
                        f"discarded (the server may have sent something else, e.g. an error page)."
                        + _manual_hint(url, dst) + " after checking its sha256."
                    )
    except WeightsError:
        raise
    except urllib.error.HTTPError as e:
        raise WeightsError(f"Download of {url} failed: HTTP {e.code} {e.reason}." + _manual_hint(url, dst) + ".") from e
    except urllib.error.URLError as e:
        raise WeightsError(
            f"Cannot reach {url} ({e.reason}); is this machine offline, or the server down?" + _manual_hint(url, dst) + "."
        ) from e
    except (OSError, http.client.HTTPException) as e:  # timeouts, resets, truncated responses
        kind = "timed out" if isinstance(e, (socket.timeout, TimeoutError)) else f"failed ({type(e).__name__}: {e})"
        raise WeightsError(f"Download of {url} {kind}." + _manual_hint(url, dst) + ".") from e
    return dst


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
