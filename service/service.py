"""The BentoML service: HTTP in, the request path (decode -> preprocess -> ONNX Runtime) wired, JSON out.

Endpoints are FastAPI routes mounted on the BentoML service, so that this module owns request parsing: every
client mistake becomes a 4xx with a JSON body (BentoML's own parsers answer some of them with a 500). BentoML
still runs the workers, /livez, /readyz, /metrics and the docs page, which includes these routes.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated

import bentoml
import numpy as np
from bentoml.validators import DType, Shape
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import AfterValidator, BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect

from service import metrics
from service.api_document import correct_bentoml_openapi
from service.batching import Batcher
from service.config import Settings
from service.errors import ClientError
from service.lifecycle import drain_on_sigterm, draining
from service.middleware import RequestMiddleware, record_digits
from service.pixels import check_pixels, parse_pixels
from service.preprocess import Digit, normalise, read_digit
from service.runtime import ModelRuntime, load_card

settings = Settings.from_env()
correct_bentoml_openapi()
card = load_card(settings.model_path)  # fail `bentoml serve` at once, with the reason, not in every worker

IMAGE_TYPES = (
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/bmp",
    "image/webp",
    "image/tiff",
    "image/heic",
    "image/heif",
    "image/avif",
)
# Files up to this size are decoded on the event loop (a 28x28 PNG or a drawing: the hop to a thread costs about
# as much as decoding one); larger ones, photos, in the worker's decoding thread, so that the loop keeps serving
# other requests meanwhile (measured: docs/benchmarks.md, "Photos").
INLINE_BYTES = 32_000
# BentoML traces requests and service/metrics.py meters them: FastAPI's own telemetry (>= 0.16x) would do it twice.
app = FastAPI(
    title="digitserve",
    description="Handwritten digit classification (MNIST CNN on ONNX Runtime)",
    telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
)


@app.exception_handler(ClientError)
async def client_error(_: Request, exc: ClientError) -> JSONResponse:
    return JSONResponse({"error": exc.message}, status_code=exc.status)


@app.exception_handler(RequestValidationError)
async def invalid_parameter(_: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's own 422 (a query parameter like `debug=maybe`), in the same {"error": ...} shape as ours."""
    where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    return JSONResponse({"error": f"invalid request: {where}"}, status_code=422)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (413) as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ClientError(413, f"body of {declared} bytes is over the limit of {limit}")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ClientError(413, f"body is over the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:  # nobody is left to answer: not a server error worth a traceback
        raise ClientError(400, "client disconnected before the body was complete") from None
    return b"".join(chunks)


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def uploaded_files(request: Request, field: str, limit: int) -> list[bytes]:
    """The files of a multipart `field`; a text value where a file belongs is a client error."""
    if media_type(request) != "multipart/form-data":
        raise ClientError(415, f"send multipart/form-data with the image file(s) in the field {field!r}")
    body = await read_body(request, settings.max_bytes)

    async def replay() -> dict:  # the body is read already (under the size limit): hand it to the form parser
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=limit + 1, max_fields=limit + 1)
    except Exception as exc:  # Starlette raises its own types for malformed multipart
        raise ClientError(400, f"malformed multipart body: {exc}") from None
    values = form.getlist(field)
    if not values:
        raise ClientError(422, f"no file in the multipart field {field!r}")
    if not all(isinstance(v, UploadFile) for v in values):
        raise ClientError(422, f"the field {field!r} must hold file uploads, not text")
    if len(values) > limit:
        raise ClientError(413, f"{len(values)} images in one request, more than the limit of {limit}")
    return [await v.read() for v in values]


def png_base64(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def pixel_rows(pixels: np.ndarray) -> np.ndarray:
    """/classify_pixels's checks, run while BentoML parses the request, before batching: a mistake is that
    request's 400 alone (pydantic turns a ValueError into BentoML's 400; a ClientError would be a 500)."""
    try:
        return check_pixels(pixels, settings.max_batch)
    except ClientError as exc:
        raise ValueError(exc.message) from None


PixelRows = Annotated[np.ndarray, Shape((-1, 784)), DType("float32"), AfterValidator(pixel_rows)]
ProbabilityRows = Annotated[np.ndarray, Shape((-1, 10)), DType("float32")]  # so the OpenAPI document says [N, 10]
GC_THRESHOLDS = (20_000, 20, 100)  # CPython's are (700, 10, 10)
BINARY = {"type": "string", "format": "binary"}


class Prediction(BaseModel):
    digit: int = Field(ge=0, le=9)
    confidence: float = Field(ge=0, le=1, description="probability of `digit`")
    probabilities: list[float] = Field(min_length=10, max_length=10, description="of digits 0-9, summing to 1")
    model_version: str
    image: str | None = Field(None, description="with ?debug=true: the 28x28 image the model saw, base64 PNG")
    box: list[int] | None = Field(
        None,
        min_length=4,
        max_length=4,
        description="with ?debug=true: where the digit was found, [left, top, right, bottom] in pixels of the "
        "image as displayed (EXIF orientation applied), right and bottom exclusive",
    )


class Predictions(BaseModel):
    results: list[Prediction] = Field(description="one per image, in the order sent")


class Error(BaseModel):
    error: str = Field(description="what was wrong, in words")


ERRORS = {
    400: "not an image, corrupt, no digit found, or pixels out of shape or range",
    401: "DIGITSERVE_API_KEY is set and the request lacks `Authorization: Bearer <key>`",
    429: "more than DIGITSERVE_MAX_CONCURRENCY requests in flight in the worker; retry later (Retry-After)",
    413: "body, image or batch over its limit",
    415: "unsupported content type",
    422: "missing or malformed field or parameter",
    503: "overloaded: not served within DIGITSERVE_BATCH_LATENCY_MS; retry later",
}
# 504 (past DIGITSERVE_TIMEOUT) comes from BentoML, in its own format.
SHED = {504: {"description": "request timed out"}}


def answers(model: type[BaseModel]) -> dict:
    """OpenAPI responses of a prediction route: its result, our JSON errors, BentoML's timeout."""
    return {
        200: {"model": model},
        **{status: {"model": Error, "description": text} for status, text in ERRORS.items()},
        **SHED,
    }


def request_body(content: dict) -> dict:
    """OpenAPI for a route that reads its own body (FastAPI cannot infer it from the signature)."""
    return {"requestBody": {"required": True, "content": content}}


def multipart(field: str, schema: dict) -> dict:
    return {"multipart/form-data": {"schema": {"type": "object", "properties": {field: schema}, "required": [field]}}}


IMAGE_BODY = request_body({**multipart("image", BINARY), **{t: {"schema": BINARY} for t in IMAGE_TYPES}})
BATCH_BODY = request_body(multipart("images", {"type": "array", "items": BINARY}))
PIXELS_BODY = request_body(
    {
        "application/json": {"schema": {"type": "array", "description": "[28,28], [784], [N,28,28] or [N,784]"}},
        "application/octet-stream": {"schema": BINARY},
        "application/x-npy": {"schema": BINARY},
    }
)


@bentoml.service(
    name="digitserve",
    workers=settings.workers,
    # BentoML keeps each request's context until its timeout timer fires, even after the answer: a short
    # timeout keeps that heap (and full garbage collections) small. The concurrency limit is middleware.py's.
    traffic={"timeout": settings.timeout},
    logging={"access": {"enabled": False}},  # service/middleware.py writes the access log, with the request id
    # service/metrics.py records the request metrics (docs/benchmarks.md, "Per-request overhead"), and
    # OpenTelemetry spans on the prediction routes are made only with DIGITSERVE_TRACING=true.
    metrics={"enabled": False},
    tracing={"excluded_urls": [] if settings.tracing else [f"{route}$" for route in metrics.PREDICTION_ROUTES]},
)
@bentoml.asgi_app(app, path="/")
class DigitService:
    def __init__(self) -> None:
        self.runtime = ModelRuntime(settings.model_path, settings.provider, settings.threads, settings.cache_dir, card)
        self.version = self.runtime.card["version"]
        self.batcher = Batcher(self.infer, settings.batch_size, settings.batch_latency_ms)
        # One thread: photos of concurrent requests take turns, and the event loop keeps the other core's share.
        self.decoder = ThreadPoolExecutor(1, thread_name_prefix="decode")

    @bentoml.on_startup
    def freeze_heap(self) -> None:
        """Move everything built at start-up (BentoML, the app, the model) out of the collector's sight, and
        collect less often: measured here, full collections over that heap stalled requests for 50-120 ms."""
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)

    @bentoml.on_shutdown
    def forget_in_flight(self) -> None:
        metrics.worker_stopped()

    @bentoml.on_startup
    def drain_before_stopping(self) -> None:
        drain_on_sigterm(settings.drain_seconds)  # service/lifecycle.py

    async def __is_ready__(self) -> bool:
        """BentoML's /readyz: false while the worker drains before a shutdown."""
        return not draining()

    def infer(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 [N, 28, 28] -> probabilities [N, 10]; the batcher calls it on the images of many requests."""
        metrics.batch_size.observe(len(pixels))
        return self.runtime.probabilities(normalise(pixels, self.runtime.mean, self.runtime.std))

    async def predict(
        self, pixels: np.ndarray, request: Request, debug: bool = False, boxes: list[list[int]] | None = None
    ) -> list[dict]:
        """uint8 [N, 28, 28] -> one result dict per image (and the digits noted for the request's log line)."""
        probs = await self.batcher(pixels)
        results = []
        for n, (image, p) in enumerate(zip(pixels, probs, strict=True)):
            digit = int(p.argmax())
            metrics.prediction_counter(digit).inc()
            metrics.confidence.observe(float(p[digit]))
            result = {
                "digit": digit,
                "confidence": float(p[digit]),
                "probabilities": [float(v) for v in p],
                "model_version": self.version,
            }
            if debug:
                result["image"] = png_base64(image)
                if boxes is not None:
                    result["box"] = boxes[n]
            results.append(result)
        record_digits(request.scope, [r["digit"] for r in results])
        return results

    async def digits(self, files: list[bytes]) -> tuple[np.ndarray, list[list[int]]]:
        """The images of one request -> uint8 [N, 28, 28] and their boxes; photos off the event loop."""

        def read() -> list[Digit]:
            return [read_digit(f, settings.max_pixels) for f in files]

        # Alone in the worker, a photo is decoded on the loop too: there is no one to stall, and the hop to the
        # thread cost a lone 1280x960 photo about 2 ms more here (the GIL handed back and forth).
        if sum(len(f) for f in files) <= INLINE_BYTES or self.batcher.requests <= 1:
            found = read()
        else:
            found = await asyncio.get_running_loop().run_in_executor(self.decoder, read)
        return np.stack([d.pixels for d in found]), [list(d.box) for d in found]

    @bentoml.api(
        route="/probabilities",
        batchable=True,
        batch_dim=0,
        max_batch_size=settings.batch_size,
        max_latency_ms=settings.batch_latency_ms,
    )
    def probabilities(self, pixels: PixelRows) -> ProbabilityRows:
        """BentoML's own typed API, for BentoML clients (`bentoml.SyncHTTPClient(url).probabilities(pixels=...)`):
        MNIST-format images as rows of 784 values 0-255, JSON `{"pixels": [[...], ...]}` -> their probabilities
        [N, 10]. BentoML batches concurrent calls itself (`batchable`), with the same size and latency limits."""
        return self.infer(pixels)


# Request id, API key, access log. BentoML places it inside its own timeout and concurrency limits: the 429s and
# 504s those give carry no request id and get BentoML's log line only.
DigitService.add_asgi_middleware(
    RequestMiddleware,
    api_key=settings.api_key,
    access_log=settings.access_log,
    max_concurrency=settings.max_concurrency,
)


# The routes are plain functions, not methods: BentoML hands a method its `self` through a synchronous FastAPI
# dependency, which FastAPI runs in a thread pool, one thread hop per request.
def service() -> DigitService:
    return bentoml.get_current_service()


@app.post(
    "/classify",
    openapi_extra=IMAGE_BODY,
    responses=answers(Prediction),
    summary="Classify one image file (multipart or raw body)",
)
async def classify(request: Request, debug: bool = False) -> dict:
    """One PNG, JPEG, GIF, BMP, WebP, TIFF, HEIC/HEIF or AVIF image: as the multipart field `image`, or as the
    raw body with its image content type. `?debug=true` adds the 28x28 image the model saw (base64 PNG) and
    the box where the digit was found."""
    svc = service()
    with svc.batcher.request():
        kind = media_type(request)
        if kind == "multipart/form-data":
            (data,) = await uploaded_files(request, "image", 1)
        elif kind in IMAGE_TYPES or kind == "application/octet-stream":
            data = await read_body(request, settings.max_bytes)
        else:
            raise ClientError(415, f"content type {kind or 'missing'!r}: send multipart/form-data or an image")
        pixels, boxes = await svc.digits([data])
        return (await svc.predict(pixels, request, debug, boxes))[0]


@app.post(
    "/classify_batch", openapi_extra=BATCH_BODY, responses=answers(Predictions), summary="Classify several image files"
)
async def classify_batch(request: Request, debug: bool = False) -> dict:
    """Several image files in the multipart field `images`; results in the same order."""
    svc = service()
    with svc.batcher.request():
        files = await uploaded_files(request, "images", settings.max_batch)
        pixels, boxes = await svc.digits(files)
        return {"results": await svc.predict(pixels, request, debug, boxes)}


@app.post(
    "/classify_pixels",
    openapi_extra=PIXELS_BODY,
    responses=answers(Predictions),
    summary="Classify images already in MNIST format",
)
async def classify_pixels(request: Request) -> dict:
    """28x28 images, 0-255, white ink on black: JSON ([28,28], [784] or a list of them), raw uint8 bytes
    (N x 784, application/octet-stream) or a .npy array (application/x-npy)."""
    svc = service()
    with svc.batcher.request():
        body = await read_body(request, settings.max_bytes)
        pixels = parse_pixels(body, media_type(request), settings.max_batch)
        return {"results": await svc.predict(pixels, request)}


@app.get("/ui", include_in_schema=False)
async def ui() -> RedirectResponse:
    return RedirectResponse("/ui/")


# The draw-a-digit page: plain files, no CDN, so it works offline and inside the container image.
app.mount("/ui/", StaticFiles(directory=Path(__file__).with_name("static"), html=True), name="ui")


@app.get("/metrics", include_in_schema=False)
async def prometheus_metrics() -> Response:
    """Prometheus text format: every worker's metrics summed (service/metrics.py)."""
    return Response(await run_in_threadpool(metrics.exposition), media_type=CONTENT_TYPE_LATEST)


@app.get("/model", summary="The model being served")
async def model() -> dict:
    """Name, version, sha256, test accuracy, execution provider in use, input specification."""
    return service().runtime.info()
