"""The service in this process, driven through httpx's ASGI transport, no server process: the API alone
(service/api.py with its middleware and pipeline: `in_process`, settings of the test's choosing), or the whole of
one worker as `bentoml serve` builds it (BentoML's app with its probes, /probabilities, OpenAPI document and
/metrics, the API mounted in it, the request middleware: `service_in_process`). Most HTTP behaviour is tested this
way; what only a real `bentoml serve` shows (workers, signals, drain, crashes, slow clients, the Bento, the real
HTTP server) uses harness.server. The gRPC server of one worker runs in process too (`grpc_in_process`)."""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from service.activity import Activity
from service.assembly import assemble
from service.config import Settings
from service.middleware import Gate, RequestMiddleware
from service.pipeline import Pipeline
from service.runtime import ModelRuntime

# Which device serves, and how: taken from the environment, as real servers take it, so that the suite run with
# DIGITSERVE_PROVIDER=cuda serves in process on CUDA too. Every other setting is the test's own.
DEVICE = ("DIGITSERVE_PROVIDER", "DIGITSERVE_CUDA_TF32")


def device_env() -> dict[str, str]:
    """The environment's DEVICE settings."""
    return {name: os.environ[name] for name in DEVICE if name in os.environ}


def model_runtime(**env: str) -> ModelRuntime:
    """The model on the device the in-process service runs on, as the service runs it (on CUDA, every call of one
    shape): what a served answer must equal (answers on another device, or of other kernels, differ in the last
    digits; on CUDA, TF32 moves logits by up to 0.01: docs/gpu.md)."""
    settings = Settings.from_env({**device_env(), **env})
    return ModelRuntime(
        settings.model_path, settings.provider, cuda_tf32=settings.cuda_tf32, cuda_batch=settings.cuda_batch
    )


class InProcessClient:
    """httpx's client on the ASGI app, called synchronously: each call runs this client's event loop until its
    answers are in. (Starlette's TestClient hops to a portal thread per request: ~5 ms each here.)"""

    def __init__(self, app) -> None:
        self.loop = asyncio.new_event_loop()
        # App exceptions become 500s, as a real server answers them, for the tests to see and refuse.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://digitserve", timeout=30)

    def request(self, method: str, url: str, **kwargs) -> httpx.Response:
        return self.loop.run_until_complete(self.client.request(method, url, **kwargs))

    def get(self, url: str, **kwargs) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def post_together(self, url: str, requests: list[dict]) -> list[httpx.Response]:
        """One POST per item of `requests` (httpx arguments), all in flight at once, as a busy worker sees them."""

        async def all_of() -> list[httpx.Response]:
            return await asyncio.gather(*(self.client.post(url, **r) for r in requests))

        return self.loop.run_until_complete(all_of())

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        # What the app left running on the loop (BentoML's batching dispatcher of /probabilities): cancelled and
        # awaited, not destroyed pending with the loop.
        left = [task for task in asyncio.all_tasks(self.loop) if not task.done()]
        for task in left:
            task.cancel()

        async def cancelled() -> None:
            await asyncio.gather(*left, return_exceptions=True)

        self.loop.run_until_complete(cancelled())
        self.loop.close()


@contextmanager
def in_process(through_fastapi: bool = False, **env: str) -> Iterator[InProcessClient]:
    """A client of the API built with these DIGITSERVE_* settings (the environment's DEVICE, the defaults otherwise,
    access log off), its prediction routes called straight as in the service (service/app.py), or `through_fastapi`."""
    settings = Settings.from_env({"DIGITSERVE_ACCESS_LOG": "false", **device_env(), **env})
    app, middleware = assemble(settings, Pipeline(settings), straight=not through_fastapi)
    client = InProcessClient(RequestMiddleware(app, **middleware))
    try:
        yield client
    finally:
        client.close()


class Lifespan:
    """An ASGI app's lifespan, run by hand on `loop` (httpx's transport does not run it): BentoML builds the
    service instance, and runs its on_startup hooks, there."""

    def __init__(self, app, loop: asyncio.AbstractEventLoop) -> None:
        self.app, self.loop = app, loop
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.task: asyncio.Task | None = None

    async def event(self, kind: str) -> None:
        await self.inbox.put({"type": f"lifespan.{kind}"})
        answer = await asyncio.wait_for(self.outbox.get(), 120)
        if answer["type"] != f"lifespan.{kind}.complete":
            raise RuntimeError(f"lifespan {kind}: {answer}")

    def start(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self.task = self.loop.create_task(self.app(scope, self.inbox.get, self.outbox.put))
        self.loop.run_until_complete(self.event("startup"))

    def stop(self) -> None:
        self.loop.run_until_complete(self.event("shutdown"))
        self.loop.run_until_complete(self.task)


@contextmanager
def service_in_process() -> Iterator[InProcessClient]:
    """A client of one worker of the whole service (service/app.py's DigitService, BentoML's app around the API),
    started by its lifespan in this process. Its settings are the environment's when service.app was imported."""
    from service.app import DigitService  # at import it reads the settings and checks the model's card

    thresholds = gc.get_threshold()
    app = DigitService.to_asgi()
    client = InProcessClient(app)
    lifespan = Lifespan(app, client.loop)
    lifespan.start()
    try:
        yield client
    finally:
        lifespan.stop()
        client.close()
        gc.unfreeze()  # the service's start-up froze this process's heap for a server's life, not a test's
        gc.set_threshold(*thresholds)


@contextmanager
def grpc_in_process(**env: str) -> Iterator[tuple[str, Gate]]:
    """The gRPC server (service/grpc_server.py) of one worker with these DIGITSERVE_* settings, on a free port, its
    event loop in a thread of this process; yields its address and its gate (API key, concurrency limit)."""
    import threading

    from harness.server import free_port
    from service import grpc_server

    settings = Settings.from_env(
        {"DIGITSERVE_ACCESS_LOG": "false", "DIGITSERVE_GRPC_PORT": str(free_port()), **device_env(), **env}
    )
    gate = Gate(settings.api_key, settings.max_concurrency, Activity(None, 0))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    pipeline = Pipeline(settings)
    server = asyncio.run_coroutine_threadsafe(grpc_server.start(pipeline, settings, gate, "127.0.0.1"), loop).result()
    try:
        yield f"127.0.0.1:{settings.grpc_port}", gate
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(None), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
