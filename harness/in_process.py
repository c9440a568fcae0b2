"""The API in this process: service/api.py with its middleware and pipeline, driven through httpx's ASGI transport,
no server process. Most HTTP behaviour is tested this way; what only a real `bentoml serve` shows (workers,
BentoML's own routes, drain, crashes, slow clients, the Bento) uses harness.server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from service.api import create_app, direct_routes
from service.config import Settings
from service.middleware import RequestMiddleware
from service.pipeline import Pipeline


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
        self.loop.close()


@contextmanager
def in_process(through_fastapi: bool = False, **env: str) -> Iterator[InProcessClient]:
    """A client of the API built with these DIGITSERVE_* settings (the defaults otherwise, access log off), its
    prediction routes called straight as in the service (service/app.py), or `through_fastapi`."""
    settings = Settings.from_env({"DIGITSERVE_ACCESS_LOG": "false", **env})
    app = create_app(Pipeline(settings))
    client = InProcessClient(RequestMiddleware(app, settings, direct=None if through_fastapi else direct_routes(app)))
    try:
        yield client
    finally:
        client.close()
