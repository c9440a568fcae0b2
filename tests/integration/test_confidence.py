"""Calibrated confidence and "not sure" answers through the API in process: the card's temperature shapes every
probability the service reports, and `min_confidence` (request or DIGITSERVE_MIN_CONFIDENCE) turns an unsure
prediction into a 422 that still carries the probabilities."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from harness.digits import as_png
from harness.in_process import in_process, model_runtime
from harness.not_digits import not_digits
from service.runtime import softmax
from tests.conftest import MODEL

pytestmark = pytest.mark.integration
RAW = {"content-type": "application/octet-stream"}


@pytest.fixture(scope="module")
def client():
    with in_process() as client:
        yield client


@pytest.fixture(scope="module")
def unsure_png(client) -> tuple[bytes, float]:
    """A non-digit (a letter) the model is not certain of, and its confidence."""
    for kind, _, data in not_digits():
        if kind == "letter":
            answer = client.post("/classify", files={"image": ("x.png", data)}).json()
            if 0.3 < answer["confidence"] < 0.99:
                return data, answer["confidence"]
    pytest.fail("no letter with a confidence between 0.3 and 0.99")


def test_probabilities_are_softmax_of_logits_over_the_cards_temperature(tmp_path, digits):
    model = tmp_path / MODEL.name
    shutil.copy(MODEL, model)
    card = json.loads(MODEL.with_suffix(".json").read_text())
    card["calibration"] = {**card.get("calibration", {}), "temperature": 3.0}
    model.with_suffix(".json").write_text(json.dumps(card))
    images = digits[0][:8]
    runtime = model_runtime()
    logits = runtime.logits(runtime.model_input(images))
    with in_process(DIGITSERVE_MODEL=str(model)) as hot:
        answer = hot.post("/classify_pixels", content=images.tobytes(), headers=RAW).json()["results"]
        assert hot.get("/model").json()["temperature"] == 3.0
        v2 = hot.post("/v2/models/digits/infer", json=v2_request(images)).json()
    expected = softmax(logits / 3.0)
    np.testing.assert_allclose([r["probabilities"] for r in answer], expected, atol=1e-5)
    np.testing.assert_allclose([r["confidence"] for r in answer], expected.max(1), atol=1e-5)
    v2_probabilities = next(o for o in v2["outputs"] if o["name"] == "probabilities")["data"]
    np.testing.assert_allclose(np.reshape(v2_probabilities, (-1, 10)), expected, atol=1e-5)


def v2_request(images: np.ndarray) -> dict:
    return {
        "inputs": [
            {"name": "pixels", "shape": [len(images), 28, 28], "datatype": "UINT8", "data": images.ravel().tolist()}
        ]
    }


def test_below_min_confidence_is_a_422_with_the_probabilities(client, unsure_png):
    data, confidence = unsure_png
    sure = client.post("/classify", files={"image": ("x.png", data)}).json()
    below = client.post("/classify", params={"min_confidence": (confidence + 1) / 2}, files={"image": ("x.png", data)})
    assert below.status_code == 422
    body = below.json()
    assert body["error"] == "not confidently a digit"
    assert body["probabilities"] == sure["probabilities"] and body["confidence"] == confidence
    above = client.post("/classify", params={"min_confidence": confidence / 2}, files={"image": ("x.png", data)})
    assert above.status_code == 200 and above.json()["digit"] == sure["digit"]


def test_the_services_default_and_the_requests_own(unsure_png, digits):
    data, _ = unsure_png
    with in_process(DIGITSERVE_MIN_CONFIDENCE="0.995") as strict:
        assert strict.post("/classify", files={"image": ("x.png", data)}).status_code == 422
        assert (
            strict.post("/classify", params={"min_confidence": 0}, files={"image": ("x.png", data)}).status_code == 200
        )
        digit = as_png(digits[0][0])
        assert (
            strict.post("/classify", params={"min_confidence": 0.5}, files={"image": ("d.png", digit)}).status_code
            == 200
        )


def test_a_batch_names_the_unsure_images_and_keeps_every_probability(client, digits):
    images = digits[0][:32]
    answer = client.post("/classify_pixels", content=images.tobytes(), headers=RAW).json()["results"]
    confidences = np.array([r["confidence"] for r in answer])
    threshold = float(np.sort(confidences)[2])  # the two least confident fall below it
    refused = client.post(
        "/classify_pixels", params={"min_confidence": threshold}, content=images.tobytes(), headers=RAW
    )
    assert refused.status_code == 422
    body = refused.json()
    assert body["not_confident"] == sorted(np.flatnonzero(confidences < threshold).tolist())
    assert len(body["not_confident"]) == 2 and body["probabilities"] == [r["probabilities"] for r in answer]
    files = [("images", (f"{i}.png", as_png(image))) for i, image in enumerate(images[:4])]
    assert client.post("/classify_batch", params={"min_confidence": 0}, files=files).status_code == 200


@pytest.mark.parametrize("value", ["2", "-1", "sure"])
def test_a_malformed_min_confidence_is_a_422(client, digits, value):
    answer = client.post(
        "/classify_pixels", params={"min_confidence": value}, content=digits[0][:1].tobytes(), headers=RAW
    )
    assert answer.status_code == 422 and "min_confidence" in answer.json()["error"]
