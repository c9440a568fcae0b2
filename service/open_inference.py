"""The Open Inference Protocol over HTTP (KServe V2 REST, as Triton and MLServer speak it), beside the other routes
and on the same pipeline: its requests join the same batches. A thin adapter: parse the protocol's tensors, run the
model, shape its answer. The models, what they take and answer, are service/v2_models.py; the tensors' coding, JSON
or binary, is service/v2_codec.py; here are the routes and the schemas of the OpenAPI document. Mistakes are 4xx
with {"error": "..."}.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from service import v2_models
from service.bodies import read_body
from service.lifecycle import draining
from service.middleware import record_digits
from service.pipeline import pipeline_of
from service.responses import ErrorBody, documented_responses
from service.v2_codec import (
    HEADER_LENGTH,
    Model,
    answer,
    checked_input,
    read_inputs,
    requested_outputs,
    split_body,
)


def find_model(request: Request, name: str, model_version: str | None) -> Model:
    return v2_models.find_model(pipeline_of(request), name, model_version)


# The protocol's documents, for the OpenAPI document (the routes build them as plain dicts) ----------------------


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1: any size (the batch)")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class Readiness(BaseModel):
    ready: bool


class ModelReadiness(BaseModel):
    name: str
    ready: bool


class OutputTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    data: list[float | int | bool] | None = Field(None, description="row-major, flat; absent when sent as binary")
    parameters: dict[str, int] | None = Field(None, description='{"binary_data_size": bytes} when sent as binary')


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[OutputTensor]


INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "object", "required": ["inputs"], "properties": {"inputs": {"type": "array"}}}
            },
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"},
                "description": "the JSON request, then the binary tensors (Inference-Header-Content-Length)",
            },
        },
    }
}
INFER_ANSWERS = documented_responses(InferenceResponse)
INFER_ANSWERS[200] = {
    **INFER_ANSWERS[200],
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
}
NO_MODEL = {
    404: {"model": ErrorBody, "description": "no such model or version"},
    422: {"model": ErrorBody, "description": "a model name or version that no model can have"},
}


router = APIRouter(prefix="/v2", tags=["Open Inference Protocol (KServe V2)"])


@router.get("", summary="Server metadata", response_model=ServerMetadata)
async def server_metadata() -> dict:
    return v2_models.server_metadata()


@router.get("/health/live", summary="Liveness", response_model=dict[str, bool])
async def live() -> dict:
    return {"live": True}


@router.get(
    "/health/ready",
    summary="Readiness: false while the worker drains before stopping",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "draining before a shutdown"}},
)
async def ready() -> JSONResponse:
    return JSONResponse({"ready": not draining()}, status_code=503 if draining() else 200)


# Names as the protocol's clients use them; anything else is a 422 (and never reaches a model lookup).
ModelName = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,128}$")]


def model_routes(suffix: str, method: str = "GET", **options):
    """Register `function(request, model)` for /v2/models/{model}<suffix> and for
    /v2/models/{model}/versions/{model_version}<suffix>, the model found first (404: no such model or version)."""

    def register(function):
        async def latest(request: Request, model: ModelName):
            return await function(request, find_model(request, model, None))

        async def versioned(request: Request, model: ModelName, model_version: ModelName):
            return await function(request, find_model(request, model, model_version))

        for path, endpoint in (
            (f"/models/{{model}}{suffix}", latest),
            (f"/models/{{model}}/versions/{{model_version}}{suffix}", versioned),
        ):
            router.add_api_route(path, endpoint, methods=[method], name=function.__name__, **options)
        return function

    return register


@model_routes(
    "", summary="Model metadata: its versions, inputs and outputs", response_model=ModelMetadata, responses=NO_MODEL
)
async def model_metadata(request: Request, found: Model) -> dict:
    return v2_models.model_metadata(found)


@model_routes(
    "/ready",
    summary="Model readiness",
    response_model=ModelReadiness,
    responses={**NO_MODEL, 503: {"model": ModelReadiness, "description": "draining before a shutdown"}},
)
async def model_ready(request: Request, found: Model) -> JSONResponse:
    return JSONResponse({"name": found.name, "ready": not draining()}, status_code=503 if draining() else 200)


@model_routes("/config", summary="Model configuration, Triton's form (perf_analyzer reads it)", responses=NO_MODEL)
async def model_config(request: Request, found: Model) -> dict:
    return v2_models.model_config(pipeline_of(request), found)


@model_routes(
    "/infer", "POST", summary="Inference (JSON or binary tensors)", openapi_extra=INFER_BODY, responses=INFER_ANSWERS
)
async def infer(request: Request, found: Model) -> Response:
    pipeline = pipeline_of(request)
    limits = pipeline.settings
    with pipeline.batcher.request():
        body = await read_body(request, limits.max_bytes)
        inference, binary = split_body(body, request.headers.get(HEADER_LENGTH))
        array = checked_input(found, read_inputs(inference, binary), limits.max_batch)
        chosen = requested_outputs(found, inference)  # an unknown output is refused before the model runs
        values, digits = await v2_models.run(pipeline, found, array)
        record_digits(request.scope, digits)
    return answer(found, inference, chosen, values)


# Routes are matched in order, one by one, and infer requests are nearly all of the traffic: theirs go first
# (docs/benchmarks.md, "Measured by hand").
router.routes.sort(key=lambda route: not route.path.endswith("/infer"))
