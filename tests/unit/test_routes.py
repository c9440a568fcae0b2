"""The route table (service/routes.py) against the app the service really serves: BentoML's layer and the API
mounted in it, walked route by route, and the RPCs its gRPC server implements. A route the table does not know
fails here, a POST route above all: whether it needs the API key, counts toward the limit and is metered must be
decided, not forgotten. Each HTTP prediction route is then proved to be treated as one by requests through the
middleware (the gRPC one: tests/integration/test_grpc.py)."""

from __future__ import annotations

import asyncio

import pytest
from fastapi import FastAPI
from fastapi.routing import _IncludedRouter
from grpc_health.v1 import health_pb2_grpc
from starlette.routing import Mount
from tritonclient.grpc import service_pb2_grpc

from service import grpc_server, routes
from service.app import DigitService
from service.config import Settings
from service.middleware import RequestMiddleware
from tests.unit.test_middleware import App, call, sample

Served = list[tuple[str, frozenset[str]]]


def walk(app, prefix: str = "") -> Served:
    """(path, methods) of every route of a Starlette or FastAPI app, into its mounts and included routers."""
    found: Served = []
    for route in getattr(app, "routes", None) or getattr(getattr(app, "router", None), "routes", []):
        if isinstance(route, _IncludedRouter):  # FastAPI >= 0.16x keeps included routers as such
            found += walk(route.original_router, prefix + route.include_context.prefix)
        elif isinstance(route, Mount) or type(route).__name__ == "PassiveMount":
            inner = walk(route.app, prefix + (route.path or ""))
            # A mount of plain files (the page) answers GETs below its path.
            found += inner or [(prefix + route.path, frozenset({"GET", "HEAD"}))]
        else:
            found.append((prefix + route.path, frozenset(route.methods or ())))
    return found


def served_rpcs() -> Served:
    """The RPCs the gRPC server answers: the methods its servicers implement (the generated classes they extend
    answer UNIMPLEMENTED for the rest), each a POST to its HTTP/2 path."""
    found: Served = []
    for servicer, generated, service in (
        (grpc_server.Inference, service_pb2_grpc.GRPCInferenceServiceServicer, grpc_server.SERVICE),
        (grpc_server.Health, health_pb2_grpc.HealthServicer, "grpc.health.v1.Health"),
    ):
        names = [n for n in vars(generated) if not n.startswith("_") and getattr(servicer, n) is not vars(generated)[n]]
        found += [(f"/{service}/{name}", frozenset({"POST"})) for name in names]
    return found


def served() -> Served:
    return walk(DigitService.to_asgi()) + served_rpcs()


def undecided(served: Served) -> list[str]:
    """What the table does not decide: routes it does not list, and POST routes it does not list as POST
    (prediction routes, or public ones said to be)."""
    table = {route.path: route for route in routes.ROUTES}
    problems = []
    for path, methods in served:
        route = table.get(path)
        if route is None:
            problems.append(f"{sorted(methods)} {path} is not in service/routes.py")
        elif "POST" in methods and "POST" not in route.methods:
            problems.append(f"POST {path}: declare it in service/routes.py, a prediction route or public")
    return problems


def test_every_route_the_service_serves_is_decided_by_the_table() -> None:
    paths = served()
    assert len(paths) > 20, paths  # the walk reached the API mounted inside BentoML's app
    assert undecided(paths) == []


def test_every_route_in_the_table_is_served() -> None:
    paths = {path for path, _ in served()}
    assert [route.path for route in routes.ROUTES if route.path not in paths] == []


def test_a_new_post_route_nobody_decided_on_fails_the_check() -> None:
    app = FastAPI()

    @app.post("/classify_faster")
    async def classify_faster() -> None: ...

    @app.post("/model")  # a known path, but the table does not say it takes POSTs
    async def replace_model() -> None: ...

    assert undecided(served() + walk(app)) == [
        "['POST'] /classify_faster is not in service/routes.py",
        "POST /model: declare it in service/routes.py, a prediction route or public",
    ]


def test_the_served_post_routes_are_the_prediction_routes() -> None:
    posts = {path for path, methods in walk(DigitService.to_asgi()) if "POST" in methods}
    assert posts == {route.path for route in routes.PREDICTIONS if not route.grpc}
    rpcs = {path for path, _ in served_rpcs()}
    assert len(rpcs) == 9 and rpcs & {route.path for route in routes.PREDICTIONS} == {routes.GRPC_INFER.path}


@pytest.mark.parametrize("path", ["/model", "/livez", "/v2/models/digits", "/v2/models/digits/ready", "/ui/app.js"])
def test_public_paths_are_found_and_do_not_predict(path: str) -> None:
    route = routes.find(path)
    assert route is not None and not route.predicts


def test_unknown_paths_are_not_found() -> None:
    assert [routes.find(p) for p in ("/admin", "/v2/models", "/classifyx", "/v2/models/a/b/infer", "/uix")] == [
        None
    ] * 5


def example(path: str) -> str:
    """A request path for a route's path: its parameters filled in."""
    return path.replace("{model}", "digits").replace("{model_version}", "1")


def count(label: str, status: int) -> float:
    return sample("digitserve_requests_total", endpoint=label, status=str(status))


def key(value: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", b"Bearer " + value)]


@pytest.mark.parametrize("route", [r for r in routes.PREDICTIONS if not r.grpc], ids=lambda route: route.path)
def test_each_prediction_route_needs_the_key_is_limited_metered_and_given_an_id(route: routes.Route) -> None:
    settings = Settings.from_env(
        {"DIGITSERVE_ACCESS_LOG": "false", "DIGITSERVE_API_KEY": "k", "DIGITSERVE_MAX_CONCURRENCY": "1"}
    )
    held = App()  # tests/unit/test_middleware.py's stand-in: holds a prediction until released
    held.release.clear()
    app = RequestMiddleware(held, settings)
    path = example(route.path)
    before = {status: count(route.label, status) for status in (200, 401, 429)}

    async def scenario() -> tuple[dict, dict, dict]:
        refused = await call(app, path)
        first = asyncio.create_task(call(app, path, key(b"k")))
        await asyncio.sleep(0.01)
        crowded = await call(app, path, key(b"k"))
        held.release.set()
        return refused, crowded, await first

    refused, crowded, served_ = asyncio.run(scenario())
    assert refused["status"] == 401 and b"x-request-id" in refused["headers"]
    assert crowded["status"] == 429 and b"x-request-id" in crowded["headers"]
    assert served_["status"] == 200 and b"x-request-id" in served_["headers"]
    assert {status: count(route.label, status) - before[status] for status in before} == {200: 1, 401: 1, 429: 1}


def test_untraced_patterns_are_the_prediction_routes() -> None:
    import re

    patterns = [re.compile(p) for p in routes.untraced()]
    for path in ("/classify", "/probabilities", "/v2/models/digits/infer", "/v2/models/x/versions/2/infer"):
        assert any(p.search(path) for p in patterns), path
    assert not any(p.search(path) for p in patterns for path in ("/model", "/v2/models/digits", "/livez"))


DASHBOARDS_AND_RULES = (
    "deploy/prometheus/rules.yml",
    "deploy/grafana/digitserve.json",
    "deploy/kubernetes/overlays/cpu-request-rate/prometheus-adapter-values.yaml",
)


@pytest.mark.parametrize("path", DASHBOARDS_AND_RULES)
def test_the_rules_and_dashboards_select_exactly_the_prediction_routes(path: str) -> None:
    """Their `endpoint=~"..."` selectors are written out (PromQL has no variables): each must name the table's
    prediction labels, no more, no fewer."""
    import re

    from tests.conftest import ROOT

    text = (ROOT / path).read_text().replace('\\"', '"')
    selectors = re.findall(r'endpoint=~"([^"]*/classify[^"]*)"', text)
    assert selectors
    for selector in selectors:
        unescaped = re.sub(r"\\+(.)", r"\1", selector)
        assert set(unescaped.split("|")) == routes.PREDICTION_LABELS, (path, selector)
