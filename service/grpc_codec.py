"""The Open Inference Protocol's gRPC messages <-> numpy arrays (no server here: service/grpc_server.py).

The messages are those of `inference.GRPCInferenceService` as Triton's client package generates them
(tritonclient.grpc: Triton's grpc_service.proto, which is KServe's grpc_predict_v2.proto with Triton's extra RPCs,
the same messages and field numbers): so Triton's and KServe's clients both speak to it, and nothing is
hand-written or regenerated here.

A request's tensors come either all in `raw_input_contents` (little-endian bytes, one entry per input, in order:
what tritonclient sends) or each in its typed `contents` field; the answer comes back the way the request came.
Every mistake is a ClientError(400), as over HTTP, with the same checks after parsing (v2_codec.checked_input).
"""

from __future__ import annotations

import numpy as np
from tritonclient.grpc import service_pb2 as pb

from service.errors import ClientError
from service.v2_codec import DTYPES, Model, Tensor, element_count

# Each datatype's typed field in InferTensorContents; FP16 has none (raw only, as in the protocol).
CONTENTS = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}
# What a typed field holds, before the values are checked against the datatype's own range.
WIDE = {"uint_contents": np.uint32, "int_contents": np.int32}


def little_endian(datatype: str) -> np.dtype:
    return np.dtype(DTYPES[datatype]).newbyteorder("<")


def typed_values(name: str, datatype: str, contents: pb.InferTensorContents) -> np.ndarray:
    """An input's typed contents as an array of its datatype (400 if a value does not fit it)."""
    field = CONTENTS.get(datatype)
    if field is None:
        raise ClientError(400, f"input {name!r}: {datatype} travels only in raw_input_contents")
    values = getattr(contents, field)
    wide = WIDE.get(field)
    if wide is None:
        return np.array(values, DTYPES[datatype])
    array = np.array(values, wide)
    info = np.iinfo(DTYPES[datatype])
    if array.size and (array.min() < info.min or array.max() > info.max):
        raise ClientError(400, f"input {name!r}: a value outside {datatype}'s range {info.min}..{info.max}")
    return array.astype(DTYPES[datatype])


def read_inputs(request: pb.ModelInferRequest) -> dict[str, np.ndarray]:
    """The request's input tensors by name, each in its shape and datatype."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise ClientError(400, f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs: one for each")
    tensors = {}
    for index, item in enumerate(request.inputs):
        name, datatype = item.name, item.datatype
        if datatype not in DTYPES:
            raise ClientError(400, f"input {name!r}: datatype {datatype!r} is not one of {', '.join(DTYPES)}")
        shape = list(item.shape)
        count = element_count(shape)
        if raw:
            dtype = little_endian(datatype)
            if len(raw[index]) != count * dtype.itemsize:
                raise ClientError(400, f"input {name!r}: {len(raw[index])} bytes for shape {shape} of {datatype}")
            array = np.frombuffer(raw[index], dtype)
        else:
            array = typed_values(name, datatype, item.contents)
            if array.size != count:
                raise ClientError(400, f"input {name!r}: {array.size} values for shape {shape}")
        if name in tensors:
            raise ClientError(400, f"input {name!r} given twice")
        tensors[name] = array.reshape(shape)
    return tensors


def requested_outputs(model: Model, request: pb.ModelInferRequest) -> list[Tensor]:
    """The outputs asked for, in the order asked (all when none are)."""
    if not request.outputs:
        return list(model.outputs)
    known = {tensor.name: tensor for tensor in model.outputs}
    unknown = [item.name for item in request.outputs if item.name not in known]
    if unknown:
        raise ClientError(400, f"unknown output {unknown[0]!r}: model {model.name!r} has {', '.join(known)}")
    return [known[item.name] for item in request.outputs]


def response(
    model: Model, request: pb.ModelInferRequest, chosen: list[Tensor], values: dict[str, np.ndarray]
) -> pb.ModelInferResponse:
    """The ModelInferResponse with the `chosen` outputs: raw if the request's inputs were raw, else typed."""
    answer = pb.ModelInferResponse(model_name=model.name, model_version=model.version, id=request.id)
    raw = bool(request.raw_input_contents)
    for tensor in chosen:
        array = np.ascontiguousarray(values[tensor.name], DTYPES[tensor.datatype])
        output = answer.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=array.shape)
        if raw:
            answer.raw_output_contents.append(array.astype(little_endian(tensor.datatype), copy=False).tobytes())
        else:
            getattr(output.contents, CONTENTS[tensor.datatype]).extend(array.ravel().tolist())
    return answer
