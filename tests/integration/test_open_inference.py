"""The Open Inference Protocol (service/open_inference.py) in process: metadata, health, Triton's model
configuration, inference with JSON and binary tensors on both models, and a 4xx for each protocol mistake."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.digits import sample_digits
from harness.in_process import in_process, model_runtime
from service import __version__
from tests.conftest import MODEL

pytestmark = pytest.mark.integration

CARD = json.loads(MODEL.with_suffix(".json").read_text())
RAW, PIXELS = CARD["name"], "digits"


@pytest.fixture(scope="module")
def client():
    with in_process(DIGITSERVE_MAX_BYTES="1000000") as client:
        yield client


@pytest.fixture(scope="module")
def digits():
    return sample_digits()


@pytest.fixture(scope="module")
def runtime():
    return model_runtime()


def binary_request(inputs: list[tuple[str, str, np.ndarray]], outputs: list[dict] | None = None, **extra) -> dict:
    """httpx arguments for an infer request whose tensors travel as binary data, as tritonclient sends them."""
    head = {
        "inputs": [
            {"name": n, "datatype": t, "shape": list(a.shape), "parameters": {"binary_data_size": a.nbytes}}
            for n, t, a in inputs
        ],
        **({"outputs": outputs} if outputs is not None else {}),
        **extra,
    }
    header = json.dumps(head).encode()
    body = header + b"".join(a.tobytes() for _, _, a in inputs)
    return {"content": body, "headers": {"Inference-Header-Content-Length": str(len(header))}}


def binary_outputs(response) -> dict[str, np.ndarray]:
    length = int(response.headers["inference-header-content-length"])
    head, offset, found = json.loads(response.content[:length]), length, {}
    dtypes = {"FP32": np.float32, "INT64": np.int64}
    for output in head["outputs"]:
        size = output["parameters"]["binary_data_size"]
        data = np.frombuffer(response.content[offset : offset + size], dtypes[output["datatype"]])
        found[output["name"]] = data.reshape(output["shape"])
        offset += size
    assert offset == len(response.content)
    return found


def test_server_metadata_and_health(client):
    meta = client.get("/v2").json()
    assert meta["name"] == "digitserve" and meta["version"] == __version__
    assert "binary_tensor_data" in meta["extensions"]
    assert "statistics" not in meta["extensions"]  # not implemented: not advertised
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}


@pytest.mark.parametrize("suffix", ["", f"/versions/{CARD['version']}"])
def test_model_metadata_ready_and_config(client, suffix):
    meta = client.get(f"/v2/models/{RAW}{suffix}").json()
    assert meta["versions"] == [CARD["version"]] and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 1, 28, 28]}]
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]
    pixels = client.get(f"/v2/models/{PIXELS}{suffix}").json()
    assert pixels["inputs"] == [{"name": "pixels", "datatype": "UINT8", "shape": [-1, 28, 28]}]
    assert [o["name"] for o in pixels["outputs"]] == ["probabilities", "digit"]
    assert client.get(f"/v2/models/{PIXELS}{suffix}/ready").json() == {"name": PIXELS, "ready": True}
    config = client.get(f"/v2/models/{RAW}{suffix}/config").json()
    assert config["max_batch_size"] == 64 and "dynamic_batching" in config
    assert config["input"] == [{"name": "image", "data_type": "TYPE_FP32", "dims": [1, 28, 28]}]
    assert config["output"] == [{"name": "logits", "data_type": "TYPE_FP32", "dims": [10]}]


def test_pixels_as_nested_json_give_probabilities_and_digits(client, digits, runtime):
    images, labels = digits
    batch = images[:16]
    request = {"id": "req-7", "inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [16, 28, 28]}]}
    request["inputs"][0]["data"] = batch.tolist()  # nested, as numpy's tolist gives it
    answer = client.post(f"/v2/models/{PIXELS}/infer", json=request)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["id"] == "req-7" and body["model_name"] == PIXELS and body["model_version"] == CARD["version"]
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["digit"]["shape"] == [16] and outputs["digit"]["datatype"] == "INT64"
    assert np.mean(np.array(outputs["digit"]["data"]) == labels[:16]) >= 0.9
    probabilities = np.array(outputs["probabilities"]["data"]).reshape(outputs["probabilities"]["shape"])
    np.testing.assert_allclose(probabilities, runtime.probabilities(batch), atol=1e-5)
    assert outputs["digit"]["data"] == probabilities.argmax(1).tolist()


def test_the_raw_model_in_binary_gives_its_logits(client, digits, runtime):
    inputs = runtime.model_input(digits[0][:64])
    answer = client.post(
        f"/v2/models/{RAW}/versions/{CARD['version']}/infer",
        **binary_request([("image", "FP32", inputs)], [{"name": "logits", "parameters": {"binary_data": True}}]),
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/octet-stream"
    np.testing.assert_allclose(binary_outputs(answer)["logits"], runtime.logits(inputs), atol=1e-4)


def test_flat_json_data_and_binary_output_for_every_tensor(client, digits):
    images, _ = digits
    request = {
        "inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [2, 28, 28], "data": images[:2].ravel().tolist()}],
        "parameters": {"binary_data_output": True},
    }
    outputs = binary_outputs(client.post(f"/v2/models/{PIXELS}/infer", json=request))
    assert outputs["probabilities"].shape == (2, 10) and outputs["digit"].shape == (2,)
    assert outputs["digit"].tolist() == outputs["probabilities"].argmax(1).tolist()


def test_concurrent_protocol_requests_share_batches_with_the_other_routes(client, digits):
    images, _ = digits
    requests = [
        {"json": {"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, 28, 28], "data": i.tolist()}]}}
        for i in images[:24]
    ]
    before = client.get("/metrics").text
    answers = client.post_together(f"/v2/models/{PIXELS}/infer", requests)
    assert {a.status_code for a in answers} == {200}
    after = client.get("/metrics").text

    def batched(text: str) -> float:
        rows = [r for r in text.splitlines() if r.startswith("digitserve_batch_size_")]
        count = sum(float(r.rsplit(" ", 1)[1]) for r in rows if r.startswith("digitserve_batch_size_count"))
        single = sum(float(r.rsplit(" ", 1)[1]) for r in rows if 'le="1.0"' in r)
        return count - single

    assert batched(after) > batched(before), "no two protocol requests shared an ONNX Runtime call"
    label = 'digitserve_requests_total{endpoint="/v2/models/{model}/infer",status="200"}'
    assert label in after

    def predicted(text: str) -> float:
        return sum(
            float(r.rsplit(" ", 1)[1]) for r in text.splitlines() if r.startswith("digitserve_predictions_total")
        )

    assert predicted(after) - predicted(before) == 24  # the digits model's predictions are counted too


def pixels_request(shape: list[int], datatype: str = "UINT8", data: list | None = None) -> dict:
    count = int(np.prod(shape)) if shape else 1
    return {"inputs": [{"name": "pixels", "datatype": datatype, "shape": shape, "data": data or [0] * count}]}


def test_protocol_mistakes_are_4xx_with_a_message(client, digits, runtime):
    image = runtime.model_input(digits[0][:1])
    good = binary_request([("image", "FP32", image)])
    header = json.loads(good["content"][: int(good["headers"]["Inference-Header-Content-Length"])])
    on_pixels, on_raw, pixels = f"/v2/models/{PIXELS}/infer", f"/v2/models/{RAW}/infer", pixels_request
    cases = [
        ("unknown model", "/v2/models/resnet/infer", {"json": pixels([1, 28, 28])}, 404),
        ("unknown version", f"/v2/models/{PIXELS}/versions/9/infer", {"json": pixels([1, 28, 28])}, 404),
        ("metadata of no model", "/v2/models/resnet", None, 404),
        ("wrong datatype", on_pixels, {"json": pixels([1, 28, 28], "FP32")}, 400),
        ("unknown datatype", on_pixels, {"json": pixels([1, 28, 28], "FP8")}, 400),
        (
            "shape and data disagree",
            on_pixels,
            {"json": pixels([1, 28, 28], data=[0] * 10)},
            400,
        ),
        ("wrong shape", on_pixels, {"json": pixels([1, 784])}, 400),
        ("out of range", on_pixels, {"json": pixels([1, 28, 28], data=[300] * 784)}, 400),
        ("no inputs", on_pixels, {"json": {"outputs": []}}, 400),
        (
            "not JSON",
            on_pixels,
            {"content": b"{", "headers": {"content-type": "application/json"}},
            400,
        ),
        ("wrong input name", on_raw, {"json": pixels([1, 28, 28])}, 400),
        (
            "unknown output",
            on_pixels,
            {"json": {**pixels([1, 28, 28]), "outputs": [{"name": "x"}]}},
            400,
        ),
        ("too many images", on_pixels, {"json": pixels([65, 28, 28])}, 413),
        ("truncated binary", on_raw, {**good, "content": good["content"][:-10]}, 400),
        (
            "header length past the body",
            on_raw,
            {**good, "headers": {"Inference-Header-Content-Length": str(len(good["content"]) + 1)}},
            400,
        ),
        (
            "binary size not the shape's",
            on_raw,
            binary_request([("image", "FP32", np.zeros((1, 1, 28, 27), np.float32))]),
            400,
        ),
        (
            "NaN",
            on_raw,
            binary_request([("image", "FP32", np.full((1, 1, 28, 28), np.nan, np.float32))]),
            400,
        ),
        ("over the byte limit", on_raw, {"content": b"x" * 1_000_001}, 413),
    ]
    assert header["inputs"][0]["parameters"]["binary_data_size"] == 784 * 4
    for name, path, request, status in cases:
        answer = client.get(path) if request is None else client.post(path, **request)
        assert answer.status_code == status, (name, answer.status_code, answer.text)
        assert isinstance(answer.json()["error"], str), name
    assert client.post(f"/v2/models/{RAW}/infer", **good).status_code == 200
