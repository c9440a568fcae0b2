"""The API and the options of the request middleware around it, assembled in one place: `bentoml serve`
(service/app.py, where BentoML's stack sits between the two) and the tests' in-process service
(harness/in_process.py, the middleware straight around the API) both build them here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from service.activity import Activity
from service.api import create_app, direct_routes
from service.config import Settings
from service.middleware import Gate
from service.pipeline import Pipeline


def assemble(
    settings: Settings,
    pipeline: Pipeline | None = None,
    *,
    straight: bool = True,
    activity: Callable[[], Activity] | None = None,
    gate: Callable[[], Gate] | None = None,
) -> tuple[FastAPI, dict[str, Any]]:
    """The API answering with `pipeline` (none: attached by each worker once built), and `RequestMiddleware`'s
    keyword arguments: its prediction routes called `straight` from the middleware (service/api.py direct_routes),
    else through FastAPI's layers; `activity` and `gate` as RequestMiddleware takes them."""
    app = create_app(pipeline)
    direct = direct_routes(app) if straight else None
    return app, {"settings": settings, "direct": direct, "activity": activity, "gate": gate}
