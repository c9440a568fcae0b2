"""Per-request concerns around every route, in one plain ASGI middleware (no BaseHTTPMiddleware: it would add a
task and a memory copy per request):
- `X-Request-ID`: the client's if it sent a sane one, else a new one; on every response and in the log line.
- The concurrency limit: past DIGITSERVE_MAX_CONCURRENCY prediction requests in flight in this worker, a 429
  (JSON, with the request id and `Retry-After`) rather than a queue without bound.
Which routes are prediction routes (key, limit, metered as predictions) and which are quiet is service/routes.py's
table; a path it does not know is public and counted as "other".
- `DIGITSERVE_API_KEY`: when set, prediction endpoints need `Authorization: Bearer <key>` (401 otherwise, compared
  in constant time); probes, metrics, model info and the docs stay open. The key is never logged.
- Prometheus request metrics (service/metrics.py): count, latency, status, in flight, shed.
- One access log line per request: id, method, path, status, latency, and the predicted digit(s), never the image.
- While the worker drains before a shutdown (lifecycle.py), `Connection: close` on every answer; and on a
  prediction's answer while the worker holds well over its share of the server's connections (service/activity.py),
  so that the clients' next connections spread over the workers again.
- The API's prediction routes go straight to their endpoints (`direct`: service/api.py direct_routes), past the
  layers BentoML keeps below its middlewares (its request context, exception handler and router, then the mount
  of the API) and FastAPI's own, which those routes never use: measured in docs/benchmarks.md, "Per-request
  overhead".
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from service import metrics, routes
from service.activity import Activity
from service.config import Settings
from service.lifecycle import draining

logger = logging.getLogger("bentoml.digitserve.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

NO_KEY = "missing or wrong API key: send Authorization: Bearer <key>"
TOO_MANY = "too many requests in flight; retry later"
SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
DIGITS_KEY = "digitserve.digits"  # the routes put their predictions here, in the request's scope


def record_digits(scope: Scope, digits: list[int]) -> None:
    """For the access log line: what this request was answered."""
    scope[DIGITS_KEY] = digits


class RequestMiddleware:
    def __init__(self, app, settings: Settings, direct=None, activity: Callable[[], Activity] | None = None) -> None:
        """`app`: the rest of BentoML's stack; `direct`: the API (service/api.py) mounted in it, if its prediction
        routes are to skip what lies between. `activity`: gives this worker's entry among the server's workers
        (called here, in the worker); none: a worker alone."""
        self.app = app
        self.direct = direct
        self.activity = activity() if activity else Activity(None, 0)
        self.api_key = settings.api_key.encode()
        self.access_log = settings.access_log
        self.max_concurrency = settings.max_concurrency
        self.in_flight = 0  # prediction requests this worker is handling

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        headers = dict(scope["headers"])
        sent = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = sent if SANE_ID.fullmatch(sent) else uuid.uuid4().hex
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                # Shutting down, or crowded: the client's next request should come on a new connection.
                if draining() or (predicting and self.activity.crowded()):
                    message["headers"].append((b"connection", b"close"))
                    self.activity.closing(client)
            await send(message)

        path = scope["path"]
        route = routes.find(path)
        predicting = route is not None and route.predicts
        client = scope.get("client")
        if predicting:
            self.activity.request_from(client)
        try:
            if predicting and self.api_key and not self.authorised(headers):
                await self.refuse(send_with_id, 401, NO_KEY, [(b"www-authenticate", b'Bearer realm="digitserve"')])
            elif predicting and self.in_flight >= self.max_concurrency:
                await self.refuse(send_with_id, 429, TOO_MANY, [(b"retry-after", b"1")])
            elif predicting:
                self.in_flight += 1
                self.activity.set(self.in_flight)
                metrics.in_flight.inc()
                app = self.app if self.direct is None or route.bentoml else self.direct
                try:
                    await app(scope, receive, send_with_id)
                except asyncio.CancelledError:  # BentoML's timeout (DIGITSERVE_TIMEOUT) gave up on it: a 504
                    status = 504 if status == 500 else status
                    raise
                finally:
                    self.in_flight -= 1
                    self.activity.set(self.in_flight)
                    metrics.in_flight.dec()
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - start
            metrics.observe_request(route.label if route else "other", status, seconds)
            if self.access_log and not (route and route.quiet):
                digits = scope.get(DIGITS_KEY)
                logger.info(
                    "%s %s %s %d %.1fms%s",
                    request_id,
                    scope["method"],
                    path,
                    status,
                    seconds * 1000,
                    f" digits={','.join(map(str, digits))}" if digits else "",
                )

    def authorised(self, headers: dict[bytes, bytes]) -> bool:
        scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.api_key)

    @staticmethod
    async def refuse(send: Send, status: int, error: str, headers: list[tuple[bytes, bytes]]) -> None:
        body = json.dumps({"error": error}).encode()
        start = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
        await send({"type": "http.response.start", "status": status, "headers": start})
        await send({"type": "http.response.body", "body": body})
