"""PaddleX 3.7.2's basic serving API for the small_object_detection pipeline, as a FastAPI app.

Routes: ``GET /health``, ``POST /small-object-detection`` (bodies in ``schemas.py``), and the demo page at
``GET /``. Answers follow PaddleX's: ``{"logId", "errorCode", "errorMsg"[, "result"]}``; a body that does not
validate is a 422 whose ``errorMsg`` is the JSON list ``[{"type", "loc", "msg"}]`` PaddleX writes, anything
unexpected a 500 "Internal server error".

Where PaddleX answers 500 for a bad input (base64 that does not decode, a file that is not an image, an image
over the pixel limit), this server names the problem with a 4xx: 422 for the ``image`` or ``threshold`` field
(in the same JSON-list form, ``loc`` ``body.image`` / ``body.threshold``), 413 for a body above
``Serve.max_body_mb`` or an image above ``Predict.max_pixels``, 400 for a URL that cannot be downloaded within
``Serve.url_timeout_s``, 503 when ``Serve.max_queue`` requests already wait for the model. A ``logId`` sent in
the body is echoed in the answer (PaddleX echoes it in errors only); otherwise a new UUID is generated.

Work per request: the body is parsed on the event loop; base64 / URL bytes are decoded in a thread; the image
joins a batch (``batching.RequestBatcher``) that runs ``DetPredictor.detect_batch`` on the model thread; the
request's threshold, clipping and the drawing are applied per request, as ``predict`` does.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import io
import json
import uuid
from typing import Any, AsyncIterator, Mapping

import numpy as np
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException

from ..config import ServeConfig
from ..data.sources import fetch_url
from ..errors import ConfigError, ImageReadError, interface
from ..imageio import PixelLimit, decode_image
from ..infer.predictor import DetPredictor, filter_and_clip
from ..infer.result import DetResult
from .batching import QueueFullError, RequestBatcher
from .page import CONTENT_SECURITY_POLICY, demo_page
from .schemas import (HEALTH_ENDPOINT, INFER_ENDPOINT, AIStudioNoResultResponse, DetectedObject, InferRequest,
                      InferResponse, InferResult)

MIB = 1024 * 1024
BASE64_IMAGE_NAME = "'image'"  # how messages name a base64 image (a URL names itself)


class ServeError(Exception):
    """A request the server refuses: the HTTP status, the message the client reads, and for 422 the body field
    at fault (reported in PaddleX's validation-error form)."""

    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


class ImageTooLargeError(ImageReadError):
    """An image above the pixel limit (answered 413, not 422)."""


@dataclasses.dataclass(frozen=True)
class RequestPixelLimit(PixelLimit):
    """The pixel limit of request images: its refusal is an ImageTooLargeError, so the status can say so."""

    def error(self, name: str, size_text: str) -> ImageReadError:
        return ImageTooLargeError(str(super().error(name, size_text)))


def check_serve_config(serve: ServeConfig) -> None:
    """ConfigError naming the first Serve key whose value cannot work."""
    rules = (("workers", serve.workers >= 1, ">= 1"), ("max_batch_size", serve.max_batch_size >= 1, ">= 1"),
             ("max_queue", serve.max_queue >= 1, ">= 1"), ("max_wait_ms", serve.max_wait_ms >= 0, ">= 0"),
             ("port", 0 <= serve.port <= 65535, "between 0 and 65535"),
             ("max_body_mb", serve.max_body_mb > 0, "> 0"), ("url_timeout_s", serve.url_timeout_s > 0, "> 0"))
    for name, ok, rule in rules:
        if not ok:
            raise ConfigError(f"Serve.{name} must be {rule}, got {getattr(serve, name)!r}")


def new_log_id() -> str:
    return str(uuid.uuid4())


def no_result(status: int, message: str, log_id: str | None = None) -> JSONResponse:
    """PaddleX's answer without a result: errorCode is the HTTP status."""
    body = AIStudioNoResultResponse(logId=log_id or new_log_id(), errorCode=status, errorMsg=message)
    return JSONResponse(jsonable_encoder(body), status_code=status)


def validation_message(errors: list[Mapping[str, Any]]) -> str:
    """PaddleX's 422 errorMsg: JSON of [{"type", "loc": "body.image" (dotted, [i] for indices), "msg"}]."""
    def dotted(loc: Any) -> str:
        parts = ""
        for i, part in enumerate(loc):
            parts += f"[{part}]" if isinstance(part, int) else (f".{part}" if i else str(part))
        return parts

    return json.dumps([{"type": e["type"], "loc": dotted(e["loc"]), "msg": e["msg"]} for e in errors])


async def sent_log_id(request: Request) -> str | None:
    """The body's logId when the body is JSON holding a string logId (the body is parsed once and cached)."""
    with contextlib.suppress(Exception):
        body = await request.json()
        if isinstance(body, dict) and isinstance(body.get("logId"), str):
            return body["logId"]
    return None


def is_url(text: str) -> bool:
    """PaddleX's rule: ``image`` is a URL when it starts with http:// or https://, else base64."""
    return text.startswith(("http://", "https://"))


def decode_base64(text: str) -> bytes:
    """The file bytes of a base64 ``image`` (line breaks allowed; a data: URL's prefix is skipped)."""
    if text.startswith("data:") and ";base64," in text[:200]:
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as e:
        raise ServeError(422, f"image is neither an http(s) URL nor valid base64 ({e}); send "
                              f"base64.b64encode(file_bytes).decode('ascii') or a URL", "image") from None


class DetectionService:
    """The request handling around one loaded predictor, independent of the web framework's routing."""

    def __init__(self, predictor: DetPredictor, serve: ServeConfig):
        self.predictor = predictor
        self.serve = serve
        self.limit = RequestPixelLimit(predictor.max_pixels)
        self.batcher = RequestBatcher(predictor.detect_batch, serve.max_batch_size, serve.max_wait_ms / 1000,
                                      serve.max_queue)

    def threshold(self, requested: Any) -> float | dict[int, float]:
        """The request's threshold, else the server's (create_model's, else the model's default), as predict."""
        try:
            with interface("python"):  # the field is called threshold here, as in Python
                return self.predictor.resolve_threshold(requested)
        except ConfigError as e:
            raise ServeError(422, str(e), "threshold") from None

    def page_threshold(self) -> float | None:
        """The threshold the demo page starts with (None when the server's is per class)."""
        thr = self.threshold(None)
        return thr if isinstance(thr, float) else None

    async def image_bytes(self, image: str) -> tuple[bytes, str]:
        """The file bytes the ``image`` field stands for, and the name messages give them."""
        if not is_url(image):
            return await asyncio.to_thread(decode_base64, image), BASE64_IMAGE_NAME
        deadline = self.serve.url_timeout_s
        # The download's own deadline is a little later, so the refusal below (naming the server's key) wins
        # and the thread still ends.
        download = asyncio.to_thread(fetch_url, image, timeout=deadline, deadline_s=deadline + 1)
        try:
            return await asyncio.wait_for(download, deadline), image
        except TimeoutError:
            raise ServeError(400, f"Downloading the image from {image} took longer than {deadline:g} s "
                                  f"(Serve.url_timeout_s); send the image as base64 instead") from None
        except ImageReadError as e:
            raise ServeError(400, str(e)) from None

    def decode(self, data: bytes, name: str) -> np.ndarray:
        try:
            return decode_image(data, name, self.limit)
        except ImageTooLargeError as e:
            raise ServeError(413, str(e)) from None
        except ImageReadError as e:
            raise ServeError(422, str(e), "image") from None

    @staticmethod
    def drawing_base64(image: np.ndarray, boxes: list[dict[str, Any]]) -> str:
        """The drawing of ``predict``'s results, as the base64 of a JPEG (PaddleX's format here)."""
        buf = io.BytesIO()
        DetResult(None, None, image, boxes).img["res"].convert("RGB").save(buf, format="JPEG")
        return base64.b64encode(buf.getvalue()).decode("ascii")

    async def infer(self, request: InferRequest) -> InferResult:
        threshold = self.threshold(request.threshold)
        image = await asyncio.to_thread(self.decode, *await self.image_bytes(request.image))
        try:
            rows = await self.batcher.submit(image)
        except QueueFullError as e:
            raise ServeError(503, str(e)) from None
        height, width = image.shape[:2]
        boxes = filter_and_clip(rows, threshold, width, height, self.predictor.labels)
        visualize = request.visualize if request.visualize is not None else self.serve.visualize
        drawing = await asyncio.to_thread(self.drawing_base64, image, boxes) if visualize else None
        objects = [DetectedObject(bbox=b["coordinate"], categoryId=b["cls_id"], categoryName=b["label"],
                                  score=b["score"]) for b in boxes]
        return InferResult(detectedObjects=objects, image=drawing)


class BodyLimit:
    """ASGI middleware: a request body above ``max_bytes`` is answered 413 before it is read (declared
    Content-Length) or as soon as it passes the limit (chunked bodies)."""

    def __init__(self, app: Any, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def message(self) -> str:
        return (f"The request body is larger than {self.max_bytes:,} bytes (Serve.max_body_mb on the server); "
                f"send a smaller image or its URL")

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            return await no_result(413, self.message())(scope, receive, send)
        received = 0

        async def limited_receive() -> dict:
            nonlocal received
            if received > self.max_bytes:  # refused already: reading on could wait for a body that has ended
                raise HTTPException(413, self.message())
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, self.message())  # FastAPI passes it on from the body read
            return message

        await self.app(scope, limited_receive, send)


def create_app(predictor: DetPredictor, serve: ServeConfig | None = None) -> FastAPI:
    """The app serving ``predictor``; the batcher starts with the app and finishes queued work at shutdown."""
    serve = serve or ServeConfig()
    check_serve_config(serve)
    service = DetectionService(predictor, serve)
    page = demo_page(predictor.model_name, service.page_threshold())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.batcher.start()
        try:
            yield
        finally:
            await service.batcher.close()

    app = FastAPI(title=f"ppyoloe-sod: {predictor.model_name}", lifespan=lifespan)
    app.state.service = service
    app.add_middleware(BodyLimit, max_bytes=int(serve.max_body_mb * MIB))

    @app.get(HEALTH_ENDPOINT, operation_id="checkHealth")
    async def health() -> AIStudioNoResultResponse:
        return AIStudioNoResultResponse(logId=new_log_id(), errorCode=0, errorMsg="Healthy")

    @app.post(INFER_ENDPOINT, operation_id="infer", response_model=InferResponse, response_model_exclude_none=True,
              responses={422: {"model": AIStudioNoResultResponse}, 500: {"model": AIStudioNoResultResponse}})
    async def infer(request: InferRequest, http_request: Request) -> InferResponse:
        result = await service.infer(request)
        return InferResponse(logId=await sent_log_id(http_request) or new_log_id(), result=result)

    @app.get("/", include_in_schema=False)
    async def demo() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})

    @app.exception_handler(ServeError)
    async def refused(request: Request, exc: ServeError) -> JSONResponse:
        message = exc.message
        if exc.status == 422:
            message = validation_message([{"type": "value_error", "loc": ("body", exc.field), "msg": exc.message}])
        return no_result(exc.status, message, await sent_log_id(request))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return no_result(422, validation_message(exc.errors()), await sent_log_id(request))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return no_result(exc.status_code, str(exc.detail), await sent_log_id(request))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:  # the server logs the traceback
        return no_result(500, "Internal server error", await sent_log_id(request))

    return app
