"""The Open Inference Protocol with a client nobody here wrote: Triton's `tritonclient[http]` against the real
service (`bentoml serve`), classifying 1,000 MNIST test digits with binary and with JSON tensors."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import numpy as np
import pytest

from harness.server import running_service
from service.contract import read_card, read_normalisation, to_model_input
from tests.conftest import MODEL
from training.data import load_split

httpclient = pytest.importorskip("tritonclient.http")
pytestmark = pytest.mark.integration

CARD = json.loads(MODEL.with_suffix(".json").read_text())
N = 1000


@pytest.fixture(scope="module")
def triton():
    with running_service({"DIGITSERVE_WORKERS": "1"}) as url:
        client = httpclient.InferenceServerClient(url=urlsplit(url).netloc, network_timeout=60)
        yield client
        client.close()


@pytest.fixture(scope="module")
def digits(mnist_dir):
    test = load_split("test", mnist_dir)
    return test.images[:N], test.labels[:N]


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
    for start in range(0, N, 50):
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
