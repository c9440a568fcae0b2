"""The Open Inference Protocol with clients nobody here wrote, against the real service (`bentoml serve`, two
workers): over HTTP, Triton's `tritonclient[http]` classifies 1,000 MNIST test digits with binary and with JSON
tensors; over gRPC, `tritonclient[grpc]` the 1,000 digits (raw tensors, what it sends) on connections that reach
both workers; KServe's `InferenceRESTClient` (v2) and `InferenceGRPCClient` a smaller sample, raw and typed.
The gRPC server's other behaviour is tested in process: tests/integration/test_grpc.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from urllib.parse import urlsplit

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from harness.server import log_with, serving
from service.contract import read_card, read_normalisation, to_model_input
from tests.conftest import MODEL, ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CARD = json.loads(MODEL.with_suffix(".json").read_text())


@pytest.fixture(scope="module")
def server():
    with serving({"DIGITSERVE_WORKERS": "2"}) as server:
        yield server


@pytest.fixture(scope="module")
def triton(server):
    client = httpclient.InferenceServerClient(url=urlsplit(server.url).netloc, network_timeout=60)
    yield client
    client.close()


def test_health_metadata_and_config(triton):
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready("digits") and triton.is_model_ready(CARD["name"], CARD["version"])
    assert not triton.is_model_ready("resnet50")
    assert "binary_tensor_data" in triton.get_server_metadata()["extensions"]
    meta = triton.get_model_metadata(CARD["name"])
    assert meta["inputs"][0] == {"name": "image", "datatype": "FP32", "shape": [-1, 1, 28, 28]}
    config = triton.get_model_config("digits")
    assert config["max_batch_size"] >= 1 and config["input"][0]["dims"] == [28, 28]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_1000_digits_as_pixels(triton, digits, binary):
    images, labels = digits
    found = []
    for start in range(0, len(images), 50):
        batch = np.ascontiguousarray(images[start : start + 50])
        tensor = httpclient.InferInput("pixels", list(batch.shape), "UINT8")
        tensor.set_data_from_numpy(batch, binary_data=binary)
        outputs = [httpclient.InferRequestedOutput(name, binary_data=binary) for name in ("digit", "probabilities")]
        result = triton.infer("digits", [tensor], outputs=outputs, request_id=f"batch-{start}")
        assert result.get_response()["id"] == f"batch-{start}"
        probabilities = result.as_numpy("probabilities")
        assert probabilities.shape == (len(batch), 10)
        found += result.as_numpy("digit").tolist()
    assert np.mean(np.array(found) == labels) >= 0.99


def test_the_raw_model_gives_the_same_digits(triton, digits):
    images, labels = digits
    inputs = to_model_input(images[:64], *read_normalisation(read_card(MODEL)))  # 64: DIGITSERVE_MAX_BATCH
    tensor = httpclient.InferInput("image", list(inputs.shape), "FP32")
    tensor.set_data_from_numpy(inputs)
    logits = triton.infer(CARD["name"], [tensor], model_version=CARD["version"]).as_numpy("logits")
    assert logits.shape == (64, 10) and np.mean(logits.argmax(1) == labels[:64]) >= 0.98


def test_a_protocol_mistake_is_the_clients_exception(triton):
    tensor = httpclient.InferInput("pixels", [1, 28, 28], "FP32")  # the model takes UINT8
    tensor.set_data_from_numpy(np.zeros((1, 28, 28), np.float32))
    with pytest.raises(Exception, match="must be UINT8"):
        triton.infer("digits", [tensor])


def test_triton_grpc_client_health_metadata_and_config(server):
    client = grpcclient.InferenceServerClient(server.grpc)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("digits") and client.is_model_ready(CARD["name"], CARD["version"])
    assert not client.is_model_ready("resnet50")
    assert "binary_tensor_data" in client.get_server_metadata().extensions
    meta = client.get_model_metadata(CARD["name"], as_json=True)
    assert meta["inputs"][0] == {"name": "image", "datatype": "FP32", "shape": ["-1", "1", "28", "28"]}
    assert client.get_model_config("digits").config.input[0].dims == [28, 28]
    client.close()


def test_triton_grpc_client_reads_1000_digits_on_both_workers(server, digits):
    """Each request on a connection of its own, so that the kernel spreads them over the two workers' listeners
    (SO_REUSEPORT); their access log lines show that both answered. A channel shares the connections of the other
    channels to its address unless it keeps its own subchannel pool: without one all 20 went to one worker."""
    for worker in (1, 2):  # the server is ready when one worker is: wait for both workers' listeners
        log_with(server.log, f"[entry_service:digitserve:{worker}] Open Inference Protocol over gRPC", 60)
    images, labels = digits
    found = []
    for start in range(0, len(images), 50):
        client = grpcclient.InferenceServerClient(server.grpc, channel_args=[("grpc.use_local_subchannel_pool", 1)])
        batch = np.ascontiguousarray(images[start : start + 50])
        tensor = grpcclient.InferInput("pixels", list(batch.shape), "UINT8")
        tensor.set_data_from_numpy(batch)
        outputs = [grpcclient.InferRequestedOutput(name) for name in ("digit", "probabilities")]
        result = client.infer("digits", [tensor], outputs=outputs, request_id=f"batch-{start}")
        assert result.get_response().id == f"batch-{start}" and result.as_numpy("probabilities").shape == (50, 10)
        found += result.as_numpy("digit").tolist()
        client.close()
    assert np.mean(np.array(found) == labels) >= 0.99
    calls = []
    deadline = time.monotonic() + 10  # the workers' log lines reach the log through circus's pipes
    while len(calls) < 20 and time.monotonic() < deadline:
        calls = [line for line in log_with(server.log, "ModelInfer 200").splitlines() if "ModelInfer 200" in line]
        time.sleep(0.1)
    assert {re.search(r"\[entry_service:digitserve:(\d+)\]", line)[1] for line in calls} == {"1", "2"}


def test_triton_grpc_client_on_the_raw_model(server, digits):
    images, labels = digits
    inputs = to_model_input(images[:64], *read_normalisation(read_card(MODEL)))
    client = grpcclient.InferenceServerClient(server.grpc)
    tensor = grpcclient.InferInput("image", list(inputs.shape), "FP32")
    tensor.set_data_from_numpy(inputs)
    logits = client.infer(CARD["name"], [tensor], model_version=CARD["version"]).as_numpy("logits")
    assert logits.shape == (64, 10) and np.mean(logits.argmax(1) == labels[:64]) >= 0.98
    wrong = grpcclient.InferInput("pixels", [1, 28, 28], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 28, 28), np.float32))
    with pytest.raises(grpcclient.InferenceServerException, match="INVALID_ARGUMENT"):
        client.infer("digits", [wrong])
    client.close()


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
@pytest.mark.parametrize("coding", ["raw", "typed"])
def test_kserve_clients(server, digits, protocol, coding, tmp_path):
    """KServe's InferenceRESTClient (v2; raw: binary tensors, typed: JSON) and InferenceGRPCClient (raw or typed
    contents), each in a process of its own (tests/integration/kserve_v2.py says why)."""
    images, labels = digits
    np.save(tmp_path / "batch.npy", np.ascontiguousarray(images[:64]))
    address = server.url if protocol == "rest" else server.grpc
    command = [sys.executable, "-m", "tests.integration.kserve_v2", protocol, address, str(tmp_path / "batch.npy")]
    done = subprocess.run([*command, coding], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.splitlines()[-1])
    assert got["live"] and got["ready"] and got["id"] == "kserve-1" and got["shape"] == [64, 10]
    assert np.mean(np.array(got["digits"]) == labels[:64]) >= 0.98
