"""The Open Inference Protocol with clients nobody here wrote, against the real service (`bentoml serve`): Triton's
`tritonclient[http]` classifies 1,000 MNIST test digits with binary and with JSON tensors, KServe's
`InferenceRESTClient` (protocol v2) a smaller sample."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit

import numpy as np
import pytest
import tritonclient.http as httpclient

from service.contract import read_card, read_normalisation, to_model_input
from tests.conftest import MODEL

pytestmark = pytest.mark.integration

CARD = json.loads(MODEL.with_suffix(".json").read_text())


@pytest.fixture(scope="module")
def triton(url):
    client = httpclient.InferenceServerClient(url=urlsplit(url).netloc, network_timeout=60)
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


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_kserve_rest_client_v2(url, digits, binary):
    import kserve  # here, not at the top: its import takes a second or two

    images, labels = digits
    batch = np.ascontiguousarray(images[:64])

    async def ask() -> tuple[bool, bool, object]:
        client = kserve.InferenceRESTClient(kserve.RESTConfig(protocol="v2", timeout=60))
        try:
            ready = await client.is_server_ready(url) and await client.is_model_ready(url, "digits")
            tensor = kserve.InferInput("pixels", list(batch.shape), "UINT8")
            tensor.set_data_from_numpy(batch, binary_data=binary)
            request = kserve.InferRequest(model_name="digits", infer_inputs=[tensor], request_id="kserve-1")
            return await client.is_server_live(url), ready, await client.infer(url, request, model_name="digits")
        finally:
            await client.close()

    live, ready, response = asyncio.run(ask())
    assert live and ready and response.id == "kserve-1"
    outputs = {output.name: output.as_numpy() for output in response.outputs}
    assert outputs["probabilities"].shape == (64, 10)
    assert np.mean(outputs["digit"] == labels[:64]) >= 0.98
