"""The Open Inference Protocol over gRPC (service/grpc_server.py), one worker's server in this process, called over
a real socket with Triton's client and gRPC's own stubs: mistakes and their status codes, the API key, the
concurrency limit shared with HTTP, the request id, the metrics, readiness while draining, the health service.
Real `bentoml serve` workers with real clients: tests/integration/test_open_inference_clients.py."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

from harness.in_process import grpc_in_process
from service import lifecycle, routes
from service.grpc_server import RPCS, rpc_path
from tests.unit.test_middleware import sample

pytestmark = pytest.mark.integration
KEY = "s3cret"


@pytest.fixture(scope="module")
def served():
    with grpc_in_process(DIGITSERVE_API_KEY=KEY, DIGITSERVE_MAX_CONCURRENCY="2") as (address, gate):
        channel = grpc.insecure_channel(address)
        yield pb_grpc.GRPCInferenceServiceStub(channel), address, gate
        channel.close()


@pytest.fixture(scope="module")
def stub(served):
    return served[0]


AUTHORISED = (("authorization", f"Bearer {KEY}"),)


def pixels_request(images: np.ndarray, **fields) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="digits", **fields)
    request.inputs.add(name="pixels", datatype="UINT8", shape=images.shape)
    request.raw_input_contents.append(np.ascontiguousarray(images, np.uint8).tobytes())
    return request


def refusal(call, request, metadata=AUTHORISED) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call(request, metadata=metadata)
    return raised.value.code(), raised.value.details()


def test_raw_and_typed_contents_read_the_same_digits(stub, digits):
    images, labels = digits
    raw = stub.ModelInfer(pixels_request(images[:64], id="r1"), metadata=AUTHORISED)
    assert raw.id == "r1" and [o.name for o in raw.outputs] == ["probabilities", "digit"]
    found = np.frombuffer(raw.raw_output_contents[1], "<i8")
    assert np.mean(found == labels[:64]) >= 0.98

    typed = pb.ModelInferRequest(model_name="digits")
    tensor = typed.inputs.add(name="pixels", datatype="UINT8", shape=[64, 28, 28])
    tensor.contents.uint_contents.extend(images[:64].ravel().tolist())
    typed.outputs.add(name="digit")
    answer = stub.ModelInfer(typed, metadata=AUTHORISED)
    assert not answer.raw_output_contents  # typed in, typed out
    assert list(answer.outputs[0].contents.int64_contents) == found.tolist()


@pytest.mark.parametrize(
    ("change", "code", "message"),
    [
        (lambda r: setattr(r, "model_name", "resnet50"), grpc.StatusCode.NOT_FOUND, "unknown model 'resnet50'"),
        (lambda r: setattr(r, "model_version", "7"), grpc.StatusCode.NOT_FOUND, "not '7'"),
        (lambda r: setattr(r.inputs[0], "datatype", "FP32"), grpc.StatusCode.INVALID_ARGUMENT, "784 bytes for"),
        (lambda r: setattr(r.inputs[0], "name", "image"), grpc.StatusCode.INVALID_ARGUMENT, "takes one input"),
        (lambda r: r.inputs[0].shape.__setitem__(1, 27), grpc.StatusCode.INVALID_ARGUMENT, "bytes for shape"),
        (lambda r: r.raw_input_contents.append(b"x"), grpc.StatusCode.INVALID_ARGUMENT, "2 raw_input_contents"),
        (lambda r: r.outputs.add(name="logits"), grpc.StatusCode.INVALID_ARGUMENT, "unknown output 'logits'"),
        (lambda r: setattr(r.inputs[0], "datatype", "BF16"), grpc.StatusCode.INVALID_ARGUMENT, "'BF16' is not"),
    ],
    ids=["model", "version", "datatype", "input", "shape", "raw-count", "output", "unknown-type"],
)
def test_mistakes_are_status_codes_with_the_http_message(stub, digits, change, code, message):
    request = pixels_request(digits[0][:1])
    change(request)
    got, details = refusal(stub.ModelInfer, request)
    assert got == code and message in details


def test_typed_values_out_of_range_and_fp16_typed_are_refused(stub):
    request = pb.ModelInferRequest(model_name="digits")
    tensor = request.inputs.add(name="pixels", datatype="UINT8", shape=[1, 28, 28])
    tensor.contents.uint_contents.extend([300] * 784)
    assert refusal(stub.ModelInfer, request) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ("input 'pixels': a value outside UINT8's range 0..255"),
    )
    tensor.datatype = "FP16"
    assert "travels only in raw_input_contents" in refusal(stub.ModelInfer, request)[1]


def test_batch_and_message_limits_are_resource_exhausted(stub):
    too_many = pixels_request(np.zeros((65, 28, 28), np.uint8))
    code, details = refusal(stub.ModelInfer, too_many)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "65 images in one request" in details
    huge = pixels_request(np.zeros((16_000, 28, 28), np.uint8))  # 12.5 MB: over DIGITSERVE_MAX_BYTES
    assert refusal(stub.ModelInfer, huge)[0] == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_the_key_the_shared_limit_the_request_id_and_the_metrics(served, digits):
    stub, _, gate = served
    label = rpc_path("ModelInfer")
    before = {s: sample("digitserve_requests_total", endpoint=label, status=str(s)) for s in (200, 401, 429)}
    request = pixels_request(digits[0][:1])
    assert refusal(stub.ModelInfer, request, metadata=())[0] == grpc.StatusCode.UNAUTHENTICATED
    wrong = (("authorization", "Bearer nope"),)
    assert refusal(stub.ModelInfer, request, metadata=wrong)[0] == grpc.StatusCode.UNAUTHENTICATED
    for _ in range(2):  # two requests in flight in the worker (over HTTP, say): the limit is reached
        gate.enter()
    try:
        assert refusal(stub.ModelInfer, request)[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        gate.leave(), gate.leave()
    answer, call = stub.ModelInfer.with_call(request, metadata=(*AUTHORISED, ("x-request-id", "abc-123")))
    assert answer.outputs and ("x-request-id", "abc-123") in tuple(call.trailing_metadata())
    after = {s: sample("digitserve_requests_total", endpoint=label, status=str(s)) for s in before}
    assert {s: after[s] - before[s] for s in before} == {200: 1, 401: 2, 429: 1}
    assert gate.in_flight == 0


def test_only_inference_needs_the_key_and_every_rpc_served_is_in_the_route_table(stub):
    assert stub.ServerLive(pb.ServerLiveRequest()).live  # no key
    assert stub.ModelMetadata(pb.ModelMetadataRequest(name="digits")).inputs[0].name == "pixels"
    assert [name for name in RPCS if routes.find(rpc_path(name)) is None] == []
    assert [routes.find(rpc_path(name)).predicts for name in RPCS] == [name == "ModelInfer" for name in RPCS]


def test_triton_client_metadata_config_and_readiness_while_draining(served, monkeypatch):
    _, address, _ = served
    client = grpcclient.InferenceServerClient(address)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("digits")
    assert not client.is_model_ready("resnet50") and not client.is_model_ready("digits", "7")  # as HTTP's 404
    with pytest.raises(InferenceServerException, match="unknown model 'resnet50'"):
        client.get_model_metadata("resnet50")
    config = client.get_model_config("mnist_cnn", as_json=True)["config"]
    assert config["input"][0] == {"name": "image", "data_type": "TYPE_FP32", "dims": ["1", "28", "28"]}
    assert config["max_batch_size"] == 64
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(address))
    assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
    monkeypatch.setattr(lifecycle, "_draining", True)
    assert not client.is_server_ready() and not client.is_model_ready("digits")
    assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.NOT_SERVING
    client.close()
