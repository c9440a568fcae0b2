"""The Open Inference Protocol's tensors (KServe V2 REST, with Triton's binary tensor data extension): a request's
bytes -> checked numpy arrays, and arrays -> the answer's bytes. No routes and no models' behaviour here: the routes
are service/open_inference.py.

Tensors come as JSON (`data`, flat or nested) or after the JSON request as binary data
(`Inference-Header-Content-Length`, `binary_data_size`; `binary_data` / `binary_data_output` for the answer), as
tritonclient and perf_analyzer send them by default. Every mistake is a ClientError (4xx) that says what is wrong.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import orjson
from fastapi.responses import Response

from service import json_arrays
from service.errors import ClientError

HEADER_LENGTH = "inference-header-content-length"
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


def models_of(card: dict, pixels_model: str) -> dict[str, Model]:
    """The two models a card's ONNX file is served as: its own tensors, and `pixels_model` on raw pixels."""
    raw = Model(
        card["name"],
        card["version"],
        (Tensor(card["input"]["name"], "FP32", [-1, 1, 28, 28]),),
        (Tensor(card["output"]["name"], "FP32", [-1, 10]),),
    )
    pixels = Model(
        pixels_model,
        card["version"],
        (Tensor("pixels", "UINT8", [-1, 28, 28]),),
        (Tensor("probabilities", "FP32", [-1, 10]), Tensor("digit", "INT64", [-1])),
    )
    return {raw.name: raw, pixels.name: pixels}


# Requests ---------------------------------------------------------------------------------------------------------


def split_body(body: bytes, header_length: str | None) -> tuple[dict, bytes]:
    """The JSON inference request and the binary tensor data after it (binary tensor data extension)."""
    if header_length is None:
        head, rest = body, b""
    else:
        digits = header_length.strip()
        if not re.fullmatch(r"[0-9]{1,15}", digits):
            raise ClientError(400, f"Inference-Header-Content-Length {header_length!r} is not a byte count")
        length = int(digits)
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
