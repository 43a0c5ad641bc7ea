"""A tiny HTTP server on 127.0.0.1 for download tests: serves bytes by path and counts requests per path."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LocalServer:
    """``files`` maps URL paths to bodies. Per path, optionally: ``short`` answers with half the announced
    Content-Length; ``types`` sets the Content-Type; ``redirects`` answers 302 to the given Location;
    ``trickle`` sends the body one byte at a time, that many seconds apart (until the client hangs up)."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.hits: dict[str, int] = {}
        self.short: set[str] = set()
        self.types: dict[str, str] = {}
        self.redirects: dict[str, str] = {}
        self.trickle: dict[str, float] = {}
        self._closing = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                outer.hits[self.path] = outer.hits.get(self.path, 0) + 1
                if self.path in outer.redirects:
                    self.send_response(302)
                    self.send_header("Location", outer.redirects[self.path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                if self.path in outer.types:
                    self.send_header("Content-Type", outer.types[self.path])
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.path in outer.trickle:
                    self._trickle(body, outer.trickle[self.path])
                else:
                    self.wfile.write(body[: len(body) // 2] if self.path in outer.short else body)

            def _trickle(self, body: bytes, every_s: float) -> None:
                for i in range(len(body)):
                    if outer._closing.wait(every_s):
                        return
                    try:
                        self.wfile.write(body[i:i + 1])
                    except OSError:  # the client gave up
                        return

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self) -> "LocalServer":
        self.thread.start()
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self._closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()
