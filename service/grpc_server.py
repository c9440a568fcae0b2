"""The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`, KServe's and Triton's V2 gRPC API), in
every worker, on its event loop, beside the HTTP routes: the same two models (service/v2_models.py) on the same
pipeline, so that a batch can mix requests of both protocols. tritonclient.grpc, KServe's InferenceGRPCClient and
perf_analyzer `-i grpc` talk to it unchanged.

The same rules as over HTTP, from the same places: which RPCs predict is service/routes.py's table (an RPC there
needs the API key, as `authorization: Bearer <key>` metadata, counts toward the worker's concurrency limit, which
it shares with HTTP, and is metered as a prediction); `x-request-id` metadata in, and in the trailing metadata out;
one access log line and the Prometheus request metrics per call, with the call's path as the endpoint label and
the HTTP status it would have had. Mistakes are the HTTP routes' ClientErrors, answered with the gRPC status
`CODES` maps them to and the same message. `grpc.health.v1.Health` answers too (Kubernetes' gRPC probe): NOT_SERVING
while the worker drains before a shutdown (service/lifecycle.py), while calls are still served; at the shutdown the
server finishes the calls in flight and refuses new ones (UNAVAILABLE), so that clients go to another replica.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections.abc import Awaitable, Callable

import grpc
from google.protobuf import json_format
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tritonclient.grpc import model_config_pb2
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from service import grpc_codec, routes, v2_models
from service.config import ConfigError, Settings
from service.errors import ClientError
from service.lifecycle import draining
from service.middleware import DIGITS_KEY, Gate, RequestRecord
from service.pipeline import Pipeline
from service.v2_codec import checked_input

logger = logging.getLogger("bentoml.digitserve")

SERVICE = "inference.GRPCInferenceService"
REQUEST_ID = "x-request-id"
# HTTP status -> gRPC status, as Google's APIs map them (a 413 is what gRPC itself answers an oversized message).
CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
# The RPCs served; the others of Triton's service (repository, shared memory, statistics) answer UNIMPLEMENTED.
RPCS = ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelConfig", "ModelInfer")


def rpc_path(name: str) -> str:
    """An RPC's HTTP/2 path: how routes.py's table and the metrics know it."""
    return f"/{SERVICE}/{name}"


Work = Callable[[object, dict], Awaitable[object]]


class Calls:
    """What surrounds each call, as service/middleware.py does for HTTP: the gate (key, limit) for predicting RPCs,
    the request id, the record (metrics, access log), and mistakes turned into gRPC statuses."""

    def __init__(self, gate: Gate, record: RequestRecord) -> None:
        self.gate, self.record = gate, record
        self.routes = {name: routes.find(rpc_path(name)) for name in RPCS}
        missing = [name for name, route in self.routes.items() if route is None]
        if missing:  # a served RPC must be in the table: never open by omission
            raise RuntimeError(f"RPCs missing from service/routes.py: {', '.join(missing)}")

    async def __call__(self, name: str, work: Work, request: object, context: grpc.aio.ServicerContext) -> object:
        start = time.perf_counter()
        route = self.routes[name]
        headers = {
            item.key.encode(): item.value.encode("latin-1")
            for item in context.invocation_metadata() or ()
            if isinstance(item.value, str)
        }
        request_id = self.record.request_id(headers)
        context.set_trailing_metadata(((REQUEST_ID, request_id),))
        scope = {"method": "POST", "path": route.path}
        status, error = 200, ""
        try:
            if not route.predicts:
                return await work(request, scope)
            refusal = self.gate.refusal(headers)
            if refusal is None:
                self.gate.enter()
                try:
                    return await work(request, scope)
                finally:
                    self.gate.leave()
            status, error, _ = refusal
        except ClientError as exc:
            status, error = exc.status, exc.message
        except asyncio.CancelledError:  # the client's deadline passed, or it went away
            status = 504
            raise
        except Exception:
            logger.exception("%s %s failed", request_id, route.path)
            status, error = 500, "internal error"
        finally:
            self.record.finished(scope, route, request_id, status, time.perf_counter() - start)
        await context.abort(CODES.get(status, grpc.StatusCode.UNKNOWN), error)


def rpc(name: str, method: str) -> Callable[..., Awaitable]:
    """The servicer's method for the RPC `name`: answered by `self.<method>(request, scope)` through `Calls` (key,
    limit, request id, metrics, 4xx to status codes)."""

    async def call(self, request, context):
        return await self.calls(name, getattr(self, method), request, context)

    call.__name__ = call.__qualname__ = name
    return call


class Inference(pb_grpc.GRPCInferenceServiceServicer):
    """The V2 RPCs on one worker's pipeline; each RPC a thin adapter, as open_inference.py's routes are."""

    def __init__(self, pipeline: Pipeline, calls: Calls) -> None:
        self.pipeline, self.calls = pipeline, calls

    ServerLive = rpc("ServerLive", "live")
    ServerReady = rpc("ServerReady", "ready")
    ModelReady = rpc("ModelReady", "model_ready")
    ServerMetadata = rpc("ServerMetadata", "server_metadata")
    ModelMetadata = rpc("ModelMetadata", "model_metadata")
    ModelConfig = rpc("ModelConfig", "model_config")
    ModelInfer = rpc("ModelInfer", "infer")

    async def live(self, request: pb.ServerLiveRequest, scope: dict) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ready(self, request: pb.ServerReadyRequest, scope: dict) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=not draining())

    async def model_ready(self, request: pb.ModelReadyRequest, scope: dict) -> pb.ModelReadyResponse:
        """Not ready, rather than NOT_FOUND, for a model this server lacks: clients ask it as a yes-or-no question
        (tritonclient's is_model_ready would raise), as over HTTP, where they read the 404 as no."""
        try:
            v2_models.find_model(self.pipeline, request.name, request.version)
        except ClientError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=not draining())

    async def server_metadata(self, request: pb.ServerMetadataRequest, scope: dict) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**v2_models.server_metadata())

    async def model_metadata(self, request: pb.ModelMetadataRequest, scope: dict) -> pb.ModelMetadataResponse:
        found = v2_models.find_model(self.pipeline, request.name, request.version)
        return json_format.ParseDict(v2_models.model_metadata(found), pb.ModelMetadataResponse())

    async def model_config(self, request: pb.ModelConfigRequest, scope: dict) -> pb.ModelConfigResponse:
        found = v2_models.find_model(self.pipeline, request.name, request.version)
        config = json_format.ParseDict(v2_models.model_config(self.pipeline, found), model_config_pb2.ModelConfig())
        return pb.ModelConfigResponse(config=config)

    async def infer(self, request: pb.ModelInferRequest, scope: dict) -> pb.ModelInferResponse:
        pipeline = self.pipeline
        with pipeline.batcher.request():  # counted, as HTTP's are
            found = v2_models.find_model(pipeline, request.model_name, request.model_version)
            array = checked_input(found, grpc_codec.read_inputs(request), pipeline.settings.max_batch)
            chosen = grpc_codec.requested_outputs(found, request)  # an unknown output is refused before the model
            # Not `seen`: the calls arriving behind this one are still in gRPC's hands (service/batching.py).
            values, scope[DIGITS_KEY] = await v2_models.run(pipeline, found, array, seen=False)
        return grpc_codec.response(found, request, chosen, values)


class Health(health.aio.HealthServicer):
    """grpc.health.v1: SERVING, or NOT_SERVING while the worker drains (as /readyz's 503)."""

    async def Check(self, request, context):
        if draining():
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING)
        return await super().Check(request, context)


def require_free_port(port: int) -> None:
    """Refuse a gRPC port that another process listens on, or that this one may not use (under 1024, unprivileged).
    The workers bind it with SO_REUSEPORT, to share it among themselves, which would let them share it with that
    process too, silently (each connection to either): checked once, in the process that runs `bentoml serve`,
    before any worker starts."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed server's TIME_WAIT is no listener
        try:
            probe.bind(("", port))
        except OSError as exc:
            why = "another process listens on it" if exc.errno == errno.EADDRINUSE else "this process may not use it"
            raise ConfigError(
                f"DIGITSERVE_GRPC_PORT={port}: {exc.strerror}, {why}; choose another port, or 0 for no gRPC"
            ) from None


async def start(pipeline: Pipeline, settings: Settings, gate: Gate, address: str = "[::]") -> grpc.aio.Server:
    """A gRPC server on `settings.grpc_port`, started on the running event loop. Every worker binds the same port
    (gRPC sets SO_REUSEPORT on Linux): the kernel spreads the clients' connections over the workers."""
    # The body limit, as over HTTP: a larger message is refused by gRPC itself (RESOURCE_EXHAUSTED).
    limits = [("grpc.max_receive_message_length", settings.max_bytes), ("grpc.max_send_message_length", -1)]
    server = grpc.aio.server(options=limits)
    calls = Calls(gate, RequestRecord(settings.access_log))
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Inference(pipeline, calls), server)
    checks = Health()
    for name in ("", SERVICE):
        await checks.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    server.add_insecure_port(f"{address}:{settings.grpc_port}")
    await server.start()
    logger.info("Open Inference Protocol over gRPC on port %d", settings.grpc_port)
    return server
