"""The real service over real HTTP (`bentoml serve` on a free port), with real MNIST test digits."""

from __future__ import annotations

import base64
import io
import json
import shutil
import socket
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from PIL import Image

from harness.digits import as_png, encode, on_canvas, on_paper
from harness.server import running_service
from service.preprocess import normalise
from service.runtime import ModelRuntime
from tests.conftest import MODEL
from training.data import load_split

pytestmark = pytest.mark.integration

N = 1000
RAW = {"Content-Type": "application/octet-stream"}


@pytest.fixture(scope="module")
def url():
    with running_service({"DIGITSERVE_WORKERS": "2", "DIGITSERVE_MAX_BATCH": "64"}) as url:
        yield url


@pytest.fixture(scope="module")
def client(url):
    with httpx.Client(base_url=url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def digits(mnist_dir):
    test = load_split("test", mnist_dir)
    return test.images[:N], test.labels[:N]


def classify_all(url: str, bodies: list[bytes]) -> list[int]:
    def one(body: bytes) -> int:
        with httpx.Client(base_url=url, timeout=30) as c:
            response = c.post("/classify", files={"image": ("digit", body)})
        assert response.status_code == 200, response.text
        return response.json()["digit"]

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, bodies))


@pytest.mark.slow
def test_1000_mnist_pngs_match_the_model_on_raw_arrays(url, digits):
    images, labels = digits
    served = np.array(classify_all(url, [as_png(p) for p in images]))
    runtime = ModelRuntime(MODEL, "cpu")
    direct = runtime.probabilities(normalise(images, runtime.mean, runtime.std)).argmax(1)
    assert (served == labels).mean() >= 0.99
    assert np.array_equal(served, direct)


@pytest.mark.slow
def test_dark_ink_on_light_paper_off_centre(url, digits):
    images, labels = digits
    rng = np.random.default_rng(0)
    served = np.array(classify_all(url, [on_paper(p, rng) for p in images]))
    assert (served == labels).mean() >= 0.97


@pytest.mark.slow
def test_strokes_on_a_transparent_canvas(url, digits):
    images, labels = digits
    served = np.array(classify_all(url, [on_canvas(p) for p in images]))
    assert (served == labels).mean() >= 0.97


def test_classify_response_and_debug_image(client, digits):
    images, labels = digits
    body = client.post("/classify", params={"debug": "true"}, files={"image": ("d.png", as_png(images[0]))}).json()
    assert set(body) == {"digit", "confidence", "probabilities", "model_version", "image", "box"}
    assert body["box"] == [0, 0, 28, 28]  # an MNIST-format image is all digit
    assert body["digit"] == labels[0] and body["model_version"] == "1.0.0"
    assert len(body["probabilities"]) == 10 and abs(sum(body["probabilities"]) - 1) < 1e-4
    assert body["confidence"] == max(body["probabilities"])
    seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["image"]))))
    assert np.array_equal(seen, images[0])


def test_raw_body_with_an_image_content_type(client, digits):
    images, labels = digits
    for fmt, content_type in (("PNG", "image/png"), ("BMP", "image/bmp"), ("WEBP", "image/webp")):
        data = encode(Image.fromarray(images[1]), fmt, **({"lossless": True} if fmt == "WEBP" else {}))
        response = client.post("/classify", content=data, headers={"content-type": content_type})
        assert response.status_code == 200 and response.json()["digit"] == labels[1], fmt


def test_batch_keeps_the_order(client, digits):
    images, labels = digits
    files = [("images", (f"{i}.png", as_png(images[i]))) for i in range(10)]
    results = client.post("/classify_batch", files=files).json()["results"]
    assert [r["digit"] for r in results] == labels[:10].tolist()


def test_pixels_in_every_form_agree(client, digits):
    images, labels = digits
    batch = images[:32]
    buffer = io.BytesIO()
    np.save(buffer, batch)
    answers = [
        client.post("/classify_pixels", json=batch.tolist()),
        client.post("/classify_pixels", content=batch.tobytes(), headers={"content-type": "application/octet-stream"}),
        client.post("/classify_pixels", content=buffer.getvalue(), headers={"content-type": "application/x-npy"}),
    ]
    digits_by_form = [[r["digit"] for r in a.json()["results"]] for a in answers]
    assert digits_by_form[0] == digits_by_form[1] == digits_by_form[2]
    assert np.mean(np.array(digits_by_form[0]) == labels[:32]) >= 0.96
    single = client.post("/classify_pixels", json=images[0].tolist()).json()["results"]
    assert len(single) == 1 and single[0]["digit"] == labels[0]


def test_model_endpoint_and_probes(client):
    info = client.get("/model").json()
    card = json.loads(MODEL.with_suffix(".json").read_text())
    assert info["sha256"] == card["sha256"] and info["version"] == card["version"]
    assert info["provider"] == "CPUExecutionProvider"
    assert info["input"]["shape"] == ["N", 1, 28, 28]
    for probe in ("/livez", "/readyz"):
        assert client.get(probe).status_code == 200


def metric_sum(text: str, prefix: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def test_prometheus_metrics_count_every_request_of_both_workers(url, client, digits):
    """N requests sent at once on N connections (spread over the 2 workers), then a scrape: each counter has
    grown by exactly what was sent, whichever worker served it and whichever worker answers the scrape."""
    images = digits[0][:30]  # within DIGITSERVE_MAX_CONCURRENCY (32 a worker), however they land
    names = {
        "ok": 'digitserve_requests_total{endpoint="/classify",status="200"}',
        "refused": 'digitserve_requests_total{endpoint="/classify",status="415"}',
        "timed": 'digitserve_request_duration_seconds_count{endpoint="/classify"}',
        "predicted": "digitserve_predictions_total",
        "confidence": "digitserve_confidence_count",
    }
    before = client.get("/metrics").text
    answers = simultaneous(url, "/classify", [as_png(image) for image in images], "image/png")
    for _ in range(3):
        assert client.post("/classify", content=b"x", headers={"Content-Type": "text/plain"}).status_code == 415
    after = client.get("/metrics").text
    grown = {key: metric_sum(after, name) - metric_sum(before, name) for key, name in names.items()}
    assert grown == {"ok": 30, "refused": 3, "timed": 33, "predicted": 30, "confidence": 30}
    sevens = 'digitserve_predictions_total{digit="7"}'
    assert metric_sum(after, sevens) - metric_sum(before, sevens) == sum(a["digit"] == 7 for a in answers)
    assert metric_sum(after, "digitserve_in_flight_requests") == 0
    assert metric_sum(after, "digitserve_batch_size_count") > metric_sum(before, "digitserve_batch_size_count")


def simultaneous(url: str, path: str, bodies: list[bytes], content_type: str) -> list[dict]:
    """POST every body on its own connection, all written before any answer is read: the server sees them
    together, as it does under load (a thread pool of HTTP clients trickles them in one at a time)."""
    address = urlsplit(url)
    connections = [socket.create_connection((address.hostname, address.port), timeout=30) for _ in bodies]
    for connection, body in zip(connections, bodies, strict=True):
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {address.netloc}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        connection.sendall(head.encode() + body)
    answers = []
    for connection in connections:
        with connection, connection.makefile("rb") as stream:
            status = stream.readline()
            assert b" 200 " in status, status
            raw = stream.read()
        answers.append(json.loads(raw.split(b"\r\n\r\n", 1)[1]))
    return answers


def test_concurrent_requests_are_batched_and_answered_alike(url, client, digits):
    images = digits[0][:24]  # within DIGITSERVE_MAX_CONCURRENCY (32 a worker), however they land
    alone = [client.post("/classify_pixels", content=image.tobytes(), headers=RAW).json() for image in images]

    def batched_calls() -> float:  # ONNX Runtime calls with more than one image, all workers
        text = client.get("/metrics").text
        single = metric_sum(text, 'digitserve_batch_size_bucket{le="1.0"')
        return metric_sum(text, "digitserve_batch_size_count") - single

    before = batched_calls()
    together = simultaneous(url, "/classify_pixels", [image.tobytes() for image in images], RAW["Content-Type"])
    for a, b in zip(alone, together, strict=True):
        assert a["results"][0]["digit"] == b["results"][0]["digit"]
        np.testing.assert_allclose(a["results"][0]["probabilities"], b["results"][0]["probabilities"], atol=1e-5)
    assert batched_calls() > before, "no two concurrent requests shared an ONNX Runtime call"


def test_bentoml_typed_api_with_its_own_client(url, digits):
    import bentoml

    images, labels = digits
    runtime = ModelRuntime(MODEL, provider="cpu")
    expected = runtime.probabilities(normalise(images[:20], runtime.mean, runtime.std))
    with bentoml.SyncHTTPClient(url, timeout=30) as bento:
        probabilities = np.asarray(bento.probabilities(pixels=images[:20].reshape(20, 784).astype(np.float32)))
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    assert (probabilities.argmax(1) == labels[:20]).mean() >= 0.95


@pytest.mark.parametrize(
    "pixels",
    [[[0] * 783], [[300] * 784], [[-1] * 784], [], "not pixels", [[0] * 784] * 65],
    ids=["wrong-shape", "over-255", "negative", "empty", "text", "too-many"],
)
def test_bentoml_typed_api_refuses_bad_pixels_with_400(client, pixels):
    response = client.post("/probabilities", json={"pixels": pixels})
    assert response.status_code == 400, response.text
    assert "error" in response.json()
    assert client.post("/probabilities", json={"pixels": [[0] * 784]}).status_code == 200


def test_openapi_lists_every_endpoint(client):
    paths = client.get("/docs.json").json()["paths"]
    for path in ("/classify", "/classify_batch", "/classify_pixels", "/probabilities", "/model"):
        assert path in paths, path
    assert "multipart/form-data" in paths["/classify"]["post"]["requestBody"]["content"]


JSON = {"content-type": "application/json"}


def bad_inputs(png: bytes) -> list[tuple[str, str, dict, int]]:
    """(name, path, httpx request arguments, expected status)."""
    frames = [Image.new("L", (30, 30), 0), Image.new("L", (30, 30), 255)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    big = encode(Image.new("L", (5100, 5100)))  # 26 megapixels in a small file
    return [
        ("not an image", "/classify", {"files": {"image": ("x.png", b"hello")}}, 415),
        ("truncated", "/classify", {"files": {"image": ("x.png", png[: len(png) // 2])}}, 400),
        ("empty file", "/classify", {"files": {"image": ("x.png", b"")}}, 400),
        ("empty raw body", "/classify", {"content": b"", "headers": {"content-type": "image/png"}}, 400),
        ("text in file field", "/classify", {"files": {"image": (None, "http://127.0.0.1:1/x.png")}}, 422),
        ("form-urlencoded", "/classify", {"data": {"image": "x"}}, 415),
        ("no image field", "/classify", {"files": {"other": ("x.png", png)}}, 422),
        ("wrong content type", "/classify", {"content": b"{}", "headers": {"content-type": "application/json"}}, 415),
        ("over 12 MB", "/classify", {"content": b"\0" * 12_000_001, "headers": {"content-type": "image/png"}}, 413),
        ("too many pixels", "/classify", {"content": big, "headers": {"content-type": "image/png"}}, 413),
        ("blank", "/classify", {"files": {"image": ("x.png", encode(Image.new("L", (64, 64), 255)))}}, 422),
        ("multi-frame, blank first", "/classify", {"files": {"image": ("x.gif", gif.getvalue())}}, 422),
        ("too many in batch", "/classify_batch", {"files": [("images", ("x.png", png))] * 65}, 413),
        ("batch of text", "/classify_batch", {"files": {"images": (None, "x")}}, 422),
        ("pixels wrong shape", "/classify_pixels", {"json": [[1, 2, 3]]}, 422),
        ("pixels out of range", "/classify_pixels", {"json": [[256] * 28] * 28}, 422),
        (
            "pixels NaN",
            "/classify_pixels",
            {"content": b"[" + b",".join([b"NaN"] * 784) + b"]", "headers": {"content-type": "application/json"}},
            422,
        ),
        (
            "pixels not JSON",
            "/classify_pixels",
            {"content": b"[1,", "headers": {"content-type": "application/json"}},
            400,
        ),
        ("pixels wrong type", "/classify_pixels", {"content": b"x", "headers": {"content-type": "text/plain"}}, 415),
        (
            "pixels too many",
            "/classify_pixels",
            {"content": b"\0" * 784 * 65, "headers": {"content-type": "application/octet-stream"}},
            413,
        ),
    ]


def test_every_bad_input_gets_its_4xx_and_the_server_stays_healthy(client, digits):
    png = as_png(digits[0][0])
    for name, path, request, status in bad_inputs(png):
        response = client.post(path, **request)
        assert response.status_code == status, (name, response.status_code, response.text)
        assert isinstance(response.json()["error"], str), name
        ok = client.post("/classify", files={"image": ("d.png", png)})
        assert ok.status_code == 200 and ok.json()["digit"] == digits[1][0], name
    assert client.get("/readyz").status_code == 200


def test_refuses_to_start_on_a_model_that_does_not_match_its_card(tmp_path):
    model = tmp_path / "mnist_cnn.onnx"
    shutil.copy(MODEL, model)
    card = json.loads(MODEL.with_suffix(".json").read_text())
    card["sha256"] = "0" * 64
    model.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(RuntimeError, match="sha256") as error, running_service({"DIGITSERVE_MODEL": str(model)}):
        pass
    assert "does not belong to this card" in str(error.value)


@pytest.mark.gpu
def test_cuda_provider_serves(digits):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("no CUDA execution provider (install onnxruntime-gpu on a GPU host)")
    with running_service({"DIGITSERVE_PROVIDER": "cuda"}) as url:
        assert httpx.get(f"{url}/model").json()["provider"] == "CUDAExecutionProvider"
        images, labels = digits
        served = np.array(classify_all(url, [as_png(p) for p in images[:200]]))
        assert (served == labels[:200]).mean() >= 0.99
