"""The Open Inference Protocol (KServe V2 REST, as Triton and MLServer speak it), beside the other routes and on the
same pipeline: its requests join the same batches. A thin adapter: parse the protocol's tensors, run the pipeline,
shape its answer. Two models:

    <card name> (mnist_cnn, or mnist_cnn_int8 ... as served)  the ONNX model's own tensors:
        image   FP32 [-1, 1, 28, 28], normalised as the card says  ->  logits  FP32 [-1, 10]
    digits  for clients that hold raw pixels:
        pixels  UINT8 [-1, 28, 28], MNIST format (white ink on black, 0-255)
            ->  probabilities  FP32 [-1, 10],  digit  INT64 [-1]

Tensors come as JSON (`data`, flat or nested) or with Triton's binary tensor data extension
(`Inference-Header-Content-Length`, `binary_data_size`; `binary_data` / `binary_data_output` for the answer), as
tritonclient and perf_analyzer send them by default. Mistakes are 4xx with {"error": "..."}.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated

import numpy as np
import orjson
from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from service import __version__, json_arrays
from service.bodies import read_body
from service.errors import ClientError
from service.lifecycle import draining
from service.middleware import record_digits
from service.pipeline import Pipeline, pipeline_of
from service.responses import ErrorBody, documented_responses
from service.runtime import CUDA

HEADER_LENGTH = "inference-header-content-length"
EXTENSIONS = ["binary_tensor_data", "model_configuration"]
DTYPES = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
PIXELS_MODEL = "digits"


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str
    shape: list[int]  # -1: any size (the batch)

    def metadata(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": self.shape}

    def config(self) -> dict:
        """Triton's model configuration form: the dims without the batch dimension."""
        return {"name": self.name, "data_type": f"TYPE_{self.datatype}", "dims": self.shape[1:]}


@dataclass(frozen=True)
class Model:
    name: str
    version: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]


@lru_cache(maxsize=1)  # a worker has one pipeline; a bound keeps no other (a test's) alive
def models(pipeline: Pipeline) -> dict[str, Model]:
    """The models this worker's pipeline serves (made once: they follow from its card)."""
    card = pipeline.runtime.card
    raw = Model(
        card["name"],
        card["version"],
        (Tensor(card["input"]["name"], "FP32", [-1, 1, 28, 28]),),
        (Tensor(card["output"]["name"], "FP32", [-1, 10]),),
    )
    pixels = Model(
        PIXELS_MODEL,
        card["version"],
        (Tensor("pixels", "UINT8", [-1, 28, 28]),),
        (Tensor("probabilities", "FP32", [-1, 10]), Tensor("digit", "INT64", [-1])),
    )
    return {raw.name: raw, pixels.name: pixels}


def find_model(request: Request, name: str, model_version: str | None) -> Model:
    served = models(pipeline_of(request))
    model = served.get(name)
    if model is None:
        raise ClientError(404, f"unknown model {name!r}: this server has {', '.join(served)}")
    if model_version not in (None, "", model.version):
        raise ClientError(404, f"model {name!r} has version {model.version!r} only, not {model_version!r}")
    return model


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


# Request parsing ------------------------------------------------------------------------------------------------


def split_body(body: bytes, header_length: str | None) -> tuple[dict, bytes]:
    """The JSON inference request and the binary tensor data after it (binary tensor data extension)."""
    if header_length is None:
        head, rest = body, b""
    else:
        if not re.fullmatch(r"[0-9]{1,15}", header_length.strip()):
            raise ClientError(400, f"Inference-Header-Content-Length {header_length!r} is not a byte count")
        length = int(header_length)
        if length > len(body):
            raise ClientError(400, f"Inference-Header-Content-Length {length} is larger than the body ({len(body)})")
        head, rest = body[:length], body[length:]
    try:
        document = json_arrays.parse(head)
    except ValueError as exc:
        raise ClientError(400, f"the inference request is not JSON: {exc}") from None
    # Python objects, but each input's `data` is still the parser's view: read_tensor copies its numbers out.
    request = json_arrays.members(document, keep=("inputs",)) if isinstance(document, json_arrays.Object) else None
    if request is None or not isinstance(request.get("inputs"), json_arrays.Array):
        raise ClientError(400, 'an inference request is a JSON object with a list of "inputs"')
    request["inputs"] = [
        json_arrays.members(item, keep=("data",)) if isinstance(item, json_arrays.Object) else item
        for item in request["inputs"]
    ]
    return request, rest


def parameters_of(item: dict) -> dict:
    parameters = item.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ClientError(400, '"parameters" must be an object')
    return parameters


def element_count(shape: object) -> int:
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise ClientError(400, f"shape {shape!r} is not a list of sizes")
    return math.prod(shape)


def read_tensor(item: object, binary: memoryview, offset: int) -> tuple[str, np.ndarray, int]:
    """One $request_input -> (name, array in its shape, offset after its binary data)."""
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise ClientError(400, 'each input is an object with a "name", "datatype", "shape" and its data')
    name, datatype = item["name"], item.get("datatype")
    if not isinstance(datatype, str) or datatype not in DTYPES:
        raise ClientError(400, f"input {name!r}: datatype {datatype!r} is not one of {', '.join(DTYPES)}")
    dtype = np.dtype(DTYPES[datatype]).newbyteorder("<")
    count = element_count(item.get("shape"))
    size = parameters_of(item).get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size < 0:
            raise ClientError(400, f"input {name!r}: binary_data_size {size!r} is not a byte count")
        if offset + size > len(binary):
            raise ClientError(400, f"input {name!r}: binary data truncated ({len(binary) - offset} of {size} bytes)")
        if size != count * dtype.itemsize:
            raise ClientError(400, f"input {name!r}: {size} bytes for shape {item['shape']} of {datatype}")
        array = np.frombuffer(binary[offset : offset + size], dtype).reshape(item["shape"])
        return name, array, offset + size
    if "data" not in item:
        raise ClientError(400, f'input {name!r} has no "data" and no binary_data_size')
    try:
        # Taken out of the request: the view of the parser's document goes with it (json_arrays.parse).
        array = json_arrays.to_array(item.pop("data"), dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ClientError(400, f"input {name!r}: data is not {datatype}: {exc}") from None
    if array.size != count:
        raise ClientError(400, f"input {name!r}: {array.size} values for shape {item['shape']}")
    return name, array.reshape(item["shape"]), offset


def read_inputs(request: dict, binary: bytes) -> dict[str, np.ndarray]:
    tensors, offset, view = {}, 0, memoryview(binary)
    for item in request["inputs"]:
        name, array, offset = read_tensor(item, view, offset)
        tensors[name] = array
    if offset != len(binary):
        raise ClientError(400, f"{len(binary) - offset} bytes of binary data after the last input that uses any")
    return tensors


def checked_input(model: Model, tensors: dict[str, np.ndarray], max_batch: int) -> np.ndarray:
    """The model's one input: the right name, datatype and shape, a batch within the limit."""
    (spec,) = model.inputs
    if set(tensors) != {spec.name}:
        raise ClientError(400, f"model {model.name!r} takes one input, {spec.name!r}; got {sorted(tensors)}")
    array = tensors[spec.name]
    if array.dtype != np.dtype(DTYPES[spec.datatype]):
        raise ClientError(400, f"input {spec.name!r} must be {spec.datatype}")
    if array.ndim != len(spec.shape) or list(array.shape[1:]) != spec.shape[1:]:
        raise ClientError(400, f"input {spec.name!r} has shape {list(array.shape)}; the model takes {spec.shape}")
    if not 1 <= len(array) <= max_batch:
        status = 413 if len(array) > max_batch else 400
        raise ClientError(status, f"{len(array)} images in one request; 1 to {max_batch} (DIGITSERVE_MAX_BATCH)")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ClientError(400, f"input {spec.name!r} holds NaN or infinite values")
    return array


def requested_outputs(model: Model, request: dict) -> list[tuple[Tensor, bool]]:
    """The outputs asked for (all when none are), each with whether it goes back as binary data."""
    all_binary = parameters_of(request).get("binary_data_output", False) is True
    asked = request.get("outputs")
    if asked is None:
        return [(tensor, all_binary) for tensor in model.outputs]
    if not isinstance(asked, list):
        raise ClientError(400, '"outputs" must be a list')
    known = {tensor.name: tensor for tensor in model.outputs}
    chosen = []
    for item in asked:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or item["name"] not in known:
            raise ClientError(400, f"unknown output {item!r}: model {model.name!r} has {', '.join(known)}")
        binary = parameters_of(item).get("binary_data", all_binary) is True
        chosen.append((known[item["name"]], binary))
    return chosen


# Answers ----------------------------------------------------------------------------------------------------------


def answer(model: Model, request: dict, chosen: list[tuple[Tensor, bool]], values: dict[str, np.ndarray]) -> Response:
    """$inference_response with the `chosen` outputs (requested_outputs) as JSON, or JSON followed by the binary
    outputs (binary tensor data extension)."""
    outputs, blobs = [], []
    for tensor, binary in chosen:
        array = np.ascontiguousarray(values[tensor.name], DTYPES[tensor.datatype])
        output = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(array.shape)}
        if binary:
            blob = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
            output["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            output["data"] = array.ravel()  # orjson writes numpy arrays itself
        outputs.append(output)
    body = {"model_name": model.name, "model_version": model.version, "outputs": outputs}
    if isinstance(request.get("id"), str):
        body["id"] = request["id"]
    head = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return Response(head, media_type="application/json")
    headers = {"Inference-Header-Content-Length": str(len(head))}
    return Response(head + b"".join(blobs), media_type="application/octet-stream", headers=headers)


router = APIRouter(prefix="/v2", tags=["Open Inference Protocol (KServe V2)"])


@router.get("", summary="Server metadata", response_model=ServerMetadata)
async def server_metadata() -> dict:
    return {"name": "digitserve", "version": __version__, "extensions": EXTENSIONS}


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
    """Register `function(request, model, version)` for /v2/models/{model}<suffix> (version None) and for
    /v2/models/{model}/versions/{model_version}<suffix>."""

    def register(function):
        async def latest(request: Request, model: ModelName):
            return await function(request, model, None)

        async def versioned(request: Request, model: ModelName, model_version: ModelName):
            return await function(request, model, model_version)

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
async def model_metadata(request: Request, model: str, model_version: str | None) -> dict:
    found = find_model(request, model, model_version)
    return {
        "name": found.name,
        "versions": [found.version],
        "platform": "onnxruntime_onnx",
        "inputs": [tensor.metadata() for tensor in found.inputs],
        "outputs": [tensor.metadata() for tensor in found.outputs],
    }


@model_routes(
    "/ready",
    summary="Model readiness",
    response_model=ModelReadiness,
    responses={**NO_MODEL, 503: {"model": ModelReadiness, "description": "draining before a shutdown"}},
)
async def model_ready(request: Request, model: str, model_version: str | None) -> JSONResponse:
    found = find_model(request, model, model_version)
    return JSONResponse({"name": found.name, "ready": not draining()}, status_code=503 if draining() else 200)


@model_routes("/config", summary="Model configuration, Triton's form (perf_analyzer reads it)", responses=NO_MODEL)
async def model_config(request: Request, model: str, model_version: str | None) -> dict:
    found = find_model(request, model, model_version)
    pipeline = pipeline_of(request)
    on_gpu = pipeline.runtime.provider == CUDA
    return {
        "name": found.name,
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "max_batch_size": pipeline.settings.max_batch,
        "input": [tensor.config() for tensor in found.inputs],
        "output": [tensor.config() for tensor in found.outputs],
        # Greedy adaptive batching (service/batching.py): no queue delay, batches of up to DIGITSERVE_BATCH_SIZE.
        "dynamic_batching": {"max_queue_delay_microseconds": 0, "preferred_batch_size": [pipeline.settings.batch_size]},
        "instance_group": [{"kind": "KIND_GPU" if on_gpu else "KIND_CPU", "count": 1}],
    }


@model_routes(
    "/infer", "POST", summary="Inference (JSON or binary tensors)", openapi_extra=INFER_BODY, responses=INFER_ANSWERS
)
async def infer(request: Request, model: str, model_version: str | None) -> Response:
    found = find_model(request, model, model_version)
    pipeline = pipeline_of(request)
    limits = pipeline.settings
    with pipeline.batcher.request():
        body = await read_body(request, limits.max_bytes)
        inference, binary = split_body(body, request.headers.get(HEADER_LENGTH))
        array = checked_input(found, read_inputs(inference, binary), limits.max_batch)
        chosen = requested_outputs(found, inference)  # an unknown output is refused before the model runs
        if found.name == PIXELS_MODEL:
            probabilities, digits, _ = await pipeline.predict(array)
            values = {"probabilities": probabilities, "digit": digits}
            record_digits(request.scope, digits.tolist())
        else:
            logits = await pipeline.batcher(np.ascontiguousarray(array))
            values = {found.outputs[0].name: logits}
            record_digits(request.scope, logits.argmax(1).tolist())  # softmax keeps the order
    return answer(found, inference, chosen, values)


# Routes are matched in order, one by one, and infer requests are nearly all of the traffic: theirs go first
# (measured: the V2 infer request's route lookup cost 85 µs more than /classify_pixels' when they came last).
router.routes.sort(key=lambda route: not route.path.endswith("/infer"))
