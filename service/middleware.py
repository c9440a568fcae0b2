"""Per-request concerns around every route, in one plain ASGI middleware (no BaseHTTPMiddleware: it would add a
task and a memory copy per request), each concern a class of its own, testable alone: `Gate` (API key, limit),
`ConnectionPolicy` (when to close), `RequestRecord` (id, metrics, access log), `Answer` (what the route's `send`
adds):
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


class Gate:
    """Who may predict, and how many at once: the API key (401) and the concurrency limit (429) of the prediction
    routes, and the count of those in flight in this worker."""

    def __init__(self, api_key: str, max_concurrency: int, activity: Activity) -> None:
        self.api_key = api_key.encode()
        self.max_concurrency = max_concurrency
        self.activity = activity
        self.in_flight = 0

    def refusal(self, headers: dict[bytes, bytes]) -> tuple[int, str, list[tuple[bytes, bytes]]] | None:
        """(status, error, headers) for a request that may not go on; None for one that may."""
        if self.api_key and not self.authorised(headers):
            return 401, NO_KEY, [(b"www-authenticate", b'Bearer realm="digitserve"')]
        if self.in_flight >= self.max_concurrency:
            return 429, TOO_MANY, [(b"retry-after", b"1")]
        return None

    def authorised(self, headers: dict[bytes, bytes]) -> bool:
        scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.api_key)

    def enter(self) -> None:
        self.in_flight += 1
        self.activity.set(self.in_flight)
        metrics.in_flight.inc()

    def leave(self) -> None:
        self.in_flight -= 1
        self.activity.set(self.in_flight)
        metrics.in_flight.dec()


class ConnectionPolicy:
    """When an answer ends its connection: always while the worker drains before a shutdown (lifecycle.py); after
    a prediction while this worker holds well over its share of the server's connections (activity.py), so that
    the clients' next connections spread over the workers again."""

    def __init__(self, activity: Activity) -> None:
        self.activity = activity

    def arrived(self, client: object, predicting: bool) -> None:
        if predicting:
            self.activity.request_from(client)

    def closes(self, client: object, predicting: bool) -> bool:
        """Whether this answer carries `Connection: close` (and, if so, the client's connection is counted gone)."""
        if draining() or (predicting and self.activity.crowded()):
            self.activity.closing(client)
            return True
        return False


class RequestRecord:
    """What is kept of each request: its id (the client's if sane, else a new one), the Prometheus request metrics,
    and the access log line (id, method, path, status, latency, the predicted digits; never the image)."""

    def __init__(self, access_log: bool) -> None:
        self.access_log = access_log

    @staticmethod
    def request_id(headers: dict[bytes, bytes]) -> str:
        sent = headers.get(b"x-request-id", b"").decode("latin-1")
        return sent if SANE_ID.fullmatch(sent) else uuid.uuid4().hex

    def finished(self, scope: Scope, route: routes.Route | None, request_id: str, status: int, seconds: float) -> None:
        metrics.observe_request(route.label if route else "other", status, seconds)
        if self.access_log and not (route and route.quiet):
            digits = scope.get(DIGITS_KEY)
            logger.info(
                "%s %s %s %d %.1fms%s",
                request_id,
                scope["method"],
                scope["path"],
                status,
                seconds * 1000,
                f" digits={','.join(map(str, digits))}" if digits else "",
            )


class Answer:
    """The `send` a route gets: adds the request id (and `Connection: close` where the policy says) to the
    answer's head, and keeps its status for the record."""

    def __init__(self, send: Send, request_id: str, close: Callable[[], bool]) -> None:
        self.send, self.request_id, self.close = send, request_id, close
        self.status = 500  # if no answer starts: the server answers 500

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            message["headers"] = [*message.get("headers", []), (b"x-request-id", self.request_id.encode())]
            if self.close():
                message["headers"].append((b"connection", b"close"))
        await self.send(message)

    async def refuse(self, status: int, error: str, headers: list[tuple[bytes, bytes]]) -> None:
        body = json.dumps({"error": error}).encode()
        start = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
        await self({"type": "http.response.start", "status": status, "headers": start})
        await self({"type": "http.response.body", "body": body})


class RequestMiddleware:
    """The three concerns around every request, in one ASGI layer (each layer more is a call and a closure per
    request): the gate for prediction routes, the connection policy, and the record."""

    def __init__(
        self,
        app,
        settings: Settings,
        direct=None,
        activity: Callable[[], Activity] | None = None,
        gate: Callable[[], Gate] | None = None,
    ) -> None:
        """`app`: the rest of BentoML's stack; `direct`: the API (service/api.py) mounted in it, if its prediction
        routes are to skip what lies between. `activity`: gives this worker's entry among the server's workers
        (called here, in the worker); none: a worker alone. `gate`: gives the worker's gate, where another
        protocol (gRPC) shares it; none: one of the middleware's own."""
        self.app = app
        self.direct = direct
        self.activity = activity() if activity else Activity(None, 0)
        self.gate = gate() if gate else Gate(settings.api_key, settings.max_concurrency, self.activity)
        self.connections = ConnectionPolicy(self.activity)
        self.record = RequestRecord(settings.access_log)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        headers = dict(scope["headers"])
        route = routes.find(scope["path"])
        predicting = route is not None and route.predicts
        client = scope.get("client")
        request_id = self.record.request_id(headers)
        self.connections.arrived(client, predicting)
        answer = Answer(send, request_id, lambda: self.connections.closes(client, predicting))
        try:
            if not predicting:
                await self.app(scope, receive, answer)
            elif refusal := self.gate.refusal(headers):
                await answer.refuse(*refusal)
            else:
                self.gate.enter()
                app = self.app if self.direct is None or route.bentoml else self.direct
                try:
                    await app(scope, receive, answer)
                except asyncio.CancelledError:  # BentoML's timeout (DIGITSERVE_TIMEOUT) gave up on it: a 504
                    answer.status = 504 if answer.status == 500 else answer.status
                    raise
                finally:
                    self.gate.leave()
        finally:
            self.record.finished(scope, route, request_id, answer.status, time.perf_counter() - start)
