"""The Open Inference Protocol's request parsing, fuzzed: whatever JSON and bytes arrive, the outcome is an array
the model can take or a ClientError with a 4xx, never another exception (which would be a 500)."""

from __future__ import annotations

import json
import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.errors import ClientError
from service.v2_codec import DTYPES, Model, Tensor, checked_input, read_inputs, requested_outputs, split_body

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
MODEL = Model("digits", "1", (Tensor("pixels", "UINT8", [-1, 28, 28]),), (Tensor("digit", "INT64", [-1]),))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)
inputs = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["pixels", "image", ""]) | json_values,
        "datatype": st.sampled_from([*DTYPES, "BYTES", "FP8"]) | json_values,
        "shape": st.lists(st.integers(-2, 40), max_size=4) | json_values,
    },
    optional={
        "data": json_values | st.lists(st.integers(-5, 300), min_size=1, max_size=50),
        "parameters": st.fixed_dictionaries({"binary_data_size": st.integers(-4, 4000) | json_values}) | json_values,
    },
)
outputs = st.fixed_dictionaries({"name": json_values}, optional={"parameters": json_values})
valid_input = st.just({"name": "pixels", "datatype": "UINT8", "shape": [1, 28, 28], "data": [0] * 784})
requests = st.fixed_dictionaries(
    {"inputs": st.lists(inputs, max_size=3) | json_values | st.lists(valid_input, min_size=1, max_size=1)},
    optional={
        "outputs": json_values
        | st.lists(st.fixed_dictionaries({"name": json_values}, optional={"parameters": json_values})),
        "parameters": json_values,
        "id": json_values,
    },
)


def parse(body: bytes, header: str | None) -> np.ndarray:
    request, binary = split_body(body, header)
    array = checked_input(MODEL, read_inputs(request, binary), max_batch=64)
    requested_outputs(MODEL, request)
    return array


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(request=requests, binary=st.binary(max_size=3000), cut=st.integers(-10, 5000) | st.none())
def test_any_request_is_an_input_or_a_4xx(request, binary, cut):
    head = json.dumps(request, allow_nan=True).encode()
    header = None if cut is None else str(len(head) if cut < 0 else cut)
    try:
        array = parse(head + (binary if header is not None else b""), header)
    except ClientError as error:
        assert 400 <= error.status < 500
    else:
        assert array.dtype == np.uint8 and array.shape[1:] == (28, 28) and 1 <= len(array) <= 64


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.binary(max_size=200), header=st.text(max_size=6) | st.none())
def test_any_bytes_are_an_input_or_a_4xx(body, header):
    try:
        parse(body, header)
    except ClientError as error:
        assert 400 <= error.status < 500


def test_the_benchmarks_bodies_are_what_the_service_reads():
    """make bench-v2 measures these requests: they must be valid ones, not a fast path of 400s."""
    from benchmarks.bench_v2 import v2_binary, v2_json

    pixels = np.random.default_rng(0).integers(0, 256, (64, 28, 28), dtype=np.uint8)
    body, headers = v2_binary("pixels", "UINT8", pixels)
    assert np.array_equal(parse(body, headers["Inference-Header-Content-Length"]), pixels)
    assert np.array_equal(parse(v2_json("pixels", "UINT8", pixels), None), pixels)


# The same over gRPC (service/grpc_codec.py): any ModelInferRequest, raw or typed, and any bytes as one.
grpc_inputs = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["pixels", "image", ""]),
        "datatype": st.sampled_from([*DTYPES, "BYTES", "FP8", ""]),
        "shape": st.lists(st.integers(-2, 40), max_size=4),
        "values": st.lists(st.integers(-5, 2**33), max_size=50) | st.just([0] * 784),
    }
)


def grpc_parse(request) -> np.ndarray:
    from service import grpc_codec

    array = checked_input(MODEL, grpc_codec.read_inputs(request), max_batch=64)
    grpc_codec.requested_outputs(MODEL, request)
    return array


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    items=st.lists(grpc_inputs, max_size=3),
    raw=st.lists(st.binary(max_size=900) | st.just(bytes(784)), max_size=3) | st.none(),
    outputs=st.lists(st.sampled_from(["digit", "logits", ""]), max_size=2),
)
def test_any_grpc_request_is_an_input_or_a_4xx(items, raw, outputs):
    from tritonclient.grpc import service_pb2 as pb

    from service.grpc_codec import CONTENTS

    request = pb.ModelInferRequest(model_name="digits")
    for item in items:
        tensor = request.inputs.add(name=item["name"], datatype=item["datatype"], shape=item["shape"])
        field = CONTENTS.get(item["datatype"])
        if raw is None and field is not None:  # typed: values that fit the field's wire type
            values = item["values"]
            if field == "bool_contents":
                values = [bool(v) for v in values]
            elif field in ("uint_contents", "uint64_contents"):
                values = [abs(v) % (2**32 if field == "uint_contents" else 2**64) for v in values]
            elif field == "int_contents":
                values = [v % 2**31 for v in values]
            getattr(tensor.contents, field).extend(values)
    for blob in raw or []:
        request.raw_input_contents.append(blob)
    for name in outputs:
        request.outputs.add(name=name)
    try:
        array = grpc_parse(request)
    except ClientError as error:
        assert 400 <= error.status < 500
    else:
        assert array.dtype == np.uint8 and array.shape[1:] == (28, 28) and 1 <= len(array) <= 64


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.binary(max_size=300))
def test_any_bytes_as_a_grpc_request_are_an_input_or_a_4xx(body):
    """What gRPC hands the servicer is what its parser made of the bytes: a message, or a refusal before it."""
    from google.protobuf.message import DecodeError
    from tritonclient.grpc import service_pb2 as pb

    try:
        request = pb.ModelInferRequest.FromString(body)
    except DecodeError:
        return  # gRPC answers INTERNAL ("failed to deserialize") itself, before the service
    try:
        grpc_parse(request)
    except ClientError as error:
        assert 400 <= error.status < 500
