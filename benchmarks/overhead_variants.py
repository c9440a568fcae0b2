"""The service less one per-request change, for `make bench`'s "Per-request overhead" rows: each change keeps its
measured cost. `bentoml serve benchmarks.overhead_variants:DigitService` with OVERHEAD_UNDO set to

    batcher      BentoML's adaptive-batching dispatcher (CorkDispatcher, a private module) instead of ours
    metrics      BentoML's own request-metrics middleware back on (ours stays: both record)
    tracing      OpenTelemetry spans on the prediction routes too (what DIGITSERVE_TRACING=true does)
    percentiles  np.percentile and np.median where preprocess.light_background now counts pixels
    router       the API's prediction routes through BentoML's request context, exception handler and router
                 again, as every route is, instead of from the request middleware to the API straight
    fastapi      the API's prediction routes through FastAPI's middleware stack, router and request handler
                 again, as its other routes are, instead of called straight (service/api.py direct_routes)
    rebalance    no closing of connections by a crowded worker (service/activity.py): with 2 workers or more
    thread       a full batch (a 64-image request) runs in the inference thread, as smaller ones do, instead of
                 on the event loop (service/batching.py): measured on 64-image /classify_pixels, 2 workers
    options      as `fastapi`, and the prediction routes' query options (debug, min_confidence) declared to
                 FastAPI again, which solves and checks them on every request, instead of read by the route
                 (service/api.py Options): its cost is its row against `fastapi`'s

and unset, the service as it is. Only for measuring: nothing else imports it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Annotated

import numpy as np
from bentoml._internal.marshal.dispatcher import CorkDispatcher
from fastapi import Depends, Query
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

import service.activity
import service.api
import service.app
import service.pipeline
import service.preprocess
from service.batching import OVERLOADED, Batcher
from service.errors import ClientError
from service.preprocess import DARK


class CorkBatcher(Batcher):
    """The batcher as it was: BentoML's CorkDispatcher when requests overlap, the model inline when alone."""

    def __init__(self, infer, max_batch_size: int, max_latency_ms: int, infer_alone=None) -> None:
        super().__init__(infer, max_batch_size, max_latency_ms, infer_alone)
        self.dispatcher = CorkDispatcher(
            max_latency_in_ms=max_latency_ms, max_batch_size=max_batch_size, fallback=self.shed, get_batch_size=len
        )
        self.batched = self.dispatcher(self.run_batch)

    @staticmethod
    def shed() -> np.ndarray:
        raise ClientError(503, OVERLOADED)

    def run_batch(self, jobs: Sequence[np.ndarray]) -> list[np.ndarray]:
        sizes = np.cumsum([len(job) for job in jobs])[:-1]
        return np.split(self.infer(np.concatenate(jobs)), sizes)

    async def __call__(self, images: np.ndarray, seen: bool = True) -> np.ndarray:
        await asyncio.sleep(0)
        if self.requests <= 1 and seen:
            return self.infer_alone(images)
        return await self.batched(images)


def declared_options(debug: bool = False, min_confidence: Annotated[float | None, Query(ge=0, le=1)] = None) -> None:
    """The query parameters as the routes declared them before `service.api.Options`."""


def with_declared_options(route: BaseRoute) -> BaseRoute:
    if not (isinstance(route, APIRoute) and route.path.startswith("/classify")):
        return route
    return APIRoute(
        route.path,
        route.endpoint,
        methods=list(route.methods),
        dependencies=[Depends(declared_options)],
        openapi_extra=route.openapi_extra,
        responses=route.responses,
        summary=route.summary,
    )


def light_background_with_percentiles(gray: np.ndarray) -> bool:
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    return float(np.percentile(border, 90)) > DARK or float(np.median(gray[::4, ::4])) > 127


UNDO = os.environ.get("OVERHEAD_UNDO", "")
# Where the request middleware sends the API's prediction routes: none, through the rest of BentoML's stack; the
# API, through FastAPI's.
DIRECT = {"router": None, "fastapi": service.app.app, "options": service.app.app}
if UNDO == "batcher":
    service.pipeline.Batcher = CorkBatcher  # looked up when each worker builds its pipeline
elif UNDO == "metrics":
    service.app.DigitService.config["metrics"] = {"enabled": True}
elif UNDO == "tracing":
    service.app.DigitService.config["tracing"] = {"excluded_urls": []}
elif UNDO == "percentiles":
    service.preprocess.light_background = light_background_with_percentiles
elif UNDO in DIRECT:
    for middleware, options in service.app.DigitService.middlewares:
        if middleware is service.app.RequestMiddleware:
            options["direct"] = DIRECT[UNDO]
elif UNDO == "rebalance":
    service.activity.Activity.crowded = lambda self: False
elif UNDO == "thread":
    Batcher.on_the_loop = lambda self, images: False
elif UNDO:
    raise SystemExit(
        f"OVERHEAD_UNDO={UNDO!r}: use batcher, metrics, tracing, percentiles, router, fastapi, rebalance, thread or "
        "options"
    )
if UNDO == "options":
    service.api.router.routes[:] = [with_declared_options(route) for route in service.api.router.routes]

DigitService = service.app.DigitService
