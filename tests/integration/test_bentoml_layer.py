"""BentoML's layer of the service in process (harness.in_process.service_in_process): one worker's whole app as
`bentoml serve` builds it, its lifespan run, no server process. What only a real server shows (workers, signals,
the HTTP server itself) stays in test_service_http.py and test_shutdown_and_crash.py."""

from __future__ import annotations

import json

import pytest

from harness.in_process import model_runtime, service_in_process
from tests.conftest import MODEL
from tests.integration.test_service_http import metric_sum

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client():
    with service_in_process() as client:
        yield client


def test_model_endpoint_and_probes(client):
    info = client.get("/model").json()
    card = json.loads(MODEL.with_suffix(".json").read_text())
    assert info["sha256"] == card["sha256"] and info["version"] == card["version"]
    assert info["provider"] == model_runtime().provider  # the environment's device (the CPU here, in CI)
    assert info["input"]["shape"] == ["N", 1, 28, 28]
    for probe in ("/livez", "/readyz"):
        answer = client.get(probe)
        # BentoML's own routes pass through the request middleware too (service/app.py wires it there).
        assert answer.status_code == 200 and len(answer.headers["x-request-id"]) == 32


def test_bentoml_typed_api_answers_and_counts_its_predictions(client, digits):
    images, labels = digits
    before = metric_sum(client.get("/metrics").text, "digitserve_predictions_total")
    answer = client.post("/probabilities", json={"pixels": images[:3].reshape(3, 784).tolist()})
    assert answer.status_code == 200
    assert [row.index(max(row)) for row in answer.json()] == labels[:3].tolist()
    assert metric_sum(client.get("/metrics").text, "digitserve_predictions_total") - before == 3


@pytest.mark.parametrize(
    "pixels",
    [[[0] * 783], [[300] * 784], [[-1] * 784], [], "not pixels", "too many"],
    ids=["wrong-shape", "over-255", "negative", "empty", "text", "too-many"],
)
def test_bentoml_typed_api_refuses_bad_pixels_with_400(client, pixels):
    from service.app import settings

    if pixels == "too many":
        pixels = [[0] * 784] * (settings.max_batch + 1)
    response = client.post("/probabilities", json={"pixels": pixels})
    assert response.status_code == 400, response.text
    assert "error" in response.json()
    assert client.post("/probabilities", json={"pixels": [[0] * 784]}).status_code == 200


def test_openapi_lists_every_endpoint(client):
    paths = client.get("/docs.json").json()["paths"]
    for path in ("/classify", "/classify_batch", "/classify_pixels", "/probabilities", "/model", "/read"):
        assert path in paths, path
    assert "multipart/form-data" in paths["/classify"]["post"]["requestBody"]["content"]
