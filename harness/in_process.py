"""The API in this process: service/api.py with its middleware and pipeline, driven through an ASGI client, no
server process. Most HTTP behaviour is tested this way; what only a real `bentoml serve` shows (workers, BentoML's
own routes, drain, crashes, slow clients, the Bento) uses harness.server."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fastapi.testclient import TestClient

from service.api import create_app
from service.config import Settings
from service.middleware import RequestMiddleware
from service.pipeline import Pipeline


@contextmanager
def in_process(**env: str) -> Iterator[TestClient]:
    """A client of the API built with these DIGITSERVE_* settings (the defaults otherwise, access log off)."""
    settings = Settings.from_env({"DIGITSERVE_ACCESS_LOG": "false", **env})
    app = RequestMiddleware(create_app(Pipeline(settings)), settings)
    # Server exceptions are answered as 500s, as a real server would, for the tests to see and refuse.
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client
