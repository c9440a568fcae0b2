"""The per-request middleware in process, around a stand-in app: the concurrency limit (429), the API key (401),
request ids, and the Prometheus request metrics each answer leaves behind; and each of its concerns alone."""

from __future__ import annotations

import asyncio
import json

import pytest
from prometheus_client import REGISTRY

from service import lifecycle, metrics, routes
from service.activity import MARGIN, Activity
from service.config import Settings
from service.middleware import ConnectionPolicy, Gate, RequestMiddleware, RequestRecord


def settings(**env: str) -> Settings:
    return Settings.from_env({"DIGITSERVE_ACCESS_LOG": "false", **env})


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class App:
    """Answers `status`, a prediction route once `release` is set; counts the requests it saw."""

    def __init__(self, status: int = 200) -> None:
        self.release = asyncio.Event()
        self.release.set()
        self.seen = 0
        self.status = status

    async def __call__(self, scope, receive, send) -> None:
        self.seen += 1
        if routes.find(scope["path"]) in routes.PREDICTIONS:
            await self.release.wait()
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


async def call(
    app, path: str = "/classify", headers: list[tuple[bytes, bytes]] | None = None, client=("127.0.0.1", 50000)
) -> dict:
    """One request through `app`, from `client`; the answer's status, headers and JSON body."""
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers or [], "client": client}
    answer: dict = {}

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            answer["status"], answer["headers"] = message["status"], dict(message["headers"])
        else:
            answer["body"] = json.loads(message["body"])

    await app(scope, receive, send)
    return answer


def test_past_the_limit_a_prediction_request_gets_429_with_an_id_and_is_counted_as_shed():
    async def scenario() -> list[dict]:
        inner = App()
        inner.release.clear()
        app = RequestMiddleware(inner, settings(DIGITSERVE_MAX_CONCURRENCY="2"))
        held = [asyncio.create_task(call(app)) for _ in range(2)]
        await asyncio.sleep(0.01)  # both admitted and waiting inside
        refused = await call(app)
        info = await call(app, "/model")  # not a prediction route: never limited
        inner.release.set()
        return [refused, info, *await asyncio.gather(*held), {"seen": inner.seen}]

    before = sample("digitserve_shed_requests_total", status="429")
    count = sample("digitserve_requests_total", endpoint="/classify", status="429")
    refused, info, first, second, seen = asyncio.run(scenario())
    assert refused["status"] == 429 and "retry later" in refused["body"]["error"]
    assert refused["headers"][b"retry-after"] == b"1" and len(refused["headers"][b"x-request-id"]) == 32
    assert info["status"] == first["status"] == second["status"] == 200
    assert seen["seen"] == 3, "the refused request reached the app"
    assert sample("digitserve_shed_requests_total", status="429") == before + 1
    assert sample("digitserve_requests_total", endpoint="/classify", status="429") == count + 1
    assert sample("digitserve_in_flight_requests") == 0


def test_every_answer_is_counted_by_endpoint_and_status_with_its_latency():
    async def scenario() -> None:
        await call(RequestMiddleware(App(), settings()), "/classify_pixels")
        await call(RequestMiddleware(App(415), settings()), "/classify_pixels")
        await call(RequestMiddleware(App(404), settings()), "/wp-login.php")
        await call(RequestMiddleware(App(503), settings()), "/readyz")  # draining: not shedding

    labels = [("/classify_pixels", "200"), ("/classify_pixels", "415"), ("other", "404"), ("/readyz", "503")]
    before = [sample("digitserve_requests_total", endpoint=e, status=s) for e, s in labels]
    timed = sample("digitserve_request_duration_seconds_count", endpoint="/classify_pixels")
    shed = sample("digitserve_shed_requests_total", status="503")
    asyncio.run(scenario())
    after = [sample("digitserve_requests_total", endpoint=e, status=s) for e, s in labels]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1, 1]
    assert sample("digitserve_request_duration_seconds_count", endpoint="/classify_pixels") == timed + 2
    assert sample("digitserve_shed_requests_total", status="503") == shed


def test_a_request_the_timeout_cancels_is_counted_as_504():
    async def scenario() -> None:
        inner = App()
        inner.release.clear()
        task = asyncio.create_task(call(RequestMiddleware(inner, settings()), "/classify"))
        await asyncio.sleep(0.01)
        task.cancel()  # what BentoML's timeout does to the request's task
        with pytest.raises(asyncio.CancelledError):
            await task

    before = sample("digitserve_requests_total", endpoint="/classify", status="504")
    asyncio.run(scenario())
    assert sample("digitserve_requests_total", endpoint="/classify", status="504") == before + 1
    assert sample("digitserve_in_flight_requests") == 0


def test_the_api_key_guards_prediction_routes_only():
    async def scenario() -> list[dict]:
        app = RequestMiddleware(App(), settings(DIGITSERVE_API_KEY="s3cret"))
        return [
            await call(app),
            await call(app, headers=[(b"authorization", b"Bearer wrong")]),
            await call(app, headers=[(b"authorization", b"Bearer s3cret")]),
            await call(app, "/metrics"),
            await call(app, "/probabilities"),  # BentoML's typed endpoint, behind the same middleware
            await call(app, "/readyz"),
            await call(app, "/v2/models/digits/versions/1.0.0/infer"),  # the Open Inference Protocol's inference
            await call(app, "/v2/models/digits"),  # and its metadata, open
        ]

    missing, wrong, right, scrape, typed, probe, v2_infer, v2_metadata = asyncio.run(scenario())
    assert missing["status"] == wrong["status"] == typed["status"] == 401 and "API key" in missing["body"]["error"]
    assert v2_infer["status"] == 401 and probe["status"] == v2_metadata["status"] == 200
    assert missing["headers"][b"www-authenticate"].startswith(b"Bearer")
    assert right["status"] == scrape["status"] == 200


def test_the_exposition_has_every_metric():
    text = metrics.render_exposition().decode()
    for name in (
        "digitserve_requests_total",
        "digitserve_request_duration_seconds_bucket",
        "digitserve_in_flight_requests",
        "digitserve_predictions_total",
        "digitserve_confidence_bucket",
        "digitserve_batch_size_bucket",
    ):
        assert f"# TYPE {name.removesuffix('_total').removesuffix('_bucket')}" in text, name


def test_a_crowded_worker_closes_connections_after_its_answers_and_publishes_its_requests(tmp_path):
    """Prediction requests on 2 × MARGIN connections, none on the other worker's: the last answer says
    `Connection: close`; a probe's never does. While a request is inside, the worker's row counts it."""
    other = Activity(tmp_path, 2)

    async def scenario() -> tuple[list[dict], dict, list[int]]:
        inner = App()
        app = RequestMiddleware(inner, settings(), activity=lambda: Activity(tmp_path, 1))
        answers = [await call(app, client=("10.0.0.1", port)) for port in range(2 * MARGIN)]
        probe = await call(app, "/model", client=("10.0.0.1", 9999))
        inner.release.clear()
        held = asyncio.create_task(call(app, client=("10.0.0.1", 0)))
        await asyncio.sleep(0.01)
        inside = other.table[1, :2].tolist()
        inner.release.set()
        await held
        return answers, probe, inside

    answers, probe, inside = asyncio.run(scenario())
    closed = [answer["headers"].get(b"connection") == b"close" for answer in answers]
    assert closed == [False] * (2 * MARGIN - 1) + [True]
    assert b"connection" not in probe["headers"]
    assert inside == [2, 2 * MARGIN - 1]  # 1 request (stored plus one); the closed connection no longer counted
    assert other.table[1, 0] == 1, "the request's end is published too"


def test_the_apis_prediction_routes_go_to_it_straight_and_the_rest_through_bentomls_stack():
    async def scenario() -> tuple[int, int]:
        stack, api = App(), App()
        app = RequestMiddleware(stack, settings(), direct=api)
        for path in ("/classify", "/classify_batch", "/classify_pixels", "/v2/models/digits/infer"):
            assert (await call(app, path))["status"] == 200
        for path in ("/probabilities", "/model", "/v2/models/digits", "/metrics"):  # BentoML's typed API; others
            assert (await call(app, path))["status"] == 200
        return api.seen, stack.seen

    assert asyncio.run(scenario()) == (4, 4)


# Each concern alone -----------------------------------------------------------------------------------------------


def test_the_gate_refuses_a_wrong_key_before_counting_and_past_the_limit(tmp_path):
    gate = Gate("s3cret", 1, Activity(None, 0))
    right = {b"authorization": b"Bearer s3cret"}
    assert gate.refusal({})[0] == 401 and gate.refusal({b"authorization": b"Basic s3cret"})[0] == 401
    assert gate.refusal(right) is None
    gate.enter()
    assert gate.refusal(right)[:2] == (429, "too many requests in flight; retry later")
    assert gate.refusal({})[0] == 401  # no key: 401 whatever the load
    gate.leave()
    assert gate.refusal(right) is None and gate.in_flight == 0
    assert Gate("", 1, Activity(None, 0)).refusal({}) is None  # no key set: open


def test_the_connection_policy_closes_while_draining_and_when_crowded_after_predictions(tmp_path, monkeypatch):
    alone = ConnectionPolicy(Activity(None, 0))
    assert not alone.closes(("10.0.0.1", 1), predicting=True)
    monkeypatch.setattr("service.middleware.draining", lambda: True)
    assert alone.closes(("10.0.0.1", 1), predicting=False), "draining: every answer closes"
    monkeypatch.setattr("service.middleware.draining", lambda: False)
    crowded = ConnectionPolicy(Activity(tmp_path, 1))
    Activity(tmp_path, 2)  # the other worker: no connections
    for port in range(2 * MARGIN):
        crowded.arrived(("10.0.0.1", port), predicting=True)
    assert not crowded.closes(("10.0.0.1", 0), predicting=False), "a probe's answer never closes for crowding"
    assert crowded.closes(("10.0.0.1", 0), predicting=True)
    assert lifecycle.draining() is False


def test_the_record_keeps_a_sane_request_id_and_replaces_any_other():
    assert RequestRecord.request_id({b"x-request-id": b"abc-123"}) == "abc-123"
    for bad in (b"", b"a b", b"x" * 129, "é".encode()):
        made = RequestRecord.request_id({b"x-request-id": bad})
        assert made != bad.decode("latin-1") and len(made) == 32
