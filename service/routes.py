"""Every route the service answers and what it is, in one table: whether a route runs the model is decided here
and nowhere else. A prediction route (`predicts`) needs the API key when DIGITSERVE_API_KEY is set, counts toward
the concurrency limit (429), is metered as a prediction (shed requests, the Prometheus rules' error ratio) and is
not traced unless DIGITSERVE_TRACING=true; every other route is public. The API (service/api.py,
service/open_inference.py) declares its routes with these paths, the middleware (service/middleware.py), the
metrics (service/metrics.py) and BentoML's tracing settings (service/app.py) read the table, and
tests/unit/test_routes.py walks the app the service really serves: a POST route missing here fails there, and
deploy/prometheus/rules.yml is checked against it. The gRPC server's RPCs (service/grpc_server.py) are here by
their HTTP/2 paths; it will not start if one it serves is missing.

A path's `{name}` parts match one path segment, as Starlette's do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Route:
    path: str  # as the app declares it
    methods: tuple[str, ...] = ("GET",)
    predicts: bool = False  # runs the model: API key, concurrency limit, metered and untraced as a prediction
    bentoml: bool = False  # BentoML's own route (service/app.py), not the API's
    quiet: bool = False  # probes and scrapes, every few seconds: no access log line
    below: bool = False  # a mount of files: answers for any path below it too
    grpc: bool = False  # an RPC of the gRPC server (service/grpc_server.py): its HTTP/2 path
    label: str = ""  # the metrics' endpoint label, the path by default; routes sharing one are counted together
    pattern: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pattern", re.compile(re.sub(r"\{[^/}]+\}", "[^/]+", self.path)))
        object.__setattr__(self, "label", self.label or self.path)


V2_INFER = "/v2/models/{model}/infer"

CLASSIFY = Route("/classify", ("POST",), predicts=True)
CLASSIFY_BATCH = Route("/classify_batch", ("POST",), predicts=True)
CLASSIFY_PIXELS = Route("/classify_pixels", ("POST",), predicts=True)
READ = Route("/read", ("POST",), predicts=True)
PROBABILITIES = Route("/probabilities", ("POST",), predicts=True, bentoml=True)  # BentoML's typed endpoint
INFER = Route(V2_INFER, ("POST",), predicts=True)
INFER_VERSION = Route("/v2/models/{model}/versions/{model_version}/infer", ("POST",), predicts=True, label=V2_INFER)
GRPC = "/inference.GRPCInferenceService/"  # the Open Inference Protocol over gRPC: every RPC is a POST to its path
GRPC_INFER = Route(GRPC + "ModelInfer", ("POST",), predicts=True, grpc=True)

ROUTES = (
    CLASSIFY,
    CLASSIFY_BATCH,
    CLASSIFY_PIXELS,
    READ,
    PROBABILITIES,
    INFER,
    INFER_VERSION,
    GRPC_INFER,
    # Public: probes, scrapes, what the model is, the Open Inference Protocol's metadata, the docs and the page.
    Route("/model"),
    Route("/metrics", quiet=True),
    Route("/livez", bentoml=True, quiet=True),
    Route("/readyz", bentoml=True, quiet=True),
    Route("/healthz", bentoml=True, quiet=True),
    Route("/v2"),
    Route("/v2/health/live", quiet=True),
    Route("/v2/health/ready", quiet=True),
    Route("/v2/models/{model}"),
    Route("/v2/models/{model}/versions/{model_version}", label="/v2/models/{model}"),
    Route("/v2/models/{model}/ready"),
    Route("/v2/models/{model}/versions/{model_version}/ready", label="/v2/models/{model}/ready"),
    Route("/v2/models/{model}/config"),
    Route("/v2/models/{model}/versions/{model_version}/config", label="/v2/models/{model}/config"),
    *(Route(GRPC + name, ("POST",), grpc=True) for name in ("ServerMetadata", "ModelMetadata", "ModelConfig")),
    *(Route(GRPC + name, ("POST",), grpc=True, quiet=True) for name in ("ServerLive", "ServerReady", "ModelReady")),
    Route("/grpc.health.v1.Health/Check", ("POST",), grpc=True, quiet=True),  # gRPC probes; not metered
    Route("/grpc.health.v1.Health/Watch", ("POST",), grpc=True, quiet=True),
    Route("/ui", below=True),  # the draw-a-digit page and its files
    Route("/", bentoml=True, label="/docs"),  # BentoML's page of the API, its document and files
    Route("/docs.json", bentoml=True, label="/docs"),
    Route("/static_content", bentoml=True, below=True, label="/docs"),
    Route("/docs"),
    Route("/docs/oauth2-redirect", label="/docs"),
    Route("/redoc", label="/docs"),
    Route("/openapi.json", label="/docs"),
    Route("/schema.json", bentoml=True, label="/docs"),
)
PREDICTIONS = tuple(route for route in ROUTES if route.predicts)
PREDICTION_LABELS = frozenset(route.label for route in PREDICTIONS)

_EXACT = {route.path: route for route in ROUTES if "{" not in route.path}
_TEMPLATED = tuple(route for route in ROUTES if "{" in route.path)
_MOUNTS = tuple((route.path + "/", route) for route in ROUTES if route.below)


def find(path: str) -> Route | None:
    """The route a request path is for (a trailing slash ignored, as its redirect is), or None."""
    route = _EXACT.get(path)
    if route is None and path.endswith("/"):
        route = _EXACT.get(path.rstrip("/"))
    if route is None and path.startswith("/v2/models/"):
        stripped = path.rstrip("/")
        route = next((r for r in _TEMPLATED if r.pattern.fullmatch(stripped)), None)
    if route is None:
        route = next((r for prefix, r in _MOUNTS if path.startswith(prefix)), None)
    return route


def untraced() -> list[str]:
    """BentoML's `tracing.excluded_urls`: regular expressions of the HTTP prediction routes' paths."""
    return [f"{route.pattern.pattern}$" for route in PREDICTIONS if not route.grpc]
