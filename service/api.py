"""The HTTP API: request parsing owned here, so that every client mistake becomes a 4xx with a JSON body (BentoML's
own parsers answer some of them with a 500). `create_app(pipeline)` builds it with explicit settings (the pipeline's):
service/app.py mounts it on the BentoML service, and the tests call it in-process.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.types import ASGIApp, Receive, Scope, Send

from service import metrics, open_inference, routes
from service.bodies import media_type, read_body
from service.errors import ClientError
from service.middleware import record_digits
from service.pipeline import Pipeline, pipeline_of
from service.pixels import parse_pixels
from service.responses import Prediction, PredictionList, Reading, documented_responses, json_response

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
BINARY = {"type": "string", "format": "binary"}


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


async def read_uploads(request: Request, field: str, limit: int, max_bytes: int) -> list[bytes]:
    """The files of a multipart `field`; a text value where a file belongs is a client error."""
    if media_type(request) != "multipart/form-data":
        raise ClientError(415, f"send multipart/form-data with the image file(s) in the field {field!r}")
    body = await read_body(request, max_bytes)

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


router = APIRouter()


class Options(BaseModel):
    """The prediction routes' query parameters. The routes read them themselves (`read_options`): declared in the
    signature they cost FastAPI's parameter solving on every request (measured: make bench's per-request row
    `options`); `query_parameters` documents them in the OpenAPI document all the same."""

    debug: bool = Field(False, description="add the 28x28 image the model saw and the box where the digit was found")
    min_confidence: float | None = Field(
        None, ge=0, le=1, description="answer 422 below this confidence (default: DIGITSERVE_MIN_CONFIDENCE, 0: never)"
    )


NO_OPTIONS = Options()


def read_options(request: Request) -> Options:
    """The request's options; a malformed one (`debug=maybe`, `min_confidence=2`) is a 422 that names it."""
    if not request.scope["query_string"]:
        return NO_OPTIONS
    try:
        return Options.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise ClientError(422, f"invalid request: {validation_errors(exc.errors(), ('query',))}") from None


@contextmanager
def predicting(request: Request) -> Iterator[tuple[Options, Pipeline]]:
    """Every prediction route's prelude: its options (a malformed one is a 422) and the worker's pipeline, the
    request counted among those the batcher waits for while the route's body runs."""
    options = read_options(request)
    pipeline = pipeline_of(request)
    with pipeline.batcher.request():
        yield options, pipeline


def results_answer(request: Request, results: list[dict], asked: float | None, default: float) -> Response:
    """Several predictions as the answer: a 422 where one is below the confidence asked for (else the server's
    default), else the results, their digits counted."""
    refuse_unsure(results, asked, default)
    record_digits(request.scope, [r["digit"] for r in results])
    return json_response({"results": results})


def query_parameters(*names: str) -> dict:
    """OpenAPI for the `Options` a route reads."""
    fields = Options.model_json_schema()["properties"]
    return {"parameters": [{"name": n, "in": "query", "required": False, "schema": fields[n]} for n in names]}


def validation_errors(errors: list[dict], where: tuple[str, ...] = ()) -> str:
    """pydantic's errors as `query.min_confidence: Input should be ...`, `where` before each location."""
    return "; ".join(".".join(map(str, (*where, *e["loc"]))) + f": {e['msg']}" for e in errors)


async def read_image(request: Request, max_bytes: int) -> bytes:
    """One image file: the multipart field `image`, or the raw body with an image content type."""
    kind = media_type(request)
    if kind == "multipart/form-data":
        (data,) = await read_uploads(request, "image", 1, max_bytes)
        return data
    if kind in IMAGE_TYPES or kind == "application/octet-stream":
        return await read_body(request, max_bytes)
    raise ClientError(415, f"content type {kind or 'missing'!r}: send multipart/form-data or an image")


def find_unsure(results: list[dict], asked: float | None, default: float) -> tuple[float, list[int]]:
    """The threshold (the request's, else the service's) and the positions of the results below it."""
    threshold = default if asked is None else asked
    return threshold, [n for n, r in enumerate(results) if r["confidence"] < threshold]


def refuse_unsure(results: list[dict], asked: float | None, default: float, single: bool = False) -> None:
    """422 "not confidently a digit" when a prediction's confidence is below the threshold (the request's, else
    the service's), with the probabilities so that nothing the model said is lost."""
    threshold, unsure = find_unsure(results, asked, default)
    if not unsure:
        return
    if single:
        (result,) = results
        confidence, probabilities = result["confidence"], result["probabilities"]
        details = {"confidence": confidence, "min_confidence": threshold, "probabilities": probabilities}
        raise ClientError(422, "not confidently a digit", details)
    details = {
        "not_confident": unsure,
        "min_confidence": threshold,
        "probabilities": [r["probabilities"] for r in results],
    }
    raise ClientError(
        422, f"not confidently a digit: image(s) {', '.join(map(str, unsure))} of {len(results)}", details
    )


def prediction_route(path: str, body: dict, options: tuple[str, ...], answer: type[BaseModel], summary: str):
    """A POST route that reads its own body and `options`, documented with them, its answer and every error
    status."""
    extra = {**body, **query_parameters(*options)}
    return router.post(path, openapi_extra=extra, responses=documented_responses(answer), summary=summary)


@prediction_route(
    routes.CLASSIFY.path,
    IMAGE_BODY,
    ("debug", "min_confidence"),
    Prediction,
    "Classify one image file (multipart or raw body)",
)
async def classify(request: Request) -> Response:
    """One PNG, JPEG, GIF, BMP, WebP, TIFF, HEIC/HEIF or AVIF image: as the multipart field `image`, or as the
    raw body with its image content type. `?debug=true` adds the 28x28 image the model saw (base64 PNG) and
    the box where the digit was found. `?min_confidence=0.9`: below that confidence, 422 "not confidently a
    digit" with the probabilities instead of a digit. An image that plainly holds several digits (read as a
    number, two or more sure ones) is a 422 that says how many, rather than one of them: /read reads it."""
    with predicting(request) as (options, pipeline):
        limits = pipeline.settings
        data = await read_image(request, limits.max_bytes)
        pixels, boxes, (several,) = await pipeline.read_digits([data])
        if several and (count := await pipeline.count_digits(data)) > 1:
            raise ClientError(422, f"the image holds {count} digits: POST it to /read", {"digits": count})
        (prediction,) = await pipeline.classify(pixels, options.debug, boxes)
    refuse_unsure([prediction], options.min_confidence, limits.min_confidence, single=True)
    record_digits(request.scope, [prediction["digit"]])
    return json_response(prediction)


@prediction_route(
    routes.CLASSIFY_BATCH.path, BATCH_BODY, ("debug", "min_confidence"), PredictionList, "Classify several image files"
)
async def classify_batch(request: Request) -> Response:
    """Several image files in the multipart field `images`; results in the same order. With `min_confidence`,
    one image below it makes the answer 422, naming it, with every image's probabilities."""
    with predicting(request) as (options, pipeline):
        limits = pipeline.settings
        files = await read_uploads(request, "images", limits.max_batch, limits.max_bytes)
        pixels, boxes, _ = await pipeline.read_digits(files)
        results = await pipeline.classify(pixels, options.debug, boxes)
    return results_answer(request, results, options.min_confidence, limits.min_confidence)


@prediction_route(
    routes.CLASSIFY_PIXELS.path,
    PIXELS_BODY,
    ("min_confidence",),
    PredictionList,
    "Classify images already in MNIST format",
)
async def classify_pixels(request: Request) -> Response:
    """28x28 images, 0-255, white ink on black: JSON ([28,28], [784] or a list of them), raw uint8 bytes
    (N x 784, application/octet-stream) or a .npy array (application/x-npy). `min_confidence` as for
    /classify_batch."""
    with predicting(request) as (options, pipeline):
        limits = pipeline.settings
        body = await read_body(request, limits.max_bytes)
        results = await pipeline.classify(parse_pixels(body, media_type(request), limits.max_batch))
    return results_answer(request, results, options.min_confidence, limits.min_confidence)


@prediction_route(
    routes.READ.path,
    IMAGE_BODY,
    ("debug", "min_confidence"),
    Reading,
    "Read a written number: its digits, left to right (one image, as for /classify)",
)
async def read(request: Request) -> Response:
    """One image of one line of written digits (1 to 32), as /classify takes an image: the digits read left to
    right, each with its confidence, probabilities and box. `?debug=true` adds each digit's 28x28 image.
    `?min_confidence=0.9`: a digit below it makes the answer 422, naming its position, with the whole reading."""
    with predicting(request) as (options, pipeline):
        limits = pipeline.settings
        data = await read_image(request, limits.max_bytes)
        reading = await pipeline.read_number(data, options.debug)
    threshold, unsure = find_unsure(reading["digits"], options.min_confidence, limits.min_confidence)
    if unsure:
        positions = ", ".join(map(str, unsure))
        details = {"not_confident": unsure, "min_confidence": threshold, "reading": reading}
        raise ClientError(422, f"not confidently a number: unsure of the digit(s) at {positions}", details)
    record_digits(request.scope, [d["digit"] for d in reading["digits"]])
    return json_response(reading)


@router.get("/model", summary="The model being served")
async def model_info(request: Request) -> dict:
    """Name, version, sha256, test accuracy, execution provider in use, input specification."""
    return pipeline_of(request).runtime.describe()


@router.get("/metrics", include_in_schema=False)
async def scrape_metrics() -> Response:
    """Prometheus text format: every worker's metrics summed (service/metrics.py)."""
    return Response(await run_in_threadpool(metrics.render_exposition), media_type=CONTENT_TYPE_LATEST)


@router.get("/ui", include_in_schema=False)
async def redirect_to_ui() -> RedirectResponse:
    return RedirectResponse("/ui/")


async def answer_client_error(_: Request, exc: ClientError) -> JSONResponse:
    return JSONResponse({"error": exc.message, **exc.details}, status_code=exc.status)


async def answer_invalid_parameter(_: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's own 422 (the Open Inference Protocol's JSON bodies), in the same {"error": ...} shape as ours."""
    return JSONResponse({"error": f"invalid request: {validation_errors(exc.errors())}"}, status_code=422)


PREDICTION_PATHS = frozenset(route.path for route in routes.PREDICTIONS)


def prediction_endpoints() -> dict[str, Callable[[Request], Awaitable[Response]]]:
    """The API's POST routes that run the model and read their own requests: path -> endpoint."""
    return {
        route.path: route.endpoint
        for route in router.routes
        if isinstance(route, APIRoute) and route.path in PREDICTION_PATHS and "POST" in route.methods
    }


def direct_routes(app: FastAPI) -> ASGIApp:
    """`app`, with its prediction routes (/classify, /classify_batch, /classify_pixels, /read) called straight, past
    FastAPI's layers: its middleware stack, router and request handler, which those routes do not use (they read
    their own requests and raise only ClientError, answered here as the app's handler answers it). Measured: make
    bench's per-request row `fastapi`. Anything else, a trailing slash or another method included, goes to `app`
    (its 307s, 405s and 404s); an unexpected exception reaches the server, which answers 500, as through `app`."""
    endpoints = prediction_endpoints()

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = endpoints.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if endpoint is None:
            return await app(scope, receive, send)
        scope["app"] = app  # as Starlette sets it: the routes find the worker's pipeline there
        request = Request(scope, receive)
        try:
            response = await endpoint(request)
        except ClientError as exc:
            response = await answer_client_error(request, exc)
        await response(scope, receive, send)

    return asgi


def create_app(pipeline: Pipeline | None = None) -> FastAPI:
    """The API, answering with `pipeline` (the settings travel with it); service/app.py attaches each worker's
    pipeline once the worker has built it."""
    # BentoML traces requests and service/metrics.py meters them: FastAPI's own telemetry (>= 0.16x) would do it
    # twice.
    app = FastAPI(
        title="digitserve",
        description="Handwritten digit classification (MNIST CNN on ONNX Runtime)",
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.pipeline = pipeline
    app.add_exception_handler(ClientError, answer_client_error)
    app.add_exception_handler(RequestValidationError, answer_invalid_parameter)
    app.include_router(router)
    app.include_router(open_inference.router)
    # The draw-a-digit page: plain files, no CDN, so it works offline and inside the container image.
    app.mount("/ui/", StaticFiles(directory=Path(__file__).with_name("static"), html=True), name="ui")
    return app
