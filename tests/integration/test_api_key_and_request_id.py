"""The optional API key and the request id, in process (harness.in_process): prediction endpoints locked, metrics
and model info open, the key never in the log, every answer carrying an id that the access log line shares with its
status and digit. (BentoML's own routes behind the same middleware: tests/unit/test_middleware.py.)"""

from __future__ import annotations

import logging
import re

import pytest

from harness.digits import as_png, sample_digits
from harness.in_process import in_process

pytestmark = pytest.mark.integration

KEY = "k3y-" + "x" * 28
AUTH = {"Authorization": f"Bearer {KEY}"}


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def served():
    images, labels = sample_digits()
    seven = as_png(images[labels == 7][0])
    log = Lines()
    logger = logging.getLogger("bentoml.digitserve.access")
    logger.addHandler(log)
    logger.setLevel(logging.INFO)
    try:
        with in_process(DIGITSERVE_API_KEY=KEY, DIGITSERVE_ACCESS_LOG="true") as client:
            yield client, seven, log
    finally:
        logger.removeHandler(log)


def test_prediction_endpoints_need_the_key(served):
    client, image, _ = served
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        response = client.post("/classify", files={"image": ("d.png", image)}, headers=headers)
        assert response.status_code == 401 and "API key" in response.json()["error"]
        assert response.headers["www-authenticate"] == 'Bearer realm="digitserve"'
    for path in ("/classify_batch", "/classify_pixels"):
        assert client.post(path, content=b"{}").status_code == 401, path
    ok = client.post("/classify", files={"image": ("d.png", image)}, headers=AUTH)
    assert ok.status_code == 200 and ok.json()["digit"] == 7
    for path in ("/metrics", "/model"):
        assert client.get(path).status_code == 200, path


def test_every_answer_has_a_request_id_and_the_log_line_shares_it(served):
    client, image, log = served
    mine = client.post("/classify", files={"image": ("d.png", image)}, headers={**AUTH, "X-Request-ID": "abc-42"})
    fresh = client.post("/classify", files={"image": ("d.png", image)}, headers=AUTH)
    hostile = client.post("/classify", content=b"", headers={**AUTH, "X-Request-ID": "x y <script>" * 50})
    refused = client.post("/classify", files={"image": ("d.png", image)})
    assert mine.headers["x-request-id"] == "abc-42"
    assert re.fullmatch(r"[0-9a-f]{32}", fresh.headers["x-request-id"])
    assert re.fullmatch(r"[0-9a-f]{32}", hostile.headers["x-request-id"]), "a malformed id is replaced"
    assert hostile.status_code == 415 and re.fullmatch(r"[0-9a-f]{32}", refused.headers["x-request-id"])
    text = "\n".join(log.lines)
    assert f"{refused.headers['x-request-id']} POST /classify 401" in text, text[-2000:]
    assert re.search(r"abc-42 POST /classify 200 [\d.]+ms digits=7", text), text[-2000:]
    assert KEY not in text
