"""The optional API key and the request id, on the real service: prediction endpoints locked, probes open, the key
never in the log, every answer carrying an id that the access log line shares with its status and digit."""

from __future__ import annotations

import re

import httpx
import pytest

from harness.digits import as_png
from harness.server import log_with, running_service
from training.data import load_split

pytestmark = pytest.mark.integration

KEY = "k3y-" + "x" * 28


@pytest.fixture(scope="module")
def served(tmp_path_factory, mnist_dir):
    log_path = tmp_path_factory.mktemp("log") / "serve.log"
    image = as_png(load_split("test", mnist_dir).images[0])  # a 7
    with (
        log_path.open("w+") as log,
        running_service({"DIGITSERVE_API_KEY": KEY, "DIGITSERVE_WORKERS": "1"}, log=log) as url,
    ):
        yield url, image, log


def test_prediction_endpoints_need_the_key(served):
    url, image, _ = served
    with httpx.Client(base_url=url, timeout=30) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
            response = client.post("/classify", files={"image": ("d.png", image)}, headers=headers)
            assert response.status_code == 401 and "API key" in response.json()["error"]
        for path in ("/classify_batch", "/classify_pixels", "/probabilities"):
            assert client.post(path, content=b"{}").status_code == 401, path
        ok = client.post("/classify", files={"image": ("d.png", image)}, headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200 and ok.json()["digit"] == 7
        for path in ("/livez", "/readyz", "/metrics", "/model"):
            assert client.get(path).status_code == 200, path


def test_every_answer_has_a_request_id_and_the_log_line_shares_it(served):
    url, image, log = served
    auth = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=url, timeout=30) as client:
        mine = client.post("/classify", files={"image": ("d.png", image)}, headers={**auth, "X-Request-ID": "abc-42"})
        fresh = client.post("/classify", files={"image": ("d.png", image)}, headers=auth)
        hostile = client.post("/classify", content=b"", headers={**auth, "X-Request-ID": "x y <script>" * 50})
        refused = client.post("/classify", files={"image": ("d.png", image)})
    assert mine.headers["x-request-id"] == "abc-42"
    assert re.fullmatch(r"[0-9a-f]{32}", fresh.headers["x-request-id"])
    assert re.fullmatch(r"[0-9a-f]{32}", hostile.headers["x-request-id"]), "a malformed id is replaced"
    assert hostile.status_code == 415 and re.fullmatch(r"[0-9a-f]{32}", refused.headers["x-request-id"])
    last = f"{refused.headers['x-request-id']} POST /classify 401"
    text = log_with(log, last)
    assert last in text, text[-2000:]
    assert re.search(r"abc-42 POST /classify 200 [\d.]+ms digits=7", text), text[-2000:]
    assert KEY not in text
