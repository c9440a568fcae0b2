"""The BentoML service: `bentoml serve service.app:DigitService`. Wiring only, read from the environment once:
BentoML's worker count, timeout and tracing, the API (service/api.py) mounted at /, one pipeline per worker
(service/pipeline.py), the request middleware, BentoML's own typed endpoint /probabilities, and the gRPC server
(service/grpc_server.py) in each worker, sharing its pipeline and its gate (API key, concurrency limit) with HTTP.
BentoML still runs the workers, /livez, /readyz and the docs page, which includes the API's routes.
"""

from __future__ import annotations

import gc
import sys
from functools import cache
from pathlib import Path
from typing import Annotated

import bentoml
import grpc
import numpy as np
from bentoml.validators import DType, Shape
from pydantic import AfterValidator

from service import grpc_server, metrics, routes
from service.activity import Activity
from service.api_document import correct_bentoml_openapi
from service.assembly import assemble
from service.config import Settings
from service.contract import read_card
from service.errors import ClientError
from service.lifecycle import drain_on_sigterm, draining
from service.middleware import Gate, RequestMiddleware
from service.pipeline import Pipeline
from service.pixels import check_pixels

# At import, in the process that runs `bentoml serve`: BentoML's decorators below need the settings, and a bad
# setting or a model that does not match its card stops the server at once, with the reason, not in every worker.
settings = Settings.from_env()
card = read_card(settings.model_path)
if settings.grpc_port and Path(sys.argv[0]).name == "bentoml" and sys.argv[1:2] == ["serve"]:
    grpc_server.require_free_port(settings.grpc_port)  # here, not in the workers: they share it among themselves
correct_bentoml_openapi()
GC_THRESHOLDS = (20_000, 20, 100)  # CPython's are (700, 10, 10)


@cache
def worker_activity() -> Activity:
    """This worker's row among the server's workers (service/activity.py: requests in flight, connections): made
    once in each worker process, where BentoML knows its index; the middleware writes it, the pipeline reads the
    others'."""
    return Activity.of_this_worker(bentoml.server_context.worker_index)


@cache
def worker_gate() -> Gate:
    """This worker's API key check and concurrency limit, one for both protocols: HTTP's middleware and gRPC's
    calls count their requests in flight together."""
    return Gate(settings.api_key, settings.max_concurrency, worker_activity())


# The API; the request middleware's options around it (added below, once the service exists).
app, middleware = assemble(settings, activity=worker_activity, gate=worker_gate)


def check_pixel_rows(pixels: np.ndarray) -> np.ndarray:
    """/probabilities's checks, run while BentoML parses the request, before batching: a mistake is that
    request's 400 alone (pydantic turns a ValueError into BentoML's 400; a ClientError would be a 500)."""
    try:
        return check_pixels(pixels, settings.max_batch)
    except ClientError as exc:
        raise ValueError(exc.message) from None


PixelRows = Annotated[np.ndarray, Shape((-1, 784)), DType("float32"), AfterValidator(check_pixel_rows)]
ProbabilityRows = Annotated[np.ndarray, Shape((-1, 10)), DType("float32")]  # so the OpenAPI document says [N, 10]


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
    tracing={"excluded_urls": [] if settings.tracing else routes.untraced()},
)
@bentoml.asgi_app(app, path="/")
class DigitService:
    def __init__(self) -> None:
        self.pipeline = Pipeline(settings, card, worker_activity())
        app.state.pipeline = self.pipeline  # one service instance per worker process: the routes answer with it
        self.grpc: grpc.aio.Server | None = None

    @bentoml.on_startup
    async def serve_grpc(self) -> None:
        """The Open Inference Protocol over gRPC on DIGITSERVE_GRPC_PORT (0: none), on this worker's loop."""
        if settings.grpc_port:
            self.grpc = await grpc_server.start(self.pipeline, settings, worker_gate())

    @bentoml.on_startup
    def freeze_heap(self) -> None:
        """Move everything built at start-up (BentoML, the app, the model) out of the collector's sight, and
        collect less often: full collections over that heap stalled requests (docs/benchmarks.md, "Per-request
        overhead")."""
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)

    @bentoml.on_shutdown
    def forget_in_flight(self) -> None:
        metrics.worker_stopped()

    @bentoml.on_shutdown
    async def stop_grpc(self) -> None:
        """After the drain and HTTP's own shutdown: the calls in flight finish (up to DIGITSERVE_TIMEOUT), new ones
        are refused (UNAVAILABLE) and the clients' connections told to go (GOAWAY)."""
        if self.grpc is not None:
            await self.grpc.stop(settings.timeout)

    @bentoml.on_startup
    def drain_before_stopping(self) -> None:
        drain_on_sigterm(settings.drain_seconds)  # service/lifecycle.py

    async def __is_ready__(self) -> bool:
        """BentoML's /readyz: false while the worker drains before a shutdown."""
        return not draining()

    @bentoml.api(
        route=routes.PROBABILITIES.path,
        batchable=True,
        batch_dim=0,
        max_batch_size=settings.batch_size,
        max_latency_ms=settings.batch_latency_ms,
    )
    def probabilities(self, pixels: PixelRows) -> ProbabilityRows:
        """BentoML's own typed API, for BentoML clients (`bentoml.SyncHTTPClient(url).probabilities(pixels=...)`):
        MNIST-format images as rows of 784 values 0-255, JSON `{"pixels": [[...], ...]}` -> their probabilities
        [N, 10]. BentoML batches concurrent calls itself (`batchable`), with the same size and latency limits."""
        pipeline = self.pipeline
        return pipeline.scored(pipeline.infer(pipeline.runtime.model_input(pixels)))[0]


# Request id, API key, concurrency limit, metrics, access log. BentoML places it inside its own timeout: the 504s
# that gives carry no request id and get BentoML's log line only. The API's prediction routes go from it to their
# endpoints straight (`direct`, service/api.py direct_routes); everything else through the rest of BentoML's stack.
DigitService.add_asgi_middleware(RequestMiddleware, **middleware)
