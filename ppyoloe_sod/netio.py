"""Bounded HTTP(S) downloads of URLs we do not control: weights files, input images and PDFs.

Every download is bounded four ways, so no server can hold a run or fill its memory:
- connecting: the host name lookup and the TCP connection each within ``CONNECT_TIMEOUT_S``, so an offline
  machine fails at once (socket timeouts do not cover name lookups, hence the lookup thread);
- stalling: each read waits at most ``Limits.read_timeout_s`` for data;
- in total: the whole download (redirects, headers and body) ends by ``Limits.deadline_s``; each read waits no
  longer than the time left, so a server trickling a byte every few seconds cannot stretch it;
- in size: at most ``Limits.max_bytes`` (a larger Content-Length is refused before the body is read).
Redirects are followed only to http and https URLs (never ``file:``, ``ftp:``, ``data:``...).

Failures raise ``FetchError`` with a reason phrased for users; callers add the URL and their own advice and raise
their own error type (``WeightsError`` for weights, ``ImageReadError`` for inputs).
"""
from __future__ import annotations

import http.client
import io
import os
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

__all__ = ["CONNECT_TIMEOUT_S", "READ_TIMEOUT_S", "Limits", "FetchError", "Response", "open_url", "fetch_bytes",
           "seconds_from_env"]

#: Seconds allowed for the host lookup and for the TCP connection (each).
CONNECT_TIMEOUT_S = 10.0
#: Seconds a read may wait for data before the download is abandoned.
READ_TIMEOUT_S = 30.0

_CHUNK = 1 << 20
_ALLOWED_SCHEMES = ("http", "https")


class FetchError(Exception):
    """A download failed; ``str()`` is the reason. ``unreachable``: no server answered (offline, refused)."""

    def __init__(self, reason: str, unreachable: bool = False) -> None:
        super().__init__(reason)
        self.unreachable = unreachable


@dataclass(frozen=True)
class Limits:
    """What one download may take. ``deadline_env`` names the variable that sets the deadline (for messages)."""

    deadline_s: float
    max_bytes: int
    read_timeout_s: float = READ_TIMEOUT_S
    deadline_env: str | None = None


def seconds_from_env(var: str, default: float) -> float:
    """A positive number of seconds from the environment variable ``var``, else ``default``."""
    text = os.environ.get(var, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:  # also refuses nan
        raise FetchError(f"the environment variable {var}={text!r} is not a positive number of seconds")
    return value


# --- the clock and the sockets it bounds -------------------------------------------------------------------------

class _DeadlineExceeded(TimeoutError):
    """The download's total deadline passed."""


class _Clock:
    """The time left to one download."""

    def __init__(self, total_s: float) -> None:
        self.end = time.monotonic() + total_s

    def expired(self) -> bool:
        return time.monotonic() >= self.end

    def budget(self, limit: float) -> float:
        """Seconds the next blocking step may take: ``limit``, or less when the deadline comes first."""
        left = self.end - time.monotonic()
        if left <= 0:
            raise _DeadlineExceeded("the download deadline passed")
        return min(limit, left)


class _BoundedReader(io.RawIOBase):
    """A socket's reader that gives each read ``budget(read timeout)`` seconds at most."""

    def __init__(self, sock: socket.socket, clock: _Clock, read_timeout: float) -> None:
        super().__init__()
        self._sock, self._clock, self._read_timeout = sock, clock, read_timeout
        self._raw = sock.makefile("rb", buffering=0)  # holds the socket open until this reader is closed

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        self._sock.settimeout(self._clock.budget(self._read_timeout))
        return self._raw.readinto(buffer)

    def close(self) -> None:
        self._raw.close()
        super().close()


class _BoundedSocket:
    """A connection's socket whose readers (what http.client reads headers and body through) are bounded."""

    def __init__(self, sock: socket.socket, clock: _Clock, read_timeout: float) -> None:
        self._sock, self._clock, self._read_timeout = sock, clock, read_timeout

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        if mode != "rb":  # pragma: no cover - http.client only reads through makefile
            raise ValueError(f"unsupported mode {mode!r}")
        return io.BufferedReader(_BoundedReader(self._sock, self._clock, self._read_timeout))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _LookupTimeout(TimeoutError):
    """The host name lookup did not finish in time."""


def _resolve(host: str, port: int, timeout: float) -> list[tuple]:
    """``getaddrinfo`` bounded by ``timeout`` (in a daemon thread: the lookup itself cannot be interrupted)."""
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
        raise _LookupTimeout(f"DNS lookup of {host} timed out after {timeout:g} s")
    if isinstance(result[0], OSError):
        raise result[0]
    return result[0]


def _connection_class(base: type[http.client.HTTPConnection], clock: _Clock, read_timeout: float) -> type:
    """``base`` connecting within ``CONNECT_TIMEOUT_S`` (lookup included) and reading within the clock."""

    def create_connection(address: tuple[str, int], timeout: float, source_address: Any = None) -> socket.socket:
        host, port = address
        error: OSError | None = None
        for *_, sockaddr in _resolve(host, port, clock.budget(timeout)):
            try:
                return socket.create_connection(sockaddr[:2], clock.budget(timeout), source_address)
            except OSError as e:
                error = e
        raise error or OSError(f"no address found for {host}")

    class _Connection(base):  # type: ignore[misc, valid-type]
        def connect(self) -> None:
            self.timeout = clock.budget(min(CONNECT_TIMEOUT_S, read_timeout))
            self._create_connection = create_connection
            super().connect()  # (https: the TLS handshake too, each of its reads within self.timeout)
            self.sock = _BoundedSocket(self.sock, clock, read_timeout)

    return _Connection


class _HttpRedirectsOnly(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to an http(s) URL; anything else is a FetchError naming the target."""

    def http_error_302(self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any) -> Any:
        target = headers.get("location") or headers.get("uri")
        if target is not None:
            new_url = urllib.parse.urljoin(req.full_url, target)
            if urllib.parse.urlsplit(new_url).scheme.lower() not in _ALLOWED_SCHEMES:
                fp.close()
                raise FetchError(f"the server redirected to {new_url!r}, which is not an http(s) URL; refused")
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def _opener(clock: _Clock, read_timeout: float) -> urllib.request.OpenerDirector:
    http_connection = _connection_class(http.client.HTTPConnection, clock, read_timeout)
    https_connection = _connection_class(http.client.HTTPSConnection, clock, read_timeout)

    class _HTTP(urllib.request.HTTPHandler):
        def http_open(self, req):  # type: ignore[no-untyped-def]
            return self.do_open(http_connection, req)

    class _HTTPS(urllib.request.HTTPSHandler):
        def https_open(self, req):  # type: ignore[no-untyped-def]
            return self.do_open(https_connection, req, context=self._context)

    return urllib.request.build_opener(_HTTP, _HTTPS, _HttpRedirectsOnly)


# --- downloading ---------------------------------------------------------------------------------------------

class Response:
    """An open download: its headers, and its body in chunks, within the limits."""

    def __init__(self, response: http.client.HTTPResponse, limits: Limits, clock: _Clock) -> None:
        self._response, self._limits, self._clock = response, limits, clock
        self.content_type: str = response.headers.get_content_type() if response.headers.get("Content-Type") else ""
        length = response.headers.get("Content-Length", "")
        self.length: int | None = int(length) if length.isdigit() else None
        if self.length is not None and self.length > limits.max_bytes:
            raise FetchError(f"it is {self.length} bytes, over the {limits.max_bytes}-byte limit")

    def chunks(self) -> Iterator[bytes]:
        """The body, chunk by chunk; FetchError if it breaks off, stalls, runs past the deadline or the size."""
        got = 0
        while True:
            try:
                chunk = self._response.read(_CHUNK)
            except (OSError, http.client.HTTPException) as e:
                raise _describe(e, self._limits, self._clock) from e
            if not chunk:
                break
            got += len(chunk)
            if got > self._limits.max_bytes:
                raise FetchError(f"it is larger than the {self._limits.max_bytes}-byte limit")
            yield chunk
        if self.length is not None and got != self.length:
            raise FetchError(f"the transfer stopped after {got} of {self.length} bytes")


@contextmanager
def open_url(url: str, limits: Limits) -> Iterator[Response]:
    """Open ``url`` (http or https only) within ``limits``; the deadline starts now and covers the body."""
    if urllib.parse.urlsplit(url).scheme.lower() not in _ALLOWED_SCHEMES:
        raise FetchError(f"{url!r} is not an http(s) URL")
    clock = _Clock(limits.deadline_s)
    try:
        response = _opener(clock, limits.read_timeout_s).open(url, timeout=limits.read_timeout_s)
    except FetchError:
        raise
    except (OSError, http.client.HTTPException, ValueError) as e:  # URLError and HTTPError are OSErrors
        raise _describe(e, limits, clock) from e
    with response:
        yield Response(response, limits, clock)


def fetch_bytes(url: str, limits: Limits) -> bytes:
    """The whole body of ``url``, in memory (for inputs: images and PDFs)."""
    with open_url(url, limits) as response:
        return b"".join(response.chunks())


def _describe(error: BaseException, limits: Limits, clock: _Clock) -> FetchError:
    """A FetchError with the user-facing reason for a network or HTTP failure."""
    if isinstance(error, urllib.error.HTTPError):
        error.close()
        return FetchError(f"HTTP {error.code} {error.reason}")
    cause = error.reason if isinstance(error, urllib.error.URLError) else error
    if isinstance(cause, TimeoutError) and (isinstance(cause, _DeadlineExceeded) or clock.expired()):
        how = f"; set {limits.deadline_env} (seconds) to allow longer" if limits.deadline_env else ""
        return FetchError(f"it did not finish within its {limits.deadline_s:g} s deadline{how}")
    if isinstance(cause, _LookupTimeout):
        return FetchError(str(cause), unreachable=True)
    if isinstance(cause, TimeoutError):
        return FetchError(f"timed out: the server sent nothing for {limits.read_timeout_s:g} s (connecting may take "
                          f"{CONNECT_TIMEOUT_S:g} s)", unreachable=isinstance(error, urllib.error.URLError))
    if isinstance(error, urllib.error.URLError):
        return FetchError(f"cannot reach the server ({cause})", unreachable=True)
    return FetchError(f"{type(error).__name__}: {error}")
